//! OpenAI Responses API: request and non-stream response ⇄ the internal representation.
//!
//! `reasoning` input items are dropped (their `encrypted_content` only means something to
//! OpenAI). `custom` tools (free-form input, e.g. Codex `apply_patch`) become function tools with
//! one string parameter `input`; their calls carry `{"input": …}` as arguments, which Codex also
//! accepts for `apply_patch` when it comes back as a `function_call`.

use serde_json::{Map, Value, json};

use crate::ConvertError;
use crate::ir::*;
use crate::openai::{args_value, content_parts};
use crate::schema;

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_request(body: &Value) -> Result<Request, ConvertError> {
    let obj = as_object(body, "request body")?;
    let mut req = Request {
        internal: internal_keys(obj),
        ..Request::default()
    };
    if let Some(i) = str_field(body, "instructions").filter(|s| !s.is_empty()) {
        req.system.push(i.to_string());
    }
    match obj.get("input") {
        Some(Value::String(s)) => req.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(s.clone())],
        }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                parse_item(item, i, &mut req)?;
            }
        }
        Some(Value::Null) | None => {
            if obj.get("previous_response_id").is_some() {
                return Err(err(
                    "`previous_response_id` is not supported when the upstream is not a Responses API; send the full `input`",
                ));
            }
            return Err(err("`input` is required"));
        }
        Some(_) => return Err(err("`input` must be a string or an array of items")),
    }
    // Legacy Chat-style `messages` some clients add.
    if let Some(msgs) = obj.get("messages").filter(|m| m.is_array()) {
        let chat = crate::openai::parse_request(&json!({"messages": msgs}))?;
        req.system.extend(chat.system);
        req.messages.extend(chat.messages);
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for t in tools {
            parse_tool(t, &mut req);
        }
    }
    req.tool_choice = obj
        .get("tool_choice")
        .and_then(crate::openai::parse_tool_choice);
    req.parallel_tool_calls = obj.get("parallel_tool_calls").and_then(Value::as_bool);
    req.max_tokens = match max_tokens_field(body, "max_output_tokens", "")? {
        Some(n) => Some(n),
        None => max_tokens_field(body, "max_tokens", "")?,
    };
    req.temperature = number_field(body, "temperature", "")?;
    req.top_p = number_field(body, "top_p", "")?;
    req.stream = obj.get("stream").and_then(Value::as_bool);
    if let Some(effort) = obj
        .get("reasoning")
        .and_then(|r| str_field(r, "effort"))
        .map(str::to_ascii_lowercase)
    {
        req.thinking = Some(Thinking {
            mode: if effort == "none" {
                ThinkingMode::Disabled
            } else {
                ThinkingMode::Enabled
            },
            budget: None,
            effort: Some(effort),
            include_thoughts: Some(true),
        });
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")) {
        req.response_format = match str_field(format, "type") {
            Some("json_object") => Some(ResponseFormat::JsonObject),
            Some("json_schema") => Some(ResponseFormat::JsonSchema {
                name: str_field(format, "name").map(str::to_string),
                schema: format
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"})),
                strict: format.get("strict").and_then(Value::as_bool),
            }),
            _ => None,
        };
    }
    Ok(req)
}

fn parse_item(item: &Value, i: usize, req: &mut Request) -> Result<(), ConvertError> {
    let path = format!("input[{i}]");
    if let Value::String(s) = item {
        req.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(s.clone())],
        });
        return Ok(());
    }
    if !item.is_object() {
        return Err(err(format!("{path} must be an object")));
    }
    let ty = str_field(item, "type").unwrap_or(if item.get("role").is_some() {
        "message"
    } else {
        ""
    });
    match ty {
        "message" => {
            let parts = content_parts(item.get("content"), &path)?;
            match str_field(item, "role").unwrap_or("user") {
                "system" | "developer" => {
                    let t = join_texts(&parts, "\n");
                    if !t.is_empty() {
                        req.system.push(t);
                    }
                }
                "assistant" => req.messages.push(Message {
                    role: Role::Assistant,
                    parts,
                }),
                _ => req.messages.push(Message {
                    role: Role::User,
                    parts,
                }),
            }
        }
        "function_call" | "custom_tool_call" => {
            let name = str_field(item, "name").unwrap_or("").to_string();
            let id = str_field(item, "call_id")
                .or_else(|| str_field(item, "id"))
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{i}"));
            let args = if ty == "custom_tool_call" {
                json!({"input": str_field(item, "input").unwrap_or("")})
            } else {
                args_value(item.get("arguments"))
            };
            req.messages.push(Message {
                role: Role::Assistant,
                parts: vec![Part::ToolCall(ToolCall { id, name, args })],
            });
        }
        "function_call_output" | "custom_tool_call_output" => {
            let content = match item.get("output") {
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                Some(Value::Array(_)) => content_parts(item.get("output"), &path)?,
                Some(Value::Null) | None => Vec::new(),
                Some(other) => vec![Part::Text(other.to_string())],
            };
            req.messages.push(Message {
                role: Role::User,
                parts: vec![Part::ToolResult(ToolResult {
                    call_id: str_field(item, "call_id").unwrap_or("").to_string(),
                    name: None,
                    content,
                    is_error: false,
                })],
            });
        }
        // reasoning, item_reference, hosted tool calls: nothing another provider can use.
        _ => {}
    }
    Ok(())
}

fn parse_tool(t: &Value, req: &mut Request) {
    let ty = str_field(t, "type").unwrap_or("function");
    match ty {
        "function" => {
            let (src, name) = match t.get("function").filter(|f| f.is_object()) {
                Some(f) => (f, str_field(f, "name")),
                None => (t, str_field(t, "name")),
            };
            if let Some(name) = name {
                req.tools.push(Tool {
                    name: name.to_string(),
                    description: str_field(src, "description").map(str::to_string),
                    schema: src
                        .get("parameters")
                        .filter(|p| p.is_object())
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
        }
        "custom" => {
            if let Some(name) = str_field(t, "name") {
                req.tools.push(Tool {
                    name: name.to_string(),
                    description: str_field(t, "description").map(str::to_string),
                    schema: json!({
                        "type": "object",
                        "properties": {"input": {"type": "string", "description": "The raw tool input."}},
                        "required": ["input"],
                    }),
                });
            }
        }
        t if t.starts_with("web_search")
            && !req.builtin_tools.contains(&BuiltinTool::WebSearch) =>
        {
            req.builtin_tools.push(BuiltinTool::WebSearch);
        }
        "code_interpreter" if !req.builtin_tools.contains(&BuiltinTool::CodeExecution) => {
            req.builtin_tools.push(BuiltinTool::CodeExecution);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Request rendering
// ---------------------------------------------------------------------------------------------

pub(crate) fn render_request(req: &Request, model: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    if !req.system.is_empty() {
        out.insert("instructions".into(), json!(req.system.join("\n")));
    }
    let mut input = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::Assistant => {
                let texts: Vec<Value> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(json!({"type": "output_text", "text": t})),
                        _ => None,
                    })
                    .collect();
                if !texts.is_empty() {
                    input.push(json!({"type": "message", "role": "assistant", "content": texts}));
                }
                for p in &m.parts {
                    if let Part::ToolCall(c) = p {
                        input.push(json!({
                            "type": "function_call",
                            "call_id": c.id,
                            "name": c.name,
                            "arguments": args_to_string(&c.args),
                        }));
                    }
                }
            }
            Role::User => {
                let mut content = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult(r) => input.push(json!({
                            "type": "function_call_output",
                            "call_id": r.call_id,
                            "output": r.text(),
                        })),
                        Part::Text(t) => content.push(json!({"type": "input_text", "text": t})),
                        Part::Image(media) => content.push(json!({
                            "type": "input_image",
                            "image_url": media.to_url(),
                            "detail": "auto",
                        })),
                        Part::File { media, name } => {
                            let mut f = Map::new();
                            f.insert("type".into(), json!("input_file"));
                            if let Some(n) = name {
                                f.insert("filename".into(), json!(n));
                            }
                            match media {
                                Media::Inline { .. } => {
                                    f.insert("file_data".into(), json!(media.to_url()))
                                }
                                Media::Url { url, .. } => f.insert("file_url".into(), json!(url)),
                            };
                            content.push(Value::Object(f));
                        }
                        _ => {}
                    }
                }
                if !content.is_empty() {
                    input.push(json!({"type": "message", "role": "user", "content": content}));
                }
            }
        }
    }
    out.insert("input".into(), Value::Array(input));
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("type".into(), json!("function"));
            o.insert("name".into(), json!(t.name));
            if let Some(d) = &t.description {
                o.insert("description".into(), json!(d));
            }
            o.insert("parameters".into(), schema::to_json_schema(&t.schema));
            Value::Object(o)
        })
        .collect();
    if req.builtin_tools.contains(&BuiltinTool::WebSearch) {
        tools.push(json!({"type": "web_search"}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            out.insert(
                "tool_choice".into(),
                match tc {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Function(n) => json!({"type": "function", "name": n}),
                },
            );
        }
        if let Some(p) = req.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    if let Some(n) = req.max_tokens {
        out.insert("max_output_tokens".into(), json!(n));
    }
    if let Some(t) = &req.temperature {
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = &req.top_p {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(s) = req.stream {
        out.insert("stream".into(), json!(s));
    }
    if let Some(t) = &req.thinking
        && let Some(effort) = crate::openai::openai_effort(t)
    {
        out.insert(
            "reasoning".into(),
            json!({"effort": effort, "summary": "auto"}),
        );
    }
    if let Some(rf) = &req.response_format {
        let format = match rf {
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                let mut f = Map::new();
                f.insert("type".into(), json!("json_schema"));
                f.insert(
                    "name".into(),
                    json!(name.clone().unwrap_or_else(|| "response".into())),
                );
                f.insert("schema".into(), schema::to_json_schema(schema));
                if let Some(s) = strict {
                    f.insert("strict".into(), json!(s));
                }
                Value::Object(f)
            }
        };
        out.insert("text".into(), json!({"format": format}));
    }
    out.extend(req.internal.clone());
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Responses (non-stream)
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let usage = Usage {
        input: u64_field(u, "input_tokens"),
        output: u64_field(u, "output_tokens"),
        total: u64_field(u, "total_tokens"),
        cached: u
            .get("input_tokens_details")
            .and_then(|d| u64_field(d, "cached_tokens")),
        cache_creation: None,
        reasoning: u
            .get("output_tokens_details")
            .and_then(|d| u64_field(d, "reasoning_tokens")),
        reasoning_in_output: true,
    };
    (!usage.is_empty()).then_some(usage)
}

pub(crate) fn render_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input(),
        "input_tokens_details": {"cached_tokens": u.cached.unwrap_or(0)},
        "output_tokens": u.output_with_reasoning(),
        "output_tokens_details": {"reasoning_tokens": u.reasoning.unwrap_or(0)},
        "total_tokens": u.total(),
    })
}

/// Finish reason of a response object (`status` + `incomplete_details`).
pub(crate) fn parse_status(resp: &Value) -> Option<Finish> {
    match str_field(resp, "status")? {
        "incomplete" => Some(
            match resp
                .get("incomplete_details")
                .and_then(|d| str_field(d, "reason"))
            {
                Some("content_filter") => Finish::ContentFilter,
                _ => Finish::Length,
            },
        ),
        _ => Some(Finish::Stop),
    }
}

/// One output item → parts.
pub(crate) fn parse_output_item(item: &Value, out: &mut Vec<Part>) {
    match str_field(item, "type").unwrap_or("") {
        "message" => {
            if let Some(content) = item.get("content").and_then(Value::as_array) {
                for c in content {
                    let text = match str_field(c, "type") {
                        Some("refusal") => str_field(c, "refusal"),
                        _ => str_field(c, "text"),
                    };
                    if let Some(t) = text.filter(|t| !t.is_empty()) {
                        out.push(Part::Text(t.to_string()));
                    }
                }
            }
        }
        "reasoning" => {
            let mut texts: Vec<&str> = Vec::new();
            for key in ["summary", "content"] {
                if let Some(a) = item.get(key).and_then(Value::as_array) {
                    texts.extend(a.iter().filter_map(|s| str_field(s, "text")));
                }
                if !texts.is_empty() {
                    break;
                }
            }
            if !texts.is_empty() {
                out.push(Part::Thinking {
                    text: texts.join("\n\n"),
                    signature: None,
                });
            }
        }
        "function_call" => out.push(Part::ToolCall(ToolCall {
            id: str_field(item, "call_id")
                .or_else(|| str_field(item, "id"))
                .unwrap_or("")
                .to_string(),
            name: str_field(item, "name").unwrap_or("").to_string(),
            args: args_value(item.get("arguments")),
        })),
        "custom_tool_call" => out.push(Part::ToolCall(ToolCall {
            id: str_field(item, "call_id")
                .or_else(|| str_field(item, "id"))
                .unwrap_or("")
                .to_string(),
            name: str_field(item, "name").unwrap_or("").to_string(),
            args: json!({"input": str_field(item, "input").unwrap_or("")}),
        })),
        "image_generation_call" => {
            if let Some(data) = str_field(item, "result") {
                out.push(Part::Image(Media::Inline {
                    mime: "image/png".into(),
                    data: data.to_string(),
                }));
            }
        }
        _ => {}
    }
}

pub(crate) fn parse_response(body: &Value) -> Result<Response, ConvertError> {
    // A Codex-style `response.completed` event is accepted too.
    let body = match str_field(body, "type") {
        Some(t) if t.starts_with("response.") => body.get("response").unwrap_or(body),
        _ => body,
    };
    as_object(body, "Responses API response")?;
    let mut parts = Vec::new();
    if let Some(items) = body.get("output").and_then(Value::as_array) {
        for item in items {
            parse_output_item(item, &mut parts);
        }
    }
    Ok(Response {
        id: str_field(body, "id").map(str::to_string),
        created: u64_field(body, "created_at"),
        parts,
        finish: parse_status(body),
        usage: body.get("usage").and_then(parse_usage),
    })
}

/// `status` and `incomplete_details` for a finish reason.
pub(crate) fn status_of(f: &Finish) -> (&'static str, Value) {
    match f {
        Finish::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        Finish::ContentFilter | Finish::Refusal => {
            ("incomplete", json!({"reason": "content_filter"}))
        }
        _ => ("completed", Value::Null),
    }
}

pub(crate) fn message_item(id: &str, text: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

pub(crate) fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]})
}

pub(crate) fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

/// The `response` object (non-stream body, and `response.*` stream events).
pub(crate) fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    })
}

pub(crate) fn render_response(resp: &Response, model: &str) -> Value {
    let mut output = Vec::new();
    let thinking: Vec<&str> = resp
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !thinking.is_empty() {
        output.push(reasoning_item(
            &format!("rs_{}", random_hex(32)),
            &thinking.join("\n\n"),
        ));
    }
    let mut text = String::new();
    for p in &resp.parts {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Image(m) => text.push_str(&format!("![image]({})", m.to_url())),
            _ => {}
        }
    }
    let calls: Vec<Value> = resp
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(function_call_item(
                &format!("fc_{}", random_hex(32)),
                &c.id,
                &c.name,
                &args_to_string(&c.args),
                "completed",
            )),
            _ => None,
        })
        .collect();
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&format!("msg_{}", random_hex(32)), &text));
    }
    output.extend(calls);
    let (status, incomplete) = status_of(&resp.effective_finish());
    let id = match &resp.id {
        Some(id) if id.starts_with("resp_") => id.clone(),
        _ => format!("resp_{}", random_hex(32)),
    };
    response_object(
        &id,
        resp.created.unwrap_or_else(now_secs),
        model,
        status,
        incomplete,
        output,
        render_usage(&resp.usage.clone().unwrap_or_default()),
    )
}
