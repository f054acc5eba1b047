//! The Qwen OAuth credential (`access_token`, `refresh_token`, `token_type`, `resource_url`,
//! `expiry_date` in ms; qwen.md §1.1) and its refresh at the token endpoint (§2).
//!
//! The credential is kept as the object it came in: a refresh rewrites the fields the token
//! endpoint answers for (access token, token type, the refresh token when it rotated,
//! `resource_url`, `expiry_date`), drops the device flow's relative `expires_in`, and keeps
//! every other field and the key order, so the host stores it back in its original shape.
//! A failed refresh changes nothing: the operator's credential is never deleted (the Node
//! original deleted the file on a 400). Failures are reported as final (`UNAUTHORIZED`: the
//! refresh token or client was refused, so the host marks the account unhealthy) or retryable
//! (`UNAVAILABLE` / `TIMEOUT` / `RATE_LIMITED`: the endpoint is down, slow or busy, so the host
//! rests the account and tries again later).

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value, json};

use crate::settings::{REFRESH_AHEAD_MS, Settings};

/// Attempts at the token endpoint: the first, then up to two more after a 5xx, a 429 or a
/// transport failure.
const TOKEN_ATTEMPTS: u32 = 3;
const TOKEN_RETRY_BASE: Duration = Duration::from_millis(250);
/// OAuth error codes that say the refresh token or client is not accepted (RFC 6749 §5.2):
/// retrying cannot help.
const FINAL_OAUTH_ERRORS: [&str; 6] = [
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "unsupported_grant_type",
    "access_denied",
];
/// Lifetime assumed when the token endpoint names none.
const DEFAULT_EXPIRES_IN_S: f64 = 3600.0;

#[derive(Clone, Debug)]
pub struct Credential {
    obj: Map<String, Value>,
}

impl Credential {
    pub fn parse(json: &str) -> Result<Self, PluginError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(obj)) => Ok(Self { obj }),
            Ok(_) => Err(PluginError::invalid_input(
                "the Qwen credential is not a JSON object",
            )),
            Err(e) => Err(PluginError::invalid_input(format!(
                "the Qwen credential is not JSON: {e}"
            ))),
        }
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.obj
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    pub fn access_token(&self) -> Option<&str> {
        self.str_field("access_token")
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.str_field("refresh_token")
    }

    pub fn resource_url(&self) -> Option<&str> {
        self.str_field("resource_url")
    }

    /// `expiry_date` in ms (a number or a numeric string). A credential without an access
    /// token or without `expiry_date` (fresh device-flow output) counts as long expired (1),
    /// so it is refreshed before its first use, as the original does.
    pub fn expiry_ms(&self) -> i64 {
        if self.access_token().is_none() {
            return 1;
        }
        let v = match self.obj.get("expiry_date") {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok().map(|f| f as i64),
            _ => None,
        };
        v.filter(|ms| *ms > 0).unwrap_or(1)
    }

    /// Usable for longer than the refresh-ahead window.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        self.expiry_ms() - now_ms > REFRESH_AHEAD_MS
    }

    /// The credential after `grant`, as compact JSON in the original shape.
    pub fn refreshed(&self, grant: &Grant, now_ms: i64) -> String {
        let mut obj = self.obj.clone();
        obj.insert("access_token".into(), json!(grant.access_token));
        obj.insert(
            "token_type".into(),
            json!(grant.token_type.as_deref().unwrap_or("Bearer")),
        );
        if let Some(rt) = &grant.refresh_token {
            obj.insert("refresh_token".into(), json!(rt));
        }
        // The original copies resource_url from the answer only: an answer without it sends
        // the next call to QWEN_BASE_URL. The key stays (empty), keeping the file's shape.
        obj.insert(
            "resource_url".into(),
            json!(grant.resource_url.as_deref().unwrap_or("")),
        );
        let lifetime_ms = (grant.expires_in_s.unwrap_or(DEFAULT_EXPIRES_IN_S) * 1000.0) as i64;
        obj.insert("expiry_date".into(), json!(now_ms + lifetime_ms));
        obj.shift_remove("expires_in");
        Value::Object(obj).to_string()
    }
}

/// A successful token-endpoint answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub access_token: String,
    pub token_type: Option<String>,
    pub expires_in_s: Option<f64>,
    pub refresh_token: Option<String>,
    pub resource_url: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `error: error_description` of an OAuth error body, or the body's start.
pub fn oauth_error(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("error").is_some() => {
            let e = match v.get("error") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
                None => String::new(),
            };
            match text(&v, "error_description") {
                Some(d) => format!("{e}: {d}"),
                None => e,
            }
        }
        _ => {
            let t = body.trim();
            if t.is_empty() {
                "empty body".to_string()
            } else {
                t.chars().take(300).collect()
            }
        }
    }
}

impl Grant {
    /// A 2xx body: a failure if it names an `error` or has no `access_token` (qwen.md §2.2).
    pub fn parse(body: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            PluginError::unavailable(format!(
                "the Qwen token endpoint answered with invalid JSON: {e}"
            ))
        })?;
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            // OAuth's own refusals are final; anything else (busy, internal) may pass.
            let code = match e.as_str().unwrap_or_default() {
                c if FINAL_OAUTH_ERRORS.contains(&c) => ErrorCode::UNAUTHORIZED,
                _ => ErrorCode::UNAVAILABLE,
            };
            return Err(PluginError::new(
                code,
                format!("Qwen token refresh refused: {}", oauth_error(body)),
            ));
        }
        let Some(access_token) = text(&v, "access_token") else {
            return Err(PluginError::unavailable(
                "the Qwen token endpoint answered without an access_token",
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
            token_type: text(&v, "token_type"),
            expires_in_s,
            refresh_token: text(&v, "refresh_token"),
            resource_url: text(&v, "resource_url"),
        })
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// Exchanges `refresh_token` at the token endpoint (form-encoded `grant_type=refresh_token`,
/// `refresh_token`, `client_id`; no secret).
pub async fn exchange(
    client: &reqwest::Client,
    settings: &Settings,
    refresh_token: &str,
) -> Result<Grant, PluginError> {
    let Some(client_id) = settings.client_id.as_deref() else {
        return Err(PluginError::invalid_input(
            "no Qwen OAuth client id configured for token refresh: set QWEN_OAUTH_CLIENT_ID (account field or environment)",
        ));
    };
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
    ];
    let timeout = Duration::from_millis(settings.refresh_timeout_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let more = attempt < TOKEN_ATTEMPTS;
        let sent = client
            .post(&settings.token_url)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(&form))
            .timeout(timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if more && !e.is_timeout() => {
                tracing::warn!(error = %e.without_url(), "Qwen token endpoint unreachable; retrying");
                tokio::time::sleep(TOKEN_RETRY_BASE * attempt).await;
                continue;
            }
            Err(e) => {
                let e = kit::transport_error(e);
                return Err(PluginError::new(
                    e.code,
                    format!("Qwen token refresh failed: {}", e.message),
                ));
            }
        };
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(kit::transport_error)?;
        if (200..300).contains(&status) {
            return Grant::parse(&body);
        }
        if more && (status == 429 || status >= 500) {
            tracing::warn!(status, "Qwen token endpoint failed; retrying");
            tokio::time::sleep(TOKEN_RETRY_BASE * attempt).await;
            continue;
        }
        let code = match status {
            400 | 401 | 403 => ErrorCode::UNAUTHORIZED,
            429 => ErrorCode::RATE_LIMITED,
            _ => ErrorCode::UNAVAILABLE,
        };
        return Err(PluginError::new(
            code,
            format!(
                "Qwen token refresh failed: HTTP {status}: {}",
                oauth_error(&body)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_of_device_flow_output_is_unknown_so_due() {
        let c = Credential::parse(r#"{"access_token":"a","refresh_token":"r","expires_in":3600}"#)
            .expect("parse");
        assert_eq!(c.expiry_ms(), 1);
        let c = Credential::parse(r#"{"access_token":"a","expiry_date":"1767225600000"}"#)
            .expect("parse");
        assert_eq!(c.expiry_ms(), 1_767_225_600_000);
        let c = Credential::parse(r#"{"expiry_date":1767225600000}"#).expect("parse");
        assert_eq!(c.expiry_ms(), 1, "no access token: due");
        assert!(Credential::parse("[1]").is_err());
        assert!(Credential::parse("nope").is_err());
    }

    #[test]
    fn refresh_keeps_shape_and_unknown_fields() {
        let c = Credential::parse(
            r#"{"access_token":"old","token_type":"Bearer","refresh_token":"rt1","resource_url":"portal.qwen.ai","expiry_date":5,"note":{"k":1}}"#,
        )
        .expect("parse");
        let g = Grant::parse(r#"{"access_token":"new","token_type":"Bearer","expires_in":7200,"refresh_token":"rt2","resource_url":"http://h"}"#).expect("grant");
        let out: Value = serde_json::from_str(&c.refreshed(&g, 1000)).expect("json");
        let keys: Vec<&str> = out
            .as_object()
            .expect("obj")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "token_type",
                "refresh_token",
                "resource_url",
                "expiry_date",
                "note"
            ]
        );
        assert_eq!(out["access_token"], "new");
        assert_eq!(out["refresh_token"], "rt2");
        assert_eq!(out["resource_url"], "http://h");
        assert_eq!(out["expiry_date"], 1000 + 7_200_000);
        assert_eq!(out["note"], json!({"k": 1}));
        // No rotation, no resource_url: the old refresh token stays, resource_url empties.
        let g = Grant::parse(r#"{"access_token":"n2","expires_in":60}"#).expect("grant");
        let out: Value = serde_json::from_str(&c.refreshed(&g, 0)).expect("json");
        assert_eq!(out["refresh_token"], "rt1");
        assert_eq!(out["resource_url"], "");
        assert_eq!(out["token_type"], "Bearer");
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form_encode(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "a b/+=&")
            ]),
            "grant_type=refresh_token&refresh_token=a+b%2F%2B%3D%26"
        );
    }

    #[test]
    fn grant_failures() {
        let e = Grant::parse(r#"{"error":"invalid_grant"}"#).expect_err("refused");
        assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "final");
        let e = Grant::parse(r#"{"error":"server_busy"}"#).expect_err("busy");
        assert!(e.retryable, "may pass: {e}");
        assert!(Grant::parse(r#"{"token_type":"Bearer"}"#).is_err());
        assert!(Grant::parse("<html>").is_err());
        assert_eq!(
            oauth_error(r#"{"error":"invalid_grant","error_description":"used"}"#),
            "invalid_grant: used"
        );
    }
}
