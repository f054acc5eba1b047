//! The original files' account JSON ⇄ [`Account`] (config + state), losslessly.
//!
//! `provider_pools.json` holds each account as one flat object mixing configuration
//! (`uuid`, credential paths, `customName`, unknown fields …) with runtime state (`usageCount`,
//! `isHealthy`, `lastUsed` …). [`split_account`] lifts the state fields into [`AccountState`]
//! and leaves everything else in the config object, verbatim and in order; [`merge_account`]
//! puts them back. A state field is lifted only if writing it back reproduces it exactly (an
//! ISO time the original wrote, an integer count); anything else stays in the config as it
//! was, so a round trip never changes a byte of meaning.

use abi_stable::std_types::{ROption, RString};
use serde_json::{Map, Value};

use crate::storage::{Account, AccountState, field};

/// JSON names of the state fields, with their [`field`] bits.
pub const STATE_FIELDS: [(&str, u32); 12] = [
    ("usageCount", field::USAGE_COUNT),
    ("errorCount", field::ERROR_COUNT),
    ("refreshCount", field::REFRESH_COUNT),
    ("isHealthy", field::IS_HEALTHY),
    ("isDisabled", field::IS_DISABLED),
    ("needsRefresh", field::NEEDS_REFRESH),
    ("lastUsed", field::LAST_USED),
    ("lastErrorTime", field::LAST_ERROR_TIME),
    ("lastErrorMessage", field::LAST_ERROR_MESSAGE),
    ("scheduledRecoveryTime", field::SCHEDULED_RECOVERY_TIME),
    ("lastHealthCheckTime", field::LAST_HEALTH_CHECK_TIME),
    ("lastHealthCheckModel", field::LAST_HEALTH_CHECK_MODEL),
];

/// Milliseconds → the ISO form JavaScript's `toISOString()` writes (`2025-01-02T03:04:05.678Z`).
pub fn format_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// The ISO form → milliseconds, only if [`format_time`] gives the same text back.
pub fn parse_time_exact(s: &str) -> Option<i64> {
    let ms = chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_millis();
    (format_time(ms) == s).then_some(ms)
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Splits one account object of `provider_pools.json` into config and state. `uuid` stays in
/// the config too (it is part of the original object's field order).
pub fn split_account(provider_type: &str, mut obj: Map<String, Value>) -> Result<Account, String> {
    let uuid = match obj.get("uuid") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(format!(
                "account uuid must be a non-empty string, got {other}"
            ));
        }
        None => return Err("account has no uuid".to_string()),
    };
    let mut st = AccountState {
        present: 0,
        ..AccountState::default()
    };
    for (name, bit) in STATE_FIELDS {
        let Some(v) = obj.get(name) else { continue };
        if lift(&mut st, bit, v) {
            st.present |= bit;
            obj.shift_remove(name);
        }
    }
    Ok(Account {
        provider_type: provider_type.into(),
        uuid: uuid.into(),
        config: Value::Object(obj).to_string().into(),
        state: st,
    })
}

fn lift(st: &mut AccountState, bit: u32, v: &Value) -> bool {
    let int = || v.as_i64().filter(|_| v.is_i64() || v.is_u64());
    let time = || match v {
        Value::Null => Some(ROption::RNone),
        Value::String(s) => parse_time_exact(s).map(ROption::RSome),
        _ => None,
    };
    let text = || match v {
        Value::Null => Some(ROption::RNone),
        Value::String(s) => Some(ROption::RSome(RString::from(s.as_str()))),
        _ => None,
    };
    match bit {
        field::USAGE_COUNT => int().map(|n| st.usage_count = n).is_some(),
        field::ERROR_COUNT => int().map(|n| st.error_count = n).is_some(),
        field::REFRESH_COUNT => int().map(|n| st.refresh_count = n).is_some(),
        field::IS_HEALTHY => v.as_bool().map(|b| st.healthy = b).is_some(),
        field::IS_DISABLED => v.as_bool().map(|b| st.disabled = b).is_some(),
        field::NEEDS_REFRESH => v.as_bool().map(|b| st.needs_refresh = b).is_some(),
        field::LAST_USED => time().map(|t| st.last_used = t).is_some(),
        field::LAST_ERROR_TIME => time().map(|t| st.last_error_time = t).is_some(),
        field::LAST_ERROR_MESSAGE => text().map(|t| st.last_error_message = t).is_some(),
        field::SCHEDULED_RECOVERY_TIME => time().map(|t| st.scheduled_recovery_time = t).is_some(),
        field::LAST_HEALTH_CHECK_TIME => time().map(|t| st.last_health_check_time = t).is_some(),
        field::LAST_HEALTH_CHECK_MODEL => text().map(|t| st.last_health_check_model = t).is_some(),
        _ => false,
    }
}

/// The account as one flat JSON object in the original shape: the config's fields in their
/// order, then the state fields that are present (a state field overrides a same-named config
/// field that could not be lifted once the state holds a value for it).
pub fn merge_account(account: &Account) -> Result<Map<String, Value>, serde_json::Error> {
    let mut obj: Map<String, Value> = serde_json::from_str(&account.config)?;
    let st = &account.state;
    let time = |t: &ROption<i64>| match t {
        ROption::RSome(ms) => Value::String(format_time(*ms)),
        ROption::RNone => Value::Null,
    };
    let text = |t: &ROption<RString>| match t {
        ROption::RSome(s) => Value::String(s.to_string()),
        ROption::RNone => Value::Null,
    };
    for (name, bit) in STATE_FIELDS {
        if st.present & bit == 0 {
            continue;
        }
        let v = match bit {
            field::USAGE_COUNT => Value::from(st.usage_count),
            field::ERROR_COUNT => Value::from(st.error_count),
            field::REFRESH_COUNT => Value::from(st.refresh_count),
            field::IS_HEALTHY => Value::Bool(st.healthy),
            field::IS_DISABLED => Value::Bool(st.disabled),
            field::NEEDS_REFRESH => Value::Bool(st.needs_refresh),
            field::LAST_USED => time(&st.last_used),
            field::LAST_ERROR_TIME => time(&st.last_error_time),
            field::LAST_ERROR_MESSAGE => text(&st.last_error_message),
            field::SCHEDULED_RECOVERY_TIME => time(&st.scheduled_recovery_time),
            field::LAST_HEALTH_CHECK_TIME => time(&st.last_health_check_time),
            field::LAST_HEALTH_CHECK_MODEL => text(&st.last_health_check_model),
            _ => continue,
        };
        if v.is_null() && obj.get(name).is_some_and(|old| !old.is_null()) {
            // An unliftable original value the state has no replacement for: keep it.
            continue;
        }
        obj.insert(name.to_string(), v);
    }
    Ok(obj)
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a key, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.shift_remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The refresh token inside a credential JSON: `refresh_token` (Google, Qwen, iFlow, Codex) or
/// `refreshToken` (Kiro). `None` if the JSON has neither (or is not JSON).
pub fn refresh_token_of(token_json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(token_json).ok()?;
    ["refresh_token", "refreshToken"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_order_nulls_absent_and_unknown_fields() {
        let src = json!({
            "customName": null,
            "uuid": "u-1",
            "KIRO_OAUTH_CREDS_FILE_PATH": "./configs/kiro/a.json",
            "usageCount": 12,
            "isHealthy": true,
            "lastUsed": "2025-11-07T08:00:01.234Z",
            "lastErrorTime": null,
            "notSupportedModels": [],
            "weird": {"n": 1234567890123456u64},
            "lastErrorMessage": "boom",
        });
        let obj = src.as_object().unwrap().clone();
        let acct = split_account("claude-kiro-oauth", obj).unwrap();
        assert_eq!(acct.state.usage_count, 12);
        assert_eq!(acct.state.last_error_time, ROption::RNone);
        assert_eq!(
            acct.state.present & field::ERROR_COUNT,
            0,
            "absent stays absent"
        );
        let back = Value::Object(merge_account(&acct).unwrap());
        assert_eq!(back, src);
    }

    #[test]
    fn unparseable_state_values_stay_verbatim() {
        let src = json!({"uuid": "u", "lastUsed": "yesterday", "usageCount": 1.5});
        let acct = split_account("t", src.as_object().unwrap().clone()).unwrap();
        assert_eq!(acct.state.present, 0);
        assert_eq!(Value::Object(merge_account(&acct).unwrap()), src);
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": []});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 9}, "f": [1]}));
        assert_eq!(t, json!({"b": {"c": 9, "d": 3}, "e": [], "f": [1]}));
    }

    #[test]
    fn refresh_token_in_either_spelling() {
        assert_eq!(
            refresh_token_of(r#"{"refresh_token":"a"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            refresh_token_of(r#"{"refreshToken":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(refresh_token_of(r#"{"x":1}"#), None);
    }
}
