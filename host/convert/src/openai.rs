//! OpenAI Chat Completions: request and non-stream response ⇄ the internal representation.
//!
//! Parsing is lenient about what OpenAI-compatible clients and upstreams really send (Claude-style
//! parts inside messages, `developer` role, legacy `functions`/`function_call`, nulls and empty
//! strings where objects are expected). Rendering produces the standard shape plus the
//! DeepSeek-style `reasoning_content` extension for thinking.

use serde_json::{Map, Value, json};

use crate::ConvertError;
use crate::ir::*;
use crate::schema;

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
    let mut last_legacy_call: Option<String> = None;
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        if !m.is_object() {
            return Err(err(format!("{path} must be an object")));
        }
        let role = str_field(m, "role").unwrap_or("user");
        match role {
            "system" | "developer" => {
                let parts = content_parts(m.get("content"), &path)?;
                let text = join_texts(&parts, "\n");
                if !text.is_empty() {
                    req.system.push(text);
                }
            }
            "assistant" | "model" => {
                let mut parts = Vec::new();
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(t) = str_field(m, key).filter(|t| !t.is_empty()) {
                        parts.push(Part::Thinking {
                            text: t.to_string(),
                            signature: None,
                        });
                        break;
                    }
                }
                parts.extend(content_parts(m.get("content"), &path)?);
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        if let Some(call) = parse_tool_call(c, &format!("call_{i}_{j}")) {
                            parts.push(Part::ToolCall(call));
                        }
                    }
                }
                if let Some(fc) = m.get("function_call").filter(|v| v.is_object()) {
                    let id = format!("call_{i}_legacy");
                    if let Some(name) = str_field(fc, "name") {
                        last_legacy_call = Some(id.clone());
                        parts.push(Part::ToolCall(ToolCall {
                            id,
                            name: name.to_string(),
                            args: args_value(fc.get("arguments")),
                        }));
                    }
                }
                req.messages.push(Message {
                    role: Role::Assistant,
                    parts,
                });
            }
            "tool" | "function" => {
                let call_id = str_field(m, "tool_call_id")
                    .map(str::to_string)
                    .or_else(|| {
                        (role == "function")
                            .then(|| last_legacy_call.clone())
                            .flatten()
                    })
                    .unwrap_or_default();
                let content = content_parts(m.get("content"), &path)?;
                req.messages.push(Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult(ToolResult {
                        call_id,
                        name: str_field(m, "name").map(str::to_string),
                        content,
                        is_error: false,
                    })],
                });
            }
            _ => {
                let parts = content_parts(m.get("content"), &path)?;
                req.messages.push(Message {
                    role: Role::User,
                    parts,
                });
            }
        }
    }

    // Tools (and legacy `functions`).
    let mut tool_values: Vec<&Value> = Vec::new();
    if let Some(a) = obj.get("tools").and_then(Value::as_array) {
        tool_values.extend(a.iter());
    }
    let legacy_functions: Vec<Value> = obj
        .get("functions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| json!({"type": "function", "function": f}))
                .collect()
        })
        .unwrap_or_default();
    tool_values.extend(legacy_functions.iter());
    for t in tool_values {
        parse_tool(t, &mut req);
    }
    req.tool_choice = obj
        .get("tool_choice")
        .and_then(parse_tool_choice)
        .or_else(|| obj.get("function_call").and_then(parse_tool_choice));
    req.parallel_tool_calls = obj.get("parallel_tool_calls").and_then(Value::as_bool);

    req.max_tokens = match max_tokens_field(body, "max_completion_tokens", "")? {
        Some(n) => Some(n),
        None => max_tokens_field(body, "max_tokens", "")?,
    };
    req.temperature = number_field(body, "temperature", "")?;
    req.top_p = number_field(body, "top_p", "")?;
    req.top_k = number_field(body, "top_k", "")?;
    req.presence_penalty = number_field(body, "presence_penalty", "")?;
    req.frequency_penalty = number_field(body, "frequency_penalty", "")?;
    req.seed = number_field(body, "seed", "")?;
    req.stop = stop_list(obj.get("stop"));
    req.stream = obj.get("stream").and_then(Value::as_bool);
    req.include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    req.thinking = parse_thinking(obj);
    req.response_format = obj
        .get("response_format")
        .and_then(|rf| match str_field(rf, "type")? {
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => {
                let js = rf.get("json_schema")?;
                Some(ResponseFormat::JsonSchema {
                    name: str_field(js, "name").map(str::to_string),
                    schema: js
                        .get("schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                    strict: js.get("strict").and_then(Value::as_bool),
                })
            }
            _ => None,
        });
    Ok(req)
}

fn parse_tool(t: &Value, req: &mut Request) {
    let ty = str_field(t, "type").unwrap_or("");
    if let Some(f) = t.get("function").filter(|f| f.is_object()) {
        if let Some(name) = str_field(f, "name") {
            req.tools.push(Tool {
                name: name.to_string(),
                description: str_field(f, "description").map(str::to_string),
                schema: f
                    .get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
        return;
    }
    if let Some(name) = str_field(t, "name")
        && (t.get("input_schema").is_some() || t.get("parameters").is_some())
    {
        // Claude-style or Responses-style tool inside a Chat request.
        req.tools.push(Tool {
            name: name.to_string(),
            description: str_field(t, "description").map(str::to_string),
            schema: t
                .get("input_schema")
                .or_else(|| t.get("parameters"))
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
        return;
    }
    let builtin = if ty.starts_with("web_search")
        || t.get("google_search").is_some()
        || t.get("googleSearch").is_some()
    {
        Some(BuiltinTool::WebSearch)
    } else if t.get("url_context").is_some() || t.get("urlContext").is_some() {
        Some(BuiltinTool::UrlContext)
    } else if t.get("google_maps").is_some() || t.get("googleMaps").is_some() {
        Some(BuiltinTool::GoogleMaps)
    } else if ty == "code_interpreter"
        || t.get("code_execution").is_some()
        || t.get("codeExecution").is_some()
    {
        Some(BuiltinTool::CodeExecution)
    } else {
        None
    };
    if let Some(b) = builtin
        && !req.builtin_tools.contains(&b)
    {
        req.builtin_tools.push(b);
    }
}

/// Chat tool_choice, Claude-style tool_choice and legacy `function_call` choice.
pub(crate) fn parse_tool_choice(v: &Value) -> Option<ToolChoice> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" | "any" => Some(ToolChoice::Required),
            _ => None,
        },
        Value::Object(_) => {
            let name = v
                .get("function")
                .and_then(|f| str_field(f, "name"))
                .or_else(|| str_field(v, "name"));
            match (str_field(v, "type"), name) {
                (Some("auto"), _) => Some(ToolChoice::Auto),
                (Some("none"), _) => Some(ToolChoice::None),
                (Some("any") | Some("required"), _) => Some(ToolChoice::Required),
                (_, Some(n)) => Some(ToolChoice::Function(n.to_string())),
                _ => None,
            }
        }
        _ => None,
    }
}

fn parse_thinking(obj: &Map<String, Value>) -> Option<Thinking> {
    if let Some(effort) = obj.get("reasoning_effort").and_then(Value::as_str) {
        let effort = effort.to_ascii_lowercase();
        return Some(Thinking {
            mode: if effort == "none" {
                ThinkingMode::Disabled
            } else {
                ThinkingMode::Enabled
            },
            budget: None,
            effort: Some(effort),
            include_thoughts: None,
        });
    }
    let extra = obj.get("extra_body");
    let anthropic = extra
        .and_then(|e| e.get("anthropic"))
        .and_then(|a| a.get("thinking"))
        .or_else(|| obj.get("thinking"));
    if let Some(t) = anthropic {
        return crate::claude::parse_thinking_value(t, None);
    }
    let google = extra
        .and_then(|e| e.get("google"))
        .and_then(|g| g.get("thinking_config").or_else(|| g.get("thinkingConfig")));
    if let Some(g) = google {
        return crate::gemini::parse_thinking_config(g);
    }
    None
}

fn parse_tool_call(c: &Value, fallback_id: &str) -> Option<ToolCall> {
    let f = c.get("function")?;
    let name = str_field(f, "name")?;
    Some(ToolCall {
        id: str_field(c, "id")
            .filter(|s| !s.is_empty())
            .unwrap_or(fallback_id)
            .to_string(),
        name: name.to_string(),
        args: args_value(f.get("arguments")),
    })
}

/// Arguments given as a JSON string (normal) or already as an object (sloppy clients).
pub(crate) fn args_value(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => parse_args(s),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => Value::Object(Map::new()),
    }
}

/// Message `content`: string, array of parts, or null.
pub(crate) fn content_parts(
    content: Option<&Value>,
    path: &str,
) -> Result<Vec<Part>, ConvertError> {
    let mut parts = Vec::new();
    match content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                parts.push(Part::Text(s.clone()));
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(p) = content_part(item) {
                    parts.push(p);
                }
            }
        }
        Some(_) => {
            return Err(err(format!(
                "{path}.content must be a string, an array of content parts or null"
            )));
        }
    }
    Ok(parts)
}

fn content_part(item: &Value) -> Option<Part> {
    if let Value::String(s) = item {
        return (!s.is_empty()).then(|| Part::Text(s.clone()));
    }
    let ty = str_field(item, "type").unwrap_or("");
    match ty {
        "text" | "input_text" | "output_text" => {
            let t = str_field(item, "text")?;
            (!t.is_empty()).then(|| Part::Text(t.to_string()))
        }
        "refusal" => str_field(item, "refusal").map(|t| Part::Text(t.to_string())),
        "image_url" | "input_image" => {
            let url = match item.get("image_url") {
                Some(Value::String(s)) => s.as_str(),
                Some(o) => str_field(o, "url")?,
                None => str_field(item, "url")?,
            };
            Some(Part::Image(
                Media::from_url(url, Some("image/jpeg")).normalize_image(),
            ))
        }
        "input_audio" => {
            let a = item.get("input_audio")?;
            let format = str_field(a, "format").unwrap_or("wav");
            Some(Part::File {
                media: Media::Inline {
                    mime: format!("audio/{format}"),
                    data: str_field(a, "data")?.to_string(),
                },
                name: None,
            })
        }
        "file" | "input_file" => {
            let f = item.get("file").unwrap_or(item);
            let name = str_field(f, "filename").map(str::to_string);
            let mime_guess = name.as_deref().and_then(mime_from_name);
            if let Some(data) = str_field(f, "file_data") {
                let media = match parse_data_url(data) {
                    Some((mime, data)) => Media::Inline { mime, data },
                    None => Media::Inline {
                        mime: mime_guess.unwrap_or("application/octet-stream").to_string(),
                        data: data.to_string(),
                    },
                };
                Some(Part::File { media, name })
            } else if let Some(url) = str_field(f, "file_url") {
                Some(Part::File {
                    media: Media::Url {
                        mime: mime_guess.map(str::to_string),
                        url: url.to_string(),
                    },
                    name,
                })
            } else {
                // `file_id` references storage we cannot reach from another provider.
                str_field(f, "file_id").map(|id| Part::Text(format!("[File: {id}]")))
            }
        }
        "tool_use" | "tool_result" | "thinking" | "redacted_thinking" | "image" | "document" => {
            crate::claude::parse_block(item)
        }
        _ => str_field(item, "text").map(|t| Part::Text(t.to_string())),
    }
}

impl Media {
    /// Image URLs without a recognisable type are assumed to be JPEG (OpenAI accepts any).
    fn normalize_image(self) -> Media {
        match self {
            Media::Url { mime: None, url } => Media::Url {
                mime: Some("image/jpeg".into()),
                url,
            },
            m => m,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request rendering
// ---------------------------------------------------------------------------------------------

pub(crate) fn render_request(req: &Request, model: &str) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let mut messages = Vec::new();
    if !req.system.is_empty() {
        messages.push(json!({"role": "system", "content": req.system.join("\n")}));
    }
    let thinking_on = req
        .thinking
        .as_ref()
        .is_some_and(|t| t.mode != ThinkingMode::Disabled);
    for m in &req.messages {
        match m.role {
            Role::Assistant => messages.push(render_assistant(&m.parts, thinking_on)),
            Role::User => {
                let mut rest = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult(r) => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": r.call_id,
                            "content": r.text(),
                        })),
                        other => rest.push(other),
                    }
                }
                if let Some(content) = render_user_content(&rest) {
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), Value::String(t.name.clone()));
                if let Some(d) = &t.description {
                    f.insert("description".into(), Value::String(d.clone()));
                }
                f.insert("parameters".into(), schema::to_json_schema(&t.schema));
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            out.insert(
                "tool_choice".into(),
                match tc {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Function(n) => json!({"type": "function", "function": {"name": n}}),
                },
            );
        }
        if let Some(p) = req.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), Value::Bool(p));
        }
    }
    if let Some(n) = req.max_tokens {
        // Reasoning models only accept `max_completion_tokens`; plain models (and most
        // OpenAI-compatible servers) understand `max_tokens`.
        let key = if thinking_on {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        out.insert(key.into(), json!(n));
    }
    for (key, v) in [
        ("temperature", &req.temperature),
        ("top_p", &req.top_p),
        ("presence_penalty", &req.presence_penalty),
        ("frequency_penalty", &req.frequency_penalty),
        ("seed", &req.seed),
    ] {
        if let Some(v) = v {
            out.insert(key.into(), v.clone());
        }
    }
    if !req.stop.is_empty() {
        // OpenAI accepts at most 4 stop sequences.
        let stop: Vec<Value> = req.stop.iter().take(4).map(|s| json!(s)).collect();
        out.insert("stop".into(), Value::Array(stop));
    }
    if let Some(s) = req.stream {
        out.insert("stream".into(), Value::Bool(s));
        if s {
            // Without this OpenAI sends no usage in streams and the gateway cannot account.
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(t) = &req.thinking
        && let Some(effort) = openai_effort(t)
    {
        out.insert("reasoning_effort".into(), Value::String(effort));
    }
    if let Some(rf) = &req.response_format {
        out.insert(
            "response_format".into(),
            match rf {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => {
                    let mut js = Map::new();
                    js.insert(
                        "name".into(),
                        json!(name.clone().unwrap_or_else(|| "response".into())),
                    );
                    js.insert("schema".into(), schema::to_json_schema(schema));
                    if let Some(s) = strict {
                        js.insert("strict".into(), json!(s));
                    }
                    json!({"type": "json_schema", "json_schema": js})
                }
            },
        );
    }
    out.extend(req.internal.clone());
    Value::Object(out)
}

/// `reasoning_effort` for a thinking request: the effort word if given, else derived from the
/// budget; `None` when thinking is off or nothing says how much.
pub(crate) fn openai_effort(t: &Thinking) -> Option<String> {
    if t.mode == ThinkingMode::Disabled {
        return None;
    }
    if let Some(e) = &t.effort {
        return Some(match e.as_str() {
            "minimal" | "low" | "medium" | "high" => e.clone(),
            "none" => return None,
            // `max`, `xhigh` and unknown words are not accepted by OpenAI.
            _ => "high".into(),
        });
    }
    if t.budget.is_some() {
        return Some(effort_from_budget(t.budget).to_string());
    }
    (t.mode == ThinkingMode::Adaptive).then(|| "high".to_string())
}

fn render_assistant(parts: &[Part], thinking_on: bool) -> Value {
    let mut texts = Vec::new();
    let mut reasoning = Vec::new();
    let mut calls = Vec::new();
    for p in parts {
        match p {
            Part::Text(t) => texts.push(t.as_str()),
            Part::Thinking { text, .. } => reasoning.push(text.as_str()),
            Part::ToolCall(c) => calls.push(json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": args_to_string(&c.args)},
            })),
            _ => {}
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    let content = if texts.is_empty() {
        if calls.is_empty() {
            json!("")
        } else {
            Value::Null
        }
    } else {
        json!(texts.join("\n"))
    };
    m.insert("content".into(), content);
    if !reasoning.is_empty() {
        m.insert("reasoning_content".into(), json!(reasoning.join("\n")));
    } else if thinking_on && !calls.is_empty() {
        // DeepSeek/Kimi/GLM-style upstreams require reasoning_content on tool-call turns when
        // thinking is on.
        m.insert("reasoning_content".into(), json!(""));
    }
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(m)
}

fn render_user_content(parts: &[&Part]) -> Option<Value> {
    if let [Part::Text(t)] = parts {
        return Some(json!(t));
    }
    let items: Vec<Value> = parts.iter().filter_map(|p| render_user_part(p)).collect();
    if items.is_empty() {
        None
    } else {
        Some(Value::Array(items))
    }
}

fn render_user_part(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(m) => json!({"type": "image_url", "image_url": {"url": m.to_url()}}),
        Part::File { media, name } => match media {
            Media::Inline { mime, data } if mime.starts_with("audio/") => json!({
                "type": "input_audio",
                "input_audio": {"data": data, "format": mime.trim_start_matches("audio/")},
            }),
            Media::Inline { mime, data } => {
                let mut f = Map::new();
                if let Some(n) = name {
                    f.insert("filename".into(), json!(n));
                }
                f.insert(
                    "file_data".into(),
                    json!(format!("data:{mime};base64,{data}")),
                );
                json!({"type": "file", "file": f})
            }
            Media::Url { url, .. } => json!({"type": "text", "text": format!("[File: {url}]")}),
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Responses (non-stream)
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_finish(s: &str) -> Finish {
    match s {
        "length" => Finish::Length,
        "tool_calls" | "function_call" => Finish::ToolCalls,
        "content_filter" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

pub(crate) fn finish_str(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence(_) | Finish::PauseTurn => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter | Finish::Refusal => "content_filter",
    }
}

pub(crate) fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let usage = Usage {
        input: u64_field(u, "prompt_tokens"),
        output: u64_field(u, "completion_tokens"),
        total: u64_field(u, "total_tokens"),
        cached: u
            .get("prompt_tokens_details")
            .and_then(|d| u64_field(d, "cached_tokens"))
            .or_else(|| u64_field(u, "prompt_cache_hit_tokens")),
        cache_creation: None,
        reasoning: u
            .get("completion_tokens_details")
            .and_then(|d| u64_field(d, "reasoning_tokens")),
        reasoning_in_output: true,
    };
    (!usage.is_empty()).then_some(usage)
}

pub(crate) fn render_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input(),
        // Reported as the source counted it (Gemini candidates exclude thoughts, which are in
        // `reasoning_tokens`; `total_tokens` is the source's total).
        "completion_tokens": u.output.unwrap_or(0),
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached.unwrap_or(0)},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning.unwrap_or(0)},
    })
}

pub(crate) fn parse_response(body: &Value) -> Result<Response, ConvertError> {
    let obj = as_object(body, "OpenAI response")?;
    let mut resp = Response {
        id: str_field(body, "id")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        created: u64_field(body, "created"),
        usage: obj.get("usage").and_then(parse_usage),
        ..Response::default()
    };
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    if let Some(choice) = choice {
        let msg = choice
            .get("message")
            .filter(|m| m.is_object())
            .or_else(|| choice.get("delta"))
            .cloned()
            .unwrap_or(Value::Null);
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = str_field(&msg, key).filter(|t| !t.is_empty()) {
                resp.parts.push(Part::Thinking {
                    text: t.to_string(),
                    signature: None,
                });
                break;
            }
        }
        match msg.get("content") {
            Some(Value::String(s)) if !s.is_empty() => resp.parts.push(Part::Text(s.clone())),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Some(p) = content_part(item) {
                        resp.parts.push(p);
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let fallback = format!("call_{}", random_hex(24));
                if let Some(call) = parse_tool_call(c, &fallback) {
                    resp.parts.push(Part::ToolCall(call));
                }
            }
        }
        if let Some(fc) = msg.get("function_call").filter(|v| v.is_object())
            && let Some(name) = str_field(fc, "name")
        {
            resp.parts.push(Part::ToolCall(ToolCall {
                id: format!("call_{}", random_hex(24)),
                name: name.to_string(),
                args: args_value(fc.get("arguments")),
            }));
        }
        resp.finish = str_field(choice, "finish_reason").map(parse_finish);
    }
    Ok(resp)
}

pub(crate) fn render_response(resp: &Response, model: &str) -> Value {
    let mut texts = String::new();
    let mut reasoning = Vec::new();
    let mut calls = Vec::new();
    for p in &resp.parts {
        match p {
            Part::Text(t) => texts.push_str(t),
            Part::Thinking { text, .. } if !text.is_empty() => reasoning.push(text.as_str()),
            Part::Image(m) => {
                // Chat responses carry text only; images become markdown.
                texts.push_str(&format!("![image]({})", m.to_url()));
            }
            Part::ToolCall(c) => calls.push(json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": args_to_string(&c.args)},
            })),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if texts.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(texts)
    };
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), json!(reasoning.join("\n")));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let id = resp
        .id
        .clone()
        .unwrap_or_else(|| format!("chatcmpl-{}", random_hex(24)));
    json!({
        "id": id,
        "object": "chat.completion",
        "created": resp.created.unwrap_or_else(now_secs),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_str(&resp.effective_finish()),
        }],
        "usage": render_usage(&resp.usage.clone().unwrap_or_default()),
    })
}
