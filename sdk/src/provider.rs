//! The provider-plugin interface: a plugin serves one or more provider types (for example
//! `claude-kiro-oauth`) by talking to their upstream.
//!
//! Division of labour: the **host** picks the account, converts the client's protocol to the
//! plugin's protocol and back, and owns every policy (retries, switching accounts, health,
//! cooldowns, refresh coordination across instances). The **plugin** builds and sends the
//! upstream request with the account's credentials, parses the upstream's answer into its
//! protocol (`describe().protocol`: `openai`, `openaiResponses`, `claude` or `gemini`), and
//! reports facts — the HTTP status, retry hints, and what the outcome means for the account
//! ([`AccountAction`]). A non-2xx upstream answer is a normal [`ProviderReply`], not an error;
//! [`PluginError`] is for failures to get an answer at all (connect, timeout, malformed stream).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RString, RVec},
};
use async_ffi::{BorrowingFfiFuture, FfiFuture};
use futures_util::Stream;
use futures_util::stream::StreamExt;

use crate::runtime::guard;
use crate::{HostContext, PluginError, PluginInfo};

/// What the host asks for.
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation(pub u8);

impl Operation {
    /// Generate content (`body` is a chat/messages/generateContent request in the plugin's
    /// protocol); streams when `ProviderRequest::stream`.
    pub const GENERATE: Self = Self(1);
    /// Count tokens (`body` as for GENERATE); reply body `{"input_tokens": n}`.
    pub const COUNT_TOKENS: Self = Self(2);
    /// List the models the account can use; reply body: the upstream's model list.
    pub const LIST_MODELS: Self = Self(3);
}

/// One call from the host. All JSON travels as text.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ProviderRequest {
    pub operation: Operation,
    pub provider_type: RString,
    pub model: RString,
    pub stream: bool,
    /// The request body in the plugin's protocol.
    pub body: RString,
    pub account_uuid: RString,
    /// The account's object as in `provider_pools.json` (base URLs, API keys, project ids…).
    pub account: RString,
    /// The account's credential JSON in its original shape, if it has one.
    pub token: ROption<RString>,
    /// For logs and upstream request ids.
    pub request_id: RString,
    /// Give up on the upstream after this long (ms; 0 = the plugin's default).
    pub timeout_ms: u64,
    /// Host settings for this call as a JSON object (e.g. `{"proxy": "socks5://…"}`).
    pub options: RString,
}

/// What an upstream outcome means for the account that served it.
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountAction(pub u8);

impl AccountAction {
    /// Nothing beyond the status's usual meaning.
    pub const NONE: Self = Self(0);
    /// The credential was refused: refresh the token, then retry.
    pub const REFRESH: Self = Self(1);
    /// The account cannot serve (suspended, revoked): mark unhealthy now.
    pub const UNHEALTHY: Self = Self(2);
    /// Rate limited: do not use the account until `action_until`.
    pub const COOLDOWN: Self = Self(3);
    /// Out of quota: unhealthy until `action_until` (scheduled recovery).
    pub const QUOTA: Self = Self(4);
    /// The client's request was at fault (e.g. 400): never penalise the account.
    pub const CLIENT_ERROR: Self = Self(5);
    /// A transient upstream problem (e.g. overloaded): try another account, count no error.
    pub const SWITCH: Self = Self(6);
}

/// One event of a streaming reply, in the plugin's protocol: SSE `event:` name (empty if none)
/// and the `data:` payload (JSON text).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    pub event: RString,
    pub data: RString,
}

impl StreamEvent {
    pub fn new(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            event: RString::from(event.into()),
            data: RString::from(data.into()),
        }
    }
}

/// A streaming reply as it crosses the boundary; events come in batches to keep crossings
/// few for tiny chunks.
#[sabi_trait]
pub trait FfiEventStream: Send {
    /// The next batch (never empty); `None` at the end of the stream.
    #[sabi(last_prefix_field)]
    fn next(&mut self) -> BorrowingFfiFuture<'_, RResult<ROption<RVec<StreamEvent>>, PluginError>>;
}

pub type EventStreamObject = FfiEventStream_TO<'static, RBox<()>>;

/// The plugin's answer.
#[repr(C)]
#[derive(StableAbi)]
pub struct ProviderReply {
    /// The upstream's HTTP status (200 for a stream that started).
    pub status: u16,
    /// The unary body, or the upstream's error body (JSON text where the upstream sent JSON).
    pub body: RString,
    /// The events of a successful streaming call.
    pub stream: ROption<EventStreamObject>,
    /// The upstream's retry hint in ms (`Retry-After`, `retryDelay`, …); 0 if none.
    pub retry_after_ms: i64,
    pub action: AccountAction,
    /// For COOLDOWN and QUOTA: until when (ms since the epoch).
    pub action_until: i64,
}

/// Asks the plugin to refresh an account's token.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct RefreshRequest {
    pub provider_type: RString,
    pub account_uuid: RString,
    pub account: RString,
    /// The current credential JSON (holds the refresh token).
    pub token: RString,
    pub options: RString,
}

/// The FFI-safe provider interface the host calls.
#[sabi_trait]
pub trait FfiProvider: Send + Sync {
    /// JSON: `{"providerTypes": [...], "protocol": "...", "models": {"<type>": [...]},
    /// "refreshAheadMs": n}`.
    fn describe(&self) -> RString;

    fn call(&self, request: ProviderRequest) -> FfiFuture<RResult<ProviderReply, PluginError>>;

    /// Exchanges the refresh token for a new credential JSON in the same shape. The host
    /// serialises refreshes (one per account across instances) and stores the result.
    fn refresh_token(&self, request: RefreshRequest) -> FfiFuture<RResult<RString, PluginError>>;

    /// When the credential expires (ms since the epoch), 0 if unknown.
    fn token_expiry(&self, provider_type: RString, token: RString) -> i64;

    /// Escape hatch for operations newer than this interface.
    #[sabi(last_prefix_field)]
    fn extension(
        &self,
        name: RString,
        payload: RString,
    ) -> FfiFuture<RResult<RString, PluginError>>;
}

pub type ProviderObject = FfiProvider_TO<'static, RArc<()>>;

/// The root module of a provider plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ProviderModRef)))]
#[sabi(missing_field(panic))]
pub struct ProviderMod {
    pub info: extern "C" fn() -> PluginInfo,
    pub init: extern "C" fn(HostContext),
    /// Add new fields below this one only.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(RString) -> FfiFuture<RResult<ProviderObject, PluginError>>,
}

impl RootModule for ProviderModRef {
    declare_root_module_statics! {ProviderModRef}
    const BASE_NAME: &'static str = crate::PROVIDER_BASE_NAME;
    const NAME: &'static str = "aiclient provider plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// A plugin-side event stream: anything that yields events or an error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, PluginError>> + Send>>;

/// A plugin-side reply; [`Reply::ok`], [`Reply::stream`] and [`Reply::status`] build the usual
/// ones.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub stream: Option<EventStream>,
    pub retry_after_ms: i64,
    pub action: AccountAction,
    pub action_until: i64,
}

impl Reply {
    pub fn ok(body: String) -> Self {
        Self::status(200, body)
    }
    pub fn stream(events: EventStream) -> Self {
        Self {
            stream: Some(events),
            ..Self::status(200, String::new())
        }
    }
    pub fn status(status: u16, body: String) -> Self {
        Self {
            status,
            body,
            stream: None,
            retry_after_ms: 0,
            action: AccountAction::NONE,
            action_until: 0,
        }
    }
}

/// What a provider plugin author implements.
pub trait Provider: Send + Sync + 'static {
    /// Which provider types this plugin serves, its protocol, its static model lists.
    fn describe(&self) -> serde_json::Value;

    fn call(
        &self,
        request: ProviderRequest,
    ) -> impl Future<Output = Result<Reply, PluginError>> + Send;

    fn refresh_token(
        &self,
        request: RefreshRequest,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let err = PluginError::unsupported(format!(
            "{} accounts have no refreshable token",
            request.provider_type
        ));
        async move { Err(err) }
    }

    fn token_expiry(&self, _provider_type: &str, _token: &str) -> i64 {
        0
    }

    fn extension(
        &self,
        name: &str,
        _payload: String,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let err = PluginError::unsupported(format!("extension {name:?} is not supported"));
        async move { Err(err) }
    }
}

/// Most events per batch: enough to amortise the crossing, small enough to keep latency.
const BATCH: usize = 64;

/// A plugin's event stream as exported; `ended` keeps a finished stream from being polled
/// again (many streams panic if polled after their end).
struct EventStreamExport(EventStream, bool);

impl FfiEventStream for EventStreamExport {
    fn next(&mut self) -> BorrowingFfiFuture<'_, RResult<ROption<RVec<StreamEvent>>, PluginError>> {
        guard(async move {
            if self.1 {
                return Ok(ROption::RNone);
            }
            let Some(first) = self.0.next().await else {
                self.1 = true;
                return Ok(ROption::RNone);
            };
            let mut batch = RVec::with_capacity(4);
            batch.push(first?);
            // Take whatever else is ready now, without waiting.
            while batch.len() < BATCH {
                match futures_util::FutureExt::now_or_never(self.0.next()) {
                    Some(Some(Ok(ev))) => batch.push(ev),
                    Some(Some(Err(e))) => {
                        // Deliver what we have; the error comes with the next call.
                        let err_stream = futures_util::stream::once(async move { Err(e) });
                        let rest =
                            std::mem::replace(&mut self.0, Box::pin(futures_util::stream::empty()));
                        self.0 = Box::pin(err_stream.chain(rest));
                        break;
                    }
                    Some(None) => {
                        self.1 = true;
                        break;
                    }
                    None => break,
                }
            }
            Ok(ROption::RSome(batch))
        })
    }
}

pub struct ProviderExport<T>(pub Arc<T>);

impl<T: Provider> FfiProvider for ProviderExport<T> {
    fn describe(&self) -> RString {
        crate::runtime::catch(|| Ok(self.0.describe().to_string()))
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
            .into()
    }
    fn call(&self, request: ProviderRequest) -> FfiFuture<RResult<ProviderReply, PluginError>> {
        let p = self.0.clone();
        guard(async move {
            let r = p.call(request).await?;
            Ok(ProviderReply {
                status: r.status,
                body: r.body.into(),
                stream: r
                    .stream
                    .map(|s| {
                        FfiEventStream_TO::from_value(
                            EventStreamExport(s, false),
                            abi_stable::sabi_trait::TD_Opaque,
                        )
                    })
                    .into(),
                retry_after_ms: r.retry_after_ms,
                action: r.action,
                action_until: r.action_until,
            })
        })
    }
    fn refresh_token(&self, request: RefreshRequest) -> FfiFuture<RResult<RString, PluginError>> {
        let p = self.0.clone();
        guard(async move { Ok(p.refresh_token(request).await?.into()) })
    }
    fn token_expiry(&self, provider_type: RString, token: RString) -> i64 {
        crate::runtime::catch(|| Ok(self.0.token_expiry(&provider_type, &token))).unwrap_or(0)
    }
    fn extension(
        &self,
        name: RString,
        payload: RString,
    ) -> FfiFuture<RResult<RString, PluginError>> {
        let p = self.0.clone();
        guard(async move { Ok(p.extension(&name, payload.into()).await?.into()) })
    }
}

pub fn into_object<T: Provider>(provider: T) -> ProviderObject {
    FfiProvider_TO::from_ptr(
        RArc::new(ProviderExport(Arc::new(provider))),
        abi_stable::sabi_trait::TD_Opaque,
    )
}
