//! A mock OpenAI- and Anthropic-compatible upstream on a loopback port, for end-to-end tests and
//! the load benchmark. It checks API keys like the real services (401 otherwise), answers in
//! each API's exact shapes, unary and SSE, and is scripted by the model name:
//!
//! | model | answer |
//! |---|---|
//! | anything else | the text `Hello from mock upstream.` |
//! | `mock-tool` | a `get_weather` tool call with `{"city":"Paris"}` (or, when the last message is a tool result, text quoting that result) |
//! | `mock-500` | HTTP 500 |
//! | `mock-429` | HTTP 429 with `retry-after: 1` |
//! | `mock-400` | HTTP 400 invalid request |
//! | `mock-slow` | the text, streamed one word per 100 ms (unary: answered after 300 ms) |
//!
//! It counts the calls it received, per key, so tests can check what reached the upstream.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const TEXT: &str = "Hello from mock upstream.";

#[derive(Default)]
pub struct Counters {
    pub total: AtomicU64,
    pub by_key: Mutex<HashMap<String, u64>>,
    /// The last request body received.
    pub last_body: Mutex<Option<Value>>,
}

struct Mock {
    keys: HashSet<String>,
    counters: Arc<Counters>,
}

/// A running mock; it stops when the process ends (its task lives on the given runtime).
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

impl MockUpstream {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn calls_with(&self, key: &str) -> u64 {
        self.counters
            .by_key
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The mock's router, accepting `keys`.
pub fn router(keys: &[&str], counters: Arc<Counters>) -> Router {
    let m = Arc::new(Mock {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        counters,
    });
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(claude_messages))
        .route("/v1/models", get(models))
        .with_state(m)
}

/// Starts the mock on a free loopback port, on the current tokio runtime.
pub async fn start(keys: &[&str]) -> MockUpstream {
    let counters = Arc::new(Counters::default());
    let app = router(keys, counters.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind mock");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockUpstream { addr, counters }
}

/// Starts the mock on its own thread and runtime (for synchronous tests).
pub fn start_in_thread(keys: &[&str]) -> MockUpstream {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let k: Vec<&str> = keys.iter().map(String::as_str).collect();
            let m = start(&k).await;
            tx.send(MockUpstream {
                addr: m.addr,
                counters: m.counters,
            })
            .expect("send");
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("mock started")
}

fn respond(status: StatusCode, ct: &'static str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ct)
        .body(body.into())
        .expect("response")
}

fn json_resp(status: StatusCode, v: Value) -> Response {
    respond(status, "application/json", v.to_string())
}

impl Mock {
    fn check(&self, key: Option<&str>) -> bool {
        let Some(k) = key else { return false };
        if !self.keys.contains(k) {
            return false;
        }
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        *self
            .counters
            .by_key
            .lock()
            .expect("lock")
            .entry(k.to_string())
            .or_default() += 1;
        true
    }
}

fn scripted_error(model: &str, openai: bool) -> Option<Response> {
    let err = |status: StatusCode, typ: &str, msg: &str| {
        let body = if openai {
            json!({"error": {"message": msg, "type": typ, "code": null}})
        } else {
            json!({"type": "error", "error": {"type": typ, "message": msg}})
        };
        json_resp(status, body)
    };
    match model {
        "mock-500" => Some(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "mock upstream failure",
        )),
        "mock-400" => Some(err(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "mock says the request is invalid",
        )),
        "mock-429" => {
            let mut r = err(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "mock rate limit",
            );
            r.headers_mut()
                .insert("retry-after", "1".parse().expect("header"));
            Some(r)
        }
        _ => None,
    }
}

/// The tool result in the conversation, if the last message is one (OpenAI or Claude shape).
fn last_tool_result(body: &Value) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?;
    if last.get("role")?.as_str()? == "tool" {
        return last.get("content").map(|c| {
            c.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| c.to_string())
        });
    }
    let blocks = last.get("content")?.as_array()?;
    blocks
        .iter()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| {
            let c = b.get("content").cloned().unwrap_or(Value::Null);
            match &c {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                other => other.to_string(),
            }
        })
}

fn sse(events: Vec<(Option<&str>, String)>) -> Response {
    let mut out = String::new();
    for (e, d) in events {
        if let Some(e) = e {
            out.push_str(&format!("event: {e}\n"));
        }
        out.push_str(&format!("data: {d}\n\n"));
    }
    respond(StatusCode::OK, "text/event-stream", out)
}

async fn openai_chat(State(m): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !m.check(key) {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "invalid JSON", "type": "invalid_request_error"}}),
        );
    };
    *m.counters.last_body.lock().expect("lock") = Some(req.clone());
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-mock")
        .to_string();
    if let Some(r) = scripted_error(&model, true) {
        return r;
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if model == "mock-slow" {
        return slow_openai(stream, &model).await;
    }
    let tool_result = last_tool_result(&req);
    let wants_tool = model == "mock-tool" && tool_result.is_none();
    let text = match &tool_result {
        Some(r) => format!("The tool said: {r}"),
        None => TEXT.to_string(),
    };
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18});
    let id = "chatcmpl-mock";
    if !stream {
        let message = if wants_tool {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        } else {
            json!({"role": "assistant", "content": text})
        };
        let finish = if wants_tool { "tool_calls" } else { "stop" };
        return json_resp(
            StatusCode::OK,
            json!({
                "id": id, "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut ev = vec![(
        None,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    if wants_tool {
        ev.push((None, chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null)));
        ev.push((
            None,
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
        ));
        ev.push((
            None,
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null,
            ),
        ));
        ev.push((None, chunk(json!({}), json!("tool_calls"))));
    } else {
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for w in words {
            ev.push((None, chunk(json!({"content": w}), Value::Null)));
        }
        ev.push((None, chunk(json!({}), json!("stop"))));
    }
    if req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        ev.push((None, json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [], "usage": usage}).to_string()));
    }
    ev.push((None, "[DONE]".to_string()));
    sse(ev)
}

/// `mock-slow`: a stream that takes ~0.5 s (one word per 100 ms), or a unary answer after 300 ms.
async fn slow_openai(stream: bool, model: &str) -> Response {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    if !stream {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return json_resp(
            StatusCode::OK,
            json!({
                "id": "chatcmpl-slow", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
            }),
        );
    }
    let mut frames: Vec<String> = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    frames.extend(
        TEXT.split_inclusive(' ')
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    frames.push(chunk(json!({}), json!("stop")));
    frames.push("[DONE]".to_string());
    let body = futures_util::stream::unfold(frames.into_iter(), |mut it| async move {
        let f = it.next()?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::convert::Infallible>(format!("data: {f}\n\n")),
            it,
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .expect("response")
}

async fn claude_messages(State(m): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if !m.check(key) {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        );
    }
    if headers.get("anthropic-version").is_none() {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}}),
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "invalid JSON"}}),
        );
    };
    *m.counters.last_body.lock().expect("lock") = Some(req.clone());
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-mock")
        .to_string();
    if let Some(r) = scripted_error(&model, false) {
        return r;
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tool_result = last_tool_result(&req);
    let wants_tool = model == "mock-tool" && tool_result.is_none();
    let text = match &tool_result {
        Some(r) => format!("The tool said: {r}"),
        None => TEXT.to_string(),
    };
    if !stream {
        let content = if wants_tool {
            json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "Paris"}}])
        } else {
            json!([{"type": "text", "text": text}])
        };
        return json_resp(
            StatusCode::OK,
            json!({
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": if wants_tool { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 6},
            }),
        );
    }
    let mut ev: Vec<(Option<&str>, String)> = vec![(Some("message_start"), json!({"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}).to_string())];
    if wants_tool {
        ev.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}}}).to_string()));
        for part in ["{\"city\":", "\"Paris\"}"] {
            ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}}).to_string()));
        }
    } else {
        ev.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()));
        for w in text.split_inclusive(' ') {
            ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}).to_string()));
        }
    }
    ev.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}).to_string(),
    ));
    ev.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": if wants_tool { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": 6}}).to_string()));
    ev.push((
        Some("message_stop"),
        json!({"type": "message_stop"}).to_string(),
    ));
    sse(ev)
}

async fn models(State(m): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    if !m.check(key) {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "bad key"}}),
        );
    }
    json_resp(
        StatusCode::OK,
        json!({"object": "list", "data": [{"id": "gpt-mock", "object": "model", "owned_by": "mock"}]}),
    )
}
