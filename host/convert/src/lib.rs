//! Protocol conversion for the aiclient gateway.
//!
//! Clients speak one of four protocols — OpenAI Chat Completions, OpenAI Responses, Anthropic
//! Claude Messages, Google Gemini generateContent — and upstream accounts speak another. This
//! crate converts requests, non-stream responses, streams, error bodies and model lists between
//! every pair (reference: `shared/reference/conversion.md`).
//!
//! Design: every protocol module parses into, and renders from, one internal representation
//! (`ir`), so each direction is "parse source → normalise → render target". Where the
//! reference marks an upstream bug (⚠) the correct behaviour is implemented; the choices are
//! documented where they are made (module docs of `ir`, `claude`, `gemini`, `responses`,
//! `schema`, `stream`).
//!
//! Module map:
//! * `ir` — internal types, shared helpers (lenient tool-argument parsing, data URLs, effort ⇄
//!   budget tables), tool-call/result pairing;
//! * `openai`, `responses`, `claude`, `gemini` — per-protocol request and response parse/render;
//! * `schema` — JSON-schema cleaning for Gemini and JSON-schema targets;
//! * `stream` — [`StreamConverter`];
//! * `errors` — [`error_body`], [`error_event`];
//! * `models` — [`model_list`], [`parse_model_list`];
//! * `tokens` — [`count_tokens`].

mod claude;
mod errors;
mod gemini;
mod ir;
mod models;
mod openai;
mod responses;
mod schema;
mod stream;
mod tokens;

use serde_json::Value;

pub use errors::{error_body, error_event};
pub use models::{ModelEntry, model_list, parse_model_list};
pub use stream::StreamConverter;
pub use tokens::count_tokens;

/// A client- or upstream-facing API protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAi,
    /// OpenAI Responses (`/v1/responses`).
    OpenAiResponses,
    /// Anthropic Messages (`/v1/messages`).
    Claude,
    /// Google Gemini generateContent (`/v1beta/models/{model}:generateContent`).
    Gemini,
}

/// A client body that cannot be converted; the message names what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub message: String,
}

/// One SSE event for the client: optional `event:` name and the `data:` payload (already
/// serialised; the OpenAI terminator is the literal `[DONE]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The event in SSE wire format (`event: …\ndata: …\n\n`).
    pub fn to_wire(&self) -> String {
        match &self.event {
            Some(e) => format!("event: {e}\ndata: {}\n\n", self.data),
            None => format!("data: {}\n\n", self.data),
        }
    }
}

pub(crate) fn parse_request(protocol: Protocol, body: &Value) -> Result<ir::Request, ConvertError> {
    match protocol {
        Protocol::OpenAi => openai::parse_request(body),
        Protocol::OpenAiResponses => responses::parse_request(body),
        Protocol::Claude => claude::parse_request(body),
        Protocol::Gemini => gemini::parse_request(body),
    }
}

/// Client request body in `from` → upstream request body in `to`. `model` is the effective
/// model (Gemini puts it in the URL, not the body). Same protocol → body returned unchanged
/// except model normalisation (`model` set to the effective model; removed for Gemini).
pub fn convert_request(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
) -> Result<Value, ConvertError> {
    if from == to {
        let mut out = body.clone();
        let obj = out
            .as_object_mut()
            .ok_or_else(|| ir::err("request body must be a JSON object"))?;
        if to == Protocol::Gemini {
            obj.remove("model");
        } else if !model.is_empty() {
            obj.insert("model".into(), Value::String(model.to_string()));
        }
        return Ok(out);
    }
    let mut req = parse_request(from, body)?;
    req.messages = ir::normalize_messages(std::mem::take(&mut req.messages));
    if req.messages.is_empty() {
        // A request made of a system prompt only: every target needs a user turn, so the prompt
        // becomes one (what upstream does for Gemini).
        if req.system.is_empty() {
            return Err(ir::err("the request has no messages with content"));
        }
        let text = std::mem::take(&mut req.system).join("\n");
        req.messages.push(ir::Message {
            role: ir::Role::User,
            parts: vec![ir::Part::Text(text)],
        });
    }
    Ok(match to {
        Protocol::OpenAi => openai::render_request(&req, model),
        Protocol::OpenAiResponses => responses::render_request(&req, model),
        Protocol::Claude => claude::render_request(&req, model),
        Protocol::Gemini => gemini::render_request(&req, model),
    })
}

/// Upstream non-stream response in `from` → client response in `to`. Same protocol → the body
/// unchanged (pass-through keeps the upstream's `model`).
pub fn convert_response(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
) -> Result<Value, ConvertError> {
    if from == to {
        return Ok(body.clone());
    }
    let mut resp = match from {
        Protocol::OpenAi => openai::parse_response(body)?,
        Protocol::OpenAiResponses => responses::parse_response(body)?,
        Protocol::Claude => claude::parse_response(body)?,
        Protocol::Gemini => gemini::parse_response(body)?,
    };
    if from == Protocol::OpenAi && to == Protocol::Claude {
        // OpenAI-compatible models that write `<thinking>` tags get real thinking blocks.
        resp.parts = claude::split_thinking_tags(std::mem::take(&mut resp.parts));
    }
    Ok(match to {
        Protocol::OpenAi => openai::render_response(&resp, model),
        Protocol::OpenAiResponses => responses::render_response(&resp, model),
        Protocol::Claude => claude::render_response(&resp, model),
        Protocol::Gemini => gemini::render_response(&resp, model),
    })
}
