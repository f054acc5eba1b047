//! Error bodies and events, model lists, token counting.

mod common;

use aiclient_convert::Protocol::*;
use aiclient_convert::{
    ModelEntry, count_tokens, error_body, error_event, model_list, parse_model_list,
};
use common::*;
use serde_json::{Value, json};

#[test]
fn error_bodies_per_protocol() {
    assert_eq!(
        error_body(OpenAi, 429, "slow down"),
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_error"}})
    );
    assert_eq!(
        error_body(OpenAiResponses, 401, "who"),
        json!({"error": {"type": "authentication_error", "message": "who", "code": "authentication_error"}})
    );
    assert_eq!(
        error_body(Claude, 404, "no model"),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "no model"}})
    );
    assert_eq!(
        error_body(Gemini, 403, "nope"),
        json!({"error": {"code": 403, "message": "nope", "status": "PERMISSION_DENIED"}})
    );
    let openai_types = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ];
    for (s, t) in openai_types {
        assert_eq!(error_body(OpenAi, s, "m")["error"]["type"], t);
    }
    // Anthropic's own types, never `server_error`.
    let claude_types = [
        (400, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (s, t) in claude_types {
        assert_eq!(error_body(Claude, s, "m")["error"]["type"], t);
    }
    let gemini_status = [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (418, "UNKNOWN"),
    ];
    for (s, t) in gemini_status {
        assert_eq!(error_body(Gemini, s, "m")["error"]["status"], t);
    }
    // Out-of-range statuses are reported as 500.
    assert_eq!(error_body(Gemini, 42, "m")["error"]["code"], 500);
    assert_eq!(error_body(Gemini, 700, "m")["error"]["status"], "INTERNAL");
}

#[test]
fn error_events_per_protocol() {
    let e = error_event(OpenAi, 500, "boom");
    assert!(e.event.is_none());
    assert_eq!(
        data_json(&e),
        json!({"error": {"message": "boom", "type": "server_error", "code": null}})
    );
    let e = error_event(Claude, 529, "busy");
    assert_eq!(e.event.as_deref(), Some("error"));
    assert_eq!(
        data_json(&e),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    let e = error_event(Gemini, 429, "quota");
    assert!(e.event.is_none());
    assert_eq!(data_json(&e)["error"]["code"], 429);
    let e = error_event(OpenAiResponses, 400, "bad");
    assert_eq!(e.event.as_deref(), Some("error"));
    let d = data_json(&e);
    assert_eq!(d["object"], "error");
    assert!(d["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        d["error"],
        json!({"type": "invalid_request_error", "message": "bad", "code": "invalid_request_error"})
    );
    assert_eq!(e.to_wire(), format!("event: error\ndata: {}\n\n", e.data));
    let wire = error_event(OpenAi, 1, "x").to_wire();
    assert!(wire.starts_with("data: {") && wire.ends_with("}\n\n"));
}

fn entries() -> Vec<ModelEntry> {
    vec![
        ModelEntry {
            id: "gemini-2.5-pro".into(),
            owned_by: "google".into(),
            display_name: Some("Gemini 2.5 Pro".into()),
        },
        ModelEntry {
            id: "claude-sonnet-4-5".into(),
            owned_by: "anthropic".into(),
            display_name: None,
        },
    ]
}

#[test]
fn model_lists_per_protocol() {
    let o = model_list(OpenAi, &entries());
    assert_eq!(o["object"], "list");
    assert_eq!(o["data"][0]["id"], "gemini-2.5-pro");
    assert_eq!(o["data"][0]["object"], "model");
    assert_eq!(o["data"][0]["owned_by"], "google");
    assert!(o["data"][0]["created"].is_u64());
    assert_eq!(
        o["data"][1]["display_name"], "claude-sonnet-4-5",
        "display_name defaults to the id"
    );
    let c = model_list(Claude, &entries());
    assert_eq!(c["data"][1]["type"], "model");
    assert_eq!(c["data"][0]["display_name"], "Gemini 2.5 Pro");
    assert_eq!(c["has_more"], false);
    assert_eq!(c["first_id"], "gemini-2.5-pro");
    assert_eq!(c["last_id"], "claude-sonnet-4-5");
    let g = model_list(Gemini, &entries());
    let m = &g["models"][0];
    assert_eq!(m["name"], "models/gemini-2.5-pro");
    assert_eq!(m["displayName"], "Gemini 2.5 Pro");
    assert!(
        m["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );
    assert!(m["inputTokenLimit"].is_u64() && m["outputTokenLimit"].is_u64());
    assert_eq!(model_list(OpenAi, &[])["data"], json!([]));
}

#[test]
fn upstream_model_lists_are_parsed() {
    let gemini = json!({"models": [{"name": "models/gemini-2.5-flash", "displayName": "Flash"}]});
    let e = parse_model_list(Gemini, &gemini, "google");
    assert_eq!(
        e,
        vec![ModelEntry {
            id: "gemini-2.5-flash".into(),
            owned_by: "google".into(),
            display_name: Some("Flash".into())
        }]
    );
    // Anthropic's real shape (`data[]`) and the `models[]` shape some Claude-compatible servers use.
    let anthropic = json!({"data": [{"type": "model", "id": "claude-opus-4-1", "display_name": "Claude Opus 4.1"}], "has_more": false});
    assert_eq!(
        parse_model_list(Claude, &anthropic, "anthropic")[0].id,
        "claude-opus-4-1"
    );
    let compat = json!({"models": [{"name": "claude-x"}]});
    assert_eq!(
        parse_model_list(Claude, &compat, "anthropic")[0].id,
        "claude-x"
    );
    let openai = json!({"object": "list", "data": [{"id": "gpt-4.1", "owned_by": "openai"}]});
    let e = parse_model_list(OpenAi, &openai, "x");
    assert_eq!(e[0].owned_by, "openai");
    assert!(parse_model_list(OpenAi, &json!({"nothing": 1}), "x").is_empty());
}

#[test]
fn count_tokens_estimates_sensibly() {
    let small = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hello, world!"}]});
    let n = count_tokens(Claude, &small);
    assert!((4..=12).contains(&n), "{n}");
    // More text → more tokens; tools count too.
    let mut big = small.clone();
    big["messages"][0]["content"] = json!("word ".repeat(400));
    assert!(count_tokens(Claude, &big) > 400);
    let mut with_tools = small.clone();
    with_tools["tools"] = json!([{"name": "f", "description": "does things", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}]);
    assert!(count_tokens(Claude, &with_tools) > n + 10);
    // CJK text counts about one token per character.
    let cjk = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "更新readme，写入一行随机数"}]});
    assert!(count_tokens(Claude, &cjk) >= 12);
    // Every protocol's body can be counted; an image adds a flat amount.
    assert!(
        count_tokens(
            OpenAi,
            &vector("openai/originalRequestBody1762501497434.json")
        ) > 1000
    );
    assert!(
        count_tokens(
            Gemini,
            &vector("gemini/originalRequestBody1762502075001.json")
        ) > 1000
    );
    assert!(
        count_tokens(
            OpenAiResponses,
            &vector("openaiResponses/originalRequestBody1762500856556.json")
        ) > 1000
    );
    let img = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]});
    assert!(count_tokens(Claude, &img) >= 1600);
    // Unparseable bodies are still estimated, never an error.
    assert!(count_tokens(Claude, &json!({"weird": "x".repeat(100)})) > 20);
    assert_eq!(count_tokens(Claude, &Value::Null), 1);
}
