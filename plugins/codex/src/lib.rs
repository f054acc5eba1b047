//! Provider plugin `codex`: ChatGPT-subscription Codex accounts (`openai-codex-oauth`), served
//! through the ChatGPT backend's Responses API (`shared/reference/providers/codex.md`).
//!
//! The plugin's protocol is `openaiResponses`: the host converts every client request to an
//! OpenAI Responses request and converts the answers back. The plugin owns what is specific to
//! Codex:
//! - [`request`]: model map, request forcing, headers, tool-name shortening (§3);
//! - [`stream`]: reading the always-streamed SSE answer, unary assembly, pass-through (§4);
//! - [`errors`]: upstream statuses and in-stream errors → account actions (§5);
//! - [`auth`]: the credential file shape, expiry, OAuth refresh (§1–2).
//!
//! Per-account settings (the account object in `provider_pools.json`):
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `CODEX_BASE_URL` | the backend (`…/responses` is appended) | `https://chatgpt.com/backend-api/codex` |
//! | `CODEX_TOKEN_URL` | the OAuth token endpoint (our addition; the original hard-codes it) | `https://auth.openai.com/oauth/token` |
//! | `CODEX_USAGE_URL` | the usage endpoint (our addition) | `<base>/../wham/usage` when the base ends in `/backend-api/codex`, else `https://chatgpt.com/backend-api/wham/usage` |
//!
//! The credential (the host's token for the account) is the Codex token JSON; the host refreshes
//! it ([`Provider::refresh_token`]) 20 minutes before [`Provider::token_expiry`] and after a
//! 401. Extension `usage` (payload `{"account": {…}, "token": {…}}`) returns the account's
//! `wham/usage` rate-limit windows.

#![allow(non_local_definitions)]

pub mod auth;
pub mod errors;
pub mod request;
pub mod stream;

use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{
    AccountAction, Operation, Provider, ProviderRequest, RefreshRequest, Reply,
};
use serde_json::{Value, json};

pub const PROVIDER_TYPE: &str = "openai-codex-oauth";
pub const DEFAULT_BASE_URL: &str = "https://chatgpt.com/backend-api/codex";
pub const DEFAULT_USAGE_URL: &str = "https://chatgpt.com/backend-api/wham/usage";
pub const BASE_URL_FIELD: &str = "CODEX_BASE_URL";
pub const USAGE_URL_FIELD: &str = "CODEX_USAGE_URL";
/// Refresh this long before the token expires (the original's 20-minute window).
pub const REFRESH_AHEAD_MS: i64 = 20 * 60 * 1000;
/// Upstream timeout when the host gives none (to the response headers, and between chunks).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_ERROR_BODY: usize = 64 << 10;

#[derive(Default)]
pub struct Codex {
    cache_keys: request::CacheKeys,
}

fn usage_url(account: &Value) -> String {
    if let Some(u) = kit::account_str(account, USAGE_URL_FIELD) {
        return u;
    }
    match kit::account_str(account, BASE_URL_FIELD) {
        Some(b) => match b.trim_end_matches('/').strip_suffix("/codex") {
            Some(root) if root.ends_with("/backend-api") => format!("{root}/wham/usage"),
            _ => DEFAULT_USAGE_URL.into(),
        },
        None => DEFAULT_USAGE_URL.into(),
    }
}

/// An error reply that never reached the upstream.
fn local_reply(status: u16, message: &str, action: AccountAction) -> Reply {
    let mut r = Reply::status(
        status,
        json!({"error": {"message": message, "type": "authentication_error", "code": Value::Null}})
            .to_string(),
    );
    r.action = action;
    r
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> String {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Codex {
    async fn generate(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        let account: Value = serde_json::from_str(&req.account)
            .map_err(|e| PluginError::invalid_input(format!("account config: {e}")))?;
        let Some(token) = req.token.as_ref().into_option() else {
            return Ok(local_reply(
                401,
                &format!("account {} has no Codex credential", req.account_uuid),
                AccountAction::UNHEALTHY,
            ));
        };
        let cred = match auth::Credential::parse(token) {
            Ok(c) => c,
            Err(m) => return Ok(local_reply(401, &m, AccountAction::UNHEALTHY)),
        };
        let Some(access) = cred.access_token() else {
            // Nothing to send: let the host refresh first (or give up if it cannot).
            return Ok(local_reply(
                401,
                "the Codex credential has no access token",
                AccountAction::REFRESH,
            ));
        };
        let body: Value = serde_json::from_str(&req.body)
            .map_err(|e| PluginError::invalid_input(format!("request body: {e}")))?;
        let prepared = request::prepare(body, &req.model, &self.cache_keys)?;
        let base =
            kit::account_str(&account, BASE_URL_FIELD).unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let account_id = cred.account_id();
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let mut builder = client.post(kit::join_url(&base, "responses"));
        for (k, v) in request::headers(access, account_id.as_deref(), &prepared.cache_key) {
            builder = builder.header(k, v);
        }
        let timeout = match req.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let sent =
            tokio::time::timeout(timeout, builder.body(prepared.body.to_string()).send()).await;
        let resp = match sent {
            Err(_) => {
                return Err(PluginError::timeout(format!(
                    "the Codex backend did not answer within {} s",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(kit::transport_error(e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            let body = read_capped(resp, MAX_ERROR_BODY).await;
            tracing::debug!(status, request = %req.request_id, "Codex backend refused");
            return Ok(errors::http_error(
                status,
                &headers,
                &body,
                aiclient_sdk::account::now_ms(),
            ));
        }
        let events = stream::Events::from_response(resp, timeout);
        if req.stream {
            stream::streaming(events, prepared.names).await
        } else {
            stream::unary(events, prepared.names).await
        }
    }

    async fn usage(&self, payload: &str) -> Result<String, PluginError> {
        let p: Value = serde_json::from_str(payload)?;
        let account = match p.get("account") {
            Some(Value::String(s)) => serde_json::from_str(s)?,
            Some(v) => v.clone(),
            None => json!({}),
        };
        let token = match p.get("token") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => return Err(PluginError::invalid_input("usage: `token` is required")),
        };
        let cred = auth::Credential::parse(&token).map_err(PluginError::invalid_input)?;
        let access = cred.access_token().ok_or_else(|| {
            PluginError::invalid_input("usage: the credential has no access token")
        })?;
        let client = kit::client(None)?;
        let mut b = client
            .get(usage_url(&account))
            .header("authorization", format!("Bearer {access}"))
            .header("user-agent", request::USER_AGENT)
            .header("accept", "*/*")
            .timeout(Duration::from_secs(30));
        if let Some(a) = cred.account_id() {
            b = b.header("chatgpt-account-id", a);
        }
        let resp = b.send().await.map_err(kit::transport_error)?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_ERROR_BODY).await;
        match status {
            200..=299 => Ok(body),
            401 => Err(PluginError::new(
                aiclient_sdk::ErrorCode::UNAUTHORIZED,
                format!("usage: HTTP 401: {body}"),
            )),
            s => Err(PluginError::unavailable(format!("usage: HTTP {s}: {body}"))),
        }
    }
}

impl Provider for Codex {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": [PROVIDER_TYPE],
            "protocol": "openaiResponses",
            "checkModel": request::FALLBACK_MODEL,
            "refreshAheadMs": REFRESH_AHEAD_MS,
            "models": { PROVIDER_TYPE: request::model_ids() },
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        match req.operation {
            Operation::GENERATE => self.generate(req).await,
            Operation::LIST_MODELS => {
                let data: Vec<Value> = request::model_ids()
                    .into_iter()
                    .map(|id| json!({"id": id, "object": "model", "created": 1_748_570_000, "owned_by": "openai"}))
                    .collect();
                Ok(Reply::ok(
                    json!({"object": "list", "data": data}).to_string(),
                ))
            }
            other => Err(PluginError::unsupported(format!(
                "operation {} is not supported by the Codex backend",
                other.0
            ))),
        }
    }

    async fn refresh_token(&self, req: RefreshRequest) -> Result<String, PluginError> {
        let account: Value = serde_json::from_str(&req.account).unwrap_or_else(|_| json!({}));
        auth::refresh(&account, &req.token, &req.options).await
    }

    fn token_expiry(&self, _provider_type: &str, token: &str) -> i64 {
        auth::Credential::parse(token)
            .map(|c| c.expiry_ms())
            .unwrap_or(0)
    }

    async fn extension(&self, name: &str, payload: String) -> Result<String, PluginError> {
        match name {
            "usage" => self.usage(&payload).await,
            other => Err(PluginError::unsupported(format!(
                "extension {other:?} is not supported by the Codex plugin"
            ))),
        }
    }
}

aiclient_sdk::export_provider! {
    name: "codex",
    description: "ChatGPT-subscription Codex accounts (openai-codex-oauth) via the ChatGPT backend Responses API",
    create: |_config: Value| async move { Ok(Codex::default()) },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_and_urls() {
        let d = Codex::default().describe();
        assert_eq!(d["protocol"], "openaiResponses");
        assert_eq!(d["refreshAheadMs"], 1_200_000);
        assert!(
            d["models"][PROVIDER_TYPE]
                .as_array()
                .unwrap()
                .contains(&json!("gpt-5.4-fast"))
        );
        assert_eq!(
            usage_url(&json!({"CODEX_BASE_URL": "http://127.0.0.1:9/backend-api/codex/"})),
            "http://127.0.0.1:9/backend-api/wham/usage"
        );
        assert_eq!(usage_url(&json!({"CODEX_BASE_URL": ""})), DEFAULT_USAGE_URL);
        assert_eq!(
            usage_url(&json!({"CODEX_USAGE_URL": "http://u/x"})),
            "http://u/x"
        );
    }

    #[test]
    fn token_expiry_of_garbage_is_unknown() {
        let c = Codex::default();
        assert_eq!(c.token_expiry(PROVIDER_TYPE, "not json"), 0);
        assert_eq!(
            c.token_expiry(
                PROVIDER_TYPE,
                r#"{"access_token":"a","expired":"2026-06-09T02:00:00.000Z"}"#
            ),
            1_780_970_400_000
        );
    }
}
