//! Provider plugin `iflow`: iFlow accounts (provider type `openai-iflow`) served through
//! iFlow's OpenAI-compatible API (iflow.md). Protocol `openai`: the host hands over a Chat
//! Completions body and gets Chat Completions JSON / chunks back.
//!
//! What the plugin owns, by module:
//! - [`settings`]: the account's fields (inference base, OAuth token and user-info URLs, OAuth
//!   client);
//! - [`credentials`]: the credential JSON (both field spellings, four `expiry_date` formats)
//!   and its two-step refresh (OAuth token, then the API key from user info);
//! - [`sign`]: the per-call `session-id` / `x-iflow-timestamp` / `x-iflow-signature` headers;
//! - [`request`]: model list and mapping, body pre-processing, model listing;
//! - [`response`]: unary and SSE answers, checked before they reach the host;
//! - [`errors`]: upstream status → [`AccountAction`].
//!
//! Inference uses the credential's **API key**, not the OAuth access token. Refresh: the host
//! decides when (`refreshAheadMs`: 45 h before `expiry_date` — the original assumes 48 h
//! tokens — at once for a credential without an API key, or after a `REFRESH` reply) and
//! serialises refreshes per account across processes. A refresh request for a credential that
//! is already fresh, or that this plugin produced less than 30 s ago (the original's
//! post-refresh guard), and whose API key the upstream has not refused in this process, is
//! answered with that credential unchanged: one expiry costs one token-endpoint call.

#![allow(non_local_definitions)]

pub mod credentials;
pub mod errors;
pub mod request;
pub mod settings;
pub mod sign;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use abi_stable::std_types::ROption;
use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{
    AccountAction, Operation, Provider, ProviderRequest, RefreshRequest, Reply,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use credentials::Credential;
use settings::{REFRESH_AHEAD_MS, Settings};

pub const PROVIDER_TYPE: &str = "openai-iflow";
/// A credential this plugin produced is not refreshed again within this long.
const REFRESH_GUARD_MS: i64 = 30_000;
const MAX_ERROR_BODY: usize = 64 << 10;
const MEMO_MAX: usize = 4096;

fn hash_of(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Secrets (hashed) with a time: API keys refused upstream, access tokens issued by a
/// refresh. Bounded.
#[derive(Default)]
struct Memo(Mutex<HashMap<u64, i64>>);

impl Memo {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn add(&self, key: &str, at: i64) {
        let mut m = self.map();
        if m.len() >= MEMO_MAX {
            m.clear();
        }
        m.insert(hash_of(key), at);
    }
    fn get(&self, key: &str) -> Option<i64> {
        self.map().get(&hash_of(key)).copied()
    }
    fn remove(&self, key: &str) {
        self.map().remove(&hash_of(key));
    }
}

#[derive(Default)]
pub struct IFlow {
    refused: Memo,
    issued: Memo,
}

fn error_body(message: &str, kind: &str) -> String {
    json!({"error": {"message": message, "type": kind, "code": kind}}).to_string()
}

async fn read_capped(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn timeout_of(ms: u64) -> Duration {
    match ms {
        0 => kit::DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    }
}

impl IFlow {
    async fn generate(
        &self,
        req: &ProviderRequest,
        settings: &Settings,
        cred: &Credential,
    ) -> Result<Reply, PluginError> {
        let Some(key) = cred.api_key() else {
            let mut r = Reply::status(
                401,
                error_body(
                    "the iFlow credential has no apiKey; a refresh fetches it",
                    "invalid_api_key",
                ),
            );
            r.action = AccountAction::REFRESH;
            return Ok(r);
        };
        let body = match request::prepare(&req.body, &req.model, req.stream) {
            Ok(b) => b,
            Err(m) => {
                let mut r = Reply::status(400, error_body(&m, "invalid_request_error"));
                r.action = AccountAction::CLIENT_ERROR;
                return Ok(r);
            }
        };
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let mut builder = client
            .post(kit::join_url(&settings.base_url, "chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header(
                "accept",
                if req.stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .timeout(timeout_of(req.timeout_ms))
            .body(body.to_string());
        for (k, v) in sign::signed_headers(key, now_ms()) {
            builder = builder.header(k, v);
        }
        let resp = builder.send().await.map_err(kit::transport_error)?;
        let status = resp.status().as_u16();
        let reply = if !(200..300).contains(&status) {
            let hint = kit::retry_after_ms(resp.headers());
            let body = read_capped(resp).await;
            errors::refusal(status, body, hint, now_ms())
        } else if req.stream {
            kit::openai_compat::stream(resp, errors::refusal).await?
        } else {
            kit::openai_compat::unary(resp, errors::refusal).await?
        };
        if reply.action == AccountAction::REFRESH {
            self.refused.add(key, now_ms());
        }
        Ok(reply)
    }

    /// `GET {base}/models` (signed) with the known extras appended; the static list when the
    /// upstream cannot answer.
    async fn list_models(
        &self,
        req: &ProviderRequest,
        settings: &Settings,
        cred: Option<&Credential>,
    ) -> Result<Reply, PluginError> {
        let now_s = now_ms() / 1000;
        let fallback = || Ok(Reply::ok(request::static_list(now_s).to_string()));
        let Some(key) = cred.and_then(Credential::api_key) else {
            return fallback();
        };
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let mut builder = client
            .get(kit::join_url(&settings.base_url, "models"))
            .bearer_auth(key)
            .header("accept", "application/json")
            .timeout(timeout_of(req.timeout_ms).min(Duration::from_secs(30)));
        for (k, v) in sign::signed_headers(key, now_ms()) {
            builder = builder.header(k, v);
        }
        let Ok(resp) = builder.send().await else {
            return fallback();
        };
        if !resp.status().is_success() {
            return fallback();
        }
        match resp
            .text()
            .await
            .ok()
            .and_then(|t| request::merge_listed(&t, now_s))
        {
            Some(v) => Ok(Reply::ok(v.to_string())),
            None => fallback(),
        }
    }
}

impl Provider for IFlow {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": [PROVIDER_TYPE],
            "protocol": "openai",
            "checkModel": request::CHECK_MODEL,
            "models": { PROVIDER_TYPE: request::MODELS },
            "refreshAheadMs": REFRESH_AHEAD_MS,
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(&account);
        let cred = match &req.token {
            ROption::RSome(t) => Some(Credential::parse(t)?),
            ROption::RNone => None,
        };
        match req.operation {
            Operation::GENERATE => {}
            Operation::LIST_MODELS => {
                return self.list_models(&req, &settings, cred.as_ref()).await;
            }
            other => {
                return Err(PluginError::unsupported(format!(
                    "operation {} is not supported by the iflow plugin",
                    other.0
                )));
            }
        }
        let Some(cred) = cred else {
            return Err(PluginError::invalid_input(format!(
                "account {} has no iFlow credential (IFLOW_TOKEN_FILE_PATH)",
                req.account_uuid
            )));
        };
        self.generate(&req, &settings, &cred).await
    }

    async fn refresh_token(&self, req: RefreshRequest) -> Result<String, PluginError> {
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(&account);
        let cred = Credential::parse(&req.token)?;
        let now = now_ms();
        if let Some(k) = cred.api_key()
            && self.refused.get(k).is_none()
        {
            let just_issued = cred
                .access_token()
                .and_then(|a| self.issued.get(a))
                .is_some_and(|t| now - t < REFRESH_GUARD_MS);
            if cred.is_fresh(now) || just_issued {
                // Already refreshed (by another process, or moments ago here).
                return Ok(req.token.to_string());
            }
        }
        let Some(rt) = cred.refresh_token() else {
            return Err(PluginError::invalid_input(
                "the iFlow credential has no refresh_token",
            ));
        };
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let grant = credentials::exchange(&client, &settings, rt).await?;
        let api_key = match credentials::fetch_api_key(&client, &settings, &grant.access_token)
            .await
        {
            Ok(k) => Some(k),
            Err(e) => {
                // Step 1 already happened (and may have rotated the refresh token): its result
                // is stored anyway, with the previous API key.
                tracing::warn!(error = %e, has_previous_key = cred.api_key().is_some(),
                    "iFlow API key fetch failed after a successful token refresh; keeping the previous key");
                None
            }
        };
        if let Some(k) = cred.api_key()
            && api_key.as_deref().is_some_and(|n| n != k)
        {
            self.refused.remove(k);
        }
        if let Some(k) = &api_key {
            self.refused.remove(k);
        }
        let now = now_ms();
        self.issued.add(&grant.access_token, now);
        tracing::info!(
            rotated = grant.refresh_token.as_deref().is_some_and(|n| n != rt),
            new_key = api_key.as_deref() != cred.api_key(),
            "iFlow token refreshed"
        );
        Ok(cred.refreshed(&grant, api_key.as_deref(), now))
    }

    fn token_expiry(&self, _provider_type: &str, token: &str) -> i64 {
        Credential::parse(token).map(|c| c.expiry_ms()).unwrap_or(0)
    }
}

aiclient_sdk::export_provider! {
    name: "iflow",
    description: "iFlow accounts (iFlow's OpenAI-compatible API with its API key and request signature)",
    create: |_config: Value| async move { Ok(IFlow::default()) },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_the_type_protocol_and_window() {
        let d = IFlow::default().describe();
        assert_eq!(d["providerTypes"], json!(["openai-iflow"]));
        assert_eq!(d["protocol"], "openai");
        assert_eq!(d["refreshAheadMs"], 45 * 3_600_000);
        assert_eq!(d["models"][PROVIDER_TYPE][0], "deepseek-r1");
    }

    #[test]
    fn token_expiry_reads_every_format() {
        let p = IFlow::default();
        for t in [
            r#"{"apiKey":"k","expiry_date":1767225600000}"#,
            r#"{"apiKey":"k","expiry_date":"1767225600000"}"#,
            r#"{"apiKey":"k","expiry_date":"2026-01-01T00:00:00.000Z"}"#,
            r#"{"apiKey":"k","expiryDate":"2026-01-01 00:00"}"#,
        ] {
            assert_eq!(p.token_expiry(PROVIDER_TYPE, t), 1_767_225_600_000, "{t}");
        }
        assert_eq!(p.token_expiry(PROVIDER_TYPE, "nope"), 0);
    }

    #[test]
    fn a_fresh_credential_is_returned_unchanged_unless_its_key_was_refused() {
        let p = IFlow::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let fresh = json!({"access_token": "a", "refresh_token": "r", "apiKey": "k",
            "expiry_date": now_ms() + 47 * 3_600_000})
        .to_string();
        let req = RefreshRequest {
            provider_type: PROVIDER_TYPE.into(),
            account_uuid: "u".into(),
            account: json!({"IFLOW_TOKEN_URL": "http://127.0.0.1:9/t", "IFLOW_OAUTH_CLIENT_ID": "i", "IFLOW_OAUTH_CLIENT_SECRET": "s"}).to_string().into(),
            token: fresh.as_str().into(),
            options: "{}".into(),
        };
        assert_eq!(
            rt.block_on(p.refresh_token(req.clone())).expect("same"),
            fresh
        );
        p.refused.add("k", now_ms());
        assert!(rt.block_on(p.refresh_token(req)).is_err());
    }
}
