//! The response side of Code Assist: sending an envelope, unwrapping `{"response": …,
//! "traceId": …}` (unary and per SSE event) into plain Gemini `GenerateContentResponse`s, and
//! the stream the host relays.
//!
//! Streams are checked before they are handed over: the first event must be a response
//! envelope. An error object, garbage, or an empty stream before any data becomes an error
//! reply (or [`PluginError`]) the host can still act on — switch accounts, answer the client
//! with a clean error — instead of a 200 that breaks after its headers. Later failures end the
//! stream with an error (the host writes an error event in the client's protocol).
//!
//! `anti-<model>` streams continue after `MAX_TOKENS`: the cut chunk is forwarded without its
//! finish reason, then the conversation plus the text so far (as a `model` turn) and a request
//! to continue is sent again, up to [`MAX_CONTINUATIONS`] times (the original had no bound).

use std::collections::VecDeque;
use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{Reply, StreamEvent};
use aiclient_sdk::sse::{SseEvent, SseParser};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value, json};

use crate::errors;

/// Largest unary or error body read (bytes): far above any real answer (inline images
/// included), small enough to stop a runaway upstream.
const MAX_BODY: usize = 64 << 20;
const MAX_ERROR_BODY: usize = 64 << 10;
/// Continuation rounds of an `anti-*` stream.
pub const MAX_CONTINUATIONS: u32 = 16;
pub const CONTINUE_PROMPT: &str = "Continue exactly where you stopped, without repeating anything.";

/// One upstream POST: where, with which headers, for how long.
#[derive(Clone)]
pub struct Call {
    pub client: reqwest::Client,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub timeout: Duration,
}

/// What an upstream POST produced.
pub enum Sent {
    Ok(reqwest::Response),
    /// A non-2xx answer, already mapped to a reply.
    Refused(Reply),
}

impl Call {
    pub async fn post(&self, body: &Value) -> Result<Sent, PluginError> {
        let mut b = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .body(body.to_string());
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        let resp = b.send().await.map_err(kit::transport_error)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(Sent::Ok(resp));
        }
        let hint = kit::retry_after_ms(resp.headers());
        let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
        Ok(Sent::Refused(errors::error_reply(status, body, hint)))
    }
}

/// The body as text, cut at `cap` bytes; `Err` on a transport failure.
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<String, PluginError> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(broke)?;
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn broke(e: reqwest::Error) -> PluginError {
    let e = e.without_url();
    if e.is_timeout() {
        PluginError::timeout(format!("upstream timed out: {e}"))
    } else {
        PluginError::unavailable(format!("upstream connection broke off: {e}"))
    }
}

/// One upstream payload, classified.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// An unwrapped `GenerateContentResponse`.
    Chunk(Value),
    /// A Google error object (status from its `code`), with the body.
    Error(u16, String),
    /// `[DONE]` (Code Assist sends none; tolerated).
    Done,
    Malformed(String),
}

pub fn classify(data: &str) -> Item {
    let t = data.trim();
    if t == "[DONE]" {
        return Item::Done;
    }
    let v: Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) => {
            return Item::Malformed(format!(
                "not JSON ({e}): {}",
                t.chars().take(120).collect::<String>()
            ));
        }
    };
    if let Some(e) = errors::google_error(&v) {
        let code = e
            .get("code")
            .and_then(Value::as_u64)
            .filter(|c| (400..600).contains(c))
            .unwrap_or(502) as u16;
        return Item::Error(code, v.to_string());
    }
    let Value::Object(mut o) = v else {
        return Item::Malformed("not a JSON object".into());
    };
    match o.shift_remove("response") {
        Some(Value::Object(inner)) => Item::Chunk(Value::Object(inner)),
        Some(_) => Item::Malformed("`response` is not an object".into()),
        // Already unwrapped (some proxies in front of Code Assist do that).
        None if ["candidates", "promptFeedback", "usageMetadata"]
            .iter()
            .any(|k| o.contains_key(*k)) =>
        {
            Item::Chunk(Value::Object(o))
        }
        None => Item::Malformed("no `response` envelope".into()),
    }
}

/// A unary answer as the reply the host expects.
pub async fn unary(resp: reqwest::Response) -> Result<Reply, PluginError> {
    let text = read_capped(resp, MAX_BODY).await?;
    unwrap_unary(&text)
}

pub fn unwrap_unary(text: &str) -> Result<Reply, PluginError> {
    match classify(text) {
        Item::Chunk(v) => Ok(Reply::ok(v.to_string())),
        Item::Error(status, body) => Ok(errors::error_reply(status, body, 0)),
        Item::Done => Err(PluginError::unavailable(
            "malformed upstream answer: [DONE] instead of a response",
        )),
        Item::Malformed(m) => Err(PluginError::unavailable(format!(
            "malformed upstream answer: {m}"
        ))),
    }
}

/// The SSE events of one upstream response.
struct SseBody {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    finished: bool,
}

impl SseBody {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            ready: VecDeque::new(),
            finished: false,
        }
    }

    async fn next_event(&mut self) -> Result<Option<SseEvent>, PluginError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            if self.finished {
                return Ok(None);
            }
            let mut out = Vec::new();
            let step = match self.body.next().await {
                Some(Ok(bytes)) => self.parser.push(&bytes, &mut out),
                Some(Err(e)) => {
                    self.finished = true;
                    return Err(broke(e));
                }
                None => {
                    self.finished = true;
                    self.parser.finish(&mut out)
                }
            };
            if let Err(e) = step {
                self.finished = true;
                return Err(PluginError::unavailable(format!(
                    "malformed upstream stream: {e}"
                )));
            }
            self.ready.extend(out);
        }
    }

    async fn next_item(&mut self) -> Result<Option<Item>, PluginError> {
        Ok(self.next_event().await?.map(|e| classify(&e.data)))
    }
}

/// The state an `anti-*` stream needs to ask for more.
pub struct Continuation {
    pub call: Call,
    /// The envelope of the first request.
    pub envelope: Value,
    text: String,
    rounds: u32,
    pending: bool,
}

impl Continuation {
    pub fn new(call: Call, envelope: Value) -> Self {
        Self {
            call,
            envelope,
            text: String::new(),
            rounds: 0,
            pending: false,
        }
    }

    /// The envelope asking to continue after the text generated so far.
    fn next_envelope(&self) -> Value {
        let mut env = self.envelope.clone();
        if let Some(Value::Array(contents)) = env.pointer_mut("/request/contents") {
            contents.push(json!({"role": "model", "parts": [{"text": self.text}]}));
            contents.push(json!({"role": "user", "parts": [{"text": CONTINUE_PROMPT}]}));
        }
        env
    }

    async fn next_round(&mut self) -> Result<reqwest::Response, PluginError> {
        self.pending = false;
        self.rounds += 1;
        match self.call.post(&self.next_envelope()).await? {
            Sent::Ok(resp) => Ok(resp),
            Sent::Refused(r) => Err(PluginError::unavailable(format!(
                "continuing after MAX_TOKENS failed: upstream {}: {}",
                r.status,
                r.body.chars().take(300).collect::<String>()
            ))),
        }
    }
}

/// How chunks are adjusted on their way out.
#[derive(Clone, Copy, Default)]
pub struct Shaping {
    /// Antigravity: `usageMetadata` only on the final chunk.
    pub usage_on_final_only: bool,
}

struct State {
    body: SseBody,
    pending: Option<Value>,
    cont: Option<Continuation>,
    shaping: Shaping,
    done: bool,
}

impl State {
    fn observe(&mut self, mut v: Value) -> Value {
        let has_finish = v
            .pointer("/candidates/0/finishReason")
            .is_some_and(|f| !f.is_null());
        if let Some(c) = self.cont.as_mut()
            && let Some(cand) = v
                .pointer_mut("/candidates/0")
                .and_then(Value::as_object_mut)
        {
            let parts = cand
                .get("content")
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array);
            for p in parts.into_iter().flatten() {
                if p.get("thought").and_then(Value::as_bool) != Some(true)
                    && let Some(t) = p.get("text").and_then(Value::as_str)
                {
                    c.text.push_str(t);
                }
            }
            if cand.get("finishReason").and_then(Value::as_str) == Some("MAX_TOKENS")
                && c.rounds < MAX_CONTINUATIONS
            {
                cand.shift_remove("finishReason");
                c.pending = true;
            }
        }
        if self.shaping.usage_on_final_only
            && !has_finish
            && let Some(o) = v.as_object_mut()
        {
            o.shift_remove("usageMetadata");
        }
        v
    }
}

fn event(v: &Value) -> StreamEvent {
    StreamEvent::new("", v.to_string())
}

/// A successful streaming answer as the reply the host relays (see the module docs).
pub async fn stream(
    resp: reqwest::Response,
    cont: Option<Continuation>,
    shaping: Shaping,
) -> Result<Reply, PluginError> {
    let mut body = SseBody::new(resp);
    let first = loop {
        match body.next_item().await? {
            None => {
                return Err(PluginError::unavailable(
                    "the upstream stream ended before any data",
                ));
            }
            Some(Item::Done) => continue,
            Some(Item::Chunk(v)) => break v,
            Some(Item::Error(status, b)) => return Ok(errors::error_reply(status, b, 0)),
            Some(Item::Malformed(m)) => {
                return Err(PluginError::unavailable(format!(
                    "malformed upstream stream: {m}"
                )));
            }
        }
    };
    let mut st = State {
        body,
        pending: None,
        cont,
        shaping,
        done: false,
    };
    st.pending = Some(st.observe(first));
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(v) = st.pending.take() {
                return Some((Ok(event(&v)), st));
            }
            let failure = match st.body.next_item().await {
                Ok(Some(Item::Done)) => continue,
                Ok(Some(Item::Chunk(v))) => {
                    let v = st.observe(v);
                    return Some((Ok(event(&v)), st));
                }
                Ok(Some(Item::Error(status, body))) => {
                    let msg = upstream_message(&body);
                    PluginError::unavailable(format!("upstream error mid-stream ({status}): {msg}"))
                }
                Ok(Some(Item::Malformed(m))) => {
                    PluginError::unavailable(format!("malformed upstream stream: {m}"))
                }
                Err(e) => e,
                Ok(None) => match st.cont.as_mut().filter(|c| c.pending) {
                    None => return None,
                    Some(c) => match c.next_round().await {
                        Ok(resp) => {
                            st.body = SseBody::new(resp);
                            continue;
                        }
                        Err(e) => e,
                    },
                },
            };
            st.done = true;
            return Some((Err(failure), st));
        }
    });
    Ok(Reply::stream(Box::pin(events)))
}

/// Reads a whole stream and merges it into one unary response (Antigravity runs Claude
/// models this way): consecutive text parts of the same kind joined, other parts kept, the
/// last finish reason and usage.
pub async fn collect(resp: reqwest::Response) -> Result<Reply, PluginError> {
    let mut body = SseBody::new(resp);
    let mut parts: Vec<Value> = Vec::new();
    let mut last: Option<Map<String, Value>> = None;
    let mut finish: Option<Value> = None;
    let mut usage: Option<Value> = None;
    while let Some(item) = body.next_item().await? {
        let mut chunk = match item {
            Item::Chunk(Value::Object(o)) => o,
            Item::Chunk(_) | Item::Done => continue,
            Item::Error(status, b) => return Ok(errors::error_reply(status, b, 0)),
            Item::Malformed(m) => {
                return Err(PluginError::unavailable(format!(
                    "malformed upstream stream: {m}"
                )));
            }
        };
        if let Some(u) = chunk.get("usageMetadata") {
            usage = Some(u.clone());
        }
        if let Some(cand) = chunk.get_mut("candidates").and_then(|c| c.get_mut(0)) {
            if let Some(f) = cand.get("finishReason").filter(|f| !f.is_null()) {
                finish = Some(f.clone());
            }
            let new_parts = cand
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in new_parts {
                merge_part(&mut parts, p);
            }
        }
        last = Some(chunk);
    }
    let Some(mut out) = last else {
        return Err(PluginError::unavailable(
            "the upstream stream ended before any data",
        ));
    };
    let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        cand["finishReason"] = f;
    }
    out.insert("candidates".into(), json!([cand]));
    if let Some(u) = usage {
        out.insert("usageMetadata".into(), u);
    }
    Ok(Reply::ok(Value::Object(out).to_string()))
}

fn merge_part(parts: &mut Vec<Value>, p: Value) {
    let is_text = |v: &Value| {
        v.get("text").is_some_and(Value::is_string)
            && v.as_object()
                .is_some_and(|o| o.keys().all(|k| k == "text" || k == "thought"))
    };
    let thought = |v: &Value| v.get("thought").and_then(Value::as_bool).unwrap_or(false);
    if is_text(&p)
        && let Some(prev) = parts.last_mut()
        && is_text(prev)
        && thought(prev) == thought(&p)
    {
        let add = p
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(Value::String(t)) = prev.get_mut("text") {
            t.push_str(&add);
        }
        return;
    }
    parts.push(p);
}

/// The readable part of a Google error body.
pub fn upstream_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            errors::google_error(&v)
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_unwrap_and_errors_are_recognised() {
        let env = json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}], "modelVersion": "m"}, "traceId": "t"});
        match classify(&env.to_string()) {
            Item::Chunk(v) => {
                assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hi");
                assert!(v.get("traceId").is_none());
            }
            other => panic!("{other:?}"),
        }
        let err = json!([{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]);
        assert!(matches!(classify(&err.to_string()), Item::Error(429, _)));
        assert!(matches!(classify("{not json"), Item::Malformed(_)));
        assert!(matches!(classify(r#"{"foo": 1}"#), Item::Malformed(_)));
        assert!(matches!(classify(r#"{"response": 3}"#), Item::Malformed(_)));
        assert_eq!(classify(" [DONE] "), Item::Done);
        assert!(matches!(classify(r#"{"candidates": []}"#), Item::Chunk(_)));
    }

    #[test]
    fn unary_without_envelope_is_an_error_not_a_null() {
        assert!(unwrap_unary("{}").is_err());
        assert!(unwrap_unary("").is_err());
        let r = unwrap_unary(
            r#"{"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}}"#,
        )
        .expect("reply");
        assert_eq!(r.status, 403);
        let ok =
            unwrap_unary(r#"{"response": {"candidates": []}, "traceId": "x"}"#).expect("reply");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body, r#"{"candidates":[]}"#);
    }

    #[test]
    fn parts_merge() {
        let mut parts = Vec::new();
        for p in [
            json!({"text": "a", "thought": true}),
            json!({"text": "b", "thought": true}),
            json!({"text": "c"}),
            json!({"text": "d"}),
            json!({"functionCall": {"name": "f"}}),
        ] {
            merge_part(&mut parts, p);
        }
        assert_eq!(
            parts,
            vec![
                json!({"text": "ab", "thought": true}),
                json!({"text": "cd"}),
                json!({"functionCall": {"name": "f"}})
            ]
        );
    }
}
