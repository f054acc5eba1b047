//! The service configuration the gateway runs with: the original's `config.json` keys, held by
//! the storage backend (so an existing `configs/` keeps its API key and a change made on any
//! instance applies everywhere), parsed once per change into a checked snapshot that request
//! handling reads without locking.

use std::collections::HashMap;

use serde_json::Value;

/// The digest client keys are compared by (constant time, whatever the keys' lengths).
pub fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Defaults follow the original (`server-behaviour.md` §6.2), with its bugs fixed: there is no
/// default API key (a missing key refuses service instead of serving everyone).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `REQUIRED_API_KEY`; `None` when unset or empty.
    pub api_key: Option<String>,
    /// SHA-256 of `api_key`, computed once per config change: a request's key check hashes
    /// only the presented key.
    pub api_key_digest: Option<[u8; 32]>,
    /// Whether these settings came from a stored config (not defaults for a missing one).
    pub loaded: bool,
    /// `MODEL_PROVIDER` (string, CSV or array): the default provider types, first preferred.
    pub model_providers: Vec<String>,
    /// `MAX_ERROR_COUNT`: errors (each within `error_window_ms` of the previous) before an
    /// account is marked unhealthy; 0 disables marking.
    pub max_error_count: i64,
    pub error_window_ms: i64,
    /// `REQUEST_MAX_RETRIES`: retries on the same account when it is the only one left.
    pub request_max_retries: u32,
    /// `REQUEST_BASE_DELAY` (ms): backoff base for those retries.
    pub request_base_delay_ms: u64,
    /// `CREDENTIAL_SWITCH_MAX_RETRIES`: how many other accounts a request may move on to.
    pub credential_switch_max_retries: u32,
    /// `providerFallbackChain`: `{type: [fallback types…]}`.
    pub fallback_chain: HashMap<String, Vec<String>>,
    /// `modelFallbackMapping`: `{model: {targetProviderType, targetModel}}`.
    pub model_fallback: HashMap<String, (String, String)>,
    /// Cooldown after a 429 without a retry hint (`RATE_LIMIT_COOLDOWN_MS`), capped by
    /// `RATE_LIMIT_COOLDOWN_MAX_MS`.
    pub cooldown_ms: i64,
    pub cooldown_max_ms: i64,
    /// `PROXY_URL` for the provider types in `PROXY_ENABLED_PROVIDERS`.
    pub proxy_url: Option<String>,
    pub proxy_providers: Vec<String>,
    /// `SCHEDULED_HEALTH_CHECK.enabled`: probe unhealthy accounts and bring back the ones that
    /// answer (on by default: an operator expects recovered accounts to return).
    pub health_check_enabled: bool,
    /// `SCHEDULED_HEALTH_CHECK.interval` (ms, 1 s – 1 h): how long after its last error or
    /// check an unhealthy account is probed again.
    pub health_check_interval_ms: i64,
    /// `LOGIN_EXPIRY`: web-UI session lifetime in seconds.
    pub login_expiry_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_json(&Value::Object(Default::default()))
    }
}

fn int(v: &Value, key: &str, default: i64) -> i64 {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(default),
        _ => default,
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

impl Settings {
    /// Reads a `config.json` document; unknown keys are ignored (they belong to other parts of
    /// the original), malformed values fall back to their defaults.
    pub fn from_json(v: &Value) -> Self {
        let mut model_providers = string_list(v.get("MODEL_PROVIDER"));
        if model_providers.is_empty() {
            model_providers.push("gemini-cli-oauth".into());
        }
        let fallback_chain = v
            .get("providerFallbackChain")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), string_list(Some(v))))
                    .collect()
            })
            .unwrap_or_default();
        let model_fallback = v
            .get("modelFallbackMapping")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(model, t)| {
                        let ty = t.get("targetProviderType")?.as_str()?.to_string();
                        let tm = t
                            .get("targetModel")
                            .and_then(Value::as_str)
                            .unwrap_or(model)
                            .to_string();
                        Some((model.clone(), (ty, tm)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let api_key = v
            .get("REQUIRED_API_KEY")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(String::from);
        Self {
            api_key_digest: api_key.as_deref().map(key_digest),
            loaded: false,
            api_key,
            model_providers,
            max_error_count: int(v, "MAX_ERROR_COUNT", 10).max(0),
            error_window_ms: 10_000,
            request_max_retries: int(v, "REQUEST_MAX_RETRIES", 3).clamp(0, 20) as u32,
            request_base_delay_ms: int(v, "REQUEST_BASE_DELAY", 1000).clamp(0, 60_000) as u64,
            credential_switch_max_retries: int(v, "CREDENTIAL_SWITCH_MAX_RETRIES", 5).clamp(0, 100)
                as u32,
            fallback_chain,
            model_fallback,
            cooldown_ms: int(v, "RATE_LIMIT_COOLDOWN_MS", 30_000).max(0),
            cooldown_max_ms: int(v, "RATE_LIMIT_COOLDOWN_MAX_MS", 300_000).max(0),
            proxy_url: v
                .get("PROXY_URL")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from),
            proxy_providers: string_list(v.get("PROXY_ENABLED_PROVIDERS")),
            health_check_enabled: v
                .pointer("/SCHEDULED_HEALTH_CHECK/enabled")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            health_check_interval_ms: v
                .get("SCHEDULED_HEALTH_CHECK")
                .map_or(600_000, |h| int(h, "interval", 600_000))
                .clamp(1_000, 3_600_000),
            login_expiry_secs: int(v, "LOGIN_EXPIRY", 3600).clamp(60, 30 * 24 * 3600),
        }
    }

    /// The proxy for `provider_type`, if one applies.
    pub fn proxy_for(&self, provider_type: &str) -> Option<&str> {
        let listed = self.proxy_providers.iter().any(|p| p == provider_type);
        self.proxy_url.as_deref().filter(|_| listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_original_keys() {
        let s = Settings::from_json(&json!({
            "REQUIRED_API_KEY": "k",
            "MODEL_PROVIDER": "openai-custom, claude-custom",
            "MAX_ERROR_COUNT": "4",
            "providerFallbackChain": {"openai-custom": ["claude-custom"]},
            "modelFallbackMapping": {"gpt-4o": {"targetProviderType": "claude-custom", "targetModel": "claude-sonnet-4-5"}},
            "PROXY_URL": "socks5://p:1", "PROXY_ENABLED_PROVIDERS": ["gemini-cli-oauth"],
        }));
        assert_eq!(s.api_key.as_deref(), Some("k"));
        assert_eq!(s.model_providers, ["openai-custom", "claude-custom"]);
        assert_eq!(s.max_error_count, 4);
        assert_eq!(s.fallback_chain["openai-custom"], ["claude-custom"]);
        assert_eq!(
            s.model_fallback["gpt-4o"],
            ("claude-custom".into(), "claude-sonnet-4-5".into())
        );
        assert_eq!(s.proxy_for("gemini-cli-oauth"), Some("socks5://p:1"));
        assert_eq!(s.proxy_for("openai-custom"), None);
    }

    #[test]
    fn no_key_means_none_not_a_default() {
        assert_eq!(Settings::default().api_key, None);
        assert_eq!(
            Settings::from_json(&json!({"REQUIRED_API_KEY": ""})).api_key,
            None
        );
    }
}
