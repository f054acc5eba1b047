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
}

impl Settings {
    /// The server as a URL without credentials, e.g. `rediss://cache.local:6380/2`.
    pub fn masked_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
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

pub fn parse(cfg: &Value) -> Result<Settings, PluginError> {
    let mut secrets = Vec::new();
    let password = opt_str(cfg, "password")?;
    if let Some(p) = password {
        secrets.push(p.to_string());
    }
    let username = opt_str(cfg, "username")?;
    let info = match opt_str(cfg, "url")? {
        Some(url) => {
            let info = url.into_connection_info().map_err(|_| {
                bad(format!(
                    "url {:?} is not a redis:// or rediss:// URL",
                    mask_url(url)
                ))
            })?;
            if let Some(p) = info.redis_settings().password() {
                secrets.push(p.to_string());
            }
            // A URL's own credentials win; the separate fields fill in what it lacks.
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
            info.set_redis_settings(redis)
        }
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

    let (server, tls) = match info.addr() {
        ConnectionAddr::Tcp(h, p) => (format!("{h}:{p}"), false),
        ConnectionAddr::TcpTls { host, port, .. } => (format!("{host}:{port}"), true),
        ConnectionAddr::Unix(path) => (path.display().to_string(), false),
        _ => ("(unknown address kind)".to_string(), false),
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
}
