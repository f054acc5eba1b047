//! Google Gemini generateContent: request and non-stream response ⇄ the internal representation.
//!
//! Gemini has no tool-call ids in history: parsing pairs each `functionResponse` with the
//! earlier `functionCall` of the same name (by id when present, else in order) and mints stable
//! ids (`call_<turn>_<part>`, deterministic so converted prompts stay cacheable). Rendering looks
//! the function name up from the call, sends every result once, in call order, in one user turn.
//! Accepts both camelCase and snake_case field names and the Code Assist `{request: …}` /
//! `{response: …}` envelopes.

use serde_json::{Map, Value, json};

use crate::ConvertError;
use crate::ir::*;
use crate::schema;

/// Placeholder signature Gemini 3 accepts on history `functionCall` parts that never had a real
/// one (history converted from another protocol).
pub(crate) const DUMMY_SIGNATURE: &str = "skip_thought_signature_validator";

const SAFETY_CATEGORIES: [&str; 5] = [
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
];

fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_request(body: &Value) -> Result<Request, ConvertError> {
    let mut body = body;
    if body.get("contents").is_none()
        && let Some(inner) = body.get("request").filter(|r| r.is_object())
    {
        body = inner;
    }
    let obj = as_object(body, "request body")?;
    let contents = match obj.get("contents") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("`contents` must be an array")),
        None => return Err(err("`contents` is required")),
    };
    let mut req = Request {
        internal: internal_keys(obj),
        ..Request::default()
    };
    if let Some(si) = get(body, "systemInstruction", "system_instruction") {
        let text = match si {
            Value::String(s) => s.clone(),
            Value::Array(parts) => texts_of(parts),
            other => other
                .get("parts")
                .and_then(Value::as_array)
                .map(|p| texts_of(p))
                .unwrap_or_default(),
        };
        if !text.is_empty() {
            req.system.push(text);
        }
    }
    // Calls of the latest model turn still waiting for a response: (id, name, answered).
    let mut pending: Vec<(String, String, bool)> = Vec::new();
    for (ci, c) in contents.iter().enumerate() {
        let path = format!("contents[{ci}]");
        if !c.is_object() {
            return Err(err(format!("{path} must be an object")));
        }
        let role = if str_field(c, "role") == Some("model") {
            Role::Assistant
        } else {
            Role::User
        };
        let parts_v = match c.get("parts") {
            Some(Value::Array(a)) => a.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(err(format!("{path}.parts must be an array"))),
        };
        if role == Role::Assistant
            && parts_v
                .iter()
                .any(|p| get(p, "functionCall", "function_call").is_some())
        {
            pending.clear();
        }
        let mut parts = Vec::new();
        for (pi, p) in parts_v.iter().enumerate() {
            if let Some(fc) = get(p, "functionCall", "function_call") {
                let name = str_field(fc, "name").unwrap_or("").to_string();
                let id = str_field(fc, "id")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{ci}_{pi}"));
                pending.push((id.clone(), name.clone(), false));
                parts.push(Part::ToolCall(ToolCall {
                    id,
                    name,
                    args: match fc.get("args") {
                        Some(Value::Object(o)) => Value::Object(o.clone()),
                        Some(Value::String(s)) => parse_args(s),
                        _ => Value::Object(Map::new()),
                    },
                }));
            } else if let Some(fr) = get(p, "functionResponse", "function_response") {
                let name = str_field(fr, "name").unwrap_or("").to_string();
                let given = str_field(fr, "id").filter(|s| !s.is_empty());
                let slot = given
                    .and_then(|id| pending.iter().position(|(pid, _, done)| pid == id && !done))
                    .or_else(|| pending.iter().position(|(_, n, done)| *n == name && !done));
                let call_id = match slot {
                    Some(i) => {
                        pending[i].2 = true;
                        pending[i].0.clone()
                    }
                    None => given
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{ci}_{pi}_orphan")),
                };
                parts.push(Part::ToolResult(ToolResult {
                    call_id,
                    name: Some(name),
                    content: vec![Part::Text(function_response_text(fr.get("response")))],
                    is_error: false,
                }));
            } else if let Some(part) = parse_plain_part(p) {
                parts.push(part);
            }
        }
        req.messages.push(Message { role, parts });
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for t in tools {
            parse_tool(t, &mut req);
        }
    }
    if let Some(fcc) = get(body, "toolConfig", "tool_config")
        .and_then(|tc| get(tc, "functionCallingConfig", "function_calling_config"))
    {
        let allowed: Vec<&str> = get(fcc, "allowedFunctionNames", "allowed_function_names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        req.tool_choice = match str_field(fcc, "mode")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("AUTO") | Some("VALIDATED") => Some(ToolChoice::Auto),
            Some("NONE") => Some(ToolChoice::None),
            Some("ANY") if allowed.len() == 1 => Some(ToolChoice::Function(allowed[0].to_string())),
            Some("ANY") => Some(ToolChoice::Required),
            _ => None,
        };
    }
    if let Some(gc) = get(body, "generationConfig", "generation_config") {
        let p = "generationConfig.";
        req.temperature = number_field(gc, "temperature", p)?;
        req.top_p = match number_field(gc, "topP", p)? {
            Some(v) => Some(v),
            None => number_field(gc, "top_p", p)?,
        };
        req.top_k = match number_field(gc, "topK", p)? {
            Some(v) => Some(v),
            None => number_field(gc, "top_k", p)?,
        };
        req.max_tokens = match max_tokens_field(gc, "maxOutputTokens", p)? {
            Some(v) => Some(v),
            None => max_tokens_field(gc, "max_output_tokens", p)?,
        };
        req.presence_penalty = number_field(gc, "presencePenalty", p)?;
        req.frequency_penalty = number_field(gc, "frequencyPenalty", p)?;
        req.seed = number_field(gc, "seed", p)?;
        req.stop = stop_list(get(gc, "stopSequences", "stop_sequences"));
        let schema = get(gc, "responseJsonSchema", "response_json_schema")
            .or_else(|| get(gc, "responseSchema", "response_schema"));
        let mime = get(gc, "responseMimeType", "response_mime_type").and_then(Value::as_str);
        req.response_format = match (schema, mime) {
            (Some(s), _) => Some(ResponseFormat::JsonSchema {
                name: None,
                schema: s.clone(),
                strict: None,
            }),
            (None, Some("application/json")) => Some(ResponseFormat::JsonObject),
            _ => None,
        };
        req.thinking = get(gc, "thinkingConfig", "thinking_config").and_then(parse_thinking_config);
    }
    Ok(req)
}

fn texts_of(parts: &[Value]) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Value::String(s) => Some(s.as_str()),
            _ => str_field(p, "text"),
        })
        .filter(|t| !t.is_empty())
        .collect();
    texts.join("\n")
}

/// `functionResponse.response` as text: `result`/`output`/`content` when it is the only thing
/// there, else the whole object as JSON.
fn function_response_text(resp: Option<&Value>) -> String {
    match resp {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            for key in ["result", "output", "content"] {
                if o.len() == 1
                    && let Some(v) = o.get(key)
                {
                    return loose_text(v);
                }
            }
            Value::Object(o.clone()).to_string()
        }
        Some(other) => other.to_string(),
    }
}

/// Text, thought, inline data, file data and code parts (not function calls/responses).
fn parse_plain_part(p: &Value) -> Option<Part> {
    if let Some(text) = str_field(p, "text") {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            return Some(Part::Thinking {
                text: text.to_string(),
                signature: get(p, "thoughtSignature", "thought_signature")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        return (!text.is_empty()).then(|| Part::Text(text.to_string()));
    }
    if let Some(d) = get(p, "inlineData", "inline_data") {
        let mime = get(d, "mimeType", "mime_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_string();
        let media = Media::Inline {
            data: str_field(d, "data")?.to_string(),
            mime: mime.clone(),
        };
        return Some(if mime.starts_with("image/") {
            Part::Image(media)
        } else {
            Part::File { media, name: None }
        });
    }
    if let Some(d) = get(p, "fileData", "file_data") {
        let url = get(d, "fileUri", "file_uri").and_then(Value::as_str)?;
        let mime = get(d, "mimeType", "mime_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| mime_from_name(url).map(str::to_string));
        let is_image = mime.as_deref().is_some_and(|m| m.starts_with("image/"));
        let media = Media::Url {
            mime,
            url: url.to_string(),
        };
        return Some(if is_image {
            Part::Image(media)
        } else {
            Part::File { media, name: None }
        });
    }
    if let Some(code) = get(p, "executableCode", "executable_code") {
        let lang = str_field(code, "language")
            .unwrap_or("")
            .to_ascii_lowercase();
        return Some(Part::Text(format!(
            "```{lang}\n{}\n```",
            str_field(code, "code").unwrap_or("")
        )));
    }
    if let Some(res) = get(p, "codeExecutionResult", "code_execution_result") {
        return str_field(res, "output").map(|o| Part::Text(o.to_string()));
    }
    None
}

fn parse_tool(t: &Value, req: &mut Request) {
    if let Some(decls) =
        get(t, "functionDeclarations", "function_declarations").and_then(Value::as_array)
    {
        for d in decls {
            let Some(name) = str_field(d, "name") else {
                continue;
            };
            req.tools.push(Tool {
                name: name.to_string(),
                description: str_field(d, "description").map(str::to_string),
                schema: get(d, "parametersJsonSchema", "parameters_json_schema")
                    .or_else(|| d.get("parameters"))
                    .filter(|s| s.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
    }
    let builtins = [
        ("googleSearch", "google_search", BuiltinTool::WebSearch),
        (
            "googleSearchRetrieval",
            "google_search_retrieval",
            BuiltinTool::WebSearch,
        ),
        ("urlContext", "url_context", BuiltinTool::UrlContext),
        ("googleMaps", "google_maps", BuiltinTool::GoogleMaps),
        (
            "codeExecution",
            "code_execution",
            BuiltinTool::CodeExecution,
        ),
    ];
    for (camel, snake, b) in builtins {
        if get(t, camel, snake).is_some() && !req.builtin_tools.contains(&b) {
            req.builtin_tools.push(b);
        }
    }
}

/// Gemini `thinkingConfig` (camelCase or snake_case).
pub(crate) fn parse_thinking_config(g: &Value) -> Option<Thinking> {
    let budget = get(g, "thinkingBudget", "thinking_budget").and_then(Value::as_i64);
    let include = get(g, "includeThoughts", "include_thoughts").and_then(Value::as_bool);
    let level = get(g, "thinkingLevel", "thinking_level")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    if budget == Some(0) {
        return Some(Thinking {
            mode: ThinkingMode::Disabled,
            budget: None,
            effort: None,
            include_thoughts: include,
        });
    }
    if budget.is_none() && include.is_none() && level.is_none() {
        return None;
    }
    Some(Thinking {
        mode: ThinkingMode::Enabled,
        // -1 = dynamic budget: no fixed number.
        budget: budget.filter(|b| *b > 0).map(|b| b as u64),
        effort: level,
        include_thoughts: include,
    })
}

// ---------------------------------------------------------------------------------------------
// Request rendering
// ---------------------------------------------------------------------------------------------

/// Gemini 1.x and 2.0 models reject `thinkingConfig`.
fn supports_thinking(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    !(m.contains("gemini-1") || m.contains("gemini-2.0") || m.contains("gemma"))
}

fn is_gemini3(model: &str) -> bool {
    model.to_ascii_lowercase().contains("gemini-3")
}

pub(crate) fn render_request(req: &Request, model: &str) -> Value {
    let mut out = Map::new();
    let mut contents = Vec::new();
    for m in &req.messages {
        let model_turn = m.role == Role::Assistant;
        // Function responses first (in call order, as normalised), then everything else.
        let parts: Vec<Value> = m
            .parts
            .iter()
            .filter(|p| matches!(p, Part::ToolResult(_)))
            .chain(m.parts.iter().filter(|p| !matches!(p, Part::ToolResult(_))))
            .filter_map(|p| render_part(p, model_turn))
            .collect();
        if parts.is_empty() {
            continue;
        }
        contents.push(json!({"role": if model_turn { "model" } else { "user" }, "parts": parts}));
    }
    out.insert("contents".into(), Value::Array(contents));
    if !req.system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": req.system.join("\n")}]}),
        );
    }
    let mut tools = Vec::new();
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), json!(t.name));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), json!(desc));
                }
                if let Some(p) = schema::to_gemini_parameters(&t.schema) {
                    d.insert("parameters".into(), p);
                }
                Value::Object(d)
            })
            .collect();
        tools.push(json!({"functionDeclarations": decls}));
    }
    for b in &req.builtin_tools {
        tools.push(match b {
            BuiltinTool::WebSearch => json!({"googleSearch": {}}),
            BuiltinTool::UrlContext => json!({"urlContext": {}}),
            BuiltinTool::GoogleMaps => json!({"googleMaps": {}}),
            BuiltinTool::CodeExecution => json!({"codeExecution": {}}),
        });
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice
        && !req.tools.is_empty()
    {
        let cfg = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        out.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
    }
    let mut gc = Map::new();
    for (key, v) in [
        ("temperature", &req.temperature),
        ("topP", &req.top_p),
        ("topK", &req.top_k),
        ("presencePenalty", &req.presence_penalty),
        ("frequencyPenalty", &req.frequency_penalty),
        ("seed", &req.seed),
    ] {
        if let Some(v) = v {
            gc.insert(key.into(), v.clone());
        }
    }
    if let Some(n) = req.max_tokens {
        gc.insert("maxOutputTokens".into(), json!(n));
    }
    if !req.stop.is_empty() {
        gc.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            gc.insert("responseMimeType".into(), json!("application/json"));
            gc.insert("responseSchema".into(), schema::to_gemini(schema));
        }
        None => {}
    }
    if let Some(t) = &req.thinking
        && supports_thinking(model)
        && let Some(tc) = thinking_config(t, model)
    {
        gc.insert("thinkingConfig".into(), tc);
    }
    if !gc.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gc));
    }
    let safety: Vec<Value> = SAFETY_CATEGORIES
        .iter()
        .map(|c| json!({"category": c, "threshold": "OFF"}))
        .collect();
    out.insert("safetySettings".into(), Value::Array(safety));
    out.extend(req.internal.clone());
    Value::Object(out)
}

fn thinking_config(t: &Thinking, model: &str) -> Option<Value> {
    let include = t.include_thoughts.unwrap_or(true);
    match t.mode {
        ThinkingMode::Disabled => None,
        ThinkingMode::Adaptive => Some(json!({"includeThoughts": include})),
        ThinkingMode::Enabled => {
            if let Some(b) = t.budget {
                return Some(json!({"thinkingBudget": b, "includeThoughts": include}));
            }
            match t.effort.as_deref() {
                Some(e) if is_gemini3(model) => {
                    let level = match e {
                        "minimal" | "low" | "medium" | "high" => e.to_ascii_uppercase(),
                        _ => "HIGH".into(),
                    };
                    Some(json!({"thinkingLevel": level, "includeThoughts": include}))
                }
                Some(e) => match gemini_budget_from_effort(e) {
                    Some(b) => Some(json!({"thinkingBudget": b, "includeThoughts": include})),
                    None => Some(json!({"includeThoughts": include})),
                },
                None => Some(json!({"includeThoughts": include})),
            }
        }
    }
}

fn render_media(m: &Media) -> Value {
    match m {
        Media::Inline { mime, data } => json!({"inlineData": {"mimeType": mime, "data": data}}),
        Media::Url { mime, url } => json!({"fileData": {
            "mimeType": mime.clone().unwrap_or_else(|| "application/octet-stream".into()),
            "fileUri": url,
        }}),
    }
}

fn render_part(p: &Part, model_turn: bool) -> Option<Value> {
    Some(match p {
        Part::Text(t) => {
            if t.is_empty() {
                return None;
            }
            json!({"text": t})
        }
        Part::Image(m) | Part::File { media: m, .. } => {
            let mut v = render_media(m);
            if model_turn && let Some(o) = v.as_object_mut() {
                o.insert("thoughtSignature".into(), json!(DUMMY_SIGNATURE));
            }
            v
        }
        Part::Thinking { text, signature } => {
            let mut o = Map::new();
            o.insert("text".into(), json!(text));
            o.insert("thought".into(), json!(true));
            // Short values are not real Gemini signatures (they would be rejected).
            if let Some(sig) = signature.as_ref().filter(|s| s.len() >= 50) {
                o.insert("thoughtSignature".into(), json!(sig));
            }
            Value::Object(o)
        }
        // Encrypted Claude reasoning means nothing to Gemini.
        Part::RedactedThinking(_) => return None,
        Part::ToolCall(c) => json!({
            "functionCall": {"name": c.name, "args": c.args},
            "thoughtSignature": DUMMY_SIGNATURE,
        }),
        Part::ToolResult(r) => json!({
            "functionResponse": {
                "name": r.name.clone().unwrap_or_else(|| r.call_id.clone()),
                "response": {"result": r.text()},
            }
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Responses (non-stream)
// ---------------------------------------------------------------------------------------------

pub(crate) fn parse_finish(s: &str) -> Finish {
    match s {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "MODEL_ARMOR"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

pub(crate) fn finish_str(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter | Finish::Refusal => "SAFETY",
        _ => "STOP",
    }
}

/// `usageMetadata`; `None` when it carries no counts (early stream chunks hold only
/// `trafficType`).
pub(crate) fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let usage = Usage {
        input: u64_field(u, "promptTokenCount"),
        output: u64_field(u, "candidatesTokenCount"),
        total: u64_field(u, "totalTokenCount"),
        cached: u64_field(u, "cachedContentTokenCount"),
        cache_creation: None,
        reasoning: u64_field(u, "thoughtsTokenCount"),
        reasoning_in_output: false,
    };
    if usage.is_empty() {
        return None;
    }
    Some(Usage {
        input: usage.input.or(Some(0)),
        output: usage.output.or(Some(0)),
        ..usage
    })
}

pub(crate) fn render_usage(u: &Usage) -> Value {
    let mut o = Map::new();
    o.insert("promptTokenCount".into(), json!(u.input()));
    o.insert(
        "candidatesTokenCount".into(),
        json!(u.output_without_reasoning()),
    );
    o.insert("totalTokenCount".into(), json!(u.total()));
    if let Some(r) = u.reasoning.filter(|r| *r > 0) {
        o.insert("thoughtsTokenCount".into(), json!(r));
    }
    if let Some(c) = u.cached.filter(|c| *c > 0) {
        o.insert("cachedContentTokenCount".into(), json!(c));
    }
    Value::Object(o)
}

/// Unwraps the Code Assist `{response: …}` envelope.
pub(crate) fn unwrap_response(body: &Value) -> &Value {
    match body.get("response") {
        Some(inner) if body.get("candidates").is_none() && inner.is_object() => inner,
        _ => body,
    }
}

/// Parts of a response candidate (function calls get ids when Gemini gave none).
pub(crate) fn parse_candidate_parts(parts: &[Value]) -> Vec<Part> {
    let mut out = Vec::new();
    for p in parts {
        if let Some(fc) = get(p, "functionCall", "function_call") {
            out.push(Part::ToolCall(ToolCall {
                id: str_field(fc, "id")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{}", random_hex(24))),
                name: str_field(fc, "name").unwrap_or("").to_string(),
                args: match fc.get("args") {
                    Some(Value::Object(o)) => Value::Object(o.clone()),
                    Some(Value::String(s)) => parse_args(s),
                    _ => Value::Object(Map::new()),
                },
            }));
        } else if let Some(part) = parse_plain_part(p) {
            out.push(part);
        }
    }
    out
}

pub(crate) fn parse_response(body: &Value) -> Result<Response, ConvertError> {
    let body = unwrap_response(body);
    as_object(body, "Gemini response")?;
    let cand = body
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let parts = cand
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(|p| parse_candidate_parts(p))
        .unwrap_or_default();
    let mut finish = cand
        .and_then(|c| str_field(c, "finishReason"))
        .map(parse_finish);
    if cand.is_none()
        && body
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some()
    {
        finish = Some(Finish::ContentFilter);
    }
    Ok(Response {
        id: str_field(body, "responseId").map(str::to_string),
        created: None,
        parts,
        finish,
        usage: body.get("usageMetadata").and_then(parse_usage),
    })
}

/// A response part for a Gemini client (responses carry real ids on function calls).
pub(crate) fn render_response_part(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"text": t}),
        Part::Thinking { text, signature } => {
            let mut o = Map::new();
            o.insert("text".into(), json!(text));
            o.insert("thought".into(), json!(true));
            if let Some(sig) = signature {
                o.insert("thoughtSignature".into(), json!(sig));
            }
            Value::Object(o)
        }
        Part::Image(m) | Part::File { media: m, .. } => render_media(m),
        Part::ToolCall(c) => json!({"functionCall": {"id": c.id, "name": c.name, "args": c.args}}),
        _ => return None,
    })
}

pub(crate) fn render_response(resp: &Response, model: &str) -> Value {
    let parts: Vec<Value> = resp.parts.iter().filter_map(render_response_part).collect();
    let mut out = Map::new();
    out.insert(
        "candidates".into(),
        json!([{
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_str(&resp.effective_finish()),
            "index": 0,
        }]),
    );
    if let Some(u) = &resp.usage {
        out.insert("usageMetadata".into(), render_usage(u));
    } else {
        out.insert("usageMetadata".into(), json!({}));
    }
    out.insert("modelVersion".into(), json!(model));
    if let Some(id) = &resp.id {
        out.insert("responseId".into(), json!(id));
    }
    Value::Object(out)
}
