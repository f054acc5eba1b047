//! Code Assist error answers → facts for the host: what the status means for the account
//! ([`AccountAction`]) and the retry hint.
//!
//! | status | action | why |
//! |---|---|---|
//! | 400 about credentials (`UNAUTHENTICATED`, `ACCESS_TOKEN_*`, `CREDENTIALS_MISSING`, …) | REFRESH | the original refreshes on every Gemini 400/401; only these 400s are about the token |
//! | other 400, 404, 405, 409, 413, 415, 422 | CLIENT_ERROR | the request was wrong: the account is not penalised |
//! | 401 | REFRESH | refused token: refresh, then retry |
//! | 403 | NONE | counted as an account error (unhealthy after `MAX_ERROR_COUNT`), as in the original |
//! | 429 | COOLDOWN | until the hint (`Retry-After`, `retryDelay`, `quotaResetDelay`, "after N s") or the host's default |
//! | 5xx, others | NONE | counted; the host switches accounts |
//!
//! Google wraps the error object in a JSON array on streaming calls (`[{"error": …}]`); both
//! forms are read.

use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{AccountAction, Reply};
use serde_json::Value;

/// The `error` object of a Google error body (plain or wrapped in an array).
pub fn google_error(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(o) => o.get("error").filter(|e| e.is_object()),
        Value::Array(a) => a.first().and_then(google_error),
        _ => None,
    }
}

fn parse_body(body: &str) -> Option<Value> {
    serde_json::from_str(body.trim()).ok()
}

/// Reasons (`ErrorInfo.reason`) and statuses that say the credential, not the request, is bad.
const AUTH_REASONS: [&str; 6] = [
    "ACCESS_TOKEN_EXPIRED",
    "ACCESS_TOKEN_TYPE_UNSUPPORTED",
    "ACCESS_TOKEN_INVALID",
    "CREDENTIALS_MISSING",
    "API_KEY_INVALID",
    "SERVICE_DISABLED_FOR_TOKEN",
];

/// Whether a 400 is about the credential (so a refresh may cure it).
pub fn is_auth_error(body: &str) -> bool {
    let Some(v) = parse_body(body) else {
        return false;
    };
    let Some(e) = google_error(&v) else {
        // OAuth-style bodies: {"error": "invalid_grant", …}.
        return matches!(
            v.get("error").and_then(Value::as_str),
            Some("invalid_grant" | "invalid_token")
        );
    };
    if e.get("status").and_then(Value::as_str) == Some("UNAUTHENTICATED") {
        return true;
    }
    let reasons = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("reason").and_then(Value::as_str));
    if reasons.into_iter().any(|r| AUTH_REASONS.contains(&r)) {
        return true;
    }
    let msg = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    msg.contains("invalid authentication credentials")
        || (msg.contains("access token") && (msg.contains("expired") || msg.contains("invalid")))
}

/// What an upstream status means for the account.
pub fn action_for(status: u16, body: &str) -> AccountAction {
    match status {
        400 if is_auth_error(body) => AccountAction::REFRESH,
        400 | 404 | 405 | 409 | 413 | 415 | 422 => AccountAction::CLIENT_ERROR,
        401 => AccountAction::REFRESH,
        429 => AccountAction::COOLDOWN,
        _ => AccountAction::NONE,
    }
}

/// A duration as Google and friends write it: a number of seconds, `"30s"`, `"1.5s"`,
/// `"250ms"`, or a Go duration such as `"3h2m1.5s"`. Milliseconds, `None` if unparseable.
pub fn parse_duration_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|s| (s * 1000.0) as i64),
        Value::String(s) => parse_duration_str(s),
        _ => None,
    }
}

fn parse_duration_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as i64);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// "… retry after 12s", "Please retry in 3.5s", "reset after 1m": the number and unit
/// following `after ` or `retry in `.
fn hint_in_message(msg: &str) -> Option<i64> {
    let lower = msg.to_ascii_lowercase();
    for marker in ["after ", "retry in "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            let tail = &lower[start..];
            let num_len = tail
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(tail.len());
            if num_len > 0 {
                let n: f64 = tail[..num_len].parse().unwrap_or(-1.0);
                let unit = tail[num_len..].trim_start();
                let factor = if unit.starts_with("ms") || unit.starts_with("millisecond") {
                    Some(1.0)
                } else if unit.starts_with('s') {
                    Some(1000.0)
                } else if unit.starts_with("min") || unit.starts_with("m ") || unit == "m" {
                    Some(60_000.0)
                } else if unit.starts_with('h') {
                    Some(3_600_000.0)
                } else {
                    None
                };
                if let Some(f) = factor
                    && n >= 0.0
                {
                    return Some((n * f) as i64);
                }
            }
            from = start;
        }
    }
    None
}

/// The retry hint of an error answer, in ms (0 if none), from the first source that has one:
/// the `Retry-After` header (`header_ms`), body `retryAfter`/`retry_after` (seconds),
/// `retryDelay`/`retry_delay`, `retryAfterMs`, the error's `details[].retryDelay` or
/// `details[].metadata.quotaResetDelay`, and finally "after N s" in the error message.
pub fn retry_hint_ms(header_ms: i64, body: &str) -> i64 {
    if header_ms > 0 {
        return header_ms;
    }
    let Some(v) = parse_body(body) else { return 0 };
    let top = match &v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        other => other,
    };
    let err = google_error(&v);
    let scopes = [Some(top), err];
    for scope in scopes.into_iter().flatten() {
        for k in ["retryAfter", "retry_after", "retryDelay", "retry_delay"] {
            if let Some(ms) = scope.get(k).and_then(parse_duration_ms) {
                return ms;
            }
        }
        if let Some(ms) = scope.get("retryAfterMs").and_then(Value::as_f64) {
            return ms.max(0.0) as i64;
        }
    }
    if let Some(e) = err {
        for d in e
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let found = d
                .get("retryDelay")
                .or_else(|| d.pointer("/metadata/quotaResetDelay"))
                .and_then(parse_duration_ms);
            if let Some(ms) = found {
                return ms;
            }
        }
        if let Some(ms) = e
            .get("message")
            .and_then(Value::as_str)
            .and_then(hint_in_message)
        {
            return ms;
        }
    }
    0
}

/// The reply for an upstream error answer.
pub fn error_reply(status: u16, body: String, header_ms: i64) -> Reply {
    let action = action_for(status, &body);
    let hint = retry_hint_ms(header_ms, &body);
    let mut r = Reply::status(status, body);
    r.action = action;
    r.retry_after_ms = hint;
    if action == AccountAction::COOLDOWN && hint > 0 {
        r.action_until = now_ms() + hint;
    }
    r
}

/// A Google-style error body (for errors the plugin itself reports as an upstream status).
pub fn google_error_body(code: u16, status: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "status": status}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rate_limited(details: Value) -> String {
        json!({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED", "details": details}}).to_string()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms(&json!("30s")), Some(30_000));
        assert_eq!(parse_duration_ms(&json!("1.5s")), Some(1_500));
        assert_eq!(parse_duration_ms(&json!("250ms")), Some(250));
        assert_eq!(
            parse_duration_ms(&json!("3h2m1.5s")),
            Some(3 * 3_600_000 + 2 * 60_000 + 1_500)
        );
        assert_eq!(parse_duration_ms(&json!(2)), Some(2_000));
        assert_eq!(parse_duration_ms(&json!("soon")), None);
        assert_eq!(parse_duration_ms(&json!("5x")), None);
        assert_eq!(parse_duration_ms(&json!(-1)), None);
    }

    #[test]
    fn hints_in_order() {
        assert_eq!(
            retry_hint_ms(7_000, &rate_limited(json!([{"retryDelay": "30s"}]))),
            7_000,
            "the header wins"
        );
        let body = rate_limited(json!([
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
        ]));
        assert_eq!(retry_hint_ms(0, &body), 30_000);
        let arr = format!("[{body}]");
        assert_eq!(
            retry_hint_ms(0, &arr),
            30_000,
            "streaming calls wrap the error in an array"
        );
        let quota = rate_limited(json!([{"metadata": {"quotaResetDelay": "1m0.5s"}}]));
        assert_eq!(retry_hint_ms(0, &quota), 60_500);
        assert_eq!(retry_hint_ms(0, r#"{"retryAfter": 3}"#), 3_000);
        assert_eq!(retry_hint_ms(0, r#"{"retryAfterMs": 1234}"#), 1_234);
        let msg =
            json!({"error": {"code": 429, "message": "Quota exceeded; please retry after 12 s."}})
                .to_string();
        assert_eq!(retry_hint_ms(0, &msg), 12_000);
        let msg = json!({"error": {"code": 429, "message": "Please retry in 3.5s"}}).to_string();
        assert_eq!(retry_hint_ms(0, &msg), 3_500);
        assert_eq!(retry_hint_ms(0, &rate_limited(json!([]))), 0);
        assert_eq!(retry_hint_ms(0, "<html>"), 0);
    }

    #[test]
    fn statuses() {
        let invalid = json!({"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}).to_string();
        assert_eq!(action_for(400, &invalid), AccountAction::CLIENT_ERROR);
        let auth = json!({"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT", "details": [{"reason": "ACCESS_TOKEN_EXPIRED"}]}}).to_string();
        assert_eq!(action_for(400, &auth), AccountAction::REFRESH);
        let unauth = json!([{"error": {"code": 400, "message": "x", "status": "UNAUTHENTICATED"}}])
            .to_string();
        assert_eq!(action_for(400, &unauth), AccountAction::REFRESH);
        assert_eq!(action_for(401, ""), AccountAction::REFRESH);
        assert_eq!(action_for(403, ""), AccountAction::NONE);
        assert_eq!(action_for(429, ""), AccountAction::COOLDOWN);
        assert_eq!(action_for(404, ""), AccountAction::CLIENT_ERROR);
        assert_eq!(action_for(503, ""), AccountAction::NONE);
        let r = error_reply(429, rate_limited(json!([{"retryDelay": "2s"}])), 0);
        assert_eq!(r.retry_after_ms, 2_000);
        assert!(r.action_until > now_ms());
    }
}
