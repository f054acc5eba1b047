//! Shared plumbing for provider plugins that speak HTTP: one pooled client per proxy setting,
//! error mapping, upstream status → [`AccountAction`], retry hints, and SSE streaming into
//! [`StreamEvent`]s. A plugin keeps only what is specific to its upstream: URLs, headers,
//! body shape, and its own exceptions to the default status mapping.

pub mod openai_compat;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use aiclient_sdk::PluginError;
use aiclient_sdk::provider::{AccountAction, EventStream, Reply, StreamEvent};
use aiclient_sdk::sse::SseParser;
use futures_util::StreamExt;
use serde_json::Value;

/// Default upstream timeout when the host gives none: long generations take minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest error body kept from an upstream (bytes); the rest is cut.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A pooled HTTP client for `proxy` (`None`: direct; the environment's proxy variables are
/// ignored, as the original does by default).
pub fn client(proxy: Option<&str>) -> Result<reqwest::Client, PluginError> {
    static DIRECT: OnceLock<reqwest::Client> = OnceLock::new();
    static CLIENTS: OnceLock<Mutex<HashMap<String, reqwest::Client>>> = OnceLock::new();
    let proxy = proxy.filter(|p| !p.is_empty());
    let Some(proxy) = proxy else {
        // The common case, on every request: no lock, no allocation.
        if let Some(c) = DIRECT.get() {
            return Ok(c.clone());
        }
        let c = build_client(None)?;
        return Ok(DIRECT.get_or_init(|| c).clone());
    };
    let mut map = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(proxy) {
        return Ok(c.clone());
    }
    let c = build_client(Some(proxy))?;
    map.insert(proxy.to_string(), c.clone());
    Ok(c)
}

fn build_client(proxy: Option<&str>) -> Result<reqwest::Client, PluginError> {
    static CRYPTO: OnceLock<()> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true);
    if let Some(p) = proxy {
        let proxy = reqwest::Proxy::all(p)
            .map_err(|e| PluginError::invalid_input(format!("bad proxy URL: {e}")))?;
        b = b.proxy(proxy);
    }
    b.build()
        .map_err(|e| PluginError::internal(format!("cannot build HTTP client: {e}")))
}

/// What a plugin derives from an account's JSON (parsed URLs, header values), kept per
/// account so a request does not parse the account again. Keyed by the account JSON itself:
/// an edited account is a new entry, never a stale one. Bounded: past `MAX` entries (accounts
/// edited many times over) it starts afresh.
pub struct AccountCache<T> {
    map: RwLock<HashMap<Box<str>, Arc<T>>>,
}

impl<T> Default for AccountCache<T> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> AccountCache<T> {
    const MAX: usize = 100_000;

    /// The cached value for `account`, or `make(parsed account)` stored and returned. Errors are
    /// not cached.
    pub fn get_or_try_insert(
        &self,
        account: &str,
        make: impl FnOnce(&Value) -> Result<T, PluginError>,
    ) -> Result<Arc<T>, PluginError> {
        if let Some(v) = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
        {
            return Ok(v.clone());
        }
        let parsed: Value = serde_json::from_str(account)?;
        let v = Arc::new(make(&parsed)?);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(account.into(), v.clone());
        Ok(v)
    }
}

/// A header value holding a secret (marked sensitive, so it is never printed in debug output).
pub fn secret_header(value: &str) -> Result<reqwest::header::HeaderValue, PluginError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        PluginError::invalid_input("a credential contains characters a header cannot carry")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A request body handed over by the host, sent without copying it.
pub fn body_of(body: abi_stable::std_types::RString) -> reqwest::Body {
    reqwest::Body::from(bytes::Bytes::from_owner(body))
}

/// A URL from the account's configuration, checked once.
pub fn parse_url(url: &str) -> Result<reqwest::Url, PluginError> {
    reqwest::Url::parse(url)
        .map_err(|e| PluginError::invalid_input(format!("invalid upstream URL {url:?}: {e}")))
}

/// The request's `options.proxy`, if any.
pub fn proxy_of(options: &str) -> Option<String> {
    if options.len() <= 2 {
        return None; // "" or "{}": what the host sends when no proxy applies
    }
    serde_json::from_str::<Value>(options)
        .ok()?
        .get("proxy")?
        .as_str()
        .map(str::to_string)
}

/// A string field of the account object.
pub fn account_str(account: &Value, key: &str) -> Option<String> {
    account
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An upstream error object's message: `error.message`, `message`, `msg`, or a string `error`.
pub fn error_message(v: &Value) -> Option<String> {
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("msg"))
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `base` + `path` without doubled or missing slashes.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Maps a transport failure (no HTTP answer) to a retryable error without leaking URLs'
/// credentials (reqwest errors carry the URL; ours never contain secrets in the query).
pub fn transport_error(e: reqwest::Error) -> PluginError {
    let e = e.without_url();
    if e.is_timeout() {
        PluginError::timeout(format!("upstream timed out: {e}"))
    } else {
        PluginError::unavailable(format!("upstream unreachable: {e}"))
    }
}

/// The default meaning of an upstream status for the account.
pub fn default_action(status: u16) -> AccountAction {
    match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => AccountAction::CLIENT_ERROR,
        401 | 403 => AccountAction::REFRESH,
        429 => AccountAction::COOLDOWN,
        _ => AccountAction::NONE,
    }
}

/// Retry hint in ms from `retry-after-ms`, `retry-after` (seconds or HTTP date), or 0.
pub fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> i64 {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return ms.max(0.0) as i64;
    }
    match get("retry-after") {
        Some(v) => {
            if let Ok(secs) = v.parse::<f64>() {
                (secs.max(0.0) * 1000.0) as i64
            } else if let Ok(t) = chrono::DateTime::parse_from_rfc2822(v) {
                (t.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0)
            } else {
                0
            }
        }
        None => 0,
    }
}

/// Sends the request and turns the answer into a [`Reply`]: non-2xx → status + body + retry
/// hint + [`default_action`]; 2xx unary → body; 2xx with `stream` → SSE events.
pub async fn send(req: reqwest::RequestBuilder, stream: bool) -> Result<Reply, PluginError> {
    let resp = req.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry = retry_after_ms(resp.headers());
        let body = read_capped(resp, MAX_ERROR_BODY).await;
        let mut r = Reply::status(status, body);
        r.retry_after_ms = retry;
        r.action = default_action(status);
        if r.action == AccountAction::COOLDOWN && retry > 0 {
            r.action_until = chrono::Utc::now().timestamp_millis() + retry;
        }
        return Ok(r);
    }
    if stream {
        Ok(Reply::stream(sse_events(resp)))
    } else {
        Ok(Reply::ok(body_text(resp).await?))
    }
}

/// The whole body as text. JSON APIs answer in UTF-8: no charset sniffing (what
/// `Response::text` does on every call); anything else is decoded lossily.
pub async fn body_text(resp: reqwest::Response) -> Result<String, PluginError> {
    let bytes = resp.bytes().await.map_err(transport_error)?;
    Ok(match std::str::from_utf8(&bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> String {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SSE events of a streaming response, ending at the upstream's end or at `data: [DONE]`.
pub fn sse_events(resp: reqwest::Response) -> EventStream {
    struct St {
        body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        parser: SseParser,
        ready: std::collections::VecDeque<StreamEvent>,
        done: bool,
    }
    let st = St {
        body: resp.bytes_stream().boxed(),
        parser: SseParser::default(),
        ready: Default::default(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                if ev.data.as_str() == "[DONE]" {
                    st.done = true;
                    st.ready.clear();
                    return None;
                }
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            let mut out = Vec::new();
            let step = match st.body.next().await {
                Some(Ok(bytes)) => st.parser.push(&bytes, &mut out),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(transport_error(e)), st));
                }
                None => {
                    st.done = true;
                    st.parser.finish(&mut out)
                }
            };
            if let Err(e) = step {
                st.done = true;
                return Some((
                    Err(PluginError::unavailable(format!(
                        "malformed upstream stream: {e}"
                    ))),
                    st,
                ));
            }
            st.ready
                .extend(out.into_iter().map(|e| StreamEvent::new(e.event, e.data)));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_meanings() {
        assert_eq!(default_action(400), AccountAction::CLIENT_ERROR);
        assert_eq!(default_action(401), AccountAction::REFRESH);
        assert_eq!(default_action(429), AccountAction::COOLDOWN);
        assert_eq!(default_action(503), AccountAction::NONE);
    }

    #[test]
    fn retry_hints() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after_ms(&h), 7000);
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after_ms(&h), 250);
    }

    #[test]
    fn urls_join_cleanly() {
        assert_eq!(
            join_url("http://x/v1/", "/chat/completions"),
            "http://x/v1/chat/completions"
        );
    }
}
