//! One regression test per upstream bug (⚠) listed in conversion.md: each asserts the correct
//! behaviour the port implements instead of the upstream quirk.

mod common;

use aiclient_convert::Protocol::*;
use aiclient_convert::{StreamConverter, convert_request, convert_response};
use common::*;
use serde_json::{Value, json};

fn chat(messages: Value) -> Value {
    json!({"model": "x", "messages": messages})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

// ----- §2.1 defaults and numbers ----------------------------------------------------------------

#[test]
fn temperature_zero_stays_zero_everywhere() {
    let body = json!({"model": "x", "messages": [user("hi")], "temperature": 0, "top_p": 0, "max_tokens": 0});
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    assert_eq!(c["temperature"], 0);
    assert_eq!(
        c["max_tokens"], 0,
        "an explicit 0 is the client's choice, not 'unset'"
    );
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    assert_eq!(g["generationConfig"]["temperature"], 0);
    assert_eq!(g["generationConfig"]["topP"], 0);
    assert_eq!(g["generationConfig"]["maxOutputTokens"], 0);
    let r = convert_request(OpenAi, OpenAiResponses, &body, "m").unwrap();
    assert_eq!(r["temperature"], 0);
    let claude =
        json!({"model": "x", "max_tokens": 10, "messages": [user("hi")], "temperature": 0});
    assert_eq!(
        convert_request(Claude, OpenAi, &claude, "m").unwrap()["temperature"],
        0
    );
    let gem = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"temperature": 0}});
    assert_eq!(
        convert_request(Gemini, OpenAi, &gem, "m").unwrap()["temperature"],
        0
    );
    assert_eq!(
        convert_request(Gemini, Claude, &gem, "m").unwrap()["temperature"],
        0
    );
}

#[test]
fn max_completion_tokens_is_used() {
    let body = json!({"model": "x", "messages": [user("hi")], "max_completion_tokens": 777});
    assert_eq!(
        convert_request(OpenAi, Claude, &body, "m").unwrap()["max_tokens"],
        777
    );
    assert_eq!(
        convert_request(OpenAi, Gemini, &body, "m").unwrap()["generationConfig"]["maxOutputTokens"],
        777
    );
}

#[test]
fn claude_never_gets_both_temperature_and_top_p() {
    let body = json!({"model": "x", "messages": [user("hi")], "temperature": 0.3, "top_p": 0.9});
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    assert_eq!(c["temperature"], 0.3);
    assert!(c.get("top_p").is_none());
    // and nothing is invented when the client sent neither
    let c = convert_request(OpenAi, Claude, &chat(json!([user("hi")])), "m").unwrap();
    assert!(c.get("temperature").is_none() && c.get("top_p").is_none());
}

#[test]
fn gemini_generation_config_reaches_openai() {
    let gem = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 100, "temperature": 0.2, "topP": 0.5, "stopSequences": ["X"]}});
    let o = convert_request(Gemini, OpenAi, &gem, "m").unwrap();
    assert_eq!(o["max_tokens"], 100);
    assert_eq!(o["temperature"], 0.2);
    assert_eq!(o["top_p"], 0.5);
    assert_eq!(o["stop"], json!(["X"]));
}

#[test]
fn responses_sampling_reaches_claude() {
    let body = json!({"model": "x", "input": "hi", "temperature": 0.4, "max_output_tokens": 50});
    let c = convert_request(OpenAiResponses, Claude, &body, "m").unwrap();
    assert_eq!(c["temperature"], 0.4);
    assert_eq!(c["max_tokens"], 50);
}

// ----- §2.2 / §9 invalid tool arguments ---------------------------------------------------------

#[test]
fn invalid_tool_arguments_never_become_strings_or_errors() {
    let body = chat(json!([
        user("go"),
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{bad json"}},
            {"id": "c3", "type": "function", "function": {"name": "h", "arguments": "[1,2]"}},
            {"id": "c4", "type": "function", "function": {"name": "k", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        {"role": "tool", "tool_call_id": "c3", "content": "r3"},
        {"role": "tool", "tool_call_id": "c4", "content": "r4"}
    ]));
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    let inputs: Vec<Value> = c["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["input"].clone())
        .collect();
    // truncated JSON is repaired; garbage → {}; non-objects wrapped; empty → {}
    assert_eq!(
        inputs,
        [
            json!({"a": 1}),
            json!({}),
            json!({"value": [1, 2]}),
            json!({})
        ]
    );
    let resp = json!({"model": "x", "input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "not json"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}]});
    assert!(convert_request(OpenAiResponses, Claude, &resp, "m").is_ok());
    assert!(convert_request(OpenAiResponses, Gemini, &resp, "m").is_ok());
    let oa = json!({"choices": [{"message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}, "finish_reason": "tool_calls"}]});
    let g = convert_response(OpenAi, Gemini, &oa, "m").unwrap();
    assert_eq!(
        g["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({})
    );
}

// ----- §2.3 schema cleaning ---------------------------------------------------------------------

#[test]
fn gemini_gets_openapi_parameters_not_mislabelled_json_schema() {
    let body = json!({"model": "x", "messages": [user("hi")], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "$schema": "x", "additionalProperties": false,
            "properties": {"a": {"type": ["string", "null"], "format": "uri", "default": "q"},
                           "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                           "c": {"$ref": "#/$defs/C"}},
            "$defs": {"C": {"type": "object", "properties": {"d": {"type": "boolean"}}}},
            "required": ["a", "zzz"]}}}]});
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    let decl = &g["tools"][0]["functionDeclarations"][0];
    assert!(decl.get("parametersJsonSchema").is_none());
    let p = &decl["parameters"];
    assert_eq!(
        p,
        &json!({"type": "OBJECT", "properties": {
            "a": {"type": "STRING", "nullable": true},
            "b": {"type": "INTEGER", "nullable": true},
            "c": {"type": "OBJECT", "properties": {"d": {"type": "BOOLEAN"}}}
        }, "required": ["a"]})
    );
}

#[test]
fn responses_tools_are_cleaned_for_gemini() {
    let body = json!({"model": "x", "input": "hi", "tools": [{"type": "function", "name": "f",
        "parameters": {"type": "object", "additionalProperties": false, "properties": {"q": {"type": "string"}}}}]});
    let g = convert_request(OpenAiResponses, Gemini, &body, "m").unwrap();
    let p = &g["tools"][0]["functionDeclarations"][0]["parameters"];
    assert!(p.get("additionalProperties").is_none());
    assert_eq!(p["properties"]["q"]["type"], "STRING");
}

#[test]
fn gemini_schemas_are_lowercased_for_claude_and_openai() {
    let gem = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [
        {"name": "f", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "STRING", "nullable": true}}}},
        {"name": "g", "parametersJsonSchema": {"type": "object", "properties": {"y": {"type": "integer"}}}}]}]});
    let c = convert_request(Gemini, Claude, &gem, "m").unwrap();
    assert_eq!(
        c["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {"x": {"type": ["string", "null"]}}})
    );
    assert_eq!(
        c["tools"][1]["input_schema"]["properties"]["y"]["type"], "integer",
        "parametersJsonSchema is read"
    );
    let o = convert_request(Gemini, OpenAi, &gem, "m").unwrap();
    assert_eq!(o["tools"][0]["function"]["parameters"]["type"], "object");
}

// ----- §2.4 thinking ----------------------------------------------------------------------------

#[test]
fn thinking_budgets_map_to_graded_efforts() {
    for (budget, effort) in [(1024, "low"), (8000, "medium"), (32000, "high")] {
        let body = json!({"model": "x", "max_tokens": 64000, "messages": [user("hi")],
            "thinking": {"type": "enabled", "budget_tokens": budget}});
        assert_eq!(
            convert_request(Claude, OpenAi, &body, "m").unwrap()["reasoning_effort"],
            effort
        );
        assert_eq!(
            convert_request(Claude, OpenAiResponses, &body, "m").unwrap()["reasoning"]["effort"],
            effort
        );
    }
}

#[test]
fn openai_reasoning_effort_reaches_claude_and_gemini() {
    let body = json!({"model": "x", "messages": [user("hi")], "reasoning_effort": "low", "max_tokens": 10000});
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    assert_eq!(
        c["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    let g = convert_request(OpenAi, Gemini, &body, "gemini-2.5-flash").unwrap();
    assert_eq!(
        g["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
    let g3 = convert_request(OpenAi, Gemini, &body, "gemini-3-pro-preview").unwrap();
    assert_eq!(
        g3["generationConfig"]["thinkingConfig"]["thinkingLevel"],
        "LOW"
    );
    let old = convert_request(OpenAi, Gemini, &body, "gemini-2.0-flash").unwrap();
    assert!(
        old["generationConfig"].get("thinkingConfig").is_none(),
        "models without thinking get none"
    );
}

#[test]
fn responses_reasoning_effort_reaches_openai_and_gemini() {
    let body = json!({"model": "x", "input": "hi", "reasoning": {"effort": "medium"}});
    assert_eq!(
        convert_request(OpenAiResponses, OpenAi, &body, "m").unwrap()["reasoning_effort"],
        "medium"
    );
    let g = convert_request(OpenAiResponses, Gemini, &body, "gemini-2.5-pro").unwrap();
    assert_eq!(
        g["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        8192
    );
}

#[test]
fn claude_thinking_budget_stays_below_max_tokens() {
    let body = json!({"model": "x", "messages": [user("hi")], "max_tokens": 3000, "reasoning_effort": "high"});
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    assert_eq!(c["max_tokens"], 3000);
    assert_eq!(c["thinking"]["budget_tokens"], 2999);
    let body = json!({"model": "x", "messages": [user("hi")], "max_tokens": 500, "reasoning_effort": "high"});
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    assert!(
        c.get("thinking").is_none(),
        "no budget ≥ 1024 fits under max_tokens 500"
    );
}

// ----- §3.1 OpenAI → Claude ---------------------------------------------------------------------

#[test]
fn remote_image_urls_become_url_sources_for_claude() {
    let body = chat(json!([{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]}]));
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    let blocks = c["messages"][0]["content"].as_array().unwrap();
    assert_eq!(
        blocks[1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}})
    );
    assert_eq!(
        blocks[2]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    let parts = g["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(
        parts[1]["fileData"]["mimeType"], "image/png",
        "mime from the extension, not always jpeg"
    );
    assert_eq!(
        parts[2]["inlineData"],
        json!({"mimeType": "image/png", "data": "AAAA"})
    );
}

#[test]
fn assistant_text_next_to_tool_calls_is_kept() {
    let body = chat(json!([
        user("go"),
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}
    ]));
    let c = convert_request(OpenAi, Claude, &body, "m").unwrap();
    let asst = c["messages"][1]["content"].as_array().unwrap();
    assert_eq!(asst[0], json!({"type": "text", "text": "Let me look."}));
    assert_eq!(asst[1]["type"], "tool_use");
    let r = convert_request(OpenAi, OpenAiResponses, &body, "m").unwrap();
    assert_eq!(r["input"][1]["content"][0]["text"], "Let me look.");
    assert_eq!(r["input"][2]["type"], "function_call");
}

#[test]
fn stop_sequences_are_mapped_in_all_directions() {
    let o = json!({"model": "x", "messages": [user("hi")], "stop": "END"});
    assert_eq!(
        convert_request(OpenAi, Claude, &o, "m").unwrap()["stop_sequences"],
        json!(["END"])
    );
    assert_eq!(
        convert_request(OpenAi, Gemini, &o, "m").unwrap()["generationConfig"]["stopSequences"],
        json!(["END"])
    );
    let c = json!({"model": "x", "max_tokens": 5, "messages": [user("hi")], "stop_sequences": ["A", "B"]});
    assert_eq!(
        convert_request(Claude, OpenAi, &c, "m").unwrap()["stop"],
        json!(["A", "B"])
    );
    assert_eq!(
        convert_request(Claude, Gemini, &c, "m").unwrap()["generationConfig"]["stopSequences"],
        json!(["A", "B"])
    );
    let g = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"stopSequences": ["Z"]}});
    assert_eq!(
        convert_request(Gemini, Claude, &g, "m").unwrap()["stop_sequences"],
        json!(["Z"])
    );
}

// ----- §3.2 OpenAI → Gemini ---------------------------------------------------------------------

#[test]
fn several_system_messages_are_joined_not_last_wins() {
    let body = chat(json!([
        {"role": "system", "content": "A"}, {"role": "developer", "content": "B"}, user("hi")]));
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    assert_eq!(g["systemInstruction"]["parts"][0]["text"], "A\nB");
    assert_eq!(
        convert_request(OpenAi, Claude, &body, "m").unwrap()["system"],
        "A\nB"
    );
}

#[test]
fn tool_results_reach_gemini_once_in_call_order() {
    let body = chat(json!([
        user("go"),
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "first", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "tool", "tool_call_id": "c1", "content": "one"}
    ]));
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    let contents = g["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "one user turn for all results");
    let names: Vec<&str> = contents[2]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["functionResponse"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"]["response"]["result"],
        "one"
    );
}

#[test]
fn required_and_any_tool_choice_become_gemini_any() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}]);
    let body =
        json!({"model": "x", "messages": [user("hi")], "tools": tools, "tool_choice": "required"});
    let g = convert_request(OpenAi, Gemini, &body, "m").unwrap();
    assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
    let c = json!({"model": "x", "max_tokens": 5, "messages": [user("hi")],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"}});
    assert_eq!(
        convert_request(Claude, Gemini, &c, "m").unwrap()["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY"
    );
    let c = json!({"model": "x", "max_tokens": 5, "messages": [user("hi")],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "f"}});
    assert_eq!(
        convert_request(Claude, Gemini, &c, "m").unwrap()["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
    );
}

// ----- §3.3 Claude → OpenAI ---------------------------------------------------------------------

#[test]
fn claude_tool_choice_is_mapped_for_openai() {
    let base = |tc: Value| {
        json!({"model": "x", "max_tokens": 5, "messages": [user("hi")],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": tc})
    };
    let cases = [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ];
    for (tc, expected) in cases {
        assert_eq!(
            convert_request(Claude, OpenAi, &base(tc.clone()), "m").unwrap()["tool_choice"],
            expected
        );
    }
    let r = convert_request(
        Claude,
        OpenAiResponses,
        &base(json!({"type": "tool", "name": "f"})),
        "m",
    )
    .unwrap();
    assert_eq!(
        r["tool_choice"],
        json!({"type": "function", "name": "f"}),
        "Responses shape, not Chat"
    );
}

#[test]
fn orphan_tool_results_and_calls_are_repaired() {
    let body = json!({"model": "x", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "ghost", "content": "lost"}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": "never answered the call"}
    ]});
    let o = convert_request(Claude, OpenAi, &body, "m").unwrap();
    let msgs = o["messages"].as_array().unwrap();
    assert!(
        msgs.iter().all(|m| m["role"] != "tool"),
        "orphan result not sent as a tool message"
    );
    assert!(
        msgs[0]["content"].as_array().unwrap()[0]["text"]
            .as_str()
            .unwrap()
            .contains("lost")
    );
    assert!(
        msgs[1].get("tool_calls").is_none(),
        "unanswered call dropped"
    );
    assert_eq!(msgs[1]["content"], "calling");
}

#[test]
fn claude_tool_result_array_content_keeps_text_not_json() {
    let body = json!({"model": "x", "max_tokens": 5, "messages": [
        user("go"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [{"type": "text", "text": "line1"}, {"type": "text", "text": "line2"}]}]}]});
    let o = convert_request(Claude, OpenAi, &body, "m").unwrap();
    assert_eq!(o["messages"][2]["content"], "line1\nline2");
}

// ----- §3.4 / §3.6 Gemini pairing ---------------------------------------------------------------

#[test]
fn claude_tool_result_name_comes_from_the_call() {
    let body = json!({"model": "x", "max_tokens": 5, "messages": [
        user("go"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_abc", "name": "Read", "input": {}},
                                          {"type": "tool_use", "id": "weird-id-1234", "name": "Grep", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_abc", "content": "x"},
                                     {"type": "tool_result", "tool_use_id": "weird-id-1234", "content": "y"}]}]});
    let g = convert_request(Claude, Gemini, &body, "m").unwrap();
    let parts = g["contents"][2]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["functionResponse"]["name"], "Read");
    assert_eq!(parts[1]["functionResponse"]["name"], "Grep");
}

#[test]
fn gemini_function_responses_pair_with_generated_call_ids() {
    let gem = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"c": "A"}}}, {"functionCall": {"name": "w", "args": {"c": "B"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"result": "sunny"}}},
                                   {"functionResponse": {"name": "w", "response": {"temp": 3}}}]}
    ]});
    let c = convert_request(Gemini, Claude, &gem, "m").unwrap();
    let uses: Vec<String> = c["messages"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let results: Vec<String> = c["messages"][2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tool_use_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        uses, results,
        "tool_result ids match the generated tool_use ids"
    );
    assert_eq!(c["messages"][2]["content"][0]["content"], "sunny");
    assert_eq!(c["messages"][2]["content"][1]["content"], "{\"temp\":3}");
    // Deterministic ids keep converted prompts cacheable.
    assert_eq!(convert_request(Gemini, Claude, &gem, "m").unwrap(), c);
    let o = convert_request(Gemini, OpenAi, &gem, "m").unwrap();
    let msgs = o["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], msgs[1]["tool_calls"][0]["id"]);
    let r = convert_request(Gemini, OpenAiResponses, &gem, "m").unwrap();
    let input = r["input"].as_array().unwrap();
    assert_eq!(
        input[1]["call_id"], input[3]["call_id"],
        "function_call_output call_id is the call's id, not the name"
    );
}

#[test]
fn gemini_tools_and_calls_reach_openai() {
    let gem = json!({
        "system_instruction": {"parts": [{"text": "snake case system"}]},
        "contents": [{"parts": [{"text": "no role"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}
    });
    let o = convert_request(Gemini, OpenAi, &gem, "m").unwrap();
    assert_eq!(
        o["messages"][0],
        json!({"role": "system", "content": "snake case system"})
    );
    assert_eq!(
        o["messages"][1]["role"], "user",
        "missing role defaults to user"
    );
    assert_eq!(o["tools"][0]["function"]["name"], "f");
    assert_eq!(o["tool_choice"], "required");
}

// ----- §3.7 / §3.8 Responses --------------------------------------------------------------------

#[test]
fn responses_developer_role_is_system() {
    let body = json!({"model": "x", "input": [
        {"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}]});
    let o = convert_request(OpenAiResponses, OpenAi, &body, "m").unwrap();
    assert_eq!(
        o["messages"][0],
        json!({"role": "system", "content": "rules"})
    );
    assert_eq!(o["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn responses_tool_choice_is_converted_not_copied() {
    let body = json!({"model": "x", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"}});
    assert_eq!(
        convert_request(OpenAiResponses, OpenAi, &body, "m").unwrap()["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(
        convert_request(OpenAiResponses, Claude, &body, "m").unwrap()["tool_choice"],
        json!({"type": "tool", "name": "f"})
    );
}

#[test]
fn openai_images_and_tool_outputs_reach_responses_in_its_shapes() {
    let body = chat(json!([
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}]},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "out"}]}
    ]));
    let r = convert_request(OpenAi, OpenAiResponses, &body, "m").unwrap();
    assert_eq!(
        r["input"][0]["content"][0]["image_url"], "https://x/y.jpg",
        "a string, not an object"
    );
    assert_eq!(r["input"][2]["output"], "out", "string output");
}

#[test]
fn claude_keeps_every_tool_use_and_result_for_responses() {
    let body = json!({"model": "x", "max_tokens": 5, "messages": [
        user("go"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}, {"type": "tool_use", "id": "b", "name": "g", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "1"}, {"type": "tool_result", "tool_use_id": "b", "content": "2"}]}]});
    let r = convert_request(Claude, OpenAiResponses, &body, "m").unwrap();
    let tys: Vec<&str> = r["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        tys,
        [
            "message",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output"
        ]
    );
}

// ----- §4.1 finish reasons ----------------------------------------------------------------------

fn openai_resp(finish: &str) -> Value {
    json!({"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": finish}]})
}

#[test]
fn finish_reasons_map_correctly() {
    assert_eq!(
        convert_response(OpenAi, Claude, &openai_resp("content_filter"), "m").unwrap()["stop_reason"],
        "refusal"
    );
    let r = convert_response(OpenAi, OpenAiResponses, &openai_resp("length"), "m").unwrap();
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    for (claude, openai) in [
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
    ] {
        let c = json!({"content": [{"type": "text", "text": "x"}], "stop_reason": claude});
        assert_eq!(
            convert_response(Claude, OpenAi, &c, "m").unwrap()["choices"][0]["finish_reason"],
            openai
        );
    }
    let c = json!({"content": [{"type": "text", "text": "x"}], "stop_reason": "stop_sequence", "stop_sequence": "END"});
    assert_eq!(
        convert_response(Claude, Claude, &c, "m").unwrap()["stop_sequence"],
        "END"
    );
    for (gem, openai, claude) in [
        ("MAX_TOKENS", "length", "max_tokens"),
        ("SAFETY", "content_filter", "refusal"),
        ("RECITATION", "content_filter", "refusal"),
        ("OTHER", "stop", "end_turn"),
    ] {
        let g = json!({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "finishReason": gem}]});
        assert_eq!(
            convert_response(Gemini, OpenAi, &g, "m").unwrap()["choices"][0]["finish_reason"],
            openai
        );
        let c = convert_response(Gemini, Claude, &g, "m").unwrap();
        assert_eq!(c["stop_reason"], claude);
        // content is kept even when the candidate did not stop normally
        assert_eq!(c["content"][0]["text"], "partial");
    }
}

// ----- §4.2 usage -------------------------------------------------------------------------------

#[test]
fn claude_cache_tokens_count_as_prompt_tokens() {
    let c = json!({"content": [], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10, "output_tokens": 7}});
    let o = convert_response(Claude, OpenAi, &c, "m").unwrap();
    assert_eq!(o["usage"]["prompt_tokens"], 115);
    assert_eq!(o["usage"]["total_tokens"], 122);
    let g = convert_response(Claude, Gemini, &c, "m").unwrap();
    assert_eq!(g["usageMetadata"]["promptTokenCount"], 115);
}

// ----- §4.3 content -----------------------------------------------------------------------------

#[test]
fn claude_multi_text_is_a_string_for_openai() {
    let c = json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "stop_reason": "end_turn"});
    assert_eq!(
        convert_response(Claude, OpenAi, &c, "m").unwrap()["choices"][0]["message"]["content"],
        "ab"
    );
}

#[test]
fn openai_reasoning_reaches_gemini_as_thought() {
    let o = json!({"choices": [{"message": {"role": "assistant", "content": "a", "reasoning_content": "r"}, "finish_reason": "stop"}]});
    let g = convert_response(OpenAi, Gemini, &o, "m").unwrap();
    assert_eq!(
        g["candidates"][0]["content"]["parts"][0],
        json!({"text": "r", "thought": true})
    );
}

#[test]
fn gemini_function_calls_reach_responses() {
    let g = json!({"candidates": [{"content": {"parts": [{"text": "t", "thought": true}, {"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}]});
    let r = convert_response(Gemini, OpenAiResponses, &g, "m").unwrap();
    let tys: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        tys,
        ["reasoning", "function_call"],
        "thoughts are not message text; calls kept"
    );
}

#[test]
fn openai_thinking_tags_become_thinking_blocks_for_claude() {
    let o = json!({"choices": [{"message": {"role": "assistant", "content": "<thinking>plan</thinking>\n\nanswer"}, "finish_reason": "stop"}]});
    let c = convert_response(OpenAi, Claude, &o, "m").unwrap();
    assert_eq!(
        c["content"],
        json!([{"type": "thinking", "thinking": "plan", "signature": ""}, {"type": "text", "text": "answer"}])
    );
}

// ----- §5 / §6 streams --------------------------------------------------------------------------

fn push_all(
    conv: &mut StreamConverter,
    from_named: bool,
    events: &[Value],
) -> Vec<aiclient_convert::SseEvent> {
    let mut out = Vec::new();
    for e in events {
        let name = if from_named { e["type"].as_str() } else { None };
        out.extend(conv.push(name, e));
    }
    out.extend(conv.finish());
    out
}

#[test]
fn openai_stream_to_claude_keeps_tool_calls_and_message_start() {
    let chunks = vec![
        json!({"id": "1", "choices": [{"delta": {"role": "assistant", "content": "Hi"}}]}),
        json!({"id": "1", "choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
        json!({"id": "1", "choices": [{"delta": {"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"b\":"}}]}}]}),
        json!({"id": "1", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}}]}),
        json!({"id": "1", "choices": [{"delta": {"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}}]}),
        json!({"id": "1", "choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"id": "1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
    ];
    let mut conv = StreamConverter::new(OpenAi, Claude, "m");
    let out = push_all(&mut conv, false, &chunks);
    validate_claude(&out);
    let (blocks, stop, usage) = claude_accumulate(&out);
    assert_eq!(
        blocks,
        vec![
            ("text".to_string(), "Hi".to_string()),
            ("tool_use".to_string(), "{\"a\":1}".to_string()),
            ("tool_use".to_string(), "{\"b\":2}".to_string())
        ],
        "interleaved OpenAI tool fragments become separate, non-interleaved blocks"
    );
    assert_eq!(stop.as_deref(), Some("tool_use"));
    assert_eq!(
        usage["input_tokens"], 9,
        "usage arriving after finish_reason is used"
    );
    assert_eq!(usage["output_tokens"], 4);
}

#[test]
fn openai_always_ends_with_done_even_after_finish_chunk() {
    let events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
        json!({"type": "message_stop"}),
    ];
    let mut conv = StreamConverter::new(Claude, OpenAi, "m");
    let out = push_all(&mut conv, true, &events);
    validate_openai(&out);
}

#[test]
fn gemini_stop_after_tool_call_stays_stop_not_tool_calls_enum() {
    let events = vec![
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}]}),
    ];
    let (out, _) = run_stream(Gemini, Gemini, &events);
    assert!(!out.iter().any(|e| e.data.contains("TOOL_CALLS")));
    let (out, _) = run_stream(OpenAiResponses, Gemini, &super_responses_tool_events());
    assert!(!out.iter().any(|e| e.data.contains("TOOL_CALLS")));
    assert!(out.last().unwrap().data.contains("\"STOP\""));
}

fn super_responses_tool_events() -> Vec<Value> {
    vec![
        json!({"type": "response.created", "response": {"id": "resp_1"}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": "{\"x\":1}"}}),
        json!({"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}}}),
    ]
}

#[test]
fn claude_to_openai_stream_uses_constant_id_and_tool_ordinals() {
    let events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 50, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ];
    let mut conv = StreamConverter::new(Claude, OpenAi, "m");
    let out = push_all(&mut conv, true, &events);
    validate_openai(&out);
    let acc = openai_accumulate(&out);
    assert_eq!(
        acc.tools.len(),
        1,
        "first tool is index 0 even after a text block"
    );
    let u = acc.usage.unwrap();
    assert_eq!(
        u["prompt_tokens"], 50,
        "prompt tokens from message_start, not message_delta"
    );
    assert_eq!(u["completion_tokens"], 9);
}

#[test]
fn gemini_stream_thoughts_are_reasoning_and_tool_indexes_run_on() {
    let events = vec![
        json!({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "a", "args": {}}}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "b", "args": {"x": 1}}}]}}], "usageMetadata": {"trafficType": "ON_DEMAND"}}),
        json!({"candidates": [{"content": {"parts": [{"text": "done"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}}),
    ];
    let (out, _) = run_stream(Gemini, OpenAi, &events);
    validate_openai(&out);
    let acc = openai_accumulate(&out);
    assert_eq!(acc.reasoning, "hmm");
    assert_eq!(acc.content, "done");
    assert_eq!(acc.tools.len(), 2);
    assert_eq!(acc.tools[1].1, "b");
    assert_eq!(acc.finish.as_deref(), Some("tool_calls"));
    // the final chunk with both text and finishReason still yields the stop (Claude)
    let (out, _) = run_stream(Gemini, Claude, &events);
    validate_claude(&out);
    let (blocks, stop, usage) = claude_accumulate(&out);
    assert_eq!(blocks.len(), 4);
    assert_eq!(blocks.last().unwrap().1, "done");
    assert_eq!(stop.as_deref(), Some("tool_use"));
    assert_eq!(usage["output_tokens"], 2);
}

#[test]
fn claude_stream_to_gemini_carries_tool_arguments() {
    let events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"x\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
    ];
    let (out, _) = run_stream(Claude, Gemini, &events);
    validate_gemini(&out);
    let call = out
        .iter()
        .map(data_json)
        .find_map(|d| {
            d["candidates"][0]["content"]["parts"][0]
                .get("functionCall")
                .cloned()
        })
        .unwrap();
    assert_eq!(call["args"], json!({"q": "x"}));
}

#[test]
fn openai_stream_to_gemini_accumulates_fragments_and_finishes() {
    let chunks = vec![
        json!({"choices": [{"delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":[1]}"}}]}}]}),
        json!({"choices": [{"delta": {}, "finish_reason": "length"}], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}),
    ];
    let (out, _) = run_stream(OpenAi, Gemini, &chunks);
    validate_gemini(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    assert!(ds.iter().all(|d| {
        d["candidates"][0]
            .get("content")
            .is_none_or(|c| !c["parts"].as_array().unwrap().is_empty())
    }));
    let call = ds
        .iter()
        .find_map(|d| {
            d["candidates"][0]["content"]["parts"][0]
                .get("functionCall")
                .cloned()
        })
        .unwrap();
    assert_eq!(call["args"], json!({"a": [1]}));
    assert_eq!(
        ds.last().unwrap()["candidates"][0]["finishReason"],
        "MAX_TOKENS"
    );
    assert_eq!(ds.last().unwrap()["usageMetadata"]["totalTokenCount"], 5);
}

#[test]
fn responses_stream_has_one_id_real_usage_and_no_collisions() {
    let chunks = vec![
        json!({"choices": [{"delta": {"content": "a"}}]}),
        json!({"choices": [{"delta": {"content": "b"}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}}]}),
        json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    let (out, _) = run_stream(OpenAi, OpenAiResponses, &chunks);
    validate_responses(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    assert_eq!(
        ds.iter()
            .filter(|d| d["type"] == "response.created")
            .count(),
        1
    );
    let last = ds.last().unwrap();
    assert_eq!(last["response"]["id"], ds[0]["response"]["id"]);
    // unknown usage → zeros, never random numbers
    assert_eq!(last["response"]["usage"]["input_tokens"], 0);
    assert_eq!(last["response"]["usage"]["output_tokens"], 0);
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "ab");
    let length = vec![json!({"choices": [{"delta": {"content": "a"}, "finish_reason": "length"}]})];
    let (out, _) = run_stream(OpenAi, OpenAiResponses, &length);
    validate_responses(&out);
    let last = data_json(out.last().unwrap());
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
}

#[test]
fn responses_upstream_ignored_events_produce_nothing_and_usage_reaches_claude() {
    let events = vec![
        json!({"type": "response.created", "response": {"id": "resp_1"}}),
        json!({"type": "response.in_progress", "response": {"id": "resp_1"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "m"}}),
        json!({"type": "response.content_part.added", "output_index": 0, "item_id": "m"}),
    ];
    let mut conv = StreamConverter::new(OpenAiResponses, OpenAi, "m");
    let mut out = Vec::new();
    for e in &events {
        out.extend(conv.push(e["type"].as_str(), e));
    }
    assert_eq!(
        out.len(),
        1,
        "only the role chunk; ignored events yield no empty chunks"
    );
    let (out, _) = run_stream(OpenAiResponses, Claude, &super_responses_tool_events());
    validate_claude(&out);
    let (_, stop, usage) = claude_accumulate(&out);
    assert_eq!(stop.as_deref(), Some("tool_use"));
    assert_eq!(usage["output_tokens"], 2);
}

#[test]
fn concurrent_stream_converters_do_not_share_state() {
    let mut a = StreamConverter::new(OpenAi, Claude, "a");
    let mut b = StreamConverter::new(OpenAi, Claude, "b");
    let ea = a.push(
        None,
        &json!({"choices": [{"delta": {"content": "from a"}}]}),
    );
    let eb = b.push(
        None,
        &json!({"choices": [{"delta": {"content": "from b"}}]}),
    );
    let ida = data_json(&ea[0])["message"]["id"].clone();
    let idb = data_json(&eb[0])["message"]["id"].clone();
    assert_ne!(ida, idb);
    let fa = a.finish();
    assert!(fa.iter().all(|e| !e.data.contains("from b")));
    assert_eq!(
        b.finish().len(),
        3,
        "block stop, message_delta, message_stop"
    );
}

#[test]
fn in_band_upstream_error_ends_the_stream() {
    let mut conv = StreamConverter::new(Gemini, Claude, "m");
    let mut out = conv.push(
        None,
        &json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}),
    );
    out.extend(conv.push(
        None,
        &json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}),
    ));
    let last = out.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(data_json(last)["error"]["type"], "rate_limit_error");
    assert!(conv.finish().is_empty(), "no message_stop after an error");
    let mut conv = StreamConverter::new(Claude, OpenAi, "m");
    conv.push(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_1"}}),
    );
    let e = conv.fail(529, "overloaded");
    assert_eq!(data_json(&e[0])["error"]["type"], "server_error");
    assert!(conv.finish().is_empty());
}
