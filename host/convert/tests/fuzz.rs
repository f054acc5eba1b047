//! Property-style robustness: no conversion panics on arbitrary JSON. Hand-rolled deterministic
//! mutation (xorshift) of the vector events and bodies: keys deleted, values replaced by other
//! JSON types, strings truncated, events dropped, duplicated and reordered.

mod common;

use aiclient_convert::Protocol::{self, *};
use aiclient_convert::{StreamConverter, convert_request, convert_response, count_tokens};
use common::*;
use serde_json::{Map, Value, json};

const ALL: [Protocol; 4] = [OpenAi, OpenAiResponses, Claude, Gemini];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64 % 100_000 - 50),
        3 => json!(-1.5e300),
        4 => json!(
            [
                "text",
                "tool_use",
                "[DONE]",
                "",
                "\\u00",
                "{\"a\":",
                "message_stop",
                "STOP"
            ][rng.below(8)]
        ),
        5 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "type",
                "text",
                "index",
                "delta",
                "content",
                "parts",
                "role",
                "id",
                "name",
                "arguments",
            ];
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(
                    keys[rng.below(keys.len())].to_string(),
                    random_value(rng, depth + 1),
                );
            }
            Value::Object(m)
        }
    }
}

fn mutate(v: &mut Value, rng: &mut Rng, depth: usize) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if rng.chance(8) {
                    m.remove(&k);
                } else if rng.chance(8) {
                    m.insert(k, random_value(rng, depth));
                } else if let Some(child) = m.get_mut(&k) {
                    mutate(child, rng, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            if !a.is_empty() && rng.chance(10) {
                let i = rng.below(a.len());
                a.remove(i);
            }
            if !a.is_empty() && rng.chance(5) {
                let i = rng.below(a.len());
                let dup = a[i].clone();
                a.push(dup);
            }
            for child in a.iter_mut() {
                mutate(child, rng, depth + 1);
            }
        }
        Value::String(s) => {
            if rng.chance(10) {
                let cut = s
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(rng.below(s.chars().count() + 1))
                    .unwrap_or(s.len());
                s.truncate(cut);
            }
        }
        _ => {
            if rng.chance(5) {
                *v = random_value(rng, depth);
            }
        }
    }
}

fn stream_sources() -> Vec<(Protocol, Vec<Value>)> {
    vec![
        (Claude, ndjson("claude/oldResponseChunk1762501803864.json")),
        (Gemini, ndjson("gemini/oldResponseChunk1762502078640.json")),
        (OpenAi, ndjson("openai/oldResponseChunk1762501528837.json")),
        (
            OpenAiResponses,
            vec![
                json!({"type": "response.created", "response": {"id": "resp_1"}}),
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "custom_tool_call", "id": "c", "call_id": "k", "name": "p"}}),
                json!({"type": "response.custom_tool_call_input.delta", "output_index": 0, "item_id": "c", "delta": "x\"y"}),
                json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "custom_tool_call", "id": "c", "call_id": "k", "name": "p", "input": "x\"y"}}),
                json!({"type": "response.reasoning_summary_text.delta", "delta": "r", "output_index": 1}),
                json!({"type": "response.output_text.delta", "delta": "t", "output_index": 2}),
                json!({"type": "response.completed", "response": {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "usage": {"input_tokens": 1, "output_tokens": 2}}}),
            ],
        ),
    ]
}

#[test]
fn stream_converter_never_panics_on_mutated_events() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (source, events) in stream_sources() {
        for round in 0..60 {
            let mut evs = events.clone();
            for e in evs.iter_mut() {
                mutate(e, &mut rng, 0);
            }
            if rng.chance(30) && evs.len() > 1 {
                let (a, b) = (rng.below(evs.len()), rng.below(evs.len()));
                evs.swap(a, b);
            }
            if rng.chance(20) {
                evs.push(random_value(&mut rng, 0));
            }
            for from in ALL {
                for to in ALL {
                    let mut conv = StreamConverter::new(from, to, "fuzz");
                    let mut out = Vec::new();
                    for e in &evs {
                        // Event names sometimes missing or wrong.
                        let name = if rng.chance(70) {
                            e.get("type").and_then(Value::as_str)
                        } else {
                            Some("bogus")
                        };
                        out.extend(conv.push(name, e));
                    }
                    out.extend(conv.finish());
                    assert!(conv.finish().is_empty());
                    let _ = conv.usage();
                    for ev in &out {
                        if ev.data != "[DONE]" {
                            assert!(
                                serde_json::from_str::<Value>(&ev.data).is_ok(),
                                "round {round}: invalid JSON {}",
                                ev.data
                            );
                        }
                    }
                    // Valid vectors from the right protocol keep producing well-formed streams.
                    let _ = source;
                }
            }
        }
    }
}

#[test]
fn converted_streams_stay_well_formed_under_mutation() {
    let mut rng = Rng(42);
    for (from, events) in stream_sources() {
        for _ in 0..40 {
            let mut evs = events.clone();
            for e in evs.iter_mut() {
                mutate(e, &mut rng, 0);
            }
            for to in ALL {
                if to == from {
                    continue;
                }
                let (out, _) = run_stream(from, to, &evs);
                // An in-band error ends the stream early; otherwise it must be well-formed.
                if out.iter().any(|e| {
                    e.event.as_deref() == Some("error") || e.data.starts_with("{\"error\"")
                }) {
                    continue;
                }
                match to {
                    OpenAi => validate_openai(&out),
                    Claude => validate_claude(&out),
                    Gemini => validate_gemini(&out),
                    OpenAiResponses => validate_responses(&out),
                }
            }
        }
    }
}

#[test]
fn request_and_response_conversion_never_panic_on_mutated_bodies() {
    let requests = [
        (
            OpenAi,
            vector("openai/originalRequestBody1762501497434.json"),
        ),
        (
            Gemini,
            vector("gemini/originalRequestBody1762502375803.json"),
        ),
        (
            OpenAiResponses,
            vector("openaiResponses/originalRequestBody1762500856556.json"),
        ),
        (
            Claude,
            json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s"}], "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]}]}],
                "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}],
                "thinking": {"type": "enabled", "budget_tokens": 2000}, "tool_choice": {"type": "any"}}),
        ),
    ];
    let responses = [
        (OpenAi, vector("openai/oldResponse1762501667708.json")),
        (Claude, vector("claude/oldResponse1762501965597.json")),
        (Gemini, vector("gemini/oldResponse1762502386432.json")),
        (
            OpenAiResponses,
            vector("openaiResponses/oldResponse1762502706486.json"),
        ),
    ];
    let mut rng = Rng(7);
    for round in 0..25 {
        for (from, body) in &requests {
            let mut b = body.clone();
            mutate(&mut b, &mut rng, 0);
            for to in ALL {
                let _ = convert_request(*from, to, &b, "fuzz");
            }
            let _ = count_tokens(*from, &b);
        }
        for (from, body) in &responses {
            let mut b = body.clone();
            mutate(&mut b, &mut rng, 0);
            for to in ALL {
                let _ = convert_response(*from, to, &b, "fuzz");
            }
        }
        // Entirely random bodies.
        let junk = random_value(&mut rng, 0);
        for from in ALL {
            for to in ALL {
                let _ = convert_request(from, to, &junk, "fuzz");
                let _ = convert_response(from, to, &junk, "fuzz");
            }
        }
        let _ = round;
    }
}
