//! Small helpers for reading what the gateway answers in tests: JSON bodies, SSE `data:`
//! payloads, OpenAI stream text, pool entries in `provider_pools.json`, and a few request
//! builders.

use std::path::Path;

use serde_json::{Value, json};

pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", p.display()))
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

pub fn sse_json(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

pub fn streaming(mut v: Value) -> Value {
    v["stream"] = json!(true);
    v
}

pub fn openai_stream_text(body: &str) -> String {
    sse_json(body)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// `v` with the JSON merge patch `patch` applied (RFC 7386: objects merge, `null` removes).
pub fn merged(mut v: Value, patch: &Value) -> Value {
    aiclient_sdk::account::merge_patch(&mut v, patch);
    v
}
