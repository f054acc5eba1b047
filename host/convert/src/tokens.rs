//! Rough input-token estimate for `/v1/messages/count_tokens` (server-behaviour.md §2.1).
//!
//! Method (no tokenizer ships with the gateway, so this is an estimate, typically within ±30 % of
//! the real count for English and code, and on the high side for CJK):
//! * the request is parsed with the client protocol's parser; every text (system, messages,
//!   thinking, tool-call names and JSON arguments, tool results, tool names, descriptions and
//!   JSON schemas) is counted as `ceil(ascii_chars / 4) + non_ascii_chars` (BPE vocabularies
//!   average about four ASCII characters per token; CJK and other scripts are about one token
//!   per character);
//! * each message adds 3 tokens and each tool definition 10 tokens of framing;
//! * each image or file adds a flat 1600 tokens (the cost of a ~1.15-megapixel image, the size
//!   Claude resizes large images to);
//! * a body the parser rejects is estimated as the text of the whole JSON document.

use serde_json::Value;

use crate::Protocol;
use crate::ir::{Part, Request};

const MESSAGE_OVERHEAD: u64 = 3;
const TOOL_OVERHEAD: u64 = 10;
const MEDIA_TOKENS: u64 = 1600;

/// Estimated tokens of a piece of text.
pub(crate) fn estimate_text(s: &str) -> u64 {
    let mut ascii = 0u64;
    let mut other = 0u64;
    for c in s.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    ascii.div_ceil(4) + other
}

fn estimate_part(p: &Part) -> u64 {
    match p {
        Part::Text(t) => estimate_text(t),
        Part::Thinking { text, .. } => estimate_text(text),
        Part::RedactedThinking(_) => 0,
        Part::Image(_) | Part::File { .. } => MEDIA_TOKENS,
        Part::ToolCall(c) => estimate_text(&c.name) + estimate_text(&c.args.to_string()),
        Part::ToolResult(r) => r.content.iter().map(estimate_part).sum::<u64>() + MESSAGE_OVERHEAD,
    }
}

fn estimate_request(req: &Request) -> u64 {
    let system: u64 = req
        .system
        .iter()
        .map(|s| estimate_text(s) + MESSAGE_OVERHEAD)
        .sum();
    let messages: u64 = req
        .messages
        .iter()
        .map(|m| MESSAGE_OVERHEAD + m.parts.iter().map(estimate_part).sum::<u64>())
        .sum();
    let tools: u64 = req
        .tools
        .iter()
        .map(|t| {
            TOOL_OVERHEAD
                + estimate_text(&t.name)
                + t.description.as_deref().map(estimate_text).unwrap_or(0)
                + estimate_text(&t.schema.to_string())
        })
        .sum();
    system + messages + tools
}

/// Rough token count of a request body in `protocol` (see the module docs for the method).
pub fn count_tokens(protocol: Protocol, body: &Value) -> u64 {
    match crate::parse_request(protocol, body) {
        Ok(req) => estimate_request(&req),
        Err(_) => estimate_text(&body.to_string()),
    }
}
