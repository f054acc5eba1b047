//! The Qwen chat-completions request (qwen.md §3): the model list and mapping, the body
//! pre-processing (one leading `system` message starting with the ephemeral
//! `You are Qwen Code.` part, the `ext` placeholder tool, `stream_options.include_usage` when
//! streaming) and the Qwen Code client headers.

use serde_json::{Map, Value, json};

/// The models this provider serves, sorted; the first is the fallback for unknown models.
pub const MODELS: [&str; 4] = [
    "coder-model",
    "qwen3-coder-flash",
    "qwen3-coder-plus",
    "vision-model",
];
pub const FALLBACK_MODEL: &str = MODELS[0];
pub const CHECK_MODEL: &str = "qwen3-coder-flash";
pub const SYSTEM_PREAMBLE: &str = "You are Qwen Code.";
pub const EXT_TOOL: &str = "ext";
const CLIENT_VERSION: &str = "0.14.2";

/// The model sent upstream: the routed one if this provider serves it, else `coder-model`.
pub fn map_model(model: &str) -> &str {
    if MODELS.contains(&model) {
        model
    } else {
        FALLBACK_MODEL
    }
}

/// The local model list (`listModels` is local: id, and the id's words capitalised).
pub fn model_list() -> Value {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| {
            let name = id
                .split('-')
                .map(|w| {
                    let mut c = w.chars();
                    match c.next() {
                        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            json!({"id": id, "object": "model", "owned_by": "qwen", "name": name})
        })
        .collect();
    json!({"object": "list", "data": data})
}

fn preamble() -> Value {
    json!({"type": "text", "text": SYSTEM_PREAMBLE, "cache_control": {"type": "ephemeral"}})
}

fn is_preamble(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str) == Some("text")
        && part.get("text").and_then(Value::as_str) == Some(SYSTEM_PREAMBLE)
}

/// The client's system content as text parts.
fn system_parts(content: Option<&Value>, out: &mut Vec<Value>) {
    match content {
        Some(Value::String(s)) if !s.is_empty() => out.push(json!({"type": "text", "text": s})),
        Some(Value::Array(parts)) => {
            for p in parts {
                match p {
                    Value::String(s) if !s.is_empty() => {
                        out.push(json!({"type": "text", "text": s}))
                    }
                    Value::Object(_) if is_preamble(p) => {}
                    Value::Object(o) => {
                        if let Some(t) = o.get("text").and_then(Value::as_str) {
                            let mut part = o.clone();
                            part.insert("type".into(), json!("text"));
                            part.insert("text".into(), json!(t));
                            out.push(Value::Object(part));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The body sent upstream, from the client's OpenAI chat-completions `body`; `Err` is a
/// client error (the body is not a JSON object with `messages`).
pub fn prepare(body: &str, model: &str, stream: bool) -> Result<Value, String> {
    let mut obj: Map<String, Value> = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("the request body must be a JSON object".into()),
        Err(e) => return Err(format!("the request body is not JSON: {e}")),
    };
    let Some(Value::Array(messages)) = obj.remove("messages") else {
        return Err("the request has no messages array".into());
    };
    let routed = if model.is_empty() {
        obj.get("model").and_then(Value::as_str).unwrap_or("")
    } else {
        model
    };
    let upstream_model = map_model(routed).to_string();
    obj.insert("model".into(), json!(upstream_model));

    let mut parts = vec![preamble()];
    let mut rest = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role == "system" || role == "developer" {
            system_parts(m.get("content"), &mut parts);
        } else {
            rest.push(m);
        }
    }
    let mut all = Vec::with_capacity(rest.len() + 1);
    all.push(json!({"role": "system", "content": parts}));
    all.extend(rest);
    obj.insert("messages".into(), Value::Array(all));

    let ext = json!({"type": "function", "function": {"name": EXT_TOOL, "description": "Internal extension tool"}});
    let mut tools = match obj.remove("tools") {
        Some(Value::Array(t)) => t,
        _ => Vec::new(),
    };
    let has_ext = tools
        .first()
        .and_then(|t| t.pointer("/function/name"))
        .and_then(Value::as_str)
        == Some(EXT_TOOL);
    if !has_ext {
        tools.insert(0, ext);
    }
    obj.insert("tools".into(), Value::Array(tools));

    if stream {
        obj.insert("stream".into(), json!(true));
        let mut so = match obj.remove("stream_options") {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        so.insert("include_usage".into(), json!(true));
        obj.insert("stream_options".into(), Value::Object(so));
    } else {
        obj.remove("stream");
        obj.remove("stream_options");
    }
    Ok(Value::Object(obj))
}

/// Node's `process.platform` / `process.arch` names for this machine.
fn node_platform() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    };
    (os, arch)
}

/// `QwenCode/<version> (<platform>; <arch>)`.
pub fn user_agent() -> String {
    let (os, arch) = node_platform();
    format!("QwenCode/{CLIENT_VERSION} ({os}; {arch})")
}

/// The headers of an inference call (besides `Authorization`).
pub fn headers(stream: bool) -> Vec<(&'static str, String)> {
    let ua = user_agent();
    let (_, arch) = node_platform();
    let stainless_arch = if arch == "x64" { "x86_64" } else { arch };
    vec![
        ("content-type", "application/json".into()),
        (
            "accept",
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            }
            .into(),
        ),
        ("user-agent", ua.clone()),
        ("x-dashscope-useragent", ua),
        ("x-dashscope-authtype", "qwen-oauth".into()),
        ("x-dashscope-cachecontrol", "enable".into()),
        ("x-stainless-lang", "js".into()),
        ("x-stainless-runtime", "node".into()),
        ("x-stainless-runtime-version", "v22.17.0".into()),
        ("x-stainless-package-version", "5.11.0".into()),
        ("x-stainless-arch", stainless_arch.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_are_normalised_and_ext_is_prepended() {
        let body = json!({
            "model": "qwen3-coder-plus",
            "stream": true,
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "list files"},
                {"role": "developer", "content": [{"type": "text", "text": "No emojis."}, {"type": "text", "text": SYSTEM_PREAMBLE}]},
            ],
            "tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}}],
        });
        let out = prepare(&body.to_string(), "qwen3-coder-plus", true).expect("prepare");
        assert_eq!(out["model"], "qwen3-coder-plus");
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        let msgs = out["messages"].as_array().expect("messages");
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            json!({"role": "system", "content": [
                {"type": "text", "text": SYSTEM_PREAMBLE, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be terse."},
                {"type": "text", "text": "No emojis."},
            ]})
        );
        assert_eq!(msgs[1]["role"], "user");
        assert_eq!(out["tools"][0]["function"]["name"], "ext");
        assert!(out["tools"][0]["function"].get("parameters").is_none());
        assert_eq!(out["tools"][1]["function"]["name"], "ls");
    }

    #[test]
    fn unknown_models_and_missing_system_and_tools() {
        let body = json!({"model": "gpt-4o", "stream": false, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2});
        let out = prepare(&body.to_string(), "gpt-4o", false).expect("prepare");
        assert_eq!(out["model"], "coder-model");
        assert_eq!(out["messages"][0]["role"], "system");
        assert_eq!(out["messages"][0]["content"][0]["text"], SYSTEM_PREAMBLE);
        assert_eq!(out["tools"].as_array().map(Vec::len), Some(1));
        assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
        assert_eq!(out["temperature"], 0.2);
        assert!(prepare("[]", "m", false).is_err());
        assert!(prepare("{}", "m", false).is_err());
        assert!(prepare("{", "m", false).is_err());
    }

    #[test]
    fn headers_name_the_qwen_code_client() {
        let h = headers(true);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert!(get("user-agent").is_some_and(|u| u.starts_with("QwenCode/0.14.2 (")));
        assert_eq!(get("accept"), Some("text/event-stream"));
        assert_eq!(get("x-dashscope-authtype"), Some("qwen-oauth"));
        assert_eq!(model_list()["data"][0]["name"], "Coder Model");
    }
}
