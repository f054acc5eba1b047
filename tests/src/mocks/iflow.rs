//! A faithful mock of iFlow's upstream (`providers/iflow.md` §6): the OAuth token and
//! user-info endpoints of `iflow.cn` and the OpenAI-compatible API of `apis.iflow.cn`, on one
//! loopback server. What the `iflow` provider plugin talks to in tests.
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `POST /oauth/token` | form-encoded only; client authentication by HTTP Basic and/or `client_id` + `client_secret` form fields (either accepted; [`Options::require_both_client_auths`] asserts both); `grant_type=refresh_token` with a known refresh token → `{access_token, refresh_token, expires_in, token_type, scope}`; rotates refresh tokens by default (the used one → 400 `invalid_grant`); switches omit `refresh_token` / `expires_in` |
//! | `GET /api/oauth/getUserInfo?accessToken=…` | an unexpired access token → `{"success": true, "data": {"apiKey", "email", "phone"}}` with the account's key (a new key per refresh when [`Options::rotate_api_keys`]); unknown → `{"success": false}` (HTTP 200, or 401 with [`Options::user_info_401`]) |
//! | `POST /v1/chat/completions` | `Authorization: Bearer <issued API key>` (an OAuth access token or a revoked key → 401); `User-Agent: iFlow-Cli`; `session-id` / `x-iflow-timestamp` (±5 min of the wall clock) / `x-iflow-signature` = hex HMAC-SHA256(key, `iFlow-Cli:<session-id>:<timestamp>`) checked strictly, leniently (only if present) or not at all; a known model; scripted unary or SSE answers |
//! | `GET /v1/models` | the same auth → an OpenAI model list |
//! | `GET /__mock/calls` | inspection: calls per endpoint, refreshes, keys issued, the clock (not counted) |
//!
//! Scripted answers, by the conversation's last message:
//!
//! | last message | answer |
//! |---|---|
//! | a `tool` result | text `The tool said: <result>` |
//! | user text containing `[tool]` | a call of the first declared function other than `noop` with `{"city":"Paris"}` (arguments split over chunks when streaming) |
//! | a `glm-4*` model with `chat_template_kwargs.enable_thinking: true`, or `[think]` | `reasoning_content`, then [`TEXT`] |
//! | `[length]` | `Part one.` with `finish_reason: length` |
//! | an `image_url` part (only `qwen3-vl-plus` takes images, else 400) | `Saw <mime>, <n> bytes.` |
//! | anything else | [`TEXT`], streamed word by word |
//!
//! Streams are `data: <chunk>` events (or `data:<chunk>` with [`Options::compact_sse`]): a role
//! chunk, deltas, the `finish_reason` chunk carrying `usage`, then `data: [DONE]`.
//!
//! Faults ([`IFlowMock::inject`]) hit the next N matching calls (by endpoint, bearer, model):
//! any status and body (a 200 `success:false` for user info too), a slow answer, a connection
//! cut before any data, a stream cut after K chunks, a malformed first event or a malformed
//! line after K chunks. The clock is the test's. Every call is counted and recorded.

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

pub const TEXT: &str = "Hello from mock iFlow.";
pub const CLIENT_ID: &str = "10009311001";
pub const CLIENT_SECRET: &str = "mock-iflow-secret";
pub const EMAIL: &str = "user@example.com";
pub const MODELS: [&str; 20] = [
    "deepseek-r1",
    "deepseek-v3",
    "deepseek-v3.2",
    "glm-4.6",
    "glm-4.7",
    "glm-5",
    "iflow-rome-30ba3b",
    "kimi-k2",
    "kimi-k2-0905",
    "kimi-k2.5",
    "minimax-m2.1",
    "minimax-m2.5",
    "qwen3-235b",
    "qwen3-235b-a22b-instruct",
    "qwen3-235b-a22b-thinking-2507",
    "qwen3-32b",
    "qwen3-coder-plus",
    "qwen3-max",
    "qwen3-max-preview",
    "qwen3-vl-plus",
];
/// Issued access tokens live 48 h unless configured.
pub const DEFAULT_EXPIRES_IN_S: i64 = 172_800;

/// Endpoint names used by counters, records and fault filters.
pub mod ep {
    pub const TOKEN: &str = "token";
    pub const USER_INFO: &str = "userInfo";
    pub const CHAT: &str = "chat";
    pub const MODELS: &str = "models";
}

/// How strictly the request signature is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Required and valid.
    Strict,
    /// Valid if present (the Redis variant sends none).
    Lenient,
    Off,
}

/// How the mock behaves; changeable while it runs ([`IFlowMock::configure`]).
#[derive(Clone, Debug)]
pub struct Options {
    pub client_id: String,
    pub client_secret: String,
    /// Require both the Basic header and the form fields (else either is enough).
    pub require_both_client_auths: bool,
    pub expires_in_s: i64,
    /// Leave `expires_in` out of token answers (the plugin must assume 3600 s).
    pub omit_expires_in: bool,
    pub rotate_refresh_tokens: bool,
    /// Include `refresh_token` in token answers.
    pub return_refresh_token: bool,
    /// Issue a new API key at the first user-info call after each refresh (the old one stops
    /// working).
    pub rotate_api_keys: bool,
    /// Unknown access tokens at user info get 401 instead of `200 {"success": false}`.
    pub user_info_401: bool,
    pub signature: Signature,
    /// `data:{…}` without the space.
    pub compact_sse: bool,
    /// A refused (revoked / unknown) API key gets this status (401; the real service may say 400).
    pub refused_key_status: u16,
    pub token_delay_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            require_both_client_auths: false,
            expires_in_s: DEFAULT_EXPIRES_IN_S,
            omit_expires_in: false,
            rotate_refresh_tokens: true,
            return_refresh_token: true,
            rotate_api_keys: false,
            user_info_401: false,
            signature: Signature::Strict,
            compact_sse: false,
            refused_key_status: 401,
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
pub fn openai_error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": Value::Null}})
}

impl Fault {
    pub fn status(code: u16) -> Self {
        Fault::Status {
            status: code,
            body: openai_error(&format!("mock injected {code}"), "mock_error"),
            retry_after: None,
        }
    }
    /// A 429 with an optional `Retry-After` header (seconds).
    pub fn rate_limited(retry_after_s: Option<u64>) -> Self {
        Fault::Status {
            status: 429,
            body: openai_error("Too many requests", "rate_limit_error"),
            retry_after: retry_after_s.map(|s| s.to_string()),
        }
    }
    /// User info answering `200 {"success": false}`.
    pub fn user_info_refused() -> Self {
        Fault::Status {
            status: 200,
            body: json!({"success": false, "code": "500", "message": "mock: user service unavailable", "data": null}),
            retry_after: None,
        }
    }
}

/// A fault and which calls it hits.
#[derive(Clone, Debug)]
pub struct Injection {
    pub fault: Fault,
    pub times: u64,
    pub endpoint: Option<&'static str>,
    pub model: Option<String>,
    /// Only calls with this bearer (API key).
    pub bearer: Option<String>,
}

impl Injection {
    /// `fault` on the next `times` chat calls.
    pub fn next(times: u64, fault: Fault) -> Self {
        Self {
            fault,
            times,
            endpoint: None,
            model: None,
            bearer: None,
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
    pub fn for_key(mut self, key: &str) -> Self {
        self.bearer = Some(key.into());
        self
    }
}

/// One received call.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub endpoint: String,
    pub query: HashMap<String, String>,
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub form: HashMap<String, String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
    }
}

#[derive(Default)]
pub struct MockState {
    opts: Mutex<Options>,
    clock_offset_ms: AtomicI64,
    /// OAuth access token → (account, expiry on the mock clock).
    access: Mutex<HashMap<String, (String, i64)>>,
    /// Refresh token → account.
    refresh: Mutex<HashMap<String, String>>,
    /// Valid API key → account.
    keys: Mutex<HashMap<String, String>>,
    /// Account → its current API key.
    current_key: Mutex<HashMap<String, String>>,
    /// Access tokens issued by a refresh whose user-info call may still rotate the key.
    fresh_access: Mutex<HashSet<String>>,
    faults: Mutex<Vec<Injection>>,
    calls: Mutex<HashMap<String, u64>>,
    log: Mutex<Vec<Recorded>>,
    seq: AtomicU64,
    refreshes: AtomicU64,
    keys_issued: AtomicU64,
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
    fn take_fault(
        &self,
        endpoint: &str,
        model: Option<&str>,
        bearer: Option<&str>,
    ) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| {
            f.endpoint.unwrap_or(ep::CHAT) == endpoint
                && f.model.as_deref().is_none_or(|m| Some(m) == model)
                && f.bearer.as_deref().is_none_or(|t| Some(t) == bearer)
        })?;
        let fault = faults[i].fault.clone();
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
    fn issue_key(&self, account: &str) -> String {
        let n = self.keys_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let key = format!("sk-mock-{account}-{n}");
        let mut keys = lock(&self.keys);
        if let Some(old) = lock(&self.current_key).insert(account.into(), key.clone()) {
            keys.remove(&old);
        }
        keys.insert(key.clone(), account.into());
        key
    }
}

/// A running mock (cheap to clone); it serves until the process ends.
#[derive(Clone)]
pub struct IFlowMock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl IFlowMock {
    /// The OAuth base (`IFLOW_OAUTH_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The inference base (`IFLOW_BASE_URL`).
    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
    pub fn now_ms(&self) -> i64 {
        self.state.now()
    }
    pub fn advance(&self, ms: i64) {
        self.state.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn configure(&self, f: impl FnOnce(&mut Options)) {
        f(&mut lock(&self.state.opts));
    }
    /// A new account `id` with an OAuth access token valid for `valid_for_ms`, a refresh token
    /// and a fresh API key; its credential file's JSON (`apiKey` included).
    pub fn credential(&self, id: &str, access: &str, refresh: &str, valid_for_ms: i64) -> Value {
        let exp = self.now_ms() + valid_for_ms;
        lock(&self.state.access).insert(access.into(), (id.into(), exp));
        lock(&self.state.refresh).insert(refresh.into(), id.into());
        let key = self.state.issue_key(id);
        json!({"access_token": access, "refresh_token": refresh, "expiry_date": exp,
            "token_type": "Bearer", "scope": "", "apiKey": key})
    }
    /// The account's current API key.
    pub fn api_key(&self, account: &str) -> Option<String> {
        lock(&self.state.current_key).get(account).cloned()
    }
    pub fn api_key_valid(&self, key: &str) -> bool {
        lock(&self.state.keys).contains_key(key)
    }
    /// The key stops working (as if revoked by the service); the account gets a new one at its
    /// next user-info call.
    pub fn revoke_api_key(&self, key: &str) {
        lock(&self.state.keys).remove(key);
        let mut cur = lock(&self.state.current_key);
        let acct = cur.iter().find(|(_, k)| *k == key).map(|(a, _)| a.clone());
        if let Some(a) = acct {
            cur.remove(&a);
        }
    }
    pub fn expire_access_token(&self, token: &str) {
        let now = self.now_ms();
        if let Some(e) = lock(&self.state.access).get_mut(token) {
            e.1 = now;
        }
    }
    pub fn access_token_valid(&self, token: &str) -> bool {
        lock(&self.state.access)
            .get(token)
            .is_some_and(|(_, e)| *e > self.now_ms())
    }
    pub fn revoke_refresh_token(&self, token: &str) {
        lock(&self.state.refresh).remove(token);
    }
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        lock(&self.state.refresh).contains_key(token)
    }
    pub fn inject(&self, injection: Injection) {
        lock(&self.state.faults).push(injection);
    }
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }
    pub fn pending_faults(&self) -> usize {
        lock(&self.state.faults).len()
    }
    pub fn calls(&self, endpoint: &str) -> u64 {
        lock(&self.state.calls).get(endpoint).copied().unwrap_or(0)
    }
    /// Successful refreshes (access tokens issued by the token endpoint).
    pub fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::SeqCst)
    }
    /// API keys issued so far (initial ones included).
    pub fn keys_issued(&self) -> u64 {
        self.state.keys_issued.load(Ordering::SeqCst)
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
    /// Chat calls per bearer.
    pub fn calls_per_key(&self) -> HashMap<String, u64> {
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
pub async fn start(opts: Options) -> IFlowMock {
    let state = Arc::new(MockState {
        opts: Mutex::new(opts),
        ..Default::default()
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind iflow mock");
    let addr = listener.local_addr().expect("mock addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    IFlowMock { addr, state }
}

/// Starts the mock on its own thread and runtime (for synchronous tests).
pub fn start_in_thread(opts: Options) -> IFlowMock {
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
    rx.recv().expect("iflow mock started")
}

// ---------------------------------------------------------------------------------------------
// SHA-256 / HMAC (an independent implementation, to check the plugin's signature)
// ---------------------------------------------------------------------------------------------

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// HMAC-SHA256, lower-case hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = k.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>();
    inner.extend_from_slice(msg);
    let mut outer = k.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer).iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature iFlow expects for a call.
pub fn expected_signature(api_key: &str, session_id: &str, timestamp: &str) -> String {
    hmac_sha256_hex(
        api_key.as_bytes(),
        format!("iFlow-Cli:{session_id}:{timestamp}").as_bytes(),
    )
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
    json_resp(400, &openai_error(message, "invalid_request_error"))
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

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut n = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((buf >> n) as u8);
        }
    }
    Some(out)
}

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

fn sse_body(events: &[Value], compact: bool) -> String {
    let prefix = if compact { "data:" } else { "data: " };
    events.iter().map(|e| format!("{prefix}{e}\n\n")).collect()
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
    let query = parse_form(uri.query().unwrap_or(""));
    let endpoint = match (method.as_str(), path.as_str()) {
        ("POST", "/oauth/token") => ep::TOKEN,
        ("GET", "/api/oauth/getUserInfo") => ep::USER_INFO,
        ("POST", "/v1/chat/completions") => ep::CHAT,
        ("GET", "/v1/models") => ep::MODELS,
        ("GET", "/__mock/calls") => {
            let calls = lock(&st.calls).clone();
            return json_resp(
                200,
                &json!({"calls": calls, "refreshes": st.refreshes.load(Ordering::SeqCst),
                    "keysIssued": st.keys_issued.load(Ordering::SeqCst), "now": st.now()}),
            );
        }
        _ => {
            return json_resp(
                404,
                &openai_error(&format!("mock: no endpoint {method} {path}"), "not_found"),
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
        query: query.clone(),
        headers: hdrs.clone(),
        body: json_body.clone(),
        form: form.clone(),
    };
    let bearer = rec.bearer().map(str::to_string);
    lock(&st.log).push(rec);
    let model = json_body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let opts = st.opts();
    let mut fault = st.take_fault(endpoint, model.as_deref(), bearer.as_deref());
    if let Some(Fault::Slow(ms)) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        fault = None;
    }
    if let Some(f) = fault {
        return apply_fault(f, model.as_deref().unwrap_or(MODELS[0]), opts.compact_sse);
    }
    match endpoint {
        ep::TOKEN => token_endpoint(&st, &opts, &hdrs, &form).await,
        ep::USER_INFO => user_info(&st, &opts, &query),
        _ => {
            if let Err(r) = check_auth(&st, &opts, &hdrs, bearer.as_deref()) {
                return *r;
            }
            if endpoint == ep::MODELS {
                let data: Vec<Value> = MODELS
                    .iter()
                    .take(4)
                    .map(|m| json!({"id": m, "object": "model", "created": 1_767_225_600, "owned_by": "iflow"}))
                    .collect();
                return json_resp(200, &json!({"object": "list", "data": data}));
            }
            let Value::Object(body) = json_body else {
                return bad_request("mock: the body is not a JSON object");
            };
            if let Err(m) = validate(&body) {
                return bad_request(&m);
            }
            chat(&body, opts.compact_sse)
        }
    }
}

fn apply_fault(f: Fault, model: &str, compact: bool) -> Response {
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
            let chunks = stream_chunks(model, &Script::text(TEXT));
            break_after(sse_body(&chunks[..k.min(chunks.len())], compact))
        }
        Fault::MalformedFirst => respond(200, "text/event-stream", "data: {\"id\": \"chat\n\n"),
        Fault::MalformedAfter(k) => {
            let chunks = stream_chunks(model, &Script::text(TEXT));
            let mut s = sse_body(&chunks[..k.min(chunks.len())], compact);
            s.push_str("data: <html>502 Bad Gateway</html>\n\n");
            respond(200, "text/event-stream", s)
        }
        Fault::Slow(_) => json_resp(500, &openai_error("mock: unreachable", "server_error")),
    }
}

/// API key, user agent and signature of an inference call.
fn check_auth(
    st: &MockState,
    opts: &Options,
    hdrs: &HashMap<String, String>,
    bearer: Option<&str>,
) -> Result<(), Box<Response>> {
    let key = bearer.unwrap_or("");
    if !lock(&st.keys).contains_key(key) {
        return Err(Box::new(json_resp(
            opts.refused_key_status,
            &json!({"error": {"message": "Invalid API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        )));
    }
    if hdrs.get("user-agent").map(String::as_str) != Some("iFlow-Cli") {
        return Err(Box::new(bad_request(
            "mock: User-Agent: iFlow-Cli is required",
        )));
    }
    let sig = hdrs.get("x-iflow-signature");
    let check = match opts.signature {
        Signature::Strict => true,
        Signature::Lenient => sig.is_some(),
        Signature::Off => false,
    };
    if !check {
        return Ok(());
    }
    let session = hdrs.get("session-id").cloned().unwrap_or_default();
    let ts = hdrs.get("x-iflow-timestamp").cloned().unwrap_or_default();
    if !session.starts_with("session-") {
        return Err(Box::new(bad_request(
            "mock: session-id: session-<uuid> is required",
        )));
    }
    let skew_ok = ts
        .parse::<i64>()
        .is_ok_and(|t| (t - wall_ms()).abs() <= 5 * 60_000);
    if !skew_ok {
        return Err(Box::new(bad_request(
            "mock: x-iflow-timestamp is missing or out of the clock-skew window",
        )));
    }
    if sig.map(String::as_str) != Some(expected_signature(key, &session, &ts).as_str()) {
        return Err(Box::new(bad_request(
            "mock: x-iflow-signature does not match",
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

async fn token_endpoint(
    st: &MockState,
    opts: &Options,
    headers: &HashMap<String, String>,
    form: &HashMap<String, String>,
) -> Response {
    if opts.token_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(opts.token_delay_ms)).await;
    }
    let oauth_err = |status: u16, code: &str, desc: &str| {
        json_resp(status, &json!({"error": code, "error_description": desc}))
    };
    if !headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return oauth_err(400, "invalid_request", "mock: form-encoded bodies only");
    }
    let basic_ok = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok())
        == Some(format!("{}:{}", opts.client_id, opts.client_secret));
    let form_ok = form.get("client_id") == Some(&opts.client_id)
        && form.get("client_secret") == Some(&opts.client_secret);
    let authed = if opts.require_both_client_auths {
        basic_ok && form_ok
    } else {
        basic_ok || form_ok
    };
    if !authed {
        return oauth_err(401, "invalid_client", "mock: client authentication failed");
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_err(
            400,
            "unsupported_grant_type",
            "mock: refresh_token grants only",
        );
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    let mut refresh = lock(&st.refresh);
    let Some(account) = refresh.get(&rt).cloned() else {
        return oauth_err(400, "invalid_grant", "mock: unknown or used refresh token");
    };
    let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("mock-iat-{n}");
    lock(&st.access).insert(
        access.clone(),
        (account.clone(), st.now() + opts.expires_in_s * 1000),
    );
    lock(&st.fresh_access).insert(access.clone());
    st.refreshes.fetch_add(1, Ordering::SeqCst);
    let mut out = json!({"access_token": access, "token_type": "bearer", "scope": "read"});
    if !opts.omit_expires_in {
        out["expires_in"] = json!(opts.expires_in_s);
    }
    let next_rt = if opts.rotate_refresh_tokens {
        let new_rt = format!("mock-irt-{n}");
        refresh.remove(&rt);
        refresh.insert(new_rt.clone(), account);
        new_rt
    } else {
        rt
    };
    if opts.return_refresh_token {
        out["refresh_token"] = json!(next_rt);
    }
    json_resp(200, &out)
}

fn user_info(st: &MockState, opts: &Options, query: &HashMap<String, String>) -> Response {
    let token = query.get("accessToken").cloned().unwrap_or_default();
    let owner = lock(&st.access)
        .get(&token)
        .filter(|(_, e)| *e > st.now())
        .map(|(a, _)| a.clone());
    let Some(account) = owner else {
        let body = json!({"success": false, "code": "401", "message": "mock: invalid access token", "data": null});
        return json_resp(if opts.user_info_401 { 401 } else { 200 }, &body);
    };
    let first_use = lock(&st.fresh_access).remove(&token);
    let current = lock(&st.current_key).get(&account).cloned();
    let key = match current {
        Some(k) if !(opts.rotate_api_keys && first_use) => k,
        _ => st.issue_key(&account),
    };
    json_resp(
        200,
        &json!({"success": true, "code": "200", "message": "success",
            "data": {"apiKey": key, "email": EMAIL, "phone": ""}}),
    )
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

fn validate(body: &Map<String, Value>) -> Result<(), String> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if !MODELS.contains(&model) {
        return Err(format!("Model not support: {model:?}"));
    }
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("mock: messages is required")?;
    if msgs.is_empty() {
        return Err("mock: messages must not be empty".into());
    }
    if body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        return Err("mock: tools must not be an empty array".into());
    }
    if body.get("reasoning_effort").is_some() {
        return Err("mock: reasoning_effort is not accepted here".into());
    }
    let images = msgs.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
            })
    });
    if images && model != "qwen3-vl-plus" {
        return Err(format!("mock: model {model} does not accept images"));
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct Script {
    pub reasoning: Option<String>,
    pub text: Option<String>,
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
            .find(|n| *n != "noop")
            .unwrap_or("get_weather")
            .to_string();
        return Script {
            tool_call: Some((name, "{\"city\":\"Paris\"}".into())),
            finish: "tool_calls",
            ..Default::default()
        };
    }
    let thinking = body
        .get("chat_template_kwargs")
        .and_then(|k| k.get("enable_thinking"))
        .and_then(Value::as_bool)
        == Some(true);
    if text.contains("[think]") || thinking {
        return Script {
            reasoning: Some("The user greets me.".into()),
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
            .map(|(m, d)| (m.to_string(), d.trim_end_matches('=').len() * 3 / 4))
            .unwrap_or_else(|| ("url".to_string(), url.len()));
        return Script::text(&format!("Saw {mime}, {len} bytes."));
    }
    Script::text(TEXT)
}

fn usage() -> Value {
    json!({"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20})
}

fn completion(model: &str, s: &Script) -> Value {
    let mut message = json!({"role": "assistant", "content": s.text.clone().unwrap_or_default()});
    if let Some(r) = &s.reasoning {
        message["reasoning_content"] = json!(r);
    }
    if let Some((name, args)) = &s.tool_call {
        message["tool_calls"] = json!([{"id": "call_iflow_1", "type": "function",
            "function": {"name": name, "arguments": args}}]);
    }
    json!({"id": "chatcmpl-iflow-1", "object": "chat.completion", "created": wall_ms() / 1000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": s.finish}], "usage": usage()})
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-iflow-1", "object": "chat.completion.chunk", "created": wall_ms() / 1000, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn stream_chunks(model: &str, s: &Script) -> Vec<Value> {
    let mut out = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    if let Some(r) = &s.reasoning {
        for w in r.split_inclusive(' ') {
            out.push(chunk(model, json!({"reasoning_content": w}), None));
        }
    }
    if let Some(t) = &s.text {
        for w in t.split_inclusive(' ') {
            out.push(chunk(model, json!({"content": w}), None));
        }
    }
    if let Some((name, args)) = &s.tool_call {
        out.push(chunk(
            model,
            json!({"tool_calls": [{"index": 0, "id": "call_iflow_1", "type": "function",
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
    let mut last = chunk(model, json!({}), Some(s.finish));
    last["usage"] = usage();
    out.push(last);
    out
}

fn chat(body: &Map<String, Value>, compact: bool) -> Response {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let s = script(body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut text = sse_body(&stream_chunks(model, &s), compact);
        text.push_str(if compact {
            "data:[DONE]\n\n"
        } else {
            "data: [DONE]\n\n"
        });
        respond(200, "text/event-stream", text)
    } else {
        json_resp(200, &completion(model, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_hmac_vectors() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_sha256_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            base64_decode("aWQ6c2VjcmV0").as_deref(),
            Some(&b"id:secret"[..])
        );
    }
}
