//! The account's fields (`provider_pools.json` entry of type `openai-qwen-oauth`) the plugin
//! reads, with their defaults (qwen.md §1.2):
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `QWEN_BASE_URL` | `https://dashscope.aliyuncs.com/compatible-mode/v1` | API base when the credential carries no `resource_url` |
//! | `QWEN_OAUTH_BASE_URL` | `https://chat.qwen.ai` | OAuth host; the token endpoint is `{base}/api/v1/oauth2/token` |
//! | `QWEN_TOKEN_URL` | — | the token endpoint's full URL (overrides the one above) |
//! | `QWEN_OAUTH_CLIENT_ID` | env `QWEN_OAUTH_CLIENT_ID` | the public OAuth client id sent with a refresh |
//! | `QWEN_RATE_LIMIT_PER_MINUTE` | 60 | local limit of calls per minute per account (0: off) |
//! | `QWEN_REFRESH_TIMEOUT_MS` | 30000 | timeout of one token-endpoint call |
//! | `USE_SYSTEM_PROXY_QWEN` | false | use the environment's proxy when the host gives none |
//!
//! The credential path (`QWEN_OAUTH_CREDS_FILE_PATH`) is the host's business: the plugin gets
//! the credential JSON itself.

use aiclient_provider_kit as kit;
use serde_json::Value;

pub const DEFAULT_BASE_URL: &str = "https://dashscope.aliyuncs.com/compatible-mode/v1";
pub const DEFAULT_OAUTH_BASE_URL: &str = "https://chat.qwen.ai";
pub const TOKEN_PATH: &str = "api/v1/oauth2/token";
pub const DEFAULT_RATE_LIMIT: u32 = 60;
pub const DEFAULT_REFRESH_TIMEOUT_MS: u64 = 30_000;
/// Refresh this long before `expiry_date` (the original's per-request `needsRefresh` window).
pub const REFRESH_AHEAD_MS: i64 = 20 * 60 * 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub base_url: Option<String>,
    pub token_url: String,
    pub client_id: Option<String>,
    pub rate_limit_per_minute: u32,
    pub refresh_timeout_ms: u64,
    pub use_system_proxy: bool,
}

/// A boolean account field: `true`/`false` or their string forms.
pub fn flag(account: &Value, key: &str) -> bool {
    match account.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        _ => false,
    }
}

/// A non-negative integer account field (a number or a numeric string).
pub fn number(account: &Value, key: &str) -> Option<u64> {
    match account.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

impl Settings {
    pub fn from_account(account: &Value) -> Self {
        let oauth_base = kit::account_str(account, "QWEN_OAUTH_BASE_URL")
            .unwrap_or_else(|| DEFAULT_OAUTH_BASE_URL.to_string());
        let token_url = kit::account_str(account, "QWEN_TOKEN_URL")
            .unwrap_or_else(|| kit::join_url(&oauth_base, TOKEN_PATH));
        let client_id = kit::account_str(account, "QWEN_OAUTH_CLIENT_ID").or_else(|| {
            std::env::var("QWEN_OAUTH_CLIENT_ID")
                .ok()
                .filter(|s| !s.is_empty())
        });
        Self {
            base_url: kit::account_str(account, "QWEN_BASE_URL"),
            token_url,
            client_id,
            rate_limit_per_minute: number(account, "QWEN_RATE_LIMIT_PER_MINUTE")
                .map(|n| n.min(u64::from(u32::MAX)) as u32)
                .unwrap_or(DEFAULT_RATE_LIMIT),
            refresh_timeout_ms: number(account, "QWEN_REFRESH_TIMEOUT_MS")
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_REFRESH_TIMEOUT_MS),
            use_system_proxy: flag(account, "USE_SYSTEM_PROXY_QWEN"),
        }
    }

    /// The proxy to use: the host's (`options.proxy`), else the environment's when
    /// `USE_SYSTEM_PROXY_QWEN` is on, else none.
    pub fn proxy(&self, options: &str) -> Option<String> {
        kit::proxy_of(options).or_else(|| {
            if !self.use_system_proxy {
                return None;
            }
            [
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
                "HTTP_PROXY",
                "http_proxy",
            ]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        })
    }
}

/// The inference base for a credential's `resource_url` (qwen.md §3): `resource_url`, else
/// `QWEN_BASE_URL`, else DashScope; `https://` prepended unless it starts with `http`; `/v1`
/// appended unless it already ends with it.
pub fn api_base(resource_url: Option<&str>, base_url: Option<&str>) -> String {
    let raw = resource_url
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or(base_url.map(str::trim).filter(|s| !s.is_empty()))
        .unwrap_or(DEFAULT_BASE_URL);
    let mut url = if raw.starts_with("http") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    while url.ends_with('/') {
        url.pop();
    }
    if !url.ends_with("/v1") {
        url.push_str("/v1");
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_api_base_comes_from_resource_url_then_the_account() {
        assert_eq!(
            api_base(Some("portal.qwen.ai"), None),
            "https://portal.qwen.ai/v1"
        );
        assert_eq!(
            api_base(Some("http://127.0.0.1:9/"), Some("https://x/v1")),
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(api_base(Some(""), Some("https://x/v1")), "https://x/v1");
        assert_eq!(api_base(None, None), DEFAULT_BASE_URL);
    }

    #[test]
    fn settings_defaults_and_overrides() {
        let s = Settings::from_account(&json!({}));
        assert_eq!(s.token_url, "https://chat.qwen.ai/api/v1/oauth2/token");
        assert_eq!(s.rate_limit_per_minute, 60);
        let s = Settings::from_account(&json!({
            "QWEN_OAUTH_BASE_URL": "http://127.0.0.1:5/",
            "QWEN_RATE_LIMIT_PER_MINUTE": "0",
            "QWEN_OAUTH_CLIENT_ID": "cid",
            "USE_SYSTEM_PROXY_QWEN": "true",
        }));
        assert_eq!(s.token_url, "http://127.0.0.1:5/api/v1/oauth2/token");
        assert_eq!(s.rate_limit_per_minute, 0);
        assert_eq!(s.client_id.as_deref(), Some("cid"));
        assert!(s.use_system_proxy);
        let s = Settings::from_account(&json!({"QWEN_TOKEN_URL": "http://t/tok"}));
        assert_eq!(s.token_url, "http://t/tok");
    }
}
