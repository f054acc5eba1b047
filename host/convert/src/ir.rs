//! The internal representation every protocol converts to and from.
//!
//! Each protocol module parses its wire shape into these types and renders them back, so a new
//! direction costs nothing extra: twelve directions are four parsers plus four renderers. The
//! types keep only what at least two protocols can express; protocol-only fields are dropped on
//! purpose when crossing protocols (same-protocol requests never go through here).
//!
//! Usage semantics are fixed here once (see [`Usage`]) so that every renderer can translate
//! without knowing where the numbers came from.

use serde_json::{Map, Value};

use crate::ConvertError;

/// Who said a message. Everything that is not the model (user, tool results, unknown roles) is a
/// user turn: all four protocols only alternate between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
}

/// Binary or remote payload of an image or file part.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Media {
    /// Base64 data with its MIME type.
    Inline { mime: String, data: String },
    /// A URL (http(s), `gs://`, file URI); the MIME type when the source said it.
    Url { mime: Option<String>, url: String },
}

impl Media {
    pub(crate) fn mime(&self) -> Option<&str> {
        match self {
            Media::Inline { mime, .. } => Some(mime),
            Media::Url { mime, .. } => mime.as_deref(),
        }
    }

    /// `data:` URL for inline data, the URL itself otherwise.
    pub(crate) fn to_url(&self) -> String {
        match self {
            Media::Inline { mime, data } => format!("data:{mime};base64,{data}"),
            Media::Url { url, .. } => url.clone(),
        }
    }

    /// Parses an OpenAI-style `url` that may be a data URL.
    pub(crate) fn from_url(url: &str, default_mime: Option<&str>) -> Media {
        if let Some((mime, data)) = parse_data_url(url) {
            let mime = if mime.is_empty() {
                default_mime
                    .unwrap_or("application/octet-stream")
                    .to_string()
            } else {
                mime
            };
            Media::Inline { mime, data }
        } else {
            Media::Url {
                mime: mime_from_name(url).or(default_mime).map(str::to_string),
                url: url.to_string(),
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
    /// Always a JSON object (see [`parse_args`]).
    pub args: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolResult {
    pub call_id: String,
    /// Known when the source names the function (Gemini) or after pairing with the call.
    pub name: Option<String>,
    /// Text and image parts only.
    pub content: Vec<Part>,
    pub is_error: bool,
}

impl ToolResult {
    /// Text of the result (texts joined with `\n`; images are not representable as text).
    pub(crate) fn text(&self) -> String {
        join_texts(&self.content, "\n")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Part {
    Text(String),
    Image(Media),
    /// Documents, audio and other files.
    File {
        media: Media,
        name: Option<String>,
    },
    /// Reasoning text; the signature is opaque and never decoded (Claude signature or Gemini
    /// `thoughtSignature`), so it survives a round trip through a client unchanged.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    /// Claude `redacted_thinking` payload; only Claude can use it.
    RedactedThinking(String),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub schema: Value,
}

/// Provider-hosted tools that have an equivalent elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BuiltinTool {
    WebSearch,
    UrlContext,
    GoogleMaps,
    CodeExecution,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    /// Must call some tool (OpenAI `required`, Claude `any`, Gemini `ANY`).
    Required,
    Function(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThinkingMode {
    Enabled,
    Adaptive,
    Disabled,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Thinking {
    pub mode: ThinkingMode,
    pub budget: Option<u64>,
    /// `minimal`, `low`, `medium`, `high` (other values are passed on as given).
    pub effort: Option<String>,
    pub include_thoughts: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ResponseFormat {
    JsonObject,
    JsonSchema {
        name: Option<String>,
        schema: Value,
        strict: Option<bool>,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Request {
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub builtin_tools: Vec<BuiltinTool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    /// Sampling numbers are kept as JSON numbers so `1` stays `1` and `0` stays `0`.
    pub temperature: Option<Value>,
    pub top_p: Option<Value>,
    pub top_k: Option<Value>,
    pub presence_penalty: Option<Value>,
    pub frequency_penalty: Option<Value>,
    pub seed: Option<Value>,
    pub stop: Vec<String>,
    pub stream: Option<bool>,
    pub include_usage: bool,
    pub thinking: Option<Thinking>,
    pub response_format: Option<ResponseFormat>,
    /// `_`-prefixed internal keys: they survive conversion, providers strip them.
    pub internal: Map<String, Value>,
}

/// Why generation stopped, protocol-neutral.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    StopSequence(Option<String>),
    Refusal,
    PauseTurn,
}

/// Token usage.
///
/// * `input` = every prompt token, cached ones included (OpenAI/Gemini meaning). Claude's
///   `input_tokens` excludes cache reads and writes, so its parser adds them and its renderer
///   subtracts them again.
/// * `output` = output tokens as the source reported them; `reasoning_in_output` says whether
///   reasoning tokens are already inside (OpenAI, Claude, Responses) or separate (Gemini
///   `thoughtsTokenCount`).
/// * `total` is kept from the source when it has one (Gemini's total includes thoughts).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub total: Option<u64>,
    pub cached: Option<u64>,
    pub cache_creation: Option<u64>,
    pub reasoning: Option<u64>,
    pub reasoning_in_output: bool,
}

impl Usage {
    /// Overlay the fields that `other` knows.
    pub(crate) fn merge(&mut self, other: &Usage) {
        fn take(dst: &mut Option<u64>, src: Option<u64>) {
            if src.is_some() {
                *dst = src;
            }
        }
        take(&mut self.input, other.input);
        take(&mut self.output, other.output);
        take(&mut self.total, other.total);
        take(&mut self.cached, other.cached);
        take(&mut self.cache_creation, other.cache_creation);
        take(&mut self.reasoning, other.reasoning);
        if other.output.is_some() || other.reasoning.is_some() {
            self.reasoning_in_output = other.reasoning_in_output;
        }
    }

    pub(crate) fn input(&self) -> u64 {
        self.input.unwrap_or(0)
    }

    /// Output tokens including reasoning (what is billed as output).
    pub(crate) fn output_with_reasoning(&self) -> u64 {
        let out = self.output.unwrap_or(0);
        if self.reasoning_in_output {
            out
        } else {
            out + self.reasoning.unwrap_or(0)
        }
    }

    /// Output tokens without reasoning (Gemini `candidatesTokenCount`).
    pub(crate) fn output_without_reasoning(&self) -> u64 {
        let out = self.output.unwrap_or(0);
        if self.reasoning_in_output {
            out.saturating_sub(self.reasoning.unwrap_or(0))
        } else {
            out
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
            .unwrap_or_else(|| self.input() + self.output_with_reasoning())
    }

    /// Claude `input_tokens`: prompt tokens that were neither read from nor written to cache.
    pub(crate) fn claude_input(&self) -> u64 {
        self.input()
            .saturating_sub(self.cached.unwrap_or(0))
            .saturating_sub(self.cache_creation.unwrap_or(0))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.input.is_none()
            && self.output.is_none()
            && self.total.is_none()
            && self.cached.is_none()
            && self.reasoning.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Response {
    pub id: Option<String>,
    pub created: Option<u64>,
    pub parts: Vec<Part>,
    pub finish: Option<Finish>,
    pub usage: Option<Usage>,
}

impl Response {
    pub(crate) fn has_tool_calls(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::ToolCall(_)))
    }

    /// The finish reason a client should see: tool calls win over a plain stop.
    pub(crate) fn effective_finish(&self) -> Finish {
        let finish = self.finish.clone().unwrap_or(Finish::Stop);
        if self.has_tool_calls() && finish == Finish::Stop {
            Finish::ToolCalls
        } else {
            finish
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

pub(crate) fn err(message: impl Into<String>) -> ConvertError {
    ConvertError {
        message: message.into(),
    }
}

/// The body must be a JSON object.
pub(crate) fn as_object<'a>(
    body: &'a Value,
    what: &str,
) -> Result<&'a Map<String, Value>, ConvertError> {
    body.as_object()
        .ok_or_else(|| err(format!("{what} must be a JSON object")))
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(crate) fn u64_field(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(value_to_u64)
}

/// Accepts integers and integral floats (some clients send `8192.0`); negatives are ignored.
pub(crate) fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e19)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// A numeric sampling parameter kept as given; only *absent* (or `null`) counts as unset, so
/// `temperature: 0` stays 0. A non-number is a client error.
pub(crate) fn number_field(
    v: &Value,
    key: &str,
    path: &str,
) -> Result<Option<Value>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n @ Value::Number(_)) => Ok(Some(n.clone())),
        Some(_) => Err(err(format!("{path}{key} must be a number"))),
    }
}

pub(crate) fn max_tokens_field(
    v: &Value,
    key: &str,
    path: &str,
) -> Result<Option<u64>, ConvertError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => value_to_u64(n)
            .map(Some)
            .ok_or_else(|| err(format!("{path}{key} must be a non-negative integer"))),
    }
}

/// `stop` may be a string or an array of strings.
pub(crate) fn stop_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn internal_keys(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn join_texts(parts: &[Part], sep: &str) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    texts.join(sep)
}

/// `data:<mime>;base64,<data>` → (mime, data).
pub(crate) fn parse_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta
        .strip_suffix(";base64")
        .or_else(|| meta.split(';').next())
        .unwrap_or("")
        .to_string();
    if !meta.ends_with(";base64") {
        // Not base64 data: we cannot carry it as inline data.
        return None;
    }
    Some((mime, data.to_string()))
}

/// MIME type from a file name or URL extension (for Gemini `fileData`/`inlineData`).
pub(crate) fn mime_from_name(name: &str) -> Option<&'static str> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "md" => "text/markdown",
        "json" => "application/json",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "xml" => "text/xml",
        "js" | "mjs" => "text/javascript",
        "ts" => "text/x-typescript",
        "py" => "text/x-python",
        "rs" => "text/x-rust",
        "java" => "text/x-java",
        "c" | "h" => "text/x-c",
        "cpp" | "cc" | "hpp" => "text/x-c++",
        "go" => "text/x-go",
        "css" => "text/css",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "aac" => "audio/aac",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mpeg" | "mpg" => "video/mpeg",
        _ => return None,
    })
}

/// Lenient parse of tool-call arguments into a JSON object.
///
/// Documented fallback, used by every direction: empty → `{}`; a trailing lone `\` or dangling
/// `\u`, `\u0`, `\u00`, `\u000` (cut-off stream) is removed and unclosed strings, arrays and
/// objects are closed; a valid non-object value `v` becomes `{"value": v}`; anything still
/// unparseable becomes `{}`. Never fails: Claude `input` and Gemini `args` must be objects, and a
/// client's malformed history must not break the request.
pub(crate) fn parse_args(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Value::Object(Map::new());
    }
    if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
        return into_object(v);
    }
    if let Some(repaired) = repair_truncated_json(trimmed)
        && let Ok(v) = serde_json::from_str::<Value>(&repaired)
    {
        return into_object(v);
    }
    Value::Object(Map::new())
}

fn into_object(v: Value) -> Value {
    match v {
        Value::Object(_) => v,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            Value::Object(m)
        }
    }
}

/// Closes a JSON text that was cut off mid-way (strings, arrays, objects); `None` when the text
/// is not a plausible prefix.
fn repair_truncated_json(s: &str) -> Option<String> {
    let mut out = s.to_string();
    // Dangling escapes at the very end.
    for tail in ["\\u000", "\\u00", "\\u0", "\\u", "\\"] {
        if out.ends_with(tail) && !out.ends_with(&format!("\\{tail}")) {
            out.truncate(out.len() - tail.len());
            break;
        }
    }
    let mut stack = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    for c in out.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' if stack.pop() != Some(c) => return None,
            _ => {}
        }
    }
    if !in_str && stack.is_empty() {
        return None;
    }
    if in_str {
        out.push('"');
    }
    let t = out.trim_end();
    if t.ends_with(',') || t.ends_with(':') {
        return None;
    }
    while let Some(c) = stack.pop() {
        out.push(c);
    }
    Some(out)
}

/// Arguments as the JSON text OpenAI/Responses expect.
pub(crate) fn args_to_string(args: &Value) -> String {
    serde_json::to_string(args).unwrap_or_else(|_| "{}".to_string())
}

/// Random lowercase hex of `len` characters (ids for messages and generated tool calls).
pub(crate) fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Text of a content value that may be a string, an array of text parts, or anything else (JSON).
pub(crate) fn loose_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    _ => i.get("text").and_then(Value::as_str).map(str::to_string),
                })
                .collect();
            if texts.is_empty() && !items.is_empty() {
                v.to_string()
            } else {
                texts.join("\n")
            }
        }
        other => other.to_string(),
    }
}

/// Effort word for a thinking budget (for OpenAI `reasoning_effort` / Responses
/// `reasoning.effort`). Upstream thresholds (≤50 low, ≤200 medium) put every real budget
/// (≥1024) at `high`; these follow the budgets the other direction produces instead.
pub(crate) fn effort_from_budget(budget: Option<u64>) -> &'static str {
    match budget {
        None => "high",
        Some(0) => "minimal",
        Some(b) if b <= 4096 => "low",
        Some(b) if b <= 12288 => "medium",
        Some(_) => "high",
    }
}

/// Claude `budget_tokens` for an effort word (Responses table: low 2048, medium 8192, high 20000).
pub(crate) fn claude_budget_from_effort(effort: &str) -> Option<u64> {
    match effort.to_ascii_lowercase().as_str() {
        "none" => None,
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        _ => Some(20000),
    }
}

/// Gemini 2.5 `thinkingBudget` for an effort word (low 1024, medium 8192, high 24576).
pub(crate) fn gemini_budget_from_effort(effort: &str) -> Option<u64> {
    match effort.to_ascii_lowercase().as_str() {
        "none" => None,
        "minimal" => Some(512),
        "low" => Some(1024),
        "high" | "xhigh" | "max" => Some(24576),
        _ => Some(8192),
    }
}

/// Keeps only the characters Claude accepts in tool ids (`^[a-zA-Z0-9_-]+$`); applied to both
/// `tool_use.id` and `tool_result.tool_use_id` so pairs still match.
pub(crate) fn claude_tool_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "toolu_empty".into()
    } else {
        s
    }
}

/// Pairs tool calls with their results and repairs what the target protocols reject.
///
/// Every protocol needs a call's result in the turn right after the call (Claude: the next user
/// message; OpenAI: the `tool` messages right after; Gemini: one `functionResponse` per call).
/// After merging same-role neighbours:
/// * results get the `name` of their call (Gemini needs it);
/// * results are moved to the front of their user message (Claude requires that order);
/// * a call without a result in the next message is dropped (upstream does the same for
///   Claude→OpenAI); a result without a call becomes a user text `[Tool result <id>]: …` so its
///   content is not lost.
pub(crate) fn normalize_messages(messages: Vec<Message>) -> Vec<Message> {
    // Merge adjacent same-role messages.
    let mut merged: Vec<Message> = Vec::new();
    for m in messages {
        if m.parts.is_empty() {
            continue;
        }
        match merged.last_mut() {
            Some(last) if last.role == m.role => last.parts.extend(m.parts),
            _ => merged.push(m),
        }
    }
    let n = merged.len();
    for i in 0..n {
        if merged[i].role != Role::Assistant {
            continue;
        }
        let calls: Vec<(String, String)> = merged[i]
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall(c) => Some((c.id.clone(), c.name.clone())),
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            continue;
        }
        let answered: Vec<String> = if i + 1 < n && merged[i + 1].role == Role::User {
            merged[i + 1]
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolResult(r) => Some(r.call_id.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        merged[i].parts.retain(|p| match p {
            Part::ToolCall(c) => answered.contains(&c.id),
            _ => true,
        });
        if i + 1 < n && merged[i + 1].role == Role::User {
            // Name the results and put them first, in call order.
            let parts = std::mem::take(&mut merged[i + 1].parts);
            let (mut results, rest): (Vec<Part>, Vec<Part>) = parts
                .into_iter()
                .partition(|p| matches!(p, Part::ToolResult(r) if calls.iter().any(|(id, _)| *id == r.call_id)));
            results.sort_by_key(|p| match p {
                Part::ToolResult(r) => calls.iter().position(|(id, _)| *id == r.call_id),
                _ => None,
            });
            for p in &mut results {
                if let Part::ToolResult(r) = p
                    && let Some((_, name)) = calls.iter().find(|(id, _)| *id == r.call_id)
                {
                    r.name = Some(name.clone());
                }
            }
            results.extend(rest);
            merged[i + 1].parts = results;
        }
    }
    // Orphan results: any result not right after an assistant message holding its call.
    for i in 0..n {
        if merged[i].role != Role::User {
            continue;
        }
        let call_ids: Vec<String> = if i > 0 && merged[i - 1].role == Role::Assistant {
            merged[i - 1]
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall(c) => Some(c.id.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        for p in &mut merged[i].parts {
            if let Part::ToolResult(r) = p
                && !call_ids.contains(&r.call_id)
            {
                *p = Part::Text(format!("[Tool result {}]: {}", r.call_id, r.text()));
            }
        }
    }
    // Dropping orphan calls can empty an assistant turn; merge the neighbours it separated.
    let mut out: Vec<Message> = Vec::new();
    for m in merged {
        if m.parts.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == m.role => last.parts.extend(m.parts),
            _ => out.push(m),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_args_fallbacks() {
        assert_eq!(parse_args(""), json!({}));
        assert_eq!(parse_args("  {\"a\": 1} "), json!({"a": 1}));
        assert_eq!(parse_args("{\"a\": \"b"), json!({"a": "b"}));
        assert_eq!(
            parse_args("{\"a\": [1, {\"b\": 2"),
            json!({"a": [1, {"b": 2}]})
        );
        assert_eq!(parse_args("{\"a\": \"x\\u00"), json!({"a": "x"}));
        assert_eq!(parse_args("{\"a\":"), json!({}));
        assert_eq!(parse_args("{\"command\":dir}"), json!({}));
        assert_eq!(parse_args("\"s\""), json!({"value": "s"}));
        assert_eq!(parse_args("}{"), json!({}));
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,AAA="),
            Some(("image/png".into(), "AAA=".into()))
        );
        assert_eq!(
            parse_data_url("data:;base64,AAA="),
            Some(("".into(), "AAA=".into()))
        );
        assert_eq!(parse_data_url("data:text/plain,hello"), None);
        assert_eq!(parse_data_url("https://x/y.png"), None);
        assert_eq!(
            Media::from_url("data:;base64,QQ==", Some("image/jpeg")),
            Media::Inline {
                mime: "image/jpeg".into(),
                data: "QQ==".into()
            }
        );
        assert_eq!(
            Media::from_url("https://x/y.webp?sig=1", Some("image/jpeg")),
            Media::Url {
                mime: Some("image/webp".into()),
                url: "https://x/y.webp?sig=1".into()
            }
        );
    }

    #[test]
    fn usage_semantics() {
        let gemini = Usage {
            input: Some(100),
            output: Some(20),
            total: Some(150),
            cached: Some(40),
            reasoning: Some(30),
            ..Usage::default()
        };
        assert_eq!(gemini.output_with_reasoning(), 50);
        assert_eq!(gemini.output_without_reasoning(), 20);
        assert_eq!(gemini.claude_input(), 60);
        assert_eq!(gemini.total(), 150);
        let mut merged = Usage {
            input: Some(5),
            ..Usage::default()
        };
        merged.merge(&Usage {
            output: Some(7),
            reasoning_in_output: true,
            ..Usage::default()
        });
        assert_eq!(
            (merged.input, merged.output, merged.total()),
            (Some(5), Some(7), 12)
        );
    }

    #[test]
    fn normalize_merges_pairs_and_repairs_orphans() {
        let call = |id: &str| {
            Part::ToolCall(ToolCall {
                id: id.into(),
                name: format!("fn_{id}"),
                args: json!({}),
            })
        };
        let result = |id: &str| {
            Part::ToolResult(ToolResult {
                call_id: id.into(),
                name: None,
                content: vec![Part::Text(format!("r{id}"))],
                is_error: false,
            })
        };
        let msgs = vec![
            Message {
                role: Role::User,
                parts: vec![Part::Text("a".into())],
            },
            Message {
                role: Role::User,
                parts: vec![Part::Text("b".into())],
            },
            Message {
                role: Role::Assistant,
                parts: vec![call("1"), call("2"), call("3")],
            },
            Message {
                role: Role::User,
                parts: vec![Part::Text("t".into()), result("2"), result("1")],
            },
            Message {
                role: Role::User,
                parts: vec![result("9")],
            },
        ];
        let out = normalize_messages(msgs);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].parts.len(), 2);
        // call 3 had no result: dropped
        assert_eq!(out[1].parts, vec![call("1"), call("2")]);
        // results first, in call order, named; orphan 9 becomes text
        let Part::ToolResult(r) = &out[2].parts[0] else {
            panic!()
        };
        assert_eq!((r.call_id.as_str(), r.name.as_deref()), ("1", Some("fn_1")));
        assert!(matches!(&out[2].parts[1], Part::ToolResult(r) if r.call_id == "2"));
        assert_eq!(out[2].parts[2], Part::Text("t".into()));
        assert_eq!(out[2].parts[3], Part::Text("[Tool result 9]: r9".into()));
    }
}
