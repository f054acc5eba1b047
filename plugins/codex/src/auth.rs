//! The Codex credential (codex.md §1–2): reading the token JSON in the CLIProxyAPI "codex"
//! shape (`id_token`, `access_token`, `refresh_token`, `account_id`, `last_refresh`, `email`,
//! `type:"codex"`, `expired`), decoding JWT claims (payload only, signature never checked), the
//! token's expiry, and the OAuth refresh at `auth.openai.com` (or `CODEX_TOKEN_URL`).
//!
//! A refresh returns the credential in the **same shape**: every field keeps its place,
//! unknown fields are kept, the eight canonical fields are updated (and added at the end if the
//! file lacked them), and any other expiry field the file uses (`expires_at`, `expiry_date`,
//! `expires_in`) is updated in its own unit.
//!
//! Deliberate differences from the original:
//! - a refresh answer without a usable `id_token` is accepted (the old `id_token`,
//!   `account_id` and `email` are kept). The original fails the refresh, which throws away the
//!   refresh token the server has just rotated and so kills the account;
//! - only transient failures (transport, timeout, 429, 5xx) are retried (3 attempts, 1 s and
//!   2 s apart). A refused refresh token (`invalid_grant`, `refresh_token_reused`) is final.

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::account::format_time;
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value, json};

/// The Codex CLI's public OAuth client id.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
pub const DEFAULT_TOKEN_URL: &str = "https://auth.openai.com/oauth/token";
/// Account field overriding the token endpoint (not in the original, which hard-codes it).
pub const TOKEN_URL_FIELD: &str = "CODEX_TOKEN_URL";
/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_EXPIRES_IN_SECS: i64 = 3600;
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
const REFRESH_ATTEMPTS: u32 = 3;
/// Largest token-endpoint answer read (bytes).
const MAX_TOKEN_BODY: usize = 1 << 20;
/// The claim namespace holding `chatgpt_account_id`.
const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// A parsed credential JSON (kept whole, so a refresh can write it back in its shape).
#[derive(Clone, Debug)]
pub struct Credential {
    pub obj: Map<String, Value>,
}

impl Credential {
    pub fn parse(json: &str) -> Result<Self, String> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(obj)) => Ok(Self { obj }),
            Ok(_) => Err("the Codex credential is not a JSON object".into()),
            Err(e) => Err(format!("the Codex credential is not JSON: {e}")),
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.obj
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn access_token(&self) -> Option<&str> {
        self.str("access_token")
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.str("refresh_token")
    }

    /// Imported tokens marked `access_token_only` (or without a refresh token) cannot be
    /// refreshed.
    pub fn refreshable(&self) -> bool {
        let only = self
            .obj
            .get("access_token_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        !only && self.refresh_token().is_some()
    }

    /// `account_id`, else the id token's (then the access token's) `chatgpt_account_id`
    /// claim, else the id token's `sub`.
    pub fn account_id(&self) -> Option<String> {
        if let Some(a) = self.str("account_id") {
            return Some(a.to_string());
        }
        let id = self.str("id_token").and_then(jwt_claims);
        let access = self.access_token().and_then(jwt_claims);
        [id.as_ref(), access.as_ref()]
            .into_iter()
            .flatten()
            .find_map(chatgpt_account_id)
            .or_else(|| {
                id.as_ref()
                    .and_then(|c| c.get("sub"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    }

    /// When the access token expires (ms since the epoch): `expired` (ISO), else
    /// `expires_at` (s or ms, or ISO), else `expiry_date` (ms), else the access token's JWT
    /// `exp`; 0 if nothing says. A credential without an access token is due now (1).
    pub fn expiry_ms(&self) -> i64 {
        let Some(access) = self.access_token() else {
            return 1;
        };
        for key in ["expired", "expires_at", "expiresAt", "expiry_date"] {
            if let Some(ms) = self.obj.get(key).and_then(time_value_ms) {
                return ms;
            }
        }
        jwt_claims(access)
            .and_then(|c| c.get("exp").and_then(number))
            .map(|s| (s * 1000.0) as i64)
            .unwrap_or(0)
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite() && *n > 0.0)
}

/// A time given as ISO-8601 text, or as a number of seconds (< 10^11) or milliseconds.
fn time_value_ms(v: &Value) -> Option<i64> {
    if let Value::String(s) = v
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim())
    {
        return Some(t.timestamp_millis());
    }
    let n = number(v)?;
    Some(if n < 1e11 { n * 1000.0 } else { n } as i64)
}

fn chatgpt_account_id(claims: &Value) -> Option<String> {
    claims
        .get(AUTH_CLAIM)
        .and_then(|a| a.get("chatgpt_account_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn email_of(id_claims: Option<&Value>, access_claims: Option<&Value>) -> Option<String> {
    id_claims
        .and_then(|c| c.get("email"))
        .or_else(|| {
            access_claims
                .and_then(|c| c.get(PROFILE_CLAIM))
                .and_then(|p| p.get("email"))
        })
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The payload of a JWT (`header.payload.signature`, base64url), unverified.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = b64url_decode(p)?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// base64url (or standard base64), padding optional; `None` on any invalid character.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The token endpoint for this account.
pub fn token_url(account: &Value) -> String {
    kit::account_str(account, TOKEN_URL_FIELD).unwrap_or_else(|| DEFAULT_TOKEN_URL.into())
}

/// Exchanges the credential's refresh token for a new credential JSON in the same shape.
pub async fn refresh(account: &Value, token: &str, options: &str) -> Result<String, PluginError> {
    let cred = Credential::parse(token).map_err(PluginError::invalid_input)?;
    if !cred.refreshable() {
        return Err(PluginError::new(
            ErrorCode::UNAUTHORIZED,
            "this Codex credential has no refresh token (access_token_only); re-authenticate",
        ));
    }
    let rt = cred.refresh_token().unwrap_or_default().to_string();
    let url = token_url(account);
    let client = kit::client(kit::proxy_of(options).as_deref())?;
    let form = format!(
        "grant_type=refresh_token&client_id={}&refresh_token={}",
        form_encode(CLIENT_ID),
        form_encode(&rt)
    );
    let mut last = PluginError::unavailable("token refresh was not attempted");
    for attempt in 0..REFRESH_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        let sent = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .timeout(REFRESH_TIMEOUT)
            .body(form.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                last = kit::transport_error(e);
                continue;
            }
        };
        let status = resp.status().as_u16();
        let body = read_capped(resp).await;
        if (200..300).contains(&status) {
            let v: Value = serde_json::from_str(&body).map_err(|e| {
                PluginError::unavailable(format!(
                    "the token endpoint answered with invalid JSON: {e}"
                ))
            })?;
            let new = apply_refresh(&cred, &v, aiclient_sdk::account::now_ms())?;
            return Ok(Value::Object(new).to_string());
        }
        let message = refresh_error_message(&body, status);
        last = if status == 429 || status >= 500 {
            PluginError::unavailable(format!("token endpoint HTTP {status}: {message}"))
        } else {
            // A refused refresh token (invalid_grant, refresh_token_reused): retrying cannot help.
            return Err(PluginError::new(
                ErrorCode::UNAUTHORIZED,
                format!("Codex token refresh refused (HTTP {status}): {message}; re-authenticate"),
            ));
        };
        tracing::warn!(status, attempt, "Codex token refresh failed; retrying");
    }
    Err(last)
}

async fn read_capped(resp: reqwest::Response) -> String {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = MAX_TOKEN_BODY.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_TOKEN_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `error_description`, else the nested `error.message` (+ code), else the flat `error`.
pub fn refresh_error_message(body: &str, status: u16) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(d) = v.get("error_description").and_then(Value::as_str) {
        return d.to_string();
    }
    if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
        return match e.get("code").and_then(Value::as_str) {
            Some(c) if !msg.is_empty() => format!("{msg} ({c})"),
            Some(c) => c.to_string(),
            None => msg.to_string(),
        };
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return e.to_string();
    }
    let t = body.trim();
    if t.is_empty() || t.len() > 300 {
        format!("HTTP {status}")
    } else {
        t.to_string()
    }
}

/// The refreshed credential: `old` with the token endpoint's answer applied at `now`.
pub fn apply_refresh(
    old: &Credential,
    resp: &Value,
    now: i64,
) -> Result<Map<String, Value>, PluginError> {
    let access = resp
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            PluginError::unavailable("the token endpoint answered without an access_token")
        })?;
    let mut obj = old.obj.clone();
    let expires_in = resp
        .get("expires_in")
        .and_then(number)
        .map(|n| n as i64)
        .unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    let expires_at = now + expires_in * 1000;
    let access_claims = jwt_claims(access);
    let new_id = resp
        .get("id_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let id_claims = new_id.and_then(jwt_claims);
    if new_id.is_some() && id_claims.is_none() {
        tracing::warn!(
            "the refreshed Codex id_token is not a readable JWT; keeping the account id and email"
        );
    }
    let set = |obj: &mut Map<String, Value>, k: &str, v: Value| {
        // `insert` keeps an existing key's position (preserve_order) and appends a new one.
        obj.insert(k.to_string(), v);
    };
    if let (Some(id), Some(_)) = (new_id, id_claims.as_ref()) {
        set(&mut obj, "id_token", json!(id));
    } else if !obj.contains_key("id_token") {
        set(&mut obj, "id_token", json!(""));
    }
    set(&mut obj, "access_token", json!(access));
    if let Some(rt) = resp
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        set(&mut obj, "refresh_token", json!(rt));
    }
    let account_id = id_claims
        .as_ref()
        .and_then(|c| {
            chatgpt_account_id(c)
                .or_else(|| c.get("sub").and_then(Value::as_str).map(str::to_string))
        })
        .or_else(|| access_claims.as_ref().and_then(chatgpt_account_id))
        .or_else(|| old.account_id());
    match account_id {
        Some(a) => set(&mut obj, "account_id", json!(a)),
        None if !obj.contains_key("account_id") => set(&mut obj, "account_id", json!("")),
        None => {}
    }
    set(&mut obj, "last_refresh", json!(format_time(now)));
    match email_of(id_claims.as_ref(), access_claims.as_ref()) {
        Some(e) => set(&mut obj, "email", json!(e)),
        None if !obj.contains_key("email") => set(&mut obj, "email", json!("")),
        None => {}
    }
    if !obj.contains_key("type") {
        set(&mut obj, "type", json!("codex"));
    }
    // Other expiry fields the file already uses, in their own units.
    if let Some(v) = obj.get("expires_at").cloned() {
        let nv = match v {
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s.trim()).is_ok() => {
                json!(format_time(expires_at))
            }
            other => match number(&other) {
                Some(n) if n < 1e11 => json!(expires_at / 1000),
                _ => json!(expires_at),
            },
        };
        set(&mut obj, "expires_at", nv);
    }
    if obj.contains_key("expiry_date") {
        set(&mut obj, "expiry_date", json!(expires_at));
    }
    if obj.contains_key("expires_in") {
        set(&mut obj, "expires_in", json!(expires_in));
    }
    set(&mut obj, "expired", json!(format_time(expires_at)));
    obj.shift_remove("access_token_only");
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64url(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64url(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            assert_eq!(b64url_decode(&b64url(&data)), Some(data));
        }
        assert_eq!(b64url_decode("a"), None);
        assert_eq!(b64url_decode("ab$d"), None);
    }

    #[test]
    fn expiry_from_expired_then_expires_at_then_jwt() {
        let c = Credential::parse(
            r#"{"access_token":"x","expired":"2026-06-09T02:00:00.000Z","expires_at":1}"#,
        )
        .unwrap();
        assert_eq!(c.expiry_ms(), 1_780_970_400_000);
        let c = Credential::parse(r#"{"access_token":"x","expires_at":1780970400}"#).unwrap();
        assert_eq!(c.expiry_ms(), 1_780_970_400_000);
        let c = Credential::parse(r#"{"access_token":"x","expires_at":1780970400123}"#).unwrap();
        assert_eq!(c.expiry_ms(), 1_780_970_400_123);
        let t = jwt(json!({"exp": 1_780_970_400}));
        let c = Credential::parse(&json!({"access_token": t, "expired": "garbage"}).to_string())
            .unwrap();
        assert_eq!(c.expiry_ms(), 1_780_970_400_000);
        let c = Credential::parse(r#"{"access_token":"opaque"}"#).unwrap();
        assert_eq!(c.expiry_ms(), 0);
        let c = Credential::parse(r#"{"refresh_token":"r"}"#).unwrap();
        assert_eq!(c.expiry_ms(), 1, "no access token: refresh first");
    }

    #[test]
    fn account_id_from_field_or_claims() {
        let id = jwt(json!({"sub": "s", AUTH_CLAIM: {"chatgpt_account_id": "acc-1"}}));
        let c =
            Credential::parse(&json!({"access_token": "x", "id_token": id}).to_string()).unwrap();
        assert_eq!(c.account_id().as_deref(), Some("acc-1"));
        let c = Credential::parse(r#"{"access_token":"x","account_id":"acc-2"}"#).unwrap();
        assert_eq!(c.account_id().as_deref(), Some("acc-2"));
        let id = jwt(json!({"sub": "only-sub"}));
        let c =
            Credential::parse(&json!({"access_token": "x", "id_token": id}).to_string()).unwrap();
        assert_eq!(c.account_id().as_deref(), Some("only-sub"));
    }

    #[test]
    fn refresh_keeps_the_shape_and_unknown_fields() {
        let old = Credential::parse(
            &json!({
                "id_token": "old.id.t", "access_token": "a0", "refresh_token": "r0",
                "account_id": "acc", "last_refresh": "2020-01-01T00:00:00.000Z",
                "email": "old@example.com", "type": "codex", "expired": "2020-01-01T01:00:00.000Z",
                "custom": {"keep": true}
            })
            .to_string(),
        )
        .unwrap();
        let id =
            jwt(json!({"email": "new@example.com", AUTH_CLAIM: {"chatgpt_account_id": "acc-9"}}));
        let now = 1_800_000_000_000;
        let new = apply_refresh(
            &old,
            &json!({"access_token": "a1", "refresh_token": "r1", "id_token": id, "expires_in": 600}),
            now,
        )
        .unwrap();
        let keys: Vec<&str> = new.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id_token",
                "access_token",
                "refresh_token",
                "account_id",
                "last_refresh",
                "email",
                "type",
                "expired",
                "custom"
            ]
        );
        assert_eq!(new["access_token"], "a1");
        assert_eq!(new["refresh_token"], "r1");
        assert_eq!(new["account_id"], "acc-9");
        assert_eq!(new["email"], "new@example.com");
        assert_eq!(new["last_refresh"], format_time(now));
        assert_eq!(new["expired"], format_time(now + 600_000));
        assert_eq!(new["custom"], json!({"keep": true}));

        // No id_token, no rotated refresh token: the old ones stay.
        let new = apply_refresh(&old, &json!({"access_token": "a2"}), now).unwrap();
        assert_eq!(
            (new["refresh_token"].as_str(), new["id_token"].as_str()),
            (Some("r0"), Some("old.id.t"))
        );
        assert_eq!(new["account_id"], "acc");
        assert_eq!(new["expired"], format_time(now + 3_600_000));
        assert!(apply_refresh(&old, &json!({"refresh_token": "r"}), now).is_err());
    }

    #[test]
    fn refresh_errors_are_readable() {
        assert_eq!(
            refresh_error_message(
                r#"{"error":"invalid_grant","error_description":"bad token"}"#,
                400
            ),
            "bad token"
        );
        assert_eq!(
            refresh_error_message(
                r#"{"error":{"message":"reused","code":"refresh_token_reused"}}"#,
                401
            ),
            "reused (refresh_token_reused)"
        );
        assert_eq!(refresh_error_message("", 502), "HTTP 502");
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
