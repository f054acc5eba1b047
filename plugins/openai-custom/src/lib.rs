//! Provider plugin `openai-custom`: any OpenAI-compatible Chat Completions upstream, with a
//! base URL and API key per account (`OPENAI_BASE_URL`, `OPENAI_API_KEY` in the account).

#![allow(non_local_definitions)]

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{AccountAction, Operation, Provider, ProviderRequest, Reply};
use serde_json::{Value, json};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Default)]
pub struct OpenAiCustom {
    accounts: kit::AccountCache<Upstream>,
}

/// An account's upstream, parsed once per account.
struct Upstream {
    chat: reqwest::Url,
    models: reqwest::Url,
    auth: reqwest::header::HeaderValue,
}

impl Upstream {
    fn from_account(account: &Value, uuid: &str) -> Result<Self, PluginError> {
        let base =
            kit::account_str(account, "OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let key = kit::account_str(account, "OPENAI_API_KEY").ok_or_else(|| {
            PluginError::invalid_input(format!("account {uuid} has no OPENAI_API_KEY"))
        })?;
        Ok(Self {
            chat: kit::parse_url(&kit::join_url(&base, "chat/completions"))?,
            models: kit::parse_url(&kit::join_url(&base, "models"))?,
            auth: kit::secret_header(&format!("Bearer {key}"))?,
        })
    }
}

impl Provider for OpenAiCustom {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": ["openai-custom"],
            "protocol": "openai",
            "checkModel": "gpt-4o-mini",
            "models": { "openai-custom": ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini"] },
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
                .post(up.chat.clone())
                .header("content-type", "application/json")
                .body(kit::body_of(req.body)),
            Operation::LIST_MODELS => client.get(up.models.clone()),
            other => {
                return Err(PluginError::unsupported(format!(
                    "operation {} is not supported by openai-custom",
                    other.0
                )));
            }
        };
        let stream = req.stream && req.operation == Operation::GENERATE;
        let mut reply = kit::send(
            builder
                .header(reqwest::header::AUTHORIZATION, up.auth.clone())
                .timeout(timeout),
            stream,
        )
        .await?;
        if matches!(reply.status, 401 | 403) {
            // An API key has nothing to refresh: a refused key makes the account unusable.
            reply.action = AccountAction::UNHEALTHY;
        }
        Ok(reply)
    }
}

aiclient_sdk::export_provider! {
    name: "openai-custom",
    description: "OpenAI-compatible Chat Completions upstreams (base URL and API key per account)",
    create: |_config: Value| async move { Ok(OpenAiCustom::default()) },
}
