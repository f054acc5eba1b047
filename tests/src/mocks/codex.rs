//! A faithful mock of the Codex upstream (`shared/reference/providers/codex.md` §7): one
//! loopback HTTP/1.1 server standing in for the ChatGPT backend and `auth.openai.com`. Written on
//! raw TCP so that it controls every byte and every write: SSE bodies can be cut at any byte
//! (inside a line, inside a UTF-8 character), connections can be reset, and streams can end
//! early.
//!
//! | path | what it does |
//! |---|---|
//! | `POST …/responses` (e.g. `/backend-api/codex/responses`) | requires `authorization: Bearer <the account's current, unexpired access token>` and a matching `chatgpt-account-id` (else 401 `token_expired`); validates the body (else 400 `{"detail": …}`: store must be false, stream true, non-empty instructions, known model, typed input items, function-call outputs matching earlier calls, no stored-item ids, no unsupported parameter, tools of type function/web_search/image_generation); then streams a scripted turn as Responses SSE (`event:`/`data:` framing, increasing `sequence_number`, `text/event-stream`, chunked) |
//! | `POST /oauth/token` | form-encoded or JSON. `grant_type=refresh_token` with the Codex `client_id` and the *current* refresh token rotates both tokens (the old ones stop working; reusing an old refresh token gives 401 `refresh_token_reused`, an unknown one 400 `invalid_grant`); `grant_type=authorization_code` exchanges a code from [`MockState::issue_code`]. Answers `{access_token, refresh_token, id_token, expires_in, token_type}` |
//! | `GET …/wham/usage` | the account's rate-limit windows with percentages the test sets |
//!
//! Tokens are unsigned JWTs (the plugin reads their claims): access tokens carry `exp`, the
//! `https://api.openai.com/auth.chatgpt_account_id` and profile email claims; id tokens carry
//! `email` and the account id. Time is the mock's own clock (real time plus an offset the test
//! advances, [`MockState::advance`]): access tokens expire `expires_in` seconds after issue.
//!
//! Turns are scripted ([`MockState::push_turn`]) or chosen by markers in the last user message:
//! `#tool` (one `get_weather` call, arguments streamed in fragments), `#twotools`, `#reasoning`
//! (reasoning summary deltas before the text), `#image` (an `image_generation_call` with a
//! small PNG), `#full` (a `response.completed` with a populated `output`; by default it is
//! empty, as the backend sends it with `store:false`). An input ending with a
//! `function_call_output` gets `The tool said: <output>`. Otherwise the text is
//! [`DEFAULT_TEXT`] in four deltas.
//!
//! Faults ([`Fault`]) are queued for the next N inference calls (after the auth check): any
//! HTTP status with a body and headers (429 `usage_limit_reached` with `x-codex-*` and
//! `Retry-After`, 403, 5xx, 400 `detail`), a connection reset before the headers or mid-stream,
//! a stream that closes before `response.completed`, an `error` event mid-stream (flat, nested,
//! `insufficient_quota`) or first, `response.failed`, malformed SSE. Every request is recorded
//! (path, headers, body, which account, status) and counted per endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default answer.
pub const DEFAULT_TEXT: &str = "Hello from the Codex mock.";
const DEFAULT_DELTAS: [&str; 4] = ["Hello", " from", " the Codex", " mock."];
/// The Codex CLI's OAuth client id, the only one the token endpoint accepts.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// Models the backend accepts (after the plugin strips `-fast` and maps gpt-image-2).
pub const MODELS: [&str; 6] = [
    "gpt-5.2",
    "gpt-5.3-codex",
    "gpt-5.3-codex-spark",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.5",
];
/// A 1×1 PNG, base64.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
pub const TOKEN_EXPIRED: &str =
    "Provided authentication token is expired. Please try signing in again.";
/// Parameters the backend rejects with `Unsupported parameter`.
pub const UNSUPPORTED: [&str; 7] = [
    "max_output_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "user",
    "prompt_cache_retention",
    "metadata",
];
/// Usage of a default turn.
pub const USAGE_INPUT: u64 = 120;
pub const USAGE_CACHED: u64 = 64;
pub const USAGE_OUTPUT: u64 = 12;
pub const USAGE_REASONING: u64 = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------
// JWTs (unsigned)
// ------------------------------------------------------------------------------------------

fn b64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::new();
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// An unsigned JWT (`RS256` header, fake signature) with these claims.
pub fn jwt(claims: &Value) -> String {
    format!(
        "{}.{}.bW9jay1zaWduYXR1cmU",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// The claims of a JWT.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&b64url_decode(payload)?).ok()
}

// ------------------------------------------------------------------------------------------
// Scripts and faults
// ------------------------------------------------------------------------------------------

/// One function call: its arguments are streamed as the given fragments.
#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    pub name: String,
    pub fragments: Vec<String>,
}

impl Call {
    pub fn new(call_id: &str, name: &str, fragments: &[&str]) -> Self {
        Call {
            call_id: call_id.into(),
            name: name.into(),
            fragments: fragments.iter().map(|s| s.to_string()).collect(),
        }
    }
    pub fn arguments(&self) -> String {
        self.fragments.concat()
    }
}

/// A scripted answer.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// Reasoning summary deltas (a `reasoning` item first).
    pub reasoning: Vec<String>,
    pub text: Vec<String>,
    pub calls: Vec<Call>,
    /// An `image_generation_call` item with this base64 result.
    pub image: Option<String>,
    /// `response.completed` carries the items (else its `output` is empty).
    pub populated_output: bool,
    /// Overrides the default usage object.
    pub usage: Option<Value>,
}

impl Turn {
    pub fn text(parts: &[&str]) -> Self {
        Turn {
            text: parts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn default_usage(&self) -> Value {
        let reasoning = if self.reasoning.is_empty() {
            0
        } else {
            USAGE_REASONING
        };
        json!({
            "input_tokens": USAGE_INPUT,
            "input_tokens_details": {"cached_tokens": USAGE_CACHED},
            "output_tokens": USAGE_OUTPUT + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": USAGE_INPUT + USAGE_OUTPUT + reasoning,
        })
    }

    /// The event payloads of this turn (without `sequence_number`s), up to and including
    /// `response.completed`.
    pub fn events(&self, model: &str, n: u64) -> Vec<Value> {
        let id = format!("resp_mock{n:04}");
        let created = 1_748_570_000 + n;
        let head = json!({"id": id, "object": "response", "created_at": created, "model": model,
                          "status": "in_progress", "output": [], "usage": null});
        let mut ev = vec![
            json!({"type": "response.created", "response": head}),
            json!({"type": "response.in_progress", "response": head}),
        ];
        let mut items = Vec::new();
        let mut idx = 0u64;
        if !self.reasoning.is_empty() {
            let item_id = format!("rs_mock{n}");
            let full = self.reasoning.concat();
            ev.push(
                json!({"type": "response.output_item.added", "output_index": idx,
                           "item": {"id": item_id, "type": "reasoning", "summary": []}}),
            );
            ev.push(json!({"type": "response.reasoning_summary_part.added", "item_id": item_id, "output_index": idx,
                           "summary_index": 0, "part": {"type": "summary_text", "text": ""}}));
            for d in &self.reasoning {
                ev.push(
                    json!({"type": "response.reasoning_summary_text.delta", "item_id": item_id,
                               "output_index": idx, "summary_index": 0, "delta": d}),
                );
            }
            ev.push(
                json!({"type": "response.reasoning_summary_text.done", "item_id": item_id,
                           "output_index": idx, "summary_index": 0, "text": full}),
            );
            ev.push(json!({"type": "response.reasoning_summary_part.done", "item_id": item_id, "output_index": idx,
                           "summary_index": 0, "part": {"type": "summary_text", "text": full}}));
            let item = json!({"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": full}],
                              "encrypted_content": "gAAAAABmockEncryptedReasoning=="});
            ev.push(
                json!({"type": "response.output_item.done", "output_index": idx, "item": item}),
            );
            items.push(item);
            idx += 1;
        }
        if !self.text.is_empty() {
            let item_id = format!("msg_mock{n}");
            let full = self.text.concat();
            ev.push(json!({"type": "response.output_item.added", "output_index": idx,
                           "item": {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}}));
            ev.push(json!({"type": "response.content_part.added", "item_id": item_id, "output_index": idx, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}));
            for d in &self.text {
                ev.push(json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": idx,
                               "content_index": 0, "delta": d}));
            }
            ev.push(
                json!({"type": "response.output_text.done", "item_id": item_id, "output_index": idx,
                           "content_index": 0, "text": full}),
            );
            ev.push(json!({"type": "response.content_part.done", "item_id": item_id, "output_index": idx, "content_index": 0,
                           "part": {"type": "output_text", "text": full, "annotations": []}}));
            let item = json!({"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": full, "annotations": []}]});
            ev.push(
                json!({"type": "response.output_item.done", "output_index": idx, "item": item}),
            );
            items.push(item);
            idx += 1;
        }
        for (k, c) in self.calls.iter().enumerate() {
            let item_id = format!("fc_mock{n}_{k}");
            ev.push(
                json!({"type": "response.output_item.added", "output_index": idx,
                           "item": {"id": item_id, "type": "function_call", "status": "in_progress",
                                    "arguments": "", "call_id": c.call_id, "name": c.name}}),
            );
            for f in &c.fragments {
                ev.push(
                    json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                               "output_index": idx, "delta": f}),
                );
            }
            ev.push(
                json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                           "output_index": idx, "arguments": c.arguments()}),
            );
            let item = json!({"id": item_id, "type": "function_call", "status": "completed",
                              "arguments": c.arguments(), "call_id": c.call_id, "name": c.name});
            ev.push(
                json!({"type": "response.output_item.done", "output_index": idx, "item": item}),
            );
            items.push(item);
            idx += 1;
        }
        if let Some(b64) = &self.image {
            let item_id = format!("ig_mock{n}");
            ev.push(json!({"type": "response.output_item.added", "output_index": idx,
                           "item": {"id": item_id, "type": "image_generation_call", "status": "in_progress"}}));
            let item = json!({"id": item_id, "type": "image_generation_call", "status": "completed",
                              "result": b64, "output_format": "png", "revised_prompt": "a tiny dot",
                              "size": "1024x1024", "quality": "low", "background": "opaque"});
            ev.push(
                json!({"type": "response.output_item.done", "output_index": idx, "item": item}),
            );
            items.push(item);
        }
        let output = if self.populated_output {
            Value::Array(items)
        } else {
            json!([])
        };
        let usage = self.usage.clone().unwrap_or_else(|| self.default_usage());
        ev.push(json!({"type": "response.completed", "response": {
            "id": id, "object": "response", "created_at": created, "model": model, "status": "completed",
            "error": null, "incomplete_details": null, "output": output, "usage": usage}}));
        ev
    }
}

/// An injected failure for one inference call.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An HTTP error answer with extra headers.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Close the connection (RST) before any header.
    ResetBeforeHeaders,
    /// Stream the first half of the turn's events, then RST.
    ResetMidStream,
    /// The turn without `response.completed`; the body ends cleanly.
    CloseBeforeCompleted,
    /// `response.created`, one text delta, then this `error` event; the body ends.
    ErrorMidStream(Value),
    /// `response.created`, then this `error` event.
    ErrorFirst(Value),
    /// `response.created`, one text delta, then `response.failed`.
    Failed,
    /// `response.created`, then a `data:` line that is not JSON.
    Malformed,
    /// A 200 `text/event-stream` answer with exactly these body bytes.
    Raw(Vec<u8>),
}

impl Fault {
    pub fn status(status: u16, body: Value) -> Self {
        Fault::Status {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }
    /// 400 with the backend's `detail` body.
    pub fn detail(message: &str) -> Self {
        Self::status(400, json!({ "detail": message }))
    }
    pub fn forbidden() -> Self {
        Self::status(
            403,
            json!({"detail": "Your account is not allowed to use Codex in this region."}),
        )
    }
    pub fn server(status: u16) -> Self {
        Fault::Status {
            status,
            body: "<html><body>upstream error</body></html>".into(),
            headers: vec![("content-type".into(), "text/html".into())],
        }
    }
    /// 429 `usage_limit_reached` resetting in `resets_in` seconds (on the real clock), with
    /// the `x-codex-*` window headers and `Retry-After`.
    pub fn usage_limit(resets_in: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Fault::Status {
            status: 429,
            body: json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                   "plan_type": "plus", "resets_at": now + resets_in, "resets_in_seconds": resets_in}})
            .to_string(),
            headers: vec![
                ("x-codex-primary-used-percent".into(), "100".into()),
                ("x-codex-primary-window-minutes".into(), "300".into()),
                (
                    "x-codex-primary-reset-after-seconds".into(),
                    resets_in.to_string(),
                ),
                ("x-codex-secondary-used-percent".into(), "37".into()),
                ("x-codex-secondary-window-minutes".into(), "10080".into()),
                (
                    "x-codex-secondary-reset-after-seconds".into(),
                    "400000".into(),
                ),
                ("retry-after".into(), resets_in.to_string()),
            ],
        }
    }
    /// 429 rate limit with only a `Retry-After` hint.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::Status {
            status: 429,
            body: json!({"error": {"type": "rate_limit_exceeded", "message": "Rate limit reached", "code": "rate_limit_exceeded"}})
                .to_string(),
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
        }
    }
    /// The flat in-stream error shape.
    pub fn flat_error() -> Value {
        json!({"type": "error", "code": "server_error", "message": "An error occurred while processing your request.", "param": null})
    }
    /// The nested in-stream error shape.
    pub fn nested_error() -> Value {
        json!({"type": "error", "error": {"type": "server_error", "code": "server_error", "message": "The model crashed mid-answer.", "param": null}})
    }
    pub fn insufficient_quota() -> Value {
        json!({"type": "error", "error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "You exceeded your current quota.", "param": null}})
    }
}

/// How an SSE body is cut into writes.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    /// One write per event.
    PerEvent,
    /// Writes of exactly `n` bytes (1 = every byte alone: cuts inside lines and UTF-8).
    Fixed(usize),
    /// Writes of 1..=`max` bytes from a seeded generator.
    Random { seed: u64, max: usize },
}

// ------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------

/// An account the mock knows.
#[derive(Clone, Debug)]
pub struct MockAccount {
    pub name: String,
    pub account_id: String,
    pub email: String,
    pub access_token: String,
    /// On the mock's clock.
    pub access_expires_ms: i64,
    pub refresh_token: String,
    pub id_token: String,
    /// Refresh tokens rotated out (reusing one is `refresh_token_reused`).
    pub retired: Vec<String>,
    pub generation: u32,
}

/// Tokens as issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    pub account_id: String,
    pub email: String,
    /// On the mock's clock.
    pub expires_at_ms: i64,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as JSON (a form body as an object; `Value::String` if neither).
    pub body: Value,
    pub content_type: String,
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
    pub responses: AtomicU64,
    /// Every call at the token endpoint.
    pub token: AtomicU64,
    pub token_refreshed: AtomicU64,
    pub token_code: AtomicU64,
    pub usage: AtomicU64,
    /// Inference calls refused for their bearer token or account id.
    pub auth_rejected: AtomicU64,
    /// Token calls refused (unknown, reused, wrong client).
    pub token_rejected: AtomicU64,
    /// Inference bodies refused with 400.
    pub bad_request: AtomicU64,
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
    token_delay_ms: AtomicU64,
    omit_id_token: AtomicBool,
    turn_seq: AtomicU64,
    split: Mutex<Split>,
    accounts: Mutex<Vec<MockAccount>>,
    faults: Mutex<VecDeque<Fault>>,
    token_faults: Mutex<VecDeque<Fault>>,
    script: Mutex<VecDeque<Turn>>,
    requests: Mutex<Vec<Recorded>>,
    codes: Mutex<Vec<(String, String)>>,
    usage_percent: Mutex<(f64, f64)>,
}

impl MockState {
    fn new() -> Self {
        Self {
            counters: Counters::default(),
            clock_offset_ms: AtomicI64::new(0),
            expires_in_secs: AtomicI64::new(3600),
            token_delay_ms: AtomicU64::new(0),
            omit_id_token: AtomicBool::new(false),
            turn_seq: AtomicU64::new(0),
            split: Mutex::new(Split::PerEvent),
            accounts: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            token_faults: Mutex::new(VecDeque::new()),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            codes: Mutex::new(Vec::new()),
            usage_percent: Mutex::new((12.5, 40.0)),
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

    /// Moves the mock's clock forward (access tokens issued before may expire).
    pub fn advance(&self, d: Duration) {
        self.clock_offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    /// Lifetime of tokens issued from now on (also the `expires_in` answered).
    pub fn set_expires_in(&self, secs: i64) {
        self.expires_in_secs.store(secs, Ordering::SeqCst);
    }

    /// A pause inside every successful token call, after the rotation (widens race windows).
    pub fn set_token_delay(&self, d: Duration) {
        self.token_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Token answers without `id_token`.
    pub fn set_omit_id_token(&self, omit: bool) {
        self.omit_id_token.store(omit, Ordering::SeqCst);
    }

    pub fn set_split(&self, s: Split) {
        *lock(&self.split) = s;
    }

    /// The usage endpoint's primary and secondary `used_percent`.
    pub fn set_usage_percent(&self, primary: f64, secondary: f64) {
        *lock(&self.usage_percent) = (primary, secondary);
    }

    /// Queues `fault` for the next `times` inference calls.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut q = lock(&self.faults);
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Queues an HTTP fault for the next `times` token calls.
    pub fn inject_token(&self, fault: Fault, times: usize) {
        let mut q = lock(&self.token_faults);
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
        lock(&self.token_faults).clear();
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.faults).len()
    }

    pub fn push_turn(&self, t: Turn) {
        lock(&self.script).push_back(t);
    }

    fn mint(&self, a: &mut MockAccount) {
        let now = self.now_ms();
        let life = self.expires_in_secs.load(Ordering::SeqCst);
        a.access_expires_ms = now + life * 1000;
        let auth = json!({"chatgpt_account_id": a.account_id, "chatgpt_plan_type": "plus", "chatgpt_user_id": format!("user-{}", a.name)});
        a.access_token = jwt(&json!({
            "aud": ["https://api.openai.com/v1"], "iss": "https://auth.openai.com",
            "exp": a.access_expires_ms / 1000, "iat": now / 1000,
            "jti": format!("{}-{}", a.name, a.generation),
            "https://api.openai.com/auth": auth,
            "https://api.openai.com/profile": {"email": a.email, "email_verified": true},
        }));
        a.id_token = jwt(&json!({
            "aud": [CLIENT_ID], "iss": "https://auth.openai.com", "sub": format!("auth0|{}", a.name),
            "email": a.email, "exp": now / 1000 + 3600, "iat": now / 1000,
            "https://api.openai.com/auth": auth,
        }));
        a.refresh_token = format!("rt_{}_{}", a.name, a.generation);
    }

    fn issued(a: &MockAccount) -> Issued {
        Issued {
            access_token: a.access_token.clone(),
            refresh_token: a.refresh_token.clone(),
            id_token: a.id_token.clone(),
            account_id: a.account_id.clone(),
            email: a.email.clone(),
            expires_at_ms: a.access_expires_ms,
        }
    }

    /// A ChatGPT account (`<name>@example.com`, account id `acct-<name>`); its tokens.
    pub fn add_account(&self, name: &str) -> Issued {
        let mut a = MockAccount {
            name: name.to_string(),
            account_id: format!("acct-{name}"),
            email: format!("{name}@example.com"),
            access_token: String::new(),
            access_expires_ms: 0,
            refresh_token: String::new(),
            id_token: String::new(),
            retired: Vec::new(),
            generation: 0,
        };
        self.mint(&mut a);
        let issued = Self::issued(&a);
        lock(&self.accounts).push(a);
        issued
    }

    /// An authorization code for `name` (for `grant_type=authorization_code`).
    pub fn issue_code(&self, name: &str) -> String {
        let code = format!("ac_{name}_{}", lock(&self.codes).len());
        lock(&self.codes).push((code.clone(), name.to_string()));
        code
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
    pub fn responses_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/responses"))
            .collect()
    }

    pub fn last_response_request(&self) -> Option<Recorded> {
        self.responses_requests().pop()
    }

    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/oauth/token"))
            .collect()
    }

    fn record(&self, r: Recorded) {
        lock(&self.requests).push(r);
    }

    /// The account whose current, unexpired access token `bearer` is, if `account_id` matches.
    fn authenticate(&self, bearer: Option<&str>, account_id: Option<&str>) -> Option<MockAccount> {
        let now = self.now_ms();
        let bearer = bearer?;
        lock(&self.accounts)
            .iter()
            .find(|a| {
                a.access_token == bearer
                    && now < a.access_expires_ms
                    && Some(a.account_id.as_str()) == account_id
            })
            .cloned()
    }

    fn next_turn(&self, body: &Value) -> Turn {
        if let Some(t) = lock(&self.script).pop_front() {
            return t;
        }
        default_turn(body)
    }
}

/// The turn the markers in `body` ask for.
pub fn default_turn(body: &Value) -> Turn {
    let input = body["input"].as_array().cloned().unwrap_or_default();
    if let Some(last) = input.last()
        && last["type"] == "function_call_output"
    {
        let out = match &last["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Turn::text(&["The tool said: ", &out]);
    }
    let text: String = input
        .iter()
        .rev()
        .find(|i| i["type"] == "message" && i["role"] == "user")
        .and_then(|m| m["content"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let mut t = Turn::text(&DEFAULT_DELTAS);
    if text.contains("#twotools") {
        t.text.clear();
        t.calls = vec![
            Call::new("call_w1", "get_weather", &["{\"city\":", "\"Paris\"}"]),
            Call::new("call_t2", "get_time", &["{\"tz\":\"CET\"}"]),
        ];
    } else if text.contains("#tool") {
        t.text = vec!["Checking the weather.".into()];
        t.calls = vec![Call::new(
            "call_w1",
            "get_weather",
            &["{\"ci", "ty\":\"Pa", "ris\"}"],
        )];
    }
    if text.contains("#reasoning") {
        t.reasoning = vec!["Thinking about ".into(), "a greeting.".into()];
    }
    if text.contains("#image") {
        t.text = vec!["Here is your image.".into()];
        t.image = Some(PNG_B64.into());
    }
    if text.contains("#full") {
        t.populated_output = true;
    }
    t
}

/// Checks a `POST /responses` body as the backend does; the error is the `detail` text.
pub fn validate(body: &Value) -> Result<(), String> {
    let o = body
        .as_object()
        .ok_or("Request body must be a JSON object")?;
    for k in UNSUPPORTED {
        if o.contains_key(k) {
            return Err(format!("Unsupported parameter: {k}"));
        }
    }
    let model = o.get("model").and_then(Value::as_str).unwrap_or("");
    if !MODELS.contains(&model) {
        return Err(format!(
            "The '{model}' model is not supported when using Codex with a ChatGPT account."
        ));
    }
    if o.get("store") != Some(&json!(false)) {
        return Err("Store must be set to false".into());
    }
    if o.get("stream") != Some(&json!(true)) {
        return Err("Stream must be set to true".into());
    }
    if o.get("instructions")
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
    {
        return Err("Instructions are required".into());
    }
    if let Some(t) = o.get("service_tier")
        && t != "priority"
    {
        return Err(format!("Unsupported service_tier: {t}"));
    }
    let input = o
        .get("input")
        .and_then(Value::as_array)
        .ok_or("Input must be a list")?;
    let mut calls: Vec<String> = Vec::new();
    for (i, item) in input.iter().enumerate() {
        if let Some(id) = item.get("id").and_then(Value::as_str) {
            return Err(format!(
                "Item with id '{id}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input."
            ));
        }
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                let allowed: &[&str] = match role {
                    "user" | "developer" => &["input_text", "input_image", "input_file"],
                    "assistant" => &["output_text", "refusal"],
                    _ => return Err(format!("Invalid value: '{role}'. input[{i}].role")),
                };
                let parts = item
                    .get("content")
                    .and_then(Value::as_array)
                    .ok_or(format!("input[{i}].content must be a list"))?;
                for p in parts {
                    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                    if !allowed.contains(&ty) {
                        return Err(format!(
                            "Invalid value: '{ty}'. Supported values for role '{role}' are: {allowed:?}"
                        ));
                    }
                    if ty == "input_image"
                        && !p
                            .get("image_url")
                            .and_then(Value::as_str)
                            .is_some_and(|u| u.starts_with("data:") || u.starts_with("http"))
                    {
                        return Err(format!("input[{i}]: input_image needs an image_url"));
                    }
                }
            }
            Some("function_call") => {
                let call_id = item.get("call_id").and_then(Value::as_str);
                let name = item.get("name").and_then(Value::as_str);
                let args = item.get("arguments").and_then(Value::as_str);
                match (call_id, name, args) {
                    (Some(c), Some(n), Some(_)) if !c.is_empty() && !n.is_empty() => {
                        calls.push(c.to_string())
                    }
                    _ => {
                        return Err(format!(
                            "input[{i}]: function_call needs call_id, name and string arguments"
                        ));
                    }
                }
            }
            Some("function_call_output") => {
                let c = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                if !calls.iter().any(|k| k == c) {
                    return Err(format!(
                        "No tool call found for function call output with call_id {c}."
                    ));
                }
                if !matches!(item.get("output"), Some(Value::String(_) | Value::Array(_))) {
                    return Err(format!("input[{i}].output must be a string"));
                }
            }
            Some("reasoning") => {}
            other => return Err(format!("Invalid input item type: {other:?}")),
        }
    }
    if let Some(tools) = o.get("tools") {
        let tools = tools.as_array().ok_or("tools must be a list")?;
        for t in tools {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                    if name.is_empty() || name.len() > 64 {
                        return Err(format!("Invalid tools name: '{name}'"));
                    }
                }
                Some("web_search" | "image_generation") => {}
                other => return Err(format!("Unsupported tool type: {other:?}")),
            }
        }
    }
    Ok(())
}

/// A running mock: its address and its state. It lives until the test process ends.
pub struct CodexMock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl CodexMock {
    pub fn root(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// For `CODEX_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("{}/backend-api/codex", self.root())
    }
    /// For `CODEX_TOKEN_URL`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.root())
    }
    /// For `CODEX_USAGE_URL`.
    pub fn usage_url(&self) -> String {
        format!("{}/backend-api/wham/usage", self.root())
    }
    pub fn token_calls(&self) -> u64 {
        Counters::get(&self.state.counters.token)
    }
    pub fn responses_calls(&self) -> u64 {
        Counters::get(&self.state.counters.responses)
    }
}

/// Starts the mock on a free loopback port, on its own thread and runtime.
pub fn start() -> CodexMock {
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
    CodexMock { addr, state }
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
    /// A 200 SSE answer: the pieces to write, then optionally an RST instead of the end.
    Stream {
        body: Vec<u8>,
        reset_at_end: bool,
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
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
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

/// Byte ranges of the writes for a body of `len` bytes whose events end at `ends`.
fn pieces(len: usize, ends: &[usize], split: Split) -> Vec<std::ops::Range<usize>> {
    if let Split::PerEvent = split {
        let mut out = Vec::new();
        let mut at = 0;
        for &e in ends {
            if e > at {
                out.push(at..e);
                at = e;
            }
        }
        if at < len {
            out.push(at..len);
        }
        return out;
    }
    let mut out = Vec::new();
    let mut at = 0;
    let mut rng = Rng(match split {
        Split::Random { seed, .. } => seed | 1,
        _ => 1,
    });
    while at < len {
        let n = match split {
            Split::Fixed(n) => n.max(1),
            Split::Random { max, .. } => 1 + (rng.next() % max.max(1) as u64) as usize,
            Split::PerEvent => len - at,
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
                let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                let mut out = head.into_bytes();
                out.extend_from_slice(&body);
                sock.write_all(&out).await.is_ok()
            }
            Outcome::Stream { body, reset_at_end } => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let split = *lock(&state.split);
                let ends: Vec<usize> = body
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"\n\n")
                    .map(|(i, _)| i + 2)
                    .collect();
                let mut ok = true;
                for r in pieces(body.len(), &ends, split) {
                    let mut chunk = format!("{:x}\r\n", r.len()).into_bytes();
                    chunk.extend_from_slice(&body[r]);
                    chunk.extend_from_slice(b"\r\n");
                    if sock.write_all(&chunk).await.is_err() {
                        ok = false;
                        break;
                    }
                    let _ = sock.flush().await;
                }
                if reset_at_end {
                    let _ = sock.set_zero_linger();
                    return;
                }
                ok && sock.write_all(b"0\r\n\r\n").await.is_ok()
            }
        };
        if !ok || close {
            return;
        }
    }
}

/// Parses a form-encoded body into a JSON object of strings.
fn parse_form(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut o = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        o.insert(url_decode(k), Value::String(url_decode(v)));
    }
    Value::Object(o)
}

fn url_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Frames event payloads as SSE with increasing `sequence_number`s.
fn frame_events(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        if let Some(o) = e.as_object_mut() {
            o.insert("sequence_number".into(), json!(i));
        }
        let ty = e["type"].as_str().unwrap_or("message").to_string();
        out.extend_from_slice(format!("event: {ty}\ndata: {e}\n\n").as_bytes());
    }
    out
}

async fn handle(state: &Arc<MockState>, req: Request) -> Outcome {
    let content_type = req.header("content-type").unwrap_or("").to_string();
    let body: Value = if content_type.starts_with("application/x-www-form-urlencoded") {
        parse_form(&req.body)
    } else {
        serde_json::from_slice(&req.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()))
    };
    let mut rec = Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: body.clone(),
        content_type,
        account: None,
        status: 0,
    };
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let outcome = if req.method == "POST" && path.ends_with("/responses") {
        responses(state, &req, &body, &mut rec)
    } else if req.method == "POST" && path.ends_with("/oauth/token") {
        token(state, &body, &mut rec).await
    } else if req.method == "GET" && path.ends_with("/wham/usage") {
        usage(state, &req, &mut rec)
    } else {
        json_outcome(404, json!({"detail": "Not Found"}))
    };
    rec.status = match &outcome {
        Outcome::Full { status, .. } => *status,
        Outcome::Stream { .. } => 200,
        Outcome::Reset => 0,
    };
    state.record(rec);
    outcome
}

fn token_expired() -> Outcome {
    json_outcome(
        401,
        json!({"error": {"message": TOKEN_EXPIRED, "type": "invalid_request_error", "code": "token_expired", "param": null}}),
    )
}

fn responses(state: &Arc<MockState>, req: &Request, body: &Value, rec: &mut Recorded) -> Outcome {
    let c = &state.counters;
    c.responses.fetch_add(1, Ordering::SeqCst);
    let Some(acct) = state.authenticate(req.bearer(), req.header("chatgpt-account-id")) else {
        c.auth_rejected.fetch_add(1, Ordering::SeqCst);
        return token_expired();
    };
    rec.account = Some(acct.name.clone());
    if let Some(f) = lock(&state.faults).pop_front() {
        let model = body["model"].as_str().unwrap_or("gpt-5.4").to_string();
        let n = state.turn_seq.fetch_add(1, Ordering::SeqCst);
        let mut turn_events = Turn::text(&DEFAULT_DELTAS).events(&model, n);
        let created = turn_events[0].clone();
        let delta = turn_events
            .iter()
            .find(|e| e["type"] == "response.output_text.delta")
            .cloned()
            .unwrap_or(Value::Null);
        return match f {
            Fault::Status {
                status,
                body,
                headers,
            } => {
                let mut h = headers;
                if !h.iter().any(|(k, _)| k == "content-type") {
                    h.push(("content-type".into(), "application/json".into()));
                }
                Outcome::Full {
                    status,
                    headers: h,
                    body: body.into_bytes(),
                }
            }
            Fault::ResetBeforeHeaders => Outcome::Reset,
            Fault::ResetMidStream => {
                let half = turn_events.len() / 2;
                turn_events.truncate(half);
                Outcome::Stream {
                    body: frame_events(&turn_events),
                    reset_at_end: true,
                }
            }
            Fault::CloseBeforeCompleted => {
                turn_events.pop();
                Outcome::Stream {
                    body: frame_events(&turn_events),
                    reset_at_end: false,
                }
            }
            Fault::ErrorMidStream(e) => Outcome::Stream {
                body: frame_events(&[created, delta, e]),
                reset_at_end: false,
            },
            Fault::ErrorFirst(e) => Outcome::Stream {
                body: frame_events(&[created, e]),
                reset_at_end: false,
            },
            Fault::Failed => {
                let failed = json!({"type": "response.failed", "response": {"id": created["response"]["id"], "object": "response",
                    "status": "failed", "output": [], "error": {"code": "server_error", "message": "The model failed to produce an answer."}}});
                Outcome::Stream {
                    body: frame_events(&[created, delta, failed]),
                    reset_at_end: false,
                }
            }
            Fault::Malformed => {
                let mut b = frame_events(&[created]);
                b.extend_from_slice(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hel\n\n");
                Outcome::Stream {
                    body: b,
                    reset_at_end: false,
                }
            }
            Fault::Raw(bytes) => Outcome::Stream {
                body: bytes,
                reset_at_end: false,
            },
        };
    }
    if let Err(detail) = validate(body) {
        c.bad_request.fetch_add(1, Ordering::SeqCst);
        return json_outcome(400, json!({ "detail": detail }));
    }
    let turn = state.next_turn(body);
    let model = body["model"].as_str().unwrap_or_default();
    let n = state.turn_seq.fetch_add(1, Ordering::SeqCst);
    Outcome::Stream {
        body: frame_events(&turn.events(model, n)),
        reset_at_end: false,
    }
}

async fn token(state: &Arc<MockState>, body: &Value, rec: &mut Recorded) -> Outcome {
    let c = &state.counters;
    c.token.fetch_add(1, Ordering::SeqCst);
    if let Some(f) = lock(&state.token_faults).pop_front() {
        c.token_rejected.fetch_add(1, Ordering::SeqCst);
        return match f {
            Fault::Status {
                status,
                body,
                headers,
            } => {
                let mut h = headers;
                h.push(("content-type".into(), "application/json".into()));
                Outcome::Full {
                    status,
                    headers: h,
                    body: body.into_bytes(),
                }
            }
            _ => Outcome::Reset,
        };
    }
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if field("client_id") != CLIENT_ID {
        c.token_rejected.fetch_add(1, Ordering::SeqCst);
        return json_outcome(
            401,
            json!({"error": "invalid_client", "error_description": "Unknown client"}),
        );
    }
    let issued = match field("grant_type").as_str() {
        "refresh_token" => {
            let rt = field("refresh_token");
            let mut accts = lock(&state.accounts);
            if let Some(a) = accts
                .iter_mut()
                .find(|a| a.refresh_token == rt && !rt.is_empty())
            {
                a.retired.push(a.refresh_token.clone());
                a.generation += 1;
                state.mint(a);
                rec.account = Some(a.name.clone());
                c.token_refreshed.fetch_add(1, Ordering::SeqCst);
                MockState::issued(a)
            } else if let Some(a) = accts.iter().find(|a| a.retired.contains(&rt)) {
                rec.account = Some(a.name.clone());
                c.token_rejected.fetch_add(1, Ordering::SeqCst);
                return json_outcome(
                    401,
                    json!({"error": {"message": "Your refresh token has already been used to generate a new access token. Please try signing in again.",
                                     "type": "invalid_request_error", "param": null, "code": "refresh_token_reused"}}),
                );
            } else {
                c.token_rejected.fetch_add(1, Ordering::SeqCst);
                return json_outcome(
                    400,
                    json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}),
                );
            }
        }
        "authorization_code" => {
            let code = field("code");
            let name = {
                let mut codes = lock(&state.codes);
                let pos = codes.iter().position(|(k, _)| *k == code);
                pos.map(|p| codes.remove(p).1)
            };
            let ok = !field("redirect_uri").is_empty() && !field("code_verifier").is_empty();
            let mut accts = lock(&state.accounts);
            match name.and_then(|n| accts.iter_mut().find(|a| a.name == n)) {
                Some(a) if ok => {
                    a.retired.push(a.refresh_token.clone());
                    a.generation += 1;
                    state.mint(a);
                    rec.account = Some(a.name.clone());
                    c.token_code.fetch_add(1, Ordering::SeqCst);
                    MockState::issued(a)
                }
                _ => {
                    c.token_rejected.fetch_add(1, Ordering::SeqCst);
                    return json_outcome(
                        400,
                        json!({"error": "invalid_grant", "error_description": "Invalid authorization code"}),
                    );
                }
            }
        }
        other => {
            c.token_rejected.fetch_add(1, Ordering::SeqCst);
            return json_outcome(
                400,
                json!({"error": "unsupported_grant_type", "error_description": format!("Unsupported grant type: {other}")}),
            );
        }
    };
    let delay = state.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut out = json!({
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "id_token": issued.id_token,
        "expires_in": state.expires_in_secs.load(Ordering::SeqCst),
        "token_type": "Bearer",
        "scope": "openid profile email offline_access",
    });
    if state.omit_id_token.load(Ordering::SeqCst)
        && let Some(o) = out.as_object_mut()
    {
        o.remove("id_token");
    }
    json_outcome(200, out)
}

fn usage(state: &Arc<MockState>, req: &Request, rec: &mut Recorded) -> Outcome {
    state.counters.usage.fetch_add(1, Ordering::SeqCst);
    let Some(acct) = state.authenticate(req.bearer(), req.header("chatgpt-account-id")) else {
        state.counters.auth_rejected.fetch_add(1, Ordering::SeqCst);
        return token_expired();
    };
    rec.account = Some(acct.name);
    let (p, s) = *lock(&state.usage_percent);
    let now = state.now_ms() / 1000;
    json_outcome(
        200,
        json!({"plan_type": "plus", "rate_limit": {"allowed": p < 100.0 && s < 100.0, "limit_reached": p >= 100.0 || s >= 100.0,
            "primary_window": {"used_percent": p, "limit_window_seconds": 18000, "reset_after_seconds": 3600, "reset_at": now + 3600},
            "secondary_window": {"used_percent": s, "limit_window_seconds": 604800, "reset_after_seconds": 400000, "reset_at": now + 400000}},
            "credits": {"has_credits": false, "unlimited": false, "balance": null}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_round_trip() {
        let t = jwt(&json!({"a": "é", "n": 1}));
        assert_eq!(jwt_claims(&t), Some(json!({"a": "é", "n": 1})));
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            parse_form(b"grant_type=refresh_token&x=a+b%26c%3D"),
            json!({"grant_type": "refresh_token", "x": "a b&c="})
        );
    }

    #[test]
    fn validation_matches_the_reference() {
        let ok = json!({"model": "gpt-5.4", "store": false, "stream": true, "instructions": "x", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
        ], "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}, {"type": "image_generation"}]});
        assert_eq!(validate(&ok), Ok(()));
        let mut bad = ok.clone();
        bad["store"] = json!(true);
        assert_eq!(validate(&bad), Err("Store must be set to false".into()));
        let mut bad = ok.clone();
        bad["temperature"] = json!(0.1);
        assert_eq!(
            validate(&bad),
            Err("Unsupported parameter: temperature".into())
        );
        let mut bad = ok.clone();
        bad["input"][2]["call_id"] = json!("zz");
        assert!(validate(&bad).unwrap_err().contains("No tool call found"));
        let mut bad = ok.clone();
        bad["model"] = json!("gpt-5");
        assert!(validate(&bad).unwrap_err().contains("not supported"));
    }
}
