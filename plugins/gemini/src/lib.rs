//! Provider plugin `gemini`: Google's Code Assist API (`cloudcode-pa.googleapis.com`,
//! `v1internal`) with Google OAuth accounts, for the provider types `gemini-cli-oauth` (Gemini
//! CLI) and `gemini-antigravity` (Antigravity). Protocol `gemini`: the host hands over a Gemini
//! `generateContent` body and gets plain Gemini responses back (unary JSON, or one stream
//! event per `GenerateContentResponse`).
//!
//! What the plugin owns, by module:
//! - [`settings`]: the account's fields (URLs, project, OAuth client, inline credentials);
//! - [`credentials`]: the Google credential JSON and its refresh at the token endpoint;
//! - [`request`]: model mapping, request pre-processing, the `{model, project, request}`
//!   envelope, headers, the local model list;
//! - [`discovery`]: the project, when the account names none (`loadCodeAssist`/`onboardUser`),
//!   cached per account;
//! - [`response`]: unwrapping `{"response": …}` (unary and SSE), checking streams before handing
//!   them over, `anti-*` continuation;
//! - [`errors`]: upstream status → [`AccountAction`] and retry hints.
//!
//! Refresh: the host decides when (`refreshAheadMs`: 20 min before `expiry_date`, or after a
//! REFRESH reply) and serialises refreshes per account across instances. Google does not rotate
//! refresh tokens, so a host waiting on another instance's refresh cannot tell it happened by
//! the refresh token; the plugin therefore answers a refresh request for a credential that is
//! already fresh — and was not just refused upstream in this process — with that credential,
//! unchanged, without calling the token endpoint. One expiry costs one token-endpoint call.
//!
//! Accounts without a stored token may carry `…_OAUTH_CREDS_BASE64`: the plugin refreshes
//! those itself and keeps the result in memory only, as the original does.

#![allow(non_local_definitions)]

pub mod credentials;
pub mod discovery;
pub mod errors;
pub mod request;
pub mod response;
pub mod settings;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abi_stable::std_types::ROption;
use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{
    AccountAction, Operation, Provider, ProviderRequest, RefreshRequest, Reply,
};
use serde_json::{Value, json};

use credentials::Credential;
use discovery::{Discovered, Projects};
use response::{Call, Continuation, Sent, Shaping};
use settings::{Kind, REFRESH_AHEAD_MS, Settings};

/// Access tokens the upstream refused in this process, remembered (hashed) so a forced
/// refresh of a credential that still looks fresh goes through. Bounded.
#[derive(Default)]
struct Refused(Mutex<HashSet<u64>>);

const REFUSED_MAX: usize = 4096;

fn hash_of(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Refused {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn add(&self, access_token: &str) {
        let mut s = self.set();
        if s.len() >= REFUSED_MAX {
            s.clear();
        }
        s.insert(hash_of(access_token));
    }
    fn contains(&self, access_token: &str) -> bool {
        self.set().contains(&hash_of(access_token))
    }
    fn remove(&self, access_token: &str) {
        self.set().remove(&hash_of(access_token));
    }
}

/// Inline (`…_OAUTH_CREDS_BASE64`) credentials: the source text and the current credential.
#[derive(Default)]
struct InlineCred {
    source: String,
    token: String,
}

type InlineSlot = Arc<tokio::sync::Mutex<InlineCred>>;

#[derive(Default)]
pub struct Gemini {
    projects: Projects,
    refused: Refused,
    inline: Mutex<HashMap<String, InlineSlot>>,
}

fn client_error(message: &str) -> Reply {
    let mut r = Reply::status(
        400,
        errors::google_error_body(400, "INVALID_ARGUMENT", message),
    );
    r.action = AccountAction::CLIENT_ERROR;
    r
}

/// A 401 the plugin reports itself (a credential without an access token).
fn needs_refresh(message: &str) -> Reply {
    let mut r = Reply::status(
        401,
        errors::google_error_body(401, "UNAUTHENTICATED", message),
    );
    r.action = AccountAction::REFRESH;
    r
}

impl Gemini {
    /// Exchanges the credential's refresh token; the new credential as JSON.
    async fn exchange(
        &self,
        settings: &Settings,
        client: &reqwest::Client,
        cred: &Credential,
    ) -> Result<String, PluginError> {
        let rt = cred.refresh_token().ok_or_else(|| {
            PluginError::invalid_input("the Google credential has no refresh_token")
        })?;
        let p = settings.kind.prefix();
        let (Some(id), Some(secret)) = (
            settings.client_id.as_deref(),
            settings.client_secret.as_deref(),
        ) else {
            return Err(PluginError::invalid_input(format!(
                "no OAuth client configured for token refresh: set {p}_OAUTH_CLIENT_ID and {p}_OAUTH_CLIENT_SECRET (account field or environment)"
            )));
        };
        let grant = credentials::exchange(client, &settings.token_url, id, secret, rt).await?;
        if let Some(a) = cred.access_token() {
            self.refused.remove(a);
        }
        tracing::info!(
            rotated = grant.refresh_token.is_some(),
            "Google access token refreshed"
        );
        Ok(cred.refreshed(&grant, now_ms()))
    }

    /// Records what a reply means for the plugin's own state.
    fn note(&self, reply: Reply, cred: &Credential, project_key: Option<&str>) -> Reply {
        if reply.action == AccountAction::REFRESH
            && let Some(a) = cred.access_token()
        {
            self.refused.add(a);
        }
        if reply.status == 403
            && let Some(k) = project_key
        {
            // Access to the discovered project was refused: discover it again next time.
            self.projects.forget(k);
        }
        reply
    }

    async fn generate(
        &self,
        req: &ProviderRequest,
        settings: &Settings,
        client: &reqwest::Client,
        timeout: Duration,
        token_json: &str,
    ) -> Result<Reply, PluginError> {
        let cred = Credential::parse(token_json)?;
        let Some(auth) = cred.authorization() else {
            return Ok(needs_refresh("the Google credential has no access_token"));
        };
        let kind = settings.kind;
        let mapped = request::map_model(kind, &req.model);
        let model = mapped.upstream.as_str();
        let prepared = match request::prepare_request(&req.body, model) {
            Ok(r) => r,
            Err(m) => return Ok(client_error(&m)),
        };
        let key = format!("{}/{}", req.provider_type, req.account_uuid);
        let discovered_key = settings.project_id.is_none().then_some(key.as_str());
        let project = match &settings.project_id {
            Some(p) => p.clone(),
            None => match self
                .projects
                .resolve(
                    &key,
                    settings,
                    settings
                        .base_urls
                        .first()
                        .map_or(settings::DEFAULT_BASE_URL, String::as_str),
                    &auth,
                    client,
                    timeout,
                )
                .await?
            {
                Discovered::Project(p) => p,
                Discovered::Refused(r) => return Ok(self.note(r, &cred, None)),
            },
        };
        let mut env = request::envelope(model, &project, prepared);
        if kind == Kind::Antigravity {
            request::antigravity_adapt(&mut env, model);
        }
        // Antigravity runs Claude models as a stream even for unary requests.
        let collect = kind == Kind::Antigravity && !req.stream && model.starts_with("claude-");
        let streaming = req.stream || collect;
        let method = if streaming {
            "v1internal:streamGenerateContent?alt=sse"
        } else {
            "v1internal:generateContent"
        };
        let mut headers = vec![
            ("authorization", auth.clone()),
            ("content-type", "application/json".to_string()),
            ("user-agent", request::user_agent(kind, model)),
        ];
        match kind {
            Kind::Cli => headers.push(("x-goog-api-client", request::API_CLIENT.to_string())),
            Kind::Antigravity if streaming => {
                headers.push(("accept", "text/event-stream".to_string()))
            }
            Kind::Antigravity => {}
        }
        let shaping = Shaping {
            usage_on_final_only: kind == Kind::Antigravity,
        };
        let n = settings.base_urls.len();
        let mut last_err = PluginError::internal("no Code Assist base URL configured");
        for (i, base) in settings.base_urls.iter().enumerate() {
            let more = i + 1 < n;
            let call = Call {
                client: client.clone(),
                url: kit::join_url(base, method),
                headers: headers.clone(),
                timeout,
            };
            let sent = match call.post(&env).await {
                Ok(s) => s,
                Err(e) if more => {
                    tracing::warn!(base = %base, error = %e, "Code Assist host unreachable; trying the next one");
                    last_err = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reply = match sent {
                // A rate limit without a hint on one host: the next host may serve.
                Sent::Refused(r) if more && r.status == 429 && r.retry_after_ms == 0 => continue,
                Sent::Refused(r) => r,
                Sent::Ok(resp) if collect => response::collect(resp).await?,
                Sent::Ok(resp) if req.stream => {
                    let cont = mapped
                        .anti
                        .then(|| Continuation::new(call.clone(), env.clone()));
                    response::stream(resp, cont, shaping).await?
                }
                Sent::Ok(resp) => response::unary(resp).await?,
            };
            return Ok(self.note(reply, &cred, discovered_key));
        }
        Err(last_err)
    }

    fn inline_slot(&self, key: &str) -> InlineSlot {
        self.inline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// The inline credential, decoded when its source changed and refreshed when due (or
    /// `force`d after the upstream refused `refused`).
    async fn inline_token(
        &self,
        slot: &InlineSlot,
        b64: &str,
        settings: &Settings,
        client: &reqwest::Client,
        refused: Option<&str>,
    ) -> Result<String, PluginError> {
        let mut g = slot.lock().await;
        if g.source != b64 {
            let raw = credentials::decode_base64(b64)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "{}_OAUTH_CREDS_BASE64 is not base64 text",
                        settings.kind.prefix()
                    ))
                })?;
            Credential::parse(&raw)?;
            g.token = raw;
            g.source = b64.to_string();
        }
        let cred = Credential::parse(&g.token)?;
        let stale = match refused {
            Some(r) => g.token == r,
            None => !cred.is_fresh(now_ms()),
        };
        if stale {
            g.token = self.exchange(settings, client, &cred).await?;
        }
        Ok(g.token.clone())
    }

    async fn generate_inline(
        &self,
        req: &ProviderRequest,
        settings: &Settings,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> Result<Reply, PluginError> {
        let Some(b64) = settings.creds_base64.as_deref() else {
            return Err(PluginError::invalid_input(format!(
                "account {} has no credential: the host stores no token for it and it has no {}_OAUTH_CREDS_BASE64",
                req.account_uuid,
                settings.kind.prefix()
            )));
        };
        let slot = self.inline_slot(&format!("{}/{}", req.provider_type, req.account_uuid));
        let token = self
            .inline_token(&slot, b64, settings, client, None)
            .await?;
        let reply = self
            .generate(req, settings, client, timeout, &token)
            .await?;
        if reply.action != AccountAction::REFRESH {
            return Ok(reply);
        }
        let token = self
            .inline_token(&slot, b64, settings, client, Some(&token))
            .await?;
        self.generate(req, settings, client, timeout, &token).await
    }
}

impl Provider for Gemini {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": [Kind::CLI_TYPE, Kind::ANTIGRAVITY_TYPE],
            "protocol": "gemini",
            "checkModel": request::CLI_FALLBACK_MODEL,
            "models": {
                Kind::CLI_TYPE: request::CLI_MODELS,
                Kind::ANTIGRAVITY_TYPE: request::ANTIGRAVITY_MODELS,
            },
            "refreshAheadMs": REFRESH_AHEAD_MS,
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        let kind = Kind::of(&req.provider_type).ok_or_else(|| {
            PluginError::unsupported(format!(
                "provider type {} is not served by the gemini plugin",
                req.provider_type
            ))
        })?;
        match req.operation {
            Operation::GENERATE => {}
            Operation::LIST_MODELS => return Ok(Reply::ok(request::model_list(kind).to_string())),
            other => {
                return Err(PluginError::unsupported(format!(
                    "operation {} is not supported by the gemini plugin",
                    other.0
                )));
            }
        }
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(kind, &account)?;
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let timeout = match req.timeout_ms {
            0 => kit::DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        match &req.token {
            ROption::RSome(t) => self.generate(&req, &settings, &client, timeout, t).await,
            ROption::RNone => {
                self.generate_inline(&req, &settings, &client, timeout)
                    .await
            }
        }
    }

    async fn refresh_token(&self, req: RefreshRequest) -> Result<String, PluginError> {
        let kind = Kind::of(&req.provider_type).ok_or_else(|| {
            PluginError::unsupported(format!(
                "provider type {} is not served by the gemini plugin",
                req.provider_type
            ))
        })?;
        let account: Value = serde_json::from_str(&req.account)?;
        let settings = Settings::from_account(kind, &account)?;
        let cred = Credential::parse(&req.token)?;
        if let Some(a) = cred.access_token()
            && cred.is_fresh(now_ms())
            && !self.refused.contains(a)
        {
            // Already refreshed (by another instance, or another request before the lock).
            return Ok(req.token.to_string());
        }
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        self.exchange(&settings, &client, &cred).await
    }

    fn token_expiry(&self, _provider_type: &str, token: &str) -> i64 {
        Credential::parse(token).map(|c| c.expiry_ms()).unwrap_or(0)
    }
}

aiclient_sdk::export_provider! {
    name: "gemini",
    description: "Google Code Assist (Gemini CLI and Antigravity OAuth accounts)",
    create: |_config: Value| async move { Ok(Gemini::default()) },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_both_types_and_the_refresh_window() {
        let d = Gemini::default().describe();
        assert_eq!(d["protocol"], "gemini");
        assert_eq!(
            d["providerTypes"],
            json!(["gemini-cli-oauth", "gemini-antigravity"])
        );
        assert_eq!(d["refreshAheadMs"], 20 * 60 * 1000);
        assert_eq!(d["models"]["gemini-cli-oauth"][0], "gemini-2.5-flash");
    }

    #[test]
    fn token_expiry_reads_expiry_date() {
        let g = Gemini::default();
        assert_eq!(
            g.token_expiry(
                "gemini-cli-oauth",
                r#"{"access_token":"a","expiry_date":123}"#
            ),
            123
        );
        assert_eq!(g.token_expiry("gemini-cli-oauth", "not json"), 0);
    }

    #[test]
    fn refused_tokens_are_remembered() {
        let r = Refused::default();
        r.add("tok");
        assert!(r.contains("tok") && !r.contains("other"));
        r.remove("tok");
        assert!(!r.contains("tok"));
    }
}
