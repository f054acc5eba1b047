//! Anthropic Claude Messages: request and non-stream response ⇄ the internal representation.
//!
//! Rendering enforces what the Messages API rejects: no empty or whitespace-only text blocks,
//! strict user/assistant alternation (neighbours are merged by `ir::normalize_messages`),
//! `tool_result` blocks first in their user turn, tool ids matching `[a-zA-Z0-9_-]+`, no
//! trailing whitespace at the end of an assistant prefill, unsigned thinking blocks dropped, and
//! the thinking constraints (budget ≥ 1024 and < `max_tokens`, no forced tool choice, fixed
//! temperature).

use serde_json::{Map, Value, json};

use crate::ConvertError;
use crate::ir::*;
use crate::schema;

/// `max_tokens` when the client gave none (Claude requires it). Upstream used 200000, which the
/// real API rejects for every current model; 32000 is within the limit of all Claude 4 models.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 32000;
/// Thinking budget when the client asked for thinking without saying how much.
const DEFAULT_THINKING_BUDGET: u64 = 8192;
const MIN_THINKING_BUDGET: u64 = 1024;

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_request(body: &Value) -> Result<Request, ConvertError> {
    let obj = as_object(body, "request body")?;
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("`messages` must be an array")),
        None => return Err(err("`messages` is required")),
    };
    let mut req = Request {
        internal: internal_keys(obj),
        ..Request::default()
    };
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                req.system.push(s.clone());
            }
        }
        Some(Value::Array(blocks)) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| match b {
                    Value::String(s) => Some(s.as_str()),
                    _ => str_field(b, "text"),
                })
                .filter(|t| !t.is_empty())
                .collect();
            if !texts.is_empty() {
                req.system.push(texts.join("\n"));
            }
        }
        Some(other) => req.system.push(other.to_string()),
    }
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        if !m.is_object() {
            return Err(err(format!("{path} must be an object")));
        }
        let role = match str_field(m, "role") {
            Some("assistant") => Role::Assistant,
            _ => Role::User,
        };
        let parts = match m.get("content") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => {
                if s.is_empty() {
                    Vec::new()
                } else {
                    vec![Part::Text(s.clone())]
                }
            }
            Some(Value::Array(blocks)) => blocks.iter().filter_map(parse_block).collect(),
            Some(_) => {
                return Err(err(format!(
                    "{path}.content must be a string or an array of content blocks"
                )));
            }
        };
        req.messages.push(Message { role, parts });
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for t in tools {
            parse_tool(t, &mut req);
        }
    }
    if let Some(tc) = obj.get("tool_choice") {
        req.tool_choice = crate::openai::parse_tool_choice(tc);
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            req.parallel_tool_calls = Some(false);
        }
    }
    req.max_tokens = max_tokens_field(body, "max_tokens", "")?;
    req.temperature = number_field(body, "temperature", "")?;
    req.top_p = number_field(body, "top_p", "")?;
    req.top_k = number_field(body, "top_k", "")?;
    req.stop = stop_list(obj.get("stop_sequences"));
    req.stream = obj.get("stream").and_then(Value::as_bool);
    let effort = obj
        .get("output_config")
        .and_then(|o| str_field(o, "effort"))
        .map(str::to_string);
    req.thinking = obj
        .get("thinking")
        .and_then(|t| parse_thinking_value(t, effort.clone()));
    Ok(req)
}

/// Claude `thinking` object (`enabled` + `budget_tokens`, `adaptive` (+ `effort`), `disabled`).
pub(crate) fn parse_thinking_value(t: &Value, effort: Option<String>) -> Option<Thinking> {
    let effort = effort.or_else(|| str_field(t, "effort").map(str::to_string));
    match str_field(t, "type")? {
        "enabled" => Some(Thinking {
            mode: ThinkingMode::Enabled,
            budget: u64_field(t, "budget_tokens"),
            effort,
            include_thoughts: Some(true),
        }),
        "adaptive" => Some(Thinking {
            mode: ThinkingMode::Adaptive,
            budget: None,
            effort: Some(effort.unwrap_or_else(|| "high".into())),
            include_thoughts: Some(true),
        }),
        "disabled" => Some(Thinking {
            mode: ThinkingMode::Disabled,
            budget: None,
            effort: None,
            include_thoughts: None,
        }),
        _ => None,
    }
}

fn parse_tool(t: &Value, req: &mut Request) {
    let ty = str_field(t, "type").unwrap_or("");
    if ty.starts_with("web_search")
        || t.get("google_search").is_some()
        || t.get("googleSearch").is_some()
    {
        push_builtin(req, BuiltinTool::WebSearch);
        return;
    }
    if ty.starts_with("code_execution") {
        push_builtin(req, BuiltinTool::CodeExecution);
        return;
    }
    if t.get("url_context").is_some() || t.get("urlContext").is_some() {
        push_builtin(req, BuiltinTool::UrlContext);
        return;
    }
    if t.get("google_maps").is_some() || t.get("googleMaps").is_some() {
        push_builtin(req, BuiltinTool::GoogleMaps);
        return;
    }
    // Anthropic-defined client tools (bash, text_editor, computer) have no schema to carry.
    let Some(name) = str_field(t, "name") else {
        return;
    };
    if !(ty.is_empty() || ty == "custom") && t.get("input_schema").is_none() {
        return;
    }
    req.tools.push(Tool {
        name: name.to_string(),
        description: str_field(t, "description").map(str::to_string),
        schema: t
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
}

fn push_builtin(req: &mut Request, b: BuiltinTool) {
    if !req.builtin_tools.contains(&b) {
        req.builtin_tools.push(b);
    }
}

fn parse_source(source: &Value, default_mime: &str) -> Option<Media> {
    match str_field(source, "type")? {
        "base64" => Some(Media::Inline {
            mime: str_field(source, "media_type")
                .unwrap_or(default_mime)
                .to_string(),
            data: str_field(source, "data")?.to_string(),
        }),
        "url" => {
            let url = str_field(source, "url")?;
            Some(Media::Url {
                mime: mime_from_name(url)
                    .map(str::to_string)
                    .or(Some(default_mime.to_string())),
                url: url.to_string(),
            })
        }
        _ => None,
    }
}

/// One Claude content block (also accepted inside OpenAI messages).
pub(crate) fn parse_block(b: &Value) -> Option<Part> {
    match str_field(b, "type")? {
        "text" => {
            let t = str_field(b, "text")?;
            (!t.is_empty()).then(|| Part::Text(t.to_string()))
        }
        "image" => parse_source(b.get("source")?, "image/jpeg").map(Part::Image),
        "document" => {
            let source = b.get("source")?;
            if str_field(source, "type") == Some("text") {
                return str_field(source, "data").map(|d| Part::Text(d.to_string()));
            }
            parse_source(source, "application/pdf").map(|media| Part::File {
                media,
                name: str_field(b, "title").map(str::to_string),
            })
        }
        "thinking" => Some(Part::Thinking {
            text: str_field(b, "thinking").unwrap_or("").to_string(),
            signature: str_field(b, "signature")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }),
        "redacted_thinking" => str_field(b, "data").map(|d| Part::RedactedThinking(d.to_string())),
        "tool_use" => Some(Part::ToolCall(ToolCall {
            id: str_field(b, "id").unwrap_or("").to_string(),
            name: str_field(b, "name")?.to_string(),
            args: match b.get("input") {
                Some(Value::String(s)) => parse_args(s),
                Some(Value::Object(o)) => Value::Object(o.clone()),
                _ => Value::Object(Map::new()),
            },
        })),
        "tool_result" => {
            let content = match b.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| match str_field(i, "type") {
                        Some("text") => str_field(i, "text").map(|t| Part::Text(t.to_string())),
                        Some("image") => {
                            parse_source(i.get("source")?, "image/jpeg").map(Part::Image)
                        }
                        _ => Some(Part::Text(i.to_string())),
                    })
                    .collect(),
                Some(other) => vec![Part::Text(other.to_string())],
            };
            Some(Part::ToolResult(ToolResult {
                call_id: str_field(b, "tool_use_id").unwrap_or("").to_string(),
                name: None,
                content,
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }))
        }
        // Server tool blocks only make sense to Anthropic.
        "server_tool_use" | "web_search_tool_result" => None,
        _ => str_field(b, "text").map(|t| Part::Text(t.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// Request rendering
// ---------------------------------------------------------------------------------------------

pub(crate) fn render_request(req: &Request, model: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));

    let mut thinking = req
        .thinking
        .clone()
        .filter(|t| t.mode != ThinkingMode::Disabled);
    // Claude rejects thinking together with a forced tool choice; honour the tool choice.
    if matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Function(_))
    ) && !req.tools.is_empty()
    {
        thinking = None;
    }
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut thinking_json = None;
    if let Some(t) = &thinking {
        match t.mode {
            ThinkingMode::Adaptive => {
                thinking_json = Some(json!({"type": "adaptive"}));
                if let Some(e) = &t.effort {
                    out.insert("output_config".into(), json!({"effort": e}));
                }
            }
            _ => {
                let mut budget = t
                    .budget
                    .or_else(|| t.effort.as_deref().and_then(claude_budget_from_effort))
                    .unwrap_or(DEFAULT_THINKING_BUDGET)
                    .max(MIN_THINKING_BUDGET);
                if budget >= max_tokens {
                    if req.max_tokens.is_none() {
                        max_tokens = budget + DEFAULT_MAX_TOKENS;
                    } else {
                        budget = max_tokens.saturating_sub(1);
                    }
                }
                if budget >= MIN_THINKING_BUDGET {
                    thinking_json = Some(json!({"type": "enabled", "budget_tokens": budget}));
                }
            }
        }
    }
    out.insert("max_tokens".into(), json!(max_tokens));

    let mut messages: Vec<Value> = Vec::new();
    let last = req.messages.len().saturating_sub(1);
    for (i, m) in req.messages.iter().enumerate() {
        let mut blocks: Vec<Value> = m.parts.iter().filter_map(render_block).collect();
        if i == last && m.role == Role::Assistant {
            // Claude rejects a final assistant (prefill) turn ending in whitespace.
            if let Some(Value::Object(b)) = blocks.last_mut()
                && b.get("type").and_then(Value::as_str) == Some("text")
            {
                let trimmed = b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_end()
                    .to_string();
                b.insert("text".into(), json!(trimmed));
            }
            blocks.retain(|b| {
                !(b.get("type").and_then(Value::as_str) == Some("text")
                    && b.get("text").and_then(Value::as_str) == Some(""))
            });
        }
        if blocks.is_empty() {
            continue;
        }
        let role = if m.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        // Merge again in case a turn between two same-role turns rendered to nothing.
        if let Some(prev) = messages.last_mut()
            && prev.get("role").and_then(Value::as_str) == Some(role)
            && let Some(arr) = prev.get_mut("content").and_then(Value::as_array_mut)
        {
            arr.extend(blocks);
            continue;
        }
        messages.push(json!({"role": role, "content": blocks}));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !req.system.is_empty() {
        out.insert("system".into(), json!(req.system.join("\n")));
    }
    if let Some(s) = req.stream {
        out.insert("stream".into(), json!(s));
    }
    let thinking_on = thinking_json.is_some();
    if let Some(t) = &req.temperature
        && (!thinking_on || t.as_f64() == Some(1.0))
    {
        out.insert("temperature".into(), t.clone());
    }
    // Recent Claude models reject temperature and top_p together; temperature wins. With thinking
    // top_p must be ≥ 0.95.
    if let Some(p) = &req.top_p
        && !out.contains_key("temperature")
        && (!thinking_on || p.as_f64().is_some_and(|v| v >= 0.95))
    {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(k) = &req.top_k
        && !thinking_on
    {
        out.insert("top_k".into(), k.clone());
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(req.stop));
    }
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("name".into(), json!(t.name));
            if let Some(d) = &t.description {
                o.insert("description".into(), json!(d));
            }
            o.insert("input_schema".into(), schema::to_json_schema(&t.schema));
            Value::Object(o)
        })
        .collect();
    if req.builtin_tools.contains(&BuiltinTool::WebSearch) {
        tools.push(json!({"type": "web_search_20250305", "name": "web_search"}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req.tool_choice {
            Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
            Some(ToolChoice::None) => Some(json!({"type": "none"})),
            Some(ToolChoice::Required) => Some(json!({"type": "any"})),
            Some(ToolChoice::Function(n)) => Some(json!({"type": "tool", "name": n})),
            None => None,
        };
        if req.parallel_tool_calls == Some(false) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if let Some(o) = c.as_object_mut()
                && o.get("type").and_then(Value::as_str) != Some("none")
            {
                o.insert("disable_parallel_tool_use".into(), json!(true));
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    if let Some(t) = thinking_json {
        out.insert("thinking".into(), t);
    }
    out.extend(req.internal.clone());
    Value::Object(out)
}

fn render_source(m: &Media) -> Value {
    match m {
        Media::Inline { mime, data } => json!({"type": "base64", "media_type": mime, "data": data}),
        Media::Url { url, .. } => json!({"type": "url", "url": url}),
    }
}

fn render_block(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => {
            // Claude rejects empty and whitespace-only text blocks.
            if t.trim().is_empty() {
                return None;
            }
            json!({"type": "text", "text": t})
        }
        Part::Image(m) => json!({"type": "image", "source": render_source(m)}),
        Part::File { media, name } => {
            let mime = media.mime().unwrap_or("");
            if mime == "application/pdf" || (mime.is_empty() && matches!(media, Media::Url { .. }))
            {
                let mut d = Map::new();
                d.insert("type".into(), json!("document"));
                d.insert("source".into(), render_source(media));
                if let Some(n) = name {
                    d.insert("title".into(), json!(n));
                }
                Value::Object(d)
            } else if mime.starts_with("image/") {
                json!({"type": "image", "source": render_source(media)})
            } else {
                // Claude has no audio or generic file input.
                let label = name.clone().unwrap_or_else(|| mime.to_string());
                json!({"type": "text", "text": format!("[File: {label}]")})
            }
        }
        Part::Thinking { text, signature } => match signature {
            // Claude rejects thinking blocks without a valid signature.
            Some(sig) => json!({"type": "thinking", "thinking": text, "signature": sig}),
            None => return None,
        },
        Part::RedactedThinking(data) => json!({"type": "redacted_thinking", "data": data}),
        Part::ToolCall(c) => json!({
            "type": "tool_use",
            "id": claude_tool_id(&c.id),
            "name": c.name,
            "input": c.args,
        }),
        Part::ToolResult(r) => {
            let only_text = r.content.iter().all(|p| matches!(p, Part::Text(_)));
            let content = if only_text {
                json!(r.text())
            } else {
                Value::Array(
                    r.content
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text(t) if !t.is_empty() => {
                                Some(json!({"type": "text", "text": t}))
                            }
                            Part::Image(m) => {
                                Some(json!({"type": "image", "source": render_source(m)}))
                            }
                            _ => None,
                        })
                        .collect(),
                )
            };
            let mut o = Map::new();
            o.insert("type".into(), json!("tool_result"));
            o.insert("tool_use_id".into(), json!(claude_tool_id(&r.call_id)));
            o.insert("content".into(), content);
            if r.is_error {
                o.insert("is_error".into(), json!(true));
            }
            Value::Object(o)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Responses (non-stream)
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_stop_reason(s: &str, stop_sequence: Option<&str>) -> Finish {
    match s {
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "stop_sequence" => Finish::StopSequence(stop_sequence.map(str::to_string)),
        "refusal" => Finish::Refusal,
        "pause_turn" => Finish::PauseTurn,
        _ => Finish::Stop,
    }
}

pub(crate) fn stop_reason_str(f: &Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::StopSequence(_) => "stop_sequence",
        Finish::ContentFilter | Finish::Refusal => "refusal",
        Finish::PauseTurn => "pause_turn",
    }
}

pub(crate) fn stop_sequence_value(f: &Finish) -> Value {
    match f {
        Finish::StopSequence(Some(s)) => json!(s),
        _ => Value::Null,
    }
}

/// Claude usage object (message_start, message_delta or response).
pub(crate) fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let input = u64_field(u, "input_tokens");
    let cached = u64_field(u, "cache_read_input_tokens");
    let creation = u64_field(u, "cache_creation_input_tokens");
    let usage = Usage {
        input: input.map(|i| i + cached.unwrap_or(0) + creation.unwrap_or(0)),
        output: u64_field(u, "output_tokens"),
        total: None,
        cached,
        cache_creation: creation,
        reasoning: None,
        reasoning_in_output: true,
    };
    (!usage.is_empty()).then_some(usage)
}

pub(crate) fn render_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.claude_input(),
        "cache_creation_input_tokens": u.cache_creation.unwrap_or(0),
        "cache_read_input_tokens": u.cached.unwrap_or(0),
        "output_tokens": u.output_with_reasoning(),
    })
}

pub(crate) fn parse_response(body: &Value) -> Result<Response, ConvertError> {
    let obj = as_object(body, "Claude response")?;
    let parts = obj
        .get("content")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(parse_block).collect())
        .unwrap_or_default();
    Ok(Response {
        id: str_field(body, "id").map(str::to_string),
        created: None,
        parts,
        finish: str_field(body, "stop_reason")
            .map(|s| parse_stop_reason(s, str_field(body, "stop_sequence"))),
        usage: obj.get("usage").and_then(parse_usage),
    })
}

pub(crate) fn render_response(resp: &Response, model: &str) -> Value {
    let content: Vec<Value> = resp
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some(json!({"type": "text", "text": t})),
            Part::Thinking { text, signature } => Some(json!({
                "type": "thinking",
                "thinking": text,
                "signature": signature.clone().unwrap_or_default(),
            })),
            Part::RedactedThinking(d) => Some(json!({"type": "redacted_thinking", "data": d})),
            Part::Image(m) => {
                Some(json!({"type": "text", "text": format!("![image]({})", m.to_url())}))
            }
            Part::ToolCall(c) => Some(json!({
                "type": "tool_use",
                "id": claude_tool_id(&c.id),
                "name": c.name,
                "input": c.args,
            })),
            _ => None,
        })
        .collect();
    let finish = resp.effective_finish();
    let id = match &resp.id {
        Some(id) if id.starts_with("msg_") => id.clone(),
        _ => format!("msg_{}", random_hex(24)),
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_str(&finish),
        "stop_sequence": stop_sequence_value(&finish),
        "usage": render_usage(&resp.usage.clone().unwrap_or_default()),
    })
}

/// Splits `<thinking>…</thinking>` tags out of OpenAI-compatible text (conversion.md §2.4; only
/// for OpenAI → Claude non-stream responses): tag bodies become thinking blocks, the rest text
/// blocks, all trimmed.
pub(crate) fn split_thinking_tags(parts: Vec<Part>) -> Vec<Part> {
    let mut out = Vec::new();
    for p in parts {
        let Part::Text(text) = p else {
            out.push(p);
            continue;
        };
        if !text.contains("<thinking>") {
            let t = text.trim();
            if !t.is_empty() {
                out.push(Part::Text(t.to_string()));
            }
            continue;
        }
        let mut rest = text.as_str();
        while let Some(start) = rest.find("<thinking>") {
            let before = rest[..start].trim();
            if !before.is_empty() {
                out.push(Part::Text(before.to_string()));
            }
            let after_open = &rest[start + "<thinking>".len()..];
            match after_open.find("</thinking>") {
                Some(end) => {
                    let body = after_open[..end].trim();
                    if !body.is_empty() {
                        out.push(Part::Thinking {
                            text: body.to_string(),
                            signature: None,
                        });
                    }
                    rest = &after_open[end + "</thinking>".len()..];
                }
                None => {
                    let body = after_open.trim();
                    if !body.is_empty() {
                        out.push(Part::Thinking {
                            text: body.to_string(),
                            signature: None,
                        });
                    }
                    rest = "";
                }
            }
        }
        let tail = rest.trim();
        if !tail.is_empty() {
            out.push(Part::Text(tail.to_string()));
        }
    }
    out
}
