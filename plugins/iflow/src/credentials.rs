//! The iFlow credential (iflow.md §1.1) and its refresh (§2): step 1 exchanges the refresh
//! token at the OAuth token endpoint, step 2 fetches the account's API key — the inference
//! credential — from the user-info endpoint with the new access token.
//!
//! Reading accepts both spellings of each field (`access_token`/`accessToken`,
//! `refresh_token`/`refreshToken`, `expiry_date`/`expiryDate`, `token_type`/`tokenType`,
//! `apiKey`/`api_key`) and `expiry_date` as ms, a numeric string, ISO-8601 or
//! `YYYY-MM-DD HH:mm` (read as UTC). A refresh rewrites the fields under the spelling the
//! credential already uses (the written names otherwise) and `expiry_date` in the format it
//! already has, keeping every other field and the key order: the host stores it back in its
//! original shape.
//!
//! Failures are final (`UNAUTHORIZED`: refresh token or client refused; the host marks the
//! account unhealthy) or retryable (`UNAVAILABLE` / `TIMEOUT` / `RATE_LIMITED`; the host rests
//! the account and tries later).
//!
//! Deliberate fixes of the original: a refresh token alone is enough (a credential without
//! `apiKey` gets one at its first refresh); and when step 2 fails after step 1 succeeded, the
//! result of step 1 is still returned for storage — a rotated refresh token is never lost —
//! with the previous API key kept (when there is none, the credential stays without one and
//! the account is refused as before).

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::{ErrorCode, PluginError};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use crate::settings::{REFRESH_AHEAD_MS, Settings};

/// OAuth error codes that say the refresh token or client is not accepted (RFC 6749 §5.2).
const FINAL_OAUTH_ERRORS: [&str; 6] = [
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "unsupported_grant_type",
    "access_denied",
];
/// Lifetime assumed when the token endpoint names none (the original's default).
const DEFAULT_EXPIRES_IN_S: f64 = 3600.0;

/// Each logical field: the name written for a new field, then the names accepted on read.
pub const ACCESS_TOKEN: &[&str] = &["access_token", "accessToken"];
pub const REFRESH_TOKEN: &[&str] = &["refresh_token", "refreshToken"];
pub const EXPIRY_DATE: &[&str] = &["expiry_date", "expiryDate"];
pub const TOKEN_TYPE: &[&str] = &["token_type", "tokenType"];
pub const SCOPE: &[&str] = &["scope"];
pub const API_KEY: &[&str] = &["apiKey", "api_key"];

/// How an `expiry_date` was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryFormat {
    Millis,
    MillisString,
    Iso,
    /// `YYYY-MM-DD HH:mm`, or with `:ss` when `true`.
    Plain(bool),
}

/// Parses an `expiry_date` value: ms and the format it was in.
pub fn parse_expiry(v: &Value) -> Option<(i64, ExpiryFormat)> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(|ms| (ms, ExpiryFormat::Millis)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(f) = s.parse::<f64>() {
                return Some((f as i64, ExpiryFormat::MillisString));
            }
            if s.contains('T') {
                if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                    return Some((t.timestamp_millis(), ExpiryFormat::Iso));
                }
                return NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|t| (t.and_utc().timestamp_millis(), ExpiryFormat::Iso));
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
                return Some((t.and_utc().timestamp_millis(), ExpiryFormat::Plain(true)));
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
                .ok()
                .map(|t| (t.and_utc().timestamp_millis(), ExpiryFormat::Plain(false)))
        }
        _ => None,
    }
}

/// `ms` written in `format`.
pub fn format_expiry(ms: i64, format: ExpiryFormat) -> Value {
    let t = DateTime::<Utc>::from_timestamp_millis(ms);
    match (format, t) {
        (ExpiryFormat::Millis, _) | (_, None) => json!(ms),
        (ExpiryFormat::MillisString, _) => json!(ms.to_string()),
        (ExpiryFormat::Iso, Some(t)) => json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        (ExpiryFormat::Plain(true), Some(t)) => json!(t.format("%Y-%m-%d %H:%M:%S").to_string()),
        (ExpiryFormat::Plain(false), Some(t)) => json!(t.format("%Y-%m-%d %H:%M").to_string()),
    }
}

#[derive(Clone, Debug)]
pub struct Credential {
    obj: Map<String, Value>,
}

impl Credential {
    pub fn parse(json: &str) -> Result<Self, PluginError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(obj)) => Ok(Self { obj }),
            Ok(_) => Err(PluginError::invalid_input(
                "the iFlow credential is not a JSON object",
            )),
            Err(e) => Err(PluginError::invalid_input(format!(
                "the iFlow credential is not JSON: {e}"
            ))),
        }
    }

    /// The first present spelling of a field.
    fn key_of(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find(|k| self.obj.contains_key(**k))
            .map(|k| k.to_string())
    }

    fn str_field(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|k| {
            self.obj
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
        })
    }

    pub fn access_token(&self) -> Option<&str> {
        self.str_field(ACCESS_TOKEN)
    }
    pub fn refresh_token(&self) -> Option<&str> {
        self.str_field(REFRESH_TOKEN)
    }
    pub fn api_key(&self) -> Option<&str> {
        self.str_field(API_KEY)
    }

    fn expiry(&self) -> Option<(i64, ExpiryFormat)> {
        EXPIRY_DATE
            .iter()
            .find_map(|k| self.obj.get(*k).and_then(parse_expiry))
    }

    /// When the OAuth token expires (ms); 1 (long expired) for a credential without an API
    /// key that can get one, so it is refreshed before use; 0 when unknown.
    pub fn expiry_ms(&self) -> i64 {
        if self.api_key().is_none() && self.refresh_token().is_some() {
            return 1;
        }
        self.expiry().map(|(ms, _)| ms.max(1)).unwrap_or(0)
    }

    /// Has an API key and is valid for longer than the refresh-ahead window.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        self.api_key().is_some()
            && self
                .expiry()
                .is_some_and(|(ms, _)| ms - now_ms > REFRESH_AHEAD_MS)
    }

    fn set(&mut self, names: &[&str], v: Value) {
        let key = self.key_of(names).unwrap_or_else(|| names[0].to_string());
        self.obj.insert(key, v);
    }

    /// The credential after step 1 (`grant`) and step 2 (`api_key`, `None` if it failed: the
    /// previous key stays), as compact JSON in the original shape.
    pub fn refreshed(&self, grant: &Grant, api_key: Option<&str>, now_ms: i64) -> String {
        let mut c = self.clone();
        c.set(ACCESS_TOKEN, json!(grant.access_token));
        if let Some(rt) = &grant.refresh_token {
            c.set(REFRESH_TOKEN, json!(rt));
        }
        let format = self
            .expiry()
            .map(|(_, f)| f)
            .unwrap_or(ExpiryFormat::Millis);
        let lifetime_ms = (grant.expires_in_s.unwrap_or(DEFAULT_EXPIRES_IN_S) * 1000.0) as i64;
        c.set(EXPIRY_DATE, format_expiry(now_ms + lifetime_ms, format));
        c.set(
            TOKEN_TYPE,
            json!(grant.token_type.as_deref().unwrap_or("Bearer")),
        );
        match &grant.scope {
            Some(s) => c.set(SCOPE, json!(s)),
            None if c.key_of(SCOPE).is_none() => c.set(SCOPE, json!("")),
            None => {}
        }
        if let Some(k) = api_key {
            c.set(API_KEY, json!(k));
        }
        c.obj.shift_remove("expires_in");
        Value::Object(c.obj).to_string()
    }
}

/// A successful step-1 answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_s: Option<f64>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `error: error_description` of an OAuth-style error body, or the body's start.
pub fn oauth_error(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let e = match v.get("error") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => {
                    o.get("message").and_then(Value::as_str).map(str::to_string)
                }
                _ => text(&v, "message").or_else(|| text(&v, "msg")),
            };
            match (e, text(&v, "error_description")) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e,
                (None, Some(d)) => d,
                (None, None) => body.chars().take(300).collect(),
            }
        }
        Err(_) => {
            let t = body.trim();
            if t.is_empty() {
                "empty body".into()
            } else {
                t.chars().take(300).collect()
            }
        }
    }
}

impl Grant {
    pub fn parse(body: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            PluginError::unavailable(format!(
                "the iFlow token endpoint answered with invalid JSON: {e}"
            ))
        })?;
        let Some(access_token) = text(&v, "access_token") else {
            // OAuth's own refusals are final; anything else may pass.
            let final_refusal = v
                .get("error")
                .and_then(Value::as_str)
                .is_some_and(|c| FINAL_OAUTH_ERRORS.contains(&c));
            return Err(PluginError::new(
                if final_refusal {
                    ErrorCode::UNAUTHORIZED
                } else {
                    ErrorCode::UNAVAILABLE
                },
                format!(
                    "the iFlow token endpoint answered without an access_token: {}",
                    oauth_error(body)
                ),
            ));
        };
        let expires_in_s = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|s| *s > 0.0);
        Ok(Self {
            access_token,
            refresh_token: text(&v, "refresh_token"),
            expires_in_s,
            token_type: text(&v, "token_type"),
            scope: v.get("scope").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// Standard base64 (with padding).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encoding for form fields and query values.
pub fn url_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        url_encode(k, &mut out);
        out.push('=');
        url_encode(v, &mut out);
    }
    out
}

fn refresh_error(status: u16, what: &str, body: &str) -> PluginError {
    let code = match status {
        400 | 401 | 403 => ErrorCode::UNAUTHORIZED,
        429 => ErrorCode::RATE_LIMITED,
        _ => ErrorCode::UNAVAILABLE,
    };
    PluginError::new(
        code,
        format!("iFlow {what} failed: HTTP {status}: {}", oauth_error(body)),
    )
}

fn transport(what: &str, e: reqwest::Error) -> PluginError {
    let e = kit::transport_error(e);
    PluginError::new(e.code, format!("iFlow {what} failed: {}", e.message))
}

/// Step 1: the refresh-token grant, client credentials both as HTTP Basic and in the form.
pub async fn exchange(
    client: &reqwest::Client,
    settings: &Settings,
    refresh_token: &str,
) -> Result<Grant, PluginError> {
    let (Some(id), Some(secret)) = (
        settings.client_id.as_deref(),
        settings.client_secret.as_deref(),
    ) else {
        return Err(PluginError::invalid_input(
            "no iFlow OAuth client configured for token refresh: set IFLOW_OAUTH_CLIENT_ID and IFLOW_OAUTH_CLIENT_SECRET (account field or environment)",
        ));
    };
    let body = form_encode(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", id),
        ("client_secret", secret),
    ]);
    let resp = client
        .post(&settings.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header(
            "authorization",
            format!("Basic {}", base64(format!("{id}:{secret}").as_bytes())),
        )
        .body(body)
        .timeout(Duration::from_millis(settings.refresh_timeout_ms))
        .send()
        .await
        .map_err(|e| transport("token refresh", e))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| transport("token refresh", e))?;
    if !(200..300).contains(&status) {
        return Err(refresh_error(status, "token refresh", &text));
    }
    Grant::parse(&text)
}

/// Step 2: the API key bound to the account, from the user-info endpoint.
pub async fn fetch_api_key(
    client: &reqwest::Client,
    settings: &Settings,
    access_token: &str,
) -> Result<String, PluginError> {
    let mut url = settings.user_info_url.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("accessToken=");
    url_encode(access_token, &mut url);
    let resp = client
        .get(&url)
        .header("accept", "application/json")
        .header("user-agent", crate::sign::USER_AGENT)
        .timeout(Duration::from_millis(settings.refresh_timeout_ms))
        .send()
        .await
        .map_err(|e| transport("user info", e))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| transport("user info", e))?;
    if !(200..300).contains(&status) {
        return Err(refresh_error(status, "user info", &text));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        PluginError::unavailable(format!(
            "the iFlow user-info endpoint answered with invalid JSON: {e}"
        ))
    })?;
    if v.get("success").and_then(Value::as_bool) != Some(true) {
        return Err(PluginError::new(
            ErrorCode::UNAUTHORIZED,
            format!("iFlow user info refused: {}", oauth_error(&text)),
        ));
    }
    v.pointer("/data/apiKey")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or_else(|| PluginError::unavailable("the iFlow user info carries no data.apiKey"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats_round_trip() {
        let ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        for (v, f) in [
            (json!(ms), ExpiryFormat::Millis),
            (json!("1767225600000"), ExpiryFormat::MillisString),
            (json!("2026-01-01T00:00:00.000Z"), ExpiryFormat::Iso),
            (json!("2026-01-01T08:00:00+08:00"), ExpiryFormat::Iso),
            (json!("2026-01-01 00:00"), ExpiryFormat::Plain(false)),
            (json!("2026-01-01 00:00:00"), ExpiryFormat::Plain(true)),
        ] {
            assert_eq!(parse_expiry(&v), Some((ms, f)), "{v}");
        }
        assert_eq!(
            format_expiry(ms + 60_000, ExpiryFormat::Plain(false)),
            json!("2026-01-01 00:01")
        );
        assert_eq!(
            format_expiry(ms, ExpiryFormat::Iso),
            json!("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(
            format_expiry(ms, ExpiryFormat::MillisString),
            json!("1767225600000")
        );
        assert_eq!(parse_expiry(&json!("soon")), None);
        assert_eq!(parse_expiry(&json!(null)), None);
    }

    #[test]
    fn reads_both_spellings_and_writes_the_one_in_use() {
        let c = Credential::parse(
            r#"{"accessToken":"a","refreshToken":"r","expiryDate":"2026-01-01 00:00","api_key":"k","x":1}"#,
        )
        .expect("parse");
        assert_eq!(
            (c.access_token(), c.refresh_token(), c.api_key()),
            (Some("a"), Some("r"), Some("k"))
        );
        assert_eq!(c.expiry_ms(), 1_767_225_600_000);
        let g = Grant::parse(r#"{"access_token":"a2","refresh_token":"r2","expires_in":60}"#)
            .expect("grant");
        let out: Value =
            serde_json::from_str(&c.refreshed(&g, Some("k2"), 1_767_225_600_000)).expect("json");
        let keys: Vec<&str> = out
            .as_object()
            .expect("obj")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "accessToken",
                "refreshToken",
                "expiryDate",
                "api_key",
                "x",
                "token_type",
                "scope"
            ]
        );
        assert_eq!(out["expiryDate"], "2026-01-01 00:01");
        assert_eq!(out["api_key"], "k2");
        assert_eq!(out["refreshToken"], "r2");
    }

    #[test]
    fn refresh_defaults_and_failed_step_two() {
        let c = Credential::parse(
            r#"{"access_token":"a","refresh_token":"r","expiry_date":5,"token_type":"Bearer","scope":"s","apiKey":"k"}"#,
        )
        .expect("parse");
        let g = Grant::parse(r#"{"access_token":"a2"}"#).expect("grant");
        let out: Value = serde_json::from_str(&c.refreshed(&g, None, 1000)).expect("json");
        assert_eq!(
            out["expiry_date"],
            1000 + 3_600_000,
            "expires_in defaults to 3600"
        );
        assert_eq!(out["refresh_token"], "r", "kept when not rotated");
        assert_eq!(out["apiKey"], "k", "the previous key stays");
        assert_eq!(out["scope"], "s");
    }

    #[test]
    fn expiry_without_api_key_is_due() {
        let c = Credential::parse(r#"{"refresh_token":"r","expiry_date":99999999999999}"#)
            .expect("parse");
        assert_eq!(c.expiry_ms(), 1);
        assert!(!c.is_fresh(0));
        let c = Credential::parse(r#"{"apiKey":"k"}"#).expect("parse");
        assert_eq!(c.expiry_ms(), 0, "unknown");
    }

    #[test]
    fn encodings() {
        assert_eq!(base64(b"id:secret"), "aWQ6c2VjcmV0");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(form_encode(&[("a", "x y&z")]), "a=x%20y%26z");
        let e = Grant::parse(r#"{"error":"invalid_grant"}"#).expect_err("refused");
        assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "final");
        assert!(
            Grant::parse(r#"{"msg":"busy"}"#)
                .expect_err("busy")
                .retryable
        );
    }
}
