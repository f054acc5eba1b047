//! Non-stream response conversion in every direction, with the captured vectors and synthetic
//! responses carrying thinking and tool calls.

mod common;

use aiclient_convert::Protocol::{self, *};
use aiclient_convert::convert_response;
use common::*;
use serde_json::{Value, json};

const CLAUDE_RESP: &str = "claude/oldResponse1762501965597.json";
const GEMINI_RESP: &str = "gemini/oldResponse1762502386432.json";
const OPENAI_RESP: &str = "openai/oldResponse1762501667708.json";
const RESPONSES_RESP: &str = "openaiResponses/oldResponse1762502706486.json";

// ----- Claude upstream ------------------------------------------------------------------------

#[test]
fn claude_response_vector_to_openai() {
    let out = convert_response(Claude, OpenAi, &vector(CLAUDE_RESP), "claude-haiku").unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "claude-haiku");
    assert_eq!(out["choices"][0]["finish_reason"], "length");
    assert_eq!(out["choices"][0]["message"]["content"], "I");
    assert_eq!(out["usage"]["prompt_tokens"], 10855);
    assert_eq!(out["usage"]["completion_tokens"], 1);
    assert_eq!(out["usage"]["total_tokens"], 10856);
}

#[test]
fn claude_response_vector_to_gemini_and_responses() {
    let g = convert_response(Claude, Gemini, &vector(CLAUDE_RESP), "m").unwrap();
    assert_eq!(g["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(g["candidates"][0]["content"]["parts"][0]["text"], "I");
    assert_eq!(g["usageMetadata"]["promptTokenCount"], 10855);
    assert_eq!(g["usageMetadata"]["candidatesTokenCount"], 1);
    let r = convert_response(Claude, OpenAiResponses, &vector(CLAUDE_RESP), "m").unwrap();
    assert_eq!(r["object"], "response");
    let texts: Vec<&Value> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["type"], "output_text");
    assert_eq!(texts[0]["text"], "I");
    // max_tokens → incomplete (conversion.md §6.6 Rust note), not a silent `completed`.
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(r["usage"]["input_tokens"], 10855);
}

fn claude_full() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "SIG"},
            {"type": "text", "text": "Running "},
            {"type": "text", "text": "it."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "x"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 50, "output_tokens": 40}
    })
}

#[test]
fn claude_tool_response_to_openai() {
    let out = convert_response(Claude, OpenAi, &claude_full(), "m").unwrap();
    let msg = &out["choices"][0]["message"];
    assert_eq!(
        msg["content"], "Running it.",
        "text blocks concatenated into a string"
    );
    assert_eq!(msg["reasoning_content"], "Let me think.");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["arguments"], "{\"command\":\"ls\"}");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    // prompt tokens include cache reads and writes
    assert_eq!(out["usage"]["prompt_tokens"], 100 + 900 + 50);
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 900);
    assert_eq!(out["usage"]["total_tokens"], 1050 + 40);
}

#[test]
fn claude_tool_response_to_gemini() {
    let out = convert_response(Claude, Gemini, &claude_full(), "m").unwrap();
    let parts = out["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(
        parts[0],
        json!({"text": "Let me think.", "thought": true, "thoughtSignature": "SIG"})
    );
    assert_eq!(
        parts[3]["functionCall"],
        json!({"id": "toolu_1", "name": "Bash", "args": {"command": "ls"}})
    );
    assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    assert_eq!(out["usageMetadata"]["cachedContentTokenCount"], 900);
    assert_eq!(out["usageMetadata"]["promptTokenCount"], 1050);
}

#[test]
fn claude_tool_response_to_responses() {
    let out = convert_response(Claude, OpenAiResponses, &claude_full(), "m").unwrap();
    let kinds: Vec<&str> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(out["output"][1]["content"][0]["text"], "Running it.");
    assert_eq!(out["output"][2]["call_id"], "toolu_1");
    assert_eq!(out["output"][2]["arguments"], "{\"command\":\"ls\"}");
    assert_eq!(out["status"], "completed");
    assert_eq!(out["usage"]["input_tokens_details"]["cached_tokens"], 900);
}

// ----- Gemini upstream ------------------------------------------------------------------------

#[test]
fn gemini_response_vector_to_openai_keeps_source_total() {
    let out = convert_response(Gemini, OpenAi, &vector(GEMINI_RESP), "gemini-2.5-pro").unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(
        out["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("好的")
    );
    let u = &out["usage"];
    assert_eq!(u["prompt_tokens"], 106);
    assert_eq!(u["completion_tokens"], 821);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 747);
    assert_eq!(
        u["total_tokens"], 1674,
        "total kept from the source, not prompt+completion"
    );
}

#[test]
fn gemini_response_vector_to_claude_and_responses() {
    let c = convert_response(Gemini, Claude, &vector(GEMINI_RESP), "m").unwrap();
    let content = c["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "text");
    assert_eq!(c["stop_reason"], "end_turn");
    assert_eq!(c["usage"]["input_tokens"], 106);
    assert_eq!(
        c["usage"]["output_tokens"],
        821 + 747,
        "thinking tokens are output tokens"
    );
    let r = convert_response(Gemini, OpenAiResponses, &vector(GEMINI_RESP), "m").unwrap();
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"].as_array().unwrap().len(), 1);
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 747);
    assert_eq!(r["usage"]["total_tokens"], 1674);
}

fn gemini_full() -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Considering.", "thought": true, "thoughtSignature": "R0VNSU5JU0lH"},
                {"text": "Calling tools."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}, "id": "fc-2"}}
            ]},
            "finishReason": "STOP"
        }],
        "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 20, "thoughtsTokenCount": 10, "totalTokenCount": 80, "cachedContentTokenCount": 30},
        "responseId": "abc"
    })
}

#[test]
fn gemini_tool_response_to_openai() {
    let out = convert_response(Gemini, OpenAi, &gemini_full(), "m").unwrap();
    let msg = &out["choices"][0]["message"];
    assert_eq!(
        msg["content"], "Calling tools.",
        "thought parts are not content"
    );
    assert_eq!(msg["reasoning_content"], "Considering.");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[1]["id"], "fc-2");
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
}

#[test]
fn gemini_tool_response_to_claude() {
    let out = convert_response(Gemini, Claude, &gemini_full(), "m").unwrap();
    let content = out["content"].as_array().unwrap();
    let kinds: Vec<&str> = content
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "tool_use"]);
    // The signature is opaque: passed through, never decoded.
    assert_eq!(content[0]["signature"], "R0VNSU5JU0lH");
    assert_eq!(content[2]["input"], json!({"city": "Paris"}));
    assert_eq!(out["stop_reason"], "tool_use");
    // Claude input excludes cache reads.
    assert_eq!(out["usage"]["input_tokens"], 20);
    assert_eq!(out["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(out["usage"]["output_tokens"], 30);
}

#[test]
fn gemini_tool_response_to_responses() {
    let out = convert_response(Gemini, OpenAiResponses, &gemini_full(), "m").unwrap();
    let kinds: Vec<&str> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(out["output"][1]["content"][0]["text"], "Calling tools.");
    assert_eq!(out["output"][3]["call_id"], "fc-2");
}

#[test]
fn gemini_code_assist_envelope_is_unwrapped() {
    let wrapped = json!({"response": gemini_full(), "traceId": "t"});
    let out = convert_response(Gemini, OpenAi, &wrapped, "m").unwrap();
    assert_eq!(
        out["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

// ----- OpenAI upstream ------------------------------------------------------------------------

#[test]
fn openai_sloppy_response_vector_to_claude() {
    let out = convert_response(OpenAi, Claude, &vector(OPENAI_RESP), "glm").unwrap();
    let content = out["content"].as_array().unwrap();
    assert_eq!(
        content.len(),
        1,
        "empty reasoning_content creates no thinking block"
    );
    assert_eq!(content[0]["type"], "text");
    let text = content[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("现在我需要"),
        "surrounding whitespace trimmed"
    );
    assert!(text.ends_with("</execute_command>"));
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["usage"]["input_tokens"], 40076);
    assert_eq!(out["usage"]["output_tokens"], 76);
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out["type"], "message");
    assert_eq!(out["stop_sequence"], Value::Null);
}

#[test]
fn openai_sloppy_response_vector_to_gemini_and_responses() {
    let g = convert_response(OpenAi, Gemini, &vector(OPENAI_RESP), "m").unwrap();
    assert_eq!(g["candidates"][0]["finishReason"], "STOP");
    assert!(
        g["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("execute_command")
    );
    assert_eq!(g["usageMetadata"]["promptTokenCount"], 40076);
    assert_eq!(g["usageMetadata"]["totalTokenCount"], 40152);
    let r = convert_response(OpenAi, OpenAiResponses, &vector(OPENAI_RESP), "m").unwrap();
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["usage"]["input_tokens"], 40076);
    assert_eq!(r["usage"]["output_tokens"], 76);
    assert_eq!(r["usage"]["total_tokens"], 40152);
}

fn openai_full() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "deepseek",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "Need a tool.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}},
                {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":dir}"}}
            ]
        }}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 20}}
    })
}

#[test]
fn openai_tool_response_to_claude_orders_thinking_text_tools() {
    let out = convert_response(OpenAi, Claude, &openai_full(), "m").unwrap();
    let content = out["content"].as_array().unwrap();
    let kinds: Vec<&str> = content
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "tool_use"]);
    assert_eq!(content[2]["input"], json!({"command": ["ls"]}));
    assert_eq!(
        content[3]["input"],
        json!({}),
        "invalid JSON arguments → {{}}"
    );
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["usage"]["input_tokens"], 40);
    assert_eq!(out["usage"]["cache_read_input_tokens"], 60);
}

#[test]
fn openai_tool_response_to_gemini() {
    let out = convert_response(OpenAi, Gemini, &openai_full(), "m").unwrap();
    let parts = out["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0], json!({"text": "Need a tool.", "thought": true}));
    assert_eq!(parts[1]["text"], "Let me check.");
    assert_eq!(parts[3]["functionCall"]["args"], json!({}));
    let u = &out["usageMetadata"];
    assert_eq!(
        u["candidatesTokenCount"], 30,
        "reasoning split out of candidates"
    );
    assert_eq!(u["thoughtsTokenCount"], 20);
    assert_eq!(u["totalTokenCount"], 150);
}

#[test]
fn openai_tool_response_to_responses() {
    let out = convert_response(OpenAi, OpenAiResponses, &openai_full(), "m").unwrap();
    let kinds: Vec<&str> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(out["output"][2]["call_id"], "call_1");
    assert_eq!(out["output"][2]["status"], "completed");
    assert_eq!(
        out["usage"]["output_tokens_details"]["reasoning_tokens"],
        20
    );
}

// ----- Responses upstream ---------------------------------------------------------------------

#[test]
fn responses_vector_to_openai_claude_gemini() {
    let body = vector(RESPONSES_RESP);
    let o = convert_response(OpenAiResponses, OpenAi, &body, "gpt-4.1").unwrap();
    assert_eq!(o["choices"].as_array().unwrap().len(), 1);
    assert_eq!(o["choices"][0]["finish_reason"], "stop");
    assert!(
        o["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("在一个宁静的月夜下")
    );
    assert_eq!(o["usage"]["prompt_tokens"], 36);
    assert_eq!(o["usage"]["completion_tokens"], 87);
    assert_eq!(o["usage"]["total_tokens"], 123);
    let c = convert_response(OpenAiResponses, Claude, &body, "m").unwrap();
    assert_eq!(c["content"].as_array().unwrap().len(), 1);
    assert_eq!(c["content"][0]["type"], "text");
    assert_eq!(c["stop_reason"], "end_turn");
    let g = convert_response(OpenAiResponses, Gemini, &body, "m").unwrap();
    assert_eq!(g["candidates"][0]["finishReason"], "STOP");
    assert_eq!(g["usageMetadata"]["totalTokenCount"], 123);
}

fn responses_full() -> Value {
    json!({
        "id": "resp_1", "object": "response", "created_at": 5, "status": "completed", "model": "gpt-5",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Doing it"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_10", "name": "apply_patch", "input": "*** Begin Patch"}
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    })
}

#[test]
fn responses_tool_response_to_openai_is_one_choice() {
    let out = convert_response(OpenAiResponses, OpenAi, &responses_full(), "m").unwrap();
    assert_eq!(out["choices"].as_array().unwrap().len(), 1);
    let msg = &out["choices"][0]["message"];
    assert_eq!(msg["content"], "Doing it");
    assert_eq!(msg["reasoning_content"], "Plan");
    assert_eq!(msg["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        msg["tool_calls"][1]["function"]["arguments"],
        "{\"input\":\"*** Begin Patch\"}"
    );
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn responses_tool_response_to_claude_and_gemini() {
    let c = convert_response(OpenAiResponses, Claude, &responses_full(), "m").unwrap();
    let kinds: Vec<&str> = c["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "tool_use"]);
    assert_eq!(c["content"][2]["id"], "call_9");
    assert_eq!(c["stop_reason"], "tool_use");
    let g = convert_response(OpenAiResponses, Gemini, &responses_full(), "m").unwrap();
    let parts = g["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[2]["functionCall"]["args"], json!({"command": ["ls"]}));
}

#[test]
fn same_protocol_responses_are_unchanged() {
    let cases: [(Protocol, Value); 4] = [
        (OpenAi, vector(OPENAI_RESP)),
        (Claude, vector(CLAUDE_RESP)),
        (Gemini, vector(GEMINI_RESP)),
        (OpenAiResponses, vector(RESPONSES_RESP)),
    ];
    for (p, body) in cases {
        assert_eq!(convert_response(p, p, &body, "other").unwrap(), body);
    }
}

#[test]
fn responses_in_every_direction_from_every_vector() {
    let sources: [(Protocol, Value); 8] = [
        (OpenAi, vector(OPENAI_RESP)),
        (OpenAi, openai_full()),
        (Claude, vector(CLAUDE_RESP)),
        (Claude, claude_full()),
        (Gemini, vector(GEMINI_RESP)),
        (Gemini, gemini_full()),
        (OpenAiResponses, vector(RESPONSES_RESP)),
        (OpenAiResponses, responses_full()),
    ];
    for (from, body) in &sources {
        for to in [OpenAi, OpenAiResponses, Claude, Gemini] {
            let out = convert_response(*from, to, body, "m").unwrap();
            assert!(out.is_object());
            if to != *from && to != Gemini {
                assert_eq!(
                    out["model"], "m",
                    "converted responses report the resolved model"
                );
            }
        }
    }
    for from in [OpenAi, Claude, Gemini, OpenAiResponses] {
        let to = if from == Claude { OpenAi } else { Claude };
        assert!(convert_response(from, to, &json!("nope"), "m").is_err());
        // Empty objects are tolerated (empty content, stop).
        assert!(convert_response(from, to, &json!({}), "m").is_ok());
    }
}
