//! The Redis storage backend: the whole storage contract in one Redis database (or a Redis
//! Cluster later), shared by every gateway instance pointed at it.
//!
//! What this crate owns:
//! - the key schema ([`keys`], written down in `docs/redis-schema.md`): index sets instead of
//!   `KEYS`/`SCAN`, hash tags so every multi-key script touches one slot, counters and health
//!   as separate hash fields changed with `HINCRBY`/`HSET`, account config and tokens as opaque
//!   strings that Lua never decodes;
//! - the Lua scripts behind every compound operation ([`scripts`]);
//! - the change feed over pub/sub ([`feed`]);
//! - the connection ([`conn`]): one multiplexed, auto-reconnecting `ConnectionManager` for
//!   commands (or, with `cluster_nodes`, the cluster client's slot-routing connection),
//!   every call bounded by the command timeout (default 1,000 ms), connects by the connect
//!   timeout (default 5,000 ms); a failed call is an error, never an empty value ([`errors`]);
//! - the schema version check against `meta.schemaVersion` at start.
//!
//! The password is never logged, returned in an error, or shown in `status()` ([`settings`]).

#![allow(non_local_definitions)]

pub mod conn;
pub mod errors;
pub mod feed;
pub mod keys;
pub mod scripts;
pub mod settings;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use aiclient_sdk::account::{STATE_FIELDS, merge_patch, now_ms, refresh_token_of};
use aiclient_sdk::storage::{
    Account, AccountState, ChangeHub, ChangeKind, ChangeSubscription, PluginState, Session,
    StateUpdate, StorageBackend, TokenCas, field,
};
use aiclient_sdk::{ErrorCode, PluginError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult, ScriptInvocation, Value as RValue};
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use errors::Ctx;
use keys::{ACCOUNT_FIELDS, Keys};

/// The newest data layout this binary reads and writes (`meta.schemaVersion`). The backend
/// never writes meta itself (a fresh store has none); it refuses to start on a newer one.
pub const SCHEMA_VERSION: i64 = 1;

/// How often `update_account` retries its compare-and-set when the config changed between its
/// read and its write (each retry is 2 round trips, ~0.1 ms on loopback).
const CONFIG_CAS_ATTEMPTS: usize = 32;

pub struct RedisBackend {
    conn: conn::Conn,
    keys: Keys,
    channel: String,
    instance: String,
    hub: ChangeHub,
    feed: Arc<feed::FeedState>,
    listener: AbortHandle,
    ctx: Ctx,
    timeout: Duration,
    masked_url: String,
    db: i64,
    tls: bool,
    prefix: String,
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        // The listener holds a sender of the hub; ending it closes every subscription.
        self.listener.abort();
    }
}

fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // An error means a provider is installed already (by the host or another plugin).
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Checks `meta.schemaVersion` against [`SCHEMA_VERSION`].
fn check_schema(meta: Option<&str>, prefix: &str) -> Result<(), PluginError> {
    let Some(text) = meta else { return Ok(()) };
    let incompatible = |why: String| {
        PluginError::new(
            ErrorCode::INCOMPATIBLE,
            format!(
                "redis data under prefix {prefix:?} {why}; this aiclient understands schema \
                 version {SCHEMA_VERSION} at most: upgrade aiclient or use another key_prefix"
            ),
        )
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|_| incompatible("has a meta document that is not JSON".into()))?;
    match v.get("schemaVersion") {
        None | Some(Value::Null) => Ok(()),
        Some(n) => match n.as_i64() {
            Some(n) if n <= SCHEMA_VERSION => Ok(()),
            Some(n) => Err(incompatible(format!("was written with schema version {n}"))),
            None => Err(incompatible(format!(
                "has schemaVersion {n}, not an integer"
            ))),
        },
    }
}

impl RedisBackend {
    /// Connects, checks the schema version and starts the change-feed listener.
    pub async fn open(config: &Value) -> Result<Self, PluginError> {
        let s = settings::parse(config)?;
        if s.tls {
            install_tls_provider();
        }
        let ctx = Ctx {
            server: s.server.clone(),
            redactor: s.redactor.clone(),
        };
        let tls_certs = |pem: &Vec<u8>| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        let client_for = |info: &redis::ConnectionInfo| match &s.tls_ca {
            None => redis::Client::open(info.clone()),
            Some(pem) => redis::Client::build_with_tls(info.clone(), tls_certs(pem)),
        };
        // The change feed subscribes through one node: the single server, or on a cluster the
        // seed nodes in turn (classic `PUBLISH` reaches every node of a cluster).
        let feed_clients = if s.cluster.is_empty() {
            vec![client_for(&s.info)]
        } else {
            s.cluster.iter().map(client_for).collect()
        }
        .into_iter()
        .collect::<RedisResult<Vec<_>>>()
        .map_err(|e| errors::from_redis(&e, "client setup", &ctx))?;
        let sentinel = match &s.sentinel {
            None => None,
            Some((addrs, master)) => {
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(s.info.redis_settings().clone());
                let client = redis::sentinel::SentinelClient::build(
                    addrs.clone(),
                    master.as_str(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| errors::from_redis(&e, "sentinel client setup", &ctx))?;
                Some(Arc::new(tokio::sync::Mutex::new(client)))
            }
        };
        let connecting = async {
            if let Some(sentinel) = &sentinel {
                let acfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(s.connect_timeout))
                    .set_response_timeout(Some(s.command_timeout));
                let c = conn::SentinelConn::new(sentinel.clone(), acfg, s.db);
                c.get().await?;
                Ok(conn::Conn::Sentinel(c))
            } else if s.cluster.is_empty() {
                // Reconnects: 2 retries after ~50 and ~100 ms (jittered, never over 1 s), so a
                // call during an outage fails within its command timeout instead of queueing
                // behind a long back-off; the next call starts a new attempt.
                let mcfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(s.connect_timeout))
                    .set_response_timeout(Some(s.command_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(feed_clients[0].clone(), mcfg)
                    .await
                    .map(conn::Conn::Single)
            } else {
                // Credentials and TCP settings come from the node infos (the builder takes
                // the first node's); 2 retries with short waits, as for one server.
                let mut b = redis::cluster::ClusterClientBuilder::new(s.cluster.clone())
                    .connection_timeout(s.connect_timeout)
                    .response_timeout(s.command_timeout)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(1000);
                if let Some(pem) = &s.tls_ca {
                    b = b.certs(tls_certs(pem));
                }
                b.build()?
                    .get_async_connection()
                    .await
                    .map(conn::Conn::Cluster)
            }
        };
        let conn = match tokio::time::timeout(s.connect_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(errors::from_redis(&e, "connect", &ctx)),
            Err(_) => return Err(errors::timed_out("connect", s.connect_timeout, &ctx)),
        };
        let keys = Keys::new(&s.prefix);
        let hub = ChangeHub::default();
        let state = Arc::new(feed::FeedState::default());
        let (listener, ready) = feed::Listener {
            clients: feed_clients,
            sentinel,
            channel: keys.channel(),
            hub: hub.clone(),
            state: state.clone(),
            connect_timeout: s.connect_timeout,
            command_timeout: s.command_timeout,
            ctx: ctx.clone(),
        }
        .start();
        let backend = Self {
            conn,
            channel: keys.channel(),
            keys,
            instance: s.instance.clone(),
            hub,
            feed: state,
            listener,
            ctx,
            timeout: s.command_timeout,
            masked_url: s.masked_url(),
            db: s.db,
            tls: s.tls,
            prefix: s.prefix.clone(),
        };
        let meta: Option<String> = backend
            .query("read meta", redis::cmd("GET").arg(backend.keys.meta()))
            .await?;
        check_schema(meta.as_deref(), &s.prefix)?;
        // Wait for the first subscription, so no change made after `create` returns is missed.
        match tokio::time::timeout(s.connect_timeout, ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(PluginError::internal("change-feed listener ended")),
            Err(_) => {
                return Err(errors::timed_out(
                    "subscribe",
                    s.connect_timeout,
                    &backend.ctx,
                ));
            }
        }
        tracing::info!(
            "redis backend connected to {} (key prefix {:?}, instance {})",
            backend.masked_url,
            backend.prefix,
            backend.instance
        );
        Ok(backend)
    }

    /// Runs one Redis call under the command timeout, mapping its error.
    async fn run<T>(
        &self,
        what: &str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, PluginError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(errors::from_redis(&e, what, &self.ctx)),
            Err(_) => Err(errors::timed_out(what, self.timeout, &self.ctx)),
        }
    }

    async fn query<T: FromRedisValue>(
        &self,
        what: &str,
        cmd: &mut redis::Cmd,
    ) -> Result<T, PluginError> {
        let mut c = self.conn.clone();
        self.run(what, cmd.query_async(&mut c)).await
    }

    async fn pipe<T: FromRedisValue>(
        &self,
        what: &str,
        p: &redis::Pipeline,
    ) -> Result<T, PluginError> {
        let mut c = self.conn.clone();
        self.run(what, p.query_async(&mut c)).await
    }

    async fn script<T: FromRedisValue>(
        &self,
        what: &str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, PluginError> {
        let mut c = self.conn.clone();
        self.run(what, inv.invoke_async(&mut c)).await
    }

    fn msg(&self, kind: ChangeKind, t: &str, u: &str) -> String {
        feed::encode(kind, t, u, &self.instance)
    }

    /// `SET key value` and the change message, atomically in one round trip.
    async fn set_and_publish(
        &self,
        what: &str,
        key: String,
        value: &str,
        kind: ChangeKind,
    ) -> Result<(), PluginError> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .ignore()
            .cmd("PUBLISH")
            .arg(&self.channel)
            .arg(self.msg(kind, "", ""))
            .ignore();
        self.pipe(what, &p).await
    }

    /// All accounts of one pool, in order, in one round trip ([`scripts::READ_POOL`]).
    async fn read_pool(&self, t: &str) -> Result<Vec<Account>, PluginError> {
        let pool = self.keys.pool(t)?;
        let mut inv = scripts::READ_POOL.prepare_invoke();
        inv.key(pool.accounts()).arg(pool.account(""));
        let flat: Vec<Option<String>> = self.script("list accounts", &inv).await?;
        let width = ACCOUNT_FIELDS.len() + 1;
        if !flat.len().is_multiple_of(width) {
            return Err(errors::bad_reply(
                "list accounts",
                format!("{} values", flat.len()),
            ));
        }
        Ok(flat
            .chunks(width)
            .filter_map(|row| account_from(t, row[0].as_deref()?, &row[1..]))
            .collect())
    }

    /// The provider types in the registry, with how many accounts each has now.
    async fn pools(&self) -> Result<Vec<(String, u64)>, PluginError> {
        let types: Vec<String> = self
            .query(
                "list pools",
                redis::cmd("ZRANGE").arg(self.keys.pools()).arg(0).arg(-1),
            )
            .await?;
        if types.is_empty() {
            return Ok(Vec::new());
        }
        let counts: Vec<u64> = if self.conn.is_cluster() {
            // Each pool is its own slot: one command each (a pipeline must stay in one slot).
            let mut counts = Vec::with_capacity(types.len());
            for t in &types {
                let mut zcard = redis::cmd("ZCARD");
                zcard.arg(self.keys.pool(t)?.accounts());
                counts.push(self.query("count accounts", &mut zcard).await?);
            }
            counts
        } else {
            let mut p = redis::pipe();
            for t in &types {
                p.cmd("ZCARD").arg(self.keys.pool(t)?.accounts());
            }
            self.pipe("count accounts", &p).await?
        };
        Ok(types.into_iter().zip(counts).collect())
    }
}

fn not_found(t: &str, u: &str) -> PluginError {
    PluginError::not_found(format!("no account {u} of type {t}"))
}

/// Checks that `json` is a JSON object; the contract's stored documents all are.
fn object(what: &str, json: &str) -> Result<serde_json::Map<String, Value>, PluginError> {
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

fn int(v: &Option<String>) -> Option<i64> {
    v.as_deref().and_then(|s| s.parse().ok())
}

fn flag(v: &Option<String>, default: bool) -> bool {
    v.as_deref().map_or(default, |s| s == "1")
}

fn ropt_i64(v: &Option<String>) -> ROption<i64> {
    int(v).into()
}

fn ropt_str(v: &Option<String>) -> ROption<RString> {
    v.as_deref().map(RString::from).into()
}

/// The state from the hash fields `ACCOUNT_FIELDS[1..]` (13 values, in that order).
fn state_from(f: &[Option<String>]) -> AccountState {
    let d = AccountState::default();
    AccountState {
        present: int(&f[0]).and_then(|p| u32::try_from(p).ok()).unwrap_or(0) & field::ALL,
        usage_count: int(&f[1]).unwrap_or(0),
        error_count: int(&f[2]).unwrap_or(0),
        refresh_count: int(&f[3]).unwrap_or(0),
        healthy: flag(&f[4], d.healthy),
        disabled: flag(&f[5], d.disabled),
        needs_refresh: flag(&f[6], d.needs_refresh),
        last_used: ropt_i64(&f[7]),
        last_error_time: ropt_i64(&f[8]),
        last_error_message: ropt_str(&f[9]),
        scheduled_recovery_time: ropt_i64(&f[10]),
        last_health_check_time: ropt_i64(&f[11]),
        last_health_check_model: ropt_str(&f[12]),
    }
}

/// An account from the hash fields `ACCOUNT_FIELDS` (14 values); `None` if it has no config
/// (it does not exist).
fn account_from(t: &str, u: &str, f: &[Option<String>]) -> Option<Account> {
    if f.len() != ACCOUNT_FIELDS.len() {
        return None;
    }
    let config = f[0].as_deref()?;
    Some(Account {
        provider_type: t.into(),
        uuid: u.into(),
        config: config.into(),
        state: state_from(&f[1..]),
    })
}

/// The account hash's initial field/value pairs (after `rev`, which the script sets).
fn account_fields(a: &Account) -> Vec<(&'static str, String)> {
    let s = &a.state;
    let b = |v: bool| if v { "1" } else { "0" }.to_string();
    let mut v = vec![
        ("config", a.config.to_string()),
        ("present", s.present.to_string()),
        ("usageCount", s.usage_count.to_string()),
        ("errorCount", s.error_count.to_string()),
        ("refreshCount", s.refresh_count.to_string()),
        ("isHealthy", b(s.healthy)),
        ("isDisabled", b(s.disabled)),
        ("needsRefresh", b(s.needs_refresh)),
    ];
    let times = [
        ("lastUsed", s.last_used),
        ("lastErrorTime", s.last_error_time),
        ("scheduledRecoveryTime", s.scheduled_recovery_time),
        ("lastHealthCheckTime", s.last_health_check_time),
    ];
    v.extend(
        times
            .into_iter()
            .filter_map(|(n, t)| t.into_option().map(|t| (n, t.to_string()))),
    );
    let texts = [
        ("lastErrorMessage", &s.last_error_message),
        ("lastHealthCheckModel", &s.last_health_check_model),
    ];
    v.extend(
        texts
            .into_iter()
            .filter_map(|(n, t)| t.as_ref().into_option().map(|t| (n, t.to_string()))),
    );
    v
}

fn tri(v: ROption<bool>) -> &'static str {
    match v {
        ROption::RSome(true) => "1",
        ROption::RSome(false) => "0",
        ROption::RNone => "",
    }
}

fn bit(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn value_str(v: &RValue) -> Option<String> {
    match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RValue::SimpleString(s) => Some(s.clone()),
        RValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The status code a script put first in its reply array.
fn reply_code(what: &str, v: &RValue) -> Result<i64, PluginError> {
    match v {
        RValue::Array(items) => match items.first() {
            Some(RValue::Int(i)) => Ok(*i),
            other => Err(errors::bad_reply(what, format!("{other:?}"))),
        },
        other => Err(errors::bad_reply(what, format!("{other:?}"))),
    }
}

impl StorageBackend for RedisBackend {
    async fn status(&self) -> Result<Value, PluginError> {
        let started = Instant::now();
        let mut p = redis::pipe();
        p.cmd("INFO").arg("server").cmd("INFO").arg("persistence");
        let (server, persistence): (String, String) = self.pipe("status", &p).await?;
        let latency = started.elapsed();
        let info = |text: &str, name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_string())
            })
        };
        let version = info(&server, "redis_version").unwrap_or_else(|| "unknown".into());
        let aof = info(&persistence, "aof_enabled").is_some_and(|v| v == "1");
        let pools = self.pools().await?;
        let accounts: u64 = pools.iter().map(|(_, n)| n).sum();
        Ok(json!({
            "backend": "redis",
            "connected": true,
            // Whether an acknowledged write survives a server restart is the server's AOF/RDB
            // setting; AOF on is the configuration that loses (almost) nothing.
            "aofEnabled": aof,
            "server": self.ctx.server,
            "url": self.masked_url,
            "db": self.db,
            "tls": self.tls,
            "keyPrefix": self.prefix,
            "redisVersion": version,
            "latencyMs": (latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "schemaVersion": SCHEMA_VERSION,
            "instanceId": self.instance,
            "changeFeed": {
                "channel": self.channel,
                "subscribed": self.feed.subscribed.load(Ordering::SeqCst),
                "reconnects": self.feed.reconnects.load(Ordering::Relaxed),
                "ignoredMessages": self.feed.malformed.load(Ordering::Relaxed),
            },
            "providerTypes": pools.iter().filter(|(_, n)| *n > 0).count(),
            "accounts": accounts,
        }))
    }

    async fn get_config(&self) -> Result<Option<String>, PluginError> {
        self.query("get config", redis::cmd("GET").arg(self.keys.config()))
            .await
    }

    async fn set_config(&self, json: String) -> Result<(), PluginError> {
        object("config", &json)?;
        self.set_and_publish("set config", self.keys.config(), &json, ChangeKind::CONFIG)
            .await
    }

    async fn list_provider_types(&self) -> Result<Vec<String>, PluginError> {
        Ok(self
            .pools()
            .await?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, _)| t)
            .collect())
    }

    async fn list_accounts(
        &self,
        provider_type: Option<&str>,
    ) -> Result<Vec<Account>, PluginError> {
        match provider_type {
            Some(t) => self.read_pool(t).await,
            None => {
                let mut all = Vec::new();
                for (t, n) in self.pools().await? {
                    if n > 0 {
                        all.extend(self.read_pool(&t).await?);
                    }
                }
                Ok(all)
            }
        }
    }

    async fn get_account(&self, t: &str, u: &str) -> Result<Option<Account>, PluginError> {
        let key = self.keys.pool(t)?.account(u);
        let row: Vec<Option<String>> = self
            .query(
                "get account",
                redis::cmd("HMGET").arg(key).arg(&ACCOUNT_FIELDS[..]),
            )
            .await?;
        Ok(account_from(t, u, &row))
    }

    async fn add_account(&self, account: Account) -> Result<(), PluginError> {
        let (t, u) = (account.provider_type.as_str(), account.uuid.as_str());
        if t.is_empty() || u.is_empty() {
            return Err(PluginError::invalid_input(
                "provider type and uuid must not be empty",
            ));
        }
        let pool = self.keys.pool(t)?;
        object("account config", &account.config)?;
        // Register the type first: a type with accounts is then always in the registry (a
        // failed add leaves an empty pool, which the readers skip).
        self.query::<()>(
            "register pool",
            redis::cmd("ZADD")
                .arg(self.keys.pools())
                .arg("NX")
                .arg(now_ms())
                .arg(t),
        )
        .await?;
        let mut inv = scripts::ADD_ACCOUNT.prepare_invoke();
        inv.key(pool.account(u))
            .key(pool.accounts())
            .key(pool.seq());
        inv.arg(u)
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::ACCOUNT, t, u));
        for (name, value) in account_fields(&account) {
            inv.arg(name).arg(value);
        }
        let added: i64 = self.script("add account", &inv).await?;
        if added == 0 {
            return Err(PluginError::conflict(format!(
                "account {u} of type {t} exists"
            )));
        }
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
        let pool = self.keys.pool(t)?;
        let key = pool.account(u);
        for _ in 0..CONFIG_CAS_ATTEMPTS {
            let (config, rev): (Option<String>, Option<String>) = self
                .query(
                    "read account config",
                    redis::cmd("HMGET").arg(&key).arg("config").arg("rev"),
                )
                .await?;
            let Some(config) = config else {
                return Err(not_found(t, u));
            };
            // The merge happens here, in serde_json (order kept, integers exact), never in Lua.
            let mut cfg: Value = serde_json::from_str(&config)
                .map_err(|e| PluginError::internal(format!("stored account config: {e}")))?;
            merge_patch(&mut cfg, &patch);
            let mut inv = scripts::UPDATE_CONFIG.prepare_invoke();
            inv.key(&key).key(pool.seq());
            inv.arg(rev.unwrap_or_default())
                .arg(cfg.to_string())
                .arg(&self.channel)
                .arg(self.msg(ChangeKind::ACCOUNT, t, u));
            let reply: RValue = self.script("update account", &inv).await?;
            match reply_code("update account", &reply)? {
                -1 => return Err(not_found(t, u)),
                0 => continue,
                _ => {
                    let RValue::Array(items) = &reply else {
                        unreachable!("checked by reply_code")
                    };
                    let row: Vec<Option<String>> = items[1..].iter().map(value_str).collect();
                    return account_from(t, u, &row).ok_or_else(|| {
                        errors::bad_reply("update account", "no config after write")
                    });
                }
            }
        }
        Err(PluginError::conflict(format!(
            "account {u} of type {t} changed {CONFIG_CAS_ATTEMPTS} times during the update; try again"
        ))
        .with_retryable(true))
    }

    async fn delete_account(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let pool = self.keys.pool(t)?;
        let mut inv = scripts::DELETE_ACCOUNT.prepare_invoke();
        inv.key(pool.account(u))
            .key(pool.accounts())
            .key(pool.token(u))
            .key(pool.lock(u));
        inv.arg(u)
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::ACCOUNT_DELETED, t, u));
        let n: i64 = self.script("delete account", &inv).await?;
        Ok(n == 1)
    }

    async fn update_state(
        &self,
        t: &str,
        u: &str,
        up: StateUpdate,
    ) -> Result<AccountState, PluginError> {
        let pool = self.keys.pool(t)?;
        let mut inv = scripts::UPDATE_STATE.prepare_invoke();
        inv.key(pool.account(u));
        inv.arg(up.at)
            .arg(up.usage_delta)
            .arg(up.error_delta)
            .arg(up.refresh_delta)
            .arg(bit(up.error_message.is_some()))
            .arg(up.error_message.as_ref().map_or("", |m| m.as_str()))
            .arg(up.error_window_ms)
            .arg(up.unhealthy_at)
            .arg(tri(up.healthy))
            .arg(tri(up.disabled))
            .arg(tri(up.needs_refresh))
            .arg(bit(up.scheduled_recovery_time.is_some()))
            .arg(up.scheduled_recovery_time.unwrap_or(0))
            .arg(bit(up.health_check_model.is_some()))
            .arg(up.health_check_model.as_ref().map_or("", |m| m.as_str()))
            .arg(bit(up.clear_errors))
            .arg(bit(up.reset_counters))
            .arg(bit(up.touch))
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::ACCOUNT_STATE, t, u));
        let row: Option<Vec<Option<String>>> = self.script("update state", &inv).await?;
        match row {
            None => Err(not_found(t, u)),
            Some(f) if f.len() == ACCOUNT_FIELDS.len() - 1 => Ok(state_from(&f)),
            Some(f) => Err(errors::bad_reply(
                "update state",
                format!("{} fields", f.len()),
            )),
        }
    }

    async fn get_token(&self, t: &str, u: &str) -> Result<Option<String>, PluginError> {
        let key = self.keys.pool(t)?.token(u);
        self.query("get token", redis::cmd("HGET").arg(key).arg("json"))
            .await
    }

    async fn set_token(&self, t: &str, u: &str, json: String) -> Result<(), PluginError> {
        object("token", &json)?;
        let pool = self.keys.pool(t)?;
        let refresh = refresh_token_of(&json);
        let mut inv = scripts::SET_TOKEN.prepare_invoke();
        inv.key(pool.account(u)).key(pool.token(u));
        inv.arg(&json)
            .arg(bit(refresh.is_some()))
            .arg(refresh.unwrap_or_default())
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::TOKEN, t, u));
        match self.script::<i64>("set token", &inv).await? {
            -1 => Err(not_found(t, u)),
            _ => Ok(()),
        }
    }

    async fn cas_token(
        &self,
        t: &str,
        u: &str,
        expected: &str,
        json: String,
    ) -> Result<TokenCas, PluginError> {
        object("token", &json)?;
        let pool = self.keys.pool(t)?;
        let refresh = refresh_token_of(&json);
        let mut inv = scripts::CAS_TOKEN.prepare_invoke();
        inv.key(pool.account(u)).key(pool.token(u));
        inv.arg(expected)
            .arg(&json)
            .arg(bit(refresh.is_some()))
            .arg(refresh.unwrap_or_default())
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::TOKEN, t, u));
        let reply: RValue = self.script("cas token", &inv).await?;
        match reply_code("cas token", &reply)? {
            -1 => Err(not_found(t, u)),
            1 => Ok(TokenCas {
                swapped: true,
                current: ROption::RNone,
            }),
            _ => {
                let current = match &reply {
                    RValue::Array(items) => items.get(1).and_then(value_str),
                    _ => None,
                };
                Ok(TokenCas {
                    swapped: false,
                    current: current.map(RString::from).into(),
                })
            }
        }
    }

    async fn delete_token(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let pool = self.keys.pool(t)?;
        let mut inv = scripts::DELETE_AND_PUBLISH.prepare_invoke();
        inv.key(pool.token(u));
        inv.arg(&self.channel)
            .arg(self.msg(ChangeKind::TOKEN, t, u));
        Ok(self.script::<i64>("delete token", &inv).await? == 1)
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
        let mut inv = scripts::ACQUIRE_LOCK.prepare_invoke();
        inv.key(self.keys.pool(t)?.lock(u)).arg(owner).arg(ttl_ms);
        Ok(self.script::<i64>("acquire lock", &inv).await? == 1)
    }

    async fn release_lock(&self, t: &str, u: &str, owner: &str) -> Result<bool, PluginError> {
        let mut inv = scripts::RELEASE_LOCK.prepare_invoke();
        inv.key(self.keys.pool(t)?.lock(u)).arg(owner);
        Ok(self.script::<i64>("release lock", &inv).await? == 1)
    }

    async fn get_password_hash(&self) -> Result<Option<String>, PluginError> {
        self.query(
            "get password hash",
            redis::cmd("GET").arg(self.keys.password()),
        )
        .await
    }

    async fn set_password_hash(&self, hash: String) -> Result<(), PluginError> {
        if hash.is_empty() {
            return Err(PluginError::invalid_input("empty password hash"));
        }
        self.set_and_publish(
            "set password hash",
            self.keys.password(),
            &hash,
            ChangeKind::PASSWORD,
        )
        .await
    }

    async fn create_session(&self, session: Session) -> Result<(), PluginError> {
        object("session data", &session.data)?;
        let h = session.token_hash.as_str();
        if h.is_empty() {
            return Err(PluginError::invalid_input("empty session token hash"));
        }
        let (key, index) = (self.keys.session(h), self.keys.sessions());
        let now = now_ms();
        let ttl = session.expires_at.saturating_sub(now);
        let mut p = redis::pipe();
        p.atomic().cmd("DEL").arg(&key).ignore();
        if ttl > 0 {
            p.cmd("HSET")
                .arg(&key)
                .arg("data")
                .arg(session.data.as_str())
                .arg("expiresAt")
                .arg(session.expires_at)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .cmd("ZADD")
                .arg(&index)
                .arg(session.expires_at)
                .arg(h)
                .ignore();
        } else {
            p.cmd("ZREM").arg(&index).arg(h).ignore();
        }
        // Keep the index as small as the live sessions.
        p.cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now)
            .ignore();
        p.cmd("PUBLISH")
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::SESSION, "", ""))
            .ignore();
        self.pipe("create session", &p).await
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, PluginError> {
        let key = self.keys.session(token_hash);
        let (data, exp): (Option<String>, Option<String>) = self
            .query(
                "get session",
                redis::cmd("HMGET").arg(key).arg("data").arg("expiresAt"),
            )
            .await?;
        Ok(session_from(token_hash, data, exp, now_ms()))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool, PluginError> {
        let mut inv = scripts::DELETE_AND_PUBLISH.prepare_invoke();
        inv.key(self.keys.session(token_hash))
            .key(self.keys.sessions());
        inv.arg(&self.channel)
            .arg(self.msg(ChangeKind::SESSION, "", ""))
            .arg(token_hash);
        Ok(self.script::<i64>("delete session", &inv).await? == 1)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, PluginError> {
        let now = now_ms();
        let hashes: Vec<String> = self
            .query(
                "list sessions",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys.sessions())
                    .arg(format!("({now}"))
                    .arg("+inf"),
            )
            .await?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for h in &hashes {
            p.cmd("HMGET")
                .arg(self.keys.session(h))
                .arg("data")
                .arg("expiresAt");
        }
        let rows: Vec<(Option<String>, Option<String>)> = self.pipe("read sessions", &p).await?;
        Ok(hashes
            .iter()
            .zip(rows)
            .filter_map(|(h, (d, e))| session_from(h, d, e, now))
            .collect())
    }

    async fn get_usage_cache(&self) -> Result<Option<String>, PluginError> {
        self.query("get usage cache", redis::cmd("GET").arg(self.keys.usage()))
            .await
    }

    async fn set_usage_cache(&self, json: String) -> Result<(), PluginError> {
        object("usage cache", &json)?;
        self.set_and_publish(
            "set usage cache",
            self.keys.usage(),
            &json,
            ChangeKind::USAGE_CACHE,
        )
        .await
    }

    async fn list_plugin_states(&self) -> Result<Vec<PluginState>, PluginError> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HGETALL")
            .arg(self.keys.plugins())
            .cmd("HGETALL")
            .arg(self.keys.plugin_extra());
        let (enabled, extra): (HashMap<String, String>, HashMap<String, String>) =
            self.pipe("list plugin states", &p).await?;
        let mut states: Vec<PluginState> = enabled
            .into_iter()
            .map(|(name, on)| PluginState {
                extra: extra.get(&name).map_or("{}", String::as_str).into(),
                enabled: on == "1",
                name: name.into(),
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    async fn set_plugin_state(&self, state: PluginState) -> Result<(), PluginError> {
        if state.name.is_empty() {
            return Err(PluginError::invalid_input("empty plugin name"));
        }
        object("plugin extra", &state.extra)?;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HSET")
            .arg(self.keys.plugins())
            .arg(state.name.as_str())
            .arg(bit(state.enabled))
            .ignore()
            .cmd("HSET")
            .arg(self.keys.plugin_extra())
            .arg(state.name.as_str())
            .arg(state.extra.as_str())
            .ignore()
            .cmd("PUBLISH")
            .arg(&self.channel)
            .arg(self.msg(ChangeKind::PLUGINS, "", ""))
            .ignore();
        self.pipe("set plugin state", &p).await
    }

    async fn get_meta(&self) -> Result<Option<String>, PluginError> {
        self.query("get meta", redis::cmd("GET").arg(self.keys.meta()))
            .await
    }

    async fn set_meta(&self, json: String) -> Result<(), PluginError> {
        object("meta", &json)?;
        self.set_and_publish("set meta", self.keys.meta(), &json, ChangeKind::META)
            .await
    }

    async fn subscribe(&self) -> Result<ChangeSubscription, PluginError> {
        Ok(self.hub.subscribe())
    }

    /// Every write was acknowledged by Redis before its call returned; how durable that is
    /// is the server's persistence setting (AOF/RDB), not something a client can add.
    async fn flush(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

fn session_from(h: &str, data: Option<String>, exp: Option<String>, now: i64) -> Option<Session> {
    let expires_at: i64 = exp?.parse().ok()?;
    // Redis drops the key at its TTL; the check covers clock skew between host and server.
    (expires_at > now).then(|| Session {
        token_hash: h.into(),
        data: data.unwrap_or_default().into(),
        expires_at,
    })
}

aiclient_sdk::export_storage_backend! {
    name: "redis",
    description: "Redis storage shared by many gateway instances (pub/sub change feed, Lua-atomic updates)",
    create: |config: Value| async move { RedisBackend::open(&config).await },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_check() {
        assert!(check_schema(None, "p:").is_ok());
        assert!(check_schema(Some(r#"{"schemaVersion":1}"#), "p:").is_ok());
        assert!(check_schema(Some(r#"{"other":true}"#), "p:").is_ok());
        let e = check_schema(Some(r#"{"schemaVersion":2}"#), "p:").expect_err("newer");
        assert_eq!(e.code, ErrorCode::INCOMPATIBLE);
        assert!(e.message.contains("schema version 2"), "{e}");
        assert_eq!(
            check_schema(Some("[1]x"), "p:").expect_err("junk").code,
            ErrorCode::INCOMPATIBLE
        );
    }

    #[test]
    fn account_fields_round_trip_through_the_hash_layout() {
        let mut a = Account {
            provider_type: "t".into(),
            uuid: "u".into(),
            config: r#"{"uuid":"u","n":[]}"#.into(),
            state: AccountState::default(),
        };
        a.state.last_used = ROption::RSome(1_700_000_000_123);
        a.state.last_health_check_model = ROption::RSome("m".into());
        a.state.present |= field::LAST_HEALTH_CHECK_MODEL;
        let pairs: HashMap<&str, String> = account_fields(&a).into_iter().collect();
        let row: Vec<Option<String>> = ACCOUNT_FIELDS
            .iter()
            .map(|f| pairs.get(f).cloned())
            .collect();
        assert_eq!(account_from("t", "u", &row), Some(a));
    }
}
