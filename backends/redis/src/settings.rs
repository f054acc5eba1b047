//! The backend's JSON config (what `host/src/config.rs` `backend_config()` sends) turned into a
//! `redis::ConnectionInfo`, plus everything needed to talk about the server without leaking
//! its credentials: a masked address for status and logs, and a [`Redactor`] every error
//! message passes through.

use std::time::Duration;

use aiclient_sdk::PluginError;
use redis::io::tcp::{TcpSettings, socket2};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use serde_json::Value;

/// The host's defaults (`RedisSection::default()`), used when a field is absent.
pub const DEFAULT_PREFIX: &str = "aiclient:";
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 1000;

pub struct Settings {
    pub info: ConnectionInfo,
    /// `host:port` (or the unix socket path); never carries credentials.
    pub server: String,
    pub db: i64,
    pub tls: bool,
    pub username: Option<String>,
    pub has_password: bool,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub instance: String,
    pub redactor: Redactor,
    /// PEM roots to trust instead of the system store (`tls_ca_file`), for a private CA.
    pub tls_ca: Option<Vec<u8>>,
    /// Redis Cluster seed nodes (`cluster_nodes`); empty = one server at `info`. Each carries
    /// the credentials (its URL's, or `username`/`password`) and the TCP settings.
    pub cluster: Vec<ConnectionInfo>,
    /// Sentinel mode: the sentinels' addresses (`sentinels`) and the monitored master's name
    /// (`sentinel_master`); `info`'s credentials and db are used on the master.
    pub sentinel: Option<(Vec<ConnectionInfo>, String)>,
}

impl Settings {
    /// The server as a URL without credentials, e.g. `rediss://cache.local:6380/2`.
    pub fn masked_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        if !self.cluster.is_empty() {
            // Cluster nodes have no database but 0; the server list is `h1:p1,h2:p2,…`.
            let user = match (&self.username, self.has_password) {
                (Some(u), true) => format!("{u}:***@"),
                (Some(u), false) => format!("{u}@"),
                (None, true) => ":***@".to_string(),
                (None, false) => String::new(),
            };
            return format!("{scheme}+cluster://{user}{}", self.server);
        }
        if let Some((_, master)) = &self.sentinel {
            let user = match (&self.username, self.has_password) {
                (Some(u), true) => format!("{u}:***@"),
                (Some(u), false) => format!("{u}@"),
                (None, true) => ":***@".to_string(),
                (None, false) => String::new(),
            };
            return format!(
                "{scheme}+sentinel://{user}{}/{master}/{}",
                self.server, self.db
            );
        }
        let user = match (&self.username, self.has_password) {
            (Some(u), true) => format!("{u}:***@"),
            (Some(u), false) => format!("{u}@"),
            (None, true) => ":***@".to_string(),
            (None, false) => String::new(),
        };
        format!("{scheme}://{user}{}/{}", self.server, self.db)
    }
}

/// Replaces every secret (the password, however it was given) with `***`. Applied to every
/// message that may quote something from the redis client, so a password can never reach a
/// log line, an error or the status even if a library one day echoes it.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

fn bad(msg: impl Into<String>) -> PluginError {
    PluginError::invalid_input(format!("redis backend config: {}", msg.into()))
}

fn opt_str<'a>(cfg: &'a Value, key: &str) -> Result<Option<&'a str>, PluginError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

fn opt_u64(cfg: &Value, key: &str) -> Result<Option<u64>, PluginError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{key} must be a non-negative integer"))),
    }
}

/// TCP options of every connection:
/// - `TCP_NODELAY`: commands are small writes on a multiplexed connection; with Nagle on, a
///   write behind an unacknowledged one waits for the peer's delayed ACK (up to 40 ms on
///   Linux), which wrecks the < 1 ms p99 a loopback round trip otherwise has;
/// - keepalive after 30 s idle, probes every 10 s, and (Linux) `TCP_USER_TIMEOUT` 20 s: a peer
///   that vanished without a FIN (a NAT or firewall dropping the flow) turns into an I/O error
///   that makes the connection manager reconnect, instead of commands timing out forever.
fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let t = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let t = t.set_user_timeout(Duration::from_secs(20));
    t
}

/// `redis://user:secret@host` → `redis://user:***@host`, for the one message that has to name
/// a URL that did not parse.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// One `redis://`/`rediss://` URL; its password joins `secrets`. A URL's own credentials win;
/// the separate `username`/`password` fields fill in what it lacks.
fn parse_url(
    key: &str,
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
    secrets: &mut Vec<String>,
) -> Result<ConnectionInfo, PluginError> {
    let info = url.into_connection_info().map_err(|_| {
        bad(format!(
            "{key} {:?} is not a redis:// or rediss:// URL",
            mask_url(url)
        ))
    })?;
    if let Some(p) = info.redis_settings().password() {
        secrets.push(p.to_string());
    }
    let mut redis = info.redis_settings().clone();
    if redis.password().is_none()
        && let Some(p) = password
    {
        redis = redis.set_password(p);
    }
    if redis.username().is_none()
        && let Some(u) = username
    {
        redis = redis.set_username(u);
    }
    Ok(info.set_redis_settings(redis))
}

/// `cluster_nodes`: a JSON array of URLs, or one comma-separated string (as the env gives it).
fn string_list(cfg: &Value, key: &str) -> Result<Vec<String>, PluginError> {
    let items: Vec<String> = match cfg.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{key} must be a list of strings")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(format!("{key} must be a list of strings"))),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

fn addr_of(info: &ConnectionInfo) -> (String, bool) {
    match info.addr() {
        ConnectionAddr::Tcp(h, p) => (format!("{h}:{p}"), false),
        ConnectionAddr::TcpTls { host, port, .. } => (format!("{host}:{port}"), true),
        ConnectionAddr::Unix(path) => (path.display().to_string(), false),
        _ => ("(unknown address kind)".to_string(), false),
    }
}

pub fn parse(cfg: &Value) -> Result<Settings, PluginError> {
    let mut secrets = Vec::new();
    let password = opt_str(cfg, "password")?;
    if let Some(p) = password {
        secrets.push(p.to_string());
    }
    let username = opt_str(cfg, "username")?;
    let mut cluster = Vec::new();
    for url in string_list(cfg, "cluster_nodes")? {
        let info = parse_url(
            "cluster_nodes entry",
            &url,
            username,
            password,
            &mut secrets,
        )?;
        if matches!(info.addr(), ConnectionAddr::Unix(_)) {
            return Err(bad("cluster_nodes must be TCP addresses"));
        }
        if info.redis_settings().db() != 0 {
            return Err(bad("a Redis Cluster has only database 0"));
        }
        cluster.push(info.set_tcp_settings(tcp_settings()));
    }
    let mut sentinels = Vec::new();
    for url in string_list(cfg, "sentinels")? {
        let info = parse_url("sentinels entry", &url, None, None, &mut secrets)?;
        sentinels.push(info.set_tcp_settings(tcp_settings()));
    }
    let sentinel_master = opt_str(cfg, "sentinel_master")?;
    if sentinels.is_empty() != sentinel_master.is_none() {
        return Err(bad("sentinels and sentinel_master go together"));
    }
    if !sentinels.is_empty() && (!cluster.is_empty() || opt_str(cfg, "url")?.is_some()) {
        return Err(bad("sentinels exclude url and cluster_nodes"));
    }
    let info = match opt_str(cfg, "url")? {
        Some(_) if !cluster.is_empty() => {
            return Err(bad("give either url or cluster_nodes, not both"));
        }
        None if !cluster.is_empty() => cluster[0].clone(),
        Some(url) => parse_url("url", url, username, password, &mut secrets)?,
        None => {
            let host = opt_str(cfg, "host")?.unwrap_or("localhost");
            let port = match opt_u64(cfg, "port")? {
                None => 6379,
                Some(p) => u16::try_from(p).map_err(|_| bad("port must be 1..65535"))?,
            };
            let db = match cfg.get("db") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_i64()
                    .filter(|d| *d >= 0)
                    .ok_or_else(|| bad("db must be a non-negative integer"))?,
            };
            let info = (host, port)
                .into_connection_info()
                .map_err(|_| bad("invalid host or port"))?;
            let mut redis = info.redis_settings().clone().set_db(db);
            if let Some(p) = password {
                redis = redis.set_password(p);
            }
            if let Some(u) = username {
                redis = redis.set_username(u);
            }
            info.set_redis_settings(redis)
        }
    };
    let info = info.set_tcp_settings(tcp_settings());
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();

    let (server, tls) = if !sentinels.is_empty() {
        let list: Vec<String> = sentinels.iter().map(|i| addr_of(i).0).collect();
        (list.join(","), false)
    } else if cluster.is_empty() {
        addr_of(&info)
    } else {
        let addrs: Vec<(String, bool)> = cluster.iter().map(addr_of).collect();
        if addrs.iter().any(|a| a.1) != addrs.iter().all(|a| a.1) {
            return Err(bad("cluster_nodes must all be redis:// or all rediss://"));
        }
        let tls = addrs[0].1;
        let list: Vec<String> = addrs.into_iter().map(|a| a.0).collect();
        (list.join(","), tls)
    };

    let prefix = match cfg.get("key_prefix") {
        None | Some(Value::Null) => DEFAULT_PREFIX.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("key_prefix must be a string")),
    };
    // Braces would change which part of every key Redis Cluster hashes (see docs/redis-schema.md).
    if prefix.contains(['{', '}']) {
        return Err(bad(
            "key_prefix must not contain '{' or '}' (they select Redis Cluster hash slots)",
        ));
    }
    let ms = |key, default| -> Result<Duration, PluginError> {
        Ok(Duration::from_millis(
            opt_u64(cfg, key)?.filter(|v| *v > 0).unwrap_or(default),
        ))
    };
    let tls_ca = match opt_str(cfg, "tls_ca_file")? {
        None => None,
        Some(_) if !tls => return Err(bad("tls_ca_file needs a rediss:// url")),
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| bad(format!("tls_ca_file {path:?}: {e}")))?)
        }
    };
    let instance = opt_str(cfg, "instance_id")?
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok(Settings {
        db: info.redis_settings().db(),
        username: info.redis_settings().username().map(str::to_string),
        has_password: info.redis_settings().password().is_some(),
        info,
        server,
        tls,
        prefix,
        connect_timeout: ms("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS)?,
        command_timeout: ms("command_timeout_ms", DEFAULT_COMMAND_TIMEOUT_MS)?,
        instance,
        redactor: Redactor { secrets },
        tls_ca,
        cluster,
        sentinel: sentinel_master.map(|m| (sentinels, m.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn url_credentials_are_masked_and_redacted() {
        let s = parse(&json!({"url": "redis://app:hunter22@10.0.0.5:6390/3"})).expect("parse");
        assert_eq!(s.server, "10.0.0.5:6390");
        assert_eq!(s.db, 3);
        assert_eq!(s.masked_url(), "redis://app:***@10.0.0.5:6390/3");
        assert_eq!(s.redactor.redact("auth hunter22 failed"), "auth *** failed");
        assert_eq!(s.prefix, DEFAULT_PREFIX);
    }

    #[test]
    fn separate_fields_fill_in() {
        let s = parse(&json!({"host": "h", "port": 7000, "db": 2, "password": "pw1", "url": null}))
            .expect("parse");
        assert_eq!(
            (s.server.as_str(), s.db, s.has_password),
            ("h:7000", 2, true)
        );
        assert!(!s.masked_url().contains("pw1"));
        let s = parse(&json!({"url": "redis://127.0.0.1:1/0", "password": "pw2"})).expect("parse");
        assert_eq!(s.info.redis_settings().password(), Some("pw2"));
    }

    #[test]
    fn bad_config_is_invalid_input_without_the_secret() {
        let e = parse(&json!({"url": "http://u:topsecret@x"}))
            .err()
            .expect("refused");
        assert_eq!(e.code, aiclient_sdk::ErrorCode::INVALID_INPUT);
        assert!(!e.message.contains("topsecret"), "{e}");
        assert!(parse(&json!({"key_prefix": "a{b}:"})).is_err());
        assert!(parse(&json!({"port": 70000})).is_err());
    }

    #[test]
    fn cluster_nodes_from_a_list_or_a_comma_string() {
        let s = parse(&json!({
            "cluster_nodes": ["redis://:sekrit@10.0.0.1:7000", "redis://10.0.0.2:7001"]
        }))
        .expect("parse");
        assert_eq!(s.cluster.len(), 2);
        assert_eq!(s.server, "10.0.0.1:7000,10.0.0.2:7001");
        assert_eq!(
            s.masked_url(),
            "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001"
        );
        assert_eq!(s.redactor.redact("x sekrit y"), "x *** y");
        let s = parse(&json!({"cluster_nodes": "redis://a:1, redis://b:2", "password": "pw"}))
            .expect("parse");
        assert_eq!(s.cluster.len(), 2);
        assert_eq!(s.cluster[1].redis_settings().password(), Some("pw"));
        assert!(parse(&json!({"cluster_nodes": ["redis://a:1/2"]})).is_err());
        assert!(parse(&json!({"cluster_nodes": ["redis://a:1"], "url": "redis://b:2"})).is_err());
        assert!(parse(&json!({"cluster_nodes": [1]})).is_err());
    }

    #[test]
    fn sentinel_settings() {
        let s = parse(&json!({
            "sentinels": "redis://127.0.0.1:26379,redis://127.0.0.1:26380",
            "sentinel_master": "mymaster",
            "password": "masterpw",
            "db": 2,
        }))
        .expect("parse");
        let (addrs, master) = s.sentinel.as_ref().expect("sentinel mode");
        assert_eq!((addrs.len(), master.as_str(), s.db), (2, "mymaster", 2));
        assert_eq!(
            s.masked_url(),
            "redis+sentinel://:***@127.0.0.1:26379,127.0.0.1:26380/mymaster/2"
        );
        assert!(parse(&json!({"sentinels": ["redis://a:1"]})).is_err());
        assert!(parse(&json!({"sentinel_master": "m"})).is_err());
        assert!(
            parse(
                &json!({"sentinels": ["redis://a:1"], "sentinel_master": "m", "url": "redis://b:2"})
            )
            .is_err()
        );
    }
}
