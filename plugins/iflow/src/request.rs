//! The iFlow chat-completions request (iflow.md §3): the static model list and mapping, the
//! body pre-processing (routed model, `reasoning_effort` → GLM `chat_template_kwargs`,
//! `tools: []` → a `noop` placeholder, `stream: true` when streaming) and the model listing.

use serde_json::{Map, Value, json};

/// The models this provider serves, sorted; the first is the fallback for unknown models.
pub const MODELS: [&str; 20] = [
    "deepseek-r1",
    "deepseek-v3",
    "deepseek-v3.2",
    "glm-4.6",
    "glm-4.7",
    "glm-5",
    "iflow-rome-30ba3b",
    "kimi-k2",
    "kimi-k2-0905",
    "kimi-k2.5",
    "minimax-m2.1",
    "minimax-m2.5",
    "qwen3-235b",
    "qwen3-235b-a22b-instruct",
    "qwen3-235b-a22b-thinking-2507",
    "qwen3-32b",
    "qwen3-coder-plus",
    "qwen3-max",
    "qwen3-max-preview",
    "qwen3-vl-plus",
];
pub const FALLBACK_MODEL: &str = MODELS[0];
pub const CHECK_MODEL: &str = "qwen3-coder-plus";
/// Models appended to the upstream's list when it lacks them.
pub const EXTRA_LISTED: [&str; 5] = [
    "glm-4.7",
    "glm-5",
    "kimi-k2.5",
    "minimax-m2.1",
    "minimax-m2.5",
];
pub const NOOP_TOOL: &str = "noop";

pub fn map_model(model: &str) -> &str {
    if MODELS.contains(&model) {
        model
    } else {
        FALLBACK_MODEL
    }
}

/// The body sent upstream; `Err` is a client error.
pub fn prepare(body: &str, model: &str, stream: bool) -> Result<Value, String> {
    let mut obj: Map<String, Value> = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("the request body must be a JSON object".into()),
        Err(e) => return Err(format!("the request body is not JSON: {e}")),
    };
    if !obj.get("messages").is_some_and(Value::is_array) {
        return Err("the request has no messages array".into());
    }
    let routed = if model.is_empty() {
        obj.get("model").and_then(Value::as_str).unwrap_or("")
    } else {
        model
    };
    let upstream_model = map_model(routed).to_string();
    if let Some(effort) = obj.remove("reasoning_effort") {
        obj.remove("thinking");
        let on = match &effort {
            Value::String(s) => !(s.trim().is_empty() || s.trim() == "none"),
            Value::Null => false,
            _ => true,
        };
        if upstream_model.starts_with("glm-4") {
            let mut kw = match obj.remove("chat_template_kwargs") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            kw.insert("enable_thinking".into(), json!(on));
            if on {
                kw.insert("clear_thinking".into(), json!(false));
            }
            obj.insert("chat_template_kwargs".into(), Value::Object(kw));
        }
    }
    obj.insert("model".into(), json!(upstream_model));
    if obj
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        obj.insert(
            "tools".into(),
            json!([{"type": "function", "function": {"name": NOOP_TOOL, "description": "Placeholder tool (never called)", "parameters": {"type": "object"}}}]),
        );
    }
    if stream {
        obj.insert("stream".into(), json!(true));
    } else {
        obj.remove("stream");
        obj.remove("stream_options");
    }
    Ok(Value::Object(obj))
}

fn listed(id: &str, created: i64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "iflow"})
}

/// The static list in the OpenAI list shape (the fallback when the upstream list fails).
pub fn static_list(now_s: i64) -> Value {
    let data: Vec<Value> = MODELS.iter().map(|m| listed(m, now_s)).collect();
    json!({"object": "list", "data": data})
}

/// The upstream's model list with the known extras appended when missing; `None` if it is
/// not an OpenAI list.
pub fn merge_listed(upstream: &str, now_s: i64) -> Option<Value> {
    let mut v: Value = serde_json::from_str(upstream).ok()?;
    let data = v.get_mut("data")?.as_array_mut()?;
    for extra in EXTRA_LISTED {
        if !data
            .iter()
            .any(|m| m.get("id").and_then(Value::as_str) == Some(extra))
        {
            data.push(listed(extra, now_s));
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glm_thinking_from_reasoning_effort() {
        let body = json!({"model": "glm-4.6", "reasoning_effort": "high", "thinking": {"type": "enabled"},
            "messages": [{"role": "user", "content": "hi"}]});
        let out = prepare(&body.to_string(), "glm-4.6", true).expect("prepare");
        assert_eq!(
            out["chat_template_kwargs"],
            json!({"enable_thinking": true, "clear_thinking": false})
        );
        assert!(out.get("reasoning_effort").is_none() && out.get("thinking").is_none());
        assert_eq!(out["stream"], true);
        assert!(out.get("stream_options").is_none());
        let body = json!({"model": "glm-4.6", "reasoning_effort": "none", "messages": []});
        let out = prepare(&body.to_string(), "glm-4.6", false).expect("prepare");
        assert_eq!(
            out["chat_template_kwargs"],
            json!({"enable_thinking": false})
        );
        let body = json!({"reasoning_effort": "low", "messages": []});
        let out = prepare(&body.to_string(), "kimi-k2", false).expect("prepare");
        assert!(out.get("chat_template_kwargs").is_none() && out.get("reasoning_effort").is_none());
    }

    #[test]
    fn model_fallback_and_tools() {
        let body = json!({"model": "gpt-4o", "tools": [], "messages": [{"role": "user", "content": "hi"}]});
        let out = prepare(&body.to_string(), "gpt-4o", false).expect("prepare");
        assert_eq!(out["model"], "deepseek-r1");
        assert_eq!(out["tools"][0]["function"]["name"], "noop");
        assert_eq!(
            out["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        let body = json!({"messages": []});
        let out = prepare(&body.to_string(), "qwen3-max", false).expect("prepare");
        assert!(out.get("tools").is_none(), "absent tools stay absent");
        assert!(prepare("{}", "m", false).is_err());
    }

    #[test]
    fn listing_appends_extras() {
        let up =
            json!({"object": "list", "data": [{"id": "glm-5", "object": "model"}]}).to_string();
        let v = merge_listed(&up, 1).expect("list");
        let ids: Vec<&str> = v["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "glm-5",
                "glm-4.7",
                "kimi-k2.5",
                "minimax-m2.1",
                "minimax-m2.5"
            ]
        );
        assert!(merge_listed("oops", 1).is_none());
        assert_eq!(static_list(1)["data"].as_array().map(Vec::len), Some(20));
    }
}
