//! What a Qwen upstream refusal means for the account (qwen.md §5): the status the host
//! sees, the [`AccountAction`], its deadline and the retry hint.
//!
//! | upstream | reported |
//! |---|---|
//! | 403 or 429 whose body is a quota error (`insufficient_quota`, `quota_exceeded`, "free allocated quota exceeded", …) | 429, `QUOTA` until the next 00:00 Beijing time (UTC+8), retry hint to then |
//! | 401, 403 | `REFRESH` |
//! | other 4xx (not 429) whose message names a refused credential (unauthorized, invalid access token, token expired, …) | `REFRESH` |
//! | 429 | `COOLDOWN` until the retry hint (`Retry-After`, `retry-after-ms`, body `retryDelay` / `retry_after`), the host's default without one |
//! | other 4xx | the kit's default (400 → `CLIENT_ERROR`: never the account's fault) |
//! | 5xx | `NONE`: counted against the account, the request moves on |

use aiclient_provider_kit as kit;
use aiclient_sdk::provider::{AccountAction, Reply};
use chrono::{Duration, FixedOffset, TimeZone, Utc};
use serde_json::Value;

const QUOTA_CODES: [&str; 2] = ["insufficient_quota", "quota_exceeded"];
const QUOTA_PHRASES: [&str; 3] = [
    "insufficient_quota",
    "quota exceeded",
    "free allocated quota exceeded",
];
const AUTH_PHRASES: [&str; 7] = [
    "unauthorized",
    "forbidden",
    "invalid api key",
    "invalid access token",
    "token expired",
    "authentication",
    "access denied",
];

pub use aiclient_provider_kit::error_message as message_of;

/// Whether an error body is a quota error.
pub fn is_quota(body: &str) -> bool {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let field = |k: &str| {
            v.get("error")
                .and_then(|e| e.get(k))
                .or_else(|| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        if ["code", "type"]
            .iter()
            .filter_map(|k| field(k))
            .any(|c| QUOTA_CODES.contains(&c.as_str()))
        {
            return true;
        }
        if let Some(m) = message_of(&v) {
            let m = m.to_ascii_lowercase();
            return QUOTA_PHRASES.iter().any(|p| m.contains(p));
        }
    }
    let b = body.to_ascii_lowercase();
    QUOTA_PHRASES.iter().any(|p| b.contains(p))
}

/// Whether an error body says the credential was refused.
pub fn names_refused_credential(body: &str) -> bool {
    let text = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| message_of(&v))
        .unwrap_or_else(|| body.to_string())
        .to_ascii_lowercase();
    AUTH_PHRASES.iter().any(|p| text.contains(p))
}

/// 00:00 Beijing time (UTC+8) after `now_ms`, when Qwen's free daily quota resets.
pub fn next_beijing_midnight(now_ms: i64) -> i64 {
    let Some(tz) = FixedOffset::east_opt(8 * 3600) else {
        return now_ms + 86_400_000;
    };
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(Utc::now)
        .with_timezone(&tz);
    (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).single())
        .map(|t| t.timestamp_millis())
        .unwrap_or(now_ms + 86_400_000)
}

/// A retry hint inside an error body: `retryDelay` ("30s", "1.5s" or seconds), `retry_after`
/// (seconds), at the top level or inside `error` / `error.details[]`; ms, 0 if none.
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

/// The reply for an upstream error: `status`, `body`, the header hint (ms) and the time now.
pub fn refusal(status: u16, body: String, header_hint_ms: i64, now_ms: i64) -> Reply {
    let hint = if header_hint_ms > 0 {
        header_hint_ms
    } else {
        body_retry_hint(&body)
    };
    if matches!(status, 403 | 429) && is_quota(&body) {
        let until = next_beijing_midnight(now_ms);
        let mut r = Reply::status(429, body);
        r.action = AccountAction::QUOTA;
        r.action_until = until;
        r.retry_after_ms = until - now_ms;
        return r;
    }
    let mut r = Reply::status(status, body);
    r.retry_after_ms = hint;
    r.action = match status {
        401 | 403 => AccountAction::REFRESH,
        429 => AccountAction::COOLDOWN,
        400..=499 if names_refused_credential(&r.body) => AccountAction::REFRESH,
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

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z = 08:00 in Beijing

    #[test]
    fn quota_errors_wait_for_beijing_midnight() {
        let body = r#"{"error":{"message":"Free allocated quota exceeded.","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let r = refusal(403, body.into(), 0, NOW);
        assert_eq!(r.status, 429);
        assert_eq!(r.action, AccountAction::QUOTA);
        // Next 00:00 +08:00 is 2026-01-01T16:00:00Z.
        assert_eq!(r.action_until, NOW + 16 * 3_600_000);
        assert_eq!(r.retry_after_ms, 16 * 3_600_000);
        assert!(is_quota(
            r#"{"error":{"message":"quota exceeded for today"}}"#
        ));
        assert!(!is_quota(r#"{"error":{"message":"slow down"}}"#));
    }

    #[test]
    fn statuses_map_to_actions() {
        assert_eq!(
            refusal(401, "{}".into(), 0, NOW).action,
            AccountAction::REFRESH
        );
        assert_eq!(
            refusal(403, r#"{"error":{"message":"nope"}}"#.into(), 0, NOW).action,
            AccountAction::REFRESH
        );
        assert_eq!(
            refusal(
                400,
                r#"{"error":{"message":"Invalid access token"}}"#.into(),
                0,
                NOW
            )
            .action,
            AccountAction::REFRESH
        );
        assert_eq!(
            refusal(
                400,
                r#"{"error":{"message":"bad messages"}}"#.into(),
                0,
                NOW
            )
            .action,
            AccountAction::CLIENT_ERROR
        );
        let r = refusal(429, "{}".into(), 5000, NOW);
        assert_eq!(
            (r.action, r.action_until, r.retry_after_ms),
            (AccountAction::COOLDOWN, NOW + 5000, 5000)
        );
        let r = refusal(429, r#"{"error":{"retryDelay":"7s"}}"#.into(), 0, NOW);
        assert_eq!(r.action_until, NOW + 7000);
        let r = refusal(429, "{}".into(), 0, NOW);
        assert_eq!((r.action, r.action_until), (AccountAction::COOLDOWN, 0));
        assert_eq!(
            refusal(503, "oops".into(), 0, NOW).action,
            AccountAction::NONE
        );
    }
}
