//! The gateway core: from a client request in any protocol to an upstream answer and back.
//!
//! For each request: decide the provider types to try (explicit choice, else `MODEL_PROVIDER`,
//! then `providerFallbackChain`, then `modelFallbackMapping`), convert the body to each type's
//! plugin protocol, pick an account, call the plugin, and act on the outcome — success counts
//! and returns (converted back), a client error returns at once without penalising anyone, an
//! account problem (refused credential, quota, rate limit, 5xx) marks the account and moves to
//! the next account, then to the next provider type.

pub mod journal;
pub mod pool;
pub mod providers;
mod refresh;
pub mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use abi_stable::std_types::{ROption, RString};
use aiclient_convert::{Protocol, StreamConverter};
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{
    AccountAction, EventStreamObject, Operation, ProviderReply, ProviderRequest,
};
use aiclient_sdk::storage::ChangeKind;
use aiclient_sdk::{ErrorCode, PluginError};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::storage::Storage;
use pool::{PoolManager, Slot};
use providers::{ProviderPlugin, ProviderRegistry};
use settings::Settings;

/// Everything request handling needs; one per process, shared by every handler.
pub struct Gateway {
    pub storage: Storage,
    pub providers: ProviderRegistry,
    pub pools: Arc<PoolManager>,
    pub settings: Arc<ArcSwap<Settings>>,
    pub instance_id: Arc<str>,
    /// `--api-key` / `AICLIENT_API_KEY`: overrides `REQUIRED_API_KEY`, as the original's flag did.
    pub api_key_override: Option<String>,
    api_key_override_digest: Option<[u8; 32]>,
    /// Serve the client APIs without any key (explicit opt-out; off by default).
    pub allow_no_api_key: bool,
    pub metrics: crate::metrics::Metrics,
    seq: AtomicU64,
}

/// What the client asked for, already parsed from its protocol.
pub struct ClientCall {
    pub protocol: Protocol,
    pub body: Bytes,
    /// The parsed body, when the endpoint needed it; conversions parse `body` otherwise.
    pub json: Option<Value>,
    pub model: String,
    pub stream: bool,
    /// From the path prefix or the `Model-Provider` header.
    pub provider: Option<String>,
    /// Gemini streams as SSE (`alt=sse`) rather than a JSON array.
    pub gemini_sse: bool,
}

/// Why no upstream answer made it to the client.
struct Failure {
    status: u16,
    message: String,
}

impl Gateway {
    pub async fn new(
        storage: Storage,
        providers: ProviderRegistry,
        instance_id: &str,
        api_key_override: Option<String>,
        allow_no_api_key: bool,
    ) -> Result<Arc<Self>, PluginError> {
        let settings = Arc::new(ArcSwap::from_pointee(load_settings(&storage).await?));
        let pools = PoolManager::load(storage.clone(), instance_id, settings.clone()).await?;
        let gw = Arc::new(Self {
            storage,
            providers,
            pools,
            settings,
            instance_id: Arc::from(instance_id),
            api_key_override_digest: api_key_override.as_deref().map(settings::key_digest),
            api_key_override,
            allow_no_api_key,
            metrics: crate::metrics::Metrics::default(),
            seq: AtomicU64::new(0),
        });
        gw.apply_plugin_states().await?;
        Ok(gw)
    }

    /// Starts the pool machinery and the follower for config and plugin changes.
    pub fn spawn_background(self: &Arc<Self>) {
        self.pools.spawn_background();
        let gw = self.clone();
        tokio::spawn(async move { gw.follow_changes().await });
        let gw = self.clone();
        tokio::spawn(async move { gw.health_checks().await });
    }

    /// Probes due unhealthy accounts with a one-token request to their check model
    /// (`checkModelName`, else the plugin's default); an answer brings the account back.
    async fn health_checks(self: Arc<Self>) {
        loop {
            let s = self.settings.load_full();
            let period =
                Duration::from_millis((s.health_check_interval_ms / 4).clamp(250, 30_000) as u64);
            tokio::time::sleep(period).await;
            if !s.health_check_enabled {
                continue;
            }
            for slot in self.pools.due_for_check(s.health_check_interval_ms) {
                let Some(plugin) = self.providers.for_type(&slot.provider_type).cloned() else {
                    continue;
                };
                if !plugin.is_enabled() {
                    continue;
                }
                let model = self.check_model(&plugin, &slot);
                let result = self.probe(&plugin, &slot, &model).await;
                self.pools.health_checked(&slot, &model, result);
            }
        }
    }

    /// Probes every unhealthy, enabled account of `ptype` now (the UI's health-check button):
    /// one result per account, `isAuthError` when the upstream refused the credential.
    pub async fn check_accounts(&self, ptype: &str) -> Result<Vec<Value>, PluginError> {
        let mut out = Vec::new();
        let Some(pool) = self.pools.pool(ptype) else {
            return Ok(out);
        };
        let Some(plugin) = self.providers.for_type(ptype).cloned() else {
            return Ok(out);
        };
        for slot in pool.slots() {
            let st = slot.state();
            if st.healthy || st.disabled {
                continue;
            }
            let model = self.check_model(&plugin, &slot);
            let r = self.probe(&plugin, &slot, &model).await;
            let (success, message) = match &r {
                Ok(()) => (true, "healthy".to_string()),
                Err(m) => (false, m.clone()),
            };
            let auth = ["401", "403", "Unauthorized", "Forbidden", "credential"]
                .iter()
                .any(|w| message.contains(w));
            out.push(serde_json::json!({"uuid": &*slot.uuid, "success": success, "modelName": model, "message": message, "isAuthError": auth}));
            self.pools.health_checked(&slot, &model, r);
        }
        Ok(out)
    }

    /// The account's `checkModelName`, else the plugin's default check model.
    fn check_model(&self, plugin: &ProviderPlugin, slot: &Slot) -> String {
        serde_json::from_str::<Value>(&slot.config())
            .ok()
            .and_then(|c| {
                c.get("checkModelName")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .or_else(|| plugin.check_model.clone())
            .unwrap_or_else(|| "gpt-4o-mini".into())
    }

    async fn probe(
        &self,
        plugin: &ProviderPlugin,
        slot: &Arc<Slot>,
        model: &str,
    ) -> Result<(), String> {
        let hi = serde_json::json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]});
        let body = if plugin.protocol == Protocol::OpenAi {
            hi
        } else {
            aiclient_convert::convert_request(Protocol::OpenAi, plugin.protocol, &hi, model)
                .map_err(|e| e.message)?
        };
        let token = self
            .fresh_token(plugin, slot, false, None)
            .await
            .map_err(|e| e.to_string())?;
        let req = ProviderRequest {
            operation: Operation::GENERATE,
            provider_type: slot.provider_type.as_ref().into(),
            model: model.into(),
            stream: false,
            body: body.to_string().into(),
            account_uuid: slot.uuid.as_ref().into(),
            account: slot.config().as_str().into(),
            token: token.as_ref().map(|t| RString::from(&**t)).into(),
            request_id: format!("{}-health", self.instance_id).into(),
            timeout_ms: 15_000,
            options: "{}".into(),
        };
        match plugin.call(req).await {
            Ok(r) if (200..300).contains(&r.status) => Ok(()),
            Ok(r) => Err(format!(
                "upstream {}: {}",
                r.status,
                upstream_message(&r.body, r.status)
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn follow_changes(self: Arc<Self>) {
        loop {
            let mut feed = match self.storage.subscribe().await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to storage changes; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Ok(Some(c)) = feed.next().await {
                let r = match c.kind {
                    ChangeKind::CONFIG => self.reload_settings().await,
                    ChangeKind::PLUGINS => self.apply_plugin_states().await,
                    ChangeKind::RESYNC => match self.reload_settings().await {
                        Ok(()) => self.apply_plugin_states().await,
                        Err(e) => Err(e),
                    },
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "applying a storage change failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn reload_settings(&self) -> Result<(), PluginError> {
        let json = self.storage.get_config().await?;
        if json.is_none() && self.settings.load().loaded {
            // The config cannot be deleted through any API: a missing one means the data went
            // away underneath (FLUSHDB, a Redis restarted without persistence). Keep serving
            // with what we have; the data-loss guard writes it back.
            tracing::warn!(
                "the stored service config is gone; keeping the current settings until it is restored"
            );
            return Ok(());
        }
        self.settings.store(Arc::new(settings_from(json)));
        Ok(())
    }

    /// Plugin enable/disable states live in the backend; a plugin with no state is enabled.
    pub async fn apply_plugin_states(&self) -> Result<(), PluginError> {
        let states = self.storage.list_plugin_states().await?;
        for p in &self.providers.plugins {
            let enabled = states
                .iter()
                .find(|s| s.name.as_str() == p.name)
                .is_none_or(|s| s.enabled);
            p.enabled.store(enabled, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The API key clients must present, if any.
    pub fn required_key(&self) -> Option<String> {
        self.api_key_override
            .clone()
            .or_else(|| self.settings.load().api_key.clone())
    }

    /// The SHA-256 of the key clients must present, if any (see [`settings::key_digest`]).
    pub fn required_key_digest(&self) -> Option<[u8; 32]> {
        self.api_key_override_digest
            .or_else(|| self.settings.load().api_key_digest)
    }

    /// Provider types to try for `model`, in order, each with the model to ask it for.
    fn plan(&self, call: &ClientCall) -> Vec<(String, String)> {
        let s = self.settings.load();
        let primary: Vec<String> = match &call.provider {
            Some(p) => vec![p.clone()],
            None => s.model_providers.clone(),
        };
        let mut plan: Vec<(String, String)> = Vec::new();
        let mut push = |t: &str, m: &str| {
            if !plan.iter().any(|(pt, pm)| pt == t && pm == m) {
                plan.push((t.to_string(), m.to_string()));
            }
        };
        for t in &primary {
            push(t, &call.model);
        }
        for t in &primary {
            for f in s.fallback_chain.get(t).into_iter().flatten() {
                push(f, &call.model);
            }
        }
        if let Some((t, m)) = s.model_fallback.get(&call.model) {
            push(t, m);
        }
        plan
    }

    /// Serves one generate call end to end.
    pub async fn generate(self: &Arc<Self>, call: ClientCall) -> Response {
        let started = std::time::Instant::now();
        let protocol = call.protocol;
        let (resp, provider) = self.generate_inner(call).await;
        let m = &self.metrics;
        m.requests
            .get_or_create(&crate::metrics::RequestLabels {
                provider: provider.clone(),
                protocol: format!("{protocol:?}"),
                status: resp.status().as_u16().to_string(),
            })
            .inc();
        m.latency
            .get_or_create(&crate::metrics::ProviderLabels { provider })
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    /// Serves the call; also says which provider type answered (`none` if no upstream did).
    async fn generate_inner(self: &Arc<Self>, call: ClientCall) -> (Response, String) {
        let mut last = Failure {
            status: 503,
            message: String::new(),
        };
        let plan = self.plan(&call);
        for (ptype, model) in &plan {
            let Some(plugin) = self.providers.for_type(ptype).cloned() else {
                last.message = format!("no provider plugin serves {ptype}");
                continue;
            };
            if !plugin.is_enabled() {
                last.message = format!("provider plugin {} is disabled", plugin.name);
                continue;
            }
            let body = match self.upstream_body(&call, plugin.protocol, model) {
                Ok(b) => b,
                Err(e) => return (error_response(call.protocol, 400, &e), "none".into()),
            };
            match self.try_type(&call, &plugin, ptype, model, body).await {
                Ok(resp) => return (resp, ptype.clone()),
                Err(f) => last = f,
            }
        }
        if last.message.is_empty() {
            last.message = format!(
                "no healthy account available for {}",
                plan.iter()
                    .map(|p| p.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        (
            error_response(call.protocol, last.status, &last.message),
            "none".into(),
        )
    }

    fn failure(&self, provider: &str, outcome: &str) {
        self.metrics
            .upstream_failures
            .get_or_create(&crate::metrics::OutcomeLabels {
                provider: provider.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn upstream_body(
        &self,
        call: &ClientCall,
        to: Protocol,
        model: &str,
    ) -> Result<RString, String> {
        if to == call.protocol && model == call.model {
            return std::str::from_utf8(&call.body)
                .map(RString::from)
                .map_err(|_| "request body is not UTF-8".to_string());
        }
        let parsed;
        let json = match &call.json {
            Some(v) => v,
            None => {
                parsed = serde_json::from_slice::<Value>(&call.body)
                    .map_err(|e| format!("invalid JSON body: {e}"))?;
                &parsed
            }
        };
        let mut v = aiclient_convert::convert_request(call.protocol, to, json, model)
            .map_err(|e| e.message)?;
        if let Some(o) = v.as_object_mut()
            && to != Protocol::Gemini
        {
            o.insert("model".into(), Value::String(model.to_string()));
            if call.stream {
                o.insert("stream".into(), Value::Bool(true));
            } else {
                o.remove("stream");
            }
        }
        Ok(v.to_string().into())
    }

    pub(crate) async fn token_for(
        &self,
        slot: &Arc<Slot>,
    ) -> Result<Option<Arc<str>>, PluginError> {
        if let Some(t) = slot.cached_token() {
            return Ok(t);
        }
        let t = self
            .storage
            .get_token(&slot.provider_type, &slot.uuid)
            .await?
            .map(Arc::from);
        slot.set_cached_token(t.clone());
        Ok(t)
    }

    async fn try_type(
        self: &Arc<Self>,
        call: &ClientCall,
        plugin: &Arc<ProviderPlugin>,
        ptype: &str,
        model: &str,
        body: RString,
    ) -> Result<Response, Failure> {
        let s = self.settings.load_full();
        let mut last = Failure {
            status: 503,
            message: format!("no healthy account available for {ptype}"),
        };
        let mut previous: Option<Arc<str>> = None;
        let (mut switches, mut same) = (0u32, 0u32);
        let options = match s.proxy_for(ptype) {
            Some(p) => serde_json::json!({ "proxy": p }).to_string(),
            None => "{}".to_string(),
        };
        // After a successful forced refresh, the same account is tried once more.
        let mut retry_after_refresh: Option<Arc<Slot>> = None;
        loop {
            let (slot, retrying) = match retry_after_refresh.take() {
                Some(s) => (s, true),
                None => match self.pools.select(ptype, model) {
                    Some(s) => (s, false),
                    None => {
                        let now = now_ms();
                        if let Some(end) = self.pools.pool(ptype).and_then(|p| p.cooldown_ends(now))
                        {
                            let secs = ((end - now) as f64 / 1000.0).ceil() as i64;
                            last = Failure {
                                status: 429,
                                message: format!(
                                    "every {ptype} account is rate limited; retry in {secs}s"
                                ),
                            };
                        }
                        return Err(last);
                    }
                },
            };
            if retrying {
                // Not a switch and not a same-account retry: the credential changed.
            } else if previous.as_deref() == Some(&*slot.uuid) {
                // The only usable account left: back off before trying it again.
                if same >= s.request_max_retries {
                    return Err(last);
                }
                let delay = s.request_base_delay_ms.saturating_mul(1 << same.min(10));
                tokio::time::sleep(Duration::from_millis(delay)).await;
                same += 1;
            } else if previous.is_some() {
                if switches >= s.credential_switch_max_retries {
                    return Err(last);
                }
                switches += 1;
            }
            previous = Some(slot.uuid.clone());
            let token = match self.fresh_token(plugin, &slot, false, None).await {
                Ok(t) => t,
                Err(e) => {
                    last = Failure {
                        status: 503,
                        message: format!("no usable credential for {ptype}/{}: {e}", slot.uuid),
                    };
                    continue;
                }
            };
            let req = ProviderRequest {
                operation: Operation::GENERATE,
                provider_type: ptype.into(),
                model: model.into(),
                stream: call.stream,
                body: body.clone(),
                account_uuid: slot.uuid.as_ref().into(),
                account: slot.config().as_str().into(),
                token: token.as_ref().map(|t| RString::from(&**t)).into(),
                request_id: format!(
                    "{}-{}",
                    self.instance_id,
                    self.seq.fetch_add(1, Ordering::Relaxed)
                )
                .into(),
                timeout_ms: 0,
                options: options.as_str().into(),
            };
            let reply = match plugin.call(req).await {
                Ok(r) => r,
                Err(e) => {
                    let status = if e.code == ErrorCode::TIMEOUT {
                        504
                    } else {
                        502
                    };
                    tracing::warn!(provider = ptype, uuid = %slot.uuid, error = %e, "upstream call failed");
                    self.failure(
                        ptype,
                        if e.code == ErrorCode::TIMEOUT {
                            "timeout"
                        } else {
                            "transport"
                        },
                    );
                    self.pools.record_error(&slot, &e.to_string());
                    last = Failure {
                        status,
                        message: e.message.to_string(),
                    };
                    continue;
                }
            };
            if (200..300).contains(&reply.status) {
                self.pools.record_success(&slot);
                return Ok(self.success(call, plugin.protocol, model, reply, slot));
            }
            let message = upstream_message(&reply.body, reply.status);
            let now = now_ms();
            if reply.action != AccountAction::CLIENT_ERROR {
                let outcome = match reply.action {
                    AccountAction::COOLDOWN => "rate_limited",
                    AccountAction::REFRESH => "credential_refused",
                    AccountAction::UNHEALTHY => "account_unusable",
                    AccountAction::QUOTA => "quota",
                    AccountAction::SWITCH => "switched",
                    _ => "upstream_error",
                };
                self.failure(ptype, outcome);
            }
            match reply.action {
                AccountAction::CLIENT_ERROR => {
                    return Ok(error_response(call.protocol, reply.status, &message));
                }
                AccountAction::COOLDOWN => {
                    let hint = if reply.action_until > now {
                        reply.action_until - now
                    } else if reply.retry_after_ms > 0 {
                        reply.retry_after_ms
                    } else {
                        s.cooldown_ms
                    };
                    self.pools
                        .cooldown(&slot, now + hint.min(s.cooldown_max_ms.max(1)));
                }
                AccountAction::REFRESH if token.is_some() && !retrying => {
                    // The credential was refused: refresh it (once per expiry, shared with
                    // every other request and instance) and try this account again.
                    match self
                        .fresh_token(plugin, &slot, true, token.as_deref())
                        .await
                    {
                        Ok(Some(_)) => retry_after_refresh = Some(slot.clone()),
                        Ok(None) => self.pools.mark_unhealthy(
                            &slot,
                            &format!("upstream {}: {message}", reply.status),
                            None,
                        ),
                        Err(_) => {} // already marked unhealthy with the refresh failure
                    }
                }
                AccountAction::UNHEALTHY | AccountAction::REFRESH => {
                    self.pools.mark_unhealthy(
                        &slot,
                        &format!("upstream {}: {message}", reply.status),
                        None,
                    );
                }
                AccountAction::SWITCH => {} // try another account; not the account's fault
                AccountAction::QUOTA => {
                    let until = (reply.action_until > now).then_some(reply.action_until);
                    self.pools
                        .mark_unhealthy(&slot, &format!("quota exhausted: {message}"), until);
                }
                _ => self
                    .pools
                    .record_error(&slot, &format!("upstream {}: {message}", reply.status)),
            }
            tracing::info!(provider = ptype, uuid = %slot.uuid, status = reply.status, "upstream refused; trying another account");
            last = Failure {
                status: reply.status,
                message,
            };
        }
    }

    fn success(
        &self,
        call: &ClientCall,
        from: Protocol,
        model: &str,
        reply: ProviderReply,
        _slot: Arc<Slot>,
    ) -> Response {
        if let ROption::RSome(stream) = reply.stream {
            return stream_response(call.protocol, from, model, call.gemini_sse, stream);
        }
        if from == call.protocol {
            return json_response(StatusCode::OK, Body::from(reply.body.into_string()));
        }
        let parsed: Value = match serde_json::from_str(&reply.body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    call.protocol,
                    502,
                    &format!("upstream answered with invalid JSON: {e}"),
                );
            }
        };
        match aiclient_convert::convert_response(from, call.protocol, &parsed, model) {
            Ok(v) => json_response(StatusCode::OK, Body::from(v.to_string())),
            Err(e) => error_response(
                call.protocol,
                502,
                &format!("cannot convert the upstream answer: {}", e.message),
            ),
        }
    }
}

async fn load_settings(storage: &Storage) -> Result<Settings, PluginError> {
    Ok(settings_from(storage.get_config().await?))
}

fn settings_from(json: Option<String>) -> Settings {
    let loaded = json.is_some();
    let v = match json {
        Some(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the stored service config is not JSON; using defaults");
            Value::Object(Default::default())
        }),
        None => Value::Object(Default::default()),
    };
    Settings {
        loaded,
        ..Settings::from_json(&v)
    }
}

/// The readable part of an upstream error body.
fn upstream_message(body: &str, status: u16) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let from_json = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail").filter(|d| d.is_string()))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() {
            format!("upstream returned HTTP {status}")
        } else {
            t.chars().take(500).collect()
        }
    })
}

pub fn json_response(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An error in the client's protocol with the real HTTP status.
pub fn error_response(protocol: Protocol, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let code = if code.is_success() {
        StatusCode::BAD_GATEWAY
    } else {
        code
    };
    json_response(
        code,
        Body::from(aiclient_convert::error_body(protocol, code.as_u16(), message).to_string()),
    )
}

/// Frames one event for the client.
fn frame(
    protocol: Protocol,
    gemini_sse: bool,
    first: bool,
    event: Option<&str>,
    data: &str,
    out: &mut Vec<u8>,
) {
    match protocol {
        Protocol::Gemini if !gemini_sse => {
            out.extend_from_slice(if first { b"[" } else { b",\r\n" });
            out.extend_from_slice(data.as_bytes());
        }
        _ => {
            if let Some(e) = event.filter(|e| !e.is_empty()) {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(e.as_bytes());
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
    }
}

struct StreamState {
    upstream: EventStreamObject,
    conv: Option<StreamConverter>,
    client: Protocol,
    gemini_sse: bool,
    first: bool,
    done: bool,
}

impl StreamState {
    fn emit(&mut self, events: Vec<aiclient_convert::SseEvent>, out: &mut Vec<u8>) {
        for e in events {
            if self.client == Protocol::Gemini && !self.gemini_sse && e.data == "[DONE]" {
                continue;
            }
            frame(
                self.client,
                self.gemini_sse,
                self.first,
                e.event.as_deref(),
                &e.data,
                out,
            );
            self.first = false;
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        match self.conv.as_mut() {
            Some(c) => {
                let ev = c.finish();
                self.emit(ev, out);
            }
            None if self.client == Protocol::OpenAi => out.extend_from_slice(b"data: [DONE]\n\n"),
            None => {}
        }
        if self.client == Protocol::Gemini && !self.gemini_sse {
            out.extend_from_slice(if self.first { b"[]" } else { b"]" });
        }
        self.done = true;
    }
}

/// The client's stream: upstream events, converted when the protocols differ, framed for the
/// client, always ending with the protocol's terminator (also after an upstream failure).
fn stream_response(
    client: Protocol,
    from: Protocol,
    model: &str,
    gemini_sse: bool,
    upstream: EventStreamObject,
) -> Response {
    let st = StreamState {
        upstream,
        conv: (client != from).then(|| StreamConverter::new(from, client, model)),
        client,
        gemini_sse,
        first: true,
        done: false,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out = Vec::new();
        match st.upstream.next().await.into_result() {
            Ok(ROption::RSome(batch)) => {
                for ev in batch {
                    match st.conv.as_mut() {
                        Some(c) => {
                            let data: Value = match serde_json::from_str(&ev.data) {
                                Ok(v) => v,
                                Err(_) => continue,
                            };
                            let event = (!ev.event.is_empty()).then_some(ev.event.as_str());
                            let out_events = c.push(event, &data);
                            st.emit(out_events, &mut out);
                        }
                        None => {
                            let event = (!ev.event.is_empty()).then_some(ev.event.as_str());
                            frame(
                                st.client,
                                st.gemini_sse,
                                st.first,
                                event,
                                &ev.data,
                                &mut out,
                            );
                            st.first = false;
                        }
                    }
                }
            }
            Ok(ROption::RNone) => st.close(&mut out),
            Err(e) => {
                tracing::warn!(error = %e, "upstream stream failed midway");
                let ev = aiclient_convert::error_event(
                    st.client,
                    502,
                    &format!("upstream stream failed: {}", e.message),
                );
                st.emit(vec![ev], &mut out);
                st.close(&mut out);
            }
        }
        Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(out)), st))
    });
    let mut r = Response::new(Body::from_stream(body));
    let ct = if client == Protocol::Gemini && !gemini_sse {
        "application/json"
    } else {
        "text/event-stream"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r.into_response()
}
