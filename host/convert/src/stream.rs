//! Stateful stream conversion (conversion.md §6.9).
//!
//! Upstream events are first parsed into protocol-neutral [`Ev`]s by a per-upstream parser,
//! then rendered by a per-client emitter. Shared state (usage, finish reason, tool calls being
//! assembled) lives in [`Shared`] so every emitter sees the same facts:
//!
//! * usage is merged field by field; chunks whose usage carries no counts (OpenAI zero-usage
//!   chunks, Gemini `trafficType`-only metadata) never overwrite real numbers;
//! * a tool call seen anywhere turns a plain `stop` into `tool_calls`/`tool_use`;
//! * tool-call arguments are accumulated per call. OpenAI clients get argument fragments as they
//!   arrive; Claude, Responses and Gemini clients get each call as one complete block once its
//!   arguments are complete (upstream end of call, or end of stream for OpenAI upstreams, which
//!   never say when a call is complete). That way their arguments are always valid JSON (the
//!   lenient parse of `ir::parse_args` is applied) and Claude blocks never interleave.
//!
//! When client and upstream speak the same protocol the events pass through untouched, except
//! for what makes the stream well-formed (OpenAI: role first, `[DONE]` last; Claude:
//! `message_start` first, open blocks closed, `message_delta` and `message_stop` last; Gemini: a
//! final `finishReason`; Responses: `response.created` first and a terminal event last).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::errors::{error_event, status_from_claude_type};
use crate::ir::*;
use crate::{Protocol, SseEvent, claude, gemini, openai, responses};

/// Protocol-neutral stream event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ev {
    Start {
        id: Option<String>,
    },
    Text(String),
    Thinking(String),
    Signature(String),
    /// The upstream closed a text/thinking block.
    BlockEnd,
    ToolStart {
        key: String,
        id: String,
        name: String,
    },
    ToolArgs {
        key: String,
        delta: String,
    },
    ToolEnd {
        key: String,
    },
    Finish(Finish),
    Usage(Usage),
    Error {
        status: u16,
        message: String,
    },
    /// The upstream said the stream is over (`message_stop`, `[DONE]`, `response.completed`).
    End,
}

struct ToolAcc {
    key: String,
    id: String,
    name: String,
    args: String,
    done: bool,
}

struct Shared {
    model: String,
    usage: Usage,
    finish: Option<Finish>,
    tools: Vec<ToolAcc>,
}

impl Shared {
    fn finish(&self) -> Finish {
        let f = self.finish.clone().unwrap_or(Finish::Stop);
        if f == Finish::Stop && !self.tools.is_empty() {
            Finish::ToolCalls
        } else {
            f
        }
    }

    fn usage(&self) -> Option<&Usage> {
        (!self.usage.is_empty()).then_some(&self.usage)
    }
}

/// Stateful stream conversion; see the crate docs and conversion.md §6.9.
pub struct StreamConverter {
    to: Protocol,
    parser: Parser,
    emitter: Emitter,
    shared: Shared,
    started: bool,
    ended: bool,
}

impl StreamConverter {
    pub fn new(from: Protocol, to: Protocol, model: &str) -> Self {
        let emitter = if from == to {
            Emitter::Pass(Pass::new(to))
        } else {
            match to {
                Protocol::OpenAi => Emitter::OpenAi(OpenAiOut::new()),
                Protocol::Claude => Emitter::Claude(ClaudeOut::new()),
                Protocol::Gemini => Emitter::Gemini(GeminiOut::default()),
                Protocol::OpenAiResponses => Emitter::Responses(ResponsesOut::new()),
            }
        };
        StreamConverter {
            to,
            parser: Parser::new(from),
            emitter,
            shared: Shared {
                model: model.to_string(),
                usage: Usage::default(),
                finish: None,
                tools: Vec::new(),
            },
            started: false,
            ended: false,
        }
    }

    /// OpenAI clients only: also send the separate `choices: []` usage chunk that
    /// `stream_options.include_usage` asks for (usage is always inlined in the finish chunk).
    pub fn with_include_usage(mut self, include: bool) -> Self {
        if let Emitter::OpenAi(o) = &mut self.emitter {
            o.include_usage = include;
        }
        self
    }

    /// Feeds one upstream SSE event (event name if any, JSON data; the OpenAI terminator may be
    /// passed as the JSON string `"[DONE]"`). Returns the client events to send now.
    pub fn push(&mut self, event: Option<&str>, data: &Value) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let mut evs = Vec::new();
        self.parser.parse(event, data, &mut evs);
        if let Emitter::Pass(p) = &mut self.emitter {
            // Same protocol: forward, and use the parsed events only for accounting.
            for ev in &evs {
                match ev {
                    Ev::Usage(u) => self.shared.usage.merge(u),
                    Ev::Finish(f) => self.shared.finish = Some(f.clone()),
                    Ev::ToolStart { key, id, name } => self.shared.tools.push(ToolAcc {
                        key: key.clone(),
                        id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                        done: true,
                    }),
                    _ => {}
                }
            }
            let ended = p.forward(event, data, &self.shared, &mut out);
            if ended {
                self.ended = true;
            }
            return out;
        }
        for ev in evs {
            self.handle(ev, &mut out);
            if self.ended {
                break;
            }
        }
        out
    }

    /// Upstream ended: closing events (pending tool calls, block stops, final usage and finish
    /// reason, terminator). Idempotent; returns nothing after an in-band error or a previous
    /// `finish`.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.close(&mut out);
        out
    }

    /// Upstream failed mid-stream: the client error event, after which the stream is over
    /// (`finish` then returns nothing, as clients expect no terminator after an error).
    pub fn fail(&mut self, status: u16, message: &str) -> Vec<SseEvent> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        vec![error_event(self.to, status, message)]
    }

    /// Usage seen so far: (input tokens incl. cached, output tokens incl. reasoning).
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.shared
            .usage()
            .map(|u| (u.input(), u.output_with_reasoning()))
    }

    fn ensure_started(&mut self, id: Option<String>, out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            self.emitter.start(id, &self.shared, out);
        }
    }

    fn handle(&mut self, ev: Ev, out: &mut Vec<SseEvent>) {
        match ev {
            Ev::Start { id } => self.ensure_started(id, out),
            Ev::Usage(u) => self.shared.usage.merge(&u),
            Ev::Finish(f) => self.shared.finish = Some(f),
            Ev::Error { status, message } => {
                out.push(error_event(self.to, status, &message));
                self.ended = true;
            }
            Ev::End => self.close(out),
            Ev::Text(t) => {
                if !t.is_empty() {
                    self.ensure_started(None, out);
                    self.emitter.text(&t, &self.shared, out);
                }
            }
            Ev::Thinking(t) => {
                if !t.is_empty() {
                    self.ensure_started(None, out);
                    self.emitter.thinking(&t, &self.shared, out);
                }
            }
            Ev::Signature(s) => {
                if !s.is_empty() {
                    self.ensure_started(None, out);
                    self.emitter.signature(&s, &self.shared, out);
                }
            }
            Ev::BlockEnd => self.emitter.block_end(&self.shared, out),
            Ev::ToolStart { key, id, name } => {
                self.ensure_started(None, out);
                self.tool_index(&key, Some(id), Some(name), out);
            }
            Ev::ToolArgs { key, delta } => {
                self.ensure_started(None, out);
                let i = self.tool_index(&key, None, None, out);
                if !delta.is_empty() {
                    self.shared.tools[i].args.push_str(&delta);
                    self.emitter.tool_args(i, &delta, &self.shared, out);
                }
            }
            Ev::ToolEnd { key } => {
                if let Some(i) = self.open_tool(&key) {
                    self.shared.tools[i].done = true;
                    self.emitter.tool_complete(i, &self.shared, out);
                }
            }
        }
    }

    fn open_tool(&self, key: &str) -> Option<usize> {
        self.shared
            .tools
            .iter()
            .rposition(|t| t.key == key && !t.done)
    }

    /// Index of the open tool call with this key, creating it (and telling the emitter) if new.
    fn tool_index(
        &mut self,
        key: &str,
        id: Option<String>,
        name: Option<String>,
        out: &mut Vec<SseEvent>,
    ) -> usize {
        if let Some(i) = self.open_tool(key) {
            let t = &mut self.shared.tools[i];
            if t.name.is_empty()
                && let Some(n) = name
            {
                t.name = n;
            }
            return i;
        }
        self.shared.tools.push(ToolAcc {
            key: key.to_string(),
            id: id
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("call_{}", random_hex(24))),
            name: name.unwrap_or_default(),
            args: String::new(),
            done: false,
        });
        let i = self.shared.tools.len() - 1;
        self.emitter.tool_start(i, &self.shared, out);
        i
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        if let Emitter::Pass(p) = &mut self.emitter {
            p.close(&self.shared, out);
            self.ended = true;
            return;
        }
        self.ensure_started(None, out);
        for i in 0..self.shared.tools.len() {
            if !self.shared.tools[i].done {
                self.shared.tools[i].done = true;
                self.emitter.tool_complete(i, &self.shared, out);
            }
        }
        self.emitter.finish(&self.shared, out);
        self.ended = true;
    }
}

// =============================================================================================
// Parsers (upstream events → Ev)
// =============================================================================================

enum Parser {
    OpenAi(OpenAiIn),
    Claude(ClaudeIn),
    Gemini(GeminiIn),
    Responses(ResponsesIn),
}

impl Parser {
    fn new(from: Protocol) -> Self {
        match from {
            Protocol::OpenAi => Parser::OpenAi(OpenAiIn::default()),
            Protocol::Claude => Parser::Claude(ClaudeIn::default()),
            Protocol::Gemini => Parser::Gemini(GeminiIn::default()),
            Protocol::OpenAiResponses => Parser::Responses(ResponsesIn::default()),
        }
    }

    fn parse(&mut self, event: Option<&str>, data: &Value, out: &mut Vec<Ev>) {
        if let Some(e) = upstream_error(event, data) {
            out.push(e);
            return;
        }
        match self {
            Parser::OpenAi(p) => p.parse(data, out),
            Parser::Claude(p) => p.parse(event, data, out),
            Parser::Gemini(p) => p.parse(data, out),
            Parser::Responses(p) => p.parse(event, data, out),
        }
    }
}

/// In-band upstream errors in any of the four shapes.
fn upstream_error(event: Option<&str>, data: &Value) -> Option<Ev> {
    let is_error_event = event == Some("error") || str_field(data, "type") == Some("error");
    let e = data.get("error").filter(|e| e.is_object() || e.is_string());
    if !is_error_event && e.is_none() {
        return None;
    }
    let (message, status) = match e {
        Some(Value::String(s)) => (s.clone(), 500),
        Some(e) => {
            let message = str_field(e, "message")
                .unwrap_or("upstream error")
                .to_string();
            let status = e
                .get("code")
                .and_then(Value::as_u64)
                .filter(|c| (100..600).contains(c))
                .map(|c| c as u16)
                .or_else(|| str_field(e, "type").map(status_from_claude_type))
                .unwrap_or(500);
            (message, status)
        }
        None => (
            str_field(data, "message")
                .unwrap_or("upstream error")
                .to_string(),
            500,
        ),
    };
    Some(Ev::Error { status, message })
}

#[derive(Default)]
struct OpenAiIn {
    started: bool,
    /// OpenAI `tool_calls[].index` → our key, with the id that opened it.
    slots: HashMap<u64, (String, Option<String>)>,
    count: usize,
}

impl OpenAiIn {
    fn parse(&mut self, data: &Value, out: &mut Vec<Ev>) {
        if data.as_str().is_some_and(|s| s.trim() == "[DONE]") {
            out.push(Ev::End);
            return;
        }
        if !data.is_object() {
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Ev::Start {
                id: str_field(data, "id").map(str::to_string),
            });
        }
        let choice = data
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        if let Some(choice) = choice {
            let delta = choice
                .get("delta")
                .filter(|d| d.is_object())
                .unwrap_or(&Value::Null);
            for key in ["reasoning_content", "reasoning"] {
                if let Some(t) = str_field(delta, key).filter(|t| !t.is_empty()) {
                    out.push(Ev::Thinking(t.to_string()));
                    break;
                }
            }
            if let Some(t) = str_field(delta, "content").filter(|t| !t.is_empty()) {
                out.push(Ev::Text(t.to_string()));
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, c) in calls.iter().enumerate() {
                    self.tool_fragment(c, pos as u64, out);
                }
            }
            if let Some(fc) = delta.get("function_call").filter(|f| f.is_object()) {
                let c = json!({"index": u64::MAX, "function": fc});
                self.tool_fragment(&c, u64::MAX, out);
            }
            if let Some(f) = str_field(choice, "finish_reason") {
                out.push(Ev::Finish(openai::parse_finish(f)));
            }
        }
        // Zero-usage chunks (sent by some upstreams on every delta) must not overwrite real usage.
        if let Some(u) = data.get("usage").and_then(openai::parse_usage)
            && (u.input.unwrap_or(0) > 0 || u.output.unwrap_or(0) > 0 || u.total.unwrap_or(0) > 0)
        {
            out.push(Ev::Usage(u));
        }
    }

    fn tool_fragment(&mut self, c: &Value, pos: u64, out: &mut Vec<Ev>) {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos);
        let id = str_field(c, "id")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let f = c.get("function").unwrap_or(&Value::Null);
        let name = str_field(f, "name")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        // A new id at a known index is a new call (some upstreams send every call at index 0).
        let is_new = match self.slots.get(&index) {
            None => true,
            Some((_, known)) => id.is_some() && id != *known,
        };
        if is_new {
            self.count += 1;
            let key = format!("oa{}", self.count);
            self.slots.insert(index, (key.clone(), id.clone()));
            out.push(Ev::ToolStart {
                key,
                id: id.unwrap_or_default(),
                name: name.unwrap_or_default(),
            });
        }
        let Some((key, _)) = self.slots.get(&index) else {
            return;
        };
        let args = match f.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => Value::Object(o.clone()).to_string(),
            _ => String::new(),
        };
        if !args.is_empty() {
            out.push(Ev::ToolArgs {
                key: key.clone(),
                delta: args,
            });
        }
    }
}

#[derive(Default)]
struct ClaudeIn {
    tool_blocks: BTreeSet<u64>,
}

impl ClaudeIn {
    fn parse(&mut self, event: Option<&str>, data: &Value, out: &mut Vec<Ev>) {
        let ty = str_field(data, "type").or(event).unwrap_or("");
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ty {
            "message_start" => {
                let msg = data.get("message").unwrap_or(&Value::Null);
                if let Some(mut u) = msg.get("usage").and_then(claude::parse_usage) {
                    // `output_tokens` in message_start is a placeholder (0 or 1).
                    u.output = None;
                    out.push(Ev::Usage(u));
                }
                out.push(Ev::Start {
                    id: str_field(msg, "id").map(str::to_string),
                });
            }
            "content_block_start" => {
                let b = data.get("content_block").unwrap_or(&Value::Null);
                match str_field(b, "type") {
                    Some("text") => {
                        if let Some(t) = str_field(b, "text").filter(|t| !t.is_empty()) {
                            out.push(Ev::Text(t.to_string()));
                        }
                    }
                    Some("thinking") => {
                        if let Some(t) = str_field(b, "thinking").filter(|t| !t.is_empty()) {
                            out.push(Ev::Thinking(t.to_string()));
                        }
                    }
                    Some("tool_use") => {
                        self.tool_blocks.insert(index);
                        let key = format!("cl{index}");
                        out.push(Ev::ToolStart {
                            key: key.clone(),
                            id: str_field(b, "id").unwrap_or("").to_string(),
                            name: str_field(b, "name").unwrap_or("").to_string(),
                        });
                        if let Some(input) = b
                            .get("input")
                            .and_then(Value::as_object)
                            .filter(|o| !o.is_empty())
                        {
                            out.push(Ev::ToolArgs {
                                key,
                                delta: Value::Object(input.clone()).to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = data.get("delta").unwrap_or(&Value::Null);
                match str_field(d, "type") {
                    Some("text_delta") => {
                        if let Some(t) = str_field(d, "text") {
                            out.push(Ev::Text(t.to_string()));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = str_field(d, "thinking") {
                            out.push(Ev::Thinking(t.to_string()));
                        }
                    }
                    Some("signature_delta") => {
                        if let Some(s) = str_field(d, "signature") {
                            out.push(Ev::Signature(s.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(s) = str_field(d, "partial_json") {
                            out.push(Ev::ToolArgs {
                                key: format!("cl{index}"),
                                delta: s.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if self.tool_blocks.remove(&index) {
                    out.push(Ev::ToolEnd {
                        key: format!("cl{index}"),
                    });
                } else {
                    out.push(Ev::BlockEnd);
                }
            }
            "message_delta" => {
                let d = data.get("delta").unwrap_or(&Value::Null);
                if let Some(r) = str_field(d, "stop_reason") {
                    out.push(Ev::Finish(claude::parse_stop_reason(
                        r,
                        str_field(d, "stop_sequence"),
                    )));
                }
                if let Some(mut u) = data.get("usage").and_then(claude::parse_usage) {
                    // Anthropic may omit or zero `input_tokens` here; keep message_start's.
                    if u64_field(&data["usage"], "input_tokens").unwrap_or(0) == 0 {
                        u.input = None;
                    }
                    out.push(Ev::Usage(u));
                }
            }
            "message_stop" => out.push(Ev::End),
            _ => {}
        }
    }
}

#[derive(Default)]
struct GeminiIn {
    started: bool,
    calls: usize,
}

impl GeminiIn {
    fn parse(&mut self, data: &Value, out: &mut Vec<Ev>) {
        let data = gemini::unwrap_response(data);
        if !data.is_object() {
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Ev::Start {
                id: str_field(data, "responseId").map(str::to_string),
            });
        }
        let cand = data
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|a| a.first());
        if let Some(cand) = cand {
            let parts = cand
                .get("content")
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array);
            for p in parts.map(Vec::as_slice).unwrap_or(&[]) {
                let sig = p
                    .get("thoughtSignature")
                    .or_else(|| p.get("thought_signature"))
                    .and_then(Value::as_str);
                let is_thought = p.get("thought").and_then(Value::as_bool) == Some(true);
                for part in gemini::parse_candidate_parts(std::slice::from_ref(p)) {
                    match part {
                        Part::Text(t) => out.push(Ev::Text(t)),
                        Part::Thinking { text, .. } => out.push(Ev::Thinking(text)),
                        Part::ToolCall(c) => {
                            self.calls += 1;
                            let key = format!("gm{}", self.calls);
                            out.push(Ev::ToolStart {
                                key: key.clone(),
                                id: c.id,
                                name: c.name,
                            });
                            out.push(Ev::ToolArgs {
                                key: key.clone(),
                                delta: args_to_string(&c.args),
                            });
                            out.push(Ev::ToolEnd { key });
                        }
                        Part::Image(m) | Part::File { media: m, .. } => {
                            out.push(Ev::Text(format!("![image]({})", m.to_url())))
                        }
                        _ => {}
                    }
                }
                // Only signatures of thought parts have a place in other protocols (Claude
                // `signature_delta`); call signatures are replaced by the dummy on the way back.
                if is_thought && let Some(s) = sig {
                    out.push(Ev::Signature(s.to_string()));
                }
            }
            if let Some(f) = str_field(cand, "finishReason") {
                out.push(Ev::Finish(gemini::parse_finish(f)));
            }
        } else if data
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some()
        {
            out.push(Ev::Finish(Finish::ContentFilter));
        }
        if let Some(u) = data.get("usageMetadata").and_then(gemini::parse_usage) {
            out.push(Ev::Usage(u));
        }
    }
}

#[derive(Default)]
struct ResponsesIn {
    /// item id / output index → (key, custom tool, saw argument deltas)
    items: HashMap<String, (String, bool, bool)>,
    by_index: HashMap<u64, String>,
    summary_parts: HashMap<String, usize>,
    count: usize,
}

impl ResponsesIn {
    /// Our tool key for an event that names its item by `item_id` or `output_index`.
    fn item_key(&self, data: &Value) -> Option<String> {
        let item_id = str_field(data, "item_id")
            .filter(|k| self.items.contains_key(*k))
            .map(str::to_string)
            .or_else(|| {
                data.get("output_index")
                    .and_then(Value::as_u64)
                    .and_then(|i| self.by_index.get(&i).cloned())
            })?;
        self.items.get(&item_id).map(|(key, _, _)| key.clone())
    }

    fn start_tool(&mut self, item: &Value, output_index: Option<u64>, out: &mut Vec<Ev>) -> String {
        let item_id = str_field(item, "id")
            .map(str::to_string)
            .unwrap_or_else(|| format!("idx{}", output_index.unwrap_or(0)));
        if let Some((key, _, _)) = self.items.get(&item_id) {
            return key.clone();
        }
        self.count += 1;
        let key = format!("rs{}", self.count);
        let custom = str_field(item, "type") == Some("custom_tool_call");
        self.items
            .insert(item_id.clone(), (key.clone(), custom, false));
        if let Some(i) = output_index {
            self.by_index.insert(i, item_id);
        }
        out.push(Ev::ToolStart {
            key: key.clone(),
            id: str_field(item, "call_id")
                .or_else(|| str_field(item, "id"))
                .unwrap_or("")
                .to_string(),
            name: str_field(item, "name").unwrap_or("").to_string(),
        });
        if custom {
            // Free-form input is carried as `{"input": "<text>"}`; open the JSON string here.
            out.push(Ev::ToolArgs {
                key: key.clone(),
                delta: "{\"input\":\"".into(),
            });
        }
        key
    }

    fn parse(&mut self, event: Option<&str>, data: &Value, out: &mut Vec<Ev>) {
        let ty = str_field(data, "type").or(event).unwrap_or("");
        match ty {
            "response.created" => {
                let id = data.get("response").and_then(|r| str_field(r, "id"));
                out.push(Ev::Start {
                    id: id.map(str::to_string),
                });
            }
            "response.output_item.added" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                if matches!(
                    str_field(item, "type"),
                    Some("function_call" | "custom_tool_call")
                ) {
                    let key = self.start_tool(
                        item,
                        data.get("output_index").and_then(Value::as_u64),
                        out,
                    );
                    if let Some(a) = str_field(item, "arguments").filter(|a| !a.is_empty()) {
                        if let Some(entry) = self.items.values_mut().find(|(k, _, _)| *k == key) {
                            entry.2 = true;
                        }
                        out.push(Ev::ToolArgs {
                            key,
                            delta: a.to_string(),
                        });
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(d) = str_field(data, "delta") {
                    out.push(Ev::Text(d.to_string()));
                }
            }
            "response.reasoning_summary_part.added" => {
                let item = str_field(data, "item_id").unwrap_or("").to_string();
                let n = self.summary_parts.entry(item).or_insert(0);
                *n += 1;
                if *n > 1 {
                    out.push(Ev::Thinking("\n\n".into()));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(d) = str_field(data, "delta") {
                    out.push(Ev::Thinking(d.to_string()));
                }
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let custom = ty == "response.custom_tool_call_input.delta";
                if let (Some(key), Some(d)) = (self.item_key(data), str_field(data, "delta")) {
                    let delta = if custom {
                        json_escape_inner(d)
                    } else {
                        d.to_string()
                    };
                    if let Some(entry) = self.items.values_mut().find(|(k, _, _)| *k == key) {
                        entry.2 = true;
                    }
                    out.push(Ev::ToolArgs { key, delta });
                }
            }
            "response.output_item.done" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                let item_ty = str_field(item, "type");
                if matches!(item_ty, Some("function_call" | "custom_tool_call")) {
                    let key = self.start_tool(
                        item,
                        data.get("output_index").and_then(Value::as_u64),
                        out,
                    );
                    let (custom, saw_args) = self
                        .items
                        .values()
                        .find(|(k, _, _)| *k == key)
                        .map(|(_, c, s)| (*c, *s))
                        .unwrap_or((false, false));
                    if !saw_args {
                        let full = if custom {
                            json_escape_inner(str_field(item, "input").unwrap_or(""))
                        } else {
                            str_field(item, "arguments").unwrap_or("").to_string()
                        };
                        if !full.is_empty() {
                            out.push(Ev::ToolArgs {
                                key: key.clone(),
                                delta: full,
                            });
                        }
                    }
                    if custom {
                        out.push(Ev::ToolArgs {
                            key: key.clone(),
                            delta: "\"}".into(),
                        });
                    }
                    out.push(Ev::ToolEnd { key });
                } else if item_ty == Some("image_generation_call")
                    && let Some(b64) = str_field(item, "result")
                {
                    out.push(Ev::Text(format!(
                        "![generated image](data:image/png;base64,{b64})"
                    )));
                } else if matches!(item_ty, Some("message" | "reasoning")) {
                    out.push(Ev::BlockEnd);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" | "response.done" => {
                let resp = data.get("response").unwrap_or(&Value::Null);
                if let Some(u) = resp.get("usage").and_then(responses::parse_usage) {
                    out.push(Ev::Usage(u));
                }
                if ty == "response.failed" {
                    let message = resp
                        .get("error")
                        .and_then(|e| str_field(e, "message"))
                        .unwrap_or("upstream response failed")
                        .to_string();
                    out.push(Ev::Error {
                        status: 500,
                        message,
                    });
                    return;
                }
                if let Some(f) = responses::parse_status(resp) {
                    out.push(Ev::Finish(f));
                }
                out.push(Ev::End);
            }
            _ => {}
        }
    }
}

/// `s` as the inside of a JSON string literal.
fn json_escape_inner(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

// =============================================================================================
// Emitters (Ev → client events)
// =============================================================================================

enum Emitter {
    OpenAi(OpenAiOut),
    Claude(ClaudeOut),
    Gemini(GeminiOut),
    Responses(ResponsesOut),
    Pass(Pass),
}

impl Emitter {
    fn start(&mut self, id: Option<String>, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::OpenAi(e) => e.start(sh, out),
            Emitter::Claude(e) => e.start(id, sh, out),
            Emitter::Gemini(e) => e.id = id,
            Emitter::Responses(e) => e.start(sh, out),
            Emitter::Pass(_) => {}
        }
    }

    fn text(&mut self, t: &str, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::OpenAi(e) => out.push(e.chunk(sh, json!({"content": t}), None, None)),
            Emitter::Claude(e) => e.delta(
                BlockKind::Text,
                json!({"type": "text_delta", "text": t}),
                out,
            ),
            Emitter::Gemini(e) => out.push(e.chunk(sh, vec![json!({"text": t})], None)),
            Emitter::Responses(e) => e.delta(ItemKind::Message, t, sh, out),
            Emitter::Pass(_) => {}
        }
    }

    fn thinking(&mut self, t: &str, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::OpenAi(e) => {
                out.push(e.chunk(sh, json!({"reasoning_content": t}), None, None))
            }
            Emitter::Claude(e) => e.delta(
                BlockKind::Thinking,
                json!({"type": "thinking_delta", "thinking": t}),
                out,
            ),
            Emitter::Gemini(e) => {
                out.push(e.chunk(sh, vec![json!({"text": t, "thought": true})], None))
            }
            Emitter::Responses(e) => e.delta(ItemKind::Reasoning, t, sh, out),
            Emitter::Pass(_) => {}
        }
    }

    fn signature(&mut self, s: &str, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::Claude(e) => {
                // The signature ends a thinking block.
                e.delta(
                    BlockKind::Thinking,
                    json!({"type": "signature_delta", "signature": s}),
                    out,
                );
                e.close(out);
            }
            Emitter::Gemini(e) => out.push(e.chunk(
                sh,
                vec![json!({"text": "", "thought": true, "thoughtSignature": s})],
                None,
            )),
            // OpenAI and Responses have no place for a foreign signature.
            _ => {}
        }
    }

    fn block_end(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::Claude(e) => e.close(out),
            Emitter::Responses(e) => e.close(sh, out),
            _ => {}
        }
    }

    fn tool_start(&mut self, i: usize, sh: &Shared, out: &mut Vec<SseEvent>) {
        if let Emitter::OpenAi(e) = self {
            let t = &sh.tools[i];
            let index = e.tool_ordinal(i);
            out.push(e.chunk(
                sh,
                json!({"tool_calls": [{
                    "index": index,
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.name, "arguments": ""},
                }]}),
                None,
                None,
            ));
        }
    }

    fn tool_args(&mut self, i: usize, delta: &str, sh: &Shared, out: &mut Vec<SseEvent>) {
        if let Emitter::OpenAi(e) = self {
            let index = e.tool_ordinal(i);
            out.push(e.chunk(
                sh,
                json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}),
                None,
                None,
            ));
        }
    }

    fn tool_complete(&mut self, i: usize, sh: &Shared, out: &mut Vec<SseEvent>) {
        let t = &sh.tools[i];
        let args = parse_args(&t.args);
        match self {
            Emitter::Claude(e) => e.tool_block(t, &args, out),
            Emitter::Gemini(e) => out.push(e.chunk(
                sh,
                vec![json!({"functionCall": {"id": t.id, "name": t.name, "args": args}})],
                None,
            )),
            Emitter::Responses(e) => e.tool_item(t, &args, sh, out),
            _ => {}
        }
    }

    fn finish(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self {
            Emitter::OpenAi(e) => e.finish(sh, out),
            Emitter::Claude(e) => e.finish(sh, out),
            Emitter::Gemini(e) => e.finish(sh, out),
            Emitter::Responses(e) => e.finish(sh, out),
            Emitter::Pass(_) => {}
        }
    }
}

fn data_event(data: Value) -> SseEvent {
    SseEvent {
        event: None,
        data: data.to_string(),
    }
}

fn named_event(data: Value) -> SseEvent {
    SseEvent {
        event: str_field(&data, "type").map(str::to_string),
        data: data.to_string(),
    }
}

// ----- OpenAI ---------------------------------------------------------------------------------

struct OpenAiOut {
    id: String,
    created: u64,
    ordinals: HashMap<usize, usize>,
    include_usage: bool,
}

impl OpenAiOut {
    fn new() -> Self {
        OpenAiOut {
            id: format!("chatcmpl-{}", random_hex(24)),
            created: now_secs(),
            ordinals: HashMap::new(),
            include_usage: false,
        }
    }

    /// Running ordinal of a tool call across the stream (what OpenAI clients index by).
    fn tool_ordinal(&mut self, i: usize) -> usize {
        let next = self.ordinals.len();
        *self.ordinals.entry(i).or_insert(next)
    }

    fn chunk(
        &self,
        sh: &Shared,
        delta: Value,
        finish: Option<&str>,
        usage: Option<Value>,
    ) -> SseEvent {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": sh.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let (Some(u), Some(o)) = (usage, c.as_object_mut()) {
            o.insert("usage".into(), u);
        }
        data_event(c)
    }

    fn start(&self, sh: &Shared, out: &mut Vec<SseEvent>) {
        out.push(self.chunk(sh, json!({"role": "assistant", "content": ""}), None, None));
    }

    fn finish(&self, sh: &Shared, out: &mut Vec<SseEvent>) {
        let usage = sh.usage().map(openai::render_usage);
        let inline = if self.include_usage {
            None
        } else {
            usage.clone()
        };
        out.push(self.chunk(
            sh,
            json!({}),
            Some(openai::finish_str(&sh.finish())),
            inline,
        ));
        if self.include_usage {
            out.push(data_event(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": sh.model,
                "choices": [],
                "usage": usage.unwrap_or_else(|| openai::render_usage(&Usage::default())),
            })));
        }
        out.push(SseEvent {
            event: None,
            data: "[DONE]".into(),
        });
    }
}

// ----- Claude ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
}

struct ClaudeOut {
    open: Option<(BlockKind, usize)>,
    next_index: usize,
}

impl ClaudeOut {
    fn new() -> Self {
        ClaudeOut {
            open: None,
            next_index: 0,
        }
    }

    fn start(&mut self, id: Option<String>, sh: &Shared, out: &mut Vec<SseEvent>) {
        let id = id
            .filter(|i| i.starts_with("msg_"))
            .unwrap_or_else(|| format!("msg_{}", random_hex(24)));
        let u = &sh.usage;
        out.push(named_event(json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": sh.model,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": u.claude_input(),
                    "cache_creation_input_tokens": u.cache_creation.unwrap_or(0),
                    "cache_read_input_tokens": u.cached.unwrap_or(0),
                    "output_tokens": 0,
                },
            },
        })));
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(named_event(
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, kind: BlockKind, out: &mut Vec<SseEvent>) -> usize {
        if let Some((k, i)) = self.open
            && k == kind
        {
            return i;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match kind {
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::Thinking => json!({"type": "thinking", "thinking": ""}),
        };
        out.push(named_event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        })));
        self.open = Some((kind, index));
        index
    }

    fn delta(&mut self, kind: BlockKind, delta: Value, out: &mut Vec<SseEvent>) {
        let index = self.open_block(kind, out);
        out.push(named_event(json!({
            "type": "content_block_delta",
            "index": index,
            "delta": delta,
        })));
    }

    fn tool_block(&mut self, t: &ToolAcc, args: &Value, out: &mut Vec<SseEvent>) {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(named_event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "tool_use", "id": claude_tool_id(&t.id), "name": t.name, "input": {}},
        })));
        out.push(named_event(json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": args_to_string(args)},
        })));
        out.push(named_event(
            json!({"type": "content_block_stop", "index": index}),
        ));
    }

    fn finish(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        self.close(out);
        let finish = sh.finish();
        let u = &sh.usage;
        out.push(named_event(json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": claude::stop_reason_str(&finish),
                "stop_sequence": claude::stop_sequence_value(&finish),
            },
            "usage": {
                "input_tokens": u.claude_input(),
                "cache_creation_input_tokens": u.cache_creation.unwrap_or(0),
                "cache_read_input_tokens": u.cached.unwrap_or(0),
                "output_tokens": u.output_with_reasoning(),
            },
        })));
        out.push(named_event(json!({"type": "message_stop"})));
    }
}

// ----- Gemini ---------------------------------------------------------------------------------

#[derive(Default)]
struct GeminiOut {
    id: Option<String>,
}

impl GeminiOut {
    fn chunk(
        &self,
        sh: &Shared,
        parts: Vec<Value>,
        finish: Option<(&str, Option<Value>)>,
    ) -> SseEvent {
        let mut cand = Map::new();
        if !parts.is_empty() {
            cand.insert("content".into(), json!({"role": "model", "parts": parts}));
        }
        if let Some((reason, _)) = &finish {
            cand.insert("finishReason".into(), json!(reason));
        }
        cand.insert("index".into(), json!(0));
        let mut c = Map::new();
        c.insert("candidates".into(), json!([cand]));
        if let Some((_, Some(u))) = finish {
            c.insert("usageMetadata".into(), u);
        }
        c.insert("modelVersion".into(), json!(sh.model));
        if let Some(id) = &self.id {
            c.insert("responseId".into(), json!(id));
        }
        data_event(Value::Object(c))
    }

    fn finish(&self, sh: &Shared, out: &mut Vec<SseEvent>) {
        let usage = sh.usage().map(gemini::render_usage);
        out.push(self.chunk(
            sh,
            Vec::new(),
            Some((gemini::finish_str(&sh.finish()), usage)),
        ));
    }
}

// ----- Responses ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Message,
    Reasoning,
}

struct OpenItem {
    kind: ItemKind,
    output_index: usize,
    id: String,
    text: String,
}

struct ResponsesOut {
    id: String,
    created_at: u64,
    seq: u64,
    open: Option<OpenItem>,
    output: Vec<Value>,
}

impl ResponsesOut {
    fn new() -> Self {
        ResponsesOut {
            id: format!("resp_{}", random_hex(32)),
            created_at: now_secs(),
            seq: 0,
            open: None,
            output: Vec::new(),
        }
    }

    fn ev(&mut self, ty: &str, mut fields: Value) -> SseEvent {
        if let Some(o) = fields.as_object_mut() {
            o.insert("type".into(), json!(ty));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        SseEvent {
            event: Some(ty.to_string()),
            data: fields.to_string(),
        }
    }

    fn response(
        &self,
        sh: &Shared,
        status: &str,
        incomplete: Value,
        output: Vec<Value>,
        usage: Value,
    ) -> Value {
        responses::response_object(
            &self.id,
            self.created_at,
            &sh.model,
            status,
            incomplete,
            output,
            usage,
        )
    }

    fn start(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        let r = self.response(sh, "in_progress", Value::Null, Vec::new(), Value::Null);
        let e = self.ev("response.created", json!({"response": r}));
        out.push(e);
        let e = self.ev("response.in_progress", json!({"response": r}));
        out.push(e);
    }

    fn close(&mut self, _sh: &Shared, out: &mut Vec<SseEvent>) {
        let Some(item) = self.open.take() else {
            return;
        };
        let oi = item.output_index;
        match item.kind {
            ItemKind::Message => {
                let part = json!({"type": "output_text", "text": item.text, "annotations": []});
                let e = self.ev(
                    "response.output_text.done",
                    json!({"item_id": item.id, "output_index": oi, "content_index": 0, "text": item.text}),
                );
                out.push(e);
                let e = self.ev(
                    "response.content_part.done",
                    json!({"item_id": item.id, "output_index": oi, "content_index": 0, "part": part}),
                );
                out.push(e);
                let done = responses::message_item(&item.id, &item.text);
                let e = self.ev(
                    "response.output_item.done",
                    json!({"output_index": oi, "item": done}),
                );
                out.push(e);
                self.output.push(done);
            }
            ItemKind::Reasoning => {
                let part = json!({"type": "summary_text", "text": item.text});
                let e = self.ev(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item.id, "output_index": oi, "summary_index": 0, "text": item.text}),
                );
                out.push(e);
                let e = self.ev(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": item.id, "output_index": oi, "summary_index": 0, "part": part}),
                );
                out.push(e);
                let done = responses::reasoning_item(&item.id, &item.text);
                let e = self.ev(
                    "response.output_item.done",
                    json!({"output_index": oi, "item": done}),
                );
                out.push(e);
                self.output.push(done);
            }
        }
    }

    fn delta(&mut self, kind: ItemKind, text: &str, sh: &Shared, out: &mut Vec<SseEvent>) {
        if self.open.as_ref().map(|o| o.kind) != Some(kind) {
            self.close(sh, out);
            let oi = self.output.len();
            let (id, item) = match kind {
                ItemKind::Message => {
                    let id = format!("msg_{}", random_hex(32));
                    let item = json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
                    (id, item)
                }
                ItemKind::Reasoning => {
                    let id = format!("rs_{}", random_hex(32));
                    (
                        id.clone(),
                        json!({"id": id, "type": "reasoning", "summary": []}),
                    )
                }
            };
            let e = self.ev(
                "response.output_item.added",
                json!({"output_index": oi, "item": item}),
            );
            out.push(e);
            let e = match kind {
                ItemKind::Message => self.ev(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": oi, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}),
                ),
                ItemKind::Reasoning => self.ev(
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": oi, "summary_index": 0,
                           "part": {"type": "summary_text", "text": ""}}),
                ),
            };
            out.push(e);
            self.open = Some(OpenItem {
                kind,
                output_index: oi,
                id,
                text: String::new(),
            });
        }
        let Some(item) = self.open.as_mut() else {
            return;
        };
        item.text.push_str(text);
        let (id, oi) = (item.id.clone(), item.output_index);
        let e = match kind {
            ItemKind::Message => self.ev(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": oi, "content_index": 0, "delta": text}),
            ),
            ItemKind::Reasoning => self.ev(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": oi, "summary_index": 0, "delta": text}),
            ),
        };
        out.push(e);
    }

    fn tool_item(&mut self, t: &ToolAcc, args: &Value, sh: &Shared, out: &mut Vec<SseEvent>) {
        self.close(sh, out);
        let oi = self.output.len();
        let id = format!("fc_{}", random_hex(32));
        let arguments = args_to_string(args);
        let added = responses::function_call_item(&id, &t.id, &t.name, "", "in_progress");
        let e = self.ev(
            "response.output_item.added",
            json!({"output_index": oi, "item": added}),
        );
        out.push(e);
        let e = self.ev(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": oi, "delta": arguments}),
        );
        out.push(e);
        let e = self.ev(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": oi, "arguments": arguments}),
        );
        out.push(e);
        let done = responses::function_call_item(&id, &t.id, &t.name, &arguments, "completed");
        let e = self.ev(
            "response.output_item.done",
            json!({"output_index": oi, "item": done}),
        );
        out.push(e);
        self.output.push(done);
    }

    fn finish(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        self.close(sh, out);
        let (status, incomplete) = responses::status_of(&sh.finish());
        let usage = responses::render_usage(&sh.usage);
        let r = self.response(sh, status, incomplete, self.output.clone(), usage);
        let ty = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let e = self.ev(ty, json!({"response": r}));
        out.push(e);
    }
}

// ----- Same-protocol pass-through ---------------------------------------------------------------

struct Pass {
    proto: Protocol,
    started: bool,
    /// Claude: open block indexes. Responses: unused.
    open_blocks: BTreeSet<u64>,
    delta_seen: bool,
    finish_seen: bool,
    last_seq: Option<u64>,
    items: Vec<Value>,
    resp_id: String,
}

impl Pass {
    fn new(proto: Protocol) -> Self {
        Pass {
            proto,
            started: false,
            open_blocks: BTreeSet::new(),
            delta_seen: false,
            finish_seen: false,
            last_seq: None,
            items: Vec::new(),
            resp_id: format!("resp_{}", random_hex(32)),
        }
    }

    /// Forwards one upstream event; returns true when the stream is over.
    fn forward(
        &mut self,
        event: Option<&str>,
        data: &Value,
        sh: &Shared,
        out: &mut Vec<SseEvent>,
    ) -> bool {
        match self.proto {
            Protocol::OpenAi => self.forward_openai(data, out),
            Protocol::Claude => self.forward_claude(event, data, sh, out),
            Protocol::Gemini => self.forward_gemini(data, out),
            Protocol::OpenAiResponses => self.forward_responses(event, data, sh, out),
        }
    }

    fn forward_openai(&mut self, data: &Value, out: &mut Vec<SseEvent>) -> bool {
        if data.as_str().is_some_and(|s| s.trim() == "[DONE]") {
            out.push(SseEvent {
                event: None,
                data: "[DONE]".into(),
            });
            return true;
        }
        if !data.is_object() {
            return false;
        }
        if data.get("error").is_some() {
            out.push(data_event(data.clone()));
            return true;
        }
        let mut chunk = data.clone();
        // Sloppy OpenAI-compatible upstreams send `object: ""`.
        if let Some(o) = chunk.as_object_mut()
            && o.get("object").and_then(Value::as_str) != Some("chat.completion.chunk")
            && o.contains_key("choices")
        {
            o.insert("object".into(), json!("chat.completion.chunk"));
        }
        if !self.started {
            self.started = true;
            // OpenAI clients expect the role on the first delta.
            if let Some(delta) = chunk
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .and_then(|a| a.first_mut())
                .and_then(|c| c.get_mut("delta"))
                .and_then(Value::as_object_mut)
                && !delta.get("role").is_some_and(Value::is_string)
            {
                delta.insert("role".into(), json!("assistant"));
            }
        }
        out.push(data_event(chunk));
        false
    }

    fn claude_message_start(&self, sh: &Shared) -> SseEvent {
        named_event(json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_{}", random_hex(24)),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": sh.model,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": sh.usage.claude_input(), "output_tokens": 0},
            },
        }))
    }

    fn claude_close_blocks(&mut self, out: &mut Vec<SseEvent>) {
        for index in std::mem::take(&mut self.open_blocks) {
            out.push(named_event(
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn claude_message_delta(&self, sh: &Shared) -> SseEvent {
        let finish = sh.finish();
        named_event(json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": claude::stop_reason_str(&finish),
                "stop_sequence": claude::stop_sequence_value(&finish),
            },
            "usage": {"output_tokens": sh.usage.output_with_reasoning()},
        }))
    }

    fn forward_claude(
        &mut self,
        event: Option<&str>,
        data: &Value,
        sh: &Shared,
        out: &mut Vec<SseEvent>,
    ) -> bool {
        let ty = str_field(data, "type").or(event).unwrap_or("");
        if ty == "error" {
            out.push(SseEvent {
                event: Some("error".into()),
                data: data.to_string(),
            });
            return true;
        }
        // A ping before message_start must not make us synthesise a start (and then drop the
        // real one with its id and usage).
        if ty.is_empty() || (ty == "ping" && !self.started) {
            return false;
        }
        if ty == "message_start" {
            if self.started {
                return false;
            }
            self.started = true;
        } else if !self.started {
            self.started = true;
            out.push(self.claude_message_start(sh));
        }
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ty {
            "content_block_start" => {
                self.open_blocks.insert(index);
            }
            "content_block_stop" => {
                self.open_blocks.remove(&index);
            }
            "message_delta" => {
                self.claude_close_blocks(out);
                self.delta_seen = true;
            }
            "message_stop" => {
                self.claude_close_blocks(out);
                if !self.delta_seen {
                    out.push(self.claude_message_delta(sh));
                }
                out.push(SseEvent {
                    event: Some("message_stop".into()),
                    data: data.to_string(),
                });
                return true;
            }
            _ => {}
        }
        out.push(SseEvent {
            event: Some(ty.to_string()),
            data: data.to_string(),
        });
        false
    }

    fn forward_gemini(&mut self, data: &Value, out: &mut Vec<SseEvent>) -> bool {
        let data = gemini::unwrap_response(data);
        if !data.is_object() {
            return false;
        }
        if data.get("error").is_some() {
            out.push(data_event(data.clone()));
            return true;
        }
        if data
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| c.get("finishReason").is_some()))
        {
            self.finish_seen = true;
        }
        out.push(data_event(data.clone()));
        false
    }

    fn responses_event(&mut self, ty: &str, mut fields: Value) -> SseEvent {
        let seq = self.last_seq.map(|s| s + 1).unwrap_or(0);
        self.last_seq = Some(seq);
        if let Some(o) = fields.as_object_mut() {
            o.insert("type".into(), json!(ty));
            o.insert("sequence_number".into(), json!(seq));
        }
        SseEvent {
            event: Some(ty.to_string()),
            data: fields.to_string(),
        }
    }

    fn responses_start(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        let r = responses::response_object(
            &self.resp_id,
            now_secs(),
            &sh.model,
            "in_progress",
            Value::Null,
            Vec::new(),
            Value::Null,
        );
        let e = self.responses_event("response.created", json!({"response": r}));
        out.push(e);
        let e = self.responses_event("response.in_progress", json!({"response": r}));
        out.push(e);
    }

    fn forward_responses(
        &mut self,
        event: Option<&str>,
        data: &Value,
        sh: &Shared,
        out: &mut Vec<SseEvent>,
    ) -> bool {
        let ty = str_field(data, "type").or(event).unwrap_or("");
        if ty.is_empty() {
            return false;
        }
        if ty == "error" {
            out.push(SseEvent {
                event: Some("error".into()),
                data: data.to_string(),
            });
            return true;
        }
        if ty == "response.created" {
            if let Some(id) = data.get("response").and_then(|r| str_field(r, "id")) {
                self.resp_id = id.to_string();
            }
            self.started = true;
        } else if !self.started {
            self.started = true;
            self.responses_start(sh, out);
        }
        if let Some(s) = u64_field(data, "sequence_number") {
            self.last_seq = Some(self.last_seq.map_or(s, |l| l.max(s)));
        }
        if ty == "response.output_item.done"
            && let Some(item) = data.get("item")
        {
            self.items.push(item.clone());
        }
        out.push(SseEvent {
            event: Some(ty.to_string()),
            data: data.to_string(),
        });
        matches!(
            ty,
            "response.completed" | "response.incomplete" | "response.failed"
        )
    }

    fn close(&mut self, sh: &Shared, out: &mut Vec<SseEvent>) {
        match self.proto {
            Protocol::OpenAi => out.push(SseEvent {
                event: None,
                data: "[DONE]".into(),
            }),
            Protocol::Claude => {
                if !self.started {
                    self.started = true;
                    out.push(self.claude_message_start(sh));
                }
                self.claude_close_blocks(out);
                if !self.delta_seen {
                    out.push(self.claude_message_delta(sh));
                }
                out.push(named_event(json!({"type": "message_stop"})));
            }
            Protocol::Gemini => {
                if !self.finish_seen {
                    let mut c = json!({"candidates": [{"finishReason": gemini::finish_str(&sh.finish()), "index": 0}]});
                    if let (Some(u), Some(o)) = (sh.usage(), c.as_object_mut()) {
                        o.insert("usageMetadata".into(), gemini::render_usage(u));
                    }
                    out.push(data_event(c));
                }
            }
            Protocol::OpenAiResponses => {
                if !self.started {
                    self.started = true;
                    self.responses_start(sh, out);
                }
                let (status, incomplete) = responses::status_of(&sh.finish());
                let r = responses::response_object(
                    &self.resp_id,
                    now_secs(),
                    &sh.model,
                    status,
                    incomplete,
                    self.items.clone(),
                    responses::render_usage(&sh.usage),
                );
                let ty = if status == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                let e = self.responses_event(ty, json!({"response": r}));
                out.push(e);
            }
        }
    }
}
