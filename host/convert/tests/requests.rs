//! Request conversion in every direction, using the captured vectors where they exist and a
//! Claude-Code-like synthetic request for Claude (the Claude request captures were withheld).

mod common;

use aiclient_convert::Protocol::{self, *};
use aiclient_convert::convert_request;
use common::*;
use serde_json::{Value, json};

const OPENAI_CODEX: &str = "openai/originalRequestBody1762501497434.json";
const OPENAI_KILO: &str = "openai/originalRequestBody1762501665376.json";
const GEMINI_KILO: &str = "gemini/originalRequestBody1762502075001.json";
const GEMINI_SMALL: &str = "gemini/originalRequestBody1762502375803.json";
const RESPONSES_CODEX: &str = "openaiResponses/originalRequestBody1762500856556.json";

pub fn claude_code_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."}
        ],
        "tools": [
            {"name": "Bash", "description": "Run a command", "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command"},
                    "url": {"type": "string", "format": "uri"},
                    "timeout": {"type": ["number", "null"]}
                },
                "required": ["command"],
                "additionalProperties": false
            }},
            {"name": "Read", "description": "Read a file", "input_schema": {
                "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]
            }}
        ],
        "messages": [
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should list.", "signature": "sig-claude-0123456789-0123456789-0123456789-0123456789"},
                {"type": "text", "text": "I'll run two commands."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_02", "name": "Read", "input": {"file_path": "a.txt"}, "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.txt\nb.txt"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "hello"}]},
                {"type": "text", "text": "thanks, now summarise"}
            ]}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "temperature": 1,
        "stop_sequences": ["END"],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "someone"}
    })
}

fn roles(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

fn assert_alternates(messages: &Value) {
    let r = roles(messages);
    for w in r.windows(2) {
        assert_ne!(w[0], w[1], "roles must alternate: {r:?}");
    }
}

// ----- OpenAI client --------------------------------------------------------------------------

#[test]
fn openai_codex_request_to_claude() {
    let body = vector(OPENAI_CODEX);
    let out = convert_request(OpenAi, Claude, &body, "claude-sonnet-4-5").unwrap();
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert!(
        out["system"]
            .as_str()
            .unwrap()
            .starts_with("You are a coding agent running in the Codex CLI")
    );
    assert_eq!(out["stream"], true);
    assert_alternates(&out["messages"]);
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "user");
    // The two leading user messages are merged into one turn.
    assert_eq!(msgs[0]["content"].as_array().unwrap().len(), 2);
    // assistant tool call with invalid arguments → object input (fallback `{}`)
    let tool_use = msgs
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool_use["id"], "call_c029a339855f4f9bbf083497");
    assert_eq!(tool_use["name"], "shell");
    assert_eq!(tool_use["input"], json!({}));
    // tool result is inside a user turn, first in it
    let result_turn = msgs
        .iter()
        .find(|m| {
            m["content"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["type"] == "tool_result")
        })
        .unwrap();
    assert_eq!(result_turn["role"], "user");
    assert_eq!(result_turn["content"][0]["type"], "tool_result");
    assert_eq!(
        result_turn["content"][0]["tool_use_id"],
        "call_c029a339855f4f9bbf083497"
    );
    assert!(
        result_turn["content"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("failed to parse")
    );
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 6);
    assert_eq!(tools[0]["name"], "shell");
    assert_eq!(tools[0]["input_schema"]["type"], "object");
    assert!(tools[0]["input_schema"]["properties"]["command"].is_object());
    assert_eq!(
        out["max_tokens"], 32000,
        "Claude needs max_tokens: documented default"
    );
}

#[test]
fn openai_codex_request_to_gemini() {
    let body = vector(OPENAI_CODEX);
    let out = convert_request(OpenAi, Gemini, &body, "gemini-2.5-pro").unwrap();
    assert!(out.get("model").is_none(), "Gemini model goes in the URL");
    assert!(
        out["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("You are a coding agent")
    );
    let contents = out["contents"].as_array().unwrap();
    for c in contents {
        assert!(c["role"] == "user" || c["role"] == "model");
    }
    let parts: Vec<&Value> = contents
        .iter()
        .flat_map(|c| c["parts"].as_array().unwrap())
        .collect();
    let calls: Vec<&&Value> = parts
        .iter()
        .filter(|p| p.get("functionCall").is_some())
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["functionCall"]["name"], "shell");
    assert_eq!(calls[0]["functionCall"]["args"], json!({}));
    assert_eq!(
        calls[0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    let responses: Vec<&&Value> = parts
        .iter()
        .filter(|p| p.get("functionResponse").is_some())
        .collect();
    assert_eq!(responses.len(), 1, "each tool result sent once");
    assert_eq!(
        responses[0]["functionResponse"]["name"], "shell",
        "name paired via tool_call_id"
    );
    // The functionResponse turn directly follows the functionCall turn.
    let call_turn = contents
        .iter()
        .position(|c| c["parts"][0].get("functionCall").is_some())
        .unwrap();
    assert_eq!(contents[call_turn]["role"], "model");
    assert!(
        contents[call_turn + 1]["parts"][0]
            .get("functionResponse")
            .is_some()
    );
    let decls = out["tools"][0]["functionDeclarations"].as_array().unwrap();
    assert_eq!(decls.len(), 6);
    let shell = &decls[0];
    assert_eq!(shell["name"], "shell");
    let params = &shell["parameters"];
    assert!(
        params.get("additionalProperties").is_none(),
        "additionalProperties stripped"
    );
    assert_eq!(params["type"], "OBJECT");
    assert_eq!(params["properties"]["command"]["type"], "ARRAY");
    assert_eq!(params["properties"]["command"]["items"]["type"], "STRING");
    assert_eq!(params["required"], json!(["command"]));
    assert_eq!(out["safetySettings"].as_array().unwrap().len(), 5);
}

#[test]
fn openai_codex_request_to_responses() {
    let body = vector(OPENAI_CODEX);
    let out = convert_request(OpenAi, OpenAiResponses, &body, "gpt-5").unwrap();
    assert_eq!(out["model"], "gpt-5");
    assert!(
        out["instructions"]
            .as_str()
            .unwrap()
            .starts_with("You are a coding agent")
    );
    let input = out["input"].as_array().unwrap();
    let call = input.iter().find(|i| i["type"] == "function_call").unwrap();
    assert_eq!(call["call_id"], "call_c029a339855f4f9bbf083497");
    assert_eq!(call["arguments"], "{}");
    let output = input
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .unwrap();
    assert_eq!(output["call_id"], "call_c029a339855f4f9bbf083497");
    assert!(output["output"].is_string());
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["name"], "shell");
    assert_eq!(out["stream"], true);
}

#[test]
fn openai_kilo_request_to_claude() {
    let body = vector(OPENAI_KILO);
    let out = convert_request(OpenAi, Claude, &body, "claude-sonnet-4-5").unwrap();
    assert!(
        out.get("system").is_none(),
        "no system role in the request → no system"
    );
    assert!(out.get("stream").is_none(), "no stream key → none sent");
    assert_alternates(&out["messages"]);
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "user");
    // system prompt sent as a user string + the following user array of 3 text parts (merged)
    let first = msgs[0]["content"].as_array().unwrap();
    assert!(
        first[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("You are Kilo Code")
    );
    assert_eq!(first.len(), 1 + 3);
    assert!(first.iter().all(|b| b["type"] == "text"));
    // `<thinking>` inside assistant text stays text in requests
    let assistant = msgs.iter().find(|m| m["role"] == "assistant").unwrap();
    let text = assistant["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("<thinking>"));
    assert_eq!(assistant["content"][0]["type"], "text");
}

#[test]
fn openai_kilo_request_to_gemini_and_responses() {
    let body = vector(OPENAI_KILO);
    let g = convert_request(OpenAi, Gemini, &body, "gemini-2.5-flash").unwrap();
    assert!(g.get("systemInstruction").is_none());
    assert_eq!(g["contents"][0]["role"], "user");
    assert_eq!(g["contents"][0]["parts"].as_array().unwrap().len(), 4);
    let r = convert_request(OpenAi, OpenAiResponses, &body, "gpt-5").unwrap();
    assert!(r.get("instructions").is_none());
    assert_eq!(r["input"][0]["role"], "user");
    assert_eq!(r["input"][0]["content"][0]["type"], "input_text");
}

// ----- Gemini client --------------------------------------------------------------------------

#[test]
fn gemini_kilo_request_to_openai() {
    let body = vector(GEMINI_KILO);
    let out = convert_request(Gemini, OpenAi, &body, "gpt-4.1").unwrap();
    assert_eq!(out["model"], "gpt-4.1", "model injected from the URL");
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are Kilo Code")
    );
    assert_eq!(
        roles(&out["messages"]),
        ["system", "user", "assistant", "user"]
    );
    // multi-part user content stays an array of text parts
    let user = msgs[1]["content"].as_array().unwrap();
    assert_eq!(user.len(), 2);
    assert!(user.iter().all(|p| p["type"] == "text"));
    assert!(msgs[2]["content"].is_string());
    // generationConfig is mapped (upstream ignored it)
    assert_eq!(out["max_tokens"], 8192);
    assert_eq!(out["temperature"], 1);
    assert!(out.get("top_p").is_none());
}

#[test]
fn gemini_kilo_request_to_claude() {
    let body = vector(GEMINI_KILO);
    let out = convert_request(Gemini, Claude, &body, "claude-sonnet-4-5").unwrap();
    assert!(
        out["system"]
            .as_str()
            .unwrap()
            .starts_with("You are Kilo Code")
    );
    assert_eq!(out["max_tokens"], 8192);
    assert_eq!(out["temperature"], 1);
    assert_eq!(roles(&out["messages"]), ["user", "assistant", "user"]);
    assert_eq!(out["model"], "claude-sonnet-4-5");
}

#[test]
fn gemini_kilo_request_to_responses() {
    let body = vector(GEMINI_KILO);
    let out = convert_request(Gemini, OpenAiResponses, &body, "gpt-5").unwrap();
    assert!(
        out["instructions"]
            .as_str()
            .unwrap()
            .starts_with("You are Kilo Code")
    );
    assert_eq!(out["max_output_tokens"], 8192);
    let input = out["input"].as_array().unwrap();
    assert_eq!(input.len(), 3);
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[1]["content"][0]["type"], "output_text");
}

#[test]
fn gemini_small_request_keeps_top_p_one_and_thinking() {
    let body = vector(GEMINI_SMALL);
    let o = convert_request(Gemini, OpenAi, &body, "gpt-5").unwrap();
    assert_eq!(o["top_p"], 1, "topP 1 survives");
    assert_eq!(o["temperature"], 1);
    assert_eq!(o["messages"][0]["role"], "system");
    assert_eq!(o["messages"][1]["content"], "更新readme，写入一行随机数");
    let r = convert_request(Gemini, OpenAiResponses, &body, "gpt-5").unwrap();
    assert_eq!(r["top_p"], 1);
    let c = convert_request(Gemini, Claude, &body, "claude-sonnet-4-5").unwrap();
    // includeThoughts asks for visible thinking → Claude thinking with the default budget.
    assert_eq!(c["thinking"]["type"], "enabled");
    assert!(c["thinking"]["budget_tokens"].as_u64().unwrap() >= 1024);
    assert!(c["max_tokens"].as_u64().unwrap() > c["thinking"]["budget_tokens"].as_u64().unwrap());
    // Claude rejects temperature and top_p together: temperature (1, allowed with thinking) wins.
    assert_eq!(c["temperature"], 1);
    assert!(c.get("top_p").is_none());
}

// ----- Responses client -----------------------------------------------------------------------

fn call_ids_in_order(body: &Value) -> Vec<String> {
    body["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call")
        .map(|i| i["call_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn responses_codex_request_to_openai() {
    let body = vector(RESPONSES_CODEX);
    let ids = call_ids_in_order(&body);
    let out = convert_request(OpenAiResponses, OpenAi, &body, "gpt-5").unwrap();
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(out["stream"], true);
    assert_eq!(out["reasoning_effort"], "high");
    assert_eq!(out["parallel_tool_calls"], false);
    // calls and outputs paired by call_id: each assistant tool_calls message followed by its tool message
    let mut seen = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if let Some(calls) = m["tool_calls"].as_array() {
            for c in calls {
                let id = c["id"].as_str().unwrap().to_string();
                assert_eq!(msgs[i + 1]["role"], "tool");
                assert_eq!(msgs[i + 1]["tool_call_id"], id.as_str());
                seen.push(id);
            }
        }
        assert!(
            m.get("type").is_none() || m["type"] != "reasoning",
            "reasoning items dropped"
        );
    }
    assert_eq!(seen, ids);
    // function tools + the custom apply_patch tool as a function with an `input` string
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 7);
    let patch = tools
        .iter()
        .find(|t| t["function"]["name"] == "apply_patch")
        .unwrap();
    assert_eq!(
        patch["function"]["parameters"]["properties"]["input"]["type"],
        "string"
    );
    assert_eq!(out["tool_choice"], "auto");
}

#[test]
fn responses_codex_request_to_claude() {
    let body = vector(RESPONSES_CODEX);
    let ids = call_ids_in_order(&body);
    let out = convert_request(OpenAiResponses, Claude, &body, "claude-sonnet-4-5").unwrap();
    assert!(out["system"].as_str().unwrap().len() > 1000);
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 20000})
    );
    assert!(out["max_tokens"].as_u64().unwrap() > 20000);
    assert_alternates(&out["messages"]);
    let msgs = out["messages"].as_array().unwrap();
    let mut uses = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        for b in m["content"].as_array().unwrap() {
            if b["type"] == "tool_use" {
                let id = b["id"].as_str().unwrap().to_string();
                let next = msgs[i + 1]["content"].as_array().unwrap();
                assert!(
                    next.iter()
                        .any(|r| r["type"] == "tool_result" && r["tool_use_id"] == id.as_str())
                );
                assert!(b["input"]["command"].is_array());
                uses.push(id);
            }
            assert_ne!(
                b["type"], "thinking",
                "reasoning items (unsigned) are dropped"
            );
        }
    }
    assert_eq!(uses, ids);
    assert_eq!(out["tools"].as_array().unwrap().len(), 7);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
}

#[test]
fn responses_codex_request_to_gemini() {
    let body = vector(RESPONSES_CODEX);
    let out = convert_request(OpenAiResponses, Gemini, &body, "gemini-2.5-pro").unwrap();
    assert!(
        out["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .len()
            > 1000
    );
    let contents = out["contents"].as_array().unwrap();
    let mut calls = 0;
    for (i, c) in contents.iter().enumerate() {
        let parts = c["parts"].as_array().unwrap();
        let fc: Vec<&Value> = parts.iter().filter_map(|p| p.get("functionCall")).collect();
        if !fc.is_empty() {
            calls += fc.len();
            let fr: Vec<&Value> = contents[i + 1]["parts"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.get("functionResponse"))
                .collect();
            assert_eq!(fr.len(), fc.len());
            assert_eq!(
                fr[0]["name"], fc[0]["name"],
                "functionResponse named after its call"
            );
        }
    }
    assert_eq!(calls, 3);
    let decls = out["tools"][0]["functionDeclarations"].as_array().unwrap();
    for d in decls {
        if let Some(p) = d.get("parameters") {
            assert!(p.get("additionalProperties").is_none());
        }
    }
    assert_eq!(
        out["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 24576, "includeThoughts": true})
    );
}

// ----- Claude client --------------------------------------------------------------------------

#[test]
fn claude_request_to_openai() {
    let out = convert_request(Claude, OpenAi, &claude_code_request(), "deepseek-reasoner").unwrap();
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(
        msgs[0],
        json!({"role": "system", "content": "You are Claude Code.\nBe brief."})
    );
    assert_eq!(
        roles(&out["messages"]),
        ["system", "user", "assistant", "tool", "tool", "user"]
    );
    let asst = &msgs[2];
    assert_eq!(
        asst["content"], "I'll run two commands.",
        "text kept next to tool calls"
    );
    assert_eq!(asst["reasoning_content"], "I should list.");
    let calls = asst["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "every tool_use kept");
    assert_eq!(calls[1]["id"], "toolu_02");
    assert_eq!(
        calls[1]["function"]["arguments"],
        "{\"file_path\":\"a.txt\"}"
    );
    assert_eq!(msgs[3]["tool_call_id"], "toolu_01");
    assert_eq!(msgs[4]["content"], "hello");
    assert_eq!(
        msgs[5]["content"], "thanks, now summarise",
        "text next to tool_result kept"
    );
    assert_eq!(out["reasoning_effort"], "medium");
    assert_eq!(out["max_completion_tokens"], 32000);
    assert_eq!(out["stop"], json!(["END"]));
    assert_eq!(out["tool_choice"], "auto");
    let params = &out["tools"][0]["function"]["parameters"];
    assert!(params.get("$schema").is_none());
    assert_eq!(
        params["additionalProperties"], false,
        "other keywords kept for OpenAI"
    );
    assert_eq!(out["stream"], true);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
}

#[test]
fn claude_request_to_gemini() {
    let out = convert_request(Claude, Gemini, &claude_code_request(), "gemini-2.5-pro").unwrap();
    assert_eq!(
        out["systemInstruction"]["parts"][0]["text"],
        "You are Claude Code.\nBe brief."
    );
    let contents = out["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    let model_parts = contents[1]["parts"].as_array().unwrap();
    assert_eq!(model_parts[0]["thought"], true);
    assert!(
        model_parts[0]["thoughtSignature"]
            .as_str()
            .unwrap()
            .starts_with("sig-claude")
    );
    assert_eq!(model_parts[1]["text"], "I'll run two commands.");
    assert_eq!(model_parts[2]["functionCall"]["name"], "Bash");
    let user_parts = contents[2]["parts"].as_array().unwrap();
    assert_eq!(user_parts[0]["functionResponse"]["name"], "Bash");
    assert_eq!(
        user_parts[0]["functionResponse"]["response"]["result"],
        "a.txt\nb.txt"
    );
    assert_eq!(user_parts[1]["functionResponse"]["name"], "Read");
    assert_eq!(user_parts[2]["text"], "thanks, now summarise");
    let gc = &out["generationConfig"];
    assert_eq!(gc["maxOutputTokens"], 32000);
    assert_eq!(gc["temperature"], 1);
    assert_eq!(gc["stopSequences"], json!(["END"]));
    assert_eq!(
        gc["thinkingConfig"],
        json!({"thinkingBudget": 10000, "includeThoughts": true})
    );
    assert_eq!(out["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
    let params = &out["tools"][0]["functionDeclarations"][0]["parameters"];
    assert!(params.get("$schema").is_none());
    assert!(params["properties"]["url"].get("format").is_none());
    assert_eq!(
        params["properties"]["timeout"],
        json!({"type": "NUMBER", "nullable": true})
    );
}

#[test]
fn claude_request_to_responses() {
    let out = convert_request(Claude, OpenAiResponses, &claude_code_request(), "gpt-5").unwrap();
    assert_eq!(out["instructions"], "You are Claude Code.\nBe brief.");
    let kinds: Vec<String> = out["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["role"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "message:user",
            "message:assistant",
            "function_call:",
            "function_call:",
            "function_call_output:",
            "function_call_output:",
            "message:user"
        ]
    );
    assert_eq!(out["reasoning"]["effort"], "medium");
    assert_eq!(out["max_output_tokens"], 32000);
    assert_eq!(out["tool_choice"], "auto");
    assert_eq!(out["tools"][0]["type"], "function");
    assert_eq!(out["tools"][0]["name"], "Bash");
}

// ----- same protocol --------------------------------------------------------------------------

#[test]
fn same_protocol_only_normalises_the_model() {
    let cases: [(Protocol, Value); 4] = [
        (OpenAi, vector(OPENAI_CODEX)),
        (OpenAiResponses, vector(RESPONSES_CODEX)),
        (Claude, claude_code_request()),
        (Gemini, vector(GEMINI_SMALL)),
    ];
    for (p, body) in cases {
        let out = convert_request(p, p, &body, "resolved-model").unwrap();
        let mut expected = body.clone();
        if p == Gemini {
            expected.as_object_mut().unwrap().remove("model");
        } else {
            expected["model"] = json!("resolved-model");
        }
        assert_eq!(out, expected, "{p:?}");
    }
    let mut with_model = vector(GEMINI_SMALL);
    with_model["model"] = json!("x");
    let out = convert_request(Gemini, Gemini, &with_model, "y").unwrap();
    assert!(out.get("model").is_none());
}

#[test]
fn every_cross_direction_accepts_every_request_vector() {
    let sources: [(Protocol, Value); 6] = [
        (OpenAi, vector(OPENAI_CODEX)),
        (OpenAi, vector(OPENAI_KILO)),
        (Gemini, vector(GEMINI_KILO)),
        (Gemini, vector(GEMINI_SMALL)),
        (OpenAiResponses, vector(RESPONSES_CODEX)),
        (Claude, claude_code_request()),
    ];
    for (from, body) in &sources {
        for to in [OpenAi, OpenAiResponses, Claude, Gemini] {
            if to == *from {
                continue;
            }
            let out = convert_request(*from, to, body, "m").unwrap();
            match to {
                OpenAi => assert!(!out["messages"].as_array().unwrap().is_empty()),
                OpenAiResponses => assert!(!out["input"].as_array().unwrap().is_empty()),
                Claude => {
                    assert_alternates(&out["messages"]);
                    for m in out["messages"].as_array().unwrap() {
                        for b in m["content"].as_array().unwrap() {
                            if b["type"] == "text" {
                                assert!(!b["text"].as_str().unwrap().trim().is_empty());
                            }
                        }
                    }
                }
                Gemini => assert!(!out["contents"].as_array().unwrap().is_empty()),
            }
        }
    }
}

#[test]
fn malformed_client_bodies_are_errors_not_panics() {
    let cases = [
        (OpenAi, json!([])),
        (OpenAi, json!({"model": "x"})),
        (OpenAi, json!({"messages": "hi"})),
        (
            OpenAi,
            json!({"messages": [{"role": "user", "content": 5}]}),
        ),
        (
            OpenAi,
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        ),
        (
            Claude,
            json!({"messages": [{"role": "user", "content": {"a": 1}}]}),
        ),
        (Claude, json!({"messages": [1]})),
        (Gemini, json!({"contents": {}})),
        (Gemini, json!({"contents": [{"parts": "x"}]})),
        (OpenAiResponses, json!({"model": "x"})),
        (OpenAiResponses, json!({"input": 3})),
        (OpenAi, json!({"messages": []})),
    ];
    for (p, body) in cases {
        let to = if p == Claude { OpenAi } else { Claude };
        let e = convert_request(p, to, &body, "m").unwrap_err();
        assert!(!e.message.is_empty());
    }
    let e = convert_request(
        OpenAi,
        Claude,
        &json!({"messages": [{"role": "user", "content": 5}]}),
        "m",
    )
    .unwrap_err();
    assert!(e.message.contains("messages[0].content"), "{}", e.message);
}

#[test]
fn system_only_requests_become_a_user_turn() {
    let body = json!({"model": "x", "messages": [{"role": "system", "content": "Summarise: abc"}]});
    for to in [Claude, Gemini, OpenAiResponses] {
        let out = convert_request(OpenAi, to, &body, "m").unwrap();
        assert!(out.to_string().contains("Summarise: abc"), "{to:?}");
        assert!(out.get("system").is_none() && out.get("systemInstruction").is_none());
    }
}
