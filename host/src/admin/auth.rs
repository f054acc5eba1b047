//! Web-UI authentication: the admin password (stored only as a hash), sessions (stored in the
//! backend under a hash of their token, with a TTL, so every instance sees them), and login
//! throttling per client address.
//!
//! Password hashes use the original's format, `pbkdf2:<saltHex>:<hashHex>` (PBKDF2-SHA512,
//! 310,000 rounds, 64-byte key), so a `configs/pwd` written here still works with the Node
//! version. A legacy plaintext `pwd` is accepted, compared in constant time, and replaced by a
//! hash at the next password change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::Session;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::storage::Storage;

pub const PBKDF2_ROUNDS: u32 = 310_000;
/// The UI password's minimum length (the original's upstream rule).
pub const MIN_PASSWORD_LEN: usize = 12;
/// Session lifetime unless `LOGIN_EXPIRY` (seconds) says otherwise.
pub const DEFAULT_SESSION_SECS: i64 = 3600;

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

pub fn hash_password(password: &str) -> String {
    let salt = {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the OS random source is available");
        b
    };
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, PBKDF2_ROUNDS, &mut out);
    format!("pbkdf2:{}:{}", hex::encode(salt), hex::encode(out))
}

/// Checks `password` against a stored value: a `pbkdf2:` hash, or a legacy plaintext.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if let Some(rest) = stored.strip_prefix("pbkdf2:") {
        let mut parts = rest.splitn(2, ':');
        let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (hex::decode(salt), hex::decode(hash.trim())) else {
            return false;
        };
        if hash.is_empty() {
            return false;
        }
        let mut out = vec![0u8; hash.len()];
        pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, PBKDF2_ROUNDS, &mut out);
        out.ct_eq(&hash).into()
    } else {
        // Legacy plaintext: compare digests so timing says nothing about the content.
        let stored = stored.trim_end_matches(['\r', '\n']);
        Sha256::digest(password.as_bytes())
            .ct_eq(&Sha256::digest(stored.as_bytes()))
            .into()
    }
}

/// What a session is stored under: the SHA-256 of its bearer token (the backend never sees
/// the token).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a session for `username`; returns the bearer token.
pub async fn create_session(
    storage: &Storage,
    username: &str,
    ttl_secs: i64,
) -> Result<String, PluginError> {
    let token = random_hex(32);
    let now = now_ms();
    let expires = now + ttl_secs * 1000;
    let data = serde_json::json!({ "username": username, "loginTime": now, "expiryTime": expires });
    let session = Session {
        token_hash: token_hash(&token).into(),
        data: data.to_string().into(),
        expires_at: expires,
    };
    storage.create_session(session.clone()).await?;
    lock_sessions().insert(token_hash(&token), (session, Instant::now()));
    Ok(token)
}

/// The session behind `token`, if it exists and has not expired.
pub async fn check_session(storage: &Storage, token: &str) -> Result<Option<Session>, PluginError> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let hash = token_hash(token);
    // With the session cached, storage gets a short while to answer; past it the cached copy
    // answers as in an outage, so the admin API (and `/api/redis/status`) stays responsive
    // while storage is paused or slow, never waiting out the command timeout.
    let cached = lock_sessions()
        .get(&hash)
        .is_some_and(|(s, seen)| s.expires_at > now_ms() && seen.elapsed() < SESSION_STALE_LIMIT);
    let lookup = storage.get_session(&hash);
    let found = if cached {
        match tokio::time::timeout(CACHED_SESSION_WAIT, lookup).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::timeout(format!(
                "session lookup: no answer from storage within {} ms",
                CACHED_SESSION_WAIT.as_millis()
            ))),
        }
    } else {
        lookup.await
    };
    match found {
        // The store lost its data (detected, or not yet: `FLUSHDB` a moment ago): a session
        // this process verified before stands, as in an outage, so the operator can still see
        // the status. After a reseed (sessions are not reseeded) it is gone: log in again.
        Ok(None) if cached && store_lost_data(storage).await => {
            Ok(lock_sessions().get(&hash).map(|(s, _)| s.clone()))
        }
        Ok(s) => {
            let s = s.filter(|s| s.expires_at > now_ms());
            let mut cache = lock_sessions();
            match &s {
                Some(found) => {
                    if cache.len() >= SESSION_CACHE_MAX {
                        cache.retain(|_, (c, _)| c.expires_at > now_ms());
                    }
                    cache.insert(hash, (found.clone(), Instant::now()));
                }
                None => {
                    cache.remove(&hash);
                }
            }
            Ok(s)
        }
        // Storage is down: a session this process verified recently stays valid until it
        // expires or the outage passes the stale limit, so the UI keeps working.
        Err(e) if e.retryable => {
            let cache = lock_sessions();
            match cache.get(&hash) {
                Some((s, seen))
                    if s.expires_at > now_ms() && seen.elapsed() < SESSION_STALE_LIMIT =>
                {
                    Ok(Some(s.clone()))
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether writes to storage are paused after a reported data loss.
pub fn writes_paused(storage: &Storage) -> bool {
    storage
        .resilience()
        .data_loss()
        .is_some_and(|d| d.writes_paused)
}

/// Whether the store lost its data underneath (a session this process verified is then
/// missing because of that, not because it was deleted). One read; only asked when a cached
/// session is not found.
async fn store_lost_data(storage: &Storage) -> bool {
    writes_paused(storage)
        || (storage.resilience().on_data_loss().is_some()
            && matches!(storage.marker_gone().await, Ok(Some(_))))
}

/// Sessions verified against storage, kept to serve lookups while storage is unreachable.
type SessionCache = HashMap<String, (Session, Instant)>;
static SESSIONS: std::sync::LazyLock<Mutex<SessionCache>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
const SESSION_CACHE_MAX: usize = 10_000;
/// How long after its last successful check a cached session is still honoured in an outage.
const SESSION_STALE_LIMIT: Duration = Duration::from_secs(3600);
/// How long a lookup of a cached session waits for storage before the cache answers.
const CACHED_SESSION_WAIT: Duration = Duration::from_millis(250);

fn lock_sessions() -> std::sync::MutexGuard<'static, SessionCache> {
    SESSIONS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops a session from the outage cache (logout).
pub fn forget_session(token: &str) {
    lock_sessions().remove(&token_hash(token));
}

/// Ensures an admin password exists; on first run generates one and returns it so the caller
/// prints it once. There is no default password.
pub async fn ensure_password(storage: &Storage) -> Result<Option<String>, PluginError> {
    match storage.get_password_hash().await? {
        Some(p) if !p.trim().is_empty() => Ok(None),
        _ => {
            let pw = random_hex(12);
            storage.set_password_hash(&hash_password(&pw)).await?;
            Ok(Some(pw))
        }
    }
}

/// Failed logins per client address: after `max_attempts` failures the address is locked out
/// for `lockout`; a success clears its record.
pub struct Throttle {
    max_attempts: u32,
    lockout: Duration,
    state: Mutex<HashMap<IpAddr, (u32, Option<Instant>)>>,
}

impl Throttle {
    pub fn new(max_attempts: u32, lockout: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            lockout,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let mut m = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&ip) {
            Some((_, Some(until))) if *until > Instant::now() => {
                Err((*until - Instant::now()).as_secs().max(1))
            }
            Some((_, Some(_))) => {
                m.remove(&ip);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut m = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(ip).or_insert((0, None));
        e.0 += 1;
        if e.0 >= self.max_attempts {
            e.1 = Some(Instant::now() + self.lockout);
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plaintext_is_accepted() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("pbkdf2:"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(
            verify_password("admin123", "admin123\n"),
            "a legacy plaintext pwd file"
        );
        assert!(!verify_password("admin", "admin123"));
        assert!(
            !verify_password("x", "pbkdf2:zz:yy"),
            "a corrupt hash never matches"
        );
    }

    #[test]
    fn throttle_locks_out_after_max_failures() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..2 {
            t.failed(ip);
            assert!(t.check(ip).is_ok());
        }
        t.failed(ip);
        assert!(t.check(ip).is_err());
        assert!(t.check("10.0.0.2".parse().unwrap()).is_ok(), "per address");
    }
}
