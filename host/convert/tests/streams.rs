//! Stream conversion with the captured vectors, in every direction, plus event-order validation.

mod common;

use aiclient_convert::Protocol::{self, *};
use common::*;
use serde_json::{Value, json};

const CLAUDE_TOOL: &str = "claude/oldResponseChunk1762501803864.json";
const GEMINI_TEXT: &str = "gemini/oldResponseChunk1762502078640.json";
const OPENAI_GLM: &str = "openai/oldResponseChunk1762501528837.json";

fn gemini_text() -> String {
    ndjson(GEMINI_TEXT)
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn glm_reasoning() -> String {
    ndjson(OPENAI_GLM)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn claude_partial_json() -> String {
    ndjson(CLAUDE_TOOL)
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_string))
        .collect()
}

// ----- Claude upstream ------------------------------------------------------------------------

#[test]
fn claude_tool_stream_to_openai() {
    let (out, conv) = run_stream(Claude, OpenAi, &ndjson(CLAUDE_TOOL));
    validate_openai(&out);
    let chunks: Vec<Value> = out[..out.len() - 1].iter().map(data_json).collect();
    // Header once, then 14 argument fragments, all at the running tool ordinal 0.
    let tool_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
        .collect();
    assert_eq!(tool_chunks.len(), 15);
    let header = &tool_chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(header["index"], 0);
    assert_eq!(header["id"], "TodoWrite_3");
    assert_eq!(header["type"], "function");
    assert_eq!(header["function"]["name"], "TodoWrite");
    assert_eq!(header["function"]["arguments"], "");
    for c in &tool_chunks[1..] {
        let tc = &c["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc["index"], 0);
        assert!(tc.get("id").is_none());
    }
    let acc = openai_accumulate(&out);
    assert_eq!(acc.tools.len(), 1);
    assert_eq!(
        acc.tools[0].2,
        claude_partial_json(),
        "fragments forwarded verbatim"
    );
    assert_eq!(acc.finish.as_deref(), Some("tool_calls"));
    let usage = acc.usage.expect("usage on the finish chunk");
    assert_eq!(usage["prompt_tokens"], 22969);
    assert_eq!(usage["completion_tokens"], 80);
    assert_eq!(usage["total_tokens"], 23049);
    assert_eq!(conv.usage(), Some((22969, 80)));
}

#[test]
fn claude_tool_stream_to_openai_with_include_usage() {
    let mut conv =
        aiclient_convert::StreamConverter::new(Claude, OpenAi, "m").with_include_usage(true);
    let mut out = Vec::new();
    for e in ndjson(CLAUDE_TOOL) {
        out.extend(conv.push(e["type"].as_str(), &e));
    }
    out.extend(conv.finish());
    validate_openai(&out);
    let usage_chunk = data_json(&out[out.len() - 2]);
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 22969);
    let finish_chunk = data_json(&out[out.len() - 3]);
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn claude_tool_stream_to_gemini() {
    let (out, _) = run_stream(Claude, Gemini, &ndjson(CLAUDE_TOOL));
    validate_gemini(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    let calls: Vec<&Value> = ds
        .iter()
        .filter_map(|d| d["candidates"][0]["content"]["parts"][0].get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 1, "one complete functionCall");
    assert_eq!(calls[0]["name"], "TodoWrite");
    assert_eq!(calls[0]["id"], "TodoWrite_3");
    // The captured arguments are not valid JSON: documented fallback is `{}`.
    assert_eq!(calls[0]["args"], json!({}));
    let last = ds.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 22969);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 80);
}

#[test]
fn claude_tool_stream_to_responses() {
    let (out, _) = run_stream(Claude, OpenAiResponses, &ndjson(CLAUDE_TOOL));
    validate_responses(&out);
    let last = data_json(out.last().unwrap());
    assert_eq!(last["type"], "response.completed");
    let output = last["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "TodoWrite");
    assert_eq!(output[0]["call_id"], "TodoWrite_3");
    assert_eq!(output[0]["arguments"], "{}");
    assert_eq!(last["response"]["usage"]["input_tokens"], 22969);
    assert_eq!(last["response"]["usage"]["output_tokens"], 80);
    assert_eq!(last["response"]["usage"]["total_tokens"], 23049);
}

#[test]
fn claude_stream_passthrough_is_unchanged_and_valid() {
    let events = ndjson(CLAUDE_TOOL);
    let (out, conv) = run_stream(Claude, Claude, &events);
    validate_claude(&out);
    assert_eq!(out.len(), events.len());
    for (o, e) in out.iter().zip(&events) {
        assert_eq!(&data_json(o), e);
    }
    assert_eq!(conv.usage(), Some((22969, 80)));
}

#[test]
fn claude_passthrough_repairs_truncated_stream() {
    // Upstream died after a delta: no block stop, no message_delta, no message_stop.
    let events: Vec<Value> = ndjson(CLAUDE_TOOL).into_iter().take(5).collect();
    let (out, _) = run_stream(Claude, Claude, &events);
    validate_claude(&out);
    // Missing message_start is synthesised.
    let events: Vec<Value> = ndjson(CLAUDE_TOOL).into_iter().skip(1).collect();
    let (out, _) = run_stream(Claude, Claude, &events);
    validate_claude(&out);
}

// ----- Gemini upstream ------------------------------------------------------------------------

#[test]
fn gemini_text_stream_to_claude() {
    let (out, conv) = run_stream(Gemini, Claude, &ndjson(GEMINI_TEXT));
    validate_claude(&out);
    assert_eq!(
        types(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let (blocks, stop, usage) = claude_accumulate(&out);
    assert_eq!(blocks, vec![("text".to_string(), gemini_text())]);
    assert_eq!(gemini_text().chars().count(), 283);
    assert_eq!(stop.as_deref(), Some("end_turn"));
    assert_eq!(usage["input_tokens"], 19131);
    // Claude output tokens include thinking: candidates 127 + thoughts 93.
    assert_eq!(usage["output_tokens"], 127 + 93);
    assert_eq!(conv.usage(), Some((19131, 220)));
}

#[test]
fn gemini_text_stream_to_openai() {
    let (out, _) = run_stream(Gemini, OpenAi, &ndjson(GEMINI_TEXT));
    validate_openai(&out);
    // Chunks 1–2 carry `usageMetadata` without counts: no usage may be emitted for them.
    for e in &out[..out.len() - 2] {
        assert!(
            data_json(e).get("usage").is_none(),
            "no usage before the end: {}",
            e.data
        );
    }
    let acc = openai_accumulate(&out);
    assert_eq!(acc.content, gemini_text());
    assert_eq!(acc.finish.as_deref(), Some("stop"));
    let u = acc.usage.unwrap();
    assert_eq!(u["prompt_tokens"], 19131);
    assert_eq!(u["completion_tokens"], 127);
    assert_eq!(u["total_tokens"], 19351);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 93);
}

#[test]
fn gemini_text_stream_to_responses() {
    let (out, _) = run_stream(Gemini, OpenAiResponses, &ndjson(GEMINI_TEXT));
    validate_responses(&out);
    let last = data_json(out.last().unwrap());
    let output = last["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output[0]["content"][0]["text"], gemini_text());
    let u = &last["response"]["usage"];
    assert_eq!(u["input_tokens"], 19131);
    assert_eq!(u["output_tokens"], 220);
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 93);
    assert_eq!(u["total_tokens"], 19351);
    let deltas: String = out
        .iter()
        .map(data_json)
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, gemini_text());
}

#[test]
fn gemini_stream_passthrough() {
    let events = ndjson(GEMINI_TEXT);
    let (out, conv) = run_stream(Gemini, Gemini, &events);
    validate_gemini(&out);
    assert_eq!(out.len(), 3, "finishReason already sent: nothing appended");
    assert_eq!(conv.usage(), Some((19131, 220)));
    // Without a finishReason a closing chunk is appended.
    let (out, _) = run_stream(Gemini, Gemini, &events[..2]);
    validate_gemini(&out);
    assert_eq!(out.len(), 3);
}

// ----- OpenAI upstream ------------------------------------------------------------------------

#[test]
fn openai_glm_stream_to_claude() {
    let (out, conv) = run_stream(OpenAi, Claude, &ndjson(OPENAI_GLM));
    validate_claude(&out);
    let (blocks, stop, usage) = claude_accumulate(&out);
    let kinds: Vec<&str> = blocks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use"]);
    assert_eq!(blocks[0].1, glm_reasoning());
    assert_eq!(blocks[1].1, "\n");
    // Invalid arguments `{"command":dir}` → documented fallback `{}` (valid JSON for the client).
    assert_eq!(blocks[2].1, "{}");
    let tool_start = out
        .iter()
        .map(data_json)
        .find(|d| d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool_start["content_block"]["name"], "shell");
    assert_eq!(
        tool_start["content_block"]["id"],
        "call_c1b2d1cfe12340ba85700f80"
    );
    let json_deltas = out
        .iter()
        .map(data_json)
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .count();
    assert_eq!(json_deltas, 1);
    assert_eq!(stop.as_deref(), Some("tool_use"));
    // Zero-usage chunks never overwrite the final usage.
    assert_eq!(usage["input_tokens"], 6243);
    assert_eq!(usage["output_tokens"], 84);
    assert_eq!(conv.usage(), Some((6243, 84)));
}

#[test]
fn openai_glm_stream_to_gemini() {
    let (out, _) = run_stream(OpenAi, Gemini, &ndjson(OPENAI_GLM));
    validate_gemini(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    let thoughts: String = ds
        .iter()
        .filter_map(|d| {
            let p = &d["candidates"][0]["content"]["parts"][0];
            (p["thought"] == true).then(|| p["text"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(thoughts, glm_reasoning());
    let calls: Vec<&Value> = ds
        .iter()
        .filter_map(|d| d["candidates"][0]["content"]["parts"][0].get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["name"], "shell");
    assert_eq!(calls[0]["args"], json!({}));
    let last = ds.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 6243);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 84);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 6327);
}

#[test]
fn openai_glm_stream_to_responses() {
    let (out, _) = run_stream(OpenAi, OpenAiResponses, &ndjson(OPENAI_GLM));
    validate_responses(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    let summary: String = ds
        .iter()
        .filter(|d| d["type"] == "response.reasoning_summary_text.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(summary, glm_reasoning());
    let last = ds.last().unwrap();
    let kinds: Vec<&str> = last["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call"]);
    assert_eq!(last["response"]["output"][2]["name"], "shell");
    assert_eq!(last["response"]["status"], "completed");
    assert_eq!(last["response"]["usage"]["input_tokens"], 6243);
    assert_eq!(last["response"]["usage"]["output_tokens"], 84);
}

#[test]
fn openai_stream_passthrough_appends_done() {
    let events = ndjson(OPENAI_GLM);
    let (out, conv) = run_stream(OpenAi, OpenAi, &events);
    validate_openai(&out);
    assert_eq!(out.len(), events.len() + 1);
    assert_eq!(conv.usage(), Some((6243, 84)));
    // An upstream `[DONE]` is forwarded once, not duplicated.
    let mut with_done = events.clone();
    with_done.push(json!("[DONE]"));
    let (out, _) = run_stream(OpenAi, OpenAi, &with_done);
    validate_openai(&out);
    assert_eq!(out.iter().filter(|e| e.data == "[DONE]").count(), 1);
}

// ----- Responses upstream (synthetic, real event shapes) --------------------------------------

pub fn responses_events() -> Vec<Value> {
    vec![
        json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_abc","object":"response","status":"in_progress","output":[]}}),
        json!({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_abc","status":"in_progress"}}),
        json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}),
        json!({"type":"response.reasoning_summary_part.added","sequence_number":3,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}),
        json!({"type":"response.reasoning_summary_text.delta","sequence_number":4,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"Think"}),
        json!({"type":"response.reasoning_summary_text.delta","sequence_number":5,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"ing"}),
        json!({"type":"response.output_item.done","sequence_number":6,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"Thinking"}]}}),
        json!({"type":"response.output_item.added","sequence_number":7,"output_index":1,"item":{"id":"msg_1","type":"message","role":"assistant","content":[]}}),
        json!({"type":"response.output_text.delta","sequence_number":8,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hel"}),
        json!({"type":"response.output_text.delta","sequence_number":9,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"lo"}),
        json!({"type":"response.output_item.done","sequence_number":10,"output_index":1,"item":{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}}),
        json!({"type":"response.output_item.added","sequence_number":11,"output_index":2,"item":{"id":"fc_1","type":"function_call","call_id":"call_A","name":"shell","arguments":""}}),
        json!({"type":"response.function_call_arguments.delta","sequence_number":12,"item_id":"fc_1","output_index":2,"delta":"{\"cmd\":"}),
        json!({"type":"response.function_call_arguments.delta","sequence_number":13,"item_id":"fc_1","output_index":2,"delta":"\"ls\"}"}),
        json!({"type":"response.function_call_arguments.done","sequence_number":14,"item_id":"fc_1","output_index":2,"arguments":"{\"cmd\":\"ls\"}"}),
        json!({"type":"response.output_item.done","sequence_number":15,"output_index":2,"item":{"id":"fc_1","type":"function_call","call_id":"call_A","name":"shell","arguments":"{\"cmd\":\"ls\"}"}}),
        json!({"type":"response.output_item.added","sequence_number":16,"output_index":3,"item":{"id":"ctc_1","type":"custom_tool_call","call_id":"call_B","name":"apply_patch","input":""}}),
        json!({"type":"response.custom_tool_call_input.delta","sequence_number":17,"item_id":"ctc_1","output_index":3,"delta":"*** Begin \"Patch\"\n"}),
        json!({"type":"response.output_item.done","sequence_number":18,"output_index":3,"item":{"id":"ctc_1","type":"custom_tool_call","call_id":"call_B","name":"apply_patch","input":"*** Begin \"Patch\"\n"}}),
        json!({"type":"response.completed","sequence_number":19,"response":{"id":"resp_abc","status":"completed","output":[],"usage":{"input_tokens":8585,"input_tokens_details":{"cached_tokens":1920},"output_tokens":217,"output_tokens_details":{"reasoning_tokens":128},"total_tokens":8802}}}),
    ]
}

#[test]
fn responses_stream_to_claude() {
    let (out, conv) = run_stream(OpenAiResponses, Claude, &responses_events());
    validate_claude(&out);
    let (blocks, stop, usage) = claude_accumulate(&out);
    let kinds: Vec<&str> = blocks.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "tool_use"]);
    assert_eq!(blocks[0].1, "Thinking");
    assert_eq!(blocks[1].1, "Hello");
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[2].1).unwrap(),
        json!({"cmd": "ls"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[3].1).unwrap(),
        json!({"input": "*** Begin \"Patch\"\n"})
    );
    assert_eq!(stop.as_deref(), Some("tool_use"));
    // Claude input excludes cache reads: 8585 - 1920.
    assert_eq!(usage["input_tokens"], 8585 - 1920);
    assert_eq!(usage["cache_read_input_tokens"], 1920);
    assert_eq!(usage["output_tokens"], 217);
    assert_eq!(conv.usage(), Some((8585, 217)));
}

#[test]
fn responses_stream_to_openai() {
    let (out, _) = run_stream(OpenAiResponses, OpenAi, &responses_events());
    validate_openai(&out);
    let acc = openai_accumulate(&out);
    assert_eq!(acc.reasoning, "Thinking");
    assert_eq!(acc.content, "Hello");
    assert_eq!(acc.tools.len(), 2);
    assert_eq!(
        acc.tools[0],
        ("call_A".into(), "shell".into(), "{\"cmd\":\"ls\"}".into())
    );
    assert_eq!(acc.tools[1].1, "apply_patch");
    assert_eq!(
        serde_json::from_str::<Value>(&acc.tools[1].2).unwrap(),
        json!({"input": "*** Begin \"Patch\"\n"})
    );
    assert_eq!(acc.finish.as_deref(), Some("tool_calls"));
    let u = acc.usage.unwrap();
    assert_eq!(u["prompt_tokens"], 8585);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 1920);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 128);
}

#[test]
fn responses_stream_to_gemini() {
    let (out, _) = run_stream(OpenAiResponses, Gemini, &responses_events());
    validate_gemini(&out);
    let ds: Vec<Value> = out.iter().map(data_json).collect();
    let calls: Vec<&Value> = ds
        .iter()
        .filter_map(|d| d["candidates"][0]["content"]["parts"][0].get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0]["args"],
        json!({"cmd": "ls"}),
        "args are an object, not a raw string"
    );
    let last = ds.last().unwrap();
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 8585);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 217 - 128);
    assert_eq!(last["usageMetadata"]["thoughtsTokenCount"], 128);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 8802);
}

#[test]
fn responses_stream_passthrough() {
    let events = responses_events();
    let (out, conv) = run_stream(OpenAiResponses, OpenAiResponses, &events);
    assert_eq!(out.len(), events.len());
    assert_eq!(conv.usage(), Some((8585, 217)));
    // Truncated upstream: a terminal event is synthesised.
    let (out, _) = run_stream(OpenAiResponses, OpenAiResponses, &events[..11]);
    assert_eq!(types(&out).last().unwrap(), "response.completed");
    let last = data_json(out.last().unwrap());
    assert_eq!(last["response"]["output"].as_array().unwrap().len(), 2);
    assert_eq!(last["sequence_number"], 11);
}

#[test]
fn every_direction_produces_a_valid_stream_from_every_vector() {
    let sources: [(Protocol, Vec<Value>); 4] = [
        (Claude, ndjson(CLAUDE_TOOL)),
        (Gemini, ndjson(GEMINI_TEXT)),
        (OpenAi, ndjson(OPENAI_GLM)),
        (OpenAiResponses, responses_events()),
    ];
    for (from, events) in &sources {
        for to in [OpenAi, Claude, Gemini] {
            let (out, _) = run_stream(*from, to, events);
            match to {
                OpenAi => validate_openai(&out),
                Claude => validate_claude(&out),
                Gemini => validate_gemini(&out),
                OpenAiResponses => unreachable!(),
            }
        }
        if *from != OpenAiResponses {
            let (out, _) = run_stream(*from, OpenAiResponses, events);
            validate_responses(&out);
        }
    }
}

#[test]
fn empty_upstream_still_gives_well_formed_streams() {
    for from in [OpenAi, Claude, Gemini, OpenAiResponses] {
        let (out, conv) = run_stream(from, Claude, &[]);
        if from != Claude {
            validate_claude(&out);
        }
        assert_eq!(conv.usage(), None);
        if from != OpenAi {
            let (out, _) = run_stream(from, OpenAi, &[]);
            validate_openai(&out);
        }
        if from != OpenAiResponses {
            let (out, _) = run_stream(from, OpenAiResponses, &[]);
            validate_responses(&out);
        }
    }
    let (out, _) = run_stream(Claude, Claude, &[]);
    validate_claude(&out);
}
