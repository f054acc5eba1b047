//! A faithful mock of Kiro's upstream (`shared/reference/providers/kiro.md` §7): one loopback
//! HTTP/1.1 server standing in for the inference host, the social token host and AWS
//! SSO-OIDC. Written on raw TCP so that it controls every byte and every write: event streams
//! go out as real AWS event-stream frames (CRC-32 computed here independently of the plugin)
//! in chunks of a chosen size, and faults can reset a connection or cut a frame in half.
//!
//! | path (any prefix, e.g. `/{region}/token`) | what it does |
//! |---|---|
//! | `POST …/generateAssistantResponse` | checks the bearer (the account's *current*, unexpired access token, else 403 — or 401 — "The bearer token included in the request is invalid."), validates the body (current message, origin, trigger, conversation id, alternating history, tool-result ids, no `null`, `profileArn` for social accounts; else 400 `Improperly formed request.`), then streams a scripted turn |
//! | `POST …/refreshToken` | social refresh: `{refreshToken}` must be the current one; rotates both tokens (the old ones stop working); 401 otherwise |
//! | `POST …/token` | OIDC `CreateToken`: `{clientId, clientSecret, grantType:"refresh_token", refreshToken}`; rotates; 400 `invalid_grant`/`invalid_client` otherwise |
//! | `GET …/getUsageLimits` | a usage breakdown (same bearer check) |
//!
//! Time is the mock's own clock (real time plus an offset the test advances): every access
//! token expires `expires_in` seconds after it was issued on that clock.
//!
//! Turns are scripted per call ([`MockState::script`]) or, by default, chosen by markers in the
//! current user message: `#tool` (a `get_weather` call streamed in fragments), `#twotools`,
//! `#thinking` (a leading `<thinking>…</thinking>\n\n`), `#nousage` (no `contextUsageEvent`),
//! `#unknown` (an unknown event type mid-stream); a current message carrying `toolResults`
//! gets `The tool said: <results>`. Otherwise the text is [`DEFAULT_TEXT`] in four deltas.
//!
//! Faults ([`Fault`]) are queued for the next N inference calls: any HTTP status with a body
//! and optional `Retry-After`, a connection reset before the headers, a stream cut inside a
//! frame, a mid-stream `ThrottlingException`, a trailing "ghost" exception, a corrupted CRC,
//! an exception as the first frame. Every request is recorded (path, headers, body, which
//! account, the status answered) and counted per endpoint.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default answer.
pub const DEFAULT_TEXT: &str = "Hello from Kiro mock.";
const DEFAULT_FRAGMENTS: [&str; 4] = ["Hello", " from", " Kiro", " mock."];
pub const INVALID_BEARER: &str = "The bearer token included in the request is invalid.";
pub const GHOST_MESSAGE: &str =
    "Encountered an unexpected error when processing the request, please try again.";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------
// Event-stream encoding (independent of the plugin's implementation)
// ------------------------------------------------------------------------------------------

/// CRC-32 (IEEE, reflected 0xEDB88320), bit by bit.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// One frame with string headers only (the only header type Kiro uses), in the given order.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 16 + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude = crc32(&out);
    out.extend_from_slice(&prelude.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let message = crc32(&out);
    out.extend_from_slice(&message.to_be_bytes());
    out
}

/// A Kiro event frame: `:event-type`, `:content-type`, `:message-type` in that order.
pub fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// An `exception` frame.
pub fn exception_frame(kind: &str, message: &str) -> Vec<u8> {
    frame(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({ "message": message }).to_string().as_bytes(),
    )
}

// ------------------------------------------------------------------------------------------
// Scripts and faults
// ------------------------------------------------------------------------------------------

/// One tool call, streamed as `toolUseEvent` frames (one per input fragment, then `stop`).
#[derive(Clone, Debug)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub fragments: Vec<String>,
}

/// A scripted answer.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// Sent first as `<thinking>…</thinking>\n\n`, in two deltas.
    pub thinking: Option<String>,
    pub text: Vec<String>,
    pub tools: Vec<ToolCall>,
    /// `contextUsageEvent` percentage; `None` leaves the event out.
    pub context_pct: Option<f64>,
    /// An unknown event type after the text.
    pub unknown_event: bool,
}

impl Turn {
    pub fn text(parts: &[&str]) -> Self {
        Turn {
            text: parts.iter().map(|s| s.to_string()).collect(),
            context_pct: Some(1.5),
            ..Default::default()
        }
    }

    /// The frames of this turn, ending with `meteringEvent` and (optionally) `contextUsageEvent`.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(t) = &self.thinking {
            out.push(event_frame(
                "assistantResponseEvent",
                &json!({"content": "<thinking>\n"}),
            ));
            out.push(event_frame(
                "assistantResponseEvent",
                &json!({"content": format!("{t}</thinking>\n\n")}),
            ));
        }
        for (i, t) in self.text.iter().enumerate() {
            out.push(event_frame(
                "assistantResponseEvent",
                &json!({"content": t, "modelId": "mock"}),
            ));
            if i == 0 && self.unknown_event {
                out.push(event_frame(
                    "mysteryFutureEvent",
                    &json!({"whatever": [1, 2, 3]}),
                ));
            }
        }
        for c in &self.tools {
            for f in &c.fragments {
                out.push(event_frame(
                    "toolUseEvent",
                    &json!({"name": c.name, "toolUseId": c.id, "input": f, "stop": false}),
                ));
            }
            out.push(event_frame(
                "toolUseEvent",
                &json!({"name": c.name, "toolUseId": c.id, "stop": true}),
            ));
        }
        out.push(event_frame(
            "meteringEvent",
            &json!({"unit": "credit", "unitPlural": "credits", "usage": 0.0247}),
        ));
        if let Some(p) = self.context_pct {
            out.push(event_frame(
                "contextUsageEvent",
                &json!({"contextUsagePercentage": p}),
            ));
        }
        out
    }
}

/// An injected failure for one inference call.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An HTTP error answer.
    Status {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// Close the connection (RST) before any header.
    ResetBeforeHeaders,
    /// Stream the turn but end the body in the middle of its second frame.
    CutMidFrame,
    /// One text delta, then a `ThrottlingException` frame.
    MidStreamException,
    /// The whole turn, then a trailing exception frame.
    GhostException,
    /// The turn with the message CRC of frame `n` (0-based) corrupted.
    CorruptCrc(usize),
    /// An exception frame as the only frame.
    ExceptionFirst(String),
}

impl Fault {
    pub fn status(status: u16, body: Value) -> Self {
        Fault::Status {
            status,
            body: body.to_string(),
            retry_after: None,
        }
    }
    pub fn too_long() -> Self {
        Self::status(
            400,
            json!({"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
        )
    }
    pub fn quota() -> Self {
        Self::status(
            402,
            json!({"message": "You have reached the limit of requests for this month.", "reason": "MONTHLY_REQUEST_COUNT"}),
        )
    }
    pub fn suspended() -> Self {
        Self::status(
            403,
            json!({"message": "Your User ID (u-123) temporarily is suspended. Please contact support.", "reason": null}),
        )
    }
    pub fn invalid_bearer(status: u16) -> Self {
        Self::status(status, json!({"message": INVALID_BEARER, "reason": null}))
    }
    pub fn throttled(retry_after_secs: Option<u64>) -> Self {
        Fault::Status {
            status: 429,
            body: json!({"message": "Rate exceeded", "__type": "ThrottlingException"}).to_string(),
            retry_after: retry_after_secs.map(|s| s.to_string()),
        }
    }
    pub fn server(status: u16) -> Self {
        Self::status(status, json!({"message": "Internal failure"}))
    }
}

/// How the event-stream body is cut into writes.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    /// One write.
    Whole,
    /// Writes of exactly `n` bytes (1 = every byte alone: cuts inside headers, CRCs and UTF-8).
    Fixed(usize),
    /// Writes of 1..=`max` bytes from a seeded generator.
    Random { seed: u64, max: usize },
}

// ------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MockAuth {
    Social {
        profile_arn: String,
    },
    Idc {
        client_id: String,
        client_secret: String,
    },
}

/// An account the mock knows.
#[derive(Clone, Debug)]
pub struct MockAccount {
    pub name: String,
    pub auth: MockAuth,
    pub access_token: String,
    /// On the mock's clock.
    pub access_expires_ms: i64,
    pub refresh_token: String,
    pub generation: u32,
}

/// Tokens as issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at_ms: i64,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Value::String` with the raw text if it was not JSON).
    pub body: Value,
    /// The account the bearer or refresh token belonged to.
    pub account: Option<String>,
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Calls received, per endpoint.
#[derive(Default, Debug)]
pub struct Counters {
    pub generate: AtomicU64,
    pub refresh_social: AtomicU64,
    pub refresh_idc: AtomicU64,
    pub usage_limits: AtomicU64,
    /// Inference calls refused for their bearer token.
    pub auth_rejected: AtomicU64,
    /// Refresh calls refused (unknown or rotated-out refresh token, wrong client).
    pub refresh_rejected: AtomicU64,
    /// Inference bodies refused as malformed.
    pub malformed: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// Everything a test controls and observes.
pub struct MockState {
    pub counters: Counters,
    clock_offset_ms: AtomicI64,
    expires_in_secs: AtomicI64,
    refresh_delay_ms: AtomicU64,
    auth_failure_status: AtomicU16,
    split: Mutex<Split>,
    accounts: Mutex<Vec<MockAccount>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Turns for the next inference calls, before the marker-based defaults.
    pub script: Mutex<VecDeque<Turn>>,
    requests: Mutex<Vec<Recorded>>,
    deny_models: Mutex<HashSet<String>>,
}

impl MockState {
    fn new() -> Self {
        Self {
            counters: Counters::default(),
            clock_offset_ms: AtomicI64::new(0),
            expires_in_secs: AtomicI64::new(3600),
            refresh_delay_ms: AtomicU64::new(0),
            auth_failure_status: AtomicU16::new(403),
            split: Mutex::new(Split::Whole),
            accounts: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            deny_models: Mutex::new(HashSet::new()),
        }
    }

    /// The mock's clock (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.clock_offset_ms.load(Ordering::SeqCst)
    }

    pub fn advance(&self, d: Duration) {
        self.clock_offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    /// Lifetime of tokens issued from now on (also the `expiresIn` answered).
    pub fn set_expires_in(&self, secs: i64) {
        self.expires_in_secs.store(secs, Ordering::SeqCst);
    }

    /// A pause inside every successful refresh, after the rotation (widens race windows).
    pub fn set_refresh_delay(&self, d: Duration) {
        self.refresh_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// 403 (default) or 401 for a bad bearer token.
    pub fn set_auth_failure_status(&self, status: u16) {
        self.auth_failure_status.store(status, Ordering::SeqCst);
    }

    pub fn set_split(&self, s: Split) {
        *lock(&self.split) = s;
    }

    pub fn deny_model(&self, model_id: &str) {
        lock(&self.deny_models).insert(model_id.to_string());
    }

    /// Queues `fault` for the next `times` inference calls.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut q = lock(&self.faults);
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.faults).len()
    }

    pub fn push_turn(&self, t: Turn) {
        lock(&self.script).push_back(t);
    }

    fn add(&self, name: &str, auth: MockAuth) -> Issued {
        let expires = self.now_ms() + self.expires_in_secs.load(Ordering::SeqCst) * 1000;
        let a = MockAccount {
            name: name.to_string(),
            access_token: format!("aoa{name}-0"),
            refresh_token: format!("aor{name}-0"),
            access_expires_ms: expires,
            auth,
            generation: 0,
        };
        let issued = Issued {
            access_token: a.access_token.clone(),
            refresh_token: a.refresh_token.clone(),
            expires_at_ms: expires,
        };
        lock(&self.accounts).push(a);
        issued
    }

    /// A social (Google/GitHub) account; its tokens.
    pub fn add_social(&self, name: &str, profile_arn: &str) -> Issued {
        self.add(
            name,
            MockAuth::Social {
                profile_arn: profile_arn.to_string(),
            },
        )
    }

    /// An IdC/builder-id account with its OIDC client; its tokens.
    pub fn add_idc(&self, name: &str, client_id: &str, client_secret: &str) -> Issued {
        self.add(
            name,
            MockAuth::Idc {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
            },
        )
    }

    pub fn account(&self, name: &str) -> Option<MockAccount> {
        lock(&self.accounts)
            .iter()
            .find(|a| a.name == name)
            .cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.requests).clone()
    }

    /// Recorded inference requests.
    pub fn generate_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/generateAssistantResponse"))
            .collect()
    }

    pub fn last_generate(&self) -> Option<Recorded> {
        self.generate_requests().pop()
    }

    fn record(&self, r: Recorded) {
        lock(&self.requests).push(r);
    }

    /// The account whose current, unexpired access token `bearer` is.
    fn authenticate(&self, bearer: Option<&str>) -> Option<MockAccount> {
        let now = self.now_ms();
        let bearer = bearer?;
        lock(&self.accounts)
            .iter()
            .find(|a| a.access_token == bearer && now < a.access_expires_ms)
            .cloned()
    }

    /// Rotates the tokens of the account whose refresh token is `rt` if `check` accepts it.
    fn rotate(
        &self,
        rt: &str,
        check: impl Fn(&MockAccount) -> Result<(), &'static str>,
    ) -> Result<MockAccount, &'static str> {
        let now = self.now_ms();
        let life = self.expires_in_secs.load(Ordering::SeqCst);
        let mut accts = lock(&self.accounts);
        let a = accts
            .iter_mut()
            .find(|a| a.refresh_token == rt)
            .ok_or("invalid_grant")?;
        check(a)?;
        a.generation += 1;
        a.access_token = format!("aoa{}-{}", a.name, a.generation);
        a.refresh_token = format!("aor{}-{}", a.name, a.generation);
        a.access_expires_ms = now + life * 1000;
        Ok(a.clone())
    }
}

/// A running mock: its address and its state. It lives until the test process ends.
pub struct KiroMock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl KiroMock {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// For `KIRO_BASE_URL`.
    pub fn generate_url(&self) -> String {
        format!("{}/generateAssistantResponse", self.base_url())
    }
    /// For `KIRO_REFRESH_URL`.
    pub fn refresh_url(&self) -> String {
        format!("{}/{{{{region}}}}/refreshToken", self.base_url())
    }
    /// For `KIRO_REFRESH_IDC_URL`.
    pub fn idc_url(&self) -> String {
        format!("{}/{{{{region}}}}/token", self.base_url())
    }
    /// Token-endpoint calls of both kinds.
    pub fn refresh_calls(&self) -> u64 {
        Counters::get(&self.state.counters.refresh_social)
            + Counters::get(&self.state.counters.refresh_idc)
    }
    pub fn generate_calls(&self) -> u64 {
        Counters::get(&self.state.counters.generate)
    }
}

/// Starts the mock on a free loopback port, on its own thread and runtime.
pub fn start() -> KiroMock {
    let state = Arc::new(MockState::new());
    let st = state.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind mock");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move { serve_conn(st, sock).await });
            }
        });
    });
    let addr = rx.recv().expect("mock started");
    KiroMock { addr, state }
}

// ------------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
    }
}

enum Outcome {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Stream {
        body: Vec<u8>,
        cut_at: Option<usize>,
    },
    Reset,
}

fn json_outcome(status: u16, v: Value) -> Outcome {
    Outcome::Full {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: v.to_string().into_bytes(),
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > 64 << 20 {
        return None;
    }
    buf.drain(..head_end + 4);
    while buf.len() < len {
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    let close = headers
        .iter()
        .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
    Some(Request {
        method,
        path,
        headers,
        body,
        close,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pieces(len: usize, split: Split) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut rng = Rng(match split {
        Split::Random { seed, .. } => seed | 1,
        _ => 1,
    });
    while at < len {
        let n = match split {
            Split::Whole => len - at,
            Split::Fixed(n) => n.max(1),
            Split::Random { max, .. } => 1 + (rng.next() % max.max(1) as u64) as usize,
        };
        let end = (at + n).min(len);
        out.push(at..end);
        at = end;
    }
    out
}

async fn serve_conn(state: Arc<MockState>, mut sock: TcpStream) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let close = req.close;
        let outcome = handle(&state, req).await;
        let ok = match outcome {
            Outcome::Reset => {
                let _ = sock.set_zero_linger();
                return;
            }
            Outcome::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                if close {
                    head.push_str("connection: close\r\n");
                }
                head.push_str("\r\n");
                let mut all = head.into_bytes();
                all.extend_from_slice(&body);
                sock.write_all(&all).await.is_ok()
            }
            Outcome::Stream { body, cut_at } => {
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\nx-amzn-requestid: {}\r\ntransfer-encoding: chunked\r\n",
                    uuid::Uuid::new_v4()
                );
                if close {
                    head.push_str("connection: close\r\n");
                }
                head.push_str("\r\n");
                let mut ok = sock.write_all(head.as_bytes()).await.is_ok();
                let body = match cut_at {
                    Some(n) => &body[..n.min(body.len())],
                    None => &body[..],
                };
                let split = *lock(&state.split);
                for r in pieces(body.len(), split) {
                    if !ok {
                        break;
                    }
                    let mut chunk = format!("{:x}\r\n", r.len()).into_bytes();
                    chunk.extend_from_slice(&body[r]);
                    chunk.extend_from_slice(b"\r\n");
                    ok = sock.write_all(&chunk).await.is_ok() && sock.flush().await.is_ok();
                    if !matches!(split, Split::Whole) {
                        tokio::task::yield_now().await;
                    }
                }
                ok && sock.write_all(b"0\r\n\r\n").await.is_ok()
            }
        };
        if !ok || close {
            let _ = sock.shutdown().await;
            return;
        }
    }
}

async fn handle(state: &Arc<MockState>, req: Request) -> Outcome {
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&req.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()));
    let mut rec = Recorded {
        method: req.method.clone(),
        path: path.clone(),
        headers: req.headers.clone(),
        body: body.clone(),
        account: None,
        status: 0,
    };
    let (outcome, status) = match (req.method.as_str(), path.as_str()) {
        ("POST", p) if p.ends_with("/generateAssistantResponse") => {
            generate(state, &req, &body, &mut rec)
        }
        ("POST", p) if p.ends_with("/refreshToken") => refresh_social(state, &body, &mut rec).await,
        ("POST", p) if p.ends_with("/token") => refresh_idc(state, &body, &mut rec).await,
        ("GET", p) if p.ends_with("/getUsageLimits") => usage_limits(state, &req, &mut rec),
        _ => (json_outcome(404, json!({"message": "not found"})), 404),
    };
    rec.status = status;
    state.record(rec);
    outcome
}

fn status_of(o: &Outcome) -> u16 {
    match o {
        Outcome::Full { status, .. } => *status,
        Outcome::Stream { .. } => 200,
        Outcome::Reset => 0,
    }
}

fn with_status(o: Outcome) -> (Outcome, u16) {
    let s = status_of(&o);
    (o, s)
}

fn generate(state: &MockState, req: &Request, body: &Value, rec: &mut Recorded) -> (Outcome, u16) {
    state.counters.generate.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&state.faults).pop_front();
    if let Some(Fault::Status {
        status,
        body,
        retry_after,
    }) = &fault
    {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(r) = retry_after {
            headers.push(("retry-after".into(), r.clone()));
        }
        rec.account = state.authenticate(req.bearer()).map(|a| a.name);
        return with_status(Outcome::Full {
            status: *status,
            headers,
            body: body.clone().into_bytes(),
        });
    }
    if let Some(Fault::ResetBeforeHeaders) = fault {
        return (Outcome::Reset, 0);
    }
    let Some(account) = state.authenticate(req.bearer()) else {
        state.counters.auth_rejected.fetch_add(1, Ordering::SeqCst);
        let status = state.auth_failure_status.load(Ordering::SeqCst);
        return with_status(json_outcome(
            status,
            json!({"message": INVALID_BEARER, "reason": null}),
        ));
    };
    rec.account = Some(account.name.clone());
    if let Err(detail) = validate(body) {
        state.counters.malformed.fetch_add(1, Ordering::SeqCst);
        return with_status(json_outcome(
            400,
            json!({"message": "Improperly formed request.", "reason": null, "mockDetail": detail}),
        ));
    }
    if let MockAuth::Social { profile_arn } = &account.auth
        && body.get("profileArn").and_then(Value::as_str) != Some(profile_arn.as_str())
    {
        state.counters.malformed.fetch_add(1, Ordering::SeqCst);
        return with_status(json_outcome(
            400,
            json!({"message": "Improperly formed request.", "reason": null, "mockDetail": "social accounts must send their profileArn"}),
        ));
    }
    let current = &body["conversationState"]["currentMessage"]["userInputMessage"];
    let model = current["modelId"].as_str().unwrap_or_default();
    if lock(&state.deny_models).contains(model) {
        return with_status(json_outcome(
            400,
            json!({"message": "Invalid model. Please select a different model to continue.", "reason": "INVALID_MODEL_ID"}),
        ));
    }
    let turn = lock(&state.script)
        .pop_front()
        .unwrap_or_else(|| default_turn(current));
    let frames = turn.frames();
    let (frames, cut_at) = match fault {
        Some(Fault::CutMidFrame) => {
            let first = frames.first().map(Vec::len).unwrap_or(0);
            let second = frames.get(1).map(Vec::len).unwrap_or(0);
            (frames, Some(first + second / 2))
        }
        Some(Fault::MidStreamException) => {
            let mut f: Vec<Vec<u8>> = frames.into_iter().take(1).collect();
            f.push(exception_frame(
                "ThrottlingException",
                "Rate exceeded mid-stream",
            ));
            (f, None)
        }
        Some(Fault::GhostException) => {
            let mut f = frames;
            f.push(exception_frame("InternalServerException", GHOST_MESSAGE));
            (f, None)
        }
        Some(Fault::CorruptCrc(n)) => {
            let mut f = frames;
            if let Some(fr) = f.get_mut(n)
                && let Some(last) = fr.last_mut()
            {
                *last ^= 0x5a;
            }
            (f, None)
        }
        Some(Fault::ExceptionFirst(kind)) => (vec![exception_frame(&kind, "Rate exceeded")], None),
        _ => (frames, None),
    };
    (
        Outcome::Stream {
            body: frames.concat(),
            cut_at,
        },
        200,
    )
}

/// The marker-driven default turn for the current message.
fn default_turn(current: &Value) -> Turn {
    let content = current["content"].as_str().unwrap_or_default();
    let results = current
        .pointer("/userInputMessageContext/toolResults")
        .and_then(Value::as_array);
    let mut turn = if let Some(results) = results.filter(|r| !r.is_empty()) {
        let said: Vec<String> = results
            .iter()
            .map(|r| {
                r["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            })
            .collect();
        Turn::text(&["The tool said: ", &said.join(" | ")])
    } else if content.contains("#twotools") {
        Turn {
            text: vec!["Checking both.".into()],
            tools: vec![
                ToolCall {
                    id: "tooluse_w1".into(),
                    name: "get_weather".into(),
                    fragments: vec!["{\"city\":".into(), "\"Paris\"}".into()],
                },
                ToolCall {
                    id: "tooluse_w2".into(),
                    name: "get_weather".into(),
                    fragments: vec!["{\"city\":\"Oslo\"}".into()],
                },
            ],
            context_pct: Some(2.0),
            ..Default::default()
        }
    } else if content.contains("#tool") {
        let name = current
            .pointer("/userInputMessageContext/tools")
            .and_then(Value::as_array)
            .and_then(|t| {
                t.iter()
                    .filter_map(|t| t.pointer("/toolSpecification/name").and_then(Value::as_str))
                    .find(|n| *n != "no_tool_available")
            })
            .unwrap_or("get_weather")
            .to_string();
        Turn {
            text: vec!["Let me check.".into()],
            tools: vec![ToolCall {
                id: "tooluse_mock_1".into(),
                name,
                fragments: vec!["{\"ci".into(), "ty\":\"Par".into(), "is\"}".into()],
            }],
            context_pct: Some(2.0),
            ..Default::default()
        }
    } else {
        Turn::text(&DEFAULT_FRAGMENTS)
    };
    if content.contains("#thinking") {
        turn.thinking = Some("I should greet.".into());
    }
    if content.contains("#nousage") {
        turn.context_pct = None;
    }
    if content.contains("#unknown") {
        turn.unknown_event = true;
    }
    turn
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

fn tool_result_ids(user: &Value) -> Vec<String> {
    user.pointer("/userInputMessageContext/toolResults")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| r["toolUseId"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The service's shape checks (§7.1); `Err` says which failed.
pub fn validate(body: &Value) -> Result<(), String> {
    if has_null(body) {
        return Err("JSON null in the body".into());
    }
    let cs = body
        .get("conversationState")
        .ok_or("no conversationState")?;
    if cs["chatTriggerType"] != "MANUAL" {
        return Err("chatTriggerType must be MANUAL".into());
    }
    if cs["conversationId"].as_str().is_none_or(str::is_empty) {
        return Err("no conversationId".into());
    }
    let cur = cs
        .pointer("/currentMessage/userInputMessage")
        .ok_or("no currentMessage.userInputMessage")?;
    if cur["content"].as_str().is_none_or(|c| c.trim().is_empty()) {
        return Err("empty current content".into());
    }
    if cur["modelId"].as_str().is_none_or(str::is_empty) {
        return Err("no modelId".into());
    }
    if cur["origin"] != "AI_EDITOR" {
        return Err("origin must be AI_EDITOR".into());
    }
    let mut known: HashSet<String> = HashSet::new();
    if let Some(h) = cs.get("history") {
        let h = h.as_array().ok_or("history is not an array")?;
        for (i, entry) in h.iter().enumerate() {
            let want_user = i % 2 == 0;
            match (
                want_user,
                entry.get("userInputMessage"),
                entry.get("assistantResponseMessage"),
            ) {
                (true, Some(u), None) => {
                    if u["content"].as_str().is_none() {
                        return Err(format!("history[{i}] has no content"));
                    }
                    if let Some(bad) = tool_result_ids(u)
                        .into_iter()
                        .find(|id| !known.contains(id))
                    {
                        return Err(format!("history[{i}] answers unknown tool use {bad}"));
                    }
                }
                (false, None, Some(a)) => {
                    for t in a
                        .get("toolUses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let id = t["toolUseId"].as_str().ok_or("toolUse without toolUseId")?;
                        if !t["input"].is_object() || t["name"].as_str().is_none_or(str::is_empty) {
                            return Err(format!("history[{i}] has a malformed toolUse"));
                        }
                        known.insert(id.to_string());
                    }
                }
                _ => {
                    return Err(format!(
                        "history[{i}] breaks the user/assistant alternation"
                    ));
                }
            }
        }
        if h.len() % 2 != 0 {
            return Err("history must end with an assistant turn".into());
        }
    }
    if let Some(bad) = tool_result_ids(cur)
        .into_iter()
        .find(|id| !known.contains(id))
    {
        return Err(format!(
            "the current message answers unknown tool use {bad}"
        ));
    }
    for t in cur
        .pointer("/userInputMessageContext/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let spec = t
            .get("toolSpecification")
            .ok_or("tool without toolSpecification")?;
        let name = spec["name"].as_str().unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !spec
                .pointer("/inputSchema/json")
                .is_some_and(Value::is_object)
        {
            return Err(format!("malformed tool {name:?}"));
        }
    }
    Ok(())
}

async fn refresh_social(state: &MockState, body: &Value, rec: &mut Recorded) -> (Outcome, u16) {
    state.counters.refresh_social.fetch_add(1, Ordering::SeqCst);
    let rt = body["refreshToken"].as_str().unwrap_or_default();
    let r = state.rotate(rt, |a| {
        if matches!(a.auth, MockAuth::Social { .. }) {
            Ok(())
        } else {
            Err("invalid_grant")
        }
    });
    match r {
        Ok(a) => {
            rec.account = Some(a.name.clone());
            let delay = state.refresh_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let profile_arn = match &a.auth {
                MockAuth::Social { profile_arn } => profile_arn.clone(),
                MockAuth::Idc { .. } => String::new(),
            };
            with_status(json_outcome(
                200,
                json!({"accessToken": a.access_token, "refreshToken": a.refresh_token, "profileArn": profile_arn,
                       "expiresIn": state.expires_in_secs.load(Ordering::SeqCst)}),
            ))
        }
        Err(_) => {
            state
                .counters
                .refresh_rejected
                .fetch_add(1, Ordering::SeqCst);
            with_status(json_outcome(
                401,
                json!({"message": "Invalid refresh token provided", "reason": "INVALID_TOKEN"}),
            ))
        }
    }
}

async fn refresh_idc(state: &MockState, body: &Value, rec: &mut Recorded) -> (Outcome, u16) {
    state.counters.refresh_idc.fetch_add(1, Ordering::SeqCst);
    if body["grantType"] != "refresh_token" {
        state
            .counters
            .refresh_rejected
            .fetch_add(1, Ordering::SeqCst);
        return with_status(json_outcome(
            400,
            json!({"error": "unsupported_grant_type", "error_description": "grantType must be refresh_token"}),
        ));
    }
    let rt = body["refreshToken"].as_str().unwrap_or_default();
    let (cid, secret) = (
        body["clientId"].as_str().unwrap_or_default(),
        body["clientSecret"].as_str().unwrap_or_default(),
    );
    let r = state.rotate(rt, |a| match &a.auth {
        MockAuth::Idc {
            client_id,
            client_secret,
        } if client_id == cid && client_secret == secret => Ok(()),
        MockAuth::Idc { .. } => Err("invalid_client"),
        MockAuth::Social { .. } => Err("invalid_grant"),
    });
    match r {
        Ok(a) => {
            rec.account = Some(a.name.clone());
            let delay = state.refresh_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            with_status(json_outcome(
                200,
                json!({"accessToken": a.access_token, "refreshToken": a.refresh_token, "tokenType": "Bearer",
                       "expiresIn": state.expires_in_secs.load(Ordering::SeqCst)}),
            ))
        }
        Err(e) => {
            state
                .counters
                .refresh_rejected
                .fetch_add(1, Ordering::SeqCst);
            let desc = if e == "invalid_client" {
                "Client authentication failed"
            } else {
                "Invalid refresh token provided"
            };
            with_status(json_outcome(
                400,
                json!({"error": e, "error_description": desc}),
            ))
        }
    }
}

fn usage_limits(state: &MockState, req: &Request, rec: &mut Recorded) -> (Outcome, u16) {
    state.counters.usage_limits.fetch_add(1, Ordering::SeqCst);
    let Some(a) = state.authenticate(req.bearer()) else {
        let status = state.auth_failure_status.load(Ordering::SeqCst);
        return with_status(json_outcome(
            status,
            json!({"message": INVALID_BEARER, "reason": null}),
        ));
    };
    rec.account = Some(a.name.clone());
    with_status(json_outcome(
        200,
        json!({
            "usageBreakdownList": [{"resourceType": "AGENTIC_REQUEST", "displayName": "Credits", "currentUsage": 50, "currentUsageWithPrecision": 50.0,
                                    "usageLimit": 50, "usageLimitWithPrecision": 50.0, "nextDateReset": 1_780_272_000, "bonuses": [], "freeTrialInfo": {}}],
            "subscriptionInfo": {"subscriptionTitle": "KIRO FREE"},
            "userInfo": {"email": format!("{}@example.com", a.name)},
            "nextDateReset": 1_780_272_000,
        }),
    ))
}
