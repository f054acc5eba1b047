//! The Codex provider plugin end to end: the real `aiclient` binary with the real
//! `aiclient-provider-codex` plugin (loaded alone: `--provider codex`) against the faithful
//! Codex mock (`aiclient_tests::mocks::codex`). Covered: OpenAI Chat (by `Model-Provider`
//! header and by path prefix), OpenAI Responses, Claude and Gemini clients, unary and
//! streaming (SSE cut at every byte), tool-call round trips, images in and generated images
//! out, the exact Codex request (headers, account id, forced fields, model map), token refresh
//! before expiry and after a 401 (rotating refresh tokens, the file written back in its original
//! shape), single-flight refresh for 50 concurrent requests on one gateway and on two gateways
//! sharing one Redis, and upstream errors turned into client errors and account health.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use aiclient_sdk::account::{format_time, now_ms, parse_time_exact, split_account};
use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::gateway::Gateway;
use aiclient_tests::gateway::http;
use aiclient_tests::mocks::codex::{
    self, CLIENT_ID, CodexMock, Counters, DEFAULT_TEXT, Fault, PNG_B64, Split, USAGE_CACHED,
    USAGE_INPUT, USAGE_OUTPUT, jwt_claims,
};
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Map, Value, json};

const KEY: &str = "codex-client-key";
const TYPE: &str = "openai-codex-oauth";
const HOUR: i64 = 3_600_000;

/// The binary, the Codex plugin and both backends, built once per test process.
fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        artifacts::build(&[
            "aiclient",
            "aiclient-provider-codex",
            "aiclient-backend-file",
            "aiclient-backend-redis",
        ])
    })
}
/// `aiclient serve --port 0 <args>` loading only this test's plugins, in `cwd`.
fn start_gateway(a: &Artifacts, cwd: &Path, args: &[&str]) -> Gateway {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--provider", "codex"]);
    Gateway::start_with(a, cwd, &full, &[])
}

/// The credential file the Codex CLI / the original project writes, expiring at `expires_at`.
fn credential(mock: &CodexMock, name: &str, expires_at: i64) -> Value {
    let t = mock.state.add_account(name);
    json!({
        "id_token": t.id_token,
        "access_token": t.access_token,
        "refresh_token": t.refresh_token,
        "account_id": t.account_id,
        "last_refresh": format_time(now_ms() - 60_000),
        "email": t.email,
        "type": "codex",
        "expired": format_time(expires_at),
    })
}

fn pool_entry(mock: &CodexMock, name: &str) -> Value {
    json!({
        "customName": format!("codex-{name}"),
        "CODEX_OAUTH_CREDS_FILE_PATH": format!("./configs/codex/{name}_codex-{name}@example.com_oauth_creds.json"),
        "CODEX_BASE_URL": mock.base_url(),
        "CODEX_TOKEN_URL": mock.token_url(),
        "uuid": format!("codex-{name}"),
        "checkModelName": "gpt-5.2-codex",
        "checkHealth": false,
        "isHealthy": true,
        "isDisabled": false,
        "usageCount": 0,
        "errorCount": 0,
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    configs: PathBuf,
    mock: CodexMock,
    gw: Gateway,
    /// The credential files as written, by account name.
    creds: Vec<(String, Value)>,
}

impl Setup {
    fn token_file(&self, name: &str) -> PathBuf {
        self.configs
            .join("codex")
            .join(format!("{name}_codex-{name}@example.com_oauth_creds.json"))
    }
    fn pools(&self) -> Value {
        parse(&std::fs::read_to_string(self.configs.join("provider_pools.json")).expect("pools"))
    }
    fn account_state(&self, name: &str) -> Value {
        self.pools()[TYPE]
            .as_array()
            .expect("pool")
            .iter()
            .find(|a| a["uuid"] == format!("codex-{name}"))
            .cloned()
            .expect("account in pools")
    }
}

/// A gateway on the file backend with the given Codex accounts (name, expiry offset from now)
/// and extra `config.json` keys.
fn setup(
    extra_config: Value,
    accounts: &[(&str, i64)],
    prepare: impl FnOnce(&CodexMock, &Path),
) -> Setup {
    let mock = codex::start();
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(configs.join("codex")).expect("mkdir");
    let mut creds = Vec::new();
    let mut pool = Vec::new();
    for (name, expires_in) in accounts {
        let c = credential(&mock, name, now_ms() + expires_in);
        let file = configs
            .join("codex")
            .join(format!("{name}_codex-{name}@example.com_oauth_creds.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&c).expect("json")).expect("write");
        creds.push((name.to_string(), c));
        pool.push(pool_entry(&mock, name));
    }
    let mut config = json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": TYPE, "REQUEST_BASE_DELAY": 10, "MAX_ERROR_COUNT": 10});
    for (k, v) in extra_config.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    std::fs::write(
        configs.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .expect("write config");
    std::fs::write(
        configs.join("provider_pools.json"),
        serde_json::to_string_pretty(&json!({TYPE: pool})).expect("json"),
    )
    .expect("write pools");
    prepare(&mock, &configs);
    let gw = start_gateway(
        artifacts(),
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
        ],
    );
    Setup {
        _dir: dir,
        configs,
        mock,
        gw,
        creds,
    }
}

fn post_to(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
    let auth = format!("Bearer {KEY}");
    let mut h = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    h.extend_from_slice(headers);
    http(addr, "POST", path, &h, &body.to_string())
}

fn post(s: &Setup, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
    post_to(s.gw.addr, path, headers, body)
}

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `(event name, data)` of an SSE body; `[DONE]` becomes the string "[DONE]".
fn sse(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut event = String::new();
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v = serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string()));
            out.push((std::mem::take(&mut event), v));
        }
    }
    out
}

fn openai_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, d)| {
            d.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

fn claude_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .filter_map(|(_, d)| d.pointer("/delta/text").and_then(Value::as_str))
        .collect()
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    Counters::get(c)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": text}]})
}

fn claude_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-5.4", "max_tokens": 1024, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[test]
fn openai_chat_unary_and_stream_send_the_exact_codex_request() {
    // Codex is not the default: it is chosen per request.
    let s = setup(
        json!({"MODEL_PROVIDER": "openai-custom"}),
        &[("a", 5 * HOUR)],
        |_, _| {},
    );
    let hdr = [("model-provider", TYPE)];
    let body = json!({"model": "gpt-5.4", "temperature": 0.3, "max_tokens": 100, "top_p": 0.9, "user": "u-1",
                      "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let (st, out) = post(&s, "/v1/chat/completions", &hdr, &body);
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let c = parse(&out);
    assert_eq!(c["choices"][0]["message"]["content"], DEFAULT_TEXT);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], USAGE_INPUT);
    assert_eq!(c["usage"]["completion_tokens"], USAGE_OUTPUT);
    assert_eq!(
        c["usage"]["prompt_tokens_details"]["cached_tokens"],
        USAGE_CACHED
    );

    let r = s
        .mock
        .state
        .last_response_request()
        .expect("a recorded call");
    assert_eq!(r.path, "/backend-api/codex/responses");
    let cred = &s.creds[0].1;
    assert_eq!(
        r.header("authorization").map(str::to_string),
        Some(format!(
            "Bearer {}",
            cred["access_token"].as_str().expect("token")
        ))
    );
    assert_eq!(r.header("chatgpt-account-id"), Some("acct-a"));
    assert_eq!(r.header("version"), Some("0.130.0"));
    assert_eq!(r.header("originator"), Some("codex-tui"));
    assert_eq!(
        r.header("user-agent"),
        Some("codex-tui/0.130.0 (Windows 10.0.26100; x86_64) WindowsTerminal (codex-tui; 0.130.0)")
    );
    assert_eq!(r.header("x-codex-beta-features"), Some("powershell_utf8"));
    assert_eq!(r.header("x-oai-web-search-eligible"), Some("true"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("openai-beta").is_none());
    assert_eq!(
        r.header("host"),
        Some(s.mock.addr.to_string().as_str()),
        "host from the URL"
    );
    let key = r.body["prompt_cache_key"]
        .as_str()
        .expect("prompt_cache_key");
    assert_eq!(key.len(), 36, "a UUID");
    assert_eq!(r.header("session_id"), Some(key));
    assert_eq!(r.header("conversation_id"), Some(key));
    let b = &r.body;
    assert_eq!(b["model"], "gpt-5.4");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(
        (b["store"].clone(), b["stream"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(b["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(
        b["reasoning"],
        json!({"effort": "medium", "summary": "auto"})
    );
    assert_eq!(b["parallel_tool_calls"], true);
    assert_eq!(b["tool_choice"], "auto");
    assert_eq!(
        b["tools"],
        json!([{"type": "web_search"}, {"type": "image_generation", "output_format": "png"}])
    );
    assert_eq!(
        b["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])
    );
    for k in [
        "temperature",
        "top_p",
        "max_output_tokens",
        "max_tokens",
        "user",
        "metadata",
        "service_tier",
    ] {
        assert!(b.get(k).is_none(), "{k} is not sent: {b}");
    }
    // The same (default) session keeps its cache key.
    let (st, _) = post(&s, "/v1/chat/completions", &hdr, &chat("Again"));
    assert_eq!(st, 200);
    let again = s.mock.state.last_response_request().expect("call");
    assert_eq!(again.body["prompt_cache_key"].as_str(), Some(key));

    // Without the header the default provider (not loaded) is used.
    let (st, _) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_ne!(st, 200);

    // -fast: stripped, priority tier, extra-high effort; an unknown model falls back.
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &hdr,
        &json!({"model": "gpt-5.4-fast", "reasoning_effort": "low", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(r.body["model"], "gpt-5.4");
    assert_eq!(r.body["service_tier"], "priority");
    assert_eq!(r.body["reasoning"]["effort"], "xhigh");
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &hdr,
        &json!({"model": "gpt-4o", "reasoning_effort": "minimal", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(r.body["model"], "gpt-5.2");
    assert!(r.body.get("service_tier").is_none());
    assert_ne!(r.body["reasoning"]["effort"], "minimal", "{}", r.body);
    let (st, _) = post(
        &s,
        "/v1/chat/completions",
        &hdr,
        &json!({"model": "gpt-5.3-codex-spark", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200);
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(
        r.body["tools"],
        json!([{"type": "web_search"}]),
        "no image tool for spark"
    );

    // Streaming through the path prefix, one byte per write (cuts inside lines and UTF-8).
    s.mock.state.set_split(Split::Fixed(1));
    let (st, out) = post(
        &s,
        "/openai-codex-oauth/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "messages": [{"role": "user", "content": "Hi #reasoning"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(openai_text(&ev), DEFAULT_TEXT, "{out}");
    let thinking: String = ev
        .iter()
        .filter_map(|(_, d)| {
            d.pointer("/choices/0/delta/reasoning_content")
                .and_then(Value::as_str)
        })
        .collect();
    assert!(thinking.starts_with("Thinking about a greeting."), "{out}");
    assert!(
        ev.iter()
            .any(|(_, d)| d.pointer("/choices/0/finish_reason") == Some(&json!("stop")))
    );
    assert_eq!(ev.last().map(|e| e.1.clone()), Some(json!("[DONE]")));
    s.mock.state.set_split(Split::Random { seed: 11, max: 17 });
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &hdr,
        &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_text(&sse(&out)), DEFAULT_TEXT);
    assert_eq!(
        counter(&s.mock.state.counters.bad_request),
        0,
        "every request was valid Codex"
    );
    assert_eq!(counter(&s.mock.state.counters.auth_rejected), 0);
}

#[test]
fn responses_clients_get_the_stream_and_a_filled_final_output() {
    let s = setup(json!({}), &[("a", 5 * HOUR)], |_, _| {});
    let body = json!({"model": "gpt-5.4", "input": "Hi", "instructions": "Be terse.", "store": true,
                      "temperature": 0.5, "max_output_tokens": 50, "metadata": {"session_id": "sess-9"}});
    let (st, out) = post(&s, "/v1/responses", &[], &body);
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let v = parse(&out);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    let output = v["output"].as_array().expect("output");
    assert_eq!(
        output.len(),
        1,
        "the empty upstream output was filled: {out}"
    );
    assert_eq!(output[0]["content"][0]["text"], DEFAULT_TEXT);
    assert_eq!(v["usage"]["input_tokens"], USAGE_INPUT);
    assert_eq!(
        v["usage"]["input_tokens_details"]["cached_tokens"],
        USAGE_CACHED
    );
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(r.body["store"], false);
    assert_eq!(r.body["instructions"], "Be terse.");
    assert_eq!(
        r.body["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])
    );
    for k in ["temperature", "max_output_tokens", "metadata"] {
        assert!(r.body.get(k).is_none(), "{k}: {}", r.body);
    }
    let key = r.body["prompt_cache_key"].clone();
    let (st, _) = post(&s, "/v1/responses", &[], &body);
    assert_eq!(st, 200);
    assert_eq!(
        s.mock.state.last_response_request().expect("call").body["prompt_cache_key"],
        key,
        "kept per session"
    );

    // A populated upstream output is returned as sent.
    let (st, out) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5.4", "input": "Hi #full #reasoning"}),
    );
    assert_eq!(st, 200, "{out}");
    let v = parse(&out);
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert_eq!(v["output"][1]["content"][0]["text"], DEFAULT_TEXT);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 8);

    // Streaming: the events pass through; the final event carries the items.
    s.mock.state.set_split(Split::Random { seed: 3, max: 9 });
    let (st, out) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "input": [
        {"role": "developer", "content": "Dev note."}, {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(
        ev.first().map(|e| e.0.as_str()),
        Some("response.created"),
        "{out}"
    );
    let last = ev.last().expect("events");
    assert_eq!(last.0, "response.completed", "{out}");
    assert_eq!(
        last.1["response"]["output"][0]["content"][0]["text"],
        DEFAULT_TEXT
    );
    let text: String = ev
        .iter()
        .filter(|e| e.0 == "response.output_text.delta")
        .filter_map(|e| e.1["delta"].as_str())
        .collect();
    assert_eq!(text, DEFAULT_TEXT);
    let seqs: Vec<u64> = ev
        .iter()
        .filter_map(|e| e.1["sequence_number"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(r.body["input"][0]["role"], "developer");
    assert_eq!(
        r.body["input"][0]["content"][0],
        json!({"type": "input_text", "text": "Dev note."})
    );
}

#[test]
fn tool_calls_round_trip_for_every_client() {
    let s = setup(json!({}), &[("a", 5 * HOUR)], |_, _| {});
    let st_ = &s.mock.state;
    // OpenAI Chat.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"role": "user", "content": "Weather? #tool"});
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "tools": tools, "messages": [ask]}),
    );
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let c = parse(&out);
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls", "{out}");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_w1");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        parse(call["function"]["arguments"].as_str().expect("args")),
        json!({"city": "Paris"})
    );
    let sent_tools = st_.last_response_request().expect("call").body["tools"].clone();
    assert_eq!(sent_tools[0]["type"], "function");
    assert_eq!(sent_tools[0]["name"], "get_weather");
    assert_eq!(
        sent_tools[0]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    let back = json!({"model": "gpt-5.4", "tools": tools, "messages": [
        ask,
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "18C and sunny"},
    ]});
    let (st, out) = post(&s, "/openai-codex-oauth/v1/chat/completions", &[], &back);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        parse(&out)["choices"][0]["message"]["content"],
        "The tool said: 18C and sunny"
    );
    let input = st_.last_response_request().expect("call").body["input"].clone();
    let items: Vec<&Value> = input.as_array().expect("input").iter().collect();
    let fc = items
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("function_call item");
    assert_eq!(
        (fc["call_id"].as_str(), fc["name"].as_str()),
        (Some("call_w1"), Some("get_weather"))
    );
    assert_eq!(
        parse(fc["arguments"].as_str().expect("args")),
        json!({"city": "Paris"})
    );
    let fo = items
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .expect("output item");
    assert_eq!(
        *fo,
        &json!({"type": "function_call_output", "call_id": "call_w1", "output": "18C and sunny"})
    );

    // OpenAI Chat, streamed: the call arrives complete and the finish says tool_calls.
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "tools": tools, "messages": [{"role": "user", "content": "#twotools"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    let mut names = Vec::new();
    let mut args: std::collections::BTreeMap<u64, String> = Default::default();
    for (_, d) in &ev {
        for tc in d
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().expect("index");
            if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str) {
                names.push(n.to_string());
            }
            args.entry(i).or_default().push_str(
                tc.pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
        }
    }
    assert_eq!(names, ["get_weather", "get_time"], "{out}");
    assert_eq!(parse(&args[&0]), json!({"city": "Paris"}));
    assert_eq!(parse(&args[&1]), json!({"tz": "CET"}));
    assert!(
        ev.iter()
            .any(|e| e.1.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))),
        "{out}"
    );

    // Claude: unary and streamed tool_use, then the tool_result.
    let ctools = json!([{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let mut cb = json!({"model": "gpt-5.4", "max_tokens": 500, "system": "You are a weather bot.", "tools": ctools, "messages": [{"role": "user", "content": "Weather? #tool"}]});
    let (st, out) = post(
        &s,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &cb,
    );
    assert_eq!(st, 200, "{out}");
    let m = parse(&out);
    assert_eq!(m["stop_reason"], "tool_use", "{out}");
    let tu = m["content"]
        .as_array()
        .expect("content")
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("tool_use")
        .clone();
    assert_eq!(
        (tu["id"].clone(), tu["name"].clone(), tu["input"].clone()),
        (
            json!("call_w1"),
            json!("get_weather"),
            json!({"city": "Paris"})
        )
    );
    assert_eq!(
        st_.last_response_request().expect("call").body["instructions"],
        "You are a weather bot."
    );
    cb["stream"] = json!(true);
    let (st, out) = post(&s, "/v1/messages", &[], &cb);
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(
        ev.first().map(|e| e.0.as_str()),
        Some("message_start"),
        "{out}"
    );
    assert_eq!(
        ev.last().map(|e| e.0.as_str()),
        Some("message_stop"),
        "{out}"
    );
    let start = ev
        .iter()
        .find(|e| e.0 == "content_block_start" && e.1["content_block"]["type"] == "tool_use")
        .expect("tool block");
    assert_eq!(start.1["content_block"]["id"], "call_w1");
    let idx = start.1["index"].clone();
    let input: String = ev
        .iter()
        .filter(|e| e.1["index"] == idx)
        .filter_map(|e| e.1.pointer("/delta/partial_json").and_then(Value::as_str))
        .collect();
    assert_eq!(parse(&input), json!({"city": "Paris"}));
    assert_eq!(
        ev.iter().find(|e| e.0 == "message_delta").expect("delta").1["delta"]["stop_reason"],
        "tool_use"
    );
    let back = json!({"model": "gpt-5.4", "max_tokens": 500, "tools": ctools, "messages": [
        {"role": "user", "content": "Weather? #tool"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": [{"type": "text", "text": "18C"}]}]},
    ]});
    let (st, out) = post(&s, "/v1/messages", &[], &back);
    assert_eq!(st, 200, "{out}");
    assert_eq!(parse(&out)["content"][0]["text"], "The tool said: 18C");

    // Gemini: function call out, function response back, unary and SSE.
    let gtools = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let gask = json!({"role": "user", "parts": [{"text": "Weather? #tool"}]});
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-5.4:generateContent",
        &[("x-goog-api-key", KEY)],
        &json!({"contents": [gask], "tools": gtools}),
    );
    assert_eq!(st, 200, "{out}");
    let parts = parse(&out)["candidates"][0]["content"]["parts"].clone();
    let call = parts
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p.get("functionCall"))
        .cloned()
        .unwrap_or_else(|| panic!("a function call: {out}"));
    assert_eq!(
        (call["name"].clone(), call["args"].clone()),
        (json!("get_weather"), json!({"city": "Paris"}))
    );
    let gback = json!({"tools": gtools, "contents": [
        gask,
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}}]},
    ]});
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-5.4:generateContent",
        &[("x-goog-api-key", KEY)],
        &gback,
    );
    assert_eq!(st, 200, "{out}");
    let text = parse(&out)["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with("The tool said: ") && text.contains("18C"),
        "{out}"
    );
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-5.4:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", KEY)],
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    let text: String = sse(&out)
        .iter()
        .filter_map(|e| {
            e.1.pointer("/candidates/0/content/parts/0/text")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, DEFAULT_TEXT);

    // Responses: a function_call and its output in the input.
    let (st, out) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5.4", "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}], "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "id": "fc_old", "call_id": "call_9", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_9", "output": "-3C"},
        ]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        parse(&out)["output"][0]["content"][0]["text"],
        "The tool said: -3C"
    );
    let fc = st_.last_response_request().expect("call").body["input"][1].clone();
    assert!(fc.get("id").is_none(), "stored-item ids are dropped: {fc}");

    // A tool name longer than 64 characters is shortened upstream and restored for the client.
    let long = format!("mcp__weather_server_{}__get_weather", "x".repeat(60));
    st_.push_turn(codex::Turn {
        calls: vec![codex::Call::new(
            "call_l",
            "mcp__get_weather",
            &["{\"city\":\"Rome\"}"],
        )],
        ..Default::default()
    });
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": "Rome?"}],
        "tools": [{"type": "function", "function": {"name": long, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        st_.last_response_request().expect("call").body["tools"][0]["name"],
        "mcp__get_weather"
    );
    assert_eq!(
        parse(&out)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        long.as_str()
    );
    assert_eq!(
        counter(&st_.counters.bad_request),
        0,
        "every converted request was valid Codex"
    );
}

#[test]
fn images_reach_codex_and_generated_images_come_back() {
    let s = setup(json!({}), &[("a", 5 * HOUR)], |_, _| {});
    let data_url = format!("data:image/png;base64,{PNG_B64}");
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": data_url}}]}]}),
    );
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let content =
        s.mock.state.last_response_request().expect("call").body["input"][0]["content"].clone();
    assert_eq!(
        content[0],
        json!({"type": "input_text", "text": "What is this?"})
    );
    assert_eq!(content[1]["type"], "input_image");
    assert_eq!(content[1]["image_url"], data_url.as_str());

    let (st, out) = post(
        &s,
        "/v1/messages",
        &[],
        &json!({"model": "gpt-5.4", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
        {"type": "text", "text": "Describe"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    let content =
        s.mock.state.last_response_request().expect("call").body["input"][0]["content"].clone();
    assert_eq!(
        content[0]["image_url"],
        "data:image/jpeg;base64,/9j/4AAQSkZJRg=="
    );

    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-5.4:generateContent",
        &[("x-goog-api-key", KEY)],
        &json!({"contents": [{"role": "user", "parts": [
        {"text": "Describe"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    let content =
        s.mock.state.last_response_request().expect("call").body["input"][0]["content"].clone();
    assert!(
        content
            .as_array()
            .expect("parts")
            .iter()
            .any(|p| p["image_url"] == data_url.as_str()),
        "{content}"
    );

    // Image generation: the item comes back as a markdown data-URL image.
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Draw a dot #image"));
    assert_eq!(st, 200, "{out}");
    let text = parse(&out)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("Here is your image.") && text.contains(&data_url),
        "{text}"
    );
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-image-2", "stream": true, "messages": [{"role": "user", "content": "Draw a dot #image"}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert!(openai_text(&sse(&out)).contains(&data_url), "{out}");
    let r = s.mock.state.last_response_request().expect("call");
    assert_eq!(r.body["model"], "gpt-5.4");
    assert_eq!(r.body["tools"], json!([{"type": "image_generation"}]));
}

/// Runs requests at once (released together) and returns their results.
fn at_once(targets: &[(SocketAddr, usize)], path: &str, body: &Value) -> Vec<(u16, String)> {
    let total: usize = targets.iter().map(|t| t.1).sum();
    let barrier = Arc::new(Barrier::new(total));
    let mut handles = Vec::new();
    for &(addr, n) in targets {
        for _ in 0..n {
            let (b, body, path) = (barrier.clone(), body.clone(), path.to_string());
            handles.push(std::thread::spawn(move || {
                b.wait();
                post_to(addr, &path, &[], &body)
            }));
        }
    }
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

/// The written credential has the original shape and the mock's newest tokens.
fn assert_newest(written: &Value, original: &Value, mock: &CodexMock, name: &str) {
    assert_eq!(
        keys(written),
        keys(original),
        "the original shape, in order: {written}"
    );
    let acct = mock.state.account(name).expect("account");
    assert_eq!(written["access_token"], acct.access_token.as_str());
    assert_eq!(
        written["refresh_token"],
        acct.refresh_token.as_str(),
        "the rotated refresh token"
    );
    assert_eq!(written["id_token"], acct.id_token.as_str());
    assert_eq!(written["account_id"], acct.account_id.as_str());
    assert_eq!(written["email"], acct.email.as_str());
    assert_eq!(written["type"], "codex");
    let exp =
        parse_time_exact(written["expired"].as_str().expect("expired")).expect("ISO with ms and Z");
    assert!(
        (exp - now_ms() - HOUR).abs() < 10 * 60_000,
        "expires in about an hour: {written}"
    );
    let last =
        parse_time_exact(written["last_refresh"].as_str().expect("last_refresh")).expect("ISO");
    assert!(
        (now_ms() - last).abs() < 5 * 60_000,
        "refreshed just now: {written}"
    );
}

#[test]
fn fifty_concurrent_requests_on_an_expired_token_refresh_once_and_write_back_the_file() {
    let s = setup(json!({}), &[("s", -60_000)], |m, _| {
        m.state.set_token_delay(Duration::from_millis(300));
        // The old access token is dead upstream too.
        m.state.advance(Duration::from_secs(2 * 3600));
    });
    let results = at_once(
        &[(s.gw.addr, 50)],
        "/v1/messages",
        &claude_body("Hi", false),
    );
    for (st, out) in &results {
        assert_eq!(*st, 200, "{out}\n{}", s.gw.logs());
        assert_eq!(parse(out)["content"][0]["text"], DEFAULT_TEXT);
    }
    let c = &s.mock.state.counters;
    let refreshes = s.mock.token_calls();
    println!("token-endpoint calls for 50 concurrent requests on one gateway: {refreshes}");
    assert_eq!(
        refreshes, 1,
        "exactly one refresh for 50 concurrent requests"
    );
    assert_eq!(counter(&c.token_rejected), 0);
    assert_eq!(
        counter(&c.auth_rejected),
        0,
        "no request went out with the expired token"
    );
    assert_eq!(s.mock.responses_calls(), 50);
    let refresh = s
        .mock
        .state
        .token_requests()
        .pop()
        .expect("the refresh call");
    assert_eq!(refresh.content_type, "application/x-www-form-urlencoded");
    assert_eq!(refresh.header("accept"), Some("application/json"));
    assert_eq!(
        refresh.body,
        json!({"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": "rt_s_0"})
    );
    let acct = s.mock.state.account("s").expect("account");
    assert_eq!(acct.generation, 1);
    let bearer = format!("Bearer {}", acct.access_token);
    assert!(
        s.mock
            .state
            .responses_requests()
            .iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );

    let mut s = s;
    assert!(s.gw.stop().success());
    let written = parse(&std::fs::read_to_string(s.token_file("s")).expect("token file"));
    assert_newest(&written, &s.creds[0].1, &s.mock, "s");
    let pools = s.pools();
    assert_eq!(
        pools[TYPE][0]["CODEX_OAUTH_CREDS_FILE_PATH"],
        "./configs/codex/s_codex-s@example.com_oauth_creds.json"
    );
    assert_eq!(pools[TYPE][0]["isHealthy"], true);
    assert_eq!(
        pools[TYPE][0]["CODEX_TOKEN_URL"],
        s.mock.token_url().as_str()
    );
}

#[test]
fn a_refused_token_is_refreshed_on_401_and_rotations_are_followed() {
    let s = setup(json!({}), &[("r", 10 * HOUR)], |_, _| {});
    let st_ = &s.mock.state;
    // The file says the token is good for hours; upstream it expired (mock clock).
    st_.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(code, 200, "{out}\n{}", s.gw.logs());
    assert_eq!(
        (counter(&st_.counters.auth_rejected), s.mock.token_calls()),
        (1, 1),
        "401 → refresh → retry"
    );
    let rejected = &st_.responses_requests()[0];
    assert_eq!(rejected.status, 401);

    // Again, streamed: the refusal comes before any content, so it is refreshed and retried,
    // with the rotated refresh token.
    st_.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(code, 200, "{out}");
    assert_eq!(claude_text(&sse(&out)), DEFAULT_TEXT);
    assert_eq!(
        (counter(&st_.counters.auth_rejected), s.mock.token_calls()),
        (2, 2)
    );
    let bodies: Vec<Value> = st_.token_requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies[0]["refresh_token"], "rt_r_0");
    assert_eq!(bodies[1]["refresh_token"], "rt_r_1");
    assert_eq!(
        counter(&st_.counters.token_rejected),
        0,
        "never a reused refresh token"
    );

    // A refresh answer without id_token keeps the account id and email.
    st_.set_omit_id_token(true);
    st_.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(code, 200, "{out}");
    assert_eq!(s.mock.token_calls(), 3);

    let mut s = s;
    assert!(s.gw.stop().success());
    let written = parse(&std::fs::read_to_string(s.token_file("r")).expect("token file"));
    let original = &s.creds[0].1;
    assert_eq!(keys(&written), keys(original), "{written}");
    let acct = s.mock.state.account("r").expect("account");
    assert_eq!(acct.generation, 3);
    assert_eq!(written["access_token"], acct.access_token.as_str());
    assert_eq!(written["refresh_token"], "rt_r_3");
    assert_eq!(written["account_id"], "acct-r");
    assert_eq!(written["email"], "r@example.com");
    let id = jwt_claims(written["id_token"].as_str().expect("id token")).expect("a JWT");
    assert_eq!(
        id["email"], "r@example.com",
        "the previous id_token was kept"
    );
}

#[test]
fn a_failed_refresh_marks_the_account_unhealthy_and_another_serves() {
    let s = setup(
        json!({}),
        &[("dead", -60_000), ("live", 5 * HOUR)],
        |m, _| {
            // The dead account's refresh token was already used elsewhere.
            m.state.inject_token(
            Fault::status(401, json!({"error": {"message": "Your refresh token has already been used to generate a new access token.", "type": "invalid_request_error", "code": "refresh_token_reused"}})),
            1,
        );
        },
    );
    for _ in 0..4 {
        let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
        assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    }
    assert_eq!(
        s.mock.token_calls(),
        1,
        "a refused refresh token is not retried"
    );
    assert!(
        s.mock
            .state
            .responses_requests()
            .iter()
            .all(|r| r.account.as_deref() == Some("live"))
    );
    let mut s = s;
    assert!(s.gw.stop().success());
    let dead = s.account_state("dead");
    assert_eq!(dead["isHealthy"], false, "{dead}");
    assert!(
        dead["lastErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("refresh_token_reused"),
        "{dead}"
    );
    let file = parse(&std::fs::read_to_string(s.token_file("dead")).expect("file"));
    assert_eq!(
        file, s.creds[0].1,
        "the operator's credential is never changed by a failed refresh"
    );
}

#[test]
fn two_gateways_sharing_redis_refresh_once() {
    let a = artifacts();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mock = codex::start();
    let token = credential(&mock, "x", now_ms() - 60_000);
    mock.state.set_token_delay(Duration::from_millis(500));
    mock.state.advance(Duration::from_secs(2 * 3600));
    let entry = pool_entry(&mock, "x");
    let uuid = entry["uuid"].as_str().expect("uuid").to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = rt.block_on(async {
        let lib = aiclient::plugins::loader::load_storage(a.lib("aiclient_backend_redis"))
            .expect("load the redis backend");
        let storage =
            aiclient::plugins::create_storage(&lib, &json!({"url": url, "instance_id": "seed"}))
                .await
                .expect("open redis");
        let config =
            json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": TYPE, "REQUEST_BASE_DELAY": 10});
        storage
            .set_config(&config.to_string())
            .await
            .expect("config");
        let obj: Map<String, Value> = entry.as_object().expect("object").clone();
        storage
            .add_account(split_account(TYPE, obj).expect("split"))
            .await
            .expect("add account");
        storage
            .set_token(TYPE, &uuid, &token.to_string())
            .await
            .expect("set token");
        storage
    });
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["--storage", "redis", "--redis-url", url.as_str()];
    let g1 = start_gateway(a, dir.path(), &args);
    let g2 = start_gateway(a, dir.path(), &args);
    let results = at_once(
        &[(g1.addr, 50), (g2.addr, 50)],
        "/v1/chat/completions",
        &chat("Hi"),
    );
    for (st, out) in &results {
        assert_eq!(*st, 200, "{out}\n{}\n{}", g1.logs(), g2.logs());
        assert_eq!(parse(out)["choices"][0]["message"]["content"], DEFAULT_TEXT);
    }
    let refreshes = mock.token_calls();
    println!(
        "token-endpoint calls for 2×50 concurrent requests on two gateways sharing Redis: {refreshes}"
    );
    assert_eq!(refreshes, 1, "one refresh across both instances");
    assert_eq!(counter(&mock.state.counters.token_rejected), 0);
    assert_eq!(counter(&mock.state.counters.auth_rejected), 0);
    assert_eq!(mock.responses_calls(), 100);
    let stored = rt
        .block_on(storage.get_token(TYPE, &uuid))
        .expect("get token")
        .expect("a token");
    assert_newest(&parse(&stored), &token, &mock, "x");
    assert_eq!(mock.state.account("x").expect("account").generation, 1);
}

/// After the error event only the protocol's terminator may follow (OpenAI `[DONE]`, Claude
/// `message_delta`/`message_stop`): no more content.
fn assert_error_ends(ev: &[(String, Value)], out: &str) {
    let at = ev
        .iter()
        .position(|e| e.0 == "error" || e.1.get("error").is_some())
        .unwrap_or_else(|| panic!("an error event: {out}"));
    for (name, data) in &ev[at + 1..] {
        let terminator =
            data == &json!("[DONE]") || name == "message_delta" || name == "message_stop";
        assert!(terminator, "only a terminator after the error: {out}");
    }
}

#[test]
fn client_errors_pass_through_and_stream_failures_are_clean_errors() {
    // No retries on the same account: one fault, one client-visible outcome.
    let s = setup(
        json!({"REQUEST_MAX_RETRIES": 0}),
        &[("a", 5 * HOUR)],
        |_, _| {},
    );
    let st_ = &s.mock.state;
    let calls = || s.mock.responses_calls();

    // 400: returned with the backend's reason; nobody is penalised.
    st_.inject(Fault::detail("Unsupported parameter: reasoning.foo"), 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 400, "{out}\n{}", s.gw.logs());
    assert_eq!(
        parse(&out)["error"]["message"],
        "Unsupported parameter: reasoning.foo",
        "{out}"
    );
    assert_eq!(calls(), 1);

    // Malformed SSE, a reset connection, a stream cut before response.completed, an oversized
    // event: clean 502s.
    let mut huge =
        b"event: response.created\ndata: {\"type\":\"response.created\",\"x\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 17 << 20));
    huge.extend_from_slice(b"\"}\n\n");
    for (what, fault, want) in [
        ("malformed", Fault::Malformed, "malformed upstream stream"),
        ("reset", Fault::ResetBeforeHeaders, "upstream unreachable"),
        (
            "reset mid-stream",
            Fault::ResetMidStream,
            "upstream unreachable",
        ),
        (
            "cut",
            Fault::CloseBeforeCompleted,
            "stream closed before response.completed",
        ),
        ("oversized", Fault::Raw(huge), "larger than"),
        (
            "not utf-8",
            Fault::Raw(b"data: {\"type\":\"response.created\"}\n\ndata: \xff\xfe\n\n".to_vec()),
            "not UTF-8",
        ),
    ] {
        st_.inject(fault, 1);
        let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
        assert_eq!(st, 502, "{what}: {out}");
        let msg = parse(&out)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(want), "{what}: {msg}");
    }

    // response.failed and in-stream errors before any content, unary: the upstream's reason.
    st_.inject(Fault::Failed, 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 500, "{out}");
    assert!(
        out.contains("The model failed to produce an answer."),
        "{out}"
    );
    st_.inject(Fault::ErrorFirst(Fault::flat_error()), 1);
    let (st, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(st, 500, "{out}");
    assert!(
        out.contains("An error occurred while processing your request."),
        "{out}"
    );

    // Mid-stream errors after content: the client gets the text, then an error event in its
    // protocol, then the protocol's end.
    st_.inject(Fault::ErrorMidStream(Fault::nested_error()), 1);
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(openai_text(&ev), "Hello");
    assert!(
        ev.iter()
            .any(|e| e.1.pointer("/error/message").and_then(Value::as_str)
                == Some("The model crashed mid-answer.")),
        "{out}"
    );
    assert_error_ends(&ev, &out);
    st_.inject(Fault::ErrorMidStream(Fault::flat_error()), 1);
    let (st, out) = post(
        &s,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "input": "Hi"}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("error"), "{out}");
    st_.inject(Fault::CloseBeforeCompleted, 1);
    let (st, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(claude_text(&ev), DEFAULT_TEXT);
    let err = ev
        .iter()
        .find(|e| e.0 == "error")
        .unwrap_or_else(|| panic!("an error event: {out}"));
    assert!(
        err.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("before response.completed"),
        "{out}"
    );
    assert_error_ends(&ev, &out);
    st_.inject(Fault::Failed, 1);
    let (st, out) = post(
        &s,
        "/v1beta/models/gpt-5.4:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", KEY)],
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains("The model failed to produce an answer."),
        "{out}"
    );

    // Still healthy: errors were counted, below MAX_ERROR_COUNT.
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(st_.pending_faults(), 0);
    assert_eq!(counter(&st_.counters.bad_request), 0);
}

#[test]
fn usage_limits_rate_limits_and_failures_change_pool_health() {
    let s = setup(
        json!({"MAX_ERROR_COUNT": 3}),
        &[("a", 5 * HOUR), ("b", 5 * HOUR)],
        |_, _| {},
    );
    let st_ = &s.mock.state;
    let account_of = |i: usize| {
        st_.responses_requests()[i]
            .account
            .clone()
            .expect("account")
    };

    // 429 usage limit: the account is out until the reset; the request switches.
    st_.inject(Fault::usage_limit(7200), 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let limited = account_of(0);
    let other = account_of(1);
    assert_ne!(limited, other);
    for _ in 0..3 {
        let (st, _) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
        assert_eq!(st, 200);
    }
    assert!(
        st_.responses_requests()[2..]
            .iter()
            .all(|r| r.account.as_deref() == Some(other.as_str())),
        "the limited account rests"
    );

    // 5xx and 403 on the only usable account: counted, retried, served.
    st_.inject(Fault::server(502), 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 200, "{out}");
    st_.inject(Fault::forbidden(), 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 200, "{out}");

    // 429 rate limit on the last account: it cools down for the hint; the client hears 429.
    st_.inject(Fault::rate_limited(4), 1);
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 429, "{out}");
    let before = s.mock.responses_calls();
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 429, "still cooling down: {out}");
    assert_eq!(
        s.mock.responses_calls(),
        before,
        "no upstream call during the cooldown"
    );
    std::thread::sleep(Duration::from_millis(4500));
    let (st, out) = post(&s, "/v1/chat/completions", &[], &chat("Hi"));
    assert_eq!(st, 200, "after the cooldown: {out}");

    // insufficient_quota at the start of a stream: the account is taken out; nobody is left.
    st_.inject(Fault::ErrorFirst(Fault::insufficient_quota()), 1);
    let (st, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-5.4", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 429, "{out}");
    assert!(out.contains("You exceeded your current quota."), "{out}");

    let mut s = s;
    assert!(s.gw.stop().success());
    let l = s.account_state(&limited);
    assert_eq!(l["isHealthy"], false, "{l}");
    let recovery = parse_time_exact(l["scheduledRecoveryTime"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("a recovery time: {l}"));
    assert!(
        (recovery - now_ms() - 7200 * 1000).abs() < 120_000,
        "recovers at the usage reset: {l}"
    );
    let o = s.account_state(&other);
    assert_eq!(o["isHealthy"], false, "insufficient_quota: {o}");
    assert!(
        o["lastErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("quota"),
        "{o}"
    );
}

#[test]
fn credentials_without_a_usable_access_token() {
    // "empty": no access token yet (refreshed before the first call); "only": an imported
    // access-token-only credential (used until refused, never refreshed).
    let file = |dir: &Path, name: &str| {
        dir.join("codex")
            .join(format!("{name}_codex-{name}@example.com_oauth_creds.json"))
    };
    let s = setup(
        json!({}),
        &[("empty", 5 * HOUR), ("only", 5 * HOUR)],
        |_, dir| {
            let mut empty = parse(&std::fs::read_to_string(file(dir, "empty")).expect("read"));
            empty["access_token"] = json!("");
            std::fs::write(file(dir, "empty"), empty.to_string()).expect("write");
            let mut only = parse(&std::fs::read_to_string(file(dir, "only")).expect("read"));
            only["refresh_token"] = json!("");
            only["access_token_only"] = json!(true);
            std::fs::write(file(dir, "only"), only.to_string()).expect("write");
        },
    );
    let gw = &s.gw;
    for _ in 0..4 {
        let (st, out) = post_to(gw.addr, "/v1/chat/completions", &[], &chat("Hi"));
        assert_eq!(st, 200, "{out}\n{}", gw.logs());
    }
    let st_ = &s.mock.state;
    assert_eq!(
        s.mock.token_calls(),
        1,
        "only the account with a refresh token was refreshed"
    );
    assert_eq!(st_.token_requests()[0].body["refresh_token"], "rt_empty_0");
    assert_eq!(
        counter(&st_.counters.auth_rejected),
        0,
        "no call went out without a token"
    );
    let served: std::collections::BTreeSet<String> = st_
        .responses_requests()
        .iter()
        .filter_map(|r| r.account.clone())
        .collect();
    assert_eq!(served.len(), 2, "both accounts served: {served:?}");

    // The access-only token expires upstream: refused, and it cannot be refreshed.
    st_.advance(Duration::from_secs(2 * 3600));
    let empty_now = st_.account("empty").expect("account");
    assert!(
        empty_now.access_expires_ms < st_.now_ms(),
        "both tokens are dead upstream now"
    );
    let before = s.mock.token_calls();
    for _ in 0..3 {
        let (st, out) = post_to(gw.addr, "/v1/chat/completions", &[], &chat("Hi"));
        assert_eq!(st, 200, "{out}\n{}", gw.logs());
    }
    assert_eq!(
        s.mock.token_calls(),
        before + 1,
        "one refresh, for the refreshable account"
    );
    let mut s = s;
    assert!(s.gw.stop().success());
    let only_state = s.account_state("only");
    assert_eq!(only_state["isHealthy"], false, "{only_state}");
    assert!(
        only_state["lastErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("access_token_only"),
        "{only_state}"
    );
    let written = parse(&std::fs::read_to_string(s.token_file("empty")).expect("file"));
    assert_newest(&written, &s.creds[0].1, &s.mock, "empty");
}

#[test]
fn the_plugin_in_process_usage_refresh_retries_and_the_mock_token_endpoint() {
    use abi_stable::std_types::RString;
    use aiclient_sdk::provider::{Operation, ProviderRequest, RefreshRequest};
    let a = artifacts();
    let mock = codex::start();
    let cred = credential(&mock, "u", now_ms() + HOUR);
    mock.state.set_usage_percent(55.5, 100.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lib = aiclient::plugins::loader::load_provider(a.lib("aiclient_provider_codex"))
        .expect("load the codex plugin");
    let p = rt
        .block_on((lib.module.create())(RString::from("{}")))
        .into_result()
        .expect("create");
    let d = parse(p.describe().as_str());
    assert_eq!(
        (d["protocol"].clone(), d["refreshAheadMs"].clone()),
        (json!("openaiResponses"), json!(1_200_000))
    );
    assert_eq!(
        p.token_expiry(TYPE.into(), cred.to_string().into()),
        parse_time_exact(cred["expired"].as_str().expect("expired")).expect("iso")
    );

    // Usage: the URL is derived from CODEX_BASE_URL.
    let payload = json!({"account": {"CODEX_BASE_URL": mock.base_url()}, "token": cred});
    let out = rt
        .block_on(p.extension("usage".into(), payload.to_string().into()))
        .into_result()
        .expect("usage");
    let u = parse(out.as_str());
    assert_eq!(u["rate_limit"]["primary_window"]["used_percent"], 55.5);
    assert_eq!(u["rate_limit"]["limit_reached"], true);
    let r = mock
        .state
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/wham/usage"))
        .expect("usage call");
    assert_eq!(r.header("chatgpt-account-id"), Some("acct-u"));
    assert_eq!(r.header("accept"), Some("*/*"));

    // Models.
    let req = ProviderRequest {
        operation: Operation::LIST_MODELS,
        provider_type: TYPE.into(),
        model: "".into(),
        stream: false,
        body: "{}".into(),
        account_uuid: "u".into(),
        account: "{}".into(),
        token: abi_stable::std_types::ROption::RNone,
        request_id: "t".into(),
        timeout_ms: 0,
        options: "{}".into(),
    };
    let reply = rt.block_on(p.call(req)).into_result().expect("models");
    let ids: Vec<String> = parse(reply.body.as_str())["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        ids.contains(&"gpt-5.3-codex".to_string()) && ids.contains(&"gpt-image-2-fast".to_string()),
        "{ids:?}"
    );

    // Refresh: a transient 503 is retried; the answer keeps the shape.
    mock.state.inject_token(Fault::server(503), 1);
    let refresh = |token: &Value| RefreshRequest {
        provider_type: TYPE.into(),
        account_uuid: "u".into(),
        account: json!({"CODEX_TOKEN_URL": mock.token_url()})
            .to_string()
            .into(),
        token: token.to_string().into(),
        options: "{}".into(),
    };
    let new = rt
        .block_on(p.refresh_token(refresh(&cred)))
        .into_result()
        .expect("refresh");
    assert_eq!(mock.token_calls(), 2, "503, then success");
    assert_newest(&parse(new.as_str()), &cred, &mock, "u");
    // The old refresh token was rotated out: reusing it is final (no retry).
    let err = rt
        .block_on(p.refresh_token(refresh(&cred)))
        .into_result()
        .expect_err("reused");
    assert!(err.message.contains("refresh_token_reused"), "{err:?}");
    assert_eq!(mock.token_calls(), 3);
    let mut only = cred.clone();
    only["access_token_only"] = json!(true);
    assert!(
        rt.block_on(p.refresh_token(refresh(&only)))
            .into_result()
            .is_err()
    );
    assert_eq!(
        mock.token_calls(),
        3,
        "an access-only credential is never sent"
    );

    // The mock's token endpoint: JSON bodies (the official CLI), codes, wrong clients.
    let current = mock.state.account("u").expect("account");
    let (st, out) = http(mock.addr, "POST", "/oauth/token", &[("content-type", "application/json")],
        &json!({"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": current.refresh_token, "scope": "openid profile email"}).to_string());
    assert_eq!(st, 200, "{out}");
    let t = parse(&out);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(
        jwt_claims(t["id_token"].as_str().expect("id")).expect("jwt")["https://api.openai.com/auth"]
            ["chatgpt_account_id"],
        "acct-u"
    );
    let code = mock.state.issue_code("u");
    let form = format!(
        "grant_type=authorization_code&client_id={CLIENT_ID}&code={code}&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback&code_verifier=v"
    );
    let (st, out) = http(
        mock.addr,
        "POST",
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        &form,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(counter(&mock.state.counters.token_code), 1);
    let (st, out) = http(
        mock.addr,
        "POST",
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        &form,
    );
    assert_eq!(st, 400, "a code works once: {out}");
    let (st, out) = http(
        mock.addr,
        "POST",
        "/oauth/token",
        &[("content-type", "application/json")],
        &json!({"grant_type": "refresh_token", "client_id": "someone-else", "refresh_token": "x"})
            .to_string(),
    );
    assert_eq!(st, 401, "{out}");
}
