//! Per-account settings: which product an account belongs to ([`Kind`]) and every knob its
//! `provider_pools.json` object may set — upstream URLs (so tests and proxies can point the
//! plugin anywhere), the GCP project, the OAuth client, inline credentials.
//!
//! | field (`GEMINI_…` for `gemini-cli-oauth`, `ANTIGRAVITY_…` for `gemini-antigravity`) | default |
//! |---|---|
//! | `…_BASE_URL` | `https://cloudcode-pa.googleapis.com` (Antigravity: the three daily/autopush hosts, tried in order) |
//! | `…_TOKEN_URL` | `https://oauth2.googleapis.com/token` (the Google token endpoint; the Node original could not override it) |
//! | `…_OAUTH_CLIENT_ID`, `…_OAUTH_CLIENT_SECRET` | the same-named environment variables of the gateway process |
//! | `…_OAUTH_CREDS_BASE64` | inline credential JSON, used when the host stores no token for the account |
//! | `…_ONBOARD_POLL_MS` | 2000: interval between `onboardUser` polls (at most 30 polls) |
//! | `PROJECT_ID` | discovered (`loadCodeAssist` / `onboardUser`); the literal `default` is refused |
//!
//! The installed-app OAuth client of Gemini CLI (and of Antigravity) is not built in: the
//! operator supplies it, per account or through the environment.

use std::time::Duration;

use aiclient_sdk::PluginError;
use serde_json::Value;

/// Refresh a token this long before it expires (the original's per-request window).
pub const REFRESH_AHEAD_MS: i64 = 20 * 60 * 1000;
pub const DEFAULT_BASE_URL: &str = "https://cloudcode-pa.googleapis.com";
pub const ANTIGRAVITY_BASE_URLS: [&str; 3] = [
    "https://daily-cloudcode-pa.sandbox.googleapis.com",
    "https://daily-cloudcode-pa.googleapis.com",
    "https://autopush-cloudcode-pa.sandbox.googleapis.com",
];
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const ONBOARD_POLL: Duration = Duration::from_secs(2);
pub const ONBOARD_MAX_POLLS: u32 = 30;

/// The two products served: both speak Code Assist `v1internal`, with different surfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Cli,
    Antigravity,
}

impl Kind {
    pub const CLI_TYPE: &'static str = "gemini-cli-oauth";
    pub const ANTIGRAVITY_TYPE: &'static str = "gemini-antigravity";

    /// The kind serving `provider_type`, including suffixed groups (`gemini-cli-oauth-2`).
    pub fn of(provider_type: &str) -> Option<Self> {
        let is = |base: &str| {
            provider_type == base
                || provider_type
                    .strip_prefix(base)
                    .is_some_and(|r| r.starts_with('-'))
        };
        if is(Self::CLI_TYPE) {
            Some(Self::Cli)
        } else if is(Self::ANTIGRAVITY_TYPE) {
            Some(Self::Antigravity)
        } else {
            None
        }
    }

    /// The prefix of this kind's account fields.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Cli => "GEMINI",
            Self::Antigravity => "ANTIGRAVITY",
        }
    }
}

/// What one account's object says, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kind: Kind,
    /// Code Assist hosts, tried in order (one unless Antigravity without an override).
    pub base_urls: Vec<String>,
    pub token_url: String,
    /// `PROJECT_ID`; `None` means discover it.
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub creds_base64: Option<String>,
    pub onboard_poll: Duration,
    pub onboard_max_polls: u32,
}

fn field(account: &Value, key: &str) -> Option<String> {
    account
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn env(key: &str) -> Option<String> {
    std::env::var(key)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Settings {
    pub fn from_account(kind: Kind, account: &Value) -> Result<Self, PluginError> {
        let p = kind.prefix();
        let key = |k: &str| format!("{p}_{k}");
        let base_urls = match field(account, &key("BASE_URL")) {
            Some(u) => vec![u.trim_end_matches('/').to_string()],
            None => match kind {
                Kind::Cli => vec![DEFAULT_BASE_URL.to_string()],
                Kind::Antigravity => ANTIGRAVITY_BASE_URLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
        };
        let project_id = field(account, "PROJECT_ID");
        if project_id.as_deref() == Some("default") {
            return Err(PluginError::invalid_input(
                "PROJECT_ID \"default\" is not a Code Assist project; set the real project id or leave it empty to discover it",
            ));
        }
        let onboard_poll = account
            .get(key("ONBOARD_POLL_MS").as_str())
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .map_or(ONBOARD_POLL, Duration::from_millis);
        Ok(Self {
            kind,
            base_urls,
            token_url: field(account, &key("TOKEN_URL"))
                .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string()),
            project_id,
            client_id: field(account, &key("OAUTH_CLIENT_ID"))
                .or_else(|| env(&key("OAUTH_CLIENT_ID"))),
            client_secret: field(account, &key("OAUTH_CLIENT_SECRET"))
                .or_else(|| env(&key("OAUTH_CLIENT_SECRET"))),
            creds_base64: field(account, &key("OAUTH_CREDS_BASE64")),
            onboard_poll,
            onboard_max_polls: ONBOARD_MAX_POLLS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_include_suffixed_groups() {
        assert_eq!(Kind::of("gemini-cli-oauth"), Some(Kind::Cli));
        assert_eq!(Kind::of("gemini-cli-oauth-2"), Some(Kind::Cli));
        assert_eq!(Kind::of("gemini-antigravity"), Some(Kind::Antigravity));
        assert_eq!(Kind::of("gemini-cli-oauthx"), None);
        assert_eq!(Kind::of("openai-custom"), None);
    }

    #[test]
    fn fields_and_defaults() {
        let s = Settings::from_account(
            Kind::Cli,
            &json!({"GEMINI_BASE_URL": "http://m/", "PROJECT_ID": "", "GEMINI_ONBOARD_POLL_MS": 5}),
        )
        .expect("valid");
        assert_eq!(s.base_urls, vec!["http://m".to_string()]);
        assert_eq!(s.project_id, None, "empty means discover");
        assert_eq!(s.token_url, DEFAULT_TOKEN_URL);
        assert_eq!(s.onboard_poll, Duration::from_millis(5));
        let a = Settings::from_account(Kind::Antigravity, &json!({})).expect("valid");
        assert_eq!(a.base_urls.len(), 3);
        assert!(Settings::from_account(Kind::Cli, &json!({"PROJECT_ID": "default"})).is_err());
    }
}
