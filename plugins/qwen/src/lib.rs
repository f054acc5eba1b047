//! Provider plugin `qwen`: Qwen Code OAuth accounts (provider type `openai-qwen-oauth`) served
//! through Qwen's OpenAI-compatible chat-completions API (qwen.md). Protocol `openai`: the host
//! hands over a Chat Completions body and gets Chat Completions JSON / chunks back.
//!
//! What the plugin owns, by module:
//! - [`settings`]: the account's fields (API base fallback, OAuth host / token URL, client id,
//!   local rate limit, proxy) and the API base derived from the credential's `resource_url`;
//! - [`credentials`]: the credential JSON, its expiry, and its refresh at the token endpoint
//!   (rotating refresh tokens kept; a failure never touches the stored credential);
//! - [`request`]: model mapping, body pre-processing, the Qwen Code client headers;
//! - [`response`]: unary and SSE answers, checked before they reach the host;
//! - [`errors`]: upstream status → [`AccountAction`] (quota until Beijing midnight, refused
//!   credentials, rate limits);
//! - [`limiter`]: the original's local 60-calls-per-minute limit per account.
//!
//! Refresh: the host decides when (`refreshAheadMs`: 20 min before `expiry_date`, a credential
//! without `expiry_date` at once, or after a `REFRESH` reply) and serialises refreshes per
//! account across processes. A refresh request for a credential that is already fresh, or
//! that this plugin issued less than 30 s ago (the original's post-refresh guard), and that the
//! upstream has not refused in this process, is answered with that credential unchanged,
//! without calling the token endpoint: one expiry costs one token-endpoint call even when the
//! endpoint does not rotate refresh tokens (the host then cannot tell that another process
//! already refreshed).

#![allow(non_local_definitions)]

pub mod credentials;
pub mod errors;
pub mod limiter;
pub mod request;
pub mod settings;

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

pub const PROVIDER_TYPE: &str = "openai-qwen-oauth";
/// A credential this plugin issued is not refreshed again within this long.
const REFRESH_GUARD_MS: i64 = 30_000;
const MAX_ERROR_BODY: usize = 64 << 10;
const MEMO_MAX: usize = 4096;

fn hash_of(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Access tokens (hashed) with a time: refused upstream, or issued by a refresh. Bounded.
#[derive(Default)]
struct Memo(Mutex<HashMap<u64, i64>>);

impl Memo {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn add(&self, token: &str, at: i64) {
        let mut m = self.map();
        if m.len() >= MEMO_MAX {
            m.clear();
        }
        m.insert(hash_of(token), at);
    }
    fn get(&self, token: &str) -> Option<i64> {
        self.map().get(&hash_of(token)).copied()
    }
    fn remove(&self, token: &str) {
        self.map().remove(&hash_of(token));
    }
}

#[derive(Default)]
pub struct Qwen {
    refused: Memo,
    issued: Memo,
    limiter: limiter::Limiter,
}

fn error_body(message: &str, kind: &str) -> String {
    json!({"error": {"message": message, "type": kind, "code": kind}}).to_string()
}

fn client_error(message: &str) -> Reply {
    let mut r = Reply::status(400, error_body(message, "invalid_request_error"));
    r.action = AccountAction::CLIENT_ERROR;
    r
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

impl Qwen {
    async fn generate(
        &self,
        req: &ProviderRequest,
        settings: &Settings,
        token: &str,
    ) -> Result<Reply, PluginError> {
        let cred = Credential::parse(token)?;
        let Some(access) = cred.access_token() else {
            let mut r = Reply::status(
                401,
                error_body(
                    "the Qwen credential has no access_token",
                    "invalid_access_token",
                ),
            );
            r.action = AccountAction::REFRESH;
            return Ok(r);
        };
        let body = match request::prepare(&req.body, &req.model, req.stream) {
            Ok(b) => b,
            Err(m) => return Ok(client_error(&m)),
        };
        let now = now_ms();
        if let Err(wait) =
            self.limiter
                .admit(&req.account_uuid, settings.rate_limit_per_minute, now)
        {
            let mut r = Reply::status(
                429,
                limiter::refusal_body(settings.rate_limit_per_minute, wait),
            );
            r.action = AccountAction::COOLDOWN;
            r.retry_after_ms = wait;
            r.action_until = now + wait;
            return Ok(r);
        }
        let base = settings::api_base(cred.resource_url(), settings.base_url.as_deref());
        let client = kit::client(settings.proxy(&req.options).as_deref())?;
        let timeout = match req.timeout_ms {
            0 => kit::DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let mut builder = client
            .post(kit::join_url(&base, "chat/completions"))
            .bearer_auth(access)
            .timeout(timeout)
            .body(body.to_string());
        for (k, v) in request::headers(req.stream) {
            builder = builder.header(k, v);
        }
        let resp = builder.send().await.map_err(kit::transport_error)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let hint = kit::retry_after_ms(resp.headers());
            let body = read_capped(resp).await;
            let reply = errors::refusal(status, body, hint, now_ms());
            return Ok(self.note(reply, access));
        }
        let reply = if req.stream {
            kit::openai_compat::stream(resp, errors::refusal).await?
        } else {
            kit::openai_compat::unary(resp, errors::refusal).await?
        };
        Ok(self.note(reply, access))
    }

    /// Remembers a refused access token, so a forced refresh of it goes through.
    fn note(&self, reply: Reply, access: &str) -> Reply {
        if reply.action == AccountAction::REFRESH {
            self.refused.add(access, now_ms());
        }
        reply
    }
}

impl Provider for Qwen {
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
        match req.operation {
            Operation::GENERATE => {}
            Operation::LIST_MODELS => return Ok(Reply::ok(request::model_list().to_string())),
            other => {
                return Err(PluginError::unsupported(format!(
                    "operation {} is not supported by the qwen plugin",
                    other.0
                )));
            }
        }
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(&account);
        let ROption::RSome(token) = &req.token else {
            return Err(PluginError::invalid_input(format!(
                "account {} has no Qwen credential (QWEN_OAUTH_CREDS_FILE_PATH)",
                req.account_uuid
            )));
        };
        self.generate(&req, &settings, token).await
    }

    async fn refresh_token(&self, req: RefreshRequest) -> Result<String, PluginError> {
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(&account);
        let cred = Credential::parse(&req.token)?;
        let now = now_ms();
        if let Some(a) = cred.access_token()
            && self.refused.get(a).is_none()
        {
            let just_issued = self
                .issued
                .get(a)
                .is_some_and(|t| now - t < REFRESH_GUARD_MS);
            if cred.is_fresh(now) || just_issued {
                // Already refreshed (by another process, or moments ago here).
                return Ok(req.token.to_string());
            }
        }
        let Some(rt) = cred.refresh_token() else {
            return Err(PluginError::invalid_input(
                "the Qwen credential has no refresh_token",
            ));
        };
        let client = kit::client(settings.proxy(&req.options).as_deref())?;
        let grant = credentials::exchange(&client, &settings, rt).await?;
        if let Some(a) = cred.access_token() {
            self.refused.remove(a);
        }
        let now = now_ms();
        self.issued.add(&grant.access_token, now);
        tracing::info!(
            rotated = grant.refresh_token.as_deref().is_some_and(|n| n != rt),
            resource_url = grant.resource_url.is_some(),
            "Qwen access token refreshed"
        );
        Ok(cred.refreshed(&grant, now))
    }

    fn token_expiry(&self, _provider_type: &str, token: &str) -> i64 {
        Credential::parse(token).map(|c| c.expiry_ms()).unwrap_or(0)
    }
}

aiclient_sdk::export_provider! {
    name: "qwen",
    description: "Qwen Code OAuth accounts (Qwen's OpenAI-compatible chat API)",
    create: |_config: Value| async move { Ok(Qwen::default()) },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_the_type_protocol_and_window() {
        let d = Qwen::default().describe();
        assert_eq!(d["providerTypes"], json!(["openai-qwen-oauth"]));
        assert_eq!(d["protocol"], "openai");
        assert_eq!(d["refreshAheadMs"], 20 * 60 * 1000);
        assert_eq!(d["models"][PROVIDER_TYPE][0], "coder-model");
        assert_eq!(d["checkModel"], "qwen3-coder-flash");
    }

    #[test]
    fn token_expiry() {
        let q = Qwen::default();
        assert_eq!(
            q.token_expiry(PROVIDER_TYPE, r#"{"access_token":"a","expiry_date":42}"#),
            42
        );
        assert_eq!(q.token_expiry(PROVIDER_TYPE, r#"{"access_token":"a"}"#), 1);
        assert_eq!(q.token_expiry(PROVIDER_TYPE, "garbage"), 0);
    }

    #[test]
    fn a_fresh_credential_is_returned_unchanged_unless_refused() {
        let q = Qwen::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let fresh = json!({"access_token": "a1", "refresh_token": "r1", "expiry_date": now_ms() + 3_600_000}).to_string();
        let req = |t: &str| RefreshRequest {
            provider_type: PROVIDER_TYPE.into(),
            account_uuid: "u".into(),
            // An unreachable token endpoint: a call there fails.
            account:
                json!({"QWEN_TOKEN_URL": "http://127.0.0.1:9/token", "QWEN_OAUTH_CLIENT_ID": "c"})
                    .to_string()
                    .into(),
            token: t.into(),
            options: "{}".into(),
        };
        let out = rt
            .block_on(q.refresh_token(req(&fresh)))
            .expect("unchanged");
        assert_eq!(out, fresh);
        q.refused.add("a1", now_ms());
        assert!(
            rt.block_on(q.refresh_token(req(&fresh))).is_err(),
            "a refused token is refreshed for real"
        );
    }
}
