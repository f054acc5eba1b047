//! The management API (`/api/*`) on the original's paths and shapes, so existing scripts and
//! the web UI keep working — with its leaks closed: every route but `/api/login` and
//! `/api/health` needs a session; no token, API key or Redis password is ever returned (they are
//! masked as `******`, and a masked value sent back is ignored rather than stored); every
//! write goes to the storage backend, so it applies on every instance through the change feed.

pub mod auth;
mod events;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiclient_sdk::account::{STATE_FIELDS, merge_account, merge_patch, now_ms, split_account};
use aiclient_sdk::storage::{Account, AccountState, PluginState, StateUpdate};
use aiclient_sdk::{ErrorCode, PluginError};
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::gateway::Gateway;
use auth::Throttle;

/// Shown in place of every secret.
pub const MASK: &str = "******";

/// A loaded plugin library as the UI lists it.
#[derive(Clone, Debug)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub description: String,
    pub kind: &'static str,
    pub provider_types: Vec<String>,
}

#[derive(Clone)]
pub struct AdminState {
    pub gw: Arc<Gateway>,
    pub throttle: Arc<Throttle>,
    pub events: events::Hub,
    pub plugins: Arc<Vec<PluginRow>>,
    pub started: Instant,
    /// The backend's last status, answered (marked stale) when it does not reply in time.
    last_status: Arc<std::sync::Mutex<Option<Value>>>,
}

impl AdminState {
    pub fn new(gw: Arc<Gateway>, plugins: Vec<PluginRow>) -> Self {
        let events = events::Hub::start(gw.clone());
        Self {
            gw,
            throttle: Arc::new(Throttle::new(5, Duration::from_secs(1800))),
            events,
            plugins: Arc::new(plugins),
            started: Instant::now(),
            last_status: Arc::default(),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// An error answer: `{"success": false, "message": …, "error": {"message", "code"}}` with
/// the real status.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(m: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, m.into())
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, m.into())
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let status = match e.code {
            ErrorCode::NOT_FOUND => StatusCode::NOT_FOUND,
            ErrorCode::CONFLICT => StatusCode::CONFLICT,
            ErrorCode::INVALID_INPUT => StatusCode::BAD_REQUEST,
            ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT | ErrorCode::RESOURCE_EXHAUSTED => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, format!("storage: {}", e.message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.0 {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::BAD_REQUEST => "BAD_REQUEST",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::CONFLICT => "CONFLICT",
            StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
            _ => "INTERNAL_ERROR",
        };
        (self.0, Json(json!({"success": false, "message": self.1, "error": {"message": self.1, "code": code}}))).into_response()
    }
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The JSON body, or a 400 naming what is wrong.
fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad(format!("invalid JSON body: {e}"))),
    }
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/api/logout", post(logout))
        .route("/api/config", get(get_config).post(post_config))
        .route("/api/admin-password", post(admin_password))
        .route("/api/providers", get(list_providers).post(add_provider))
        .route("/api/providers/{ptype}", get(providers_of_type))
        .route("/api/providers/{ptype}/reset-health", post(reset_health))
        .route("/api/providers/{ptype}/health-check", post(health_check))
        .route(
            "/api/providers/{ptype}/delete-unhealthy",
            axum::routing::delete(delete_unhealthy),
        )
        .route(
            "/api/providers/{ptype}/{uuid}",
            axum::routing::put(update_provider).delete(delete_provider),
        )
        .route(
            "/api/providers/{ptype}/{uuid}/enable",
            axum::routing::any(enable_provider),
        )
        .route(
            "/api/providers/{ptype}/{uuid}/disable",
            axum::routing::any(disable_provider),
        )
        .route("/api/plugins", get(list_plugins))
        .route("/api/plugins/{name}/toggle", post(toggle_plugin))
        .route("/api/usage", get(usage))
        .route("/api/events", get(events::sse))
        .route("/api/storage/status", get(storage_status))
        .route("/api/redis/status", get(redis_status))
        .route("/api/redis/reseed", post(redis_reseed))
        .route("/api/system", get(system))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/api/login", post(login))
        .merge(protected)
        .with_state(state)
}

/// The session token: `Authorization: Bearer …`, or `?token=` (for EventSource, which cannot
/// set headers).
fn bearer(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token=").map(|t| t.to_string()))
    })
}

async fn require_session(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Unauthorized access, please login first", "code": "UNAUTHORIZED"}})),
        )
            .into_response()
    };
    let Some(token) = bearer(&req) else {
        return unauthorized();
    };
    match auth::check_session(&s.gw.storage, &token).await {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => unauthorized(),
        // A failed lookup is an error, never a pass (the Node fork let any token in that way).
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn session_secs(gw: &Gateway) -> i64 {
    gw.settings.load().login_expiry_secs
}

async fn login(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult {
    if body.len() > 10 * 1024 {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into(),
        ));
    }
    let ip = peer.ip();
    if let Err(secs) = s.throttle.check(ip) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins; try again in {secs}s"),
        ));
    }
    let b = body_object(&body)?;
    let password = b
        .get("password")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if password.is_empty() {
        return Err(ApiError::bad("password is required"));
    }
    let mut stored = s.gw.storage.get_password_hash().await?;
    if stored.is_none() && auth::writes_paused(&s.gw.storage) {
        // The store lost its data (reported, not reseeded): the hash this process knew stands.
        stored = s.gw.storage.mirror().password_hash();
    }
    let pw = password.to_string();
    let valid = match stored {
        Some(h) => tokio::task::spawn_blocking(move || auth::verify_password(&pw, &h))
            .await
            .unwrap_or(false),
        None => false,
    };
    if !valid {
        s.throttle.failed(ip);
        tracing::warn!(client = %ip, "failed UI login");
        return Err(ApiError(StatusCode::UNAUTHORIZED, "wrong password".into()));
    }
    s.throttle.succeeded(ip);
    let secs = session_secs(&s.gw);
    let token = auth::create_session(&s.gw.storage, "admin", secs).await?;
    ok(
        json!({"success": true, "message": "login successful", "token": token, "expiresIn": format!("{secs} seconds")}),
    )
}

async fn logout(State(s): State<AdminState>, req: Request) -> ApiResult {
    if let Some(t) = bearer(&req) {
        auth::forget_session(&t);
        s.gw.storage.delete_session(&auth::token_hash(&t)).await?;
    }
    ok(json!({"success": true, "message": "logged out"}))
}

/// Is `key` the name of a secret (an API key, password, token or cookie — not a path to one)?
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    if k.ends_with("_PATH") || k.ends_with("_DIR") || k.ends_with("_URL") && !k.contains("PROXY") {
        return false;
    }
    [
        "API_KEY",
        "APIKEY",
        "PASSWORD",
        "SECRET",
        "TOKEN",
        "COOKIE",
        "CLEARANCE",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "KEY"
}

/// Hides a URL's user info (`redis://:pw@host` → `redis://:******@host`).
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}{MASK}{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Masks every secret in a JSON value, recursively (non-empty strings under secret-named keys,
/// credentials inside URLs).
pub fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match val {
                    Value::String(s) if is_secret_key(k) && !s.is_empty() => *s = MASK.to_string(),
                    Value::String(s) if s.contains("://") && s.contains('@') => *s = mask_url(s),
                    Value::Object(_) | Value::Array(_) => {
                        if k.eq_ignore_ascii_case("redis")
                            && let Some(p) = val.get_mut("password").filter(|p| p.is_string())
                        {
                            *p = Value::String(MASK.into());
                        }
                        mask_secrets(val)
                    }
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// Drops masked values from a write so `******` sent back never overwrites a secret.
fn drop_masked(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, val| val.as_str() != Some(MASK));
        m.values_mut().for_each(drop_masked);
    }
}

async fn get_config(State(s): State<AdminState>) -> ApiResult {
    let mut cfg: Value = match s.gw.storage.get_config().await? {
        Some(t) => serde_json::from_str(&t).unwrap_or_else(|_| json!({})),
        None => json!({}),
    };
    mask_secrets(&mut cfg);
    if let Some(o) = cfg.as_object_mut() {
        o.insert(
            "hasApiKey".into(),
            Value::Bool(s.gw.required_key().is_some()),
        );
    }
    ok(cfg)
}

/// Checks the keys the gateway reads; unknown keys pass through untouched (they belong to
/// parts of the original this gateway does not use).
fn validate_config(m: &Map<String, Value>) -> Result<(), String> {
    let nonneg = |k: &str| match m.get(k) {
        None => Ok(()),
        Some(v) if v.as_i64().is_some_and(|n| n >= 0) => Ok(()),
        Some(v) => Err(format!("{k} must be a non-negative integer, got {v}")),
    };
    for k in [
        "MAX_ERROR_COUNT",
        "REQUEST_MAX_RETRIES",
        "REQUEST_BASE_DELAY",
        "CREDENTIAL_SWITCH_MAX_RETRIES",
        "CRON_NEAR_MINUTES",
        "LOGIN_EXPIRY",
        "RATE_LIMIT_COOLDOWN_MS",
        "RATE_LIMIT_COOLDOWN_MAX_MS",
    ] {
        nonneg(k)?;
    }
    if let Some(p) = m.get("SERVER_PORT")
        && !p.as_u64().is_some_and(|p| (1..=65535).contains(&p))
    {
        return Err(format!("SERVER_PORT must be 1–65535, got {p}"));
    }
    if let Some(v) = m.get("REQUIRED_API_KEY")
        && !v.is_string()
    {
        return Err("REQUIRED_API_KEY must be a string".into());
    }
    if let Some(v) = m.get("MODEL_PROVIDER")
        && !(v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return Err("MODEL_PROVIDER must be a string or an array of strings".into());
    }
    if let Some(v) = m.get("providerFallbackChain")
        && !v.as_object().is_some_and(|o| {
            o.values()
                .all(|x| x.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        })
    {
        return Err(
            "providerFallbackChain must map provider types to arrays of provider types".into(),
        );
    }
    if let Some(v) = m.get("modelFallbackMapping")
        && !v.as_object().is_some_and(|o| {
            o.values()
                .all(|x| x.get("targetProviderType").is_some_and(Value::is_string))
        })
    {
        return Err("modelFallbackMapping entries need a targetProviderType".into());
    }
    if let Some(h) = m.get("SCHEDULED_HEALTH_CHECK") {
        if !h.is_object() {
            return Err("SCHEDULED_HEALTH_CHECK must be an object".into());
        }
        if let Some(i) = h.get("interval")
            && !i.as_i64().is_some_and(|i| (1000..=3_600_000).contains(&i))
        {
            return Err("SCHEDULED_HEALTH_CHECK.interval must be 1000–3600000 ms".into());
        }
    }
    if let Some(p) = m.get("PROXY_URL").and_then(Value::as_str)
        && !p.is_empty()
        && !["http://", "https://", "socks5://", "socks5h://"]
            .iter()
            .any(|s| p.starts_with(s))
    {
        return Err("PROXY_URL must be an http, https or socks5 URL".into());
    }
    for (k, v) in m {
        if k.ends_with("_PATH")
            && let Some(p) = v.as_str()
            && p.split(['/', '\\']).any(|seg| seg == "..")
        {
            return Err(format!("{k} must not contain '..'"));
        }
    }
    Ok(())
}

async fn post_config(State(s): State<AdminState>, body: axum::body::Bytes) -> ApiResult {
    let mut patch = Value::Object(body_object(&body)?);
    drop_masked(&mut patch);
    validate_config(patch.as_object().expect("an object"))?;
    let mut cfg: Value = match s.gw.storage.get_config().await? {
        Some(t) => serde_json::from_str(&t).unwrap_or_else(|_| json!({})),
        None => json!({}),
    };
    merge_patch(&mut cfg, &patch);
    s.gw.storage.set_config(&cfg.to_string()).await?;
    s.gw.reload_settings().await?;
    let keys: Vec<&String> = patch.as_object().expect("an object").keys().collect();
    tracing::info!(keys = ?keys, "service config updated through the management API");
    ok(
        json!({"success": true, "message": "configuration updated", "details": {"updatedKeys": keys}}),
    )
}

impl From<String> for ApiError {
    fn from(m: String) -> Self {
        ApiError::bad(m)
    }
}

async fn admin_password(State(s): State<AdminState>, body: axum::body::Bytes) -> ApiResult {
    let b = body_object(&body)?;
    let pw = b
        .get("password")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if pw.chars().count() < auth::MIN_PASSWORD_LEN {
        return Err(ApiError::bad(format!(
            "the password must have at least {} characters",
            auth::MIN_PASSWORD_LEN
        )));
    }
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.gw.storage.set_password_hash(&hash).await?;
    ok(json!({"success": true, "message": "password updated"}))
}

/// An account in the original flat shape, state from the live pool view (including counts
/// not yet flushed), secrets masked.
fn account_json(a: &Account) -> Value {
    let mut v = merge_account(a)
        .map(Value::Object)
        .unwrap_or_else(|_| json!({"uuid": a.uuid.as_str()}));
    mask_secrets(&mut v);
    v
}

fn live(gw: &Gateway, mut a: Account) -> Account {
    if let Some(slot) = gw.pools.pool(&a.provider_type).and_then(|p| p.get(&a.uuid)) {
        a.state = slot.state();
    }
    a
}

async fn accounts_of(gw: &Gateway, ptype: Option<&str>) -> Result<Vec<Account>, ApiError> {
    Ok(gw
        .storage
        .list_accounts(ptype)
        .await?
        .into_iter()
        .map(|a| live(gw, a))
        .collect())
}

async fn list_providers(State(s): State<AdminState>) -> ApiResult {
    let mut out = Map::new();
    for a in accounts_of(&s.gw, None).await? {
        let list = out
            .entry(a.provider_type.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        list.as_array_mut()
            .expect("an array")
            .push(account_json(&a));
    }
    ok(Value::Object(out))
}

async fn providers_of_type(State(s): State<AdminState>, Path(ptype): Path<String>) -> ApiResult {
    let accts = accounts_of(&s.gw, Some(&ptype)).await?;
    let healthy = accts
        .iter()
        .filter(|a| a.state.healthy && !a.state.disabled)
        .count();
    ok(json!({
        "providerType": ptype,
        "providers": accts.iter().map(account_json).collect::<Vec<_>>(),
        "totalCount": accts.len(),
        "healthyCount": healthy,
    }))
}

async fn add_provider(State(s): State<AdminState>, body: axum::body::Bytes) -> ApiResult {
    let b = body_object(&body)?;
    let ptype = b
        .get("providerType")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad("providerType is required"))?;
    let Some(Value::Object(mut cfg)) = b.get("providerConfig").cloned() else {
        return Err(ApiError::bad("providerConfig (an object) is required"));
    };
    cfg.retain(|_, v| v.as_str() != Some(MASK));
    let uuid = match cfg.get("uuid").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    cfg.insert("uuid".into(), Value::String(uuid.clone()));
    let mut acct = split_account(ptype, cfg).map_err(ApiError::bad)?;
    // A new account starts healthy and enabled with zero counts, whatever state fields came in
    // (except an explicit isDisabled).
    let disabled = acct.state.disabled;
    acct.state = AccountState {
        disabled,
        ..AccountState::default()
    };
    s.gw.storage.add_account(acct.clone()).await?;
    s.gw.pools.reload_account(ptype, &uuid).await?;
    tracing::info!(provider = ptype, uuid = %uuid, "account added through the management API");
    ok(
        json!({"success": true, "message": "provider added", "provider": account_json(&acct), "providerType": ptype}),
    )
}

async fn update_provider(
    State(s): State<AdminState>,
    Path((ptype, uuid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let b = body_object(&body)?;
    let Some(Value::Object(mut patch)) = b.get("providerConfig").cloned() else {
        return Err(ApiError::bad("providerConfig (an object) is required"));
    };
    patch.retain(|_, v| v.as_str() != Some(MASK));
    // uuid and counters are kept; isDisabled goes through state, other state fields are ignored.
    patch.remove("uuid");
    let disabled = patch.get("isDisabled").and_then(Value::as_bool);
    for (name, _) in STATE_FIELDS {
        patch.remove(name);
    }
    if s.gw.storage.get_account(&ptype, &uuid).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no account {uuid} of type {ptype}"
        )));
    }
    if disabled.is_some() {
        settle(&s).await?;
    }
    let mut acct =
        s.gw.storage
            .update_account(&ptype, &uuid, &Value::Object(patch))
            .await?;
    if let Some(d) = disabled {
        acct.state =
            s.gw.storage
                .update_state(&ptype, &uuid, StateUpdate::set_disabled(d))
                .await?;
    }
    s.gw.pools.reload_account(&ptype, &uuid).await?;
    ok(
        json!({"success": true, "message": "provider updated", "provider": account_json(&live(&s.gw, acct))}),
    )
}

async fn delete_provider(
    State(s): State<AdminState>,
    Path((ptype, uuid)): Path<(String, String)>,
) -> ApiResult {
    let Some(acct) = s.gw.storage.get_account(&ptype, &uuid).await? else {
        return Err(ApiError::not_found(format!(
            "no account {uuid} of type {ptype}"
        )));
    };
    s.gw.storage.delete_account(&ptype, &uuid).await?;
    s.gw.pools.reload_account(&ptype, &uuid).await?;
    tracing::info!(provider = %ptype, uuid = %uuid, "account deleted through the management API");
    ok(
        json!({"success": true, "message": "provider deleted", "deletedProvider": account_json(&acct)}),
    )
}

/// Writes this instance's queued counts and health changes first, so an operator's change to
/// an account's state is applied after them, never undone by them.
async fn settle(s: &AdminState) -> Result<(), ApiError> {
    s.gw.pools.flush().await?;
    Ok(())
}

async fn set_disabled(s: &AdminState, ptype: &str, uuid: &str, disabled: bool) -> ApiResult {
    settle(s).await?;
    let st =
        s.gw.storage
            .update_state(ptype, uuid, StateUpdate::set_disabled(disabled))
            .await?;
    s.gw.pools.reload_account(ptype, uuid).await?;
    let mut acct =
        s.gw.storage
            .get_account(ptype, uuid)
            .await?
            .ok_or_else(|| ApiError::not_found("account vanished"))?;
    acct.state = st;
    let word = if disabled { "disabled" } else { "enabled" };
    ok(
        json!({"success": true, "message": format!("provider {word}"), "provider": account_json(&live(&s.gw, acct))}),
    )
}

async fn enable_provider(
    State(s): State<AdminState>,
    Path((ptype, uuid)): Path<(String, String)>,
) -> ApiResult {
    set_disabled(&s, &ptype, &uuid, false).await
}

async fn disable_provider(
    State(s): State<AdminState>,
    Path((ptype, uuid)): Path<(String, String)>,
) -> ApiResult {
    set_disabled(&s, &ptype, &uuid, true).await
}

async fn reset_health(State(s): State<AdminState>, Path(ptype): Path<String>) -> ApiResult {
    settle(&s).await?;
    let accts = s.gw.storage.list_accounts(Some(&ptype)).await?;
    let now = now_ms();
    for a in &accts {
        let u = StateUpdate {
            reset_counters: true,
            needs_refresh: abi_stable::std_types::ROption::RSome(false),
            ..StateUpdate::mark_healthy(now)
        };
        s.gw.storage.update_state(&ptype, &a.uuid, u).await?;
        s.gw.pools.reload_account(&ptype, &a.uuid).await?;
    }
    ok(
        json!({"success": true, "message": format!("reset {} accounts", accts.len()), "resetCount": accts.len(), "totalCount": accts.len()}),
    )
}

async fn health_check(State(s): State<AdminState>, Path(ptype): Path<String>) -> ApiResult {
    let results = s.gw.check_accounts(&ptype).await?;
    let ok_n = results.iter().filter(|r| r["success"] == true).count();
    ok(json!({
        "success": true,
        "message": format!("{ok_n} of {} accounts passed", results.len()),
        "successCount": ok_n,
        "failCount": results.len() - ok_n,
        "totalCount": results.len(),
        "results": results,
    }))
}

async fn delete_unhealthy(State(s): State<AdminState>, Path(ptype): Path<String>) -> ApiResult {
    let accts = accounts_of(&s.gw, Some(&ptype)).await?;
    let mut deleted = Vec::new();
    for a in accts.iter().filter(|a| !a.state.healthy) {
        s.gw.storage.delete_account(&ptype, &a.uuid).await?;
        s.gw.pools.reload_account(&ptype, &a.uuid).await?;
        let name = serde_json::from_str::<Value>(&a.config)
            .ok()
            .and_then(|c| c.get("customName").cloned())
            .unwrap_or(Value::Null);
        deleted.push(json!({"uuid": a.uuid.as_str(), "customName": name}));
    }
    ok(json!({
        "success": true,
        "message": format!("deleted {} unhealthy accounts", deleted.len()),
        "deletedCount": deleted.len(),
        "remainingCount": accts.len() - deleted.len(),
        "deletedProviders": deleted,
    }))
}

async fn list_plugins(State(s): State<AdminState>) -> ApiResult {
    let states = s.gw.storage.list_plugin_states().await?;
    let rows: Vec<Value> = s
        .plugins
        .iter()
        .map(|p| {
            let enabled = states.iter().find(|st| st.name.as_str() == p.name).is_none_or(|st| st.enabled);
            json!({"name": p.name, "version": p.version, "description": p.description, "kind": p.kind,
                   "providerTypes": p.provider_types, "enabled": enabled})
        })
        .collect();
    ok(json!({"plugins": rows}))
}

async fn toggle_plugin(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let b = body_object(&body)?;
    let Some(enabled) = b.get("enabled").and_then(Value::as_bool) else {
        return Err(ApiError::bad("enabled must be a boolean"));
    };
    let Some(row) = s.plugins.iter().find(|p| p.name == name) else {
        return Err(ApiError::not_found(format!("no plugin named {name}")));
    };
    if row.kind == "storage" {
        return Err(ApiError::bad(
            "the active storage backend cannot be disabled",
        ));
    }
    let extra =
        s.gw.storage
            .list_plugin_states()
            .await?
            .into_iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.extra)
            .unwrap_or_else(|| json!({"description": row.description}).to_string().into());
    s.gw.storage
        .set_plugin_state(PluginState {
            name: name.as_str().into(),
            enabled,
            extra,
        })
        .await?;
    s.gw.apply_plugin_states().await?;
    tracing::info!(plugin = %name, enabled, "plugin toggled through the management API");
    ok(
        json!({"success": true, "message": format!("plugin {name} {}", if enabled { "enabled" } else { "disabled" }), "plugin": {"name": name, "enabled": enabled}}),
    )
}

/// `GET /api/usage[?refresh=true]`: per-account usage in `usage-cache.json`'s shape, from the
/// live pool view; `refresh=true` also stores it as the usage cache.
async fn usage(State(s): State<AdminState>, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let mut providers = Map::new();
    for a in accounts_of(&s.gw, None).await? {
        let entry = providers.entry(a.provider_type.to_string()).or_insert_with(|| {
            json!({"providerType": a.provider_type.as_str(), "instances": [], "totalCount": 0, "successCount": 0, "errorCount": 0})
        });
        let name = serde_json::from_str::<Value>(&a.config)
            .ok()
            .and_then(|c| c.get("customName").cloned())
            .unwrap_or(Value::Null);
        entry["instances"].as_array_mut().expect("an array").push(json!({
            "uuid": a.uuid.as_str(), "name": name, "isHealthy": a.state.healthy, "isDisabled": a.state.disabled,
            "success": a.state.usage_count, "usage": a.state.usage_count, "error": a.state.error_count,
        }));
        entry["totalCount"] = json!(entry["totalCount"].as_i64().unwrap_or(0) + 1);
        entry["successCount"] =
            json!(entry["successCount"].as_i64().unwrap_or(0) + a.state.usage_count);
        entry["errorCount"] =
            json!(entry["errorCount"].as_i64().unwrap_or(0) + a.state.error_count);
    }
    let doc = json!({"timestamp": now_ms(), "providers": providers});
    if q.get("refresh").is_some_and(|r| r == "true") {
        s.gw.storage.set_usage_cache(&doc.to_string()).await?;
    }
    ok(doc)
}

/// How long the status endpoints wait for the backend's own status. Past it they answer from
/// memory: the last status the backend gave, with `connected: false`, `stale: true` and the
/// reason, so they never hang while storage is paused, slow or down.
pub const STATUS_WAIT: Duration = Duration::from_millis(300);

/// The backend's status within [`STATUS_WAIT`], masked.
async fn backend_status(s: &AdminState) -> Value {
    // The last status without its URL (the server shows as `server`, `host:port`).
    let remembered = || {
        let mut v = s
            .last_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| json!({}));
        if let Some(o) = v.as_object_mut() {
            o.remove("url");
        }
        v
    };
    let (mut st, failure) = match tokio::time::timeout(STATUS_WAIT, s.gw.storage.status()).await {
        Ok(Ok(v)) => {
            *s.last_status.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
            (v, None)
        }
        Ok(Err(e)) => (remembered(), Some(e.to_string())),
        Err(_) => (
            remembered(),
            Some(format!(
                "the backend gave no status within {} ms",
                STATUS_WAIT.as_millis()
            )),
        ),
    };
    if let Some(e) = failure {
        st["connected"] = json!(false);
        st["stale"] = json!(true);
        st["lastError"] = json!(e);
    }
    mask_secrets(&mut st);
    st
}

async fn storage_status(State(s): State<AdminState>) -> ApiResult {
    let st = backend_status(&s).await;
    ok(json!({"initialized": true, "type": s.gw.storage.name(), "status": st}))
}

/// `GET /api/redis/status`: the seed's contract (`enabled`, `connected`, `lastConnectedAt`,
/// `queuedWrites`) plus whatever else the Redis backend reports; never its password.
async fn redis_status(State(s): State<AdminState>) -> ApiResult {
    if s.gw.storage.name() != "redis" {
        return ok(
            json!({"enabled": false, "connected": false, "lastConnectedAt": null, "queuedWrites": 0, "storageType": s.gw.storage.name()}),
        );
    }
    let st = backend_status(&s).await;
    // The host's own unwritten state (dirty accounts' counters and queued changes, the same
    // state the journal holds during an outage) plus whatever the backend queues itself.
    let health = s.gw.pools.flush_health();
    let queued = s.gw.pools.queued_writes() as i64
        + st.get("queuedWrites").and_then(Value::as_i64).unwrap_or(0);
    let degraded = health.degraded_since.is_some();
    let mut out = json!({
        "enabled": true,
        "connected": !degraded && st.get("connected").and_then(Value::as_bool).unwrap_or(false),
        "lastConnectedAt": st.get("lastConnectedAt").cloned().unwrap_or(Value::Null),
        "queuedWrites": queued,
        "degradedSince": health.degraded_since,
        "consecutiveFlushFailures": health.consecutive_failures,
        "journaled": health.journaled,
        "storageType": "redis",
        // The last journal replay (startup) or post-outage catch-up, and a detected loss of
        // the data underneath (FLUSHDB) with what was done about it.
        "replay": s.gw.storage.resilience().replay(),
        "dataLoss": s.gw.storage.resilience().data_loss(),
        "onDataLoss": s.gw.storage.resilience().on_data_loss().map(|p| p.name()),
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), health.last_error.filter(|_| degraded)) {
        o.insert("lastError".into(), Value::String(e));
    }
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), st) {
        for (k, v) in extra {
            o.entry(k).or_insert(v);
        }
    }
    ok(out)
}

/// `POST /api/redis/reseed`: writes this instance's in-memory view (accounts with their
/// state, cached tokens, config, meta, plugin states, password hash) back to storage, and
/// resumes writing if a data loss had paused it (`on_data_loss = "report"`).
async fn redis_reseed(State(s): State<AdminState>) -> ApiResult {
    if s.gw.storage.resilience().on_data_loss().is_none() {
        return Err(ApiError::bad(format!(
            "the {} backend has no data-loss guard; nothing to reseed",
            s.gw.storage.name()
        )));
    }
    tracing::warn!("reseed of storage requested through the admin API");
    let c = s.gw.pools.reseed().await?;
    ok(json!({"success": true, "reseeded": c}))
}

async fn system(State(s): State<AdminState>) -> ApiResult {
    ok(json!({
        "appVersion": env!("CARGO_PKG_VERSION"),
        "serverTime": now_ms(),
        "uptime": s.started.elapsed().as_secs(),
        "instanceId": &*s.gw.instance_id,
        "storage": s.gw.storage.name(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_paths_are_not() {
        let mut v = json!({
            "REQUIRED_API_KEY": "k", "OPENAI_API_KEY": "sk-1", "CLAUDE_API_KEY": "", "GROK_COOKIE_TOKEN": "c",
            "KIRO_OAUTH_CREDS_FILE_PATH": "./configs/kiro/a.json", "IFLOW_TOKEN_FILE_PATH": "./x.json",
            "OPENAI_BASE_URL": "https://api.example/v1",
            "redis": {"url": "redis://:pw@h:6379/0", "password": "pw", "host": "h"},
            "nested": [{"FORWARD_API_KEY": "f"}],
        });
        mask_secrets(&mut v);
        assert_eq!(v["REQUIRED_API_KEY"], MASK);
        assert_eq!(v["OPENAI_API_KEY"], MASK);
        assert_eq!(v["CLAUDE_API_KEY"], "", "nothing to hide");
        assert_eq!(v["GROK_COOKIE_TOKEN"], MASK);
        assert_eq!(v["KIRO_OAUTH_CREDS_FILE_PATH"], "./configs/kiro/a.json");
        assert_eq!(v["IFLOW_TOKEN_FILE_PATH"], "./x.json");
        assert_eq!(v["OPENAI_BASE_URL"], "https://api.example/v1");
        assert_eq!(v["redis"]["url"], "redis://******@h:6379/0");
        assert_eq!(v["redis"]["password"], MASK);
        assert_eq!(v["nested"][0]["FORWARD_API_KEY"], MASK);
    }

    #[test]
    fn config_validation_names_the_key() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert!(validate_config(&m(json!({"SERVER_PORT": 3000, "MODEL_PROVIDER": ["a"]}))).is_ok());
        assert!(
            validate_config(&m(json!({"SERVER_PORT": 70000})))
                .unwrap_err()
                .contains("SERVER_PORT")
        );
        assert!(
            validate_config(&m(json!({"MAX_ERROR_COUNT": -1})))
                .unwrap_err()
                .contains("MAX_ERROR_COUNT")
        );
        assert!(
            validate_config(&m(json!({"SYSTEM_PROMPT_FILE_PATH": "../../etc/passwd"})))
                .unwrap_err()
                .contains("..")
        );
        assert!(
            validate_config(&m(json!({"PROXY_URL": "ftp://x"})))
                .unwrap_err()
                .contains("PROXY_URL")
        );
    }
}
