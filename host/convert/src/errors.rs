//! Error bodies and in-stream error events in each client protocol (conversion.md §7,
//! server-behaviour.md §2.3).
//!
//! OpenAI and Responses use OpenAI's type names; Claude uses Anthropic's own error types
//! (`not_found_error`, `request_too_large`, `api_error`, `overloaded_error`, …) rather than
//! upstream's `server_error`, which Anthropic SDKs do not know; Gemini carries the numeric code and
//! the canonical gRPC status name.

use serde_json::{Value, json};

use crate::ir::now_secs;
use crate::{Protocol, SseEvent};

/// Status forced into 100–599 (anything else is reported as 500).
pub(crate) fn clamp_status(status: u16) -> u16 {
    if (100..=599).contains(&status) {
        status
    } else {
        500
    }
}

/// OpenAI error `type` for a status.
pub(crate) fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic error `type` for a status.
pub(crate) fn claude_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// HTTP status for an error `type` from any of the protocols (used for upstream in-band errors).
pub(crate) fn status_from_claude_type(t: &str) -> u16 {
    match t {
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" | "insufficient_quota" => 429,
        "overloaded_error" => 529,
        "timeout_error" => 504,
        "invalid_request_error" => 400,
        _ => 500,
    }
}

/// Gemini `error.status` for a status.
pub(crate) fn gemini_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

/// Error body in the client's protocol; the HTTP status to send is `status` (clamped to
/// 100–599).
pub fn error_body(protocol: Protocol, status: u16, message: &str) -> Value {
    let status = clamp_status(status);
    match protocol {
        Protocol::OpenAi => {
            let ty = openai_type(status);
            json!({"error": {"message": message, "type": ty, "code": ty}})
        }
        Protocol::OpenAiResponses => {
            let ty = openai_type(status);
            json!({"error": {"type": ty, "message": message, "code": ty}})
        }
        Protocol::Claude => {
            json!({"type": "error", "error": {"type": claude_type(status), "message": message}})
        }
        Protocol::Gemini => {
            json!({"error": {"code": status, "message": message, "status": gemini_status(status)}})
        }
    }
}

/// A mid-stream error as one client event. After it the stream should end (no `[DONE]` or
/// `message_stop`); `StreamConverter::fail` does both.
pub fn error_event(protocol: Protocol, status: u16, message: &str) -> SseEvent {
    let status = clamp_status(status);
    match protocol {
        Protocol::OpenAi => SseEvent {
            event: None,
            data: json!({"error": {"message": message, "type": openai_type(status), "code": null}}).to_string(),
        },
        Protocol::OpenAiResponses => {
            let ty = openai_type(status);
            let now = now_secs();
            // Upstream's shape plus the top-level `code`/`message` of the real Responses
            // `error` event, so both kinds of client find the message.
            SseEvent {
                event: Some("error".into()),
                data: json!({
                    "type": "error",
                    "id": format!("resp_{}", now.saturating_mul(1000)),
                    "object": "error",
                    "created": now,
                    "code": ty,
                    "message": message,
                    "param": null,
                    "error": {"type": ty, "message": message, "code": ty},
                })
                .to_string(),
            }
        }
        Protocol::Claude => SseEvent {
            event: Some("error".into()),
            data: json!({"type": "error", "error": {"type": claude_type(status), "message": message}}).to_string(),
        },
        Protocol::Gemini => SseEvent {
            event: None,
            data: json!({"error": {"code": status, "message": message, "status": gemini_status(status)}}).to_string(),
        },
    }
}
