//! Claude Messages request → Kiro `conversationState` (kiro.md §3.3), plus the model table,
//! the tool-name shortening (reversed on answers) and the local input-token estimate.
//!
//! The conversion:
//! 1. a trailing assistant prefill whose first block is the text `{` is dropped, then
//!    neighbouring messages of the same role are merged;
//! 2. the system prompt (the thinking prefix when thinking was requested, then the client's
//!    `system`) goes in front of the first user text, or into `currentMessage` when there is
//!    one user message, or into a leading user turn when the conversation starts with the
//!    assistant;
//! 3. every message but the last goes into `history` (user: text, images, `toolResults`;
//!    assistant: text with thinking as `<thinking>…</thinking>\n\n`, `toolUses`), and history
//!    always alternates, starts with a user turn and ends with an assistant turn;
//! 4. the last message becomes `currentMessage` (`"Continue"` after a trailing assistant);
//! 5. tools are always sent (web-search tools and tools without a description dropped, a
//!    `no_tool_available` placeholder when none is left, descriptions cut to 9216 chars,
//!    names over 64 chars shortened);
//! 6. images are kept only in the last 5 messages; older ones become a note.
//!
//! Where this differs from the original, on purpose: no built-in "identity override" preamble
//! is injected into the system prompt; `tool_result.is_error` is sent as status `error` (the
//! original always sent `success`); a tool result whose `toolUseId` matches no earlier tool
//! use is sent as text instead of as a `toolResults` entry the service would reject with 400;
//! URL image sources (Kiro takes only inline bytes) become a note.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Images are kept in this many trailing messages.
const IMAGE_WINDOW: usize = 5;
const MAX_DESCRIPTION: usize = 9216;
const MAX_TOOL_NAME: usize = 64;
pub const PLACEHOLDER_TOOL: &str = "no_tool_available";
const ORIGIN: &str = "AI_EDITOR";

/// The public model names this provider lists.
pub const MODELS: [&str; 10] = [
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
    "claude-opus-4-6",
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-6",
];

/// The `modelId` Kiro expects for a public model name; unknown names pass unchanged.
pub fn model_id(model: &str) -> String {
    match model {
        "claude-sonnet-4-5" | "claude-sonnet-4-5-20250929" => "claude-sonnet-4.5",
        "claude-sonnet-4-6" => "claude-sonnet-4.6",
        "claude-haiku-4-5" => "claude-haiku-4.5",
        "claude-opus-4-5" | "claude-opus-4-5-20251101" => "claude-opus-4.5",
        "claude-opus-4-6" => "claude-opus-4.6",
        "claude-opus-4-7" => "claude-opus-4.7",
        "claude-opus-4-8" => "claude-opus-4.8",
        other => other,
    }
    .to_string()
}

/// The context window used to turn `contextUsagePercentage` into input tokens.
pub fn context_window(model: &str) -> u64 {
    let m = model.to_ascii_lowercase().replace('.', "-");
    if ["4-5", "4-6", "4-7", "4-8"]
        .iter()
        .any(|v| m.starts_with(&format!("claude-opus-{v}")))
    {
        1_000_000
    } else {
        200_000
    }
}

/// Estimated tokens of a text: a quarter token per ASCII char, one per other char.
pub fn estimate_text(s: &str) -> u64 {
    let (mut ascii, mut other) = (0u64, 0u64);
    for c in s.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    ascii.div_ceil(4) + other
}

/// A tool name Kiro accepts (≤ 64 chars): `<first 51 chars>_<12 hex of sha256(name)>`.
pub fn short_tool_name(name: &str) -> String {
    if name.chars().count() <= MAX_TOOL_NAME {
        return name.to_string();
    }
    let head: String = name.chars().take(51).collect();
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{head}_{}", &hash[..12])
}

/// The converted request.
#[derive(Debug)]
pub struct Built {
    pub body: Value,
    /// Shortened tool name → the client's name.
    pub tool_names: HashMap<String, String>,
    pub thinking: bool,
    pub input_estimate: u64,
}

#[derive(Clone, Debug)]
struct Msg {
    role: Role,
    blocks: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

fn blocks_of(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a.iter().filter(|b| b.is_object()).cloned().collect(),
        Some(Value::Object(_)) => content.into_iter().cloned().collect(),
        _ => Vec::new(),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.clone()),
                _ => b.get("text").and_then(Value::as_str).map(str::to_string),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn join_texts(parts: Vec<String>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn thinking_prefix(body: &Value) -> Option<String> {
    let t = body.get("thinking")?;
    match t.get("type").and_then(Value::as_str)? {
        "enabled" => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(20_000)
                .clamp(1024, 24_576);
            Some(format!(
                "<thinking_mode>enabled</thinking_mode><max_thinking_length>{budget}</max_thinking_length>"
            ))
        }
        "adaptive" => {
            let effort = body
                .pointer("/output_config/effort")
                .and_then(Value::as_str)
                .filter(|e| matches!(*e, "low" | "medium" | "high"))
                .unwrap_or("high");
            Some(format!(
                "<thinking_mode>adaptive</thinking_mode><thinking_effort>{effort}</thinking_effort>"
            ))
        }
        _ => None,
    }
}

/// What a user turn carries.
#[derive(Default)]
struct UserTurn {
    text: String,
    images: Vec<Value>,
    results: Vec<Value>,
}

fn image_of(block: &Value) -> Result<Value, String> {
    let src = block.get("source").unwrap_or(&Value::Null);
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mime = src
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/jpeg");
            let format = mime
                .rsplit('/')
                .next()
                .unwrap_or("jpeg")
                .to_ascii_lowercase();
            let data = src.get("data").and_then(Value::as_str).unwrap_or_default();
            Ok(json!({"format": format, "source": {"bytes": data}}))
        }
        Some(other) => Err(format!(
            "[image omitted: {other} image sources are not supported]"
        )),
        None => Err("[image omitted: no image source]".to_string()),
    }
}

fn user_turn(blocks: &[Value], keep_images: bool, known_tool_ids: &HashSet<String>) -> UserTurn {
    let mut texts = Vec::new();
    let mut turn = UserTurn::default();
    let mut omitted = 0usize;
    let mut seen_results = HashSet::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(
                b.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            Some("image") => {
                if !keep_images {
                    omitted += 1;
                    continue;
                }
                match image_of(b) {
                    Ok(img) => turn.images.push(img),
                    Err(note) => texts.push(note),
                }
            }
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let content = text_of(b.get("content").unwrap_or(&Value::Null));
                if id.is_empty() || !known_tool_ids.contains(&id) {
                    texts.push(format!(
                        "[tool result{}]\n{content}",
                        if id.is_empty() {
                            String::new()
                        } else {
                            format!(" for {id}")
                        }
                    ));
                    continue;
                }
                if !seen_results.insert(id.clone()) {
                    continue;
                }
                let is_error = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let text = if content.is_empty() {
                    "(no output)".to_string()
                } else {
                    content
                };
                turn.results.push(json!({
                    "content": [{"text": text}],
                    "status": if is_error { "error" } else { "success" },
                    "toolUseId": id,
                }));
            }
            _ => {}
        }
    }
    if omitted > 0 {
        texts.push(format!(
            "[{omitted} image(s) from earlier in the conversation omitted]"
        ));
    }
    turn.text = join_texts(texts);
    turn
}

fn strip_empty_keys(input: &Value) -> Value {
    match input {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Value::Null => json!({}),
        other => json!({ "value": other }),
    }
}

fn assistant_turn(blocks: &[Value], known_tool_ids: &mut HashSet<String>) -> Value {
    let mut thinking = String::new();
    let mut texts = Vec::new();
    let mut uses = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(
                b.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            Some("thinking") => {
                let t = b
                    .get("thinking")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !t.is_empty() {
                    thinking.push_str(&format!("<thinking>{t}</thinking>\n\n"));
                }
            }
            Some("tool_use") => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
                if id.is_empty() || name.is_empty() {
                    continue;
                }
                known_tool_ids.insert(id.clone());
                uses.push(json!({
                    "input": strip_empty_keys(b.get("input").unwrap_or(&Value::Null)),
                    "name": short_tool_name(name),
                    "toolUseId": id,
                }));
            }
            _ => {}
        }
    }
    let mut m = Map::new();
    m.insert(
        "content".into(),
        Value::String(format!("{thinking}{}", join_texts(texts))),
    );
    if !uses.is_empty() {
        m.insert("toolUses".into(), Value::Array(uses));
    }
    json!({ "assistantResponseMessage": m })
}

fn user_entry(content: String, model_id: &str, turn: UserTurn, tools: Option<Vec<Value>>) -> Value {
    let content = if !content.trim().is_empty() {
        content
    } else if !turn.results.is_empty() {
        "Tool results provided.".to_string()
    } else {
        "Continue".to_string()
    };
    let mut m = Map::new();
    m.insert("content".into(), Value::String(content));
    m.insert("modelId".into(), Value::String(model_id.to_string()));
    m.insert("origin".into(), Value::String(ORIGIN.into()));
    if !turn.images.is_empty() {
        m.insert("images".into(), Value::Array(turn.images));
    }
    let mut ctx = Map::new();
    if !turn.results.is_empty() {
        ctx.insert("toolResults".into(), Value::Array(turn.results));
    }
    if let Some(tools) = tools {
        ctx.insert("tools".into(), Value::Array(tools));
    }
    if !ctx.is_empty() {
        m.insert("userInputMessageContext".into(), Value::Object(ctx));
    }
    json!({ "userInputMessage": m })
}

fn tools_of(body: &Value, names: &mut HashMap<String, String>) -> Vec<Value> {
    let mut out = Vec::new();
    for t in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = t
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if lower == "web_search" || lower == "websearch" {
            continue;
        }
        let desc = t
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if desc.trim().is_empty() {
            continue;
        }
        let desc = if desc.chars().count() > MAX_DESCRIPTION {
            format!(
                "{}...",
                desc.chars().take(MAX_DESCRIPTION).collect::<String>()
            )
        } else {
            desc.to_string()
        };
        let short = short_tool_name(name);
        if short != name {
            names.insert(short.clone(), name.to_string());
        }
        let schema = t
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        out.push(json!({"toolSpecification": {"name": short, "description": desc, "inputSchema": {"json": schema}}}));
    }
    if out.is_empty() {
        out.push(json!({"toolSpecification": {
            "name": PLACEHOLDER_TOOL,
            "description": "Placeholder: no tools are available in this conversation. Never call it.",
            "inputSchema": {"json": {"type": "object", "properties": {}}},
        }}));
    }
    out
}

fn estimate_input(system: &str, msgs: &[Msg], tools: &Value) -> u64 {
    let mut n = estimate_text(system);
    for m in msgs {
        n += 3;
        for b in &m.blocks {
            n += match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    estimate_text(b.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                Some("thinking") => estimate_text(
                    b.get("thinking")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
                Some("tool_use") => {
                    estimate_text(b.get("name").and_then(Value::as_str).unwrap_or_default())
                        + estimate_text(&b.get("input").map(Value::to_string).unwrap_or_default())
                }
                Some("tool_result") => {
                    estimate_text(&text_of(b.get("content").unwrap_or(&Value::Null)))
                }
                Some("image") => 1600,
                _ => 0,
            };
        }
    }
    if tools.as_array().is_some_and(|a| !a.is_empty()) {
        n += estimate_text(&tools.to_string());
    }
    n
}

/// Converts a Claude Messages body. `Err` is a message for a 400 to the client.
pub fn build(body: &Value, model: &str, profile_arn: Option<&str>) -> Result<Built, String> {
    let raw = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the request has no messages array")?;
    let mut msgs: Vec<Msg> = Vec::new();
    for m in raw {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => return Err(format!("unsupported message role {other:?}")),
        };
        msgs.push(Msg {
            role,
            blocks: blocks_of(m.get("content")),
        });
    }
    // 1. Drop a trailing `{` prefill, then merge neighbours.
    if msgs.last().is_some_and(|m| {
        m.role == Role::Assistant
            && m.blocks.first().is_some_and(|b| {
                b.get("type").and_then(Value::as_str) == Some("text")
                    && b.get("text").and_then(Value::as_str).map(str::trim) == Some("{")
            })
    }) {
        msgs.pop();
    }
    let mut merged: Vec<Msg> = Vec::new();
    for m in msgs {
        match merged.last_mut() {
            Some(last) if last.role == m.role => last.blocks.extend(m.blocks),
            _ => merged.push(m),
        }
    }
    let msgs = merged;
    if msgs.is_empty() {
        return Err("the request has no messages".into());
    }
    let id = model_id(model);
    let prefix = thinking_prefix(body);
    let client_system = text_of(body.get("system").unwrap_or(&Value::Null));
    let system = match &prefix {
        Some(p) if client_system.is_empty() => p.clone(),
        Some(p) => format!("{p}\n{client_system}"),
        None => client_system.clone(),
    };
    let mut tool_names = HashMap::new();
    let tools = tools_of(body, &mut tool_names);
    let input_estimate = estimate_input(&system, &msgs, body.get("tools").unwrap_or(&Value::Null));

    let n = msgs.len();
    let keep_images = |i: usize| i + IMAGE_WINDOW >= n;
    let with_system = |text: String| -> String {
        match (system.is_empty(), text.is_empty()) {
            (true, _) => text,
            (false, true) => system.clone(),
            (false, false) => format!("{system}\n\n{text}"),
        }
    };
    let mut known = HashSet::new();
    let mut history: Vec<Value> = Vec::new();
    let single_user = n == 1 && msgs[0].role == Role::User;
    if msgs[0].role == Role::Assistant {
        let opener = if system.is_empty() {
            "Continue".to_string()
        } else {
            system.clone()
        };
        history.push(user_entry(opener, &id, UserTurn::default(), None));
    }
    for (i, m) in msgs[..n - 1].iter().enumerate() {
        match m.role {
            Role::User => {
                let mut turn = user_turn(&m.blocks, keep_images(i), &known);
                let text = std::mem::take(&mut turn.text);
                let text = if i == 0 { with_system(text) } else { text };
                history.push(user_entry(text, &id, turn, None));
            }
            Role::Assistant => history.push(assistant_turn(&m.blocks, &mut known)),
        }
    }
    let last = &msgs[n - 1];
    let current = match last.role {
        Role::Assistant => {
            history.push(assistant_turn(&last.blocks, &mut known));
            user_entry("Continue".into(), &id, UserTurn::default(), Some(tools))
        }
        Role::User => {
            if history
                .last()
                .is_some_and(|h| h.get("userInputMessage").is_some())
            {
                history.push(json!({"assistantResponseMessage": {"content": "Continue"}}));
            }
            let mut turn = user_turn(&last.blocks, true, &known);
            let text = std::mem::take(&mut turn.text);
            let text = if single_user { with_system(text) } else { text };
            user_entry(text, &id, turn, Some(tools))
        }
    };
    let mut state = Map::new();
    state.insert("agentTaskType".into(), json!("vibe"));
    state.insert("chatTriggerType".into(), json!("MANUAL"));
    state.insert(
        "conversationId".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    if !history.is_empty() {
        state.insert("history".into(), Value::Array(history));
    }
    state.insert("currentMessage".into(), current);
    let mut out = Map::new();
    out.insert("conversationState".into(), Value::Object(state));
    if let Some(arn) = profile_arn.filter(|a| !a.is_empty()) {
        out.insert("profileArn".into(), json!(arn));
    }
    let mut body = Value::Object(out);
    strip_nulls(&mut body);
    Ok(Built {
        body,
        tool_names,
        thinking: prefix.is_some(),
        input_estimate,
    })
}

/// Removes JSON `null`s (object members and array elements) everywhere: the service rejects
/// them, and clients' tool schemas and arguments may carry them.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => {
            a.retain(|x| !x.is_null());
            a.iter_mut().for_each(strip_nulls);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(b: &Built) -> &Value {
        &b.body["conversationState"]["currentMessage"]["userInputMessage"]
    }

    #[test]
    fn single_user_message_gets_the_system_prompt_and_placeholder_tool() {
        let b = build(
            &json!({"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}),
            "claude-sonnet-4-5",
            Some("arn:p"),
        )
        .expect("builds");
        let s = &b.body["conversationState"];
        assert_eq!(s["agentTaskType"], "vibe");
        assert_eq!(s["chatTriggerType"], "MANUAL");
        assert!(s["conversationId"].as_str().is_some_and(|c| c.len() == 36));
        assert!(s.get("history").is_none(), "empty history is left out");
        assert_eq!(cur(&b)["content"], "Be brief.\n\nHi");
        assert_eq!(cur(&b)["modelId"], "claude-sonnet-4.5");
        assert_eq!(cur(&b)["origin"], "AI_EDITOR");
        assert_eq!(
            cur(&b)["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"],
            PLACEHOLDER_TOOL
        );
        assert_eq!(b.body["profileArn"], "arn:p");
        assert!(
            !b.body.to_string().contains("null"),
            "no JSON null anywhere"
        );
    }

    #[test]
    fn tool_round_trip_history() {
        let body = json!({
            "system": [{"type": "text", "text": "Sys"}],
            "tools": [
                {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
                {"name": "WebSearch", "description": "search"},
                {"name": "nodesc", "description": ""},
            ],
            "messages": [
                {"role": "user", "content": "read a.txt"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "a.txt", "": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "file body"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "dup"},
                    {"type": "tool_result", "tool_use_id": "toolu_zz", "content": "orphan", "is_error": true},
                ]},
            ],
        });
        let b = build(&body, "claude-opus-4-6", None).expect("builds");
        let h = b.body["conversationState"]["history"]
            .as_array()
            .expect("history");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["userInputMessage"]["content"], "Sys\n\nread a.txt");
        let a = &h[1]["assistantResponseMessage"];
        assert_eq!(a["content"], "<thinking>hmm</thinking>\n\nLet me look.");
        assert_eq!(
            a["toolUses"],
            json!([{"input": {"path": "a.txt"}, "name": "read_file", "toolUseId": "toolu_01"}])
        );
        let ctx = &cur(&b)["userInputMessageContext"];
        assert_eq!(
            ctx["toolResults"],
            json!([{"content": [{"text": "file body"}], "status": "success", "toolUseId": "toolu_01"}])
        );
        let tools = ctx["tools"].as_array().expect("tools");
        assert_eq!(
            tools.len(),
            1,
            "web search and description-less tools dropped: {tools:?}"
        );
        assert_eq!(
            tools[0]["toolSpecification"]["inputSchema"]["json"]["properties"]["path"]["type"],
            "string"
        );
        assert!(
            cur(&b)["content"]
                .as_str()
                .expect("content")
                .contains("orphan"),
            "an orphan result is sent as text"
        );
        assert_eq!(cur(&b)["modelId"], "claude-opus-4.6");
        assert!(b.body.get("profileArn").is_none());
    }

    #[test]
    fn nulls_are_removed_everywhere() {
        let body = json!({
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {"a": {"type": "string", "default": null}}, "required": [null, "a"]}}],
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": null, "b": [1, null]}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
        });
        let b = build(&body, "m", None).expect("builds");
        assert!(!b.body.to_string().contains("null"), "{}", b.body);
        assert_eq!(
            b.body["conversationState"]["history"][1]["assistantResponseMessage"]["toolUses"][0]["input"],
            json!({"b": [1]})
        );
    }

    #[test]
    fn empty_current_content_and_trailing_assistant() {
        let body = json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ""}]},
        ]});
        let b = build(&body, "m", None).expect("builds");
        assert_eq!(cur(&b)["content"], "Tool results provided.");
        assert_eq!(
            cur(&b)["userInputMessageContext"]["toolResults"][0]["content"][0]["text"],
            "(no output)"
        );

        let body = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "partial"}]});
        let b = build(&body, "m", None).expect("builds");
        let h = b.body["conversationState"]["history"]
            .as_array()
            .expect("history");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1]["assistantResponseMessage"]["content"], "partial");
        assert_eq!(cur(&b)["content"], "Continue");

        // A `{` prefill is dropped; same-role neighbours merge.
        let body = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "{"}]});
        let b = build(&body, "m", None).expect("builds");
        assert!(b.body["conversationState"].get("history").is_none());
        assert_eq!(cur(&b)["content"], "a\nb");

        // Starting with the assistant: a user opener keeps the history well-formed.
        let body = json!({"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]});
        let b = build(&body, "m", None).expect("builds");
        let h = b.body["conversationState"]["history"]
            .as_array()
            .expect("history");
        assert!(
            h[0].get("userInputMessage").is_some()
                && h[1].get("assistantResponseMessage").is_some()
        );
    }

    #[test]
    fn images_only_in_the_last_five_messages() {
        let img = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
        let mut messages = vec![
            json!({"role": "user", "content": [img.clone(), {"type": "text", "text": "old"}]}),
        ];
        for i in 0..3 {
            messages.push(json!({"role": "assistant", "content": format!("a{i}")}));
            messages.push(json!({"role": "user", "content": format!("u{i}")}));
        }
        messages.push(json!({"role": "assistant", "content": "a"}));
        messages.push(json!({"role": "user", "content": [img, {"type": "text", "text": "new"}]}));
        let b = build(&json!({"messages": messages}), "m", None).expect("builds");
        let h = &b.body["conversationState"]["history"][0]["userInputMessage"];
        assert!(h.get("images").is_none());
        assert!(
            h["content"].as_str().expect("text").contains("1 image(s)"),
            "{h}"
        );
        assert_eq!(
            cur(&b)["images"],
            json!([{"format": "png", "source": {"bytes": "iVBORw0KGgo="}}])
        );
    }

    #[test]
    fn thinking_prefix_and_long_names() {
        let body = json!({"thinking": {"type": "enabled", "budget_tokens": 99999}, "messages": [{"role": "user", "content": "x"}]});
        let b = build(&body, "m", None).expect("builds");
        assert!(b.thinking);
        assert_eq!(
            cur(&b)["content"],
            "<thinking_mode>enabled</thinking_mode><max_thinking_length>24576</max_thinking_length>\n\nx"
        );
        let body = json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}, "system": "S", "messages": [{"role": "user", "content": "x"}]});
        let b = build(&body, "m", None).expect("builds");
        assert_eq!(
            cur(&b)["content"],
            "<thinking_mode>adaptive</thinking_mode><thinking_effort>low</thinking_effort>\nS\n\nx"
        );

        let long = "t".repeat(70);
        let short = short_tool_name(&long);
        assert_eq!(short.len(), 64);
        assert!(short.starts_with(&"t".repeat(51)));
        let body = json!({"tools": [{"name": long, "description": "d"}], "messages": [{"role": "user", "content": "x"}]});
        let b = build(&body, "m", None).expect("builds");
        assert_eq!(b.tool_names.get(&short), Some(&long));
        let desc = "d".repeat(10_000);
        let body = json!({"tools": [{"name": "n", "description": desc}], "messages": [{"role": "user", "content": "x"}]});
        let b = build(&body, "m", None).expect("builds");
        let d = cur(&b)["userInputMessageContext"]["tools"][0]["toolSpecification"]["description"]
            .as_str()
            .expect("desc")
            .to_string();
        assert_eq!(d.len(), 9216 + 3);
    }

    #[test]
    fn models_and_windows() {
        assert_eq!(model_id("claude-haiku-4-5"), "claude-haiku-4.5");
        assert_eq!(
            model_id("claude-haiku-4-5-20251001"),
            "claude-haiku-4-5-20251001"
        );
        assert_eq!(
            model_id("CLAUDE_SONNET_4_5_20250929_V1_0"),
            "CLAUDE_SONNET_4_5_20250929_V1_0"
        );
        assert_eq!(context_window("claude-opus-4-7"), 1_000_000);
        assert_eq!(context_window("claude-sonnet-4-5"), 200_000);
        assert!(build(&json!({"messages": []}), "m", None).is_err());
        assert!(build(&json!({}), "m", None).is_err());
    }
}
