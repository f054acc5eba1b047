//! Model lists in each client protocol (conversion.md §8), and parsing of upstream lists.
//!
//! `/v1/models` for Claude clients uses a superset: Anthropic's list shape (`data[]` with
//! `type:"model"`, `display_name`, `created_at`, `has_more`, `first_id`, `last_id`) plus the
//! OpenAI fields (`object`, `owned_by`, `created`), so OpenAI-style clients that call the
//! Anthropic base URL understand it too.

use serde_json::{Value, json};

use crate::Protocol;
use crate::ir::{now_secs, str_field};

/// One model offered to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    pub id: String,
    pub owned_by: String,
    pub display_name: Option<String>,
}

/// Model list in the client's protocol.
pub fn model_list(protocol: Protocol, models: &[ModelEntry]) -> Value {
    let created = now_secs();
    match protocol {
        Protocol::OpenAi | Protocol::OpenAiResponses => json!({
            "object": "list",
            "data": models.iter().map(|m| json!({
                "id": m.id,
                "object": "model",
                "created": created,
                "owned_by": m.owned_by,
                "display_name": m.display_name.clone().unwrap_or_else(|| m.id.clone()),
            })).collect::<Vec<_>>(),
        }),
        Protocol::Claude => json!({
            "object": "list",
            "data": models.iter().map(|m| json!({
                "type": "model",
                "id": m.id,
                "display_name": m.display_name.clone().unwrap_or_else(|| m.id.clone()),
                "created_at": "1970-01-01T00:00:00Z",
                "object": "model",
                "created": created,
                "owned_by": m.owned_by,
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": models.first().map(|m| m.id.clone()),
            "last_id": models.last().map(|m| m.id.clone()),
        }),
        Protocol::Gemini => json!({
            "models": models.iter().map(|m| {
                let display = m.display_name.clone().unwrap_or_else(|| m.id.clone());
                json!({
                    "name": format!("models/{}", m.id),
                    "baseModelId": m.id,
                    "version": "1.0.0",
                    "displayName": display,
                    "description": format!("A generative model for text and chat generation. ID: {}", m.id),
                    "inputTokenLimit": 32768,
                    "outputTokenLimit": 65534,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                })
            }).collect::<Vec<_>>(),
        }),
    }
}

/// Reads an upstream model list (OpenAI/Claude `data[]`, Claude-compatible `models[]`, Gemini
/// `models[]` with `models/` names) into entries; `owned_by` is used when the list has none.
pub fn parse_model_list(protocol: Protocol, body: &Value, owned_by: &str) -> Vec<ModelEntry> {
    let items = body
        .get("data")
        .or_else(|| body.get("models"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|m| {
            let raw = str_field(m, "id").or_else(|| str_field(m, "name"))?;
            let id = match protocol {
                Protocol::Gemini => raw.strip_prefix("models/").unwrap_or(raw),
                _ => raw,
            };
            Some(ModelEntry {
                id: id.to_string(),
                owned_by: str_field(m, "owned_by").unwrap_or(owned_by).to_string(),
                display_name: str_field(m, "display_name")
                    .or_else(|| str_field(m, "displayName"))
                    .map(str::to_string),
            })
        })
        .collect()
}
