//! A faithful mock of Qwen Code's upstream (`providers/qwen.md` §6): the OAuth token endpoint
//! of `chat.qwen.ai` and the OpenAI-compatible chat API whose host the token's `resource_url`
//! names, on one loopback server. What the `qwen` provider plugin talks to in tests.
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `POST /api/v1/oauth2/token` | form-encoded only (JSON → 400); `grant_type=refresh_token`, `client_id` (checked when configured) and a known refresh token → `{access_token, token_type: "Bearer", expires_in, refresh_token, resource_url}`; rotates refresh tokens by default (the used one is revoked); switches omit `refresh_token` / `resource_url`; unknown or used refresh tokens → 400 `invalid_grant` |
//! | `POST /v1/chat/completions` | `Authorization: Bearer <access token valid now>` (else 401, OpenAI error body); checks the Qwen Code headers and the pre-processed body (leading `system` message starting with the ephemeral `You are Qwen Code.` part, `tools[0]` = `ext`, `stream_options.include_usage` when streaming, a known model); scripted unary or SSE answers |
//! | `GET /__mock/calls` | inspection: calls per endpoint, refreshes, rotations, the clock (not counted) |
//!
//! Scripted answers, by the conversation's last message:
//!
//! | last message | answer |
//! |---|---|
//! | a `tool` result | text `The tool said: <result>` |
//! | user text containing `[tool]` | a call of the first declared function other than `ext` with `{"city":"Paris"}` (arguments split over several chunks when streaming), `finish_reason: tool_calls` |
//! | `[think]` | `reasoning_content` `Pondering the question.`, then [`TEXT`] |
//! | `[length]` | `Part one.` with `finish_reason: length` |
//! | an `image_url` part (only `vision-model` takes images, else 400) | `Saw <mime>, <n> bytes.` |
//! | anything else | [`TEXT`], streamed word by word |
//!
//! Streams are `data: <chunk>\n\n` events: a role chunk, content / reasoning / tool-call
//! chunks, a `finish_reason` chunk, the usage chunk with `"choices": []`, then `data: [DONE]`.
//!
//! Faults ([`QwenMock::inject`]) hit the next N matching calls (by endpoint, access token,
//! model): any status with an OpenAI-style body (quota bodies, 429 with `Retry-After`), a 200
//! token answer carrying an `error`, a slow answer, a connection cut before any data, a stream
//! cut after K chunks, a malformed first event or a malformed line after K chunks. The clock is
//! the test's: tokens expire when the test advances it or expires them. Every call is counted
//! and recorded.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

pub const TEXT: &str = "Hello from mock Qwen.";
pub const MODELS: [&str; 4] = [
    "coder-model",
    "qwen3-coder-flash",
    "qwen3-coder-plus",
    "vision-model",
];
pub const CLIENT_ID: &str = "mock-qwen-client";

/// Endpoint names used by counters, records and fault filters.
pub mod ep {
    pub const TOKEN: &str = "token";
    pub const CHAT: &str = "chat";
}

/// How the mock behaves; changeable while it runs ([`QwenMock::configure`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// Required `client_id` at the token endpoint; `None` accepts any.
    pub client_id: Option<String>,
    /// Lifetime of issued access tokens.
    pub expires_in_s: i64,
    /// Issue a new refresh token on each refresh and revoke the used one.
    pub rotate_refresh_tokens: bool,
    /// Include `refresh_token` in token answers (off: the plugin must keep the old one).
    pub return_refresh_token: bool,
    /// Include `resource_url` (this mock) in token answers (off: the plugin must fall back to
    /// `QWEN_BASE_URL`).
    pub return_resource_url: bool,
    /// Delay before the token endpoint answers (widens refresh races).
    pub token_delay_ms: u64,
    /// Check the Qwen Code headers (`X-DashScope-AuthType`, `QwenCode/` user agent).
    pub check_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            client_id: Some(CLIENT_ID.into()),
            expires_in_s: 3600,
            rotate_refresh_tokens: true,
            return_refresh_token: true,
            return_resource_url: true,
            token_delay_ms: 0,
            check_headers: true,
        }
    }
}

/// What a fault does to the call it hits.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` with `body`, and `Retry-After: <retry_after>` if given.
    Status {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    /// Token endpoint: HTTP 200 whose body carries an `error` field.
    ErrorIn200,
    /// Wait this long, then answer normally.
    Slow(u64),
    /// Cut the connection before any data.
    Reset,
    /// A 200 stream cut after `k` good chunks.
    BreakAfter(usize),
    /// A 200 stream whose first event is not JSON.
    MalformedFirst,
    /// A 200 stream with `k` good chunks, then a line that is not JSON.
    MalformedAfter(usize),
}

/// An OpenAI-style error body.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

impl Fault {
    /// `code` with an OpenAI-style error body.
    pub fn status(code: u16) -> Self {
        let kind = match code {
            400 => "invalid_request_error",
            401 => "invalid_api_key",
            403 => "permission_denied",
            429 => "rate_limit_error",
            _ => "server_error",
        };
        Fault::Status {
            status: code,
            body: openai_error(&format!("mock injected {code}"), kind, None),
            retry_after: None,
        }
    }
    /// The free-quota error, with `status` (403 or 429).
    pub fn quota(status: u16) -> Self {
        Fault::Status {
            status,
            body: openai_error(
                "Free allocated quota exceeded.",
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
            retry_after: None,
        }
    }
    /// A 429 with an optional `Retry-After` header (seconds).
    pub fn rate_limited(retry_after_s: Option<u64>) -> Self {
        Fault::Status {
            status: 429,
            body: openai_error(
                "Requests rate limit exceeded, please try again later.",
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            retry_after: retry_after_s.map(|s| s.to_string()),
        }
    }
    /// The token endpoint's refusal of a refresh token.
    pub fn invalid_grant() -> Self {
        Fault::Status {
            status: 400,
            body: json!({"error": "invalid_grant", "error_description": "mock: refresh token revoked"}),
            retry_after: None,
        }
    }
}

/// A fault and which calls it hits.
#[derive(Clone, Debug)]
pub struct Injection {
    pub fault: Fault,
    /// How many matching calls it hits.
    pub times: u64,
    pub endpoint: Option<&'static str>,
    pub model: Option<String>,
    /// Only calls with this access token.
    pub token: Option<String>,
}

impl Injection {
    /// `fault` on the next `times` chat calls (unary or stream).
    pub fn next(times: u64, fault: Fault) -> Self {
        Self {
            fault,
            times,
            endpoint: None,
            model: None,
            token: None,
        }
    }
    pub fn on(mut self, endpoint: &'static str) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
    pub fn for_model(mut self, model: &str) -> Self {
        self.model = Some(model.into());
        self
    }
    pub fn for_token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// One received call.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub endpoint: String,
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    /// The JSON body (`Null` if none or not JSON).
    pub body: Value,
    /// The form fields (token endpoint).
    pub form: HashMap<String, String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    /// The bearer token of the call.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
    }
}

#[derive(Default)]
pub struct MockState {
    opts: Mutex<Options>,
    clock_offset_ms: AtomicI64,
    /// Access token → expiry (mock clock, ms).
    access: Mutex<HashMap<String, i64>>,
    refresh: Mutex<HashSet<String>>,
    faults: Mutex<Vec<Injection>>,
    calls: Mutex<HashMap<String, u64>>,
    log: Mutex<Vec<Recorded>>,
    seq: AtomicU64,
    refreshes: AtomicU64,
    rotations: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl MockState {
    fn now(&self) -> i64 {
        wall_ms() + self.clock_offset_ms.load(Ordering::SeqCst)
    }
    fn opts(&self) -> Options {
        lock(&self.opts).clone()
    }
    fn valid_access(&self, token: &str) -> bool {
        lock(&self.access)
            .get(token)
            .is_some_and(|exp| *exp > self.now())
    }
    fn base(&self) -> String {
        lock(&self.addr)
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    }
    fn take_fault(
        &self,
        endpoint: &str,
        model: Option<&str>,
        token: Option<&str>,
    ) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| {
            f.endpoint.unwrap_or(ep::CHAT) == endpoint
                && f.model.as_deref().is_none_or(|m| Some(m) == model)
                && f.token.as_deref().is_none_or(|t| Some(t) == token)
        })?;
        let fault = faults[i].fault.clone();
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
}

/// A running mock (cheap to clone); it serves until the process ends.
#[derive(Clone)]
pub struct QwenMock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl QwenMock {
    /// The mock's own base (`resource_url` / `QWEN_OAUTH_BASE_URL` / `QWEN_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The mock's clock (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        self.state.now()
    }
    /// Moves the mock's clock forward: tokens whose lifetime passed stop working.
    pub fn advance(&self, ms: i64) {
        self.state.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn configure(&self, f: impl FnOnce(&mut Options)) {
        f(&mut lock(&self.state.opts));
    }
    /// Registers an access token valid until `expires_at_ms` (mock clock).
    pub fn add_access_token(&self, token: &str, expires_at_ms: i64) {
        lock(&self.state.access).insert(token.into(), expires_at_ms);
    }
    pub fn add_refresh_token(&self, token: &str) {
        lock(&self.state.refresh).insert(token.into());
    }
    /// A credential file's JSON for a new account: `access` valid for `valid_for_ms` from now
    /// (negative: already expired), `refresh` known to the token endpoint, `resource_url` this
    /// mock.
    pub fn credential(&self, access: &str, refresh: &str, valid_for_ms: i64) -> Value {
        let exp = self.now_ms() + valid_for_ms;
        self.add_access_token(access, exp);
        self.add_refresh_token(refresh);
        json!({"access_token": access, "token_type": "Bearer", "refresh_token": refresh,
            "resource_url": self.base_url(), "expiry_date": exp})
    }
    /// The access token stops working now (its credential still claims otherwise).
    pub fn expire_access_token(&self, token: &str) {
        let now = self.now_ms();
        if let Some(e) = lock(&self.state.access).get_mut(token) {
            *e = now;
        }
    }
    pub fn revoke_refresh_token(&self, token: &str) {
        lock(&self.state.refresh).remove(token);
    }
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        lock(&self.state.refresh).contains(token)
    }
    pub fn access_token_valid(&self, token: &str) -> bool {
        self.state.valid_access(token)
    }
    pub fn inject(&self, injection: Injection) {
        lock(&self.state.faults).push(injection);
    }
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }
    /// Faults not yet used up.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state.faults).len()
    }
    /// Calls received by `endpoint` (see [`ep`]).
    pub fn calls(&self, endpoint: &str) -> u64 {
        lock(&self.state.calls).get(endpoint).copied().unwrap_or(0)
    }
    /// Successful refreshes (tokens issued).
    pub fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::SeqCst)
    }
    /// Refresh tokens rotated (issued new, old revoked).
    pub fn rotations(&self) -> u64 {
        self.state.rotations.load(Ordering::SeqCst)
    }
    pub fn requests(&self, endpoint: &str) -> Vec<Recorded> {
        lock(&self.state.log)
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }
    pub fn last_request(&self, endpoint: &str) -> Option<Recorded> {
        lock(&self.state.log)
            .iter()
            .rev()
            .find(|r| r.endpoint == endpoint)
            .cloned()
    }
    /// Chat calls made with each access token.
    pub fn calls_per_token(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for r in self.requests(ep::CHAT) {
            if let Some(t) = r.bearer() {
                *out.entry(t.to_string()).or_default() += 1;
            }
        }
        out
    }
}

/// Starts the mock on a free loopback port, on the current tokio runtime.
pub async fn start(opts: Options) -> QwenMock {
    let state = Arc::new(MockState {
        opts: Mutex::new(opts),
        ..Default::default()
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind qwen mock");
    let addr = listener.local_addr().expect("mock addr");
    *lock(&state.addr) = Some(addr);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    QwenMock { addr, state }
}

/// Starts the mock on its own thread and runtime (for synchronous tests); it runs until the
/// process ends.
pub fn start_in_thread(opts: Options) -> QwenMock {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async move {
            tx.send(start(opts).await).expect("hand over the mock");
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("qwen mock started")
}

// ---------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------

fn respond(status: u16, ct: &'static str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, ct)
        .body(body.into())
        .expect("response")
}

fn json_resp(status: u16, v: &Value) -> Response {
    respond(status, "application/json", v.to_string())
}

fn bad_request(message: &str) -> Response {
    json_resp(
        400,
        &openai_error(
            message,
            "invalid_request_error",
            Some("invalid_parameter_error"),
        ),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A response whose body fails at once: the client sees the connection cut.
fn cut() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Err(std::io::Error::other("mock cut the connection"))];
    let mut r = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/event-stream".parse().expect("header"),
    );
    r
}

/// A 200 stream that delivers `prefix`, then (after the client had time to read it) breaks.
fn break_after(prefix: String) -> Response {
    use futures_util::StreamExt;
    let head = futures_util::stream::iter(vec![Ok::<Bytes, std::io::Error>(Bytes::from(prefix))]);
    let tail = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(std::io::Error::other("mock cut the connection mid-stream"))
    });
    let mut r = Response::new(Body::from_stream(head.chain(tail)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/event-stream".parse().expect("header"),
    );
    r
}

fn sse_body(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

async fn handle(
    State(st): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let endpoint = match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/oauth2/token") => ep::TOKEN,
        ("POST", "/v1/chat/completions") => ep::CHAT,
        ("GET", "/__mock/calls") => {
            let calls = lock(&st.calls).clone();
            return json_resp(
                200,
                &json!({"calls": calls, "refreshes": st.refreshes.load(Ordering::SeqCst),
                    "rotations": st.rotations.load(Ordering::SeqCst), "now": st.now()}),
            );
        }
        _ => {
            return json_resp(
                404,
                &openai_error(
                    &format!("mock: no endpoint {method} {path}"),
                    "not_found",
                    None,
                ),
            );
        }
    };
    let hdrs: HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let text = String::from_utf8_lossy(&body).into_owned();
    let json_body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let form = if endpoint == ep::TOKEN {
        parse_form(&text)
    } else {
        HashMap::new()
    };
    *lock(&st.calls).entry(endpoint.to_string()).or_default() += 1;
    let rec = Recorded {
        endpoint: endpoint.into(),
        headers: hdrs.clone(),
        body: json_body.clone(),
        form: form.clone(),
    };
    let token = rec.bearer().map(str::to_string);
    lock(&st.log).push(rec);

    let model = json_body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut fault = st.take_fault(endpoint, model.as_deref(), token.as_deref());
    if let Some(Fault::Slow(ms)) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        fault = None;
    }
    if endpoint == ep::TOKEN {
        return token_endpoint(&st, &hdrs, &form, fault).await;
    }
    if let Some(f) = fault {
        return apply_fault(f, model.as_deref().unwrap_or(MODELS[0]));
    }
    if !token.as_deref().is_some_and(|t| st.valid_access(t)) {
        return json_resp(
            401,
            &openai_error(
                "Incorrect API key provided. Invalid access token or token expired.",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
        );
    }
    let opts = st.opts();
    if opts.check_headers {
        if hdrs.get("x-dashscope-authtype").map(String::as_str) != Some("qwen-oauth") {
            return bad_request("mock: X-DashScope-AuthType: qwen-oauth is required");
        }
        if !hdrs
            .get("user-agent")
            .is_some_and(|u| u.starts_with("QwenCode/"))
        {
            return bad_request("mock: a QwenCode/ user agent is required");
        }
    }
    let Value::Object(body) = json_body else {
        return bad_request("mock: the body is not a JSON object");
    };
    if let Err(m) = validate(&body) {
        return bad_request(&m);
    }
    chat(&st, &body)
}

fn apply_fault(f: Fault, model: &str) -> Response {
    match f {
        Fault::Status {
            status,
            body,
            retry_after,
        } => {
            let mut r = json_resp(status, &body);
            if let Some(ra) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, ra.parse().expect("retry-after header"));
            }
            r
        }
        Fault::Reset => cut(),
        Fault::BreakAfter(k) => {
            let chunks = text_chunks(model, &Script::text(TEXT));
            break_after(sse_body(&chunks[..k.min(chunks.len())]))
        }
        Fault::MalformedFirst => {
            respond(200, "text/event-stream", "data: {\"id\": \"chatcmpl-\n\n")
        }
        Fault::MalformedAfter(k) => {
            let chunks = text_chunks(model, &Script::text(TEXT));
            let mut s = sse_body(&chunks[..k.min(chunks.len())]);
            s.push_str("data: <html>502 Bad Gateway</html>\n\n");
            respond(200, "text/event-stream", s)
        }
        Fault::ErrorIn200 | Fault::Slow(_) => json_resp(
            500,
            &openai_error("mock: fault not meaningful here", "server_error", None),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

async fn token_endpoint(
    st: &MockState,
    headers: &HashMap<String, String>,
    form: &HashMap<String, String>,
    fault: Option<Fault>,
) -> Response {
    let opts = st.opts();
    if opts.token_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(opts.token_delay_ms)).await;
    }
    match fault {
        Some(Fault::ErrorIn200) => {
            return json_resp(
                200,
                &json!({"error": "server_busy", "error_description": "mock: try later"}),
            );
        }
        Some(f @ (Fault::Status { .. } | Fault::Reset)) => return apply_fault(f, MODELS[0]),
        _ => {}
    }
    let oauth_err = |status: u16, code: &str, desc: &str| {
        json_resp(status, &json!({"error": code, "error_description": desc}))
    };
    let ct = headers.get("content-type").cloned().unwrap_or_default();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return oauth_err(
            400,
            "invalid_request",
            "mock: the token endpoint takes application/x-www-form-urlencoded only",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_err(400, "unsupported_grant_type", "Invalid grant_type");
    }
    if let Some(id) = &opts.client_id
        && form.get("client_id") != Some(id)
    {
        return oauth_err(400, "invalid_client", "Invalid client_id");
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    let mut refresh = lock(&st.refresh);
    if !refresh.contains(&rt) {
        return oauth_err(
            400,
            "invalid_grant",
            "Invalid refresh token or refresh token expired",
        );
    }
    let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("mock-qat-{n}");
    lock(&st.access).insert(access.clone(), st.now() + opts.expires_in_s * 1000);
    st.refreshes.fetch_add(1, Ordering::SeqCst);
    let mut out =
        json!({"access_token": access, "token_type": "Bearer", "expires_in": opts.expires_in_s});
    if opts.rotate_refresh_tokens {
        let new_rt = format!("mock-qrt-{n}");
        refresh.remove(&rt);
        refresh.insert(new_rt.clone());
        st.rotations.fetch_add(1, Ordering::SeqCst);
        if opts.return_refresh_token {
            out["refresh_token"] = json!(new_rt);
        }
    } else if opts.return_refresh_token {
        out["refresh_token"] = json!(rt);
    }
    if opts.return_resource_url {
        out["resource_url"] = json!(st.base());
    }
    json_resp(200, &out)
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

/// The checks the real service (and the plugin's contract) impose on the body.
fn validate(body: &Map<String, Value>) -> Result<(), String> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if !MODELS.contains(&model) {
        return Err(format!("Model not exist: {model:?}"));
    }
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("mock: messages is required")?;
    let first = msgs.first().ok_or("mock: messages must not be empty")?;
    if first.get("role").and_then(Value::as_str) != Some("system") {
        return Err("mock: the first message must be the system message".into());
    }
    let p0 = first.pointer("/content/0").cloned().unwrap_or(Value::Null);
    if p0
        != json!({"type": "text", "text": "You are Qwen Code.", "cache_control": {"type": "ephemeral"}})
    {
        return Err(format!(
            "mock: the system message must start with the ephemeral Qwen Code part, got {p0}"
        ));
    }
    if msgs.iter().skip(1).any(|m| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        )
    }) {
        return Err("mock: only one (leading) system message is allowed".into());
    }
    if body
        .get("tools")
        .and_then(|t| t.pointer("/0/function/name"))
        .and_then(Value::as_str)
        != Some("ext")
    {
        return Err("mock: tools[0] must be the ext tool".into());
    }
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    if stream
        && body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            != Some(true)
    {
        return Err("mock: stream_options.include_usage is required when streaming".into());
    }
    if !stream && body.get("stream_options").is_some() {
        return Err("mock: stream_options is only allowed with stream".into());
    }
    let images = msgs.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
            })
    });
    if images && model != "vision-model" {
        return Err(format!("mock: model {model} does not accept images"));
    }
    Ok(())
}

/// What the scripted model answers.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub reasoning: Option<String>,
    pub text: Option<String>,
    /// (name, arguments JSON text)
    pub tool_call: Option<(String, String)>,
    pub finish: &'static str,
}

impl Script {
    fn text(t: &str) -> Self {
        Script {
            text: Some(t.into()),
            finish: "stop",
            ..Default::default()
        }
    }
}

fn content_text(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn decoded_len(b64: &str) -> usize {
    b64.trim_end_matches('=').len() * 3 / 4
}

/// The scripted answer to a request body.
pub fn script(body: &Map<String, Value>) -> Script {
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(last) = msgs.last() else {
        return Script::text(TEXT);
    };
    if last.get("role").and_then(Value::as_str) == Some("tool") {
        return Script::text(&format!(
            "The tool said: {}",
            content_text(last.get("content"))
        ));
    }
    let text = content_text(last.get("content"));
    if text.contains("[tool]") {
        let name = body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
            .find(|n| *n != "ext")
            .unwrap_or("get_weather")
            .to_string();
        return Script {
            tool_call: Some((name, "{\"city\":\"Paris\"}".into())),
            finish: "tool_calls",
            ..Default::default()
        };
    }
    if text.contains("[think]") {
        return Script {
            reasoning: Some("Pondering the question.".into()),
            text: Some(TEXT.into()),
            finish: "stop",
            ..Default::default()
        };
    }
    if text.contains("[length]") {
        return Script {
            text: Some("Part one.".into()),
            finish: "length",
            ..Default::default()
        };
    }
    let image = last
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|p| p.pointer("/image_url/url").and_then(Value::as_str));
    if let Some(url) = image {
        let (mime, len) = url
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
            .map(|(m, d)| (m.to_string(), decoded_len(d)))
            .unwrap_or_else(|| ("url".to_string(), url.len()));
        return Script::text(&format!("Saw {mime}, {len} bytes."));
    }
    Script::text(TEXT)
}

const USAGE: (u64, u64) = (20, 7);

fn usage() -> Value {
    json!({"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1, "total_tokens": USAGE.0 + USAGE.1,
        "prompt_tokens_details": {"cached_tokens": 3}})
}

fn completion(model: &str, s: &Script) -> Value {
    let mut message = json!({"role": "assistant", "content": s.text.clone().unwrap_or_default()});
    if let Some(r) = &s.reasoning {
        message["reasoning_content"] = json!(r);
    }
    if let Some((name, args)) = &s.tool_call {
        message["tool_calls"] = json!([{"id": "call_mock_1", "type": "function",
            "function": {"name": name, "arguments": args}}]);
    }
    json!({"id": "chatcmpl-mock-1", "object": "chat.completion", "created": wall_ms() / 1000, "model": model,
        "choices": [{"index": 0, "finish_reason": s.finish, "message": message}], "usage": usage()})
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-mock-1", "object": "chat.completion.chunk", "created": wall_ms() / 1000, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// The chunks of a streamed answer (without `[DONE]`).
fn text_chunks(model: &str, s: &Script) -> Vec<Value> {
    let mut out = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    if let Some(r) = &s.reasoning {
        out.push(chunk(model, json!({"reasoning_content": r}), None));
    }
    if let Some(t) = &s.text {
        let words: Vec<&str> = t.split_inclusive(' ').collect();
        for w in words {
            out.push(chunk(model, json!({"content": w}), None));
        }
    }
    if let Some((name, args)) = &s.tool_call {
        out.push(chunk(
            model,
            json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        let mid = args.len() / 2;
        for piece in [&args[..mid], &args[mid..]] {
            out.push(chunk(
                model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    out.push(chunk(model, json!({}), Some(s.finish)));
    out.push(json!({"id": "chatcmpl-mock-1", "object": "chat.completion.chunk", "created": wall_ms() / 1000,
        "model": model, "choices": [], "usage": usage()}));
    out
}

fn chat(_st: &MockState, body: &Map<String, Value>) -> Response {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let s = script(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut text = sse_body(&text_chunks(model, &s));
        text.push_str("data: [DONE]\n\n");
        respond(200, "text/event-stream", text)
    } else {
        json_resp(200, &completion(model, &s))
    }
}
