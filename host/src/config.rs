//! Configuration: built-in defaults, then `aiclient.toml`, then the environment, then flags.
//!
//! The file is parsed raw with unknown keys refused (the error names the key and its line),
//! then every source is folded into one [`Config`]. The Redis password lives in
//! [`Secret`], whose `Debug`/`Display` never show it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// Where the config file is looked for when neither `--config` nor `AICLIENT_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "aiclient.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A string that is never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"******\""
        })
    }
}

/// The `aiclient.toml` file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub plugins: PluginsSection,
    pub log: LogSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Listen address. Loopback by default: nothing is exposed unless asked for.
    pub host: String,
    pub port: u16,
    /// Unique id of this gateway instance in change events (random when empty).
    pub instance_id: String,
    /// Client API key overriding the service config's `REQUIRED_API_KEY` (like the original's
    /// `--api-key`). Usually left unset so the key lives in the backend.
    pub api_key: Option<Secret>,
    /// Serve the client APIs when no key is configured at all. Off: a gateway without a key
    /// refuses service rather than serving everyone.
    pub allow_no_api_key: bool,
    /// After SIGTERM, how long in-flight requests and streams may finish before the process
    /// closes them and exits.
    pub shutdown_grace_secs: u64,
    /// Where the gateway keeps its own files (the journal of writes storage did not take
    /// while it was down). Env `AICLIENT_DATA_DIR`.
    pub data_dir: PathBuf,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3000,
            instance_id: String::new(),
            api_key: None,
            allow_no_api_key: false,
            shutdown_grace_secs: 30,
            data_dir: PathBuf::from("data"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `memory`, `file`, `redis`, another plugin's name, or a path to a library.
    pub backend: String,
    pub file: FileSection,
    pub redis: RedisSection,
    /// Extra settings handed to the backend plugin as JSON (for third-party backends).
    pub options: toml::Table,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            file: FileSection::default(),
            redis: RedisSection::default(),
            options: toml::Table::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSection {
    /// The AIClient-2-API `configs/` directory.
    pub config_dir: PathBuf,
}

impl Default for FileSection {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("configs"),
        }
    }
}

/// Redis connection settings (the seed quickstart's table). `url` wins over host/port/db.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    pub url: Option<Secret>,
    /// Redis Cluster seed nodes (`redis://host:port` each; env `REDIS_CLUSTER_NODES`,
    /// comma-separated). Non-empty = cluster mode; `url`/`host`/`port`/`db` are then unused.
    pub cluster_nodes: Vec<Secret>,
    /// Redis Sentinel addresses (env `REDIS_SENTINELS`, comma-separated) and the monitored
    /// master's name (`REDIS_SENTINEL_MASTER`); both set = Sentinel mode (`host`/`port`
    /// unused; `username`/`password`/`db` apply to the master).
    pub sentinels: Vec<Secret>,
    pub sentinel_master: Option<String>,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: i64,
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    /// What `serve` does when Redis is configured but unreachable or empty at startup
    /// (env `AICLIENT_REDIS_ON_UNAVAILABLE`).
    pub on_unavailable: OnUnavailable,
    /// What the gateway does when the data is deleted underneath it while serving (`FLUSHDB`):
    /// `reseed` (default) or `report` (env `AICLIENT_REDIS_ON_DATA_LOSS`).
    pub on_data_loss: OnDataLossSetting,
}

/// `[storage.redis] on_data_loss`: see [`crate::storage::OnDataLoss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDataLossSetting {
    /// Write the in-memory view (accounts with their counters and health, config, meta,
    /// cached tokens, plugin states, password hash) back, and go on.
    #[default]
    Reseed,
    /// Log it and show it in `GET /api/redis/status`; stop writing, serve from memory.
    Report,
}

impl OnDataLossSetting {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "reseed" => Some(Self::Reseed),
            "report" => Some(Self::Report),
            _ => None,
        }
    }

    pub fn policy(self) -> crate::storage::OnDataLoss {
        match self {
            Self::Reseed => crate::storage::OnDataLoss::Reseed,
            Self::Report => crate::storage::OnDataLoss::Report,
        }
    }
}

/// Startup policy when Redis is unreachable (or reachable but holds no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Serve from the file backend (`[storage.file] config_dir`) with a loud warning.
    #[default]
    FallbackFile,
    /// Retry with backoff until Redis answers (and holds data).
    Wait,
    /// Exit 1 with one clear line.
    Refuse,
}

impl OnUnavailable {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fallback-file" => Some(Self::FallbackFile),
            "wait" => Some(Self::Wait),
            "refuse" => Some(Self::Refuse),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::FallbackFile => "fallback-file",
            Self::Wait => "wait",
            Self::Refuse => "refuse",
        }
    }
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: None,
            host: "localhost".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
            key_prefix: "aiclient:".into(),
            connect_timeout_ms: 5000,
            command_timeout_ms: 1000,
            on_unavailable: OnUnavailable::default(),
            on_data_loss: OnDataLossSetting::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsSection {
    /// Where plugin libraries are looked for by name. Default: the executable's directory.
    pub dir: Option<PathBuf>,
    /// Provider plugins to load: names (resolved in `dir`) or paths. Unset: every provider
    /// plugin found in `dir`.
    pub providers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter such as `info` or `aiclient=debug,plugin=info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// Values given on the command line; `None` leaves the file/env value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub storage: Option<String>,
    pub config_dir: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub plugin_dir: Option<PathBuf>,
    pub providers: Vec<String>,
    pub api_key: Option<String>,
}

/// The validated configuration the host runs with.
#[derive(Debug)]
pub struct Config {
    pub file: FileConfig,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub plugin_dir: PathBuf,
}

impl Config {
    /// Loads `path` (or `aiclient.toml` in the working directory if it exists; built-in defaults
    /// otherwise), then applies `env` (a lookup, so tests need not touch the process
    /// environment) and the command-line overrides.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let (mut file, source) = match path {
            Some(p) => (parse_file(p)?, Some(p.to_path_buf())),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                (parse_file(&p)?, Some(p))
            }
            None => (FileConfig::default(), None),
        };
        apply_env(&mut file, env)?;
        apply_flags(&mut file, flags);
        let plugin_dir = match &file.plugins.dir {
            Some(d) => d.clone(),
            None => exe_dir()?,
        };
        if file.storage.backend.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "storage.backend must not be empty".into(),
            ));
        }
        Ok(Self {
            file,
            source,
            plugin_dir,
        })
    }

    /// The JSON config handed to the storage backend plugin.
    pub fn backend_config(&self, instance_id: &str) -> Value {
        let s = &self.file.storage;
        let mut v = match s.backend.as_str() {
            "file" => json!({ "config_dir": s.file.config_dir }),
            "redis" => {
                let r = &s.redis;
                json!({
                    "url": r.url.as_ref().map(|u| u.0.clone()),
                    "cluster_nodes": r.cluster_nodes.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
                    "sentinels": r.sentinels.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
                    "sentinel_master": r.sentinel_master,
                    "host": r.host,
                    "port": r.port,
                    "username": r.username,
                    "password": r.password.as_ref().map(|p| p.0.clone()),
                    "db": r.db,
                    "key_prefix": r.key_prefix,
                    "connect_timeout_ms": r.connect_timeout_ms,
                    "command_timeout_ms": r.command_timeout_ms,
                })
            }
            _ => json!({}),
        };
        let obj = v.as_object_mut().expect("built as an object");
        if let Ok(Value::Object(extra)) = serde_json::to_value(&s.options) {
            obj.extend(extra);
        }
        obj.insert("instance_id".into(), Value::String(instance_id.to_string()));
        v
    }
}

fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: if name.contains("PASSWORD") {
            "******".into()
        } else {
            value.clone()
        },
        message: e.to_string(),
    })
}

/// The seed's `REDIS_*` variables select and configure Redis; `AICLIENT_*` cover the rest.
fn apply_env(f: &mut FileConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let r = &mut f.storage.redis;
    if let Some(v) = env("REDIS_HOST") {
        r.host = v;
    }
    if let Some(v) = env("REDIS_PORT") {
        r.port = parse_env("REDIS_PORT", v)?;
    }
    if let Some(v) = env("REDIS_DB") {
        r.db = parse_env("REDIS_DB", v)?;
    }
    if let Some(v) = env("REDIS_USERNAME") {
        r.username = Some(v);
    }
    if let Some(v) = env("REDIS_PASSWORD") {
        r.password = Some(Secret(v));
    }
    if let Some(v) = env("REDIS_KEY_PREFIX") {
        r.key_prefix = v;
    }
    if let Some(v) = env("REDIS_CLUSTER_NODES").filter(|v| !v.trim().is_empty()) {
        r.cluster_nodes = v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| Secret(n.to_string()))
            .collect();
        f.storage.backend = "redis".into();
    }
    if let Some(v) = env("REDIS_SENTINELS").filter(|v| !v.trim().is_empty()) {
        r.sentinels = v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| Secret(n.to_string()))
            .collect();
        f.storage.backend = "redis".into();
    }
    if let Some(v) = env("REDIS_SENTINEL_MASTER").filter(|v| !v.trim().is_empty()) {
        r.sentinel_master = Some(v.trim().to_string());
    }
    if let Some(v) = env("REDIS_URL").filter(|v| !v.trim().is_empty()) {
        r.url = Some(Secret(v));
        f.storage.backend = "redis".into();
    }
    if let Some(v) = env("REDIS_ENABLED") {
        match truthy(&v) {
            Some(true) => f.storage.backend = "redis".into(),
            Some(false) if f.storage.backend == "redis" => f.storage.backend = "file".into(),
            Some(false) => {}
            None => {
                return Err(ConfigError::Env {
                    name: "REDIS_ENABLED",
                    value: v,
                    message: "expected true/false/1/0".into(),
                });
            }
        }
    }
    if let Some(v) = env("AICLIENT_REDIS_ON_UNAVAILABLE") {
        f.storage.redis.on_unavailable =
            OnUnavailable::parse(&v).ok_or_else(|| ConfigError::Env {
                name: "AICLIENT_REDIS_ON_UNAVAILABLE",
                value: v.clone(),
                message: "expected fallback-file, wait or refuse".into(),
            })?;
    }
    if let Some(v) = env("AICLIENT_REDIS_ON_DATA_LOSS") {
        f.storage.redis.on_data_loss =
            OnDataLossSetting::parse(&v).ok_or_else(|| ConfigError::Env {
                name: "AICLIENT_REDIS_ON_DATA_LOSS",
                value: v.clone(),
                message: "expected reseed or report".into(),
            })?;
    }
    if let Some(v) = env("AICLIENT_HOST") {
        f.server.host = v;
    }
    if let Some(v) = env("AICLIENT_PORT") {
        f.server.port = parse_env("AICLIENT_PORT", v)?;
    }
    if let Some(v) = env("AICLIENT_DATA_DIR").filter(|v| !v.trim().is_empty()) {
        f.server.data_dir = v.into();
    }
    if let Some(v) = env("AICLIENT_INSTANCE_ID") {
        f.server.instance_id = v;
    }
    if let Some(v) = env("AICLIENT_STORAGE") {
        f.storage.backend = v;
    }
    if let Some(v) = env("AICLIENT_CONFIG_DIR") {
        f.storage.file.config_dir = v.into();
    }
    if let Some(v) = env("AICLIENT_PLUGIN_DIR") {
        f.plugins.dir = Some(v.into());
    }
    if let Some(v) = env("AICLIENT_PROVIDERS") {
        f.plugins.providers = Some(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    if let Some(v) = env("AICLIENT_API_KEY").filter(|v| !v.is_empty()) {
        f.server.api_key = Some(Secret(v));
    }
    if let Some(v) = env("AICLIENT_ALLOW_NO_API_KEY") {
        f.server.allow_no_api_key = truthy(&v).ok_or_else(|| ConfigError::Env {
            name: "AICLIENT_ALLOW_NO_API_KEY",
            value: v.clone(),
            message: "expected true/false/1/0".into(),
        })?;
    }
    if let Some(v) = env("AICLIENT_LOG") {
        f.log.level = v;
    }
    Ok(())
}

fn apply_flags(f: &mut FileConfig, o: &Overrides) {
    if let Some(v) = &o.host {
        f.server.host = v.clone();
    }
    if let Some(v) = o.port {
        f.server.port = v;
    }
    if let Some(v) = &o.redis_url {
        f.storage.redis.url = Some(Secret(v.clone()));
        if o.storage.is_none() {
            f.storage.backend = "redis".into();
        }
    }
    if let Some(v) = &o.storage {
        f.storage.backend = v.clone();
    }
    if let Some(v) = &o.config_dir {
        f.storage.file.config_dir = v.clone();
    }
    if let Some(v) = &o.plugin_dir {
        f.plugins.dir = Some(v.clone());
    }
    if !o.providers.is_empty() {
        f.plugins.providers = Some(o.providers.clone());
    }
    if let Some(k) = &o.api_key {
        f.server.api_key = Some(Secret(k.clone()));
    }
}

fn exe_dir() -> Result<PathBuf, ConfigError> {
    let exe = std::env::current_exe()
        .map_err(|e| ConfigError::Invalid(format!("cannot locate the aiclient executable: {e}")))?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn write(text: &str) -> tempfile::TempPath {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f.into_temp_path()
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let f = write("[server]\nport = 1\nprot = 2\n");
        let err = Config::load(Some(&f), &env_of(&[]), &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("prot"), "{msg}");
        assert!(msg.contains(&f.display().to_string()), "{msg}");
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let f = write("[server]\nport = 4000\nhost = \"0.0.0.0\"\n");
        let env = env_of(&[("AICLIENT_PORT", "5000")]);
        let c = Config::load(Some(&f), &env, &Overrides::default()).unwrap();
        assert_eq!(
            (c.file.server.host.as_str(), c.file.server.port),
            ("0.0.0.0", 5000)
        );
        let flags = Overrides {
            port: Some(6000),
            ..Default::default()
        };
        let c = Config::load(Some(&f), &env, &flags).unwrap();
        assert_eq!(c.file.server.port, 6000);
    }

    #[test]
    fn redis_env_selects_and_configures_redis() {
        let env = env_of(&[
            ("REDIS_ENABLED", "true"),
            ("REDIS_HOST", "db.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "hunter2"),
            ("REDIS_DB", "3"),
        ]);
        let c = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.file.storage.backend, "redis");
        let j = c.backend_config("i1");
        assert_eq!(j["host"], "db.internal");
        assert_eq!(j["port"], 6380);
        assert_eq!(j["db"], 3);
        assert_eq!(j["password"], "hunter2");
        assert_eq!(j["instance_id"], "i1");
        let shown = format!("{:?}", c.file.storage.redis);
        assert!(!shown.contains("hunter2"), "{shown}");

        let c = Config::load(
            None,
            &env_of(&[("REDIS_URL", "redis://x:1/2")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.file.storage.backend, "redis",
            "REDIS_URL auto-enables Redis"
        );
    }

    #[test]
    fn redis_cluster_nodes_from_env_are_passed_on_and_never_shown() {
        let env = env_of(&[(
            "REDIS_CLUSTER_NODES",
            "redis://:pw9@127.0.0.1:7000, redis://127.0.0.1:7001,",
        )]);
        let c = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(
            c.file.storage.backend, "redis",
            "cluster nodes enable Redis"
        );
        let j = c.backend_config("i1");
        assert_eq!(
            j["cluster_nodes"],
            json!(["redis://:pw9@127.0.0.1:7000", "redis://127.0.0.1:7001"])
        );
        let shown = format!("{:?}", c.file.storage.redis);
        assert!(!shown.contains("pw9"), "{shown}");

        let env = env_of(&[
            (
                "REDIS_SENTINELS",
                "redis://127.0.0.1:26379,redis://127.0.0.1:26380",
            ),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
        ]);
        let c = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.file.storage.backend, "redis");
        let j = c.backend_config("i1");
        assert_eq!(j["sentinels"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["sentinel_master"], "mymaster");
    }

    #[test]
    fn bad_env_value_names_the_variable_but_not_a_password() {
        let err = Config::load(
            None,
            &env_of(&[("REDIS_PORT", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("REDIS_PORT"), "{err}");
        let err = Config::load(
            None,
            &env_of(&[("REDIS_ENABLED", "maybe")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("REDIS_ENABLED"), "{err}");
    }

    #[test]
    fn on_data_loss_from_file_and_env() {
        let c = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.file.storage.redis.on_data_loss, OnDataLossSetting::Reseed);
        let f = write("[storage.redis]\non_data_loss = \"report\"\n");
        let c = Config::load(Some(&f), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.file.storage.redis.on_data_loss, OnDataLossSetting::Report);
        let env = env_of(&[("AICLIENT_REDIS_ON_DATA_LOSS", "reseed")]);
        let c = Config::load(Some(&f), &env, &Overrides::default()).unwrap();
        assert_eq!(c.file.storage.redis.on_data_loss, OnDataLossSetting::Reseed);
        let err = Config::load(
            None,
            &env_of(&[("AICLIENT_REDIS_ON_DATA_LOSS", "ignore")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("AICLIENT_REDIS_ON_DATA_LOSS"), "{err}");
        let f = write("[storage.redis]\non_data_loss = \"ignore\"\n");
        assert!(Config::load(Some(&f), &env_of(&[]), &Overrides::default()).is_err());
    }
}
