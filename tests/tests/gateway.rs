//! The gateway end to end: the real binary on the file backend, the real `openai-custom` and
//! `claude-custom` plugins, a mock upstream; every client protocol, streaming, errors, account
//! switching, fallback, and exact counts written back to `provider_pools.json`.

use std::path::Path;

use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream::{self, MockUpstream, TEXT};
use aiclient_tests::wire::sse_data;
use serde_json::{Value, json};

const KEY: &str = "client-key-1";

struct Setup {
    _dir: tempfile::TempDir,
    configs: std::path::PathBuf,
    mock: MockUpstream,
    gw: Gateway,
}

fn write_configs(dir: &Path, mock: &MockUpstream, config: Value, pools: Value) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .expect("write");
    let pools = serde_json::to_string_pretty(&pools)
        .expect("json")
        .replace("MOCK", &mock.base_url());
    std::fs::write(dir.join("provider_pools.json"), pools).expect("write");
}

fn setup_with(config: Value, pools: Value) -> Setup {
    let mock = mock_upstream::start_in_thread(&["up-key-1", "up-key-2", "claude-key-1"]);
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    write_configs(&configs, &mock, config, pools);
    let gw = Gateway::start(
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
            "--provider",
            "openai-custom",
            "--provider",
            "claude-custom",
        ],
        &[],
    );
    Setup {
        _dir: dir,
        configs,
        mock,
        gw,
    }
}

fn default_pools() -> Value {
    json!({
        "openai-custom": [
            {"uuid": "oa-1", "customName": "first", "OPENAI_BASE_URL": "MOCK/v1", "OPENAI_API_KEY": "up-key-1", "isHealthy": true, "isDisabled": false, "usageCount": 0, "errorCount": 0},
            {"uuid": "oa-2", "OPENAI_BASE_URL": "MOCK/v1", "OPENAI_API_KEY": "up-key-2", "isHealthy": true, "isDisabled": false, "usageCount": 0, "errorCount": 0},
        ],
        "claude-custom": [
            {"uuid": "cl-1", "CLAUDE_BASE_URL": "MOCK", "CLAUDE_API_KEY": "claude-key-1", "isHealthy": true, "isDisabled": false, "usageCount": 0, "errorCount": 0},
        ],
    })
}

fn setup() -> Setup {
    setup_with(
        json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom", "MAX_ERROR_COUNT": 2, "REQUEST_BASE_DELAY": 10}),
        default_pools(),
    )
}

fn post(s: &Setup, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http(s.gw.addr, "POST", path, &h, &body.to_string())
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {KEY}"))
}

fn chat(s: &Setup, path: &str, model: &str, stream: bool) -> (u16, String) {
    let (k, v) = auth();
    post(
        s,
        path,
        &[(k, &v)],
        &json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
    )
}

#[test]
fn openai_unary_and_stream_with_keys_checked() {
    let s = setup();
    let (st, body) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT);

    let (st, body) = chat(&s, "/v1/chat/completions", "gpt-4o", true);
    assert_eq!(st, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "an OpenAI stream ends with [DONE]: {body}"
    );
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, TEXT);

    for headers in [vec![], vec![("authorization", "Bearer wrong")]] {
        let (st, body) = post(
            &s,
            "/v1/chat/completions",
            &headers,
            &json!({"model": "m", "messages": []}),
        );
        assert_eq!(st, 401, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert!(
            v["error"]["message"].as_str().is_some(),
            "OpenAI error shape: {body}"
        );
    }
    // The key is accepted in each place clients put it.
    let msg = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post(&s, "/v1/chat/completions", &[("x-api-key", KEY)], &msg).0,
        200
    );
    assert_eq!(
        post(&s, &format!("/v1/chat/completions?key={KEY}"), &[], &msg).0,
        200
    );
}

#[test]
fn claude_and_gemini_clients_are_converted_both_ways() {
    let s = setup();
    let (k, v) = auth();
    // Claude client → OpenAI upstream (default provider).
    let body = json!({"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let (st, out) = post(
        &s,
        "/v1/messages",
        &[(k, &v), ("anthropic-version", "2023-06-01")],
        &body,
    );
    assert_eq!(st, 200, "{out}");
    let m: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], TEXT);
    assert_eq!(m["stop_reason"], "end_turn");

    // Claude client, streaming.
    let mut body_s = body.clone();
    body_s["stream"] = json!(true);
    let (st, out) = post(&s, "/v1/messages", &[(k, &v)], &body_s);
    assert_eq!(st, 200, "{out}");
    let events: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{out}");
    assert_eq!(events.last(), Some(&"message_stop"), "{out}");

    // OpenAI client → Claude upstream, chosen by path prefix and by header.
    let (st, out) = chat(
        &s,
        "/claude-custom/v1/chat/completions",
        "claude-sonnet-4-5",
        false,
    );
    assert_eq!(st, 200, "{out}");
    let c: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c["choices"][0]["message"]["content"], TEXT);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[(k, &v), ("model-provider", "claude-custom")],
        &json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        s.mock.calls_with("claude-key-1"),
        2,
        "the Claude upstream served the prefix and header requests"
    );

    // Gemini client → OpenAI upstream, unary and SSE.
    let g = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-4o:generateContent",
        &[("x-goog-api-key", KEY)],
        &g,
    );
    assert_eq!(st, 200, "{out}");
    let r: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["candidates"][0]["content"]["parts"][0]["text"], TEXT);
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-4o:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", KEY)],
        &g,
    );
    assert_eq!(st, 200, "{out}");
    let text: String = sse_data(&out)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, TEXT);
    // Without alt=sse a Gemini stream is one JSON array.
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-4o:streamGenerateContent",
        &[("x-goog-api-key", KEY)],
        &g,
    );
    assert_eq!(st, 200, "{out}");
    let arr: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("a JSON array ({e}): {out}"));
    assert!(arr.as_array().is_some_and(|a| !a.is_empty()), "{out}");

    // Model lists.
    let (st, out) = http(s.gw.addr, "GET", "/v1/models", &[(k, &v)], "");
    assert_eq!(st, 200, "{out}");
    assert!(
        serde_json::from_str::<Value>(&out).expect("json")["data"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{out}"
    );
    let (st, out) = http(
        s.gw.addr,
        "GET",
        "/v1beta/models",
        &[("x-goog-api-key", KEY)],
        "",
    );
    assert_eq!(st, 200, "{out}");
    assert!(
        serde_json::from_str::<Value>(&out).expect("json")["models"].is_array(),
        "{out}"
    );
}

#[test]
fn client_errors_pass_through_and_never_penalise_accounts() {
    let s = setup();
    let (st, out) = chat(&s, "/v1/chat/completions", "mock-400", false);
    assert_eq!(st, 400, "{out}");
    let (k, v) = auth();
    let (st, out) = post(
        &s,
        "/v1/messages",
        &[(k, &v)],
        &json!({"model": "mock-400", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(st, 400, "{out}");
    let e: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        e["type"], "error",
        "a Claude client gets a Claude error: {out}"
    );
    // Bad client input is refused before any upstream call.
    let before = s
        .mock
        .counters
        .total
        .load(std::sync::atomic::Ordering::Relaxed);
    let (st, out) = http(
        s.gw.addr,
        "POST",
        "/v1/chat/completions",
        &[(k, &v)],
        "{not json",
    );
    assert_eq!(st, 400, "{out}");
    assert_eq!(
        s.mock
            .counters
            .total
            .load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    // Both accounts stay healthy and keep serving.
    for _ in 0..4 {
        assert_eq!(chat(&s, "/v1/chat/completions", "gpt-4o", false).0, 200);
    }
    let st = s.gw.terminate();
    assert!(st.success());
    let pools: Value = serde_json::from_str(
        &std::fs::read_to_string(s.configs.join("provider_pools.json")).expect("read"),
    )
    .expect("json");
    for a in pools["openai-custom"].as_array().expect("accounts") {
        assert_eq!(a["isHealthy"], true, "{a}");
        assert_eq!(a["errorCount"], 0, "a 400 is the client's fault: {a}");
    }
}

#[test]
fn a_bad_account_is_switched_away_from_and_marked_unhealthy() {
    let pools = json!({"openai-custom": [
        {"uuid": "bad", "OPENAI_BASE_URL": "MOCK/v1", "OPENAI_API_KEY": "revoked-key", "isHealthy": true},
        {"uuid": "good", "OPENAI_BASE_URL": "MOCK/v1", "OPENAI_API_KEY": "up-key-1", "isHealthy": true},
    ]});
    let s = setup_with(
        json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": ["openai-custom"]}),
        pools,
    );
    for i in 0..6 {
        let (st, out) = chat(&s, "/v1/chat/completions", "gpt-4o", i % 2 == 0);
        assert_eq!(st, 200, "request {i} succeeds on the good account: {out}");
    }
    assert_eq!(s.mock.calls_with("up-key-1"), 6);
    let st = s.gw.terminate();
    assert!(st.success());
    let pools: Value = serde_json::from_str(
        &std::fs::read_to_string(s.configs.join("provider_pools.json")).expect("read"),
    )
    .expect("json");
    let acct = |u: &str| {
        pools["openai-custom"]
            .as_array()
            .expect("list")
            .iter()
            .find(|a| a["uuid"] == u)
            .cloned()
            .expect("account")
    };
    assert_eq!(
        acct("bad")["isHealthy"],
        false,
        "a refused key marks the account unhealthy"
    );
    assert!(
        acct("bad")["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{}",
        acct("bad")
    );
    assert_eq!(acct("good")["usageCount"], 6, "every success counted");
}

#[test]
fn fallback_chain_and_model_mapping_fire() {
    let config = json!({
        "REQUIRED_API_KEY": KEY,
        "MODEL_PROVIDER": "openai-custom",
        "providerFallbackChain": {"openai-custom": ["claude-custom"]},
        "modelFallbackMapping": {"mock-500": {"targetProviderType": "claude-custom", "targetModel": "claude-sonnet-4-5"}},
        "REQUEST_MAX_RETRIES": 0,
        "REQUEST_BASE_DELAY": 1,
    });
    let s = setup_with(config, default_pools());
    // Every openai account fails with 500: the model mapping sends it to claude-custom.
    let (st, out) = chat(&s, "/v1/chat/completions", "mock-500", false);
    assert_eq!(st, 200, "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT);
    let last = s
        .mock
        .counters
        .last_body
        .lock()
        .expect("lock")
        .clone()
        .expect("a body");
    assert_eq!(
        last["model"], "claude-sonnet-4-5",
        "the mapped model was asked for"
    );
}

#[test]
fn counts_are_exact_and_written_back_in_the_original_shape() {
    let s = setup();
    let n = 40;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let addr = s.gw.addr;
            std::thread::spawn(move || {
                let (k, v) = auth();
                let mut ok = 0;
                for i in 0..n / 4 {
                    let stream = (t + i) % 2 == 0;
                    let body = json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
                    let (st, _) = http(addr, "POST", "/v1/chat/completions", &[(k, &v), ("content-type", "application/json")], &body.to_string());
                    ok += usize::from(st == 200);
                }
                ok
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(ok, n);
    let st = s.gw.terminate();
    assert!(st.success());
    let pools: Value = serde_json::from_str(
        &std::fs::read_to_string(s.configs.join("provider_pools.json")).expect("read"),
    )
    .expect("json");
    let total: i64 = pools["openai-custom"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["usageCount"].as_i64().expect("count"))
        .sum();
    assert_eq!(total, n as i64, "usageCount equals successful requests");
    let first = &pools["openai-custom"][0];
    assert_eq!(first["customName"], "first", "config fields kept");
    assert!(
        first["lastUsed"].as_str().is_some_and(|t| t.ends_with('Z')),
        "ISO time as the original writes: {first}"
    );
}

#[test]
fn no_configured_key_refuses_service_unless_opted_out() {
    let s = setup_with(json!({"MODEL_PROVIDER": "openai-custom"}), default_pools());
    let (st, out) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
    assert_eq!(st, 503, "{out}");
    assert!(out.contains("REQUIRED_API_KEY"), "{out}");
    drop(s);

    let mock = mock_upstream::start_in_thread(&["up-key-1", "up-key-2", "claude-key-1"]);
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    write_configs(
        &configs,
        &mock,
        json!({"MODEL_PROVIDER": "openai-custom"}),
        default_pools(),
    );
    let gw = Gateway::start(
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
            "--provider",
            "openai-custom",
            "--provider",
            "claude-custom",
        ],
        &[("AICLIENT_ALLOW_NO_API_KEY", "true")],
    );
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (st, out) = http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        &body,
    );
    assert_eq!(st, 200, "explicit opt-out serves without a key: {out}");
}

#[test]
fn rate_limits_cool_accounts_down_for_the_hinted_time_without_penalty() {
    let s = setup();
    let (st, out) = chat(&s, "/v1/chat/completions", "mock-429", false);
    assert_eq!(
        st, 429,
        "both accounts rate limited: the client gets 429: {out}"
    );
    // Both accounts honour the upstream's `retry-after: 1`.
    let (st, out) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
    assert_eq!(st, 429, "still cooling down: {out}");
    assert!(out.contains("retry in"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let (st, out) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
    assert_eq!(st, 200, "back after the hinted time: {out}");
    assert!(s.gw.terminate().success());
    let pools: Value = serde_json::from_str(
        &std::fs::read_to_string(s.configs.join("provider_pools.json")).expect("read"),
    )
    .expect("json");
    for a in pools["openai-custom"].as_array().expect("accounts") {
        assert_eq!(
            (a["isHealthy"].clone(), a["errorCount"].clone()),
            (json!(true), json!(0)),
            "a 429 is not an account error: {a}"
        );
    }
}

#[test]
fn a_scheduled_health_check_brings_an_unhealthy_account_back() {
    let pools = json!({"openai-custom": [
        {"uuid": "h1", "OPENAI_BASE_URL": "MOCK/v1", "OPENAI_API_KEY": "up-key-1", "checkModelName": "gpt-4o"},
    ]});
    let config = json!({
        "REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom", "MAX_ERROR_COUNT": 2,
        "REQUEST_MAX_RETRIES": 0, "SCHEDULED_HEALTH_CHECK": {"enabled": true, "interval": 1000},
    });
    let s = setup_with(config, pools);
    for _ in 0..2 {
        assert_eq!(chat(&s, "/v1/chat/completions", "mock-500", false).0, 500);
    }
    let (st, out) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
    assert_eq!(
        st, 503,
        "two errors in a row made the only account unhealthy: {out}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (st, _) = chat(&s, "/v1/chat/completions", "gpt-4o", false);
        if st == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the health check did not bring the account back"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(s.gw.terminate().success());
    let pools: Value = serde_json::from_str(
        &std::fs::read_to_string(s.configs.join("provider_pools.json")).expect("read"),
    )
    .expect("json");
    let a = &pools["openai-custom"][0];
    assert_eq!(a["isHealthy"], true, "{a}");
    assert_eq!(a["lastHealthCheckModel"], "gpt-4o", "{a}");
}
