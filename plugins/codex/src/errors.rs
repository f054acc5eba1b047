//! What an upstream failure means (codex.md §5): HTTP statuses and in-stream `error` /
//! `response.failed` events → the reply's status, a readable body and the [`AccountAction`].
//!
//! | upstream | action |
//! |---|---|
//! | 400, 404, 413, 422 (`detail` bodies: store, unsupported parameter, model not allowed) | `CLIENT_ERROR` |
//! | 401 | `REFRESH` (the host refreshes once and retries this account) |
//! | 403 (account or region blocked) | `NONE`: counted by the host, request switches |
//! | 429 `usage_limit_reached` with a reset time | `QUOTA` until `resets_at` (or now + `resets_in_seconds`) |
//! | other 429 | `COOLDOWN` until the hint: `resets_at`/`resets_in_seconds`, `Retry-After`, or the exhausted `x-codex-*-reset-after-seconds` window |
//! | 5xx | `NONE` |
//! | in-stream `insufficient_quota` / `usage_limit_reached` | 429 `QUOTA` |
//! | in-stream rate limit | 429 `COOLDOWN` (hint read from "try again in Ns") |
//! | in-stream invalid request / context length | 400 `CLIENT_ERROR` |
//! | other in-stream errors, `response.failed` | 500 `NONE` |
//!
//! Improvements over the original, which reads none of these hints and treats usage limits as
//! ordinary errors: the reset time of a usage limit becomes the scheduled recovery, and the
//! backend's `{"detail": "…"}` bodies get an `error.message` so clients see the reason.

use aiclient_provider_kit as kit;
use aiclient_sdk::provider::{AccountAction, Reply};
use serde_json::{Value, json};

/// A non-2xx HTTP answer.
pub fn http_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    now: i64,
) -> Reply {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let body_out = match parsed.clone() {
        Some(Value::Object(mut o)) if !o.contains_key("error") => {
            if let Some(d) = o.get("detail").and_then(Value::as_str).map(str::to_string) {
                o.insert(
                    "error".into(),
                    json!({"message": d, "type": error_type(status), "code": Value::Null}),
                );
            }
            Value::Object(o).to_string()
        }
        _ => body.to_string(),
    };
    let mut r = Reply::status(status, body_out);
    let hint = kit::retry_after_ms(headers);
    r.retry_after_ms = hint;
    r.action = match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => AccountAction::CLIENT_ERROR,
        401 => AccountAction::REFRESH,
        _ => AccountAction::NONE,
    };
    if status == 429 {
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        let kind = err
            .and_then(|e| e.get("type").or_else(|| e.get("code")))
            .and_then(Value::as_str)
            .unwrap_or("");
        let until = err
            .and_then(|e| reset_from_body(e, now))
            .or_else(|| (hint > 0).then_some(now + hint))
            .or_else(|| reset_from_codex_headers(headers, now));
        let quota = matches!(kind, "usage_limit_reached" | "insufficient_quota");
        r.action = if quota && until.is_some() {
            AccountAction::QUOTA
        } else {
            AccountAction::COOLDOWN
        };
        if let Some(u) = until {
            r.action_until = u;
            r.retry_after_ms = (u - now).max(0);
        }
    }
    r
}

fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
}

/// `resets_at` (unix s) or `resets_in_seconds` of a usage-limit error.
fn reset_from_body(e: &Value, now: i64) -> Option<i64> {
    if let Some(at) = num(e.get("resets_at")).filter(|t| *t > 0.0) {
        let ms = if at < 1e11 { at * 1000.0 } else { at } as i64;
        if ms > now {
            return Some(ms);
        }
    }
    num(e.get("resets_in_seconds")).map(|s| now + (s * 1000.0) as i64)
}

/// The latest reset among the `x-codex-primary-*` / `x-codex-secondary-*` windows that are
/// used up (≥ 100 %).
fn reset_from_codex_headers(h: &reqwest::header::HeaderMap, now: i64) -> Option<i64> {
    let get = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    ["primary", "secondary"]
        .iter()
        .filter(|w| get(&format!("x-codex-{w}-used-percent")).is_some_and(|p| p >= 100.0))
        .filter_map(|w| get(&format!("x-codex-{w}-reset-after-seconds")))
        .map(|s| now + (s * 1000.0) as i64)
        .max()
}

/// "… try again in 1.5s" / "… in 250ms" → ms.
fn hint_from_message(msg: &str) -> Option<i64> {
    let lower = msg.to_ascii_lowercase();
    let at = lower.find("try again in ")? + "try again in ".len();
    let rest = &lower[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let n: f64 = rest[..end].parse().ok()?;
    let unit = rest[end..].trim_start();
    let ms = if unit.starts_with("ms") {
        n
    } else if unit.starts_with('s') {
        n * 1000.0
    } else {
        return None;
    };
    Some(ms as i64)
}

/// An in-stream failure (`error` event in either shape, or `response.failed`) as a reply,
/// for when nothing has reached the client yet.
pub fn stream_error(data: &Value, now: i64) -> Reply {
    let failed = data.get("type").and_then(Value::as_str) == Some("response.failed");
    let e = if failed {
        data.pointer("/response/error")
            .cloned()
            .unwrap_or(Value::Null)
    } else {
        match data.get("error") {
            Some(inner @ Value::Object(_)) => inner.clone(),
            _ => data.clone(),
        }
    };
    let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (code, ty) = (field("code"), field("type"));
    let message = match field("message") {
        m if m.is_empty() && failed => "the upstream response failed".to_string(),
        m if m.is_empty() => "upstream stream error".to_string(),
        m => m,
    };
    let kinds = [code.as_str(), ty.as_str()];
    let has = |names: &[&str]| kinds.iter().any(|k| names.contains(k));
    let (status, action, until) = if has(&["insufficient_quota", "usage_limit_reached"]) {
        (429, AccountAction::QUOTA, reset_from_body(&e, now))
    } else if has(&["rate_limit_exceeded", "rate_limit_error", "rate_limited"]) {
        let until =
            reset_from_body(&e, now).or_else(|| hint_from_message(&message).map(|h| now + h));
        (429, AccountAction::COOLDOWN, until)
    } else if has(&[
        "invalid_request_error",
        "context_length_exceeded",
        "invalid_prompt",
        "bad_request",
    ]) {
        (400, AccountAction::CLIENT_ERROR, None)
    } else if has(&["token_expired", "invalid_api_key", "authentication_error"]) {
        (401, AccountAction::REFRESH, None)
    } else {
        (500, AccountAction::NONE, None)
    };
    let body = json!({"error": {
        "message": message,
        "type": if ty.is_empty() { error_type(status).to_string() } else { ty },
        "code": if code.is_empty() { Value::Null } else { json!(code) },
    }});
    let mut r = Reply::status(status, body.to_string());
    r.action = action;
    if let Some(u) = until {
        r.action_until = u;
        r.retry_after_ms = (u - now).max(0);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn statuses_map_to_actions() {
        let h = HeaderMap::new();
        let r = http_error(400, &h, r#"{"detail":"Store must be set to false"}"#, NOW);
        assert_eq!(r.action, AccountAction::CLIENT_ERROR);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "Store must be set to false");
        assert_eq!(
            v["detail"], "Store must be set to false",
            "the original field is kept"
        );
        assert_eq!(http_error(401, &h, "", NOW).action, AccountAction::REFRESH);
        assert_eq!(
            http_error(403, &h, "<html>", NOW).action,
            AccountAction::NONE
        );
        assert_eq!(http_error(502, &h, "", NOW).action, AccountAction::NONE);
    }

    #[test]
    fn usage_limits_are_quota_until_the_reset() {
        let h = HeaderMap::new();
        let body = json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                     "plan_type": "plus", "resets_at": NOW / 1000 + 7200, "resets_in_seconds": 7200}});
        let r = http_error(429, &h, &body.to_string(), NOW);
        assert_eq!(r.action, AccountAction::QUOTA);
        assert_eq!(r.action_until, NOW + 7_200_000);
        assert_eq!(r.retry_after_ms, 7_200_000);
        let body = json!({"error": {"type": "usage_limit_reached", "resets_in_seconds": 90}});
        let r = http_error(429, &h, &body.to_string(), NOW);
        assert_eq!(
            (r.action, r.action_until),
            (AccountAction::QUOTA, NOW + 90_000)
        );
    }

    #[test]
    fn rate_limits_cool_down_with_the_best_hint() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "12".parse().unwrap());
        let r = http_error(429, &h, r#"{"error":{"type":"rate_limit_exceeded"}}"#, NOW);
        assert_eq!(
            (r.action, r.action_until),
            (AccountAction::COOLDOWN, NOW + 12_000)
        );
        let mut h = HeaderMap::new();
        h.insert("x-codex-primary-used-percent", "100".parse().unwrap());
        h.insert(
            "x-codex-primary-reset-after-seconds",
            "300".parse().unwrap(),
        );
        h.insert("x-codex-secondary-used-percent", "40".parse().unwrap());
        h.insert(
            "x-codex-secondary-reset-after-seconds",
            "9000".parse().unwrap(),
        );
        let r = http_error(429, &h, "not json", NOW);
        assert_eq!(
            (r.action, r.action_until),
            (AccountAction::COOLDOWN, NOW + 300_000)
        );
        let r = http_error(429, &HeaderMap::new(), "", NOW);
        assert_eq!((r.action, r.action_until), (AccountAction::COOLDOWN, 0));
    }

    #[test]
    fn stream_errors_in_both_shapes() {
        let flat = json!({"type": "error", "code": "context_length_exceeded", "message": "too long", "param": null});
        let r = stream_error(&flat, NOW);
        assert_eq!((r.status, r.action), (400, AccountAction::CLIENT_ERROR));
        let nested = json!({"type": "error", "error": {"type": "insufficient_quota", "message": "no quota"}});
        let r = stream_error(&nested, NOW);
        assert_eq!((r.status, r.action), (429, AccountAction::QUOTA));
        let rl = json!({"type": "error", "error": {"code": "rate_limit_exceeded", "message": "Please try again in 1.5s."}});
        let r = stream_error(&rl, NOW);
        assert_eq!(
            (r.status, r.action, r.action_until),
            (429, AccountAction::COOLDOWN, NOW + 1500)
        );
        let failed = json!({"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}}});
        let r = stream_error(&failed, NOW);
        assert_eq!((r.status, r.action), (500, AccountAction::NONE));
        assert!(r.body.contains("boom"));
        let odd = json!({"type": "error"});
        assert_eq!(stream_error(&odd, NOW).status, 500);
    }
}
