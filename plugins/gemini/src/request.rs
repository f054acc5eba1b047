//! The request side of Code Assist: model mapping, the pre-processing of a Gemini
//! `generateContent` body, the `{model, project, request}` envelope, and the headers.
//!
//! The host hands the plugin a Gemini request (a Gemini client's body verbatim, or one
//! converted from OpenAI/Claude). Pre-processing, as the original does it: top-level `model`
//! dropped; `system_instruction` → `systemInstruction`; a missing `role` on the system
//! instruction and on each content set to `user`; thinking models asked for thinking get
//! `includeThoughts: true` unless the client set it.

use serde_json::{Map, Value, json};

use crate::settings::Kind;

/// Gemini CLI's model list; unknown ids fall back to the first (sorted) entry.
pub const CLI_MODELS: [&str; 8] = [
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-3-flash-preview",
    "gemini-3-pro-preview",
    "gemini-3.1-flash-lite-preview",
    "gemini-3.1-pro-preview",
    "gemini-3.5-flash",
];
/// Antigravity's static list (ids the upstream's `fetchAvailableModels` may add are passed
/// through unchanged); Claude models are exposed as `gemini-claude-…`.
pub const ANTIGRAVITY_MODELS: [&str; 8] = [
    "gemini-2.5-computer-use-preview-10-2025",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-3-flash",
    "gemini-3-pro-high",
    "gemini-3-pro-low",
    "gemini-claude-sonnet-4-5",
];
pub const CLI_FALLBACK_MODEL: &str = "gemini-2.5-flash";
pub const ANTIGRAVITY_FALLBACK_MODEL: &str = "gemini-3-flash";
/// The pseudo-model prefix that makes a stream continue after `MAX_TOKENS`.
pub const ANTI_PREFIX: &str = "anti-";

/// Gemini CLI version and SDK identification the original sends.
pub const CLI_VERSION: &str = "0.31.0";
pub const API_CLIENT: &str = "google-genai-sdk/1.41.0 gl-node/v22.19.0";
pub const ANTIGRAVITY_USER_AGENT: &str = "antigravity/1.104.0 darwin/arm64";

/// The model to ask upstream for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The id sent upstream.
    pub upstream: String,
    /// The client asked for `anti-<model>`: continue streams cut at `MAX_TOKENS`.
    pub anti: bool,
}

/// Maps a requested model id to the upstream's.
pub fn map_model(kind: Kind, requested: &str) -> Mapped {
    let id = requested.trim().trim_start_matches("models/");
    let (id, anti) = match id.strip_prefix(ANTI_PREFIX) {
        Some(rest) => (rest, true),
        None => (id, false),
    };
    let upstream = match kind {
        Kind::Cli if CLI_MODELS.contains(&id) => id.to_string(),
        Kind::Cli => {
            tracing::debug!(
                requested = id,
                fallback = CLI_FALLBACK_MODEL,
                "unknown Gemini CLI model; using the default"
            );
            CLI_FALLBACK_MODEL.to_string()
        }
        Kind::Antigravity => match id.strip_prefix("gemini-claude-") {
            Some(rest) => format!("claude-{rest}"),
            None if id.is_empty() => ANTIGRAVITY_FALLBACK_MODEL.to_string(),
            None => id.to_string(),
        },
    };
    Mapped { upstream, anti }
}

fn is_thinking_model(model: &str) -> bool {
    model.starts_with("gemini-3") || model.starts_with("gemini-2.5-") || model.contains("-thinking")
}

fn get_mut<'a>(o: &'a mut Map<String, Value>, camel: &str, snake: &str) -> Option<&'a mut Value> {
    if o.contains_key(camel) {
        o.get_mut(camel)
    } else {
        o.get_mut(snake)
    }
}

/// A content object with its role defaulted to `user`.
fn with_role(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        let missing = o
            .get("role")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing {
            o.insert("role".into(), json!("user"));
        }
    }
}

/// The client's Gemini body as the `request` member of the envelope. `Err` says what is wrong
/// with the client's request.
pub fn prepare_request(body: &str, model: &str) -> Result<Map<String, Value>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("the request body is not JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("the request body must be a JSON object".into());
    };
    // A client that already wrapped its request in the Code Assist envelope.
    if !obj.contains_key("contents")
        && let Some(Value::Object(inner)) = obj.get("request")
    {
        obj = inner.clone();
    }
    obj.shift_remove("model");
    if let Some(si) = obj.shift_remove("system_instruction")
        && !obj.contains_key("systemInstruction")
    {
        obj.insert("systemInstruction".into(), si);
    }
    if obj.get("systemInstruction").is_some_and(Value::is_null) {
        obj.shift_remove("systemInstruction");
    }
    if let Some(si) = obj.get_mut("systemInstruction") {
        match si {
            Value::String(s) => *si = json!({"role": "user", "parts": [{"text": s}]}),
            other => with_role(other),
        }
    }
    match obj.get_mut("contents") {
        Some(Value::Array(contents)) if !contents.is_empty() => {
            contents.iter_mut().for_each(with_role)
        }
        Some(Value::Array(_)) => return Err("`contents` must not be empty".into()),
        Some(_) => return Err("`contents` must be an array".into()),
        None => return Err("`contents` is required".into()),
    }
    if is_thinking_model(model)
        && let Some(Value::Object(gc)) = get_mut(&mut obj, "generationConfig", "generation_config")
        && let Some(Value::Object(tc)) = get_mut(gc, "thinkingConfig", "thinking_config")
    {
        let level = tc
            .get("thinkingLevel")
            .or_else(|| tc.get("thinking_level"))
            .is_some_and(|l| !l.is_null());
        let budget = tc
            .get("thinkingBudget")
            .or_else(|| tc.get("thinking_budget"))
            .and_then(Value::as_f64)
            .is_some_and(|b| b != 0.0);
        let include_set = tc
            .get("includeThoughts")
            .or_else(|| tc.get("include_thoughts"))
            .is_some_and(|v| !v.is_null());
        if (level || budget) && !include_set {
            tc.insert("includeThoughts".into(), json!(true));
        }
    }
    Ok(obj)
}

/// The envelope: exactly `model`, `project` and `request`, as the original sends.
pub fn envelope(model: &str, project: &str, request: Map<String, Value>) -> Value {
    json!({"model": model, "project": project, "request": Value::Object(request)})
}

/// Antigravity's additions to the envelope: `userAgent`, `requestType`, `requestId`, a stable
/// `request.sessionId`; no `safetySettings` or `maxOutputTokens`; Claude models get no tools.
pub fn antigravity_adapt(env: &mut Value, model: &str) {
    let Some(o) = env.as_object_mut() else { return };
    o.insert("userAgent".into(), json!("antigravity"));
    let kind = if model.contains("image") {
        "image_gen"
    } else {
        "agent"
    };
    o.insert("requestType".into(), json!(kind));
    o.insert(
        "requestId".into(),
        json!(format!("agent-{}", uuid::Uuid::new_v4())),
    );
    let Some(Value::Object(r)) = o.get_mut("request") else {
        return;
    };
    let first_user_text = r
        .get("contents")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("parts"))
        .and_then(Value::as_array)
        .and_then(|p| p.iter().find_map(|p| p.get("text").and_then(Value::as_str)))
        .unwrap_or("");
    r.insert(
        "sessionId".into(),
        json!(format!("-{}", fnv1a(first_user_text))),
    );
    r.shift_remove("safetySettings");
    if let Some(Value::Object(gc)) = r.get_mut("generationConfig") {
        gc.shift_remove("maxOutputTokens");
    }
    if model.starts_with("claude-") {
        r.shift_remove("tools");
        r.shift_remove("toolConfig");
    }
}

/// FNV-1a (64 bit): a stable hash, the same in every process and version.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn node_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "x86",
        other => other,
    }
}

/// `User-Agent` of inference calls.
pub fn user_agent(kind: Kind, model: &str) -> String {
    match kind {
        Kind::Cli => format!(
            "GeminiCLI/{CLI_VERSION}/{model} ({}; {})",
            node_platform(),
            node_arch()
        ),
        Kind::Antigravity => ANTIGRAVITY_USER_AGENT.to_string(),
    }
}

/// The static model list in Gemini `models.list` shape (answered locally, as the original).
pub fn model_list(kind: Kind) -> Value {
    let ids: &[&str] = match kind {
        Kind::Cli => &CLI_MODELS,
        Kind::Antigravity => &ANTIGRAVITY_MODELS,
    };
    let models: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "name": format!("models/{id}"),
                "version": "1.0.0",
                "displayName": id,
                "description": format!("{id} via Code Assist"),
                "inputTokenLimit": 1_024_000,
                "outputTokenLimit": 65_535,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    json!({"models": models})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_and_fall_back() {
        assert_eq!(
            map_model(Kind::Cli, "gemini-2.5-pro"),
            Mapped {
                upstream: "gemini-2.5-pro".into(),
                anti: false
            }
        );
        assert_eq!(
            map_model(Kind::Cli, "models/gemini-3-pro-preview").upstream,
            "gemini-3-pro-preview"
        );
        assert_eq!(map_model(Kind::Cli, "gpt-4o").upstream, CLI_FALLBACK_MODEL);
        assert_eq!(
            map_model(Kind::Cli, "anti-gemini-2.5-pro"),
            Mapped {
                upstream: "gemini-2.5-pro".into(),
                anti: true
            }
        );
        assert_eq!(
            map_model(Kind::Antigravity, "gemini-claude-sonnet-4-5").upstream,
            "claude-sonnet-4-5"
        );
    }

    #[test]
    fn preprocessing_follows_the_original() {
        let body = json!({
            "model": "x",
            "system_instruction": {"parts": [{"text": "Be terse."}]},
            "contents": [{"parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Yo"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}},
        });
        let r = prepare_request(&body.to_string(), "gemini-2.5-pro").expect("valid");
        assert!(!r.contains_key("model") && !r.contains_key("system_instruction"));
        assert_eq!(r["systemInstruction"]["role"], "user");
        assert_eq!(r["contents"][0]["role"], "user");
        assert_eq!(r["contents"][1]["role"], "model");
        assert_eq!(
            r["generationConfig"]["thinkingConfig"]["includeThoughts"],
            true
        );

        let explicit = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": false}}});
        let r = prepare_request(&explicit.to_string(), "gemini-2.5-pro").expect("valid");
        assert_eq!(
            r["generationConfig"]["thinkingConfig"]["includeThoughts"], false,
            "the client's choice stands"
        );
        let off = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}});
        let r = prepare_request(&off.to_string(), "gemini-2.5-flash").expect("valid");
        assert!(
            r["generationConfig"]["thinkingConfig"]
                .get("includeThoughts")
                .is_none()
        );

        let wrapped = json!({"model": "m", "project": "p", "request": {"contents": [{"parts": [{"text": "a"}]}]}});
        let r = prepare_request(&wrapped.to_string(), "gemini-2.5-flash").expect("valid");
        assert_eq!(r["contents"][0]["role"], "user");
        assert!(prepare_request("{}", "m").is_err());
        assert!(prepare_request(r#"{"contents": []}"#, "m").is_err());
        assert!(prepare_request("[]", "m").is_err());
        let s = prepare_request(
            r#"{"contents":[{"parts":[{"text":"a"}]}],"systemInstruction":"sys"}"#,
            "m",
        )
        .expect("valid");
        assert_eq!(
            s["systemInstruction"],
            json!({"role": "user", "parts": [{"text": "sys"}]})
        );
    }

    #[test]
    fn envelope_has_exactly_three_keys() {
        let e = envelope("gemini-2.5-flash", "p", Map::new());
        assert_eq!(e.as_object().map(|o| o.len()), Some(3));
        assert!(
            user_agent(Kind::Cli, "gemini-2.5-flash")
                .starts_with("GeminiCLI/0.31.0/gemini-2.5-flash (")
        );
    }

    #[test]
    fn antigravity_envelope() {
        let req = prepare_request(
            &json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}], "tools": [{"functionDeclarations": []}],
                    "safetySettings": [], "generationConfig": {"maxOutputTokens": 5, "temperature": 1}}).to_string(),
            "claude-sonnet-4-5",
        )
        .expect("valid");
        let mut a = envelope("claude-sonnet-4-5", "p", req.clone());
        antigravity_adapt(&mut a, "claude-sonnet-4-5");
        let mut b = envelope("claude-sonnet-4-5", "p", req);
        antigravity_adapt(&mut b, "claude-sonnet-4-5");
        assert_eq!(a["userAgent"], "antigravity");
        assert_eq!(a["requestType"], "agent");
        assert!(
            a["requestId"]
                .as_str()
                .is_some_and(|s| s.starts_with("agent-"))
        );
        assert_ne!(a["requestId"], b["requestId"]);
        assert_eq!(
            a["request"]["sessionId"], b["request"]["sessionId"],
            "stable per conversation"
        );
        assert!(
            a["request"]["sessionId"]
                .as_str()
                .is_some_and(|s| s.starts_with('-') && s[1..].bytes().all(|c| c.is_ascii_digit()))
        );
        assert!(
            a["request"].get("tools").is_none() && a["request"].get("safetySettings").is_none()
        );
        assert_eq!(a["request"]["generationConfig"], json!({"temperature": 1}));
    }
}
