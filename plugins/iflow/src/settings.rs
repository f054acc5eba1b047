//! The account's fields (`provider_pools.json` entry of type `openai-iflow`) the plugin reads,
//! with their defaults (iflow.md §1.2, §1.3):
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `IFLOW_BASE_URL` | `https://apis.iflow.cn/v1` | inference base (`/chat/completions`, `/models`) |
//! | `IFLOW_OAUTH_BASE_URL` | `https://iflow.cn` | OAuth host: token `{base}/oauth/token`, user info `{base}/api/oauth/getUserInfo` |
//! | `IFLOW_TOKEN_URL` | — | the token endpoint's full URL (overrides the one above) |
//! | `IFLOW_USER_INFO_URL` | — | the user-info endpoint's full URL (overrides the one above) |
//! | `IFLOW_OAUTH_CLIENT_ID`, `IFLOW_OAUTH_CLIENT_SECRET` | env vars of the same names | the confidential OAuth client used for refresh |
//! | `IFLOW_REFRESH_TIMEOUT_MS` | 30000 | timeout of each token / user-info call |
//!
//! The credential path (`IFLOW_TOKEN_FILE_PATH` or `IFLOW_OAUTH_CREDS_FILE_PATH`) is the host's
//! business: the plugin gets the credential JSON itself.

use aiclient_provider_kit as kit;
use serde_json::Value;

pub const DEFAULT_BASE_URL: &str = "https://apis.iflow.cn/v1";
pub const DEFAULT_OAUTH_BASE_URL: &str = "https://iflow.cn";
pub const TOKEN_PATH: &str = "oauth/token";
pub const USER_INFO_PATH: &str = "api/oauth/getUserInfo";
pub const DEFAULT_REFRESH_TIMEOUT_MS: u64 = 30_000;
/// Refresh this long before `expiry_date`: the original assumes 48 h tokens and refreshes
/// within 45 h of expiry.
pub const REFRESH_AHEAD_MS: i64 = 45 * 3_600_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub base_url: String,
    pub token_url: String,
    pub user_info_url: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub refresh_timeout_ms: u64,
}

fn account_or_env(account: &Value, key: &str) -> Option<String> {
    kit::account_str(account, key).or_else(|| std::env::var(key).ok().filter(|s| !s.is_empty()))
}

impl Settings {
    pub fn from_account(account: &Value) -> Self {
        let oauth = kit::account_str(account, "IFLOW_OAUTH_BASE_URL")
            .unwrap_or_else(|| DEFAULT_OAUTH_BASE_URL.to_string());
        let refresh_timeout_ms = match account.get("IFLOW_REFRESH_TIMEOUT_MS") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_REFRESH_TIMEOUT_MS);
        Self {
            base_url: kit::account_str(account, "IFLOW_BASE_URL")
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            token_url: kit::account_str(account, "IFLOW_TOKEN_URL")
                .unwrap_or_else(|| kit::join_url(&oauth, TOKEN_PATH)),
            user_info_url: kit::account_str(account, "IFLOW_USER_INFO_URL")
                .unwrap_or_else(|| kit::join_url(&oauth, USER_INFO_PATH)),
            client_id: account_or_env(account, "IFLOW_OAUTH_CLIENT_ID"),
            client_secret: account_or_env(account, "IFLOW_OAUTH_CLIENT_SECRET"),
            refresh_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_account(&json!({}));
        assert_eq!(s.base_url, "https://apis.iflow.cn/v1");
        assert_eq!(s.token_url, "https://iflow.cn/oauth/token");
        assert_eq!(s.user_info_url, "https://iflow.cn/api/oauth/getUserInfo");
        let s = Settings::from_account(&json!({"IFLOW_OAUTH_BASE_URL": "http://127.0.0.1:7/",
            "IFLOW_USER_INFO_URL": "http://u/info", "IFLOW_REFRESH_TIMEOUT_MS": "1500"}));
        assert_eq!(s.token_url, "http://127.0.0.1:7/oauth/token");
        assert_eq!(s.user_info_url, "http://u/info");
        assert_eq!(s.refresh_timeout_ms, 1500);
    }
}
