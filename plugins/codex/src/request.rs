//! The upstream request (codex.md §3): the model map, the Codex request forcing applied to the
//! OpenAI Responses body the host converted (or passed through), the exact headers, and the
//! shortening of tool names longer than the upstream's 64 characters (restored on the way back
//! by [`ToolNames`]).
//!
//! Forcing (`prepareRequestBody`): `store:false`, `stream:true`, `parallel_tool_calls` (default
//! true), `include` ∋ `reasoning.encrypted_content`, `reasoning{effort (default medium,
//! minimal→none), summary (default auto)}`, a non-empty `instructions`, `service_tier` only if
//! `priority`; unsupported parameters (`max_output_tokens`, `temperature`, `top_p`, `user`, …)
//! removed; `web_search` and `image_generation` tools appended (gpt-image-2: exactly one
//! `image_generation` tool on gpt-5.4). Input normalisation: a string input becomes a user
//! message, `system` messages become `developer` messages, content parts get the typed names
//! the backend wants, item ids are dropped (with `store:false` the backend has no stored items
//! to resolve them against) and `item_reference`s are removed.
//!
//! Unlike the original, `developer` items are kept when `instructions` is set: the host's
//! converters put a system prompt only into `instructions`, so nothing is duplicated, and a
//! Responses client's developer messages are real content.

use std::collections::HashMap;
use std::sync::Mutex;

use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use serde_json::{Map, Value, json};

/// Upstream model ids, sorted; every one also answers as `<id>-fast`.
pub const MODELS: [&str; 7] = [
    "gpt-5.2",
    "gpt-5.3-codex",
    "gpt-5.3-codex-spark",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.5",
    "gpt-image-2",
];
/// Where an unknown model goes.
pub const FALLBACK_MODEL: &str = "gpt-5.2";
pub const IMAGE_MODEL: &str = "gpt-image-2";
/// The model gpt-image-2 requests are served by.
pub const IMAGE_UPSTREAM_MODEL: &str = "gpt-5.4";
pub const DEFAULT_INSTRUCTIONS: &str = "You are a helpful assistant.";
pub const CLIENT_VERSION: &str = "0.130.0";
pub const ORIGINATOR: &str = "codex-tui";
pub const USER_AGENT: &str =
    "codex-tui/0.130.0 (Windows 10.0.26100; x86_64) WindowsTerminal (codex-tui; 0.130.0)";
const MAX_TOOL_NAME: usize = 64;
/// How long a session's `prompt_cache_key` is reused.
const CACHE_KEY_TTL_MS: i64 = 3_600_000;
const CACHE_KEY_MAX: usize = 4096;
/// Fields the backend rejects with `400 Unsupported parameter`.
const UNSUPPORTED: [&str; 10] = [
    "max_output_tokens",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "messages",
    "prompt_cache_retention",
    "stream_options",
];

/// Every model id the plugin serves (base ids and their `-fast` twins).
pub fn model_ids() -> Vec<String> {
    let mut out: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    out.extend(MODELS.iter().map(|m| format!("{m}-fast")));
    out.sort();
    out
}

/// The model the client asked for → (upstream model, `-fast`, is gpt-image-2).
pub fn map_model(requested: &str) -> (String, bool, bool) {
    let (base, fast) = match requested.strip_suffix("-fast") {
        Some(b) => (b, true),
        None => (requested, false),
    };
    if base == IMAGE_MODEL {
        return (IMAGE_UPSTREAM_MODEL.into(), fast, true);
    }
    let m = if MODELS.contains(&base) {
        base
    } else {
        FALLBACK_MODEL
    };
    (m.to_string(), fast, false)
}

/// `prompt_cache_key`s per session key, each kept for an hour.
#[derive(Default)]
pub struct CacheKeys(Mutex<HashMap<String, (String, i64)>>);

impl CacheKeys {
    pub fn key_for(&self, session: &str) -> String {
        let now = now_ms();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, until)) = map.get(session)
            && *until > now
        {
            return k.clone();
        }
        if map.len() >= CACHE_KEY_MAX {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= CACHE_KEY_MAX {
                map.clear();
            }
        }
        let k = uuid::Uuid::new_v4().to_string();
        map.insert(session.to_string(), (k.clone(), now + CACHE_KEY_TTL_MS));
        k
    }
}

/// Shortened tool name → the client's name.
#[derive(Default, Debug, Clone)]
pub struct ToolNames {
    short_to_long: HashMap<String, String>,
    long_to_short: HashMap<String, String>,
}

impl ToolNames {
    /// The upstream name for `name` (shortened once, consistently).
    fn shorten(&mut self, name: &str) -> String {
        if name.chars().count() <= MAX_TOOL_NAME {
            return name.to_string();
        }
        if let Some(s) = self.long_to_short.get(name) {
            return s.clone();
        }
        let base = match name.strip_prefix("mcp__").and_then(|r| r.rsplit_once("__")) {
            Some((_, last)) => format!("mcp__{last}"),
            None => name.to_string(),
        };
        let base = truncate(&base, MAX_TOOL_NAME);
        let mut candidate = base.clone();
        let mut n = 0;
        while self.short_to_long.contains_key(&candidate) {
            n += 1;
            let suffix = format!("_{n}");
            candidate = format!("{}{suffix}", truncate(&base, MAX_TOOL_NAME - suffix.len()));
        }
        self.short_to_long
            .insert(candidate.clone(), name.to_string());
        self.long_to_short
            .insert(name.to_string(), candidate.clone());
        candidate
    }

    /// The client's name for an upstream name.
    pub fn restore<'a>(&'a self, name: &'a str) -> &'a str {
        self.short_to_long.get(name).map_or(name, String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.short_to_long.is_empty()
    }

    /// Restores the `name` of a `function_call` item in place.
    pub fn restore_item(&self, item: &mut Value) {
        if self.is_empty() {
            return;
        }
        if let Some(n) = item.get("name").and_then(Value::as_str)
            && let Some(long) = self.short_to_long.get(n)
        {
            item["name"] = json!(long);
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The body to send and what is needed to read the answer.
pub struct Prepared {
    pub body: Value,
    pub names: ToolNames,
    pub cache_key: String,
}

fn text_part(kind: &str, text: &str) -> Value {
    json!({"type": kind, "text": text})
}

/// Normalises one message's content for `role`.
fn message_content(content: Option<&Value>, role: &str) -> Vec<Value> {
    let text_kind = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    match content {
        Some(Value::String(s)) => vec![text_part(text_kind, s)],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(text_part(text_kind, s)),
                Value::Object(o) => {
                    let mut o = o.clone();
                    let ty = o.get("type").and_then(Value::as_str).unwrap_or("text");
                    match ty {
                        "text" | "input_text" | "output_text" => {
                            o.insert("type".into(), json!(text_kind));
                            if role == "assistant" && !o.contains_key("annotations") {
                                o.insert("annotations".into(), json!([]));
                            }
                        }
                        "image_url" => {
                            // Chat-style part: `image_url` is a string or `{url, detail}`.
                            let url = match o.get("image_url") {
                                Some(Value::String(u)) => u.clone(),
                                Some(v) => v.get("url").and_then(Value::as_str)?.to_string(),
                                None => return None,
                            };
                            o = Map::new();
                            o.insert("type".into(), json!("input_image"));
                            o.insert("image_url".into(), json!(url));
                        }
                        _ => {}
                    }
                    Some(Value::Object(o))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn normalize_input(input: Option<Value>, names: &mut ToolNames) -> Result<Vec<Value>, PluginError> {
    let items = match input {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(PluginError::invalid_input(
                "`input` must be a string or an array of items",
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut o = match item {
            Value::String(s) => {
                let mut m = Map::new();
                m.insert("role".into(), json!("user"));
                m.insert("content".into(), json!(s));
                m
            }
            Value::Object(o) => o,
            _ => continue,
        };
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if o.contains_key("role") {
                    "message".into()
                } else {
                    String::new()
                }
            });
        match ty.as_str() {
            "message" => {
                let role = match o.get("role").and_then(Value::as_str).unwrap_or("user") {
                    "system" | "developer" => "developer",
                    "assistant" => "assistant",
                    _ => "user",
                };
                let content = message_content(o.get("content"), role);
                let mut m = Map::new();
                m.insert("type".into(), json!("message"));
                m.insert("role".into(), json!(role));
                m.insert("content".into(), Value::Array(content));
                out.push(Value::Object(m));
            }
            "item_reference" | "" => {}
            _ => {
                // Stored-item ids cannot be resolved with `store:false`.
                o.shift_remove("id");
                if ty == "function_call"
                    && let Some(n) = o.get("name").and_then(Value::as_str)
                {
                    let short = names.shorten(n);
                    o.insert("name".into(), json!(short));
                }
                if ty == "function_call_output"
                    && let Some(v) = o.get("output")
                    && !v.is_string()
                    && !v.is_array()
                {
                    let s = v.to_string();
                    o.insert("output".into(), json!(s));
                }
                out.push(Value::Object(o));
            }
        }
    }
    Ok(out)
}

fn normalize_tools(tools: Option<Value>, names: &mut ToolNames) -> Vec<Value> {
    let Some(Value::Array(tools)) = tools else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tools {
        let Value::Object(mut o) = t else { continue };
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function")
            .to_string();
        match ty.as_str() {
            "function" => {
                // Chat-style `{type, function:{name, description, parameters}}` → flat.
                if let Some(Value::Object(f)) = o.shift_remove("function") {
                    for (k, v) in f {
                        o.entry(k).or_insert(v);
                    }
                }
                let Some(name) = o.get("name").and_then(Value::as_str).map(str::to_string) else {
                    continue;
                };
                o.insert("type".into(), json!("function"));
                o.insert("name".into(), json!(names.shorten(&name)));
                if !o.get("parameters").is_some_and(Value::is_object) {
                    o.insert(
                        "parameters".into(),
                        json!({"type": "object", "properties": {}}),
                    );
                }
                out.push(Value::Object(o));
            }
            t if t.starts_with("web_search") => {
                if !out.iter().any(|x| x["type"] == "web_search") {
                    out.push(json!({"type": "web_search"}));
                }
            }
            _ => out.push(Value::Object(o)),
        }
    }
    out
}

/// The session key a `prompt_cache_key` is kept under.
fn session_key(body: &Map<String, Value>, model: &str) -> String {
    let meta = body.get("metadata");
    ["session_id", "conversation_id", "user_id"]
        .iter()
        .find_map(|k| {
            meta.and_then(|m| m.get(*k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| format!("{k}:{s}"))
        })
        .unwrap_or_else(|| format!("{model}-default"))
}

/// Applies the Codex forcing to a Responses request body.
pub fn prepare(
    body: Value,
    requested_model: &str,
    keys: &CacheKeys,
) -> Result<Prepared, PluginError> {
    let Value::Object(mut b) = body else {
        return Err(PluginError::invalid_input(
            "the request body must be a JSON object",
        ));
    };
    let requested = if requested_model.is_empty() {
        b.get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        requested_model.to_string()
    };
    let (model, fast, image) = map_model(&requested);
    let cache_key = match b.get("prompt_cache_key").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => keys.key_for(&session_key(&b, &model)),
    };
    let mut names = ToolNames::default();
    let tools = normalize_tools(b.shift_remove("tools"), &mut names);
    let input = normalize_input(b.shift_remove("input"), &mut names)?;
    let size = b.shift_remove("size");
    for k in UNSUPPORTED {
        b.shift_remove(k);
    }
    b.shift_remove("previous_response_id");
    b.shift_remove("background");

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let instructions = b
        .shift_remove("instructions")
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_INSTRUCTIONS.to_string());
    out.insert("instructions".into(), json!(instructions));
    out.insert("input".into(), Value::Array(input));

    let tools = if image {
        let mut t = Map::new();
        t.insert("type".into(), json!("image_generation"));
        if let Some(s) = size.filter(|s| s.is_string()) {
            t.insert("size".into(), s);
        }
        vec![Value::Object(t)]
    } else {
        let mut tools = tools;
        if !tools.iter().any(|t| t["type"] == "web_search") {
            tools.push(json!({"type": "web_search"}));
        }
        if !model.ends_with("spark") && !tools.iter().any(|t| t["type"] == "image_generation") {
            tools.push(json!({"type": "image_generation", "output_format": "png"}));
        }
        tools
    };
    out.insert("tools".into(), Value::Array(tools));
    let tool_choice = match b.shift_remove("tool_choice") {
        Some(Value::Object(mut tc)) => {
            if let Some(Value::Object(f)) = tc.shift_remove("function")
                && let Some(n) = f.get("name")
            {
                tc.insert("name".into(), n.clone());
            }
            if let Some(n) = tc.get("name").and_then(Value::as_str).map(str::to_string) {
                tc.insert("name".into(), json!(names.shorten(&n)));
            }
            Value::Object(tc)
        }
        Some(v @ Value::String(_)) => v,
        _ => json!("auto"),
    };
    out.insert("tool_choice".into(), tool_choice);
    let parallel = b
        .shift_remove("parallel_tool_calls")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    out.insert("parallel_tool_calls".into(), json!(parallel));

    let mut reasoning = match b.shift_remove("reasoning") {
        Some(Value::Object(r)) => r,
        _ => Map::new(),
    };
    let effort = match reasoning.get("effort").and_then(Value::as_str) {
        _ if fast => "xhigh".to_string(),
        Some("minimal") => "none".to_string(),
        Some(e) if !e.is_empty() => e.to_string(),
        _ => "medium".to_string(),
    };
    reasoning.insert("effort".into(), json!(effort));
    if !reasoning.get("summary").is_some_and(Value::is_string) {
        reasoning.insert("summary".into(), json!("auto"));
    }
    out.insert("reasoning".into(), Value::Object(reasoning));

    let mut include: Vec<Value> = match b.shift_remove("include") {
        Some(Value::Array(a)) => a.into_iter().filter(Value::is_string).collect(),
        _ => Vec::new(),
    };
    if !include.iter().any(|v| v == "reasoning.encrypted_content") {
        include.push(json!("reasoning.encrypted_content"));
    }
    out.insert("include".into(), Value::Array(include));
    out.insert("store".into(), json!(false));
    out.insert("stream".into(), json!(true));
    out.insert("prompt_cache_key".into(), json!(cache_key));
    b.shift_remove("store");
    b.shift_remove("stream");
    b.shift_remove("model");
    b.shift_remove("prompt_cache_key");
    let tier = b.shift_remove("service_tier");
    if fast || tier.as_ref().and_then(Value::as_str) == Some("priority") {
        out.insert("service_tier".into(), json!("priority"));
    }
    if let Some(Value::Object(mut text)) = b.shift_remove("text") {
        if let Some(Value::String(f)) = text.get("format").cloned() {
            text.insert("format".into(), json!({"type": f}));
        }
        out.insert("text".into(), Value::Object(text));
    }
    // Anything else the client sent (and the host's internal `_` keys are not for upstream).
    for (k, v) in b {
        if !k.starts_with('_') {
            out.entry(k).or_insert(v);
        }
    }
    Ok(Prepared {
        body: Value::Object(out),
        names,
        cache_key,
    })
}

/// The headers of `POST …/responses` (`buildHeaders`); `host` comes from the URL.
pub fn headers(
    access_token: &str,
    account_id: Option<&str>,
    cache_key: &str,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("authorization", format!("Bearer {access_token}")),
        ("version", CLIENT_VERSION.to_string()),
        ("originator", ORIGINATOR.to_string()),
        ("user-agent", USER_AGENT.to_string()),
        ("x-codex-beta-features", "powershell_utf8".to_string()),
        ("x-oai-web-search-eligible", "true".to_string()),
        ("content-type", "application/json".to_string()),
        ("accept", "text/event-stream".to_string()),
        ("conversation_id", cache_key.to_string()),
        ("session_id", cache_key.to_string()),
    ];
    if let Some(a) = account_id {
        h.insert(1, ("chatgpt-account-id", a.to_string()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_fast_and_fallback() {
        assert_eq!(map_model("gpt-5.4"), ("gpt-5.4".into(), false, false));
        assert_eq!(map_model("gpt-5.4-fast"), ("gpt-5.4".into(), true, false));
        assert_eq!(
            map_model("claude-sonnet-4-5"),
            ("gpt-5.2".into(), false, false)
        );
        assert_eq!(map_model("gpt-image-2"), ("gpt-5.4".into(), false, true));
        assert_eq!(model_ids().len(), 14);
    }

    #[test]
    fn forcing_and_removals() {
        let keys = CacheKeys::default();
        let body = json!({
            "model": "gpt-5.4-fast", "input": "hi", "store": true, "stream": false,
            "temperature": 0.2, "top_p": 1, "max_output_tokens": 10, "user": "u",
            "metadata": {"session_id": "s1"}, "service_tier": "flex",
            "reasoning": {"effort": "minimal"}, "_internal": 1,
            "text": {"format": "json_object"},
        });
        let p = prepare(body, "gpt-5.4-fast", &keys).unwrap();
        let b = &p.body;
        assert_eq!(b["model"], "gpt-5.4");
        assert_eq!(b["store"], false);
        assert_eq!(b["stream"], true);
        assert_eq!(b["service_tier"], "priority");
        assert_eq!(
            b["reasoning"],
            json!({"effort": "xhigh", "summary": "auto"})
        );
        assert_eq!(b["instructions"], DEFAULT_INSTRUCTIONS);
        assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
        assert_eq!(b["parallel_tool_calls"], true);
        assert_eq!(b["tool_choice"], "auto");
        assert_eq!(b["text"], json!({"format": {"type": "json_object"}}));
        assert_eq!(
            b["tools"],
            json!([{"type": "web_search"}, {"type": "image_generation", "output_format": "png"}])
        );
        assert_eq!(
            b["input"],
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}])
        );
        for k in [
            "temperature",
            "top_p",
            "max_output_tokens",
            "user",
            "metadata",
            "_internal",
        ] {
            assert!(b.get(k).is_none(), "{k} removed");
        }
        // The same session keeps its cache key.
        let again = prepare(
            json!({"input": "x", "metadata": {"session_id": "s1"}}),
            "gpt-5.4",
            &keys,
        )
        .unwrap();
        assert_eq!(again.cache_key, p.cache_key);
        let other = prepare(
            json!({"input": "x", "metadata": {"session_id": "s2"}}),
            "gpt-5.4",
            &keys,
        )
        .unwrap();
        assert_ne!(other.cache_key, p.cache_key);
        let p = prepare(
            json!({"input": "x", "reasoning": {"effort": "minimal"}}),
            "gpt-5.3-codex-spark",
            &keys,
        )
        .unwrap();
        assert_eq!(p.body["reasoning"]["effort"], "none");
        assert_eq!(
            p.body["tools"],
            json!([{"type": "web_search"}]),
            "spark models get no image tool"
        );
        assert!(p.body.get("service_tier").is_none());
    }

    #[test]
    fn image_model_gets_exactly_the_image_tool() {
        let p = prepare(
            json!({"input": "draw", "instructions": "", "size": "1024x1024", "tools": [{"type": "function", "name": "f"}]}),
            "gpt-image-2",
            &CacheKeys::default(),
        )
        .unwrap();
        assert_eq!(p.body["model"], "gpt-5.4");
        assert_eq!(
            p.body["tools"],
            json!([{"type": "image_generation", "size": "1024x1024"}])
        );
        assert_eq!(p.body["instructions"], DEFAULT_INSTRUCTIONS);
    }

    #[test]
    fn input_items_are_normalised() {
        let body = json!({"instructions": "sys", "input": [
            {"role": "system", "content": "be nice"},
            {"type": "message", "role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "input_text", "text": "b"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": {"ok": true}},
            {"type": "item_reference", "id": "x"},
        ]});
        let p = prepare(body, "gpt-5.4", &CacheKeys::default()).unwrap();
        assert_eq!(
            p.body["input"],
            json!([
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be nice"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b", "annotations": []}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "{\"ok\":true}"},
            ])
        );
        assert_eq!(p.body["instructions"], "sys");
    }

    #[test]
    fn long_tool_names_are_shortened_and_restored() {
        let long_mcp = format!("mcp__server_{}__read_file", "x".repeat(60));
        let long_a = format!("{}a", "t".repeat(70));
        let long_b = format!("{}b", "t".repeat(70));
        let body = json!({"input": [
            {"type": "function_call", "call_id": "c", "name": long_a, "arguments": "{}"},
        ], "tools": [
            {"type": "function", "function": {"name": long_mcp, "parameters": {"type": "object"}}},
            {"type": "function", "name": long_a},
            {"type": "function", "name": long_b},
            {"type": "web_search_preview"},
        ], "tool_choice": {"type": "function", "function": {"name": long_b}}});
        let p = prepare(body, "gpt-5.4", &CacheKeys::default()).unwrap();
        let tools = p.body["tools"].as_array().unwrap();
        assert_eq!(tools[0]["name"], "mcp__read_file");
        let a = tools[1]["name"].as_str().unwrap();
        let b = tools[2]["name"].as_str().unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(b.len(), 64);
        assert!(b.ends_with("_1"), "{b}");
        assert_eq!(tools[3], json!({"type": "web_search"}));
        assert_eq!(p.body["input"][0]["name"], a);
        assert_eq!(
            p.body["tool_choice"],
            json!({"type": "function", "name": b})
        );
        assert_eq!(p.names.restore(a), long_a);
        assert_eq!(p.names.restore(b), long_b);
        assert_eq!(p.names.restore("mcp__read_file"), long_mcp);
        assert_eq!(p.names.restore("other"), "other");
    }
}
