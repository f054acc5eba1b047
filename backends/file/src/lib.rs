//! The file storage backend: the whole storage contract on the original Node.js
//! AIClient-2-API `configs/` directory, **format unchanged**, so an existing deployment keeps
//! its files and can go back to the Node version at any time.
//!
//! # What it owns
//!
//! | file in the config dir | contract | shape |
//! |---|---|---|
//! | `config.json` | service config | one object, replaced whole |
//! | `provider_pools.json` | accounts + state | `{"<type>": [ {account}, … ]}` |
//! | credential files | tokens | wherever each account's credential-path field points |
//! | `pwd` | password hash | plain text; a legacy plaintext password is returned as is |
//! | `token-store.json` | sessions | `{"tokens": {"<key>": {username, loginTime, expiryTime}}}` |
//! | `usage-cache.json` | usage cache | one object |
//! | `plugins.json` | plugin states | `{"plugins": {"<name>": {"enabled": bool, …}}}` |
//! | `aiclient-meta.json` | meta | one object (new; the original keeps no metadata) |
//!
//! Everything is read once at startup into memory; calls are answered from memory. Unknown
//! content survives: unknown account fields, pool entries that are not valid accounts (kept
//! verbatim in place), unknown top-level keys, extra keys of plugin entries. Account objects
//! are split and merged by `aiclient_sdk::account` and rewritten in their original key order,
//! so a rewrite of `provider_pools.json` differs from the original only in changed values.
//! JSON is written as the original writes it: `JSON.stringify(v, null, 2)`, no trailing
//! newline. `PROVIDER_POOLS_FILE_PATH` in `config.json` is honoured if it names an existing
//! file, and read once at startup.
//!
//! A malformed file (or one of the wrong shape) fails `create` with its path and line/column,
//! and is never written: nothing is written before the whole directory has loaded.
//!
//! Per document:
//! - `pwd` is trimmed on read and an empty file means "no password", as in the original; the
//!   next `set_password_hash` replaces a plaintext password with the hash.
//! - Sessions are stored under the key the contract gives (already a hash of the bearer token),
//!   with `expiryTime` set to the enforced expiry. The original keyed them by the raw token, so
//!   its sessions never match a hash: after a switch in either direction users log in again.
//!   Expired sessions are never returned and are pruned whenever the file is written.
//! - `set_usage_cache` replaces the document but keeps top-level keys other than `timestamp`
//!   and `providers` that the file had and the new document does not set.
//! - `set_plugin_state` keeps each entry's key order; a plugin counts as enabled only on
//!   `"enabled": true`, as the original reads it.
//!
//! # Credential files
//!
//! An account's token is the JSON file its credential-path field names
//! (`KIRO_OAUTH_CREDS_FILE_PATH`, `GEMINI_OAUTH_CREDS_FILE_PATH`,
//! `ANTIGRAVITY_OAUTH_CREDS_FILE_PATH`, `QWEN_OAUTH_CREDS_FILE_PATH`, `IFLOW_TOKEN_FILE_PATH`
//! or `IFLOW_OAUTH_CREDS_FILE_PATH`, `CODEX_OAUTH_CREDS_FILE_PATH`; for other types any
//! `*_CREDS_FILE_PATH` / `*_TOKEN_FILE_PATH`), stored in the provider's own shape (Kiro
//! camelCase, the others snake_case) and rewritten in place. **Relative paths resolve against
//! the parent of the config dir**: the original resolves them against its working directory,
//! where `configs/` lives, so the two agree for `./configs`, and the gateway may run from any
//! directory. A token set for an account without a path goes to
//! `<config dir>/<dir>/<uuid>.json` (`kiro`, `gemini`, `antigravity`, `qwen`, `iflow`, `codex`,
//! else `tokens/<type>`), and the account records `./<config dir name>/…` in its field, as the
//! original references its files. Kiro files get a folder each (`kiro/<uuid>/<uuid>.json`):
//! the original's Kiro loader merges every sibling `*.json` over a credential.
//! Deleting an account (or its token) deletes the file only if it lies inside the config dir
//! and no other account references it; an operator's file elsewhere is never deleted (the
//! account just stops referencing it). Credential files are read at startup and when an
//! account starts referencing a new path; later edits by other programs are not seen.
//! Not emulated: inline `*_CREDS_BASE64` credentials (neither read nor updated), and the Kiro
//! loader's merge of sibling `*.json` files (which supplied `clientId`/`clientSecret` from the
//! AWS SSO cache's registration file).
//!
//! # Writes
//!
//! Calls change memory and return; a background writer task on the plugin runtime persists.
//! Each write is atomic (temp file in the same directory, fsync, rename, fsync of the
//! directory), and writes are serialised (one pass at a time, files in a fixed order: new token
//! files before the pools file that references them, deletions after it).
//! - **Counters and state** (`update_state`) mark the pools file dirty and are written by the
//!   next tick of a fixed interval (`flush_interval_ms`, default 1000): at most one write per
//!   interval however many updates, and sustained traffic cannot postpone it (the original's
//!   1 s debounce restarted on every change and could starve).
//! - **Structural changes** (accounts, tokens, config, password, sessions, plugins, usage
//!   cache, meta, and disabling an account) wake the writer at once; changes made while a
//!   pass runs are written by the next pass together.
//! - [`flush`](StorageBackend::flush) runs a pass itself and returns once everything accepted
//!   before it is on disk (or the error). The host flushes at shutdown; dropping the backend
//!   runs a last pass too. A failed write keeps the file dirty and is retried every tick; the
//!   error shows in `status()`.
//!
//! # Scope
//!
//! One gateway instance per config dir. Several instances sharing one directory are not
//! supported: each would overwrite the others' changes, and the change feed and the account
//! locks are in-process only.

#![allow(non_local_definitions)]

mod files;
mod layout;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use aiclient_sdk::PluginError;
use aiclient_sdk::account::{STATE_FIELDS, format_time, merge_patch, now_ms, refresh_token_of};
use aiclient_sdk::storage::{
    Account, AccountState, Change, ChangeHub, ChangeKind, ChangeSubscription, PluginState, Session,
    StateUpdate, StorageBackend, TokenCas,
};
use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::layout::{Layout, credential_field, new_field, new_token_rel};
use crate::store::{
    Body, Entry, Job, Paths, RenderCache, Slot, Store, Top, doc, render_pools_text, session_expiry,
    session_tokens,
};

/// Default writer interval: counters reach the disk within about a second, as in the original.
const DEFAULT_FLUSH_MS: u64 = 1000;

/// Write statistics for `status()`.
#[derive(Default)]
struct Stats {
    writes: u64,
    deletes: u64,
    /// Writes per file (name relative to the config dir), in first-write order.
    by_file: Map<String, Value>,
    last_write_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
}

/// Everything the backend and its writer task share.
struct Shared {
    layout: Layout,
    paths: Paths,
    store: Mutex<Store>,
    /// Held for a whole write pass: passes never overlap, so each file's writes are ordered.
    /// Holds the pools file's per-account render cache, which only the writer uses.
    io: Mutex<RenderCache>,
    wake: Arc<Notify>,
    stats: Mutex<Stats>,
    passes: AtomicU64,
    changes: ChangeHub,
    instance: String,
    interval: Duration,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation under these locks is a few assignments that cannot half-apply, so a lock
    // poisoned by a panic elsewhere still guards consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        relock(&self.store)
    }

    /// One write pass: takes what is dirty and writes it (blocking I/O; runs on a blocking
    /// thread). Failed files are marked dirty again; the error is returned and recorded.
    fn write_pass(&self) -> Result<(), String> {
        let mut io = relock(&self.io);
        let jobs = self.lock().take_jobs(&self.paths, now_ms());
        if jobs.is_empty() {
            return Ok(());
        }
        self.passes.fetch_add(1, Ordering::Relaxed);
        let mut errors = Vec::new();
        for Job { target, path, body } in jobs {
            let name = self.layout.name(&path);
            let deleting = matches!(body, Body::Delete);
            match self.run(&path, body, &mut io) {
                Ok(()) => {
                    let mut s = relock(&self.stats);
                    if deleting {
                        s.deletes += 1;
                    } else {
                        s.writes += 1;
                        let n = s.by_file.get(&name).and_then(Value::as_u64).unwrap_or(0);
                        s.by_file.insert(name, Value::from(n + 1));
                    }
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    self.lock().redirty(target);
                }
            }
        }
        let now = now_ms();
        let mut s = relock(&self.stats);
        if errors.is_empty() {
            if let Some(e) = s.last_error.take() {
                tracing::info!(previous = %e, "file storage writes succeed again");
            }
            s.last_write_at = Some(now);
            Ok(())
        } else {
            let msg = errors.join("; ");
            // Retried every tick: log a persisting error once, not once a second.
            if s.last_error.as_deref() != Some(msg.as_str()) {
                tracing::error!(error = %msg, "file storage write failed; will retry");
            }
            s.last_error = Some(msg.clone());
            s.last_error_at = Some(now);
            Err(msg)
        }
    }

    fn run(&self, path: &Path, body: Body, cache: &mut RenderCache) -> Result<(), String> {
        let bytes = match body {
            Body::Delete => {
                return files::remove_file(path, &self.layout.dir).map_err(|e| e.to_string());
            }
            Body::Json(v) => files::pretty(&v),
            Body::Pools(snap) => render_pools_text(snap, cache)?,
            Body::Text(t) => t.into_bytes(),
            // Stored tokens were checked to be JSON objects when set.
            Body::Token(t) => match serde_json::from_str::<Value>(&t) {
                Ok(v) => files::pretty(&v),
                Err(_) => t.into_bytes(),
            },
        };
        files::write_atomic(path, &bytes).map_err(|e| e.to_string())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: write what is still pending (the host also flushes).
        if let Err(e) = self.write_pass() {
            tracing::error!(error = %e, "file storage: final write failed");
        }
    }
}

/// The backend. See the module docs.
pub struct FileBackend {
    shared: Arc<Shared>,
}

struct Options {
    dir: PathBuf,
    instance: String,
    interval: Duration,
}

fn options(config: &Value) -> Result<Options, PluginError> {
    let dir = match config.get("config_dir") {
        None | Some(Value::Null) => PathBuf::from("configs"),
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(other) => {
            return Err(PluginError::invalid_input(format!(
                "config_dir must be a non-empty string, got {other}"
            )));
        }
    };
    let instance = config
        .get("instance_id")
        .and_then(Value::as_str)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let ms = match config.get("flush_interval_ms") {
        None | Some(Value::Null) => DEFAULT_FLUSH_MS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=600_000).contains(n))
            .ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "flush_interval_ms must be 1..=600000 (ms), got {v}"
                ))
            })?,
    };
    Ok(Options {
        dir,
        instance,
        interval: Duration::from_millis(ms),
    })
}

impl FileBackend {
    /// Config: `{"config_dir": "<dir>", "instance_id": "...", "flush_interval_ms": 1000}`; only
    /// `config_dir` matters (default `configs`, created if missing).
    pub async fn open(config: &Value) -> Result<Self, PluginError> {
        let opts = options(config)?;
        let rt = aiclient_sdk::runtime::handle();
        let dir = opts.dir.clone();
        let (layout, store, pools) = rt
            .spawn_blocking(move || -> Result<_, PluginError> {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    PluginError::unavailable(format!(
                        "cannot create the config dir {}: {e}",
                        dir.display()
                    ))
                })?;
                let dir = std::fs::canonicalize(&dir).map_err(|e| {
                    PluginError::unavailable(format!("config dir {}: {e}", dir.display()))
                })?;
                let layout = Layout::new(dir);
                let (store, pools) = store::load(&layout)?;
                Ok((layout, store, pools))
            })
            .await
            .map_err(|e| PluginError::internal(format!("loading the config dir: {e}")))??;
        let accounts = store.accounts().count();
        tracing::info!(config_dir = %layout.dir.display(), accounts, "file storage loaded");
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            paths: Paths {
                pools,
                dir: layout.dir.clone(),
            },
            layout,
            store: Mutex::new(store),
            io: Mutex::new(RenderCache::new()),
            wake: wake.clone(),
            stats: Mutex::new(Stats::default()),
            passes: AtomicU64::new(0),
            changes: ChangeHub::default(),
            instance: opts.instance,
            interval: opts.interval,
        });
        rt.spawn(writer(Arc::downgrade(&shared), wake, opts.interval));
        Ok(Self { shared })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.shared.lock()
    }

    /// Asks the writer for a pass now (structural changes).
    fn wake(&self) {
        self.shared.wake.notify_one();
    }

    fn publish(&self, kind: ChangeKind) {
        self.shared
            .changes
            .publish(Change::new(kind, &self.shared.instance));
    }

    fn publish_account(&self, kind: ChangeKind, t: &str, u: &str) {
        self.shared
            .changes
            .publish(Change::account(kind, t, u, &self.shared.instance));
    }
}

/// The writer task: a pass every `every` (fixed ticks, so counters reach the disk however
/// busy the gateway is) and whenever woken. Holds only a weak reference and ends once the
/// backend is gone.
async fn writer(shared: Weak<Shared>, wake: Arc<Notify>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
        let weak = shared.clone();
        // Upgrade on the blocking thread: if the backend is dropped meanwhile, its final pass
        // (in `Drop`) runs there too, not on the async worker.
        let alive = tokio::task::spawn_blocking(move || match weak.upgrade() {
            Some(s) => {
                let _ = s.write_pass(); // recorded in the stats and logged by the pass
                true
            }
            None => false,
        })
        .await
        .unwrap_or(true);
        if !alive {
            return;
        }
    }
}

fn not_found(t: &str, u: &str) -> PluginError {
    PluginError::not_found(format!("no account {u} of type {t}"))
}

/// Checks that `json` is a JSON object; the contract's stored documents all are.
fn object(what: &str, json: &str) -> Result<Map<String, Value>, PluginError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(PluginError::invalid_input(format!(
            "{what} must be a JSON object"
        ))),
        Err(e) => Err(PluginError::invalid_input(format!(
            "{what}: invalid JSON: {e}"
        ))),
    }
}

fn to_account(t: &str, u: &str, s: &Slot) -> Account {
    Account {
        provider_type: t.into(),
        uuid: u.into(),
        config: s.config.as_str().into(),
        state: s.state.clone(),
    }
}

/// The usage cache's own top-level members; any other top-level key found in the file is kept
/// when the host replaces the document without mentioning it.
const USAGE_KNOWN_KEYS: [&str; 2] = ["timestamp", "providers"];

impl StorageBackend for FileBackend {
    async fn status(&self) -> Result<Value, PluginError> {
        let (types, accounts, pending) = {
            let s = self.lock();
            let types = s
                .pools
                .values()
                .filter(|t| matches!(t, Top::Pool(_)))
                .count();
            (types, s.accounts().count(), s.pending())
        };
        let st = relock(&self.shared.stats);
        let time = |t: Option<i64>| t.map(format_time);
        Ok(json!({
            "backend": "file",
            "connected": true,
            "durable": true,
            "configDir": self.shared.layout.dir.display().to_string(),
            "poolsFile": self.shared.paths.pools.display().to_string(),
            "instanceId": self.shared.instance,
            "providerTypes": types,
            "accounts": accounts,
            "flushIntervalMs": self.shared.interval.as_millis() as u64,
            "pendingWrites": pending,
            "writePasses": self.shared.passes.load(Ordering::Relaxed),
            "writes": st.writes,
            "deletes": st.deletes,
            "writesByFile": st.by_file,
            "lastWriteAt": time(st.last_write_at),
            "lastWriteError": st.last_error,
            "lastWriteErrorAt": time(st.last_error_at),
        }))
    }

    async fn get_config(&self) -> Result<Option<String>, PluginError> {
        Ok(self
            .lock()
            .config
            .as_ref()
            .map(|m| Value::Object(m.clone()).to_string()))
    }

    async fn set_config(&self, json: String) -> Result<(), PluginError> {
        let cfg = object("config", &json)?;
        {
            let mut s = self.lock();
            s.config = Some(cfg);
            s.dirty |= doc::CONFIG;
        }
        self.wake();
        self.publish(ChangeKind::CONFIG);
        Ok(())
    }

    async fn list_provider_types(&self) -> Result<Vec<String>, PluginError> {
        Ok(provider_types(&self.lock()))
    }

    async fn list_accounts(
        &self,
        provider_type: Option<&str>,
    ) -> Result<Vec<Account>, PluginError> {
        let s = self.lock();
        Ok(match provider_type {
            Some(t) => match s.pools.get(t) {
                Some(Top::Pool(pool)) => pool
                    .iter()
                    .filter_map(|(u, e)| match e {
                        Entry::Account(slot) => Some(to_account(t, u, slot)),
                        Entry::Opaque(_) => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
            None => s
                .accounts()
                .map(|(t, u, slot)| to_account(t, u, slot))
                .collect(),
        })
    }

    async fn get_account(&self, t: &str, u: &str) -> Result<Option<Account>, PluginError> {
        Ok(self.lock().slot(t, u).map(|s| to_account(t, u, s)))
    }

    async fn add_account(&self, account: Account) -> Result<(), PluginError> {
        let (t, u) = (account.provider_type.as_str(), account.uuid.as_str());
        if t.is_empty() || u.is_empty() {
            return Err(PluginError::invalid_input(
                "provider type and uuid must not be empty",
            ));
        }
        let mut cfg = object("account config", &account.config)?;
        // The file identifies an account by the `uuid` inside its object, so the object must
        // carry it (the original always writes it).
        let config = match cfg.get("uuid") {
            None => {
                cfg.shift_insert(0, "uuid".into(), Value::String(u.to_string()));
                Value::Object(cfg.clone()).to_string()
            }
            Some(Value::String(s)) if s == u => account.config.to_string(),
            Some(_) => {
                return Err(PluginError::invalid_input(
                    "the config's uuid differs from the account's uuid",
                ));
            }
        };
        let token = credential_field(t, &cfg).map(|(_, v)| self.shared.layout.resolve(&v));
        {
            let mut s = self.lock();
            if s.slot(t, u).is_some() {
                return Err(PluginError::conflict(format!(
                    "account {u} of type {t} exists"
                )));
            }
            if matches!(s.pools.get(t), Some(Top::Other(_))) {
                return Err(PluginError::conflict(format!(
                    "provider_pools.json holds a non-array value under {t:?}; refusing to replace it"
                )));
            }
            if let Some(p) = &token {
                s.load_token(p)?;
            }
            let slot = Slot {
                config,
                state: account.state.clone(),
                token,
                order: None,
            };
            let top = s
                .pools
                .entry(t.to_string())
                .or_insert_with(|| Top::Pool(IndexMap::new()));
            if let Top::Pool(pool) = top {
                pool.insert(u.to_string(), Entry::Account(slot));
            }
            s.dirty |= doc::POOLS;
        }
        self.wake();
        self.publish_account(ChangeKind::ACCOUNT, t, u);
        Ok(())
    }

    async fn update_account(&self, t: &str, u: &str, patch: Value) -> Result<Account, PluginError> {
        let Value::Object(p) = &patch else {
            return Err(PluginError::invalid_input(
                "an account patch must be a JSON object",
            ));
        };
        if let Some((name, _)) = STATE_FIELDS.iter().find(|(n, _)| p.contains_key(*n)) {
            return Err(PluginError::invalid_input(format!(
                "{name} is account state; change it with update_state"
            )));
        }
        if p.get("uuid").is_some_and(|v| v.as_str() != Some(u)) {
            return Err(PluginError::invalid_input(
                "a patch cannot change an account's uuid",
            ));
        }
        let (acct, token_moved) = {
            let mut s = self.lock();
            let slot = s.slot(t, u).ok_or_else(|| not_found(t, u))?;
            let mut cfg: Value = serde_json::from_str(&slot.config)
                .map_err(|e| PluginError::internal(format!("stored account config: {e}")))?;
            let old_token = slot.token.clone();
            merge_patch(&mut cfg, &patch);
            let token = cfg
                .as_object()
                .and_then(|m| credential_field(t, m))
                .map(|(_, v)| self.shared.layout.resolve(&v));
            if let Some(p) = &token {
                // A path the account did not reference before: read that file now (a malformed
                // one refuses the patch).
                s.load_token(p)?;
            }
            let moved = token != old_token;
            let slot = s.slot_mut(t, u).ok_or_else(|| not_found(t, u))?;
            slot.config = cfg.to_string();
            slot.token = token;
            let acct = to_account(t, u, slot);
            s.dirty |= doc::POOLS;
            (acct, moved)
        };
        self.wake();
        self.publish_account(ChangeKind::ACCOUNT, t, u);
        if token_moved {
            self.publish_account(ChangeKind::TOKEN, t, u);
        }
        Ok(acct)
    }

    async fn delete_account(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let existed = {
            let mut s = self.lock();
            let removed = match s.pools.get_mut(t) {
                Some(Top::Pool(pool)) if matches!(pool.get(u), Some(Entry::Account(_))) => {
                    let removed = pool.shift_remove(u);
                    if pool.is_empty() {
                        // As the original's UI does: the last account takes its type along.
                        s.pools.shift_remove(t);
                    }
                    removed
                }
                _ => None,
            };
            s.locks.remove(&(t.to_string(), u.to_string()));
            match removed {
                Some(Entry::Account(slot)) => {
                    if let Some(p) = slot.token
                        && self.shared.layout.inside(&p)
                        && !s.referenced(&p, (t, u))
                        && matches!(s.tokens.get(&p), Some(Some(_)))
                    {
                        s.tokens.insert(p.clone(), None);
                        s.dirty_tokens.insert(p);
                    }
                    s.dirty |= doc::POOLS;
                    true
                }
                _ => false,
            }
        };
        if existed {
            self.wake();
            self.publish_account(ChangeKind::ACCOUNT_DELETED, t, u);
        }
        Ok(existed)
    }

    async fn update_state(
        &self,
        t: &str,
        u: &str,
        update: StateUpdate,
    ) -> Result<AccountState, PluginError> {
        let st = {
            let mut s = self.lock();
            let slot = s.slot_mut(t, u).ok_or_else(|| not_found(t, u))?;
            update.apply(&mut slot.state);
            let st = slot.state.clone();
            s.dirty |= doc::POOLS;
            st
        };
        // Counters wait for the next tick; an operator's disable/enable is written at once.
        if update.disabled.is_some() {
            self.wake();
        }
        self.publish_account(ChangeKind::ACCOUNT_STATE, t, u);
        Ok(st)
    }

    async fn get_token(&self, t: &str, u: &str) -> Result<Option<String>, PluginError> {
        let s = self.lock();
        let Some(p) = s.slot(t, u).and_then(|slot| slot.token.as_ref()) else {
            return Ok(None);
        };
        Ok(s.tokens.get(p).cloned().flatten())
    }

    async fn set_token(&self, t: &str, u: &str, json: String) -> Result<(), PluginError> {
        object("token", &json)?;
        let (assigned, others) = {
            let mut s = self.lock();
            let (p, assigned) = self.token_path(&mut s, t, u)?;
            s.tokens.insert(p.clone(), Some(json));
            s.dirty_tokens.insert(p.clone());
            (assigned, sharers(&s, &p, (t, u)))
        };
        self.wake();
        if assigned {
            self.publish_account(ChangeKind::ACCOUNT, t, u);
        }
        self.publish_account(ChangeKind::TOKEN, t, u);
        for (ot, ou) in others {
            self.publish_account(ChangeKind::TOKEN, &ot, &ou);
        }
        Ok(())
    }

    async fn cas_token(
        &self,
        t: &str,
        u: &str,
        expected: &str,
        json: String,
    ) -> Result<TokenCas, PluginError> {
        object("token", &json)?;
        let (result, assigned, others) = {
            let mut s = self.lock();
            let slot = s.slot(t, u).ok_or_else(|| not_found(t, u))?;
            let current = slot
                .token
                .as_ref()
                .and_then(|p| s.tokens.get(p).cloned().flatten());
            let current_rt = current
                .as_deref()
                .and_then(refresh_token_of)
                .unwrap_or_default();
            if current_rt != expected {
                let refused = TokenCas {
                    swapped: false,
                    current: current.map(RString::from).into(),
                };
                return Ok(refused);
            }
            let (p, assigned) = self.token_path(&mut s, t, u)?;
            s.tokens.insert(p.clone(), Some(json));
            s.dirty_tokens.insert(p.clone());
            (
                TokenCas {
                    swapped: true,
                    current: ROption::RNone,
                },
                assigned,
                sharers(&s, &p, (t, u)),
            )
        };
        self.wake();
        if assigned {
            self.publish_account(ChangeKind::ACCOUNT, t, u);
        }
        self.publish_account(ChangeKind::TOKEN, t, u);
        for (ot, ou) in others {
            self.publish_account(ChangeKind::TOKEN, &ot, &ou);
        }
        Ok(result)
    }

    async fn delete_token(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let unlinked = {
            let mut s = self.lock();
            let Some(p) = s.slot(t, u).and_then(|slot| slot.token.clone()) else {
                return Ok(false);
            };
            if !matches!(s.tokens.get(&p), Some(Some(_))) {
                return Ok(false);
            }
            if self.shared.layout.inside(&p) && !s.referenced(&p, (t, u)) {
                // Ours alone: delete the file; the path field stays, so a new token lands
                // where the old one was.
                s.tokens.insert(p.clone(), None);
                s.dirty_tokens.insert(p);
                false
            } else {
                // An operator's file, or shared: leave it, and stop referencing it.
                let slot = s.slot_mut(t, u).ok_or_else(|| not_found(t, u))?;
                let mut cfg = object("stored account config", &slot.config)?;
                if let Some((field, _)) = credential_field(t, &cfg) {
                    cfg.shift_remove(&field);
                }
                slot.config = Value::Object(cfg).to_string();
                slot.token = None;
                s.dirty |= doc::POOLS;
                true
            }
        };
        self.wake();
        if unlinked {
            self.publish_account(ChangeKind::ACCOUNT, t, u);
        }
        self.publish_account(ChangeKind::TOKEN, t, u);
        Ok(true)
    }

    async fn acquire_lock(
        &self,
        t: &str,
        u: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, PluginError> {
        if owner.is_empty() || ttl_ms == 0 {
            return Err(PluginError::invalid_input(
                "a lock needs an owner and a ttl",
            ));
        }
        let mut s = self.lock();
        let now = Instant::now();
        let k = (t.to_string(), u.to_string());
        match s.locks.get(&k) {
            Some((o, exp)) if *exp > now && o != owner => Ok(false),
            _ => {
                s.locks
                    .insert(k, (owner.to_string(), now + Duration::from_millis(ttl_ms)));
                Ok(true)
            }
        }
    }

    async fn release_lock(&self, t: &str, u: &str, owner: &str) -> Result<bool, PluginError> {
        let mut s = self.lock();
        let k = (t.to_string(), u.to_string());
        match s.locks.get(&k) {
            Some((o, exp)) if o == owner && *exp > Instant::now() => {
                s.locks.remove(&k);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_password_hash(&self) -> Result<Option<String>, PluginError> {
        Ok(self.lock().pwd.clone())
    }

    async fn set_password_hash(&self, hash: String) -> Result<(), PluginError> {
        if hash.is_empty() {
            return Err(PluginError::invalid_input("empty password hash"));
        }
        {
            let mut s = self.lock();
            s.pwd = Some(hash);
            s.dirty |= doc::PWD;
        }
        self.wake();
        self.publish(ChangeKind::PASSWORD);
        Ok(())
    }

    async fn create_session(&self, session: Session) -> Result<(), PluginError> {
        let mut data = object("session data", &session.data)?;
        if session.token_hash.is_empty() {
            return Err(PluginError::invalid_input("empty session token hash"));
        }
        // The file's expiry is the one enforced (the original reads `expiryTime`).
        data.insert("expiryTime".into(), Value::from(session.expires_at));
        {
            let mut s = self.lock();
            let now = now_ms();
            let tokens = session_tokens(s.sessions.get_or_insert_with(Map::new));
            tokens.retain(|_, v| session_expiry(v).is_some_and(|e| e > now));
            tokens.insert(session.token_hash.to_string(), Value::Object(data));
            s.dirty |= doc::SESSIONS;
        }
        self.wake();
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, PluginError> {
        let mut s = self.lock();
        let Some(doc) = s.sessions.as_mut() else {
            return Ok(None);
        };
        let tokens = session_tokens(doc);
        let Some(entry) = tokens.get(token_hash) else {
            return Ok(None);
        };
        match session_expiry(entry) {
            Some(e) if e > now_ms() => Ok(Some(Session {
                token_hash: token_hash.into(),
                data: entry.to_string().into(),
                expires_at: e,
            })),
            _ => {
                // Gone from memory now; the file drops it on its next write.
                tokens.shift_remove(token_hash);
                Ok(None)
            }
        }
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool, PluginError> {
        let existed = {
            let mut s = self.lock();
            let existed = s
                .sessions
                .as_mut()
                .is_some_and(|d| session_tokens(d).shift_remove(token_hash).is_some());
            if existed {
                s.dirty |= doc::SESSIONS;
            }
            existed
        };
        if existed {
            self.wake();
            self.publish(ChangeKind::SESSION);
        }
        Ok(existed)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, PluginError> {
        let now = now_ms();
        let mut s = self.lock();
        let Some(doc) = s.sessions.as_mut() else {
            return Ok(Vec::new());
        };
        Ok(session_tokens(doc)
            .iter()
            .filter_map(|(k, v)| {
                let e = session_expiry(v).filter(|e| *e > now)?;
                Some(Session {
                    token_hash: k.as_str().into(),
                    data: v.to_string().into(),
                    expires_at: e,
                })
            })
            .collect())
    }

    async fn get_usage_cache(&self) -> Result<Option<String>, PluginError> {
        Ok(self
            .lock()
            .usage
            .as_ref()
            .map(|m| Value::Object(m.clone()).to_string()))
    }

    async fn set_usage_cache(&self, json: String) -> Result<(), PluginError> {
        let mut new = object("usage cache", &json)?;
        {
            let mut s = self.lock();
            if let Some(old) = &s.usage {
                for (k, v) in old {
                    if !USAGE_KNOWN_KEYS.contains(&k.as_str()) && !new.contains_key(k) {
                        new.insert(k.clone(), v.clone());
                    }
                }
            }
            s.usage = Some(new);
            s.dirty |= doc::USAGE;
        }
        self.wake();
        self.publish(ChangeKind::USAGE_CACHE);
        Ok(())
    }

    async fn list_plugin_states(&self) -> Result<Vec<PluginState>, PluginError> {
        let s = self.lock();
        let Some(Value::Object(plugins)) = s.plugins.as_ref().and_then(|d| d.get("plugins")) else {
            return Ok(Vec::new());
        };
        Ok(plugins
            .iter()
            .filter_map(|(name, entry)| {
                let entry = entry.as_object()?;
                let mut extra = entry.clone();
                extra.shift_remove("enabled");
                Some(PluginState {
                    name: name.as_str().into(),
                    // The original enables a plugin only on `enabled === true`.
                    enabled: entry.get("enabled") == Some(&Value::Bool(true)),
                    extra: Value::Object(extra).to_string().into(),
                })
            })
            .collect())
    }

    async fn set_plugin_state(&self, state: PluginState) -> Result<(), PluginError> {
        if state.name.is_empty() {
            return Err(PluginError::invalid_input("empty plugin name"));
        }
        let extra = object("plugin extra", &state.extra)?;
        {
            let mut s = self.lock();
            let doc = s.plugins.get_or_insert_with(Map::new);
            let plugins = match doc
                .entry("plugins")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(m) => m,
                _ => {
                    return Err(PluginError::internal(
                        "plugins.json: \"plugins\" is not an object",
                    ));
                }
            };
            let old = plugins
                .get(state.name.as_str())
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            plugins.insert(
                state.name.to_string(),
                Value::Object(plugin_entry(old, state.enabled, extra)),
            );
            s.dirty |= doc::PLUGINS;
        }
        self.wake();
        self.publish(ChangeKind::PLUGINS);
        Ok(())
    }

    async fn get_meta(&self) -> Result<Option<String>, PluginError> {
        Ok(self
            .lock()
            .meta
            .as_ref()
            .map(|m| Value::Object(m.clone()).to_string()))
    }

    async fn set_meta(&self, json: String) -> Result<(), PluginError> {
        let meta = object("meta", &json)?;
        {
            let mut s = self.lock();
            s.meta = Some(meta);
            s.dirty |= doc::META;
        }
        self.wake();
        self.publish(ChangeKind::META);
        Ok(())
    }

    async fn subscribe(&self) -> Result<ChangeSubscription, PluginError> {
        Ok(self.shared.changes.subscribe())
    }

    async fn flush(&self) -> Result<(), PluginError> {
        let shared = self.shared.clone();
        // On a blocking thread: a dropped (cancelled) flush still finishes its pass, so the
        // pass lock is never released mid-write.
        match aiclient_sdk::runtime::handle()
            .spawn_blocking(move || shared.write_pass())
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PluginError::unavailable(format!(
                "writing the config dir: {e}"
            ))),
            Err(e) => Err(PluginError::internal(format!("flush: {e}"))),
        }
    }
}

impl FileBackend {
    /// The account's token file, creating the reference if it has none: a new file under the
    /// config dir, recorded in the account's credential field. Returns the path and whether it
    /// was just assigned.
    fn token_path(&self, s: &mut Store, t: &str, u: &str) -> Result<(PathBuf, bool), PluginError> {
        let slot = s.slot(t, u).ok_or_else(|| not_found(t, u))?;
        if let Some(p) = &slot.token {
            return Ok((p.clone(), false));
        }
        let mut cfg = object("stored account config", &slot.config)?;
        let layout = &self.shared.layout;
        let p = (0..)
            .map(|attempt| layout.dir.join(new_token_rel(t, u, attempt)))
            .find(|p| !s.tokens.contains_key(p) && !p.exists())
            .unwrap_or_else(|| layout.dir.join(new_token_rel(t, u, 0)));
        cfg.insert(new_field(t), Value::String(layout.reference(&p)));
        let slot = s.slot_mut(t, u).ok_or_else(|| not_found(t, u))?;
        slot.config = Value::Object(cfg).to_string();
        slot.token = Some(p.clone());
        s.dirty |= doc::POOLS;
        Ok((p, true))
    }
}

/// Types with at least one account, in file order, as in the memory backend (a type whose
/// array is empty, `[]`, stays in the file but is not listed).
fn provider_types(s: &Store) -> Vec<String> {
    s.pools
        .iter()
        .filter(|(_, top)| match top {
            Top::Pool(p) => p.values().any(|e| matches!(e, Entry::Account(_))),
            Top::Other(_) => false,
        })
        .map(|(t, _)| t.clone())
        .collect()
}

/// Other accounts sharing the token file `p` (their token changed too).
fn sharers(s: &Store, p: &Path, except: (&str, &str)) -> Vec<(String, String)> {
    s.accounts()
        .filter(|(t, u, slot)| (*t, *u) != except && slot.token.as_deref() == Some(p))
        .map(|(t, u, _)| (t.to_string(), u.to_string()))
        .collect()
}

/// A plugin's new `plugins.json` entry: the old entry's keys in their order with `enabled` and
/// the extra values replaced, then new extra keys; `enabled` first in a new entry, as the
/// original writes it.
fn plugin_entry(
    old: Map<String, Value>,
    enabled: bool,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut placed = false;
    for (k, _) in old {
        if k == "enabled" {
            out.insert(k, Value::Bool(enabled));
            placed = true;
        } else if let Some(v) = extra.get(&k) {
            out.insert(k, v.clone());
        }
    }
    if !placed {
        out.shift_insert(0, "enabled".into(), Value::Bool(enabled));
    }
    for (k, v) in extra {
        if k != "enabled" && !out.contains_key(&k) {
            out.insert(k, v);
        }
    }
    out
}

aiclient_sdk::export_storage_backend! {
    name: "file",
    description: "The original AIClient-2-API configs/ directory (JSON files), format unchanged",
    create: |config: Value| async move { FileBackend::open(&config).await },
}
