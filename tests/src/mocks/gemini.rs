//! A faithful mock of Google's Code Assist API (`v1internal`) and Google's OAuth token
//! endpoint, on one loopback server (`providers/gemini.md` §6): what the `gemini` provider
//! plugin talks to in tests.
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `POST /token` | form-encoded refresh: checks `grant_type`, the refresh token, the client id/secret (if configured); issues a fresh access token valid for `expires_in_s` on the mock's clock; keeps the refresh token unless rotation is on; `invalid_grant` (400) for unknown/revoked ones, `invalid_client` (401) |
//! | `GET /tokeninfo` | `{"email", "expires_in"}` for a valid access token |
//! | `POST /v1internal:loadCodeAssist` | the project (with `allowedTiers` and `manageSubscriptionUri`), or no project to force onboarding |
//! | `POST /v1internal:onboardUser` | `done:false` for the first `onboard_pending_polls` polls, then `done:true` with the project |
//! | `POST /v1internal:generateContent` | scripted unary answer in the `{"response", "traceId"}` envelope |
//! | `POST /v1internal:streamGenerateContent?alt=sse` | the same as SSE, one envelope per event, CRLF framing, `alt=sse` required |
//! | `POST /v1internal:retrieveUserQuota` | `{"buckets": […]}` |
//! | `GET /__mock/calls` | inspection: calls per endpoint, onboarding polls, the mock's clock (not counted) |
//!
//! Every Code Assist call needs `Authorization: Bearer <access token valid now>` (else 401
//! `UNAUTHENTICATED`). Inference calls are validated like the real service: the envelope's keys
//! (`model`, `project`, `request`, tolerated `user_prompt_id` and Antigravity's extras; anything
//! else is "Unknown name"), `project` equal to the mock's (else 403), non-empty `contents` with
//! `user`/`model` roles and parts.
//!
//! Scripted answers, by the last user turn's text:
//!
//! | prompt contains | answer |
//! |---|---|
//! | (a `functionResponse` part) | text `The tool said: <result>` |
//! | `[tool]` / `[tool-id]` | a `functionCall` of the first declared function with `{"city":"Paris"}` and a `thoughtSignature` (with id `fc-mock-1`) |
//! | `[think]` | a thought part (`thought:true`, signature), then text; `thoughtsTokenCount` |
//! | `[max]` (in any user turn) | first turn: `Part one.` cut with `MAX_TOKENS`; after a `model` turn: ` Part two.` with `STOP` |
//! | `[safety]` | finish `SAFETY`, no content |
//! | `[block]` | `promptFeedback.blockReason`, no candidates |
//! | (an `inlineData` part) | `Saw <mime>, <n> bytes.` |
//! | anything else | [`TEXT`], streamed word by word |
//!
//! Faults ([`GeminiMock::inject`]) hit the next N matching calls (by endpoint, model, access
//! token): any status with a Google error body (429 with `Retry-After` and/or `RetryInfo`), a
//! connection cut before any data, a stream cut after K chunks, a malformed first event,
//! garbage after K chunks, an error object inside a 200 stream. The clock is the test's: tokens
//! expire when the test advances it or expires them. Every call is counted and recorded.

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

pub const TEXT: &str = "Hello from mock Gemini.";
pub const PROJECT: &str = "mock-proj";
pub const EMAIL: &str = "user@example.com";
pub const SCOPE: &str =
    "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email";

/// Endpoint names used by counters, records and fault filters.
pub mod ep {
    pub const TOKEN: &str = "token";
    pub const TOKENINFO: &str = "tokeninfo";
    pub const LOAD: &str = "loadCodeAssist";
    pub const ONBOARD: &str = "onboardUser";
    pub const GENERATE: &str = "generateContent";
    pub const STREAM: &str = "streamGenerateContent";
    pub const QUOTA: &str = "retrieveUserQuota";
}

/// How the mock behaves; changeable while it runs ([`GeminiMock::configure`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// Required OAuth client id/secret at the token endpoint; `None` accepts any.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Lifetime of issued access tokens (keep it above the plugin's 20 min refresh window).
    pub expires_in_s: i64,
    /// Issue a new refresh token on each refresh and revoke the old one (Google does not).
    pub rotate_refresh_tokens: bool,
    /// The project this account may use.
    pub project: String,
    /// `loadCodeAssist` names the project; `false` forces onboarding.
    pub load_returns_project: bool,
    /// `onboardUser` answers `done:false` this many times first.
    pub onboard_pending_polls: u64,
    /// Delay before the token endpoint answers (widens refresh races).
    pub token_delay_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            client_id: Some("mock-client-id".into()),
            client_secret: Some("mock-client-secret".into()),
            expires_in_s: 3599,
            rotate_refresh_tokens: false,
            project: PROJECT.into(),
            load_returns_project: true,
            onboard_pending_polls: 0,
            token_delay_ms: 0,
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
    /// Cut the connection before any data.
    Reset,
    /// A 200 stream cut after `k` good chunks.
    BreakAfter(usize),
    /// A 200 stream whose first event is not JSON.
    MalformedFirst,
    /// A 200 stream with `k` good chunks, then an event that is not JSON.
    GarbageAfter(usize),
    /// A 200 stream whose first event is a Google error object (`[{"error": …}]`).
    ErrorEvent(u16),
}

fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    }
}

/// A Google error body.
pub fn google_error(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": google_status(code)}})
}

impl Fault {
    /// `code` with a Google error body.
    pub fn status(code: u16) -> Self {
        Fault::Status {
            status: code,
            body: google_error(code, &format!("mock injected {code}")),
            retry_after: None,
        }
    }

    /// A 429 with an optional `Retry-After` header (seconds) and `RetryInfo.retryDelay`.
    pub fn rate_limited(retry_after_s: Option<u64>, retry_delay: Option<&str>) -> Self {
        let mut details = vec![
            json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "cloudcode-pa.googleapis.com"}),
        ];
        if let Some(d) = retry_delay {
            details.push(
                json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d}),
            );
        }
        Fault::Status {
            status: 429,
            body: json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED", "details": details}}),
            retry_after: retry_after_s.map(|s| s.to_string()),
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
    /// `fault` on the next `times` inference calls (unary or stream).
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
    pub query: String,
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
    onboard_polls: AtomicU64,
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
    /// The first matching fault, consumed.
    fn take_fault(
        &self,
        endpoint: &str,
        model: Option<&str>,
        token: Option<&str>,
    ) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| {
            f.times > 0
                && f.endpoint.is_none_or(|e| e == endpoint)
                && (f.endpoint.is_some() || endpoint == ep::GENERATE || endpoint == ep::STREAM)
                && f.model.as_deref().is_none_or(|m| Some(m) == model)
                && f.token.as_deref().is_none_or(|t| Some(t) == token)
        })?;
        faults[i].times -= 1;
        let f = faults[i].fault.clone();
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(f)
    }
}

/// A running mock (its server lives on the runtime it was started on).
#[derive(Clone)]
pub struct GeminiMock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl GeminiMock {
    /// The Code Assist base URL (`GEMINI_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The token endpoint (`GEMINI_TOKEN_URL`).
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
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
    /// (negative: already expired), `refresh` known to the token endpoint.
    pub fn credential(&self, access: &str, refresh: &str, valid_for_ms: i64) -> Value {
        let exp = self.now_ms() + valid_for_ms;
        self.add_access_token(access, exp);
        self.add_refresh_token(refresh);
        json!({"access_token": access, "refresh_token": refresh, "scope": SCOPE, "token_type": "Bearer", "id_token": "mock-id-token", "expiry_date": exp})
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
    /// Inference calls (unary + stream).
    pub fn inference_calls(&self) -> u64 {
        self.calls(ep::GENERATE) + self.calls(ep::STREAM)
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
    /// The last inference call (unary or stream).
    pub fn last_inference(&self) -> Option<Recorded> {
        lock(&self.state.log)
            .iter()
            .rev()
            .find(|r| r.endpoint == ep::GENERATE || r.endpoint == ep::STREAM)
            .cloned()
    }
}

/// Starts the mock on a free loopback port, on the current tokio runtime.
pub async fn start(opts: Options) -> GeminiMock {
    let state = Arc::new(MockState {
        opts: Mutex::new(opts),
        ..Default::default()
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gemini mock");
    let addr = listener.local_addr().expect("mock addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    GeminiMock { addr, state }
}

/// Starts the mock on its own thread and runtime (for synchronous tests); it runs until the
/// process ends.
pub fn start_in_thread(opts: Options) -> GeminiMock {
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
    rx.recv().expect("gemini mock started")
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
    respond(status, "application/json; charset=UTF-8", v.to_string())
}

fn error(status: u16, message: &str) -> Response {
    json_resp(status, &google_error(status, message))
}

fn unauthenticated() -> Response {
    error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
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

fn bearer(headers: &HashMap<String, String>) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// A response whose body fails at once: the server drops the connection before the answer's
/// head is out, so the client sees the connection cut.
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
    events
        .iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect()
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
    let query = uri.query().unwrap_or("").to_string();
    let endpoint = match (method.as_str(), path.as_str()) {
        ("POST", "/token") => ep::TOKEN,
        ("GET", "/tokeninfo") | ("POST", "/tokeninfo") => ep::TOKENINFO,
        ("POST", "/v1internal:loadCodeAssist") => ep::LOAD,
        ("POST", "/v1internal:onboardUser") => ep::ONBOARD,
        ("POST", "/v1internal:generateContent") => ep::GENERATE,
        ("POST", "/v1internal:streamGenerateContent") => ep::STREAM,
        ("POST", "/v1internal:retrieveUserQuota") => ep::QUOTA,
        // Inspection (not counted): calls per endpoint, onboarding polls, the clock.
        ("GET", "/__mock/calls") => {
            let calls = lock(&st.calls).clone();
            let polls = st.onboard_polls.load(Ordering::SeqCst);
            return json_resp(
                200,
                &json!({"calls": calls, "onboardPolls": polls, "now": st.now()}),
            );
        }
        _ => return error(404, &format!("mock: no endpoint {method} {path}")),
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
    lock(&st.log).push(Recorded {
        endpoint: endpoint.into(),
        query: query.clone(),
        headers: hdrs.clone(),
        body: json_body.clone(),
        form: form.clone(),
    });

    let token = bearer(&hdrs);
    let model = json_body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(f) = st.take_fault(endpoint, model.as_deref(), token.as_deref()) {
        return apply_fault(f, model.as_deref().unwrap_or("gemini-2.5-flash"));
    }
    match endpoint {
        ep::TOKEN => token_endpoint(&st, &form).await,
        ep::TOKENINFO => {
            let t = token
                .or_else(|| parse_form(&query).get("access_token").cloned())
                .unwrap_or_default();
            let exp = lock(&st.access).get(&t).copied();
            match exp.filter(|e| *e > st.now()) {
                Some(e) => json_resp(
                    200,
                    &json!({"email": EMAIL, "expires_in": (e - st.now()) / 1000, "scope": SCOPE}),
                ),
                None => json_resp(
                    400,
                    &json!({"error": "invalid_token", "error_description": "Invalid Value"}),
                ),
            }
        }
        _ => {
            if !token.as_deref().is_some_and(|t| st.valid_access(t)) {
                return unauthenticated();
            }
            let Value::Object(body) = json_body else {
                return error(400, "Invalid JSON payload received.");
            };
            match endpoint {
                ep::LOAD => load_code_assist(&st, &body),
                ep::ONBOARD => onboard(&st, &body),
                ep::QUOTA => quota(&st, &body),
                _ => {
                    let stream = endpoint == ep::STREAM;
                    if stream && !query.split('&').any(|kv| kv == "alt=sse") {
                        return error(400, "mock: streamGenerateContent needs alt=sse");
                    }
                    generate(&st, &body, stream)
                }
            }
        }
    }
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
            let chunks = text_chunks(TEXT, model);
            break_after(sse_body(&chunks[..k.min(chunks.len())]))
        }
        Fault::MalformedFirst => respond(
            200,
            "text/event-stream",
            "data: {\"response\": {\"candidates\": [\r\n\r\n",
        ),
        Fault::GarbageAfter(k) => {
            let chunks = text_chunks(TEXT, model);
            let mut s = sse_body(&chunks[..k.min(chunks.len())]);
            s.push_str("data: <html>502 Bad Gateway</html>\r\n\r\n");
            respond(200, "text/event-stream", s)
        }
        Fault::ErrorEvent(code) => {
            let body = json!([google_error(code, "mock error inside the stream")]);
            respond(200, "text/event-stream", format!("data: {body}\r\n\r\n"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

async fn token_endpoint(st: &MockState, form: &HashMap<String, String>) -> Response {
    let opts = st.opts();
    if opts.token_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(opts.token_delay_ms)).await;
    }
    let oauth_err = |status: u16, code: &str, desc: &str| {
        json_resp(status, &json!({"error": code, "error_description": desc}))
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_err(400, "unsupported_grant_type", "Invalid grant_type");
    }
    let id_ok = opts
        .client_id
        .as_ref()
        .is_none_or(|id| form.get("client_id") == Some(id));
    let secret_ok = opts
        .client_secret
        .as_ref()
        .is_none_or(|s| form.get("client_secret") == Some(s));
    if !id_ok || !secret_ok {
        return oauth_err(401, "invalid_client", "The OAuth client was not found.");
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    let mut refresh = lock(&st.refresh);
    if !refresh.contains(&rt) {
        return oauth_err(400, "invalid_grant", "Token has been expired or revoked.");
    }
    let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("mock-at-refreshed-{n}");
    lock(&st.access).insert(access.clone(), st.now() + opts.expires_in_s * 1000);
    let mut out = json!({"access_token": access, "expires_in": opts.expires_in_s, "scope": SCOPE, "token_type": "Bearer"});
    if opts.rotate_refresh_tokens {
        let new_rt = format!("mock-rt-rotated-{n}");
        refresh.remove(&rt);
        refresh.insert(new_rt.clone());
        out["refresh_token"] = json!(new_rt);
    }
    json_resp(200, &out)
}

// ---------------------------------------------------------------------------------------------
// Project discovery and quota
// ---------------------------------------------------------------------------------------------

fn check_metadata(body: &Map<String, Value>) -> Option<Response> {
    let ok = body
        .get("metadata")
        .and_then(|m| m.get("pluginType"))
        .and_then(Value::as_str)
        == Some("GEMINI");
    (!ok).then(|| error(400, "mock: metadata.pluginType GEMINI is required"))
}

fn load_code_assist(st: &MockState, body: &Map<String, Value>) -> Response {
    if let Some(r) = check_metadata(body) {
        return r;
    }
    let opts = st.opts();
    let mut out = json!({
        "currentTier": {"id": "free-tier", "name": "Gemini Code Assist for individuals"},
        "allowedTiers": [{"id": "free-tier", "name": "Gemini Code Assist for individuals", "isDefault": true}],
        "manageSubscriptionUri": format!("https://example.invalid/manage?Email={}", EMAIL.replace('@', "%40")),
    });
    if opts.load_returns_project {
        out["cloudaicompanionProject"] = json!(opts.project);
    }
    json_resp(200, &out)
}

fn onboard(st: &MockState, body: &Map<String, Value>) -> Response {
    if let Some(r) = check_metadata(body) {
        return r;
    }
    if body
        .get("tierId")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return error(400, "mock: tierId is required");
    }
    let opts = st.opts();
    let poll = st.onboard_polls.fetch_add(1, Ordering::SeqCst) + 1;
    if poll <= opts.onboard_pending_polls {
        return json_resp(
            200,
            &json!({"name": "operations/mock-onboard", "done": false}),
        );
    }
    json_resp(
        200,
        &json!({"name": "operations/mock-onboard", "done": true,
        "response": {"@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse",
                     "cloudaicompanionProject": {"id": opts.project, "name": "Mock Project"}}}),
    )
}

fn quota(st: &MockState, body: &Map<String, Value>) -> Response {
    if body.get("project").and_then(Value::as_str) != Some(st.opts().project.as_str()) {
        return error(403, "mock: permission denied on the project");
    }
    json_resp(
        200,
        &json!({"buckets": [
            {"modelId": "gemini-2.5-flash", "remainingFraction": 0.75, "remainingAmount": "750", "resetTime": "2030-01-01T00:00:00Z", "tokenType": "REQUESTS"},
            {"modelId": "gemini-2.5-pro", "remainingFraction": 1.0, "remainingAmount": "100", "resetTime": "2030-01-01T00:00:00Z", "tokenType": "REQUESTS"},
        ]}),
    )
}

// ---------------------------------------------------------------------------------------------
// Inference
// ---------------------------------------------------------------------------------------------

const ENVELOPE_KEYS: [&str; 7] = [
    "model",
    "project",
    "request",
    "user_prompt_id",
    "userAgent",
    "requestType",
    "requestId",
];

/// Validates the envelope like the real service; the request on success.
fn validate<'a>(
    st: &MockState,
    body: &'a Map<String, Value>,
) -> Result<&'a Map<String, Value>, Box<Response>> {
    if let Some(k) = body.keys().find(|k| !ENVELOPE_KEYS.contains(&k.as_str())) {
        return Err(Box::new(error(
            400,
            &format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."),
        )));
    }
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(Box::new(error(400, "mock: model is required")));
    }
    let project = body.get("project").and_then(Value::as_str).unwrap_or("");
    if project != st.opts().project {
        return Err(Box::new(error(
            403,
            &format!("Permission denied on resource project {project}."),
        )));
    }
    let Some(Value::Object(req)) = body.get("request") else {
        return Err(Box::new(error(400, "mock: request is required")));
    };
    let Some(Value::Array(contents)) = req.get("contents") else {
        return Err(Box::new(error(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
        )));
    };
    if contents.is_empty() {
        return Err(Box::new(error(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
        )));
    }
    for (i, c) in contents.iter().enumerate() {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "model" {
            return Err(Box::new(error(
                400,
                &format!("Please use a valid role: user, model. (contents[{i}].role = {role:?})"),
            )));
        }
        if c.get("parts")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(Box::new(error(
                400,
                &format!(
                    "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
                ),
            )));
        }
    }
    if let Some(tc) = req.get("toolConfig")
        && !tc.is_null()
        && !tc.is_object()
    {
        return Err(Box::new(error(400, "mock: toolConfig must be an object")));
    }
    Ok(req)
}

/// What the scripted model answers.
struct Script {
    parts: Vec<Value>,
    finish: Option<&'static str>,
    block: bool,
    thoughts: u64,
    /// Text chunks for streaming (the text parts split), or whole parts.
    split_text: bool,
}

fn last_user_parts(req: &Map<String, Value>) -> Vec<Value> {
    req.get("contents")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("parts"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn decoded_len(b64: &str) -> usize {
    let s = b64.trim_end_matches('=');
    s.len() * 3 / 4
}

fn script(req: &Map<String, Value>) -> Script {
    let parts = last_user_parts(req);
    let text: String = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let plain = |t: String| Script {
        parts: vec![json!({"text": t})],
        finish: Some("STOP"),
        block: false,
        thoughts: 0,
        split_text: true,
    };
    if let Some(fr) = parts.iter().find_map(|p| p.get("functionResponse")) {
        let resp = fr.get("response").cloned().unwrap_or(Value::Null);
        let result = resp
            .get("result")
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| r.to_string())
            })
            .unwrap_or_else(|| resp.to_string());
        return plain(format!("The tool said: {result}"));
    }
    if text.contains("[tool]") || text.contains("[tool-id]") {
        let name = req
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|t| {
                t.iter().find_map(|t| {
                    t.get("functionDeclarations")
                        .and_then(Value::as_array)
                        .and_then(|d| d.first())
                })
            })
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("get_weather");
        let mut call = json!({"name": name, "args": {"city": "Paris"}});
        if text.contains("[tool-id]") {
            call["id"] = json!("fc-mock-1");
        }
        return Script {
            parts: vec![json!({"functionCall": call, "thoughtSignature": "c2lnLW1vY2stdG9vbA=="})],
            finish: Some("STOP"),
            block: false,
            thoughts: 0,
            split_text: false,
        };
    }
    if text.contains("[think]") {
        return Script {
            parts: vec![
                json!({"text": "Pondering the question.", "thought": true, "thoughtSignature": "c2lnLW1vY2stdGhpbms="}),
                json!({"text": TEXT}),
            ],
            finish: Some("STOP"),
            block: false,
            thoughts: 7,
            split_text: false,
        };
    }
    let all_user_text: String = req
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .flat_map(|m| {
            m.get("parts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_string))
        .collect();
    if all_user_text.contains("[max]") {
        let continued = req
            .get("contents")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|m| m.get("role").and_then(Value::as_str) == Some("model"))
            });
        return if continued {
            plain(" Part two.".into())
        } else {
            Script {
                parts: vec![json!({"text": "Part one."})],
                finish: Some("MAX_TOKENS"),
                block: false,
                thoughts: 0,
                split_text: false,
            }
        };
    }
    if text.contains("[safety]") {
        return Script {
            parts: vec![],
            finish: Some("SAFETY"),
            block: false,
            thoughts: 0,
            split_text: false,
        };
    }
    if text.contains("[block]") {
        return Script {
            parts: vec![],
            finish: None,
            block: true,
            thoughts: 0,
            split_text: false,
        };
    }
    if let Some(d) = parts.iter().find_map(|p| p.get("inlineData")) {
        let mime = d.get("mimeType").and_then(Value::as_str).unwrap_or("?");
        let n = d
            .get("data")
            .and_then(Value::as_str)
            .map(decoded_len)
            .unwrap_or(0);
        return plain(format!("Saw {mime}, {n} bytes."));
    }
    plain(TEXT.into())
}

fn usage(prompt: u64, out: u64, thoughts: u64) -> Value {
    let mut u = json!({"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out + thoughts});
    if thoughts > 0 {
        u["thoughtsTokenCount"] = json!(thoughts);
    }
    u
}

fn wrap(response: Value, n: u64) -> Value {
    json!({"response": response, "traceId": format!("mock-trace-{n}")})
}

/// The plain-text stream of `text`, a word per chunk (for faults).
fn text_chunks(text: &str, model: &str) -> Vec<Value> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut cand = json!({"content": {"role": "model", "parts": [{"text": w}]}, "index": 0});
            if i == last {
                cand["finishReason"] = json!("STOP");
            }
            wrap(json!({"candidates": [cand], "usageMetadata": usage(5, i as u64 + 1, 0), "modelVersion": model, "responseId": "mock-resp"}), i as u64)
        })
        .collect()
}

fn generate(st: &MockState, body: &Map<String, Value>, stream: bool) -> Response {
    let req = match validate(st, body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gemini-2.5-flash")
        .to_string();
    let s = script(req);
    let n = st.seq.fetch_add(1, Ordering::SeqCst);
    let prompt_tokens = 5;
    let out_tokens = 3;
    let candidate = |parts: Vec<Value>, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
            if f == "SAFETY" {
                c["safetyRatings"] = json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]);
                c.as_object_mut().expect("object").remove("content");
            }
        }
        c
    };
    let resp_id = format!("mock-resp-{n}");
    if s.block {
        let r = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "usageMetadata": usage(prompt_tokens, 0, 0), "modelVersion": model, "responseId": resp_id});
        return if stream {
            respond(200, "text/event-stream", sse_body(&[wrap(r, n)]))
        } else {
            json_resp(200, &wrap(r, n))
        };
    }
    if !stream {
        let r = json!({"candidates": [candidate(s.parts, s.finish)], "usageMetadata": usage(prompt_tokens, out_tokens, s.thoughts), "modelVersion": model, "responseId": resp_id});
        return json_resp(200, &wrap(r, n));
    }
    // Stream: one event per text word (split text) or per part; usage on every chunk, the
    // finish reason on the last.
    let mut pieces: Vec<Value> = Vec::new();
    for p in s.parts {
        match p.get("text").and_then(Value::as_str) {
            Some(t) if s.split_text => {
                pieces.extend(t.split_inclusive(' ').map(|w| json!({"text": w})))
            }
            _ => pieces.push(p),
        }
    }
    let mut events = Vec::new();
    let total = pieces.len();
    if total == 0 {
        let r = json!({"candidates": [candidate(vec![], s.finish)], "usageMetadata": usage(prompt_tokens, 0, 0), "modelVersion": model, "responseId": resp_id});
        events.push(wrap(r, n));
    }
    for (i, piece) in pieces.into_iter().enumerate() {
        let last = i + 1 == total;
        let finish = if last { s.finish } else { None };
        let thoughts = if last { s.thoughts } else { 0 };
        let r = json!({"candidates": [candidate(vec![piece], finish)], "usageMetadata": usage(prompt_tokens, i as u64 + 1, thoughts), "modelVersion": model, "responseId": resp_id});
        events.push(wrap(r, n));
    }
    respond(200, "text/event-stream", sse_body(&events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = parse_form("grant_type=refresh_token&refresh_token=a%2Fb+c&x=%zz");
        assert_eq!(f["grant_type"], "refresh_token");
        assert_eq!(f["refresh_token"], "a/b c");
        assert_eq!(f["x"], "%zz");
        assert_eq!(decoded_len("iVBORw0KGgo="), 8);
    }
}
