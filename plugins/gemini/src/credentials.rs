//! The Google OAuth credential JSON (`access_token`, `refresh_token`, `token_type`, `scope`,
//! `id_token?`, `expiry_date` in ms) and its refresh at the Google token endpoint.
//!
//! A credential is kept as the object it came in, so a refresh rewrites only the fields the
//! token endpoint answered and keeps unknown fields and key order: the host stores the result
//! in the original file (or Redis) in its original shape. Google normally does not rotate the
//! refresh token; when the endpoint does return one, it is kept (the Node original threw it
//! away, which breaks on a rotating endpoint).

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value, json};

use crate::settings::REFRESH_AHEAD_MS;

/// Attempts at the token endpoint: the first and up to three retries on 408/429/5xx or a
/// transport failure, as google-auth-library's request layer does.
const TOKEN_ATTEMPTS: u32 = 4;
const TOKEN_RETRY_BASE: Duration = Duration::from_millis(200);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One Google OAuth credential, as stored.
#[derive(Clone, Debug)]
pub struct Credential {
    obj: Map<String, Value>,
}

impl Credential {
    pub fn parse(json: &str) -> Result<Self, PluginError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(obj)) => Ok(Self { obj }),
            Ok(_) => Err(PluginError::invalid_input(
                "the Google credential is not a JSON object",
            )),
            Err(e) => Err(PluginError::invalid_input(format!(
                "the Google credential is not JSON: {e}"
            ))),
        }
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.obj
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn access_token(&self) -> Option<&str> {
        self.str_field("access_token")
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.str_field("refresh_token")
    }

    /// The `Authorization` header value: `token_type` verbatim (Bearer when missing).
    pub fn authorization(&self) -> Option<String> {
        let scheme = self.str_field("token_type").unwrap_or("Bearer");
        self.access_token().map(|t| format!("{scheme} {t}"))
    }

    /// `expiry_date` in ms (a number or a numeric string); 0 when unknown. A credential
    /// without an access token counts as long expired (1), so it is refreshed before use.
    pub fn expiry_ms(&self) -> i64 {
        if self.access_token().is_none() {
            return 1;
        }
        match self.obj.get("expiry_date") {
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(|f| f as i64).unwrap_or(0),
            _ => 0,
        }
    }

    /// Usable for longer than the refresh-ahead window (an unknown expiry is not fresh).
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        let exp = self.expiry_ms();
        exp > 0 && exp - now_ms > REFRESH_AHEAD_MS
    }

    /// The credential after `grant`, as compact JSON in the original shape.
    pub fn refreshed(&self, grant: &Grant, now_ms: i64) -> String {
        let mut obj = self.obj.clone();
        obj.insert("access_token".into(), json!(grant.access_token));
        if let Some(rt) = &grant.refresh_token {
            obj.insert("refresh_token".into(), json!(rt));
        }
        let lifetime_ms = grant
            .expires_in_s
            .map_or(3_599_000, |s| (s * 1000.0) as i64);
        obj.insert("expiry_date".into(), json!(now_ms + lifetime_ms));
        for (k, v) in [
            ("token_type", &grant.token_type),
            ("scope", &grant.scope),
            ("id_token", &grant.id_token),
        ] {
            if let Some(v) = v {
                obj.insert(k.into(), json!(v));
            }
        }
        obj.shift_remove("expires_in");
        Value::Object(obj).to_string()
    }
}

/// A successful token-endpoint answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub access_token: String,
    pub expires_in_s: Option<f64>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl Grant {
    pub fn parse(body: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            PluginError::unavailable(format!(
                "the token endpoint answered with invalid JSON: {e}"
            ))
        })?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let access_token = s("access_token").ok_or_else(|| {
            PluginError::unavailable("the token endpoint answered without an access_token")
        })?;
        let expires_in_s = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(t)) => t.trim().parse().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s > 0.0);
        Ok(Self {
            access_token,
            expires_in_s,
            token_type: s("token_type"),
            scope: s("scope"),
            id_token: s("id_token"),
            refresh_token: s("refresh_token"),
        })
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
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

/// The token endpoint's refusal as a readable message: `error` and `error_description`.
fn refusal(status: u16, body: &str) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let code = field("error").or_else(|| {
        v.as_ref()
            .and_then(|v| v.pointer("/error/status"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let desc = field("error_description").or_else(|| {
        v.as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match (code, desc) {
        (Some(c), Some(d)) => format!("token endpoint answered {status}: {c} ({d})"),
        (Some(c), None) => format!("token endpoint answered {status}: {c}"),
        _ => format!(
            "token endpoint answered {status}: {}",
            body.chars().take(300).collect::<String>()
        ),
    }
}

/// Exchanges `refresh_token` for a new access token at `token_url`.
pub async fn exchange(
    client: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
) -> Result<Grant, PluginError> {
    let form = form_encode(&[
        ("refresh_token", refresh_token),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("grant_type", "refresh_token"),
    ]);
    let mut last = PluginError::unavailable("token endpoint not reached");
    for attempt in 0..TOKEN_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(TOKEN_RETRY_BASE * (1 << (attempt - 1))).await;
        }
        let sent = client
            .post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form.clone())
            .timeout(TOKEN_TIMEOUT)
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
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                last = kit::transport_error(e);
                continue;
            }
        };
        if (200..300).contains(&status) {
            return Grant::parse(&body);
        }
        let msg = refusal(status, &body);
        if status == 408 || status == 429 || status >= 500 {
            last = PluginError::unavailable(msg);
            continue;
        }
        // 400 invalid_grant (revoked or expired refresh token), 401 invalid_client…: final.
        return Err(PluginError::new(ErrorCode::UNAUTHORIZED, msg));
    }
    Err(last)
}

/// Standard base64 (padding optional, whitespace ignored); `None` if malformed.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let trimmed: &[u8] = {
        let mut end = clean.len();
        while end > 0 && clean[end - 1] == b'=' {
            end -= 1;
        }
        &clean[..end]
    };
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_keeps_shape_and_old_refresh_token() {
        let c = Credential::parse(
            r#"{"access_token":"a1","refresh_token":"r1","scope":"s","token_type":"Bearer","id_token":"i","expiry_date":5,"extra":{"k":[1]},"expires_in":3599}"#,
        )
        .expect("object");
        let g = Grant::parse(
            r#"{"access_token":"a2","expires_in":3599,"token_type":"Bearer","scope":"s2"}"#,
        )
        .expect("grant");
        let out: Value = serde_json::from_str(&c.refreshed(&g, 1_000)).expect("json");
        let keys: Vec<&str> = out
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "refresh_token",
                "scope",
                "token_type",
                "id_token",
                "expiry_date",
                "extra"
            ]
        );
        assert_eq!(out["refresh_token"], "r1", "Google keeps the refresh token");
        assert_eq!(out["expiry_date"], 1_000 + 3_599_000);
        assert_eq!(out["scope"], "s2");
        assert_eq!(out["extra"], json!({"k": [1]}));
        let rotated = Grant {
            refresh_token: Some("r2".into()),
            ..g
        };
        let out: Value = serde_json::from_str(&c.refreshed(&rotated, 0)).expect("json");
        assert_eq!(
            out["refresh_token"], "r2",
            "a rotated refresh token is kept"
        );
    }

    #[test]
    fn expiry_and_authorization() {
        let c = Credential::parse(r#"{"access_token":"x","expiry_date":"1767225600000"}"#)
            .expect("object");
        assert_eq!(c.expiry_ms(), 1_767_225_600_000);
        assert_eq!(c.authorization().as_deref(), Some("Bearer x"));
        assert!(c.is_fresh(1_767_225_600_000 - REFRESH_AHEAD_MS - 1));
        assert!(!c.is_fresh(1_767_225_600_000 - REFRESH_AHEAD_MS));
        let none = Credential::parse(r#"{"refresh_token":"r"}"#).expect("object");
        assert_eq!(none.expiry_ms(), 1, "no access token: refresh first");
        assert!(Credential::parse("[1]").is_err());
        assert!(Credential::parse("nope").is_err());
    }

    #[test]
    fn form_and_base64() {
        assert_eq!(form_encode(&[("a b", "c&d=e/é")]), "a+b=c%26d%3De%2F%C3%A9");
        assert_eq!(
            decode_base64("eyJhIjoxfQ==").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(
            decode_base64("eyJhIjoxfQ").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(decode_base64("!!!!"), None);
        assert_eq!(decode_base64("a"), None);
    }

    #[test]
    fn grants_need_an_access_token() {
        assert!(Grant::parse(r#"{"expires_in":1}"#).is_err());
        assert!(Grant::parse("<html>").is_err());
        let g = Grant::parse(r#"{"access_token":"a","expires_in":"60","refresh_token":""}"#)
            .expect("grant");
        assert_eq!(g.expires_in_s, Some(60.0));
        assert_eq!(
            g.refresh_token, None,
            "an empty refresh token is no rotation"
        );
    }
}
