//! Round trips: converting there and back keeps messages, tools and results.

mod common;

use aiclient_convert::Protocol::{self, *};
use aiclient_convert::{convert_request, convert_response};
use common::*;
use serde_json::{Value, json};

fn openai_request() -> Value {
    json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": "What is the weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
            {"role": "assistant", "content": "Paris is sunny, Rome is rainy."},
            {"role": "user", "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}}, "required": ["city"]}
        }}],
        "tool_choice": "auto",
        "max_tokens": 1000,
        "temperature": 0.5,
        "stop": ["STOP"],
        "stream": true
    })
}

fn strip_stream_options(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("stream_options");
    v
}

#[test]
fn openai_to_claude_to_openai_keeps_messages_and_tools() {
    let original = openai_request();
    let claude = convert_request(OpenAi, Claude, &original, "claude-sonnet-4-5").unwrap();
    let back = strip_stream_options(convert_request(Claude, OpenAi, &claude, "gpt-4.1").unwrap());
    assert_eq!(back["messages"], original["messages"]);
    assert_eq!(back["tools"], original["tools"]);
    for key in [
        "model",
        "tool_choice",
        "max_tokens",
        "temperature",
        "stop",
        "stream",
    ] {
        assert_eq!(back[key], original[key], "{key}");
    }
}

#[test]
fn openai_round_trips_through_gemini_and_responses() {
    let original = openai_request();
    for via in [Gemini, OpenAiResponses] {
        let mid = convert_request(OpenAi, via, &original, "m").unwrap();
        let back = strip_stream_options(convert_request(via, OpenAi, &mid, "gpt-4.1").unwrap());
        let msgs = back["messages"].as_array().unwrap();
        let orig = original["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), orig.len(), "via {via:?}");
        for (m, o) in msgs.iter().zip(orig) {
            assert_eq!(m["role"], o["role"], "via {via:?}");
            assert_eq!(m["content"], o["content"], "via {via:?}");
            if let Some(calls) = o["tool_calls"].as_array() {
                let got = m["tool_calls"].as_array().unwrap();
                assert_eq!(got.len(), calls.len());
                for (g, c) in got.iter().zip(calls) {
                    assert_eq!(g["function"], c["function"]);
                    if via == OpenAiResponses {
                        assert_eq!(g["id"], c["id"], "Responses keeps call ids");
                    }
                }
            }
            if o["role"] == "tool" {
                // Gemini has no ids: pairing is by order, so the ids are regenerated consistently.
                let call_ids: Vec<&Value> = msgs[2]["tool_calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| &c["id"])
                    .collect();
                assert!(call_ids.contains(&&m["tool_call_id"]));
            }
        }
        assert_eq!(back["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(
            back["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(back["max_tokens"], 1000);
        assert_eq!(back["temperature"], 0.5);
    }
}

#[test]
fn codex_vector_round_trips_through_claude() {
    let original = vector("openai/originalRequestBody1762501497434.json");
    let claude = convert_request(OpenAi, Claude, &original, "c").unwrap();
    let back = convert_request(Claude, OpenAi, &claude, "m").unwrap();
    // consecutive user messages were merged (Claude requires alternation); texts survive in order
    let texts = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| match &m["content"] {
                Value::String(s) => vec![s.trim().to_string()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|p| p["text"].as_str().map(|t| t.trim().to_string()))
                    .collect(),
                _ => vec![],
            })
            .filter(|t| !t.is_empty())
            .collect()
    };
    assert_eq!(texts(&back), texts(&original));
    assert_eq!(back["tools"].as_array().unwrap().len(), 6);
    for (b, o) in back["tools"]
        .as_array()
        .unwrap()
        .iter()
        .zip(original["tools"].as_array().unwrap())
    {
        assert_eq!(b["function"]["name"], o["function"]["name"]);
        assert_eq!(b["function"]["parameters"], o["function"]["parameters"]);
    }
}

#[test]
fn claude_round_trips_through_openai() {
    let original = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 2048, "system": "sys",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "res"},
                {"type": "text", "text": "next"}]}
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}]
    });
    for via in [OpenAi, OpenAiResponses, Gemini] {
        let mid = convert_request(Claude, via, &original, "m").unwrap();
        let back = convert_request(via, Claude, &mid, "claude-sonnet-4-5").unwrap();
        assert_eq!(back["system"], original["system"], "via {via:?}");
        assert_eq!(back["tools"], original["tools"], "via {via:?}");
        assert_eq!(back["max_tokens"], 2048);
        let msgs = back["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][1]["name"], "f");
        assert_eq!(msgs[1]["content"][1]["input"], json!({"a": 1}));
        assert_eq!(
            msgs[2]["content"][0]["tool_use_id"],
            msgs[1]["content"][1]["id"]
        );
        assert_eq!(msgs[2]["content"][0]["content"], "res");
        assert_eq!(msgs[2]["content"][1]["text"], "next");
        if via != Gemini {
            assert_eq!(back["messages"], original["messages"], "via {via:?}");
        }
    }
}

#[test]
fn responses_round_trip_keeps_content() {
    let protos: [Protocol; 3] = [OpenAi, Claude, Gemini];
    let original = json!({
        "model": "gpt-5", "id": "resp_x", "status": "completed", "object": "response",
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"}
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    });
    for via in protos {
        let mid = convert_response(OpenAiResponses, via, &original, "m").unwrap();
        let back = convert_response(via, OpenAiResponses, &mid, "m").unwrap();
        let output = back["output"].as_array().unwrap();
        assert_eq!(output[0]["content"][0]["text"], "hello", "via {via:?}");
        assert_eq!(output[1]["name"], "f");
        assert_eq!(output[1]["arguments"], "{\"a\":1}");
        assert_eq!(output[1]["call_id"], "call_1", "via {via:?}");
        assert_eq!(back["usage"]["input_tokens"], 3);
        assert_eq!(back["usage"]["output_tokens"], 4);
        assert_eq!(back["usage"]["total_tokens"], 7);
    }
}

#[test]
fn thought_signatures_survive_gemini_claude_gemini() {
    let sig = "Q2lBQnVkZ2V0U2lnbmF0dXJlRm9yVGhlR2VtaW5pTW9kZWxUaGF0SXNMb25nRW5vdWdo";
    let g = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "thinking...", "thought": true, "thoughtSignature": sig}, {"text": "answer"}]}, "finishReason": "STOP"}]});
    let c = convert_response(Gemini, Claude, &g, "m").unwrap();
    assert_eq!(c["content"][0]["signature"], sig);
    // The Claude client sends the turn back in its history.
    let req = json!({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": c["content"].clone()},
        {"role": "user", "content": "more"}]});
    let back = convert_request(Claude, Gemini, &req, "gemini-2.5-pro").unwrap();
    assert_eq!(
        back["contents"][1]["parts"][0]["thoughtSignature"], sig,
        "opaque, unchanged"
    );
}
