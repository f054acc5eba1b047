//! What a Kiro upstream refusal means for the account (kiro.md §5.1, server-behaviour.md
//! §5.3): the [`AccountAction`] and its deadline for an HTTP status, and for an `exception`
//! frame that arrives before any content.
//!
//! | upstream | action |
//! |---|---|
//! | 400 (and other request faults) | `CLIENT_ERROR`: the client's request, never the account's fault |
//! | 401 | `REFRESH` |
//! | 402 (monthly quota) | `QUOTA` until 00:00 UTC on the 1st of next month |
//! | 403 naming an invalid/expired token | `REFRESH` |
//! | 403 otherwise (suspended, "temporarily is suspended", policy) | `UNHEALTHY` |
//! | 429 | `COOLDOWN` until the retry hint (the host's default cooldown without one) |
//! | 5xx, 529 | `COOLDOWN` for the retry hint or 1 s: switch accounts without counting an error |

use aiclient_provider_kit as kit;
use aiclient_sdk::provider::AccountAction;
use chrono::{Datelike, NaiveDate, TimeZone, Utc};

/// The short pause the original takes before switching after a 429/5xx; used as the cooldown
/// of a 5xx without a retry hint.
pub const SERVER_ERROR_COOLDOWN_MS: i64 = 1000;

/// 00:00 UTC on the first day of the month after `now_ms`.
pub fn first_of_next_month(now_ms: i64) -> i64 {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(now_ms.saturating_add(31 * 86_400_000))
}

/// Whether a 403 body says the bearer token is bad (refreshable) rather than that the account
/// may not be used (suspension, policy, quota).
pub fn refreshable_403(body: &str) -> bool {
    let b = body.to_lowercase();
    let about_token = ["token", "authorization", "authenticate", "credential"]
        .iter()
        .any(|w| b.contains(w));
    let bad = ["expired", "invalid", "unauthorized"]
        .iter()
        .any(|w| b.contains(w));
    let account_problem = [
        "suspended",
        "disabled",
        "terms of service",
        "appeal",
        "quota",
        "limit exceeded",
        "payment required",
        "not authorized to access",
        "not allowed",
    ]
    .iter()
    .any(|w| b.contains(w));
    about_token && bad && !account_problem
}

/// The action and its deadline (ms, 0 = none) for an upstream status.
pub fn classify(status: u16, body: &str, retry_after_ms: i64, now_ms: i64) -> (AccountAction, i64) {
    match status {
        401 => (AccountAction::REFRESH, 0),
        402 => (AccountAction::QUOTA, first_of_next_month(now_ms)),
        403 if refreshable_403(body) => (AccountAction::REFRESH, 0),
        403 => (AccountAction::UNHEALTHY, 0),
        429 => (
            AccountAction::COOLDOWN,
            if retry_after_ms > 0 {
                now_ms.saturating_add(retry_after_ms)
            } else {
                0
            },
        ),
        s if s >= 500 => {
            let wait = if retry_after_ms > 0 {
                retry_after_ms
            } else {
                SERVER_ERROR_COOLDOWN_MS
            };
            (AccountAction::COOLDOWN, now_ms.saturating_add(wait))
        }
        s => (kit::default_action(s), 0),
    }
}

/// The HTTP status standing for an `exception`/`error` frame's type.
pub fn exception_status(kind: &str) -> u16 {
    let k = kind.to_ascii_lowercase();
    if k.contains("throttl") || k.contains("toomanyrequests") {
        429
    } else if k.contains("validation") || k.contains("badrequest") || k.contains("contentlength") {
        400
    } else if k.contains("servicequota") || k.contains("quotaexceeded") {
        402
    } else if k.contains("accessdenied") || k.contains("unauthorized") || k.contains("expiredtoken")
    {
        403
    } else if k.contains("unavailable") {
        503
    } else if k.contains("internalserver") || k.contains("internalfailure") {
        500
    } else {
        502
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiclient_sdk::account::parse_time_exact;

    fn ms(s: &str) -> i64 {
        parse_time_exact(s).expect("an exact ISO time")
    }

    #[test]
    fn quota_recovers_on_the_first_of_next_month() {
        assert_eq!(
            first_of_next_month(ms("2026-05-30T04:00:00.000Z")),
            ms("2026-06-01T00:00:00.000Z")
        );
        assert_eq!(
            first_of_next_month(ms("2026-12-31T23:59:59.999Z")),
            ms("2027-01-01T00:00:00.000Z")
        );
        assert_eq!(
            first_of_next_month(ms("2026-01-01T00:00:00.000Z")),
            ms("2026-02-01T00:00:00.000Z")
        );
        let (a, until) = classify(
            402,
            r#"{"message":"x","reason":"MONTHLY_REQUEST_COUNT"}"#,
            0,
            ms("2026-02-10T12:00:00.000Z"),
        );
        assert_eq!(
            (a, until),
            (AccountAction::QUOTA, ms("2026-03-01T00:00:00.000Z"))
        );
    }

    #[test]
    fn forbidden_is_refresh_only_for_token_problems() {
        let invalid =
            r#"{"message":"The bearer token included in the request is invalid.","reason":null}"#;
        assert_eq!(classify(403, invalid, 0, 0).0, AccountAction::REFRESH);
        let suspended = r#"{"message":"Your User ID temporarily is suspended.","reason":null}"#;
        assert_eq!(classify(403, suspended, 0, 0).0, AccountAction::UNHEALTHY);
        let suspended_token = "The token is invalid because the account is suspended";
        assert_eq!(
            classify(403, suspended_token, 0, 0).0,
            AccountAction::UNHEALTHY
        );
        assert_eq!(classify(403, "", 0, 0).0, AccountAction::UNHEALTHY);
        assert_eq!(classify(401, "", 0, 0).0, AccountAction::REFRESH);
    }

    #[test]
    fn rate_limits_and_server_errors_cool_down_without_counting() {
        assert_eq!(classify(429, "", 2000, 10), (AccountAction::COOLDOWN, 2010));
        assert_eq!(
            classify(429, "", 0, 10),
            (AccountAction::COOLDOWN, 0),
            "the host's default cooldown"
        );
        assert_eq!(
            classify(500, "", 0, 10),
            (AccountAction::COOLDOWN, 10 + SERVER_ERROR_COOLDOWN_MS)
        );
        assert_eq!(classify(529, "", 5000, 10), (AccountAction::COOLDOWN, 5010));
        assert_eq!(
            classify(400, "Input is too long.", 0, 0).0,
            AccountAction::CLIENT_ERROR
        );
    }

    #[test]
    fn exception_types() {
        assert_eq!(exception_status("ThrottlingException"), 429);
        assert_eq!(exception_status("ValidationException"), 400);
        assert_eq!(exception_status("InternalServerException"), 500);
        assert_eq!(exception_status("SomethingNew"), 502);
    }
}
