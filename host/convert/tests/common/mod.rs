//! Shared test helpers: vector loading, stream driving, stream validators and accumulators.
#![allow(dead_code)]

use std::path::PathBuf;

use aiclient_convert::{Protocol, SseEvent, StreamConverter};
use serde_json::Value;

/// Vectors are copied into `tests/vectors/` so the tests never depend on the outside tree.
pub fn vector_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(rel)
}

pub fn vector(rel: &str) -> Value {
    let text = std::fs::read_to_string(vector_path(rel)).expect("vector file");
    serde_json::from_str(&text).expect("vector JSON")
}

/// NDJSON vector (one JSON object per line).
pub fn ndjson(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(vector_path(rel)).expect("vector file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// Event name an upstream of `proto` would put on the SSE line.
pub fn event_name(proto: Protocol, data: &Value) -> Option<String> {
    match proto {
        Protocol::Claude | Protocol::OpenAiResponses => {
            data.get("type").and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    }
}

/// Feeds all events then `finish()`; returns the client events and the converter.
pub fn run_stream(
    from: Protocol,
    to: Protocol,
    events: &[Value],
) -> (Vec<SseEvent>, StreamConverter) {
    let mut conv = StreamConverter::new(from, to, "test-model");
    let mut out = Vec::new();
    for e in events {
        let name = event_name(from, e);
        out.extend(conv.push(name.as_deref(), e));
    }
    out.extend(conv.finish());
    // finish is idempotent
    assert!(conv.finish().is_empty(), "finish() must be idempotent");
    (out, conv)
}

pub fn data_json(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("event data is not JSON: {}", e.data))
}

pub fn types(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            data_json(e)
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Claude SSE: message_start first; blocks start/delta/stop properly nested with increasing
/// indexes and no interleaving; message_delta then message_stop last; event name == data.type.
pub fn validate_claude(events: &[SseEvent]) {
    assert!(!events.is_empty(), "empty Claude stream");
    let mut open: Option<u64> = None;
    let mut next_index = 0u64;
    let mut saw_delta = false;
    let mut block_types = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let d = data_json(e);
        let ty = d["type"].as_str().expect("type").to_string();
        assert_eq!(
            e.event.as_deref(),
            Some(ty.as_str()),
            "event name must equal data.type"
        );
        if i == 0 {
            assert_eq!(ty, "message_start", "first event must be message_start");
            continue;
        }
        assert_ne!(ty, "message_start", "only one message_start");
        match ty.as_str() {
            "content_block_start" => {
                assert!(
                    open.is_none(),
                    "block started while another is open: {events:?}"
                );
                assert!(!saw_delta, "block after message_delta");
                let idx = d["index"].as_u64().expect("index");
                assert_eq!(idx, next_index, "block indexes must be consecutive");
                next_index += 1;
                open = Some(idx);
                block_types.insert(
                    idx,
                    d["content_block"]["type"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            "content_block_delta" => {
                let idx = d["index"].as_u64().expect("index");
                assert_eq!(open, Some(idx), "delta outside its open block");
                let dt = d["delta"]["type"].as_str().unwrap_or("");
                let bt = block_types[&idx].as_str();
                let ok = matches!(
                    (bt, dt),
                    ("text", "text_delta")
                        | ("thinking", "thinking_delta")
                        | ("thinking", "signature_delta")
                        | ("tool_use", "input_json_delta")
                );
                assert!(ok, "delta {dt} in a {bt} block");
            }
            "content_block_stop" => {
                let idx = d["index"].as_u64().expect("index");
                assert_eq!(open, Some(idx), "stop of a block that is not open");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with an open block");
                assert!(!saw_delta, "two message_delta");
                assert!(
                    d["delta"]["stop_reason"].is_string(),
                    "message_delta needs stop_reason"
                );
                saw_delta = true;
            }
            "message_stop" => {
                assert_eq!(i, events.len() - 1, "message_stop must be last");
                assert!(saw_delta, "message_stop without message_delta");
            }
            "ping" => {}
            other => panic!("unexpected Claude event {other}"),
        }
    }
    assert_eq!(
        types(events).last().map(String::as_str),
        Some("message_stop")
    );
}

/// OpenAI chunks: role first, constant id, `[DONE]` last, exactly one finish_reason.
pub fn validate_openai(events: &[SseEvent]) {
    assert!(events.len() >= 2, "OpenAI stream too short");
    assert_eq!(events.last().unwrap().data, "[DONE]", "[DONE] must be last");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data_json).collect();
    for e in events {
        assert!(e.event.is_none(), "OpenAI events have no event name");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "role first"
    );
    let id = chunks[0]["id"].clone();
    let mut finishes = 0;
    for c in &chunks {
        assert_eq!(c["id"], id, "constant id");
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(f) = c["choices"].get(0).and_then(|ch| ch.get("finish_reason"))
            && f.is_string()
        {
            finishes += 1;
        }
    }
    assert_eq!(finishes, 1, "exactly one finish_reason");
}

/// Responses: created → in_progress → … → completed/incomplete; increasing sequence numbers;
/// every added item is done; deltas belong to open items.
pub fn validate_responses(events: &[SseEvent]) {
    let ds: Vec<Value> = events.iter().map(data_json).collect();
    let tys = types(events);
    assert_eq!(tys[0], "response.created");
    assert_eq!(tys[1], "response.in_progress");
    let last = tys.last().unwrap();
    assert!(
        last == "response.completed" || last == "response.incomplete",
        "terminal event last, got {last}"
    );
    let mut prev: Option<u64> = None;
    let mut open = std::collections::BTreeSet::new();
    let mut done = std::collections::BTreeSet::new();
    for (e, d) in events.iter().zip(&ds) {
        let ty = d["type"].as_str().unwrap();
        assert_eq!(e.event.as_deref(), Some(ty));
        let seq = d["sequence_number"].as_u64().expect("sequence_number");
        if let Some(p) = prev {
            assert!(seq > p, "sequence numbers increase");
        }
        prev = Some(seq);
        match ty {
            "response.output_item.added" => {
                let oi = d["output_index"].as_u64().unwrap();
                assert!(
                    !open.contains(&oi) && !done.contains(&oi),
                    "output_index reused"
                );
                open.insert(oi);
            }
            "response.output_item.done" => {
                let oi = d["output_index"].as_u64().unwrap();
                assert!(open.remove(&oi), "done for an item never added");
                done.insert(oi);
            }
            t if t.ends_with(".delta") => {
                let oi = d["output_index"].as_u64().unwrap();
                assert!(open.contains(&oi), "delta for a closed item");
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "items left open");
    let completed = ds.last().unwrap();
    assert_eq!(
        completed["response"]["output"].as_array().unwrap().len(),
        done.len()
    );
}

/// Gemini chunks: no event names, candidates present, exactly one finishReason, on the last chunk.
pub fn validate_gemini(events: &[SseEvent]) {
    assert!(!events.is_empty());
    let ds: Vec<Value> = events.iter().map(data_json).collect();
    let mut finishes = 0;
    for (i, d) in ds.iter().enumerate() {
        assert!(events[i].event.is_none());
        if d["candidates"][0].get("finishReason").is_some() {
            finishes += 1;
            assert_eq!(i, ds.len() - 1, "finishReason only on the last chunk");
        }
    }
    assert_eq!(finishes, 1);
}

#[derive(Debug, Default)]
pub struct OpenAiAcc {
    pub content: String,
    pub reasoning: String,
    pub tools: Vec<(String, String, String)>,
    pub finish: Option<String>,
    pub usage: Option<Value>,
}

pub fn openai_accumulate(events: &[SseEvent]) -> OpenAiAcc {
    let mut acc = OpenAiAcc::default();
    for e in events {
        if e.data == "[DONE]" {
            continue;
        }
        let d = data_json(e);
        if let Some(u) = d.get("usage").filter(|u| u.is_object()) {
            acc.usage = Some(u.clone());
        }
        let Some(ch) = d["choices"].get(0) else {
            continue;
        };
        let delta = &ch["delta"];
        if let Some(t) = delta["content"].as_str() {
            acc.content.push_str(t);
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            acc.reasoning.push_str(t);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for c in calls {
                let idx = c["index"].as_u64().unwrap() as usize;
                if acc.tools.len() <= idx {
                    acc.tools.resize(idx + 1, Default::default());
                }
                if let Some(id) = c["id"].as_str() {
                    acc.tools[idx].0 = id.to_string();
                }
                if let Some(n) = c["function"]["name"].as_str() {
                    acc.tools[idx].1 = n.to_string();
                }
                if let Some(a) = c["function"]["arguments"].as_str() {
                    acc.tools[idx].2.push_str(a);
                }
            }
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            acc.finish = Some(f.to_string());
        }
    }
    acc
}

/// Claude stream → list of (block type, accumulated text/json), stop_reason, final usage.
pub fn claude_accumulate(events: &[SseEvent]) -> (Vec<(String, String)>, Option<String>, Value) {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut stop = None;
    let mut usage = Value::Null;
    for e in events {
        let d = data_json(e);
        match d["type"].as_str().unwrap_or("") {
            "content_block_start" => blocks.push((
                d["content_block"]["type"].as_str().unwrap().to_string(),
                String::new(),
            )),
            "content_block_delta" => {
                let idx = d["index"].as_u64().unwrap() as usize;
                let delta = &d["delta"];
                let piece = delta["text"]
                    .as_str()
                    .or(delta["thinking"].as_str())
                    .or(delta["partial_json"].as_str())
                    .unwrap_or("");
                blocks[idx].1.push_str(piece);
            }
            "message_delta" => {
                stop = d["delta"]["stop_reason"].as_str().map(str::to_string);
                usage = d["usage"].clone();
            }
            _ => {}
        }
    }
    (blocks, stop, usage)
}
