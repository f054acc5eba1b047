//! The client APIs (OpenAI, Claude, Gemini compatible), each also under a provider path prefix
//! (`/{provider-type}/v1/...`), with API-key checks and errors in the caller's own protocol.

use std::collections::HashMap;
use std::sync::Arc;

use aiclient_convert::{ModelEntry, Protocol};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::gateway::settings::key_digest;
use crate::gateway::{ClientCall, Gateway, error_response, json_response};

/// An early answer (an auth failure, a malformed body), boxed: responses are large.
type Early = Box<Response>;

/// Request bodies carry whole conversations and base64 images: allow up to 64 MiB.
pub const MAX_BODY: usize = 64 << 20;

type Q = Query<HashMap<String, String>>;

pub fn router(gw: Arc<Gateway>) -> Router {
    let routes = |prefix: &str| {
        Router::new()
            .route(&format!("{prefix}/v1/chat/completions"), post(chat))
            .route(&format!("{prefix}/v1/responses"), post(responses))
            .route(&format!("{prefix}/v1/messages"), post(messages))
            .route(
                &format!("{prefix}/v1/messages/count_tokens"),
                post(count_tokens),
            )
            .route(&format!("{prefix}/v1beta/models/{{*rest}}"), post(gemini))
            .route(&format!("{prefix}/v1/models"), get(models))
            .route(&format!("{prefix}/v1beta/models"), get(gemini_models))
    };
    routes("")
        .merge(routes("/{provider}"))
        .route("/metrics", get(crate::metrics::handler))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(gw)
}

/// The key a client presented: `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`.
fn presented_key<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    h("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| h("x-api-key"))
        .or_else(|| h("x-goog-api-key"))
        .or_else(|| query.get("key").map(String::as_str))
        .filter(|k| !k.is_empty())
}

/// Compares digests, so the comparison takes the same time whatever the key's length or content.
fn same_key(presented: &str, required: &[u8; 32]) -> bool {
    key_digest(presented).ct_eq(required).into()
}

fn authorize(
    gw: &Gateway,
    protocol: Protocol,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Early> {
    match gw.required_key_digest() {
        None if gw.allow_no_api_key => Ok(()),
        None => Err(Box::new(error_response(
            protocol,
            503,
            "no client API key is configured: set REQUIRED_API_KEY in the service config or start with --api-key (or opt out with allow_no_api_key)",
        ))),
        Some(k) => match presented_key(headers, query) {
            Some(p) if same_key(p, &k) => Ok(()),
            _ => Err(Box::new(error_response(
                protocol,
                401,
                "invalid or missing API key",
            ))),
        },
    }
}

/// `/metrics` accepts the client API key or a web-UI session token.
pub async fn authorized_for_metrics(gw: &Gateway, headers: &HeaderMap) -> bool {
    let none = HashMap::new();
    let presented = presented_key(headers, &none);
    match (gw.required_key_digest(), presented) {
        (None, _) if gw.allow_no_api_key => true,
        (Some(k), Some(p)) if same_key(p, &k) => true,
        (_, Some(p)) => matches!(
            crate::admin::auth::check_session(&gw.storage, p).await,
            Ok(Some(_))
        ),
        _ => false,
    }
}

fn provider_choice(path: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    path.get("provider")
        .cloned()
        .or_else(|| {
            headers
                .get("model-provider")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
}

fn parse(protocol: Protocol, body: &Bytes) -> Result<Value, Early> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Box::new(error_response(
            protocol,
            400,
            "the request body must be a JSON object",
        ))),
        Err(e) => Err(Box::new(error_response(
            protocol,
            400,
            &format!("invalid JSON body: {e}"),
        ))),
    }
}

/// What the gateway itself needs from a request body: the model and the stream flag. The rest
/// is skipped (still fully syntax-checked), so a pass-through request is never turned into a
/// `Value` tree; conversions parse the body when they need it.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
}

fn peek(protocol: Protocol, body: &Bytes) -> Result<Peek, Early> {
    // A derived struct also accepts a JSON array (`["model", true]`): only objects are requests.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        return Err(Box::new(error_response(
            protocol,
            400,
            "the request body must be a JSON object",
        )));
    }
    serde_json::from_slice::<Peek>(body).map_err(|e| {
        Box::new(error_response(
            protocol,
            400,
            &format!("invalid JSON body: {e}"),
        ))
    })
}

async fn body_call(
    gw: Arc<Gateway>,
    protocol: Protocol,
    path: HashMap<String, String>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&gw, protocol, &headers, &query) {
        return *r;
    }
    let peeked = match peek(protocol, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let model = match peeked.model {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return error_response(protocol, 400, "the request has no model"),
    };
    let stream = peeked
        .stream
        .as_ref()
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let call = ClientCall {
        protocol,
        body,
        json: None,
        model,
        stream,
        provider: provider_choice(&path, &headers),
        gemini_sse: false,
    };
    gw.generate(call).await
}

async fn chat(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    body_call(gw, Protocol::OpenAi, p, h, q, body).await
}

async fn responses(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    body_call(gw, Protocol::OpenAiResponses, p, h, q, body).await
}

async fn messages(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    body_call(gw, Protocol::Claude, p, h, q, body).await
}

/// `POST /v1/messages/count_tokens`: an estimate computed locally (no upstream call, no
/// account used), in Anthropic's shape.
async fn count_tokens(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&gw, Protocol::Claude, &h, &q) {
        return *r;
    }
    match parse(Protocol::Claude, &body) {
        Ok(v) => {
            let n = aiclient_convert::count_tokens(Protocol::Claude, &v);
            json_response(
                StatusCode::OK,
                Body::from(serde_json::json!({ "input_tokens": n }).to_string()),
            )
        }
        Err(r) => *r,
    }
}

/// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
async fn gemini(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let protocol = Protocol::Gemini;
    if let Err(r) = authorize(&gw, protocol, &h, &q) {
        return *r;
    }
    let rest = p.get("rest").map(String::as_str).unwrap_or_default();
    let (model, action) = match rest.rsplit_once(':') {
        Some((m, a)) => (m.trim_start_matches("models/"), a),
        None => return error_response(protocol, 404, &format!("unknown Gemini method {rest:?}")),
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "countTokens" => {
            return match parse(protocol, &body) {
                Ok(v) => json_response(
                    StatusCode::OK,
                    Body::from(serde_json::json!({ "totalTokens": aiclient_convert::count_tokens(protocol, &v) }).to_string()),
                ),
                Err(r) => *r,
            };
        }
        other => return error_response(protocol, 404, &format!("unknown Gemini method {other:?}")),
    };
    let json = match parse(protocol, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let call = ClientCall {
        protocol,
        body,
        json: Some(json),
        model: model.to_string(),
        stream,
        provider: provider_choice(&p, &h),
        gemini_sse: q.get("alt").is_some_and(|a| a == "sse"),
    };
    gw.generate(call).await
}

fn model_entries(gw: &Gateway, provider: Option<&str>) -> Vec<ModelEntry> {
    let types: Vec<String> = match provider {
        Some(p) => vec![p.to_string()],
        None => gw.settings.load().model_providers.clone(),
    };
    let mut out: Vec<ModelEntry> = Vec::new();
    for t in &types {
        let Some(plugin) = gw.providers.for_type(t).filter(|p| p.is_enabled()) else {
            continue;
        };
        let base = plugin
            .types
            .iter()
            .find(|b| t == *b || t.starts_with(&format!("{b}-")))
            .cloned()
            .unwrap_or_default();
        for id in plugin.models.get(&base).into_iter().flatten() {
            if !out.iter().any(|m| &m.id == id) {
                out.push(ModelEntry {
                    id: id.clone(),
                    owned_by: t.clone(),
                    display_name: None,
                });
            }
        }
    }
    out
}

/// `GET /v1/models`: OpenAI's list shape, or Anthropic's when the client sends
/// `anthropic-version`.
async fn models(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
) -> Response {
    let protocol = if h.contains_key("anthropic-version") {
        Protocol::Claude
    } else {
        Protocol::OpenAi
    };
    if let Err(r) = authorize(&gw, protocol, &h, &q) {
        return *r;
    }
    let provider = provider_choice(&p, &h);
    let list = aiclient_convert::model_list(protocol, &model_entries(&gw, provider.as_deref()));
    json_response(StatusCode::OK, Body::from(list.to_string()))
}

async fn gemini_models(
    State(gw): State<Arc<Gateway>>,
    Path(p): Path<HashMap<String, String>>,
    h: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(r) = authorize(&gw, Protocol::Gemini, &h, &q) {
        return *r;
    }
    let provider = provider_choice(&p, &h);
    let list =
        aiclient_convert::model_list(Protocol::Gemini, &model_entries(&gw, provider.as_deref()));
    json_response(StatusCode::OK, Body::from(list.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_every_place_clients_put_them() {
        let q = HashMap::new();
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(presented_key(&h, &q), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "def".parse().unwrap());
        assert_eq!(presented_key(&h, &q), Some("def"));
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", "ghi".parse().unwrap());
        assert_eq!(presented_key(&h, &q), Some("ghi"));
        let q: HashMap<String, String> = [("key".to_string(), "jkl".to_string())].into();
        assert_eq!(presented_key(&HeaderMap::new(), &q), Some("jkl"));
        let a = key_digest("a");
        assert!(same_key("a", &a) && !same_key("b", &a) && !same_key("aa", &a));
    }
}
