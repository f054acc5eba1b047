//! Provider plugin `claude-custom`: any Anthropic-compatible Messages upstream, with a base URL
//! and API key per account (`CLAUDE_BASE_URL`, `CLAUDE_API_KEY` in the account).

#![allow(non_local_definitions)]

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{AccountAction, Operation, Provider, ProviderRequest, Reply};
use serde_json::{Value, json};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Default)]
pub struct ClaudeCustom {
    accounts: kit::AccountCache<Upstream>,
}

/// An account's upstream, parsed once per account.
struct Upstream {
    messages: reqwest::Url,
    count_tokens: reqwest::Url,
    models: reqwest::Url,
    key: reqwest::header::HeaderValue,
}

impl Upstream {
    fn from_account(account: &Value, uuid: &str) -> Result<Self, PluginError> {
        let base =
            kit::account_str(account, "CLAUDE_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let key = kit::account_str(account, "CLAUDE_API_KEY").ok_or_else(|| {
            PluginError::invalid_input(format!("account {uuid} has no CLAUDE_API_KEY"))
        })?;
        Ok(Self {
            messages: kit::parse_url(&url(&base, "messages"))?,
            count_tokens: kit::parse_url(&url(&base, "messages/count_tokens"))?,
            models: kit::parse_url(&url(&base, "models"))?,
            key: kit::secret_header(&key)?,
        })
    }
}

/// `path` under the base URL, accepting bases given with or without the trailing `/v1`.
fn url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        kit::join_url(base, path)
    } else {
        kit::join_url(base, &format!("v1/{path}"))
    }
}

impl Provider for ClaudeCustom {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": ["claude-custom"],
            "protocol": "claude",
            "checkModel": "claude-3-7-sonnet-20250219",
            "models": { "claude-custom": ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-7-sonnet-20250219"] },
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        let up = self.accounts.get_or_try_insert(&req.account, |a| {
            Upstream::from_account(a, &req.account_uuid)
        })?;
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let timeout = match req.timeout_ms {
            0 => kit::DEFAULT_TIMEOUT,
            ms => std::time::Duration::from_millis(ms),
        };
        let builder = match req.operation {
            Operation::GENERATE => client
                .post(up.messages.clone())
                .body(kit::body_of(req.body)),
            Operation::COUNT_TOKENS => client
                .post(up.count_tokens.clone())
                .body(kit::body_of(req.body)),
            Operation::LIST_MODELS => client.get(up.models.clone()),
            other => {
                return Err(PluginError::unsupported(format!(
                    "operation {} is not supported by claude-custom",
                    other.0
                )));
            }
        };
        let builder = builder
            .header("x-api-key", up.key.clone())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header("content-type", "application/json")
            .timeout(timeout);
        let stream = req.stream && req.operation == Operation::GENERATE;
        let mut reply = kit::send(builder, stream).await?;
        if matches!(reply.status, 401 | 403) {
            reply.action = AccountAction::UNHEALTHY;
        }
        // Anthropic's "overloaded" is 529: transient, not the account's fault.
        Ok(reply)
    }
}

aiclient_sdk::export_provider! {
    name: "claude-custom",
    description: "Anthropic-compatible Messages upstreams (base URL and API key per account)",
    create: |_config: Value| async move { Ok(ClaudeCustom::default()) },
}

#[cfg(test)]
mod tests {
    #[test]
    fn base_urls_with_or_without_v1() {
        assert_eq!(
            super::url("https://a.example", "messages"),
            "https://a.example/v1/messages"
        );
        assert_eq!(
            super::url("https://a.example/v1/", "messages"),
            "https://a.example/v1/messages"
        );
    }
}
