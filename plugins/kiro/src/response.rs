//! Kiro events → Claude Messages answers (kiro.md §4.3–4.5).
//!
//! [`event_of`] reads one decoded frame into a [`KiroEvent`]. The [`Assembler`] turns the
//! events into Claude SSE events — `message_start` first, one text block for text deltas,
//! `thinking` blocks for a leading `<thinking>…</thinking>` when thinking was requested, a
//! `tool_use` block per `toolUseId` with `input_json_delta`s, then `message_delta` (stop reason
//! and usage) and `message_stop` last. A unary answer is the same events folded into one
//! message ([`fold`]) and finished by [`finalize_unary`] (tool calls written inline as
//! `[Called name with args: {…}]` become `tool_use` blocks; duplicate tool calls are dropped).
//!
//! Rules kept from the original: two identical text deltas in a row are an upstream duplicate
//! and the second is dropped; a reply holding only thinking gets a `" "` text block and
//! `stop_reason: max_tokens`; `output_tokens` is estimated from the text, thinking and tool
//! inputs; `input_tokens` comes from `contextUsagePercentage` × the model's context window
//! minus the output, or the local estimate when the upstream sent no usage.
//! An `exception` frame after the end-of-content events (`meteringEvent`,
//! `contextUsageEvent`) is the upstream's known trailing "ghost" exception and is ignored; any
//! other exception is reported. Not kept: the original's rewriting of a literal `\n` inside
//! decoded text into a newline (it corrupted code that contains `\n`), which only made sense
//! for its raw-text JSON scanning.

use std::collections::{HashMap, HashSet};

use aiclient_sdk::provider::StreamEvent;
use serde_json::{Map, Value, json};

use crate::eventstream::Frame;
use crate::request::estimate_text;

/// One upstream event.
#[derive(Clone, Debug, PartialEq)]
pub enum KiroEvent {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Option<String>,
        stop: bool,
    },
    ContextUsage(f64),
    Metering,
    Exception {
        kind: String,
        message: String,
    },
    /// An event type this plugin does not use (follow-up prompts, code references, …).
    Ignored(String),
}

/// Reads one frame. `Err` names what was malformed.
pub fn event_of(frame: &Frame) -> Result<KiroEvent, String> {
    let payload = || -> Result<Value, String> {
        serde_json::from_slice(&frame.payload)
            .map_err(|e| format!("event payload is not JSON: {e}"))
    };
    match frame.header(":message-type").unwrap_or("event") {
        "exception" => {
            let kind = frame
                .header(":exception-type")
                .unwrap_or("UnknownException")
                .to_string();
            let message = payload()
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("Message"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&frame.payload)
                        .chars()
                        .take(500)
                        .collect()
                });
            Ok(KiroEvent::Exception { kind, message })
        }
        "error" => Ok(KiroEvent::Exception {
            kind: frame
                .header(":error-code")
                .unwrap_or("UnknownError")
                .to_string(),
            message: frame.header(":error-message").unwrap_or("").to_string(),
        }),
        _ => {
            let ty = frame.header(":event-type").unwrap_or("");
            match ty {
                "assistantResponseEvent" => {
                    let v = payload()?;
                    Ok(KiroEvent::Text(
                        v.get("content")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ))
                }
                "toolUseEvent" => {
                    let v = payload()?;
                    let s = |k: &str| {
                        v.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let input = match v.get("input") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Null) | None => None,
                        Some(other) => Some(other.to_string()),
                    };
                    let (id, name) = (s("toolUseId"), s("name"));
                    if id.is_empty() {
                        return Err("toolUseEvent without a toolUseId".into());
                    }
                    Ok(KiroEvent::ToolUse {
                        id,
                        name,
                        input,
                        stop: v.get("stop").and_then(Value::as_bool).unwrap_or(false),
                    })
                }
                "contextUsageEvent" => {
                    let v = payload()?;
                    Ok(KiroEvent::ContextUsage(
                        v.get("contextUsagePercentage")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0),
                    ))
                }
                "meteringEvent" => Ok(KiroEvent::Metering),
                other => Ok(KiroEvent::Ignored(other.to_string())),
            }
        }
    }
}

/// An upstream exception that ends the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    pub kind: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    Tool(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Think {
    /// Thinking not requested: all text is text.
    Off,
    /// Waiting to see whether the text starts with `<thinking>`.
    Detect,
    /// Inside the thinking; `strip_nl` drops one newline right after the opening tag.
    In {
        strip_nl: bool,
    },
    /// After `</thinking>`: up to two newlines are dropped.
    AfterClose {
        stripped: u8,
    },
    Done,
}

const OPEN_TAG: &str = "<thinking>";
const CLOSE_TAG: &str = "</thinking>";
/// Leading whitespace tolerated before deciding there is no thinking tag.
const DETECT_LIMIT: usize = 4096;

/// Kiro events → Claude SSE events.
pub struct Assembler {
    model: String,
    id: String,
    names: HashMap<String, String>,
    input_estimate: u64,
    window: u64,
    think: Think,
    pending: String,
    open: Open,
    next_index: u64,
    closed_tools: HashSet<String>,
    tool_input: String,
    last_text: Option<String>,
    any_text: bool,
    any_thinking: bool,
    any_tool: bool,
    out_ascii: u64,
    out_other: u64,
    tool_tokens: u64,
    context_pct: Option<f64>,
    content_ended: bool,
    finished: bool,
}

fn ev(name: &str, data: Value) -> StreamEvent {
    StreamEvent::new(name, data.to_string())
}

impl Assembler {
    /// `names`: shortened tool name → the client's; `window`: the model's context window.
    pub fn new(
        model: &str,
        names: HashMap<String, String>,
        thinking: bool,
        input_estimate: u64,
        window: u64,
    ) -> Self {
        Self {
            model: model.to_string(),
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            names,
            input_estimate,
            window,
            think: if thinking { Think::Detect } else { Think::Off },
            pending: String::new(),
            open: Open::None,
            next_index: 0,
            closed_tools: HashSet::new(),
            tool_input: String::new(),
            last_text: None,
            any_text: false,
            any_thinking: false,
            any_tool: false,
            out_ascii: 0,
            out_other: 0,
            tool_tokens: 0,
            context_pct: None,
            content_ended: false,
            finished: false,
        }
    }

    /// `message_start`.
    pub fn start(&mut self, out: &mut Vec<StreamEvent>) {
        out.push(ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_estimate, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        ));
    }

    /// Whether any content block has been started.
    pub fn has_content(&self) -> bool {
        self.next_index > 0
    }

    /// One upstream event. `Err`: the upstream ended the answer with an exception.
    pub fn push(&mut self, event: KiroEvent, out: &mut Vec<StreamEvent>) -> Result<(), Exception> {
        if !matches!(event, KiroEvent::Text(_)) {
            self.last_text = None;
        }
        match event {
            KiroEvent::Text(t) => {
                if t.is_empty() || self.last_text.as_deref() == Some(t.as_str()) {
                    return Ok(());
                }
                self.last_text = Some(t.clone());
                self.text(&t, out);
            }
            KiroEvent::ToolUse {
                id,
                name,
                input,
                stop,
            } => self.tool(id, name, input, stop, out),
            KiroEvent::ContextUsage(p) => {
                self.context_pct = Some(p);
                self.content_ended = true;
            }
            KiroEvent::Metering => self.content_ended = true,
            KiroEvent::Exception { kind, message } => {
                if self.content_ended {
                    tracing::warn!(kind = %kind, message = %message, "ignoring Kiro's trailing exception after a complete answer");
                    return Ok(());
                }
                return Err(Exception { kind, message });
            }
            KiroEvent::Ignored(_) => {}
        }
        Ok(())
    }

    fn count(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_ascii() {
                self.out_ascii += 1;
            } else {
                self.out_other += 1;
            }
        }
    }

    fn open_block(&mut self, kind: Open, out: &mut Vec<StreamEvent>) {
        if self.open == kind {
            return;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        // Tool blocks are opened by `tool`, which knows their name.
        let block = match &kind {
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Thinking => json!({"type": "thinking", "thinking": ""}),
            Open::Tool(_) | Open::None => return,
        };
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = kind;
    }

    fn close_block(&mut self, out: &mut Vec<StreamEvent>) {
        if self.open == Open::None {
            return;
        }
        if let Open::Tool(id) = std::mem::replace(&mut self.open, Open::None) {
            self.tool_tokens += estimate_text(&self.tool_input);
            self.tool_input.clear();
            self.closed_tools.insert(id);
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.next_index - 1}),
        ));
    }

    fn emit_text(&mut self, s: &str, out: &mut Vec<StreamEvent>) {
        if s.is_empty() {
            return;
        }
        self.open_block(Open::Text, out);
        self.any_text = true;
        self.count(s);
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": {"type": "text_delta", "text": s}}),
        ));
    }

    fn emit_thinking(&mut self, s: &str, out: &mut Vec<StreamEvent>) {
        if s.is_empty() {
            return;
        }
        self.open_block(Open::Thinking, out);
        self.any_thinking = true;
        self.count(s);
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": {"type": "thinking_delta", "thinking": s}}),
        ));
    }

    fn text(&mut self, s: &str, out: &mut Vec<StreamEvent>) {
        match self.think {
            Think::Off | Think::Done => self.emit_text(s, out),
            Think::Detect => {
                self.pending.push_str(s);
                let t = self.pending.trim_start();
                if let Some(rest) = t.strip_prefix(OPEN_TAG) {
                    let rest = rest.to_string();
                    self.pending.clear();
                    self.think = Think::In { strip_nl: true };
                    self.text(&rest, out);
                } else if OPEN_TAG.starts_with(t) && self.pending.len() < DETECT_LIMIT {
                    // Maybe the start of the tag (or only whitespace so far): wait.
                } else {
                    self.think = Think::Done;
                    let p = std::mem::take(&mut self.pending);
                    self.emit_text(&p, out);
                }
            }
            Think::In { strip_nl } => {
                self.pending.push_str(s);
                if strip_nl && !self.pending.is_empty() {
                    if self.pending.starts_with('\n') {
                        self.pending.remove(0);
                    }
                    self.think = Think::In { strip_nl: false };
                }
                if let Some(i) = self.pending.find(CLOSE_TAG) {
                    let thought = self.pending[..i].to_string();
                    let rest = self.pending[i + CLOSE_TAG.len()..].to_string();
                    self.pending.clear();
                    self.emit_thinking(&thought, out);
                    self.close_block(out);
                    self.think = Think::AfterClose { stripped: 0 };
                    self.text(&rest, out);
                } else {
                    // Keep back a tail that may be the start of the closing tag.
                    let keep = (1..CLOSE_TAG.len())
                        .rev()
                        .find(|&k| {
                            self.pending.len() >= k && self.pending.ends_with(&CLOSE_TAG[..k])
                        })
                        .unwrap_or(0);
                    let cut = self.pending.len() - keep;
                    let thought = self.pending[..cut].to_string();
                    self.pending.drain(..cut);
                    self.emit_thinking(&thought, out);
                }
            }
            Think::AfterClose { mut stripped } => {
                let mut rest = s;
                while stripped < 2 && rest.starts_with('\n') {
                    rest = &rest[1..];
                    stripped += 1;
                }
                if rest.is_empty() && stripped < 2 {
                    self.think = Think::AfterClose { stripped };
                } else {
                    self.think = Think::Done;
                    self.emit_text(rest, out);
                }
            }
        }
    }

    /// Text held back by the thinking detection, released before a tool block or at the end.
    fn flush_pending(&mut self, out: &mut Vec<StreamEvent>) {
        let p = std::mem::take(&mut self.pending);
        match self.think {
            Think::Detect => {
                self.think = Think::Done;
                self.emit_text(&p, out);
            }
            Think::In { .. } => self.emit_thinking(&p, out),
            _ => self.emit_text(&p, out),
        }
    }

    fn tool(
        &mut self,
        id: String,
        name: String,
        input: Option<String>,
        stop: bool,
        out: &mut Vec<StreamEvent>,
    ) {
        self.flush_pending(out);
        if self.closed_tools.contains(&id) {
            return;
        }
        if self.open != Open::Tool(id.clone()) {
            self.close_block(out);
            let name = self.names.get(&name).cloned().unwrap_or(name);
            let index = self.next_index;
            self.next_index += 1;
            out.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            self.open = Open::Tool(id);
            self.any_tool = true;
        }
        if let Some(part) = input.filter(|p| !p.is_empty()) {
            self.tool_input.push_str(&part);
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        if stop {
            self.close_block(out);
        }
    }

    /// Closes what is open and ends the message (`message_delta`, `message_stop`).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.flush_pending(out);
        self.close_block(out);
        let stop_reason = if self.any_tool {
            "tool_use"
        } else if self.any_thinking && !self.any_text {
            self.emit_text(" ", out);
            self.close_block(out);
            "max_tokens"
        } else {
            "end_turn"
        };
        let output = self.out_ascii.div_ceil(4) + self.out_other + self.tool_tokens;
        let input = match self.context_pct {
            Some(p) if p > 0.0 => {
                ((self.window as f64 * p / 100.0).round() as u64).saturating_sub(output)
            }
            _ => self.input_estimate,
        };
        out.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"input_tokens": input, "output_tokens": output, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
        ));
        out.push(ev("message_stop", json!({"type": "message_stop"})));
    }
}

/// Folds Claude SSE events into the unary Messages answer.
pub fn fold(events: &[StreamEvent]) -> Value {
    let mut msg = Map::new();
    let mut blocks: Vec<Value> = Vec::new();
    let mut inputs: HashMap<usize, String> = HashMap::new();
    for e in events {
        let Ok(d) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        match e.event.as_str() {
            "message_start" => {
                if let Some(Value::Object(m)) = d.get("message") {
                    msg = m.clone();
                }
            }
            "content_block_start" => {
                let b = d.get("content_block").cloned().unwrap_or(Value::Null);
                if index == blocks.len() {
                    blocks.push(b);
                }
            }
            "content_block_delta" => {
                let (Some(b), Some(delta)) = (blocks.get_mut(index), d.get("delta")) else {
                    continue;
                };
                let append = |b: &mut Value, key: &str, s: &str| {
                    if let Some(Value::String(t)) = b.get_mut(key) {
                        t.push_str(s);
                    }
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => append(
                        b,
                        "text",
                        delta
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    Some("thinking_delta") => append(
                        b,
                        "thinking",
                        delta
                            .get("thinking")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    Some("input_json_delta") => inputs.entry(index).or_default().push_str(
                        delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(Value::Object(delta)) = d.get("delta") {
                    for (k, v) in delta {
                        msg.insert(k.clone(), v.clone());
                    }
                }
                if let Some(u) = d.get("usage") {
                    msg.insert("usage".into(), u.clone());
                }
            }
            _ => {}
        }
    }
    for (i, b) in blocks.iter_mut().enumerate() {
        if b.get("type").and_then(Value::as_str) == Some("tool_use") {
            b["input"] = parse_tool_input(inputs.get(&i).map(String::as_str).unwrap_or(""));
        }
    }
    msg.insert("content".into(), Value::Array(blocks));
    Value::Object(msg)
}

/// Tool arguments as sent: an object, `{}` when empty, `{"raw_arguments": …}` when not JSON.
pub fn parse_tool_input(s: &str) -> Value {
    if s.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "raw_arguments": s }),
    }
}

/// Finds `[Called <name> with args: {json}]` in `text`: the calls and the text without them.
fn bracket_calls(text: &str) -> (Vec<(String, Value)>, String) {
    const HEAD: &str = "[Called ";
    const MID: &str = " with args: ";
    let mut calls = Vec::new();
    let mut kept = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(HEAD) {
        let after = &rest[start + HEAD.len()..];
        let parsed = after.find(MID).and_then(|m| {
            let name = &after[..m];
            if name.is_empty() || name.len() > 128 || name.contains(char::is_whitespace) {
                return None;
            }
            let args = &after[m + MID.len()..];
            let len = json_object_len(args)?;
            let tail = args[len..].trim_start();
            tail.starts_with(']').then(|| {
                let consumed = (args.len() - tail.len()) + 1;
                (
                    name.to_string(),
                    parse_tool_input(&args[..len]),
                    m + MID.len() + consumed,
                )
            })
        });
        match parsed {
            Some((name, input, used)) => {
                kept.push_str(&rest[..start]);
                calls.push((name, input));
                rest = &after[used..];
            }
            None => {
                kept.push_str(&rest[..start + HEAD.len()]);
                rest = after;
            }
        }
    }
    kept.push_str(rest);
    (calls, kept)
}

/// The byte length of the balanced `{…}` at the start of `s`, honouring JSON strings.
fn json_object_len(s: &str) -> Option<usize> {
    if !s.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Unary-only finishing: inline `[Called …]` tool calls become `tool_use` blocks, tool calls
/// with the same name and input are kept once, and any tool call makes the stop reason
/// `tool_use`.
pub fn finalize_unary(msg: &mut Value) {
    let Some(blocks) = msg.get_mut("content").and_then(Value::as_array_mut) else {
        return;
    };
    let mut extra = Vec::new();
    for b in blocks.iter_mut() {
        if b.get("type").and_then(Value::as_str) != Some("text") {
            continue;
        }
        let text = b
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !text.contains("[Called ") {
            continue;
        }
        let (calls, kept) = bracket_calls(&text);
        if calls.is_empty() {
            continue;
        }
        let kept = kept.trim().to_string();
        b["text"] = Value::String(if kept.is_empty() { " ".into() } else { kept });
        for (name, input) in calls {
            extra.push(json!({"type": "tool_use", "id": format!("toolu_{}", uuid::Uuid::new_v4().simple()), "name": name, "input": input}));
        }
    }
    blocks.extend(extra);
    let mut seen = HashSet::new();
    blocks.retain(|b| {
        b.get("type").and_then(Value::as_str) != Some("tool_use")
            || seen.insert((
                b.get("name").map(Value::to_string),
                b.get("input").map(Value::to_string),
            ))
    });
    if !seen.is_empty() {
        msg["stop_reason"] = json!("tool_use");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{HeaderValue, encode, encode_event};

    fn run(
        events: Vec<KiroEvent>,
        thinking: bool,
        names: HashMap<String, String>,
    ) -> (Vec<StreamEvent>, Result<(), Exception>) {
        let mut a = Assembler::new("claude-sonnet-4-5", names, thinking, 42, 200_000);
        let mut out = Vec::new();
        a.start(&mut out);
        for e in events {
            if let Err(x) = a.push(e, &mut out) {
                return (out, Err(x));
            }
        }
        a.finish(&mut out);
        (out, Ok(()))
    }

    fn text(s: &str) -> KiroEvent {
        KiroEvent::Text(s.into())
    }

    fn tool(id: &str, name: &str, input: Option<&str>, stop: bool) -> KiroEvent {
        KiroEvent::ToolUse {
            id: id.into(),
            name: name.into(),
            input: input.map(str::to_string),
            stop,
        }
    }

    fn names(evs: &[StreamEvent]) -> Vec<&str> {
        evs.iter().map(|e| e.event.as_str()).collect()
    }

    #[test]
    fn frames_become_events() {
        let d = |b: Vec<u8>| {
            let mut dec = crate::eventstream::Decoder::default();
            dec.push(&b);
            event_of(&dec.next_frame().expect("ok").expect("frame"))
        };
        assert_eq!(
            d(encode_event(
                "assistantResponseEvent",
                br#"{"content":"Hi"}"#
            )),
            Ok(text("Hi"))
        );
        assert_eq!(
            d(encode_event(
                "toolUseEvent",
                br#"{"name":"f","toolUseId":"t","input":"{\"a","stop":false}"#
            )),
            Ok(tool("t", "f", Some("{\"a"), false))
        );
        assert_eq!(
            d(encode_event(
                "contextUsageEvent",
                br#"{"contextUsagePercentage":9.17}"#
            )),
            Ok(KiroEvent::ContextUsage(9.17))
        );
        assert_eq!(
            d(encode_event("followupPromptEvent", b"{}")),
            Ok(KiroEvent::Ignored("followupPromptEvent".into()))
        );
        let exc = encode(
            &[
                (
                    ":exception-type",
                    HeaderValue::String("ThrottlingException".into()),
                ),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            br#"{"message":"slow down"}"#,
        );
        assert_eq!(
            d(exc),
            Ok(KiroEvent::Exception {
                kind: "ThrottlingException".into(),
                message: "slow down".into()
            })
        );
        assert!(d(encode_event("assistantResponseEvent", b"{not json")).is_err());
    }

    #[test]
    fn text_then_tool_stream_shape() {
        let (out, r) = run(
            vec![
                text("Let me "),
                text("look."),
                tool("tooluse_1", "read_file", Some("{\"pa"), false),
                tool("tooluse_1", "read_file", Some("th\":\"a.txt\"}"), false),
                tool("tooluse_1", "read_file", None, true),
                KiroEvent::Metering,
                KiroEvent::ContextUsage(1.0),
            ],
            false,
            HashMap::new(),
        );
        assert!(r.is_ok());
        assert_eq!(
            names(&out),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let msg = fold(&out);
        assert_eq!(
            msg["content"][0],
            json!({"type": "text", "text": "Let me look."})
        );
        assert_eq!(
            msg["content"][1],
            json!({"type": "tool_use", "id": "tooluse_1", "name": "read_file", "input": {"path": "a.txt"}})
        );
        assert_eq!(msg["stop_reason"], "tool_use");
        let output = msg["usage"]["output_tokens"].as_u64().expect("n");
        assert_eq!(
            msg["usage"]["input_tokens"].as_u64(),
            Some(2000 - output),
            "1 % of 200k minus the output"
        );
    }

    #[test]
    fn thinking_split_across_chunks() {
        let parts = [
            "<thi",
            "nking>\nI ponder",
            " deeply</thi",
            "nking>\n",
            "\nAnswer",
            ".",
        ];
        let (out, _) = run(
            parts.iter().map(|p| text(p)).collect(),
            true,
            HashMap::new(),
        );
        let msg = fold(&out);
        assert_eq!(
            msg["content"][0],
            json!({"type": "thinking", "thinking": "I ponder deeply"})
        );
        assert_eq!(
            msg["content"][1],
            json!({"type": "text", "text": "Answer."})
        );
        assert_eq!(msg["stop_reason"], "end_turn");
        // Without thinking requested, the tags are just text.
        let (out, _) = run(
            parts.iter().map(|p| text(p)).collect(),
            false,
            HashMap::new(),
        );
        assert_eq!(fold(&out)["content"][0]["text"], parts.concat());
        // Only thinking: a blank text block and max_tokens.
        let (out, _) = run(vec![text("<thinking>x</thinking>")], true, HashMap::new());
        let msg = fold(&out);
        assert_eq!(msg["content"][1]["text"], " ");
        assert_eq!(msg["stop_reason"], "max_tokens");
        // Text that merely starts like the tag.
        let (out, _) = run(vec![text("<thin"), text("gs>")], true, HashMap::new());
        assert_eq!(fold(&out)["content"][0]["text"], "<things>");
    }

    #[test]
    fn duplicates_names_and_exceptions() {
        let mut map = HashMap::new();
        map.insert("short".to_string(), "a_very_long_original_name".to_string());
        let (out, _) = run(
            vec![
                text("a"),
                text("a"),
                text("b"),
                tool("t1", "short", Some("{}"), true),
                tool("t1", "short", None, true),
            ],
            false,
            map,
        );
        let msg = fold(&out);
        assert_eq!(
            msg["content"][0]["text"], "ab",
            "a repeated delta is dropped"
        );
        assert_eq!(msg["content"][1]["name"], "a_very_long_original_name");
        assert_eq!(
            msg["content"].as_array().map(Vec::len),
            Some(2),
            "a repeated stop for a closed tool is ignored"
        );

        let thr = KiroEvent::Exception {
            kind: "ThrottlingException".into(),
            message: "m".into(),
        };
        let (_, r) = run(vec![text("partial"), thr.clone()], false, HashMap::new());
        assert_eq!(
            r,
            Err(Exception {
                kind: "ThrottlingException".into(),
                message: "m".into()
            })
        );
        let (out, r) = run(
            vec![
                text("done"),
                KiroEvent::Metering,
                KiroEvent::ContextUsage(2.0),
                thr,
            ],
            false,
            HashMap::new(),
        );
        assert!(r.is_ok(), "a trailing ghost exception is ignored");
        assert_eq!(names(&out).last(), Some(&"message_stop"));
        // No usage event: the local estimate.
        let (out, _) = run(vec![text("x")], false, HashMap::new());
        assert_eq!(fold(&out)["usage"]["input_tokens"], 42);
    }

    #[test]
    fn unary_bracket_calls_and_dedupe() {
        let (out, _) = run(
            vec![
                text("Sure. [Called get_weather with args: {\"city\":\"Pa]ris\"}] done"),
                tool("t1", "get_weather", Some("{\"city\":\"Pa]ris\"}"), true),
            ],
            false,
            HashMap::new(),
        );
        let mut msg = fold(&out);
        finalize_unary(&mut msg);
        let c = msg["content"].as_array().expect("content");
        assert_eq!(c[0]["text"], "Sure.  done");
        assert_eq!(c.len(), 2, "the inline call duplicates the real one: {c:?}");
        assert_eq!(msg["stop_reason"], "tool_use");
        let (calls, kept) = bracket_calls("[Called x with args: {bad] tail");
        assert!(calls.is_empty());
        assert_eq!(kept, "[Called x with args: {bad] tail");
        assert_eq!(parse_tool_input("{oops"), json!({"raw_arguments": "{oops"}));
    }
}
