//! Answers of OpenAI-compatible upstreams (Qwen, iFlow, …): a unary `chat.completion` (checked
//! to be JSON and passed on unchanged) and an SSE stream of `chat.completion.chunk`s, handed to
//! the host event by event until `data: [DONE]`. What a refusal means for the account is the
//! plugin's: it passes its own [`Refusal`] mapping.
//!
//! Streams are checked before they are handed over: the first event must be a JSON chunk (a
//! garbage or empty stream is an error the host can still turn into a clean client error or
//! another account), an error object as the first event is that upstream error. Later events
//! that are not JSON, or error objects, end the stream with an error (the host sends the
//! client an error event and the protocol's terminator) rather than being skipped silently.

use aiclient_sdk::PluginError;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::provider::{EventStream, Reply, StreamEvent};
use futures_util::StreamExt;
use serde_json::Value;

use crate as kit;

/// A plugin's mapping of an upstream refusal (status, body, header retry hint ms, now ms) to a
/// reply.
pub type Refusal = fn(u16, String, i64, i64) -> Reply;

/// What one upstream event is.
enum Checked {
    Chunk(StreamEvent),
    Skip,
    /// An error object sent as an event: its status (from `error.code`, else 500) and body.
    ErrorObject(u16, String),
    Malformed(String),
}

fn snippet(s: &str) -> String {
    let mut t: String = s.chars().take(120).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// An HTTP error status named by an error object (`error.code`/`error.status`/`code`).
fn error_status(v: &Value) -> u16 {
    [
        v.pointer("/error/code"),
        v.pointer("/error/status"),
        v.get("code"),
    ]
    .into_iter()
    .flatten()
    .find_map(|c| match c {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
    .filter(|c| (400..600).contains(c))
    .map(|c| c as u16)
    .unwrap_or(500)
}

/// An answer body that is an error object rather than a completion.
fn as_error(v: &Value) -> Option<u16> {
    let is_err = v.get("error").is_some_and(|e| !e.is_null()) && v.get("choices").is_none();
    is_err.then(|| error_status(v))
}

fn check(ev: &StreamEvent) -> Checked {
    let data = ev.data.as_str().trim();
    if data.is_empty() {
        return Checked::Skip;
    }
    match serde_json::from_str::<Value>(data) {
        Ok(v @ Value::Object(_)) => match as_error(&v) {
            Some(status) => Checked::ErrorObject(status, data.to_string()),
            None => Checked::Chunk(StreamEvent::new("", data)),
        },
        _ => Checked::Malformed(data.to_string()),
    }
}

fn malformed(data: &str) -> PluginError {
    PluginError::unavailable(format!(
        "malformed upstream stream: event is not a JSON chunk: {}",
        snippet(data)
    ))
}

/// The reply for a 2xx unary answer.
pub async fn unary(resp: reqwest::Response, refusal: Refusal) -> Result<Reply, PluginError> {
    let body = kit::body_text(resp).await?;
    let v: Value = serde_json::from_str(&body).map_err(|e| {
        PluginError::unavailable(format!(
            "upstream answered with invalid JSON ({e}): {}",
            snippet(&body)
        ))
    })?;
    if let Some(status) = as_error(&v) {
        return Ok(refusal(status, body, 0, now_ms()));
    }
    Ok(Reply::ok(body))
}

/// The reply for a 2xx streaming answer.
pub async fn stream(resp: reqwest::Response, refusal: Refusal) -> Result<Reply, PluginError> {
    let mut events = kit::sse_events(resp);
    let first = loop {
        match events.next().await {
            None => {
                return Err(PluginError::unavailable(
                    "upstream stream ended before any data",
                ));
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(ev)) => match check(&ev) {
                Checked::Skip => continue,
                Checked::Chunk(c) => break c,
                Checked::ErrorObject(status, body) => {
                    return Ok(refusal(status, body, 0, now_ms()));
                }
                Checked::Malformed(d) => return Err(malformed(&d)),
            },
        }
    };
    Ok(Reply::stream(checked_stream(first, events)))
}

/// `first`, then the rest of `events` checked; the stream ends after its first error.
fn checked_stream(first: StreamEvent, events: EventStream) -> EventStream {
    let rest = events.filter_map(|r| async move {
        match r {
            Err(e) => Some(Err(e)),
            Ok(ev) => match check(&ev) {
                Checked::Skip => None,
                Checked::Chunk(c) => Some(Ok(c)),
                Checked::ErrorObject(_, body) => {
                    let msg = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| kit::error_message(&v))
                        .unwrap_or(body);
                    Some(Err(PluginError::unavailable(format!(
                        "upstream error inside the stream: {msg}"
                    ))))
                }
                Checked::Malformed(d) => Some(Err(malformed(&d))),
            },
        }
    });
    let all = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    Box::pin(
        all.scan(false, |failed, item| {
            let out = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            async move { out }
        })
        .fuse(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked() {
        let ok = StreamEvent::new("message", r#"{"choices":[{"delta":{"content":"x"}}]}"#);
        match check(&ok) {
            Checked::Chunk(c) => assert_eq!(c.event.as_str(), "", "event names are dropped"),
            _ => panic!("a chunk"),
        }
        assert!(matches!(check(&StreamEvent::new("", "  ")), Checked::Skip));
        assert!(matches!(
            check(&StreamEvent::new("", "{\"choices\": [")),
            Checked::Malformed(_)
        ));
        assert!(matches!(
            check(&StreamEvent::new("", "[1]")),
            Checked::Malformed(_)
        ));
        assert!(matches!(
            check(&StreamEvent::new(
                "",
                r#"{"error":{"code":"429","message":"slow"}}"#
            )),
            Checked::ErrorObject(429, _)
        ));
        assert!(matches!(
            check(&StreamEvent::new("", r#"{"error":{"message":"x"}}"#)),
            Checked::ErrorObject(500, _)
        ));
    }

    #[test]
    fn a_stream_stops_after_its_first_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let events: EventStream = Box::pin(futures_util::stream::iter(vec![
                Ok(StreamEvent::new("", "{\"a\":1}")),
                Ok(StreamEvent::new("", "garbage")),
                Ok(StreamEvent::new("", "{\"b\":2}")),
            ]));
            let s = checked_stream(StreamEvent::new("", "{\"first\":0}"), events);
            let items: Vec<_> = s.collect().await;
            assert_eq!(items.len(), 3);
            assert!(items[0].is_ok() && items[1].is_ok() && items[2].is_err());
        });
    }
}
