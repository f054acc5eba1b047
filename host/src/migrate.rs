//! `aiclient migrate`, `export` and `init`: moving the whole state between storage backends.
//!
//! Everything goes through the storage API ([`crate::storage::Storage`]), so one code path
//! serves every pair of backends: importing an AIClient-2-API `configs/` directory into Redis
//! is "open the file backend on the directory, open the redis backend, copy"; exporting is the
//! same copy into a file backend opened on a staging directory.
//!
//! # A migration, step by step
//!
//! 1. **Stage.** The source is read completely ([`snapshot::read`]): config, every account,
//!    every token, password, sessions, usage cache, plugin states, meta. A malformed or
//!    truncated file makes the file backend refuse to open, naming the file, line and column;
//!    nothing has been written to the target at that point, so the target stays untouched.
//! 2. **Plan.** The target is read too, and every source item is compared with the target's
//!    ([`copy::plan`]): *create* (missing in the target), *unchanged* (equal content), *keep*
//!    (exists with different content, left alone without `--force`), *update* (`--force`),
//!    *skip* (cannot be carried) or *fail* (a referenced token file is missing). `--dry-run`
//!    prints this plan and stops.
//! 3. **Commit.** The planned writes run in a fixed order: config, accounts (sequentially, in
//!    source order, so each pool keeps its order), tokens, password, sessions, usage cache,
//!    plugin states. A target that goes away mid-commit stops it; a re-run completes it.
//! 4. **Verify.** Everything is read back (a file target is closed and reopened, so what is
//!    compared is what is on disk) and compared item by item with what was planned; any
//!    mismatch is listed and the exit code is 1.
//! 5. **Meta.** Last, the target's meta records the schema version, the time, the source and
//!    whether the run was complete and verified.
//!
//! # What is compared, what `--force` does
//!
//! JSON documents are compared as JSON (key order and formatting do not matter). Without
//! `--force` nothing that exists in the target is ever changed, so a second run changes nothing
//! and a run after new accounts were added to a pool adds exactly those. With `--force`, items
//! whose content differs are overwritten: the service config, an account's configuration
//! fields, tokens, the admin password, sessions, the usage cache and plugin states. An existing
//! account's **live state** (counters, health, `isDisabled`, times) is never overwritten, by
//! any flag: it is the target's running record. Nothing is ever deleted from the target.
//!
//! # Sessions
//!
//! Backends store sessions under the SHA-256 of the bearer token (the host never hands them
//! the token). The original's `token-store.json` is keyed by the raw token, so sessions read
//! from a file directory are re-keyed with that hash: a browser still logged in to the Node
//! version stays logged in after the switch. A directory this tool has written carries
//! `"sessionKeys": "sha256"` in its `aiclient-meta.json` and is not hashed again; every target
//! gets that marker. Consequence for a round trip: an exported `token-store.json` holds hashed
//! keys, so the Node version asks its users to log in again. Expired sessions are not copied.
//!
//! # Token files in a file target
//!
//! A file backend writes each account's token where the account's credential-path field points,
//! relative paths resolving against the parent of the config dir (`./configs/kiro/a.json`).
//! A copy into a file target never writes outside the target directory: a reference that would
//! resolve elsewhere is rewritten to the same place inside it (`./configs/<rest>` keeps its
//! `<rest>`; absolute and other paths go to `<dir>/<uuid>.json` as the file backend would place
//! a new token), and the rewrite is reported. An account with a token but no reference gets one.

mod args;
pub mod copy;
pub mod export;
pub mod init;
pub mod paths;
pub mod report;
pub mod snapshot;
pub mod spec;
pub mod verify;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use aiclient_sdk::account::{format_time, now_ms};
use serde_json::{Map, Value};

pub use args::{ExportArgs, InitArgs, MigrateArgs};
pub use spec::{Endpoint, Place, Spec};

use crate::config::Config;
use crate::storage::Storage;
use copy::{Ctx, Item, Outcome};
use snapshot::{Snapshot, Tokens};

/// The storage schema version this host writes into meta (the Redis backend refuses to open a
/// store with a larger one).
pub const SCHEMA_VERSION: i64 = 1;

/// Meta key marking that session keys are token hashes (see the module docs).
pub const SESSION_KEYS: &str = "sessionKeys";

/// How a command ended: 0 full success, 1 failure, 2 bad invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failure,
    Usage,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Failure => ExitCode::from(1),
            Exit::Usage => ExitCode::from(2),
        }
    }
}

/// Why a command stopped early: the message (already free of secrets) and the exit it gives.
#[derive(Debug)]
pub struct Stop {
    pub exit: Exit,
    pub message: String,
}

impl Stop {
    pub fn usage(m: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: m.into(),
        }
    }
    pub fn failed(m: impl Into<String>) -> Self {
        Self {
            exit: Exit::Failure,
            message: m.into(),
        }
    }
}

impl From<String> for Stop {
    fn from(m: String) -> Self {
        Stop::failed(m)
    }
}

/// What `migrate` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
    pub allow_missing_tokens: bool,
    /// Draw progress bars (on a terminal, for large copies).
    pub progress: bool,
}

/// Opens the backend an endpoint names.
pub async fn open(plugin_dir: &Path, ep: &Endpoint) -> Result<Storage, String> {
    let (_lib, storage) = crate::plugins::open_storage(plugin_dir, &ep.backend, &ep.config)
        .await
        .map_err(|e| format!("cannot open {}: {e}", ep.label))?;
    Ok(storage)
}

/// Whether progress bars can be drawn at all.
pub fn terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn write_err(e: std::io::Error) -> Stop {
    Stop::failed(format!("cannot write the output: {e}"))
}

/// A file backend's canonical config dir and pools file, as its `status()` reports them.
async fn file_paths(s: &Storage) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let st = s
        .status()
        .await
        .map_err(|e| format!("{} backend status: {e}", s.name()))?;
    let dir = st["configDir"]
        .as_str()
        .ok_or("the file backend's status has no configDir")?;
    let pools = st["poolsFile"].as_str().unwrap_or_default();
    Ok((dir.into(), pools.into()))
}

/// What the plan needs to know about the source.
pub struct SourceInfo {
    /// The file backend's config dir, if the source is one.
    pub file_dir: Option<std::path::PathBuf>,
    /// Whether the source's session keys are raw bearer tokens (an original `configs/`).
    pub raw_session_keys: bool,
    /// Content of the source files the storage API cannot carry (file sources only).
    pub lossy: Vec<Item>,
}

/// Reads the source completely (the "stage" step) and describes it.
pub async fn stage_source(
    source: &Storage,
    progress: bool,
) -> Result<(Snapshot, SourceInfo), String> {
    let bar = report::bar(0, "reading", progress);
    let snap = snapshot::read(source, "source", Tokens::All, &bar).await?;
    bar.finish();
    let (file_dir, lossy) = if source.name() == "file" {
        let (dir, pools) = file_paths(source).await?;
        let lossy = snapshot::scan_file_dir(&dir, &pools);
        (Some(dir), lossy)
    } else {
        (None, Vec::new())
    };
    let marked = snap
        .meta
        .as_ref()
        .and_then(|m| m.get(SESSION_KEYS))
        .and_then(Value::as_str)
        == Some("sha256");
    let raw_session_keys = file_dir.is_some() && !marked;
    Ok((
        snap,
        SourceInfo {
            file_dir,
            raw_session_keys,
            lossy,
        },
    ))
}

/// The meta object written after a run: the target's own meta with this run's facts.
pub fn meta_after(
    existing: Option<&Map<String, Value>>,
    facts: &[(&str, Value)],
) -> Map<String, Value> {
    let mut m = existing.cloned().unwrap_or_default();
    m.insert("schemaVersion".into(), Value::from(SCHEMA_VERSION));
    m.insert(SESSION_KEYS.into(), Value::from("sha256"));
    for (k, v) in facts {
        m.insert((*k).to_string(), v.clone());
    }
    m
}

/// Commits a plan into `target`, flushes, reads everything back (reopening a file target) and
/// writes meta. Returns the storage to use afterwards and the verification result.
pub struct Applied {
    pub storage: Storage,
    pub aborted: Option<String>,
    pub checked: usize,
    pub mismatches: Vec<verify::Mismatch>,
}

/// Steps 3–5 of the module docs.
pub async fn apply(
    plugin_dir: &Path,
    target_ep: &Endpoint,
    target: Storage,
    items: &mut [Item],
    facts: &[(&str, Value)],
    progress: bool,
) -> Result<Applied, String> {
    let writes = items.iter().filter(|i| i.op.is_some()).count() as u64;
    let bar = report::bar(writes, "writing", progress);
    let aborted = copy::commit(&target, items, &bar).await;
    bar.finish();
    if let Err(e) = target.flush().await {
        return Err(format!(
            "{}: flushing the writes failed: {e}",
            target_ep.label
        ));
    }
    // Read back what is really stored: a file target is closed (its last write pass runs) and
    // opened again from disk.
    let target = if target.name() == "file" {
        drop(target);
        open(plugin_dir, target_ep).await?
    } else {
        target
    };
    let bar = report::bar(0, "verifying", progress);
    let (checked, mismatches) = verify::verify(&target, items, &bar).await?;
    bar.finish();
    if aborted.is_none() {
        let old = match target.get_meta().await {
            Ok(Some(t)) => serde_json::from_str::<Value>(&t)
                .ok()
                .and_then(|v| v.as_object().cloned()),
            _ => None,
        };
        let ok = mismatches.is_empty() && !items.iter().any(|i| i.outcome == Outcome::Fail);
        let mut facts = facts.to_vec();
        facts.push((
            "lastRunStatus",
            Value::from(if ok { "complete" } else { "incomplete" }),
        ));
        let meta = meta_after(old.as_ref(), &facts);
        target
            .set_meta(&Value::Object(meta).to_string())
            .await
            .map_err(|e| format!("{}: writing meta failed: {e}", target_ep.label))?;
        target
            .flush()
            .await
            .map_err(|e| format!("{}: flushing meta failed: {e}", target_ep.label))?;
    }
    Ok(Applied {
        storage: target,
        aborted,
        checked,
        mismatches,
    })
}

/// `aiclient migrate`: see the module docs.
pub async fn migrate(
    config: &Config,
    from: &Endpoint,
    to: &Endpoint,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Exit, Stop> {
    if from.place.same_as(&to.place) {
        return Err(Stop::usage(format!(
            "the source and the target are the same ({})",
            from.label
        )));
    }
    if let Place::File(dir) = &from.place
        && !dir.is_dir()
    {
        return Err(Stop::usage(format!(
            "the source config dir {} does not exist",
            dir.display()
        )));
    }
    if from.place == Place::Memory {
        return Err(Stop::usage(
            "the source is the memory backend, which starts empty in every process: nothing to migrate",
        ));
    }
    if to.place == Place::Memory && !opts.dry_run {
        return Err(Stop::usage(
            "the target is the memory backend, which keeps nothing after this command: give --redis-url, --to, or configure a storage backend",
        ));
    }
    let plugin_dir = &config.plugin_dir;
    let head = if opts.dry_run { "Dry run: " } else { "" };
    writeln!(out, "{head}migrating {} → {}", from.label, to.label).map_err(write_err)?;

    let source = open(plugin_dir, from).await?;
    let (src, info) = stage_source(&source, opts.progress).await?;
    drop(source);

    // A dry run into a file dir that does not exist yet must not create it.
    let target_missing = matches!(&to.place, Place::File(d) if !d.exists());
    let (target, dst, layout) = if opts.dry_run && target_missing {
        let Place::File(d) = &to.place else {
            unreachable!("checked above")
        };
        let abs = std::path::absolute(d).map_err(|e| format!("{}: {e}", d.display()))?;
        (
            None,
            Snapshot::default(),
            Some(paths::Layout::new(paths::normalize(&abs))),
        )
    } else {
        let target = open(plugin_dir, to).await?;
        let keys = src.keys();
        let bar = report::bar(0, "reading target", opts.progress);
        let dst = snapshot::read(&target, "target", Tokens::Of(&keys), &bar).await?;
        bar.finish();
        let layout = if target.name() == "file" {
            Some(paths::Layout::new(file_paths(&target).await?.0))
        } else {
            None
        };
        (Some(target), dst, layout)
    };

    let ctx = Ctx {
        force: opts.force,
        allow_missing_tokens: opts.allow_missing_tokens,
        hash_session_keys: info.raw_session_keys,
        file_target: layout.as_ref(),
        source_file_dir: info.file_dir.as_deref(),
    };
    let mut items = info.lossy;
    items.extend(copy::plan(&src, &dst, &ctx));
    let others = copy::target_only(&src, &dst);

    if opts.dry_run {
        report::print_items(out, &items, true).map_err(write_err)?;
        report::print_target_only(out, &others).map_err(write_err)?;
        report::print_summary(out, &items, true).map_err(write_err)?;
        writeln!(out, "Dry run: nothing was written.").map_err(write_err)?;
        let failed = items.iter().any(|i| i.outcome == Outcome::Fail);
        return Ok(if failed { Exit::Failure } else { Exit::Success });
    }

    let target = target.expect("opened unless a dry run");
    let facts = [
        ("migratedAt", Value::from(format_time(now_ms()))),
        ("migratedFrom", Value::from(from.label.clone())),
        (
            "migratedBy",
            Value::from(format!("aiclient {}", env!("CARGO_PKG_VERSION"))),
        ),
    ];
    let applied = apply(plugin_dir, to, target, &mut items, &facts, opts.progress).await?;
    drop(applied.storage);

    report::print_items(out, &items, false).map_err(write_err)?;
    report::print_target_only(out, &others).map_err(write_err)?;
    report::print_summary(out, &items, false).map_err(write_err)?;
    report::print_verification(out, applied.checked, &applied.mismatches).map_err(write_err)?;
    if let Some(reason) = &applied.aborted {
        writeln!(
            out,
            "Migration stopped: {reason}. Run it again to complete it (it is idempotent)."
        )
        .map_err(write_err)?;
        return Ok(Exit::Failure);
    }
    let failed = items.iter().filter(|i| i.outcome == Outcome::Fail).count();
    if failed == 0 && applied.mismatches.is_empty() {
        writeln!(out, "Migration complete.").map_err(write_err)?;
        Ok(Exit::Success)
    } else {
        writeln!(
            out,
            "Migration finished with {failed} failed item(s) and {} verification mismatch(es).",
            applied.mismatches.len()
        )
        .map_err(write_err)?;
        Ok(Exit::Failure)
    }
}

/// Prints a stop's message and gives its exit code.
pub fn finish(r: Result<Exit, Stop>) -> ExitCode {
    match r {
        Ok(e) => e.into(),
        Err(stop) => {
            eprintln!("error: {}", stop.message);
            stop.exit.into()
        }
    }
}

/// `aiclient migrate` from the command line.
pub async fn run_migrate(config: &Config, a: MigrateArgs) -> ExitCode {
    finish(run_migrate_inner(config, a).await)
}

async fn run_migrate_inner(config: &Config, a: MigrateArgs) -> Result<Exit, Stop> {
    let instance = instance_id(config);
    let from = match (&a.from, &a.config_dir) {
        (Some(s), _) => Spec::parse(s).map_err(Stop::usage)?,
        (None, Some(d)) => Spec::File(d.clone()),
        (None, None) => Spec::File(config.file.storage.file.config_dir.clone()),
    };
    let to = match &a.to {
        Some(s) => Spec::parse(s).map_err(Stop::usage)?,
        None => Spec::Configured,
    };
    let from = spec::resolve(&from, config, &instance).map_err(Stop::usage)?;
    let to = spec::resolve(&to, config, &instance).map_err(Stop::usage)?;
    let opts = Options {
        dry_run: a.dry_run,
        force: a.force,
        allow_missing_tokens: a.allow_missing_tokens,
        progress: terminal(),
    };
    migrate(config, &from, &to, &opts, &mut std::io::stdout().lock()).await
}

/// `aiclient export` from the command line.
pub async fn run_export(config: &Config, a: ExportArgs) -> ExitCode {
    finish(run_export_inner(config, a).await)
}

async fn run_export_inner(config: &Config, a: ExportArgs) -> Result<Exit, Stop> {
    let instance = instance_id(config);
    let from = match &a.from {
        Some(s) => Spec::parse(s).map_err(Stop::usage)?,
        None => Spec::Configured,
    };
    let from = spec::resolve(&from, config, &instance).map_err(Stop::usage)?;
    export::export(
        config,
        &from,
        &a.output_dir,
        a.force,
        terminal(),
        &mut std::io::stdout().lock(),
    )
    .await
}

/// `aiclient init` from the command line.
pub async fn run_init(config: &Config, a: InitArgs) -> ExitCode {
    let instance = instance_id(config);
    let r = match spec::resolve(&Spec::Configured, config, &instance) {
        Ok(ep) => init::init(config, &ep, a.force, &mut std::io::stdout().lock()).await,
        Err(e) => Err(Stop::usage(e)),
    };
    finish(r)
}

fn instance_id(config: &Config) -> String {
    if config.file.server.instance_id.is_empty() {
        format!("aiclient-cli-{}", uuid::Uuid::new_v4())
    } else {
        config.file.server.instance_id.clone()
    }
}
