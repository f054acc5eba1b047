//! Provider plugin `claude-kiro-oauth`: Kiro (Amazon Q Developer / CodeWhisperer) accounts
//! signed in with Kiro's OAuth (`social`) or AWS SSO-OIDC (`IdC`, `builder-id`), served as the
//! **claude** protocol (`shared/reference/providers/kiro.md`).
//!
//! The host hands this plugin an Anthropic Messages body; the plugin converts it to Kiro's
//! `conversationState` ([`request`]), posts it to `generateAssistantResponse` with the Kiro
//! IDE's headers, decodes the AWS binary event stream ([`eventstream`], both CRCs checked) and
//! answers in Claude shape: unary Messages JSON, or Claude SSE events from `message_start` to
//! `message_stop` ([`response`]). Refusals become facts for the host ([`status`]); tokens are
//! read, refreshed per auth method and region, and written back in their original camelCase
//! shape ([`creds`]).
//!
//! Per account (`provider_pools.json` entry): `KIRO_BASE_URL` (inference URL),
//! `KIRO_REFRESH_URL` (social refresh), `KIRO_REFRESH_IDC_URL` (OIDC refresh); empty means the
//! default, `{{region}}` is replaced by the credential's `region` (`idcRegion` for OIDC).
//!
//! A streamed answer is returned only once its first content has arrived: an HTTP refusal or
//! an exception frame before any content is a normal non-2xx [`Reply`], so the host can still
//! switch accounts (the original sent `message_start` before calling the upstream, which
//! ruled that out). After content has reached the client, a failure ends the stream with an
//! error.

#![allow(non_local_definitions)]

pub mod creds;
pub mod eventstream;
pub mod request;
pub mod response;
pub mod status;

use std::collections::VecDeque;
use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{
    AccountAction, EventStream, Operation, Provider, ProviderRequest, RefreshRequest, Reply,
    StreamEvent,
};
use aiclient_sdk::{ErrorCode, PluginError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

use crate::creds::Creds;
use crate::eventstream::Decoder;
use crate::response::{Assembler, Exception, event_of};

pub const PROVIDER_TYPE: &str = "claude-kiro-oauth";
/// Refresh a token this long before it expires (the original's 30 minutes).
pub const REFRESH_AHEAD_MS: i64 = 30 * 60 * 1000;
/// Upstream timeout when the host gives none: for the answer to start, and then between
/// two chunks of it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_ERROR_BODY: usize = 64 << 10;
pub const CHECK_MODEL: &str = "claude-haiku-4-5";

pub struct Kiro;

/// A 400 for the client's own request.
fn client_error(message: &str) -> Reply {
    let mut r = Reply::status(
        400,
        json!({"message": message, "reason": "INVALID_REQUEST"}).to_string(),
    );
    r.action = AccountAction::CLIENT_ERROR;
    r
}

/// The reply for an exception frame that ended the answer before it could be used.
fn exception_reply(e: &Exception) -> Reply {
    let status = status::exception_status(&e.kind);
    let body = json!({"message": e.message, "reason": e.kind}).to_string();
    let now = now_ms();
    let (action, until) = status::classify(status, &body, 0, now);
    let mut r = Reply::status(status, body);
    r.action = action;
    r.action_until = until;
    r
}

fn malformed(e: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(format!("malformed Kiro event stream: {e}"))
}

/// The upstream body, decoded into events.
struct Upstream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: Decoder,
    idle: Duration,
    ended: bool,
}

impl Upstream {
    fn new(resp: reqwest::Response, idle: Duration) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            decoder: Decoder::default(),
            idle,
            ended: false,
        }
    }

    /// The next event; `Ok(None)` at a clean end of the stream.
    async fn next_event(&mut self) -> Result<Option<response::KiroEvent>, PluginError> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return event_of(&frame).map(Some).map_err(malformed),
                Ok(None) => {}
                Err(e) => return Err(malformed(e)),
            }
            if self.ended {
                return self.decoder.finish().map(|()| None).map_err(malformed);
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    return Err(PluginError::timeout(format!(
                        "Kiro sent nothing for {} s",
                        self.idle.as_secs()
                    )));
                }
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => return Err(kit::transport_error(e)),
                Ok(Some(Ok(bytes))) => self.decoder.push(&bytes),
            }
        }
    }
}

struct StreamState {
    up: Upstream,
    asm: Assembler,
    queue: VecDeque<StreamEvent>,
    error: Option<PluginError>,
    done: bool,
}

async fn unary(mut up: Upstream, mut asm: Assembler) -> Result<Reply, PluginError> {
    let mut events = Vec::new();
    asm.start(&mut events);
    while let Some(ev) = up.next_event().await? {
        if let Err(e) = asm.push(ev, &mut events) {
            return Ok(exception_reply(&e));
        }
    }
    asm.finish(&mut events);
    let mut msg = response::fold(&events);
    response::finalize_unary(&mut msg);
    Ok(Reply::ok(msg.to_string()))
}

async fn streaming(mut up: Upstream, mut asm: Assembler) -> Result<Reply, PluginError> {
    let mut first = Vec::new();
    asm.start(&mut first);
    let mut done = false;
    // Hold the answer until its first content: a refusal before that can still switch accounts.
    while !asm.has_content() {
        match up.next_event().await? {
            Some(ev) => {
                if let Err(e) = asm.push(ev, &mut first) {
                    return Ok(exception_reply(&e));
                }
            }
            None => {
                asm.finish(&mut first);
                done = true;
                break;
            }
        }
    }
    let st = StreamState {
        up,
        asm,
        queue: first.into(),
        error: None,
        done,
    };
    let events: EventStream = Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            if let Some(e) = st.error.take() {
                return Some((Err(e), st));
            }
            if st.done {
                return None;
            }
            let mut out = Vec::new();
            match st.up.next_event().await {
                Ok(Some(ev)) => {
                    if let Err(e) = st.asm.push(ev, &mut out) {
                        st.done = true;
                        st.error = Some(PluginError::new(
                            ErrorCode::UNAVAILABLE,
                            format!("Kiro ended the answer with {}: {}", e.kind, e.message),
                        ));
                    }
                }
                Ok(None) => {
                    st.asm.finish(&mut out);
                    st.done = true;
                }
                Err(e) => {
                    st.done = true;
                    st.error = Some(e);
                }
            }
            st.queue.extend(out);
        }
    }));
    Ok(Reply::stream(events))
}

impl Kiro {
    async fn generate(&self, req: &ProviderRequest, account: &Value) -> Result<Reply, PluginError> {
        let body: Value = match serde_json::from_str(&req.body) {
            Ok(v) => v,
            Err(e) => return Ok(client_error(&format!("the request body is not JSON: {e}"))),
        };
        let token = req.token.as_ref().into_option().ok_or_else(|| {
            PluginError::new(
                ErrorCode::UNAUTHORIZED,
                format!("Kiro account {} has no credential", req.account_uuid),
            )
        })?;
        let creds = Creds::parse(token)?;
        let Some(access) = creds.access_token.clone() else {
            // Nothing to call with: ask the host for a refresh.
            let mut r = Reply::status(
                401,
                json!({"message": "the credential has no accessToken"}).to_string(),
            );
            r.action = AccountAction::REFRESH;
            return Ok(r);
        };
        let model = if req.model.is_empty() {
            body.get("model")
                .and_then(Value::as_str)
                .unwrap_or(CHECK_MODEL)
                .to_string()
        } else {
            req.model.to_string()
        };
        let profile_arn = creds.profile_arn.as_deref().filter(|_| creds.is_social());
        let built = match request::build(&body, &model, profile_arn) {
            Ok(b) => b,
            Err(m) => return Ok(client_error(&m)),
        };
        let node =
            kit::account_str(account, "uuid").unwrap_or_else(|| req.account_uuid.to_string());
        let (x_amz_ua, ua) = creds::user_agents(&creds::machine_id(Some(&node), &creds));
        let client = kit::client(kit::proxy_of(&req.options).as_deref())?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let send = client
            .post(creds::inference_url(account, &creds.region))
            .header("authorization", format!("Bearer {access}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("amz-sdk-invocation-id", uuid::Uuid::new_v4().to_string())
            .header("amz-sdk-request", "attempt=1; max=3")
            .header("x-amzn-codewhisperer-optout", "true")
            .header("x-amzn-kiro-agent-mode", "vibe")
            .header("x-amz-user-agent", x_amz_ua)
            .header("user-agent", ua)
            .header("connection", "close")
            .body(built.body.to_string())
            .send();
        let resp = match tokio::time::timeout(timeout, send).await {
            Err(_) => {
                return Err(PluginError::timeout(format!(
                    "Kiro did not answer within {} s",
                    timeout.as_secs()
                )));
            }
            Ok(r) => r.map_err(kit::transport_error)?,
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let retry = kit::retry_after_ms(resp.headers());
            let text = creds::read_capped(resp, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            let (action, until) = status::classify(status, &text, retry, now_ms());
            let mut r = Reply::status(status, text);
            r.retry_after_ms = retry;
            r.action = action;
            r.action_until = until;
            return Ok(r);
        }
        let window = request::context_window(&request::model_id(&model));
        let asm = Assembler::new(
            &model,
            built.tool_names,
            built.thinking,
            built.input_estimate,
            window,
        );
        let up = Upstream::new(resp, timeout);
        if req.stream {
            streaming(up, asm).await
        } else {
            unary(up, asm).await
        }
    }
}

impl Provider for Kiro {
    fn describe(&self) -> Value {
        json!({
            "providerTypes": [PROVIDER_TYPE],
            "protocol": "claude",
            "checkModel": CHECK_MODEL,
            "models": { PROVIDER_TYPE: request::MODELS },
            "refreshAheadMs": REFRESH_AHEAD_MS,
        })
    }

    async fn call(&self, req: ProviderRequest) -> Result<Reply, PluginError> {
        let account: Value = serde_json::from_str(&req.account)?;
        match req.operation {
            Operation::GENERATE => self.generate(&req, &account).await,
            Operation::COUNT_TOKENS => {
                let body: Value = match serde_json::from_str(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return Ok(client_error(&format!("the request body is not JSON: {e}")));
                    }
                };
                match request::build(&body, &req.model, None) {
                    Ok(b) => Ok(Reply::ok(
                        json!({"input_tokens": b.input_estimate}).to_string(),
                    )),
                    Err(m) => Ok(client_error(&m)),
                }
            }
            Operation::LIST_MODELS => {
                let models: Vec<Value> =
                    request::MODELS.iter().map(|m| json!({"name": m})).collect();
                Ok(Reply::ok(json!({"models": models}).to_string()))
            }
            other => Err(PluginError::unsupported(format!(
                "operation {} is not supported by {PROVIDER_TYPE}",
                other.0
            ))),
        }
    }

    async fn refresh_token(&self, request: RefreshRequest) -> Result<String, PluginError> {
        let account: Value = serde_json::from_str(&request.account)?;
        let node =
            kit::account_str(&account, "uuid").unwrap_or_else(|| request.account_uuid.to_string());
        creds::refresh(
            &account,
            &node,
            &request.token,
            kit::proxy_of(&request.options).as_deref(),
        )
        .await
    }

    fn token_expiry(&self, _provider_type: &str, token: &str) -> i64 {
        creds::expiry_ms(token)
    }
}

aiclient_sdk::export_provider! {
    name: "kiro",
    description: "Kiro (Amazon Q Developer) OAuth accounts as Claude Messages: AWS event stream, social and IdC token refresh",
    create: |_config: Value| async move { Ok(Kiro) },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself() {
        let d = Kiro.describe();
        assert_eq!(d["protocol"], "claude");
        assert_eq!(d["providerTypes"][0], PROVIDER_TYPE);
        assert_eq!(d["refreshAheadMs"], 1_800_000);
        assert_eq!(
            d["models"][PROVIDER_TYPE].as_array().map(Vec::len),
            Some(10)
        );
    }

    #[test]
    fn exception_replies_map_to_actions() {
        let r = exception_reply(&Exception {
            kind: "ThrottlingException".into(),
            message: "slow".into(),
        });
        assert_eq!((r.status, r.action), (429, AccountAction::COOLDOWN));
        let r = exception_reply(&Exception {
            kind: "ValidationException".into(),
            message: "Input is too long.".into(),
        });
        assert_eq!((r.status, r.action), (400, AccountAction::CLIENT_ERROR));
    }
}
