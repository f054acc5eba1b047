//! The upstream's Responses SSE stream (codex.md §4): reading it, assembling the unary answer,
//! and passing it through as the plugin's streaming answer.
//!
//! Reading is hardened: bytes go through the SDK's incremental [`SseParser`] (any line ending,
//! any chunking, an event larger than [`MAX_EVENT`] is an error); every `data:` payload must be
//! a JSON object (else a clean [`PluginError`]); `[DONE]` ends the stream; a silent upstream
//! times out between chunks; what is collected for the final answer is capped at
//! [`MAX_COLLECTED`].
//!
//! - **Unary** ([`unary`]): reads to `response.completed` (or `.incomplete`) and returns its
//!   `response` object; an empty `output` (the backend sends one with `store:false`) is filled
//!   with the items of `response.output_item.done`, in `output_index` order. An `error` event or
//!   `response.failed` becomes an error reply (see [`crate::errors::stream_error`]).
//! - **Streaming** ([`streaming`]): the events before the first content event are read first,
//!   so a failure the upstream reports at once (quota, invalid request) is still an HTTP error
//!   the host can act on (switch account, refresh); afterwards events pass through unchanged
//!   except that the terminal event's empty `output` is filled as above and shortened tool names
//!   are restored. The stream ends after the terminal event.
//!
//! A stream that closes before `response.completed` is an error in both modes: unlike the
//! original (which synthesises a completed response from partial items), a truncated answer is
//! never presented as a complete one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use aiclient_provider_kit as kit;
use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{EventStream, Reply, StreamEvent};
use aiclient_sdk::sse::SseParser;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::errors;
use crate::request::ToolNames;

/// Largest single SSE event accepted (bytes).
pub const MAX_EVENT: usize = 16 << 20;
/// Largest total of items kept to build the final response (bytes of JSON).
pub const MAX_COLLECTED: usize = 32 << 20;
pub const CLOSED_EARLY: &str =
    "stream disconnected before completion: stream closed before response.completed";

/// One upstream event: its type (`type` field, else the SSE event name) and payload.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub ty: String,
    pub data: Value,
}

/// The upstream body as a sequence of parsed events.
pub struct Events {
    body: BoxStream<'static, Result<bytes::Bytes, PluginError>>,
    parser: SseParser,
    ready: VecDeque<aiclient_sdk::sse::SseEvent>,
    idle: Duration,
    ended: bool,
}

impl Events {
    pub fn from_response(resp: reqwest::Response, idle: Duration) -> Self {
        Self::new(
            resp.bytes_stream()
                .map(|r| r.map_err(kit::transport_error))
                .boxed(),
            idle,
        )
    }

    pub fn new(
        body: BoxStream<'static, Result<bytes::Bytes, PluginError>>,
        idle: Duration,
    ) -> Self {
        Self {
            body,
            parser: SseParser::new(MAX_EVENT),
            ready: VecDeque::new(),
            idle,
            ended: false,
        }
    }

    /// The next event; `None` at the end of the stream (or at `[DONE]`).
    pub async fn next(&mut self) -> Result<Option<Upstream>, PluginError> {
        loop {
            while let Some(ev) = self.ready.pop_front() {
                let text = ev.data.trim();
                if text.is_empty() {
                    continue;
                }
                if text == "[DONE]" {
                    self.ended = true;
                    self.ready.clear();
                    return Ok(None);
                }
                let data: Value = match serde_json::from_str(text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        self.ended = true;
                        let shown: String = text.chars().take(120).collect();
                        return Err(PluginError::unavailable(format!(
                            "malformed upstream stream: an event's data is not a JSON object: {shown}"
                        )));
                    }
                };
                let ty = data
                    .get("type")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .unwrap_or(ev.event);
                if ty.is_empty() {
                    continue;
                }
                return Ok(Some(Upstream { ty, data }));
            }
            if self.ended {
                return Ok(None);
            }
            let mut out = Vec::new();
            let step = match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    self.ended = true;
                    return Err(PluginError::timeout(format!(
                        "the upstream sent nothing for {} s",
                        self.idle.as_secs()
                    )));
                }
                Ok(Some(Ok(bytes))) => self.parser.push(&bytes, &mut out),
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(None) => {
                    self.ended = true;
                    self.parser.finish(&mut out)
                }
            };
            if let Err(e) = step {
                self.ended = true;
                return Err(PluginError::unavailable(format!(
                    "malformed upstream stream: {e}"
                )));
            }
            self.ready.extend(out);
        }
    }
}

fn is_terminal(ty: &str) -> bool {
    matches!(
        ty,
        "response.completed"
            | "response.incomplete"
            | "response.failed"
            | "response.done"
            | "error"
    )
}

fn is_failure(ty: &str) -> bool {
    matches!(ty, "response.failed" | "error")
}

/// The `output_item.done` items seen, for filling an empty final `output`.
#[derive(Default)]
struct Collector {
    items: BTreeMap<u64, Value>,
    next_free: u64,
    bytes: usize,
    overflow: bool,
}

impl Collector {
    fn add(&mut self, data: &Value) {
        if self.overflow {
            return;
        }
        let Some(item) = data.get("item") else { return };
        let size = item.to_string().len();
        if self.bytes + size > MAX_COLLECTED {
            self.overflow = true;
            self.items.clear();
            return;
        }
        self.bytes += size;
        let idx = data
            .get("output_index")
            .and_then(Value::as_u64)
            .filter(|i| !self.items.contains_key(i))
            .unwrap_or(
                self.next_free
                    .max(self.items.keys().next_back().map_or(0, |k| k + 1)),
            );
        self.next_free = idx + 1;
        self.items.insert(idx, item.clone());
    }

    /// Fills `response.output` if the upstream left it empty.
    fn fill(&self, response: &mut Value) {
        let empty = response
            .get("output")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty && !self.items.is_empty() && response.is_object() {
            response["output"] = Value::Array(self.items.values().cloned().collect());
        }
    }
}

/// Applies the per-event rewriting (tool names, final output) in place.
fn rewrite(ev: &mut Upstream, names: &ToolNames, collected: &mut Collector) {
    match ev.ty.as_str() {
        "response.output_item.added" | "response.output_item.done" => {
            if let Some(item) = ev.data.get_mut("item") {
                names.restore_item(item);
            }
            if ev.ty == "response.output_item.done" {
                collected.add(&ev.data);
            }
        }
        "response.completed" | "response.incomplete" | "response.done" => {
            if let Some(resp) = ev.data.get_mut("response") {
                if let Some(out) = resp.get_mut("output").and_then(Value::as_array_mut) {
                    for item in out {
                        names.restore_item(item);
                    }
                }
                collected.fill(resp);
            }
        }
        _ => {}
    }
}

/// Reads the whole stream and returns the final `response` object (or the upstream's error).
pub async fn unary(mut events: Events, names: ToolNames) -> Result<Reply, PluginError> {
    let mut collected = Collector::default();
    while let Some(mut ev) = events.next().await? {
        if is_failure(&ev.ty) {
            return Ok(errors::stream_error(&ev.data, now_ms()));
        }
        rewrite(&mut ev, &names, &mut collected);
        if collected.overflow {
            return Err(PluginError::unavailable(format!(
                "the upstream answer is larger than {MAX_COLLECTED} bytes"
            )));
        }
        if is_terminal(&ev.ty) {
            let resp = match ev.data.get("response") {
                Some(r @ Value::Object(_)) => r.clone(),
                _ => {
                    return Err(PluginError::unavailable(format!(
                        "malformed upstream stream: {} without a response object",
                        ev.ty
                    )));
                }
            };
            return Ok(Reply::ok(resp.to_string()));
        }
    }
    Err(PluginError::unavailable(CLOSED_EARLY))
}

/// Events that come before any content and say nothing a client needs before it.
fn is_preamble(ty: &str) -> bool {
    matches!(
        ty,
        "response.created" | "response.in_progress" | "response.queued"
    )
}

struct Pass {
    events: Events,
    buffered: VecDeque<Upstream>,
    names: ToolNames,
    collected: Collector,
    done: bool,
}

/// Starts a streaming reply: reads up to the first content event (an upstream failure there is
/// returned as an error reply), then passes the events through.
pub async fn streaming(mut events: Events, names: ToolNames) -> Result<Reply, PluginError> {
    let mut buffered = VecDeque::new();
    loop {
        let Some(ev) = events.next().await? else {
            return Err(PluginError::unavailable(CLOSED_EARLY));
        };
        if is_failure(&ev.ty) {
            return Ok(errors::stream_error(&ev.data, now_ms()));
        }
        let preamble = is_preamble(&ev.ty);
        buffered.push_back(ev);
        if !preamble {
            break;
        }
    }
    let st = Pass {
        events,
        buffered,
        names,
        collected: Collector::default(),
        done: false,
    };
    let s = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let next = match st.buffered.pop_front() {
            Some(ev) => Ok(Some(ev)),
            None => st.events.next().await,
        };
        match next {
            Ok(Some(mut ev)) => {
                rewrite(&mut ev, &st.names, &mut st.collected);
                if is_terminal(&ev.ty) {
                    st.done = true;
                }
                let out = StreamEvent::new(ev.ty, ev.data.to_string());
                Some((Ok(out), st))
            }
            Ok(None) => {
                st.done = true;
                Some((Err(PluginError::unavailable(CLOSED_EARLY)), st))
            }
            Err(e) => {
                st.done = true;
                Some((Err(e), st))
            }
        }
    });
    let s: EventStream = Box::pin(s);
    Ok(Reply::stream(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiclient_sdk::provider::AccountAction;
    use serde_json::json;

    fn body(chunks: Vec<Vec<u8>>) -> Events {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(bytes::Bytes::from(c))));
        Events::new(s.boxed(), Duration::from_secs(5))
    }

    fn sse(events: &[Value]) -> String {
        events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect()
    }

    fn text_turn(output: Value) -> Vec<Value> {
        vec![
            json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
            json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hé"}),
            json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "Hé", "annotations": []}]}}),
            json!({"type": "response.output_item.done", "sequence_number": 4, "output_index": 1, "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", "status": "completed"}}),
            json!({"type": "response.completed", "sequence_number": 5, "response": {"id": "resp_1", "object": "response", "status": "completed", "output": output, "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}}),
        ]
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn unary_fills_an_empty_output_whatever_the_chunking() {
        let wire = sse(&text_turn(json!([])));
        for size in [1usize, 2, 3, 7, 64, wire.len()] {
            let chunks = wire.as_bytes().chunks(size).map(<[u8]>::to_vec).collect();
            let r = rt()
                .block_on(unary(body(chunks), ToolNames::default()))
                .unwrap();
            assert_eq!(r.status, 200);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(
                v["output"][0]["content"][0]["text"], "Hé",
                "chunk size {size}"
            );
            assert_eq!(v["output"][1]["call_id"], "call_1");
            assert_eq!(v["usage"]["total_tokens"], 3);
        }
        // A populated output is returned as is.
        let wire = sse(&text_turn(
            json!([{"type": "message", "content": [{"type": "output_text", "text": "X"}]}]),
        ));
        let r = rt()
            .block_on(unary(body(vec![wire.into_bytes()]), ToolNames::default()))
            .unwrap();
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["output"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn broken_streams_are_clean_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not json", b"data: {not json\n\n".to_vec()),
            ("json array", b"data: [1,2]\n\n".to_vec()),
            ("not utf-8", b"data: \xff\xfe\n\n".to_vec()),
            (
                "closed early",
                sse(&text_turn(json!([]))).as_bytes()[..200].to_vec(),
            ),
            ("empty", Vec::new()),
        ];
        let r = rt().block_on(unary(
            body(vec![
                b"data: {\"type\":\"response.completed\"}\n\n".to_vec(),
            ]),
            ToolNames::default(),
        ));
        assert!(r.is_err(), "completed without a response object");
        for (what, bytes) in cases {
            let r = rt().block_on(unary(body(vec![bytes.clone()]), ToolNames::default()));
            assert!(r.is_err(), "{what}: unary is an error");
            let r = rt().block_on(async {
                match streaming(body(vec![bytes]), ToolNames::default()).await {
                    Err(e) => Err(e),
                    Ok(reply) => {
                        let mut s = reply.stream.expect("stream");
                        let mut last = Ok(());
                        while let Some(ev) = s.next().await {
                            if let Err(e) = ev {
                                last = Err(e);
                            }
                        }
                        last
                    }
                }
            });
            assert!(r.is_err(), "{what}: streaming ends in an error");
        }
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_EVENT + 10));
        assert!(
            rt().block_on(unary(body(vec![big]), ToolNames::default()))
                .is_err()
        );
    }

    #[test]
    fn early_failures_are_error_replies_late_ones_pass_through() {
        let created = json!({"type": "response.created", "response": {"id": "r"}});
        let quota = json!({"type": "error", "error": {"type": "insufficient_quota", "message": "no quota"}});
        let wire = sse(&[created.clone(), quota.clone()]);
        let r = rt()
            .block_on(streaming(
                body(vec![wire.into_bytes()]),
                ToolNames::default(),
            ))
            .unwrap();
        assert_eq!((r.status, r.action), (429, AccountAction::QUOTA));
        assert!(r.stream.is_none());

        let delta = json!({"type": "response.output_text.delta", "delta": "x"});
        let wire = sse(&[
            created,
            delta,
            quota,
            json!({"type": "response.output_text.delta", "delta": "never"}),
        ]);
        let r = rt()
            .block_on(streaming(
                body(vec![wire.into_bytes()]),
                ToolNames::default(),
            ))
            .unwrap();
        let types: Vec<String> = rt().block_on(async {
            r.stream
                .expect("stream")
                .map(|e| {
                    e.map(|e| e.event.to_string())
                        .unwrap_or_else(|e| format!("ERR {e}"))
                })
                .collect()
                .await
        });
        assert_eq!(
            types,
            ["response.created", "response.output_text.delta", "error"]
        );
    }

    #[test]
    fn streaming_passes_events_and_fills_the_final_output() {
        let wire = sse(&text_turn(json!([])));
        let chunks = wire.as_bytes().chunks(5).map(<[u8]>::to_vec).collect();
        let r = rt()
            .block_on(streaming(body(chunks), ToolNames::default()))
            .unwrap();
        let evs: Vec<StreamEvent> = rt().block_on(async {
            r.stream
                .expect("stream")
                .map(|e| e.expect("event"))
                .collect()
                .await
        });
        assert_eq!(evs.len(), 6);
        assert_eq!(evs[2].event.as_str(), "response.output_text.delta");
        let done: Value = serde_json::from_str(&evs[5].data).unwrap();
        assert_eq!(done["response"]["output"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let len = (seed % 400) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"data: {}\"type\n\r:[]event,response.completed\xff"[(seed % 43) as usize]
                })
                .collect();
            let _ = rt().block_on(unary(body(vec![bytes.clone()]), ToolNames::default()));
            rt().block_on(async {
                if let Ok(r) = streaming(body(vec![bytes]), ToolNames::default()).await
                    && let Some(mut s) = r.stream
                {
                    while s.next().await.is_some() {}
                }
            });
        }
    }
}
