//! What an iFlow upstream refusal means for the account (iflow.md §5).
//!
//! | upstream | action |
//! |---|---|
//! | 401 | `REFRESH`: fetch a new API key, retry |
//! | 400 naming a refused credential (API key, signature, token, authentication) | `REFRESH` (the original treats every 400 as an auth failure; one that is the request's own fault is not the account's) |
//! | other 400 | `CLIENT_ERROR` |
//! | 403 ("API key may be invalid") | `NONE`: no refresh, counted against the account |
//! | 429 | `COOLDOWN` until the retry hint (`Retry-After`, `retry-after-ms`, body `retryDelay` / `retry_after`), the host's default without one |
//! | 5xx | `NONE`: counted, the request moves on |
//! | other 4xx | the kit's default |

use aiclient_provider_kit as kit;
use aiclient_sdk::provider::{AccountAction, Reply};
use serde_json::Value;

const CREDENTIAL_PHRASES: [&str; 10] = [
    "api key",
    "api_key",
    "apikey",
    "unauthorized",
    "authenticat",
    "signature",
    "access token",
    "invalid token",
    "token expired",
    "token has expired",
];

pub use aiclient_provider_kit::error_message as message_of;

/// Whether an error body says the credential was refused.
pub fn names_refused_credential(body: &str) -> bool {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let mut t = message_of(&v).unwrap_or_default();
            for k in ["code", "type"] {
                if let Some(c) = v
                    .get("error")
                    .and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                {
                    t.push(' ');
                    t.push_str(&c.replace('_', " "));
                }
            }
            t
        }
        Err(_) => body.to_string(),
    }
    .to_ascii_lowercase();
    CREDENTIAL_PHRASES.iter().any(|p| text.contains(p))
}

/// A retry hint inside an error body (`retryDelay` "30s", `retry_after` seconds, …), in ms.
pub fn body_retry_hint(body: &str) -> i64 {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return 0;
    };
    fn secs(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().trim_end_matches('s').trim().parse().ok(),
            _ => None,
        }
    }
    let mut places = vec![&v];
    if let Some(e) = v.get("error") {
        places.push(e);
        if let Some(Value::Array(d)) = e.get("details") {
            places.extend(d.iter());
        }
    }
    places
        .into_iter()
        .find_map(|p| {
            ["retryDelay", "retry_delay", "retry_after", "retryAfter"]
                .iter()
                .find_map(|k| p.get(*k).and_then(secs))
        })
        .map(|s| (s.max(0.0) * 1000.0) as i64)
        .unwrap_or(0)
}

/// The reply for an upstream error.
pub fn refusal(status: u16, body: String, header_hint_ms: i64, now_ms: i64) -> Reply {
    let hint = if header_hint_ms > 0 {
        header_hint_ms
    } else {
        body_retry_hint(&body)
    };
    let mut r = Reply::status(status, body);
    r.retry_after_ms = hint;
    r.action = match status {
        401 => AccountAction::REFRESH,
        400 if names_refused_credential(&r.body) => AccountAction::REFRESH,
        400 => AccountAction::CLIENT_ERROR,
        403 => AccountAction::NONE,
        429 => AccountAction::COOLDOWN,
        s => kit::default_action(s),
    };
    if r.action == AccountAction::COOLDOWN && hint > 0 {
        r.action_until = now_ms + hint;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_actions() {
        let a = |s: u16, b: &str| refusal(s, b.into(), 0, 0).action;
        assert_eq!(a(401, "{}"), AccountAction::REFRESH);
        assert_eq!(
            a(400, r#"{"error":{"message":"Invalid API key provided"}}"#),
            AccountAction::REFRESH
        );
        assert_eq!(
            a(400, r#"{"error":{"message":"x","code":"invalid_api_key"}}"#),
            AccountAction::REFRESH
        );
        assert_eq!(
            a(400, r#"{"error":{"message":"messages must not be empty"}}"#),
            AccountAction::CLIENT_ERROR
        );
        assert_eq!(a(403, "{}"), AccountAction::NONE);
        assert_eq!(a(500, "{}"), AccountAction::NONE);
        let r = refusal(429, r#"{"error":{"retry_after":3}}"#.into(), 0, 10);
        assert_eq!(
            (r.action, r.action_until, r.retry_after_ms),
            (AccountAction::COOLDOWN, 3010, 3000)
        );
        let r = refusal(429, "{}".into(), 0, 10);
        assert_eq!((r.action, r.action_until), (AccountAction::COOLDOWN, 0));
    }
}
