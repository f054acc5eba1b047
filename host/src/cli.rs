//! The command line: clap definitions and one function per command.
//!
//! Exit codes: 0 success; 1 the command failed (a plugin would not load, the backend would not
//! start, the port was taken); 2 the invocation or the configuration is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::admin::PluginRow;
use crate::config::{Config, Overrides};
use crate::gateway::Gateway;
use crate::gateway::providers::{ProviderPlugin, ProviderRegistry};
use crate::plugins::{self, Kind, loader};
use crate::server::{self, AppState};
use crate::storage::Storage;

#[derive(Parser, Debug)]
#[command(
    name = "aiclient",
    version,
    about = "Gateway serving pools of AI-service accounts as OpenAI, Claude and Gemini APIs"
)]
pub struct Cli {
    /// Config file [default: ./aiclient.toml if present, else built-in defaults]
    #[arg(long, global = true, env = "AICLIENT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway
    Serve(ServeArgs),
    /// Inspect plugin libraries
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Import an AIClient-2-API configs/ directory into the storage backend, or copy all state
    /// from one backend to another (--from/--to); idempotent and verified
    Migrate(crate::migrate::MigrateArgs),
    /// Write the storage backend's state out as an AIClient-2-API configs/ directory
    Export(crate::migrate::ExportArgs),
    /// Initialise an empty storage backend: default config and plugin states, a generated admin
    /// password and client API key
    Init(crate::migrate::InitArgs),
}

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// List every storage backend and provider plugin found: name, kind, SDK version, path and
    /// enabled state
    List(ListArgs),
}

/// Which backend to use and where plugins live; shared by every command that opens storage.
#[derive(Args, Debug, Default, Clone)]
pub struct StorageArgs {
    /// Storage backend: memory, file, redis, another plugin's name, or a library path
    #[arg(long, value_name = "BACKEND")]
    pub storage: Option<String>,
    /// The AIClient-2-API configs directory (file backend)
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Redis URL (redis:// or rediss://); selects the redis backend unless --storage says otherwise
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Directory plugin names are resolved in [default: the executable's directory]
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen address
    #[arg(long)]
    pub host: Option<String>,
    /// Listen port (0 picks a free one)
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Provider plugin to load (name or path); repeatable; replaces the configured list
    /// [default: every provider plugin in the plugin dir]
    #[arg(long = "provider", value_name = "PLUGIN")]
    pub providers: Vec<String>,
    /// Client API key, overriding REQUIRED_API_KEY in the service config
    #[arg(
        long,
        env = "AICLIENT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl StorageArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            storage: self.storage.clone(),
            config_dir: self.config_dir.clone(),
            redis_url: self.redis_url.clone(),
            plugin_dir: self.plugin_dir.clone(),
            ..Overrides::default()
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = match &cli.command {
        Command::Serve(a) => Overrides {
            host: a.host.clone(),
            port: a.port,
            providers: a.providers.clone(),
            api_key: a.api_key.clone(),
            ..a.storage.overrides()
        },
        Command::Plugins(PluginsCommand::List(a)) => a.storage.overrides(),
        Command::Migrate(a) => a.overrides(),
        Command::Export(a) => a.overrides(),
        Command::Init(a) => a.storage.overrides(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let config = match Config::load(cli.config.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.file.log.level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(_) => serve(config).await.map(|()| ExitCode::SUCCESS),
            Command::Plugins(PluginsCommand::List(a)) => {
                list(config, a.format).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Migrate(a) => Ok(crate::migrate::run_migrate(&config, a).await),
            Command::Export(a) => Ok(crate::migrate::run_export(&config, a).await),
            Command::Init(a) => Ok(crate::migrate::run_init(&config, a).await),
        }
    });
    // Plugin runtimes and connections are torn down with the process; do not wait on them.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn instance_id(config: &Config) -> String {
    if config.file.server.instance_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        config.file.server.instance_id.clone()
    }
}

async fn open_backend(
    config: &Config,
    instance: &str,
) -> Result<(loader::LoadedStorage, Storage), String> {
    let backend = &config.file.storage.backend;
    plugins::open_storage(
        &config.plugin_dir,
        backend,
        &config.backend_config(instance),
    )
    .await
    .map_err(|e| e.to_string())
}

/// The provider plugin files to load: the configured list, or every provider plugin found.
fn provider_paths(config: &Config) -> Result<Vec<std::path::PathBuf>, String> {
    let dir = &config.plugin_dir;
    match &config.file.plugins.providers {
        Some(list) => list
            .iter()
            .map(|p| loader::resolve(dir, p, Kind::Provider).map_err(|e| e.to_string()))
            .collect(),
        None => Ok(loader::scan(dir)
            .map_err(|e| format!("cannot read plugin dir {}: {e}", dir.display()))?
            .into_iter()
            .filter(|p| matches!(loader::open(p), Ok((_, i)) if i.kind == Kind::Provider))
            .collect()),
    }
}

/// Loads and starts the provider plugins; every failure is reported, then startup stops.
async fn start_providers(
    config: &Config,
    instance: &str,
) -> Result<(ProviderRegistry, Vec<PluginRow>), String> {
    let mut registry = ProviderRegistry::default();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for path in provider_paths(config)? {
        let lib = match loader::load_provider(&path) {
            Ok(l) => l,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let cfg = json!({ "instance_id": instance });
        let name = lib.info.name.to_string();
        match (lib.module.create())(cfg.to_string().into())
            .await
            .into_result()
        {
            Ok(obj) => match ProviderPlugin::new(&name, obj) {
                Ok(p) => {
                    rows.push(PluginRow {
                        name: name.clone(),
                        version: lib.info.version.to_string(),
                        description: lib.info.description.to_string(),
                        kind: "provider",
                        provider_types: p.types.clone(),
                    });
                    match registry.add(p) {
                        Ok(()) => {
                            tracing::info!(plugin = %name, path = %path.display(), sdk = %lib.inspected.sdk_version, "provider plugin loaded")
                        }
                        Err(e) => errors.push(e),
                    }
                }
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(format!("provider plugin {name} failed to start: {e}")),
        }
    }
    if errors.is_empty() {
        Ok((registry, rows))
    } else {
        Err(errors.join("\nerror: "))
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let instance = instance_id(&config);
    let (lib, storage) = crate::startup::open(&config, &instance).await?;
    // Writes left over from an outage go first, before anything else is written.
    let journal =
        crate::gateway::journal::Journal::new(&config.file.server.data_dir, storage.name());
    crate::gateway::journal::replay(&storage, &journal).await?;
    tracing::info!(
        backend = %lib.info.name,
        path = %lib.inspected.path.display(),
        sdk = %lib.inspected.sdk_version,
        "storage backend loaded"
    );
    let (providers, mut plugin_rows) = start_providers(&config, &instance).await?;
    plugin_rows.insert(
        0,
        PluginRow {
            name: lib.info.name.to_string(),
            version: lib.info.version.to_string(),
            description: lib.info.description.to_string(),
            kind: "storage",
            provider_types: Vec::new(),
        },
    );
    match crate::admin::auth::ensure_password(&storage).await {
        Ok(Some(pw)) => {
            println!("generated web UI admin password (shown once, stored hashed): {pw}")
        }
        Ok(None) => {}
        Err(e) => {
            return Err(format!(
                "cannot read the admin password from the {} backend: {e}",
                storage.name()
            ));
        }
    }
    let srv = &config.file.server;
    let gateway = Gateway::new(
        storage.clone(),
        providers,
        &instance,
        srv.api_key.as_ref().map(|k| k.0.clone()),
        srv.allow_no_api_key,
    )
    .await
    .map_err(|e| format!("cannot load state from the {} backend: {e}", storage.name()))?;
    if gateway.required_key().is_none() && !srv.allow_no_api_key {
        tracing::warn!(
            "no client API key configured (REQUIRED_API_KEY / --api-key): the client APIs refuse every request"
        );
    }
    gateway.pools.set_journal(journal);
    gateway.spawn_background();
    let addr = format!("{}:{}", srv.host, srv.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "aiclient listening on http://{local} (storage: {})",
        storage.name()
    );
    let state = AppState {
        gateway,
        started: std::time::Instant::now(),
        plugins: plugin_rows,
    };
    server::run(
        listener,
        state,
        server::shutdown_signal(),
        std::time::Duration::from_secs(config.file.server.shutdown_grace_secs),
    )
    .await
    .map_err(|e| e.to_string())
}

/// One row of `plugins list`.
struct Row {
    name: String,
    kind: String,
    sdk: String,
    enabled: String,
    path: String,
    error: Option<String>,
}

async fn list(config: Config, format: Format) -> Result<(), String> {
    let dir = &config.plugin_dir;
    let mut paths =
        loader::scan(dir).map_err(|e| format!("cannot read plugin dir {}: {e}", dir.display()))?;
    let configured_backend = loader::resolve(dir, &config.file.storage.backend, Kind::Storage).ok();
    for p in configured_backend.iter().cloned().chain(
        config
            .file
            .plugins
            .providers
            .iter()
            .flatten()
            .filter_map(|p| loader::resolve(dir, p, Kind::Provider).ok()),
    ) {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    // Enabled states come from the active backend; listing still works if it is down.
    let instance = instance_id(&config);
    let (states, backend_err) = match open_backend(&config, &instance).await {
        Ok((_, s)) => match s.list_plugin_states().await {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut rows = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let row = match loader::open(&path) {
            Err(e) => Row {
                name: "-".into(),
                kind: "-".into(),
                sdk: "-".into(),
                enabled: "-".into(),
                path: shown,
                error: Some(e.cause),
            },
            Ok((_, insp)) => {
                let loaded = match insp.kind {
                    Kind::Storage => loader::load_storage(&path).map(|l| l.info),
                    Kind::Provider => loader::load_provider(&path).map(|l| l.info),
                };
                match loaded {
                    Err(e) => Row {
                        name: "-".into(),
                        kind: insp.kind.as_str().into(),
                        sdk: insp.sdk_version,
                        enabled: "-".into(),
                        path: shown,
                        error: Some(e.cause),
                    },
                    Ok(info) => {
                        let name = info.name.to_string();
                        let enabled = match insp.kind {
                            Kind::Storage if configured_backend.as_ref() == Some(&path) => {
                                "active".to_string()
                            }
                            Kind::Storage => "available".to_string(),
                            Kind::Provider => match states.iter().find(|s| s.name.as_str() == name)
                            {
                                Some(s) if s.enabled => "enabled".into(),
                                Some(_) => "disabled".into(),
                                None if backend_err.is_some() => "unknown".into(),
                                None => match &config.file.plugins.providers {
                                    None => "enabled".into(),
                                    Some(list)
                                        if list.iter().any(|p| {
                                            p == &name
                                                || loader::resolve(dir, p, Kind::Provider)
                                                    .ok()
                                                    .as_ref()
                                                    == Some(&path)
                                        }) =>
                                    {
                                        "enabled".into()
                                    }
                                    Some(_) => "not configured".into(),
                                },
                            },
                        };
                        Row {
                            name,
                            kind: insp.kind.as_str().into(),
                            sdk: insp.sdk_version,
                            enabled,
                            path: shown,
                            error: None,
                        }
                    }
                }
            }
        };
        rows.push(row);
    }
    match format {
        Format::Json => {
            let v: Vec<Value> = rows
                .iter()
                .map(|r| json!({"name": r.name, "kind": r.kind, "sdkVersion": r.sdk, "enabled": r.enabled, "path": r.path, "error": r.error}))
                .collect();
            println!(
                "{}",
                json!({ "pluginDir": dir, "storageError": backend_err, "plugins": v })
            );
        }
        Format::Table => {
            println!(
                "{:<12} {:<9} {:<8} {:<15} PATH",
                "NAME", "KIND", "SDK", "ENABLED"
            );
            for r in &rows {
                match &r.error {
                    None => println!(
                        "{:<12} {:<9} {:<8} {:<15} {}",
                        r.name, r.kind, r.sdk, r.enabled, r.path
                    ),
                    Some(e) => println!(
                        "{:<12} {:<9} {:<8} {:<15} {} (error: {e})",
                        r.name, r.kind, r.sdk, r.enabled, r.path
                    ),
                }
            }
            if rows.is_empty() {
                println!("(no plugin libraries in {})", dir.display());
            }
            if let Some(e) = backend_err {
                println!("note: enabled states unknown, the storage backend did not start: {e}");
            }
        }
    }
    Ok(())
}
