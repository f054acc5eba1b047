//! The Kiro provider plugin end to end: the real `aiclient` binary with the real
//! `aiclient-provider-kiro` plugin (loaded alone: `--provider kiro`) against the faithful Kiro
//! mock (`aiclient_tests::mocks::kiro`). Covered: OpenAI, Claude and Gemini clients, unary and
//! streaming, tool-call round trips, images, the exact Kiro request (headers, model mapping,
//! conversation shape), event streams cut at every byte, token refresh before expiry and on
//! 401/403 for social and IdC accounts (with `{{region}}` URLs), single-flight refresh under
//! 50 concurrent requests on one gateway and on two gateways sharing one Redis, the token
//! written back in its original camelCase shape, and upstream errors turned into client
//! errors and account health.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use aiclient_sdk::account::{format_time, now_ms, parse_time_exact, split_account};
use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::gateway::Gateway;
use aiclient_tests::gateway::http;
use aiclient_tests::mocks::kiro::{self, Counters, DEFAULT_TEXT, Fault, KiroMock, Split, Turn};
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Map, Value, json};

const KEY: &str = "kiro-client-key";
const TYPE: &str = "claude-kiro-oauth";
const HOUR: i64 = 3_600_000;
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// The binary, the Kiro plugin and both backends the tests run on, built once per test
/// process (one package set, so the nested builds never flip feature sets and rebuild).
fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        artifacts::build(&[
            "aiclient",
            "aiclient-provider-kiro",
            "aiclient-backend-file",
            "aiclient-backend-redis",
        ])
    })
}
/// `aiclient serve --port 0 <args>` loading only this test's plugins, in `cwd`.
fn start_gateway(a: &Artifacts, cwd: &Path, args: &[&str]) -> Gateway {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--provider", "kiro"]);
    Gateway::start_with(a, cwd, &full, &[])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Social,
    Idc,
}

fn arn(name: &str) -> String {
    format!("arn:aws:codewhisperer:us-east-1:111122223333:profile/{name}")
}

/// Registers the account with the mock and returns its credential file, as the Kiro IDE and
/// the original project write it (expiring at `expires_at`, real time).
fn credential(mock: &KiroMock, name: &str, kind: Kind, expires_at: i64) -> Value {
    match kind {
        Kind::Social => {
            let t = mock.state.add_social(name, &arn(name));
            json!({"accessToken": t.access_token, "refreshToken": t.refresh_token, "profileArn": arn(name),
                   "expiresAt": format_time(expires_at), "authMethod": "social", "socialProvider": "Google", "region": "us-east-1"})
        }
        Kind::Idc => {
            let t = mock
                .state
                .add_idc(name, &format!("cid-{name}"), &format!("secret-{name}"));
            json!({"accessToken": t.access_token, "refreshToken": t.refresh_token, "expiresAt": format_time(expires_at),
                   "authMethod": "IdC", "clientId": format!("cid-{name}"), "clientSecret": format!("secret-{name}"),
                   "region": "us-east-1", "idcRegion": "eu-west-1", "startUrl": "https://d-123.awsapps.com/start"})
        }
    }
}

fn pool_entry(mock: &KiroMock, name: &str) -> Value {
    json!({
        "customName": name,
        "KIRO_OAUTH_CREDS_FILE_PATH": format!("./configs/kiro/{name}/{name}.json"),
        "uuid": format!("kiro-{name}"),
        "checkModelName": "claude-haiku-4-5",
        "KIRO_BASE_URL": mock.generate_url(),
        "KIRO_REFRESH_URL": mock.refresh_url(),
        "KIRO_REFRESH_IDC_URL": mock.idc_url(),
        "isHealthy": true,
        "isDisabled": false,
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    configs: PathBuf,
    mock: KiroMock,
    gw: Gateway,
    /// The credential files as written, by account name.
    creds: Vec<(String, Value)>,
}

impl Setup {
    fn token_file(&self, name: &str) -> PathBuf {
        self.configs
            .join("kiro")
            .join(name)
            .join(format!("{name}.json"))
    }
    fn pools(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.configs.join("provider_pools.json")).expect("read pools"),
        )
        .expect("pools json")
    }
}

/// A gateway on the file backend with the given Kiro accounts (name, kind, expiry offset from
/// now) and extra `config.json` keys. `prepare` runs on the mock and the config dir before the
/// gateway starts.
fn setup(
    extra_config: Value,
    accounts: &[(&str, Kind, i64)],
    prepare: impl FnOnce(&KiroMock, &Path),
) -> Setup {
    let mock = kiro::start();
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    let mut creds = Vec::new();
    let mut pool = Vec::new();
    for (name, kind, expires_in) in accounts {
        let c = credential(&mock, name, *kind, now_ms() + expires_in);
        let file = configs.join("kiro").join(name).join(format!("{name}.json"));
        std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
        std::fs::write(&file, serde_json::to_string_pretty(&c).expect("json"))
            .expect("write token");
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

fn claude_body(text: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": stream, "messages": [{"role": "user", "content": text}]})
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

fn claude_stream_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .filter_map(|(_, d)| d.pointer("/delta/text").and_then(Value::as_str))
        .collect()
}

fn openai_stream_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, d)| {
            d.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

fn current(r: &kiro::Recorded) -> &Value {
    &r.body["conversationState"]["currentMessage"]["userInputMessage"]
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    Counters::get(c)
}

/// `YYYY-MM-01T00:00:00.000Z` of the month after now (UTC).
fn first_of_next_month() -> String {
    let now = format_time(now_ms());
    let (y, m): (i32, u32) = (
        now[0..4].parse().expect("year"),
        now[5..7].parse().expect("month"),
    );
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    format!("{y:04}-{m:02}-01T00:00:00.000Z")
}

#[test]
fn mock_frames_match_the_reference_vectors() {
    let f = kiro::event_frame("assistantResponseEvent", &json!({"content": "Hi"}));
    assert_eq!(f.len(), 124);
    assert_eq!(&f[4..8], &92u32.to_be_bytes());
    assert_eq!(&f[8..12], &0x3bdd_cf78u32.to_be_bytes());
    assert_eq!(&f[120..], &0xb02b_abdcu32.to_be_bytes());
    let g = kiro::frame(&[], br#"{"foo": "bar"}"#);
    assert_eq!(g.len(), 30);
    assert_eq!(&g[8..12], &0xbaf2_f68au32.to_be_bytes());
    assert_eq!(&g[26..], &0xae72_58e4u32.to_be_bytes());
}

#[test]
fn claude_client_unary_and_streams_speak_kiro_exactly() {
    let s = setup(json!({}), &[("a", Kind::Social, 5 * HOUR)], |_, _| {});
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]});
    let (st, out) = post(
        &s,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &body,
    );
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let m = parse(&out);
    assert_eq!(m["type"], "message");
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": DEFAULT_TEXT})
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    let output = m["usage"]["output_tokens"].as_u64().expect("output tokens");
    assert!(output > 0);
    assert_eq!(
        m["usage"]["input_tokens"].as_u64(),
        Some(3000 - output),
        "1.5 % of a 200k window minus the output"
    );

    let r = s.mock.state.last_generate().expect("a recorded call");
    assert_eq!(r.header("authorization"), Some("Bearer aoaa-0"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("amz-sdk-request"), Some("attempt=1; max=3"));
    assert_eq!(r.header("x-amzn-codewhisperer-optout"), Some("true"));
    assert_eq!(r.header("x-amzn-kiro-agent-mode"), Some("vibe"));
    assert!(
        r.header("amz-sdk-invocation-id")
            .is_some_and(|v| v.len() == 36),
        "{:?}",
        r.headers
    );
    let xua = r.header("x-amz-user-agent").expect("x-amz-user-agent");
    let machine = xua
        .strip_prefix("aws-sdk-js/1.0.34 KiroIDE-0.11.63-")
        .expect("Kiro IDE agent");
    assert!(
        machine.len() == 64
            && machine
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{xua}"
    );
    let ua = r.header("user-agent").expect("user-agent");
    assert!(
        ua.contains("api/codewhispererstreaming#1.0.34")
            && ua.ends_with(&format!("KiroIDE-0.11.63-{machine}")),
        "{ua}"
    );
    let cs = &r.body["conversationState"];
    assert_eq!(
        (cs["agentTaskType"].as_str(), cs["chatTriggerType"].as_str()),
        (Some("vibe"), Some("MANUAL"))
    );
    assert_eq!(current(&r)["content"], "Be brief.\n\nHi");
    assert_eq!(current(&r)["modelId"], "claude-sonnet-4.5");
    assert_eq!(current(&r)["origin"], "AI_EDITOR");
    assert_eq!(
        r.body["profileArn"],
        arn("a"),
        "social accounts send their profile ARN"
    );

    // Streaming, one byte per TCP write: cuts inside every header, CRC and UTF-8 character.
    s.mock.state.set_split(Split::Fixed(1));
    let (st, out) = post(&s, "/v1/messages", &[], &claude_body("Hi #unknown", true));
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
    assert_eq!(
        claude_stream_text(&ev),
        DEFAULT_TEXT,
        "an unknown event type is ignored"
    );
    let delta = ev
        .iter()
        .find(|e| e.0 == "message_delta")
        .expect("message_delta");
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");

    // A scripted turn with multi-byte characters, still one byte per write.
    s.mock
        .state
        .push_turn(Turn::text(&["Grüße ", "aus ", "日本 ✓"]));
    let (st, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(st, 200, "{out}");
    assert_eq!(claude_stream_text(&sse(&out)), "Grüße aus 日本 ✓");

    // Random write sizes and thinking.
    s.mock.state.set_split(Split::Random { seed: 7, max: 13 });
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": true, "thinking": {"type": "enabled", "budget_tokens": 2048},
                      "messages": [{"role": "user", "content": "Hi #thinking #nousage"}]});
    let (st, out) = post(&s, "/v1/messages", &[], &body);
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    let first_block = ev
        .iter()
        .find(|e| e.0 == "content_block_start")
        .expect("a block");
    assert_eq!(first_block.1["content_block"]["type"], "thinking", "{out}");
    let thinking: String = ev
        .iter()
        .filter_map(|e| e.1.pointer("/delta/thinking").and_then(Value::as_str))
        .collect();
    assert_eq!(thinking, "I should greet.");
    assert_eq!(claude_stream_text(&ev), DEFAULT_TEXT);
    let r = s.mock.state.last_generate().expect("recorded");
    assert!(
        current(&r)["content"].as_str().is_some_and(|c| c.starts_with("<thinking_mode>enabled</thinking_mode><max_thinking_length>2048</max_thinking_length>")),
        "{}",
        current(&r)
    );
    let usage = &ev.iter().find(|e| e.0 == "message_delta").expect("delta").1["usage"];
    assert!(
        usage["input_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0 && n < 1000),
        "no usage event: the local estimate, {usage}"
    );
    assert_eq!(counter(&s.mock.state.counters.malformed), 0);
}

#[test]
fn openai_claude_and_gemini_clients_with_tool_round_trips() {
    // No default provider: Kiro is chosen by the Model-Provider header or the path prefix.
    let s = setup(
        json!({"MODEL_PROVIDER": "openai-custom"}),
        &[("a", Kind::Social, 5 * HOUR)],
        |_, _| {},
    );
    let hdr = [("model-provider", TYPE)];
    let hi = json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]});
    let (st, out) = post(&s, "/v1/chat/completions", &hdr, &hi);
    assert_eq!(st, 200, "{out}\n{}", s.gw.logs());
    let c = parse(&out);
    assert_eq!(c["choices"][0]["message"]["content"], DEFAULT_TEXT);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        current(&s.mock.state.last_generate().expect("call"))["modelId"],
        "claude-haiku-4.5"
    );
    let (st, _) = post(&s, "/v1/chat/completions", &[], &hi);
    assert_ne!(
        st, 200,
        "without the header the default provider (not served) is used"
    );

    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1/chat/completions",
        &[],
        &json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    assert_eq!(
        ev.last().map(|e| e.1.clone()),
        Some(json!("[DONE]")),
        "{out}"
    );
    assert_eq!(openai_stream_text(&ev), DEFAULT_TEXT);

    // OpenAI tool round trip, unary.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"role": "user", "content": "Weather in Paris? #tool"});
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1/chat/completions",
        &[],
        &json!({"model": "claude-sonnet-4-5", "tools": tools, "messages": [ask]}),
    );
    assert_eq!(st, 200, "{out}");
    let c = parse(&out);
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls", "{out}");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_mock_1");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        parse(call["function"]["arguments"].as_str().expect("arguments")),
        json!({"city": "Paris"})
    );
    let r = s.mock.state.last_generate().expect("call");
    let spec = &current(&r)["userInputMessageContext"]["tools"][0]["toolSpecification"];
    assert_eq!(spec["name"], "get_weather");
    assert_eq!(
        spec["inputSchema"]["json"]["properties"]["city"]["type"],
        "string"
    );

    let answer = json!({"model": "claude-sonnet-4-5", "tools": tools, "messages": [
        ask,
        {"role": "assistant", "content": null, "tool_calls": [{"id": "tooluse_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "tooluse_mock_1", "content": "18C and sunny"},
    ]});
    let (st, out) = post(&s, "/claude-kiro-oauth/v1/chat/completions", &[], &answer);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        parse(&out)["choices"][0]["message"]["content"],
        "The tool said: 18C and sunny"
    );
    let r = s.mock.state.last_generate().expect("call");
    let h = r.body["conversationState"]["history"]
        .as_array()
        .expect("history");
    assert_eq!(
        h[1]["assistantResponseMessage"]["toolUses"][0],
        json!({"input": {"city": "Paris"}, "name": "get_weather", "toolUseId": "tooluse_mock_1"})
    );
    assert_eq!(
        current(&r)["userInputMessageContext"]["toolResults"][0],
        json!({"content": [{"text": "18C and sunny"}], "status": "success", "toolUseId": "tooluse_mock_1"})
    );
    assert_eq!(current(&r)["content"], "Tool results provided.");

    // OpenAI tool call, streamed.
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1/chat/completions",
        &[],
        &json!({"model": "claude-sonnet-4-5", "stream": true, "tools": tools, "messages": [{"role": "user", "content": "Weather? #tool"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    let calls: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e.1.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(
        calls.first().and_then(|c| c.pointer("/function/name")),
        Some(&json!("get_weather")),
        "{out}"
    );
    let args: String = calls
        .iter()
        .filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str))
        .collect();
    assert_eq!(parse(&args), json!({"city": "Paris"}));
    assert!(
        ev.iter()
            .any(|e| e.1.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))),
        "{out}"
    );

    // Claude client: two tool calls streamed, then the results.
    let ctools = json!([{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1/messages",
        &[],
        &json!({"model": "claude-opus-4-6", "max_tokens": 500, "stream": true, "tools": ctools,
                                                                             "messages": [{"role": "user", "content": "Two cities #twotools"}]}),
    );
    assert_eq!(st, 200, "{out}");
    let ev = sse(&out);
    let starts: Vec<&Value> = ev
        .iter()
        .filter(|e| e.0 == "content_block_start")
        .map(|e| &e.1["content_block"])
        .collect();
    assert_eq!(
        starts
            .iter()
            .map(|b| b["type"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["text", "tool_use", "tool_use"],
        "{out}"
    );
    assert_eq!(
        (starts[1]["id"].as_str(), starts[2]["id"].as_str()),
        (Some("tooluse_w1"), Some("tooluse_w2"))
    );
    let input_of = |index: u64| -> Value {
        parse(
            &ev.iter()
                .filter(|e| e.1["index"] == index)
                .filter_map(|e| e.1.pointer("/delta/partial_json").and_then(Value::as_str))
                .collect::<String>(),
        )
    };
    assert_eq!(
        (input_of(1), input_of(2)),
        (json!({"city": "Paris"}), json!({"city": "Oslo"}))
    );
    assert_eq!(
        ev.iter().find(|e| e.0 == "message_delta").expect("delta").1["delta"]["stop_reason"],
        "tool_use"
    );
    assert_eq!(
        current(&s.mock.state.last_generate().expect("call"))["modelId"],
        "claude-opus-4.6"
    );
    let back = json!({"model": "claude-opus-4-6", "max_tokens": 500, "tools": ctools, "messages": [
        {"role": "user", "content": "Two cities #twotools"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "tooluse_w1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "tooluse_w2", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tooluse_w1", "content": "18C"},
                                     {"type": "tool_result", "tool_use_id": "tooluse_w2", "content": [{"type": "text", "text": "-3C"}]}]},
    ]});
    let (st, out) = post(&s, "/claude-kiro-oauth/v1/messages", &[], &back);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        parse(&out)["content"][0]["text"],
        "The tool said: 18C | -3C"
    );

    // Gemini client: unary, SSE, and a function call round trip.
    let g = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1beta/models/claude-sonnet-4-5:generateContent",
        &[("x-goog-api-key", KEY)],
        &g,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        parse(&out)["candidates"][0]["content"]["parts"][0]["text"],
        DEFAULT_TEXT
    );
    assert_eq!(
        current(&s.mock.state.last_generate().expect("call"))["modelId"],
        "claude-sonnet-4.5"
    );
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1beta/models/claude-sonnet-4-5:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", KEY)],
        &g,
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
    let gtools = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let ask = json!({"role": "user", "parts": [{"text": "Weather? #tool"}]});
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1beta/models/claude-sonnet-4-5:generateContent",
        &[("x-goog-api-key", KEY)],
        &json!({"contents": [ask], "tools": gtools}),
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
    let back = json!({"tools": gtools, "contents": [
        ask,
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}}]},
    ]});
    let (st, out) = post(
        &s,
        "/claude-kiro-oauth/v1beta/models/claude-sonnet-4-5:generateContent",
        &[("x-goog-api-key", KEY)],
        &back,
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
    assert_eq!(
        counter(&s.mock.state.counters.malformed),
        0,
        "every converted request was well-formed for Kiro"
    );
}

#[test]
fn images_reach_kiro_as_inline_bytes() {
    let s = setup(json!({}), &[("a", Kind::Social, 5 * HOUR)], |_, _| {});
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"},
    ]}]});
    let (st, out) = post(&s, "/v1/messages", &[], &body);
    assert_eq!(st, 200, "{out}");
    let r = s.mock.state.last_generate().expect("call");
    assert_eq!(
        current(&r)["images"],
        json!([{"format": "png", "source": {"bytes": PNG}}])
    );
    assert_eq!(current(&r)["content"], "What is this?");

    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
    ]}]});
    let (st, out) = post(&s, "/v1/chat/completions", &[], &body);
    assert_eq!(st, 200, "{out}");
    let r = s.mock.state.last_generate().expect("call");
    assert_eq!(
        current(&r)["images"],
        json!([{"format": "jpeg", "source": {"bytes": "/9j/4AAQSkZJRg=="}}])
    );
}

/// Runs `n` requests at once (released together) and returns their results.
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

#[test]
fn fifty_concurrent_requests_on_an_expired_token_refresh_once_and_write_back_the_file() {
    let s = setup(json!({}), &[("s", Kind::Social, -60_000)], |m, _| {
        m.state.set_refresh_delay(Duration::from_millis(300));
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
    let refreshes = counter(&c.refresh_social) + counter(&c.refresh_idc);
    println!("token-endpoint calls for 50 concurrent requests on one gateway: {refreshes}");
    assert_eq!(
        refreshes, 1,
        "exactly one refresh for 50 concurrent requests"
    );
    assert_eq!(counter(&c.refresh_rejected), 0);
    assert_eq!(
        counter(&c.auth_rejected),
        0,
        "no request went out with the expired token"
    );
    assert_eq!(s.mock.generate_calls(), 50);
    let refresh = s
        .mock
        .state
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/refreshToken"))
        .expect("the refresh call");
    assert_eq!(
        refresh.path, "/us-east-1/refreshToken",
        "{{region}} filled with the credential's region"
    );
    assert_eq!(refresh.body, json!({"refreshToken": "aors-0"}));
    assert!(
        s.mock
            .state
            .generate_requests()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer aoas-1"))
    );

    let mut s = s;
    let st = s.gw.stop();
    assert!(st.success());
    let original = &s.creds[0].1;
    let written: Value = parse(&std::fs::read_to_string(s.token_file("s")).expect("token file"));
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&written),
        keys(original),
        "the original camelCase shape, in order: {written}"
    );
    let now_acct = s.mock.state.account("s").expect("account");
    assert_eq!(written["accessToken"], now_acct.access_token.as_str());
    assert_eq!(
        written["refreshToken"],
        now_acct.refresh_token.as_str(),
        "the rotated refresh token was stored"
    );
    let exp = parse_time_exact(written["expiresAt"].as_str().expect("expiresAt"))
        .expect("ISO with milliseconds and Z");
    assert!(
        (exp - now_ms() - HOUR).abs() < 10 * 60_000,
        "expires in about an hour: {written}"
    );
    for k in ["profileArn", "authMethod", "socialProvider", "region"] {
        assert_eq!(written[k], original[k], "{k} kept");
    }
    let pools = s.pools();
    assert_eq!(
        pools[TYPE][0]["KIRO_OAUTH_CREDS_FILE_PATH"],
        "./configs/kiro/s/s.json"
    );
    assert_eq!(pools[TYPE][0]["isHealthy"], true);
}

#[test]
fn refused_tokens_are_refreshed_for_idc_accounts_on_401_and_403() {
    let s = setup(json!({}), &[("i", Kind::Idc, 10 * HOUR)], |m, _| {
        m.state.set_auth_failure_status(401)
    });
    let st = &s.mock.state;
    // The file says the token is good for hours; upstream it expired (mock clock).
    st.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 200, "{out}\n{}", s.gw.logs());
    assert_eq!(
        (
            counter(&st.counters.auth_rejected),
            counter(&st.counters.refresh_idc)
        ),
        (1, 1),
        "401 → refresh → retry"
    );
    let refresh = st
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/token"))
        .expect("refresh");
    assert_eq!(
        refresh.path, "/eu-west-1/token",
        "the IdC URL uses idcRegion"
    );
    assert_eq!(
        refresh.body,
        json!({"refreshToken": "aori-0", "clientId": "cid-i", "clientSecret": "secret-i", "grantType": "refresh_token"})
    );
    assert!(
        st.last_generate()
            .expect("call")
            .body
            .get("profileArn")
            .is_none(),
        "IdC accounts send no profileArn"
    );

    st.set_auth_failure_status(403);
    st.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        (
            counter(&st.counters.auth_rejected),
            counter(&st.counters.refresh_idc)
        ),
        (2, 2),
        "403 invalid bearer → refresh"
    );

    // A streamed request refused before any content is refreshed and retried too.
    st.advance(Duration::from_secs(2 * 3600));
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(code, 200, "{out}");
    assert_eq!(claude_stream_text(&sse(&out)), DEFAULT_TEXT);
    assert_eq!(
        (
            counter(&st.counters.auth_rejected),
            counter(&st.counters.refresh_idc)
        ),
        (3, 3)
    );
    assert_eq!(
        counter(&st.counters.refresh_rejected),
        0,
        "each refresh used the newest (rotated) refresh token"
    );

    let mut s = s;
    let status = s.gw.stop();
    assert!(status.success());
    let written: Value = parse(&std::fs::read_to_string(s.token_file("i")).expect("token file"));
    let original = &s.creds[0].1;
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&written), keys(original), "{written}");
    assert_eq!(written["accessToken"], "aoai-3");
    assert_eq!(written["refreshToken"], "aori-3");
    for k in [
        "authMethod",
        "clientId",
        "clientSecret",
        "region",
        "idcRegion",
        "startUrl",
    ] {
        assert_eq!(written[k], original[k], "{k} kept");
    }
}

#[test]
fn two_gateways_sharing_redis_refresh_once() {
    let a = artifacts();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mock = kiro::start();
    let token = credential(&mock, "r", Kind::Idc, now_ms() - 60_000);
    mock.state.set_refresh_delay(Duration::from_millis(500));
    mock.state.advance(Duration::from_secs(2 * 3600));
    let entry = pool_entry(&mock, "r");
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
        "/v1/messages",
        &claude_body("Hi", false),
    );
    for (st, out) in &results {
        assert_eq!(*st, 200, "{out}\n{}\n{}", g1.logs(), g2.logs());
    }
    let refreshes = mock.refresh_calls();
    println!(
        "token-endpoint calls for 2×50 concurrent requests on two gateways sharing Redis: {refreshes}"
    );
    assert_eq!(refreshes, 1, "one refresh across both instances");
    assert_eq!(counter(&mock.state.counters.refresh_rejected), 0);
    assert_eq!(counter(&mock.state.counters.auth_rejected), 0);
    assert_eq!(mock.generate_calls(), 100);

    let stored = rt
        .block_on(storage.get_token(TYPE, &uuid))
        .expect("get token")
        .expect("a token");
    let stored: Value = parse(&stored);
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&stored),
        keys(&token),
        "the original camelCase shape: {stored}"
    );
    let acct = mock.state.account("r").expect("account");
    assert_eq!(
        (
            stored["accessToken"].as_str(),
            stored["refreshToken"].as_str()
        ),
        (
            Some(acct.access_token.as_str()),
            Some(acct.refresh_token.as_str())
        ),
        "the newest token"
    );
    assert_eq!(acct.generation, 1);
    assert!(
        parse_time_exact(stored["expiresAt"].as_str().expect("expiresAt"))
            .is_some_and(|t| t > now_ms() + HOUR / 2)
    );
    for k in [
        "authMethod",
        "clientId",
        "clientSecret",
        "region",
        "idcRegion",
        "startUrl",
    ] {
        assert_eq!(stored[k], token[k], "{k} kept");
    }
}

#[test]
fn upstream_errors_become_client_errors_and_switch_accounts() {
    let config = json!({"REQUEST_MAX_RETRIES": 0, "CREDENTIAL_SWITCH_MAX_RETRIES": 1, "RATE_LIMIT_COOLDOWN_MS": 300});
    let s = setup(
        config,
        &[("a", Kind::Social, 5 * HOUR), ("b", Kind::Social, 5 * HOUR)],
        |_, _| {},
    );
    let st = &s.mock.state;
    let calls = || s.mock.generate_calls();
    let settle = || std::thread::sleep(Duration::from_millis(1100));

    // 400: the client's fault, returned at once, nobody penalised.
    st.inject(Fault::too_long(), 1);
    let before = calls();
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 400, "{out}");
    let e = parse(&out);
    assert_eq!(e["type"], "error");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Input is too long.")),
        "{out}"
    );
    assert_eq!(calls() - before, 1, "a 400 is not retried");

    // 429 (with and without Retry-After), 500, 529, a reset connection, an exception before
    // any content: the next account serves.
    for fault in [
        Fault::throttled(Some(1)),
        Fault::throttled(None),
        Fault::server(500),
        Fault::server(529),
        Fault::ResetBeforeHeaders,
        Fault::MidStreamException,
    ] {
        let before = calls();
        st.inject(fault.clone(), 1);
        let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
        assert_eq!(code, 200, "{fault:?}: {out}\n{}", s.gw.logs());
        assert_eq!(parse(&out)["content"][0]["text"], DEFAULT_TEXT, "{fault:?}");
        assert_eq!(
            calls() - before,
            2,
            "{fault:?}: one refusal, one success on the other account"
        );
        let recent = st.generate_requests();
        let n = recent.len();
        assert_ne!(
            recent[n - 1].account,
            recent[n - 2].account,
            "{fault:?}: switched accounts"
        );
        settle();
    }
    let retry = st
        .generate_requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(retry, 2);

    // Every account rate limited: the client gets the 429.
    st.inject(Fault::throttled(None), 2);
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 429, "{out}");
    assert_eq!(parse(&out)["type"], "error", "{out}");
    settle();

    // An exception first in a stream: nothing was sent yet, so the other account serves it.
    st.inject(Fault::ExceptionFirst("ThrottlingException".into()), 1);
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(code, 200, "{out}");
    assert_eq!(claude_stream_text(&sse(&out)), DEFAULT_TEXT);
    settle();

    // A trailing "ghost" exception after a complete answer is ignored.
    st.inject(Fault::GhostException, 1);
    let before = calls();
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(
        (code, parse(&out)["content"][0]["text"].clone()),
        (200, json!(DEFAULT_TEXT)),
        "{out}"
    );
    let (code, out) = {
        st.inject(Fault::GhostException, 1);
        post(&s, "/v1/messages", &[], &claude_body("Hi", true))
    };
    assert_eq!(code, 200);
    let ev = sse(&out);
    assert!(!ev.iter().any(|e| e.0 == "error"), "{out}");
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("message_stop"));
    assert_eq!(calls() - before, 2);

    // A corrupt CRC or a frame cut in half, on every try: a clean 502 for the client.
    for (fault, words) in [
        (Fault::CorruptCrc(1), "CRC"),
        (Fault::CutMidFrame, "inside a frame"),
    ] {
        st.inject(fault.clone(), 2);
        let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
        assert_eq!(code, 502, "{fault:?}: {out}");
        let e = parse(&out);
        assert_eq!(e["type"], "error");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(words)),
            "{fault:?}: {out}"
        );
        assert_eq!(
            st.pending_faults(),
            0,
            "{fault:?}: both accounts were tried"
        );
        let (code, out) = post(
            &s,
            "/v1/chat/completions",
            &[],
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}),
        );
        assert_eq!(code, 200, "served again afterwards: {out}");
    }

    // Mid-stream: the text so far, then an error event, then the protocol's end.
    st.inject(Fault::CorruptCrc(2), 1);
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", true));
    assert_eq!(code, 200);
    let ev = sse(&out);
    assert!(claude_stream_text(&ev).starts_with("Hello"), "{out}");
    let err = ev
        .iter()
        .find(|e| e.0 == "error")
        .unwrap_or_else(|| panic!("an error event: {out}"));
    assert!(err.1.to_string().contains("CRC"), "{out}");
    st.inject(Fault::MidStreamException, 1);
    let (code, out) = post(
        &s,
        "/v1/chat/completions",
        &[],
        &json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(code, 200);
    let ev = sse(&out);
    assert_eq!(openai_stream_text(&ev), "Hello", "{out}");
    assert!(out.contains("ThrottlingException"), "{out}");
    assert_eq!(
        ev.last().map(|e| e.1.clone()),
        Some(json!("[DONE]")),
        "{out}"
    );

    assert_eq!(
        s.mock.refresh_calls(),
        0,
        "no refusal here was about the token"
    );
    let mut s = s;
    let status = s.gw.stop();
    assert!(status.success());
    let pools = s.pools();
    for a in pools[TYPE].as_array().expect("accounts") {
        assert_eq!(
            a["isHealthy"], true,
            "transient failures never disable an account: {a}"
        );
        assert!(
            a.get("scheduledRecoveryTime").is_none_or(Value::is_null),
            "{a}"
        );
    }
}

#[test]
fn quota_and_suspension_mark_accounts_unhealthy() {
    let s = setup(
        json!({}),
        &[
            ("x", Kind::Social, 5 * HOUR),
            ("y", Kind::Social, 5 * HOUR),
            ("z", Kind::Idc, 5 * HOUR),
        ],
        |_, _| {},
    );
    let st = &s.mock.state;
    st.inject(Fault::suspended(), 1);
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 200, "{out}\n{}", s.gw.logs());
    let suspended = st.generate_requests()[0]
        .account
        .clone()
        .expect("who was suspended");
    st.inject(Fault::quota(), 1);
    let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
    assert_eq!(code, 200, "{out}");
    let reqs = st.generate_requests();
    let quota = reqs
        .iter()
        .rev()
        .find(|r| r.status == 402)
        .and_then(|r| r.account.clone())
        .expect("who ran out");
    assert_ne!(
        quota, suspended,
        "an unhealthy account is not selected again"
    );
    for _ in 0..3 {
        assert_eq!(
            post(&s, "/v1/messages", &[], &claude_body("Hi", false)).0,
            200
        );
    }
    let healthy: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|s| s.to_string())
        .filter(|n| *n != quota && *n != suspended)
        .collect();
    let served: Vec<Option<String>> = st
        .generate_requests()
        .iter()
        .skip(4)
        .map(|r| r.account.clone())
        .collect();
    assert!(
        served
            .iter()
            .all(|a| a.as_deref() == Some(healthy[0].as_str())),
        "only the healthy account serves: {served:?}"
    );
    assert_eq!(
        s.mock.refresh_calls(),
        0,
        "a suspension is not a token problem"
    );

    let healthy_served = st
        .generate_requests()
        .iter()
        .filter(|r| r.status == 200 && r.account.as_deref() == Some(healthy[0].as_str()))
        .count();
    assert!(healthy_served >= 4, "{healthy_served}");

    let mut s = s;
    let status = s.gw.stop();
    assert!(status.success());
    let pools = s.pools();
    let acct = |n: &str| {
        pools[TYPE]
            .as_array()
            .expect("list")
            .iter()
            .find(|a| a["customName"] == n)
            .cloned()
            .expect("account")
    };
    let sus = acct(&suspended);
    assert_eq!(sus["isHealthy"], false, "{sus}");
    assert!(
        sus["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("suspended")),
        "{sus}"
    );
    assert!(
        sus.get("scheduledRecoveryTime").is_none_or(Value::is_null),
        "a suspension has no recovery time: {sus}"
    );
    let q = acct(&quota);
    assert_eq!(q["isHealthy"], false, "{q}");
    assert_eq!(q["scheduledRecoveryTime"], first_of_next_month(), "{q}");
    let h = acct(&healthy[0]);
    assert_eq!(
        (h["isHealthy"].clone(), h["usageCount"].clone()),
        (json!(true), json!(healthy_served)),
        "every success it served was counted: {h}"
    );
}

#[test]
fn missing_access_tokens_are_fetched_first_and_revoked_refresh_tokens_disable_the_account() {
    let s = setup(
        json!({}),
        &[("n", Kind::Social, 5 * HOUR), ("v", Kind::Idc, -60_000)],
        |_, configs| {
            // "n": only a refresh token (the import flows can write that); "v": a revoked refresh token.
            let n = configs.join("kiro/n/n.json");
            let mut c: Value =
                serde_json::from_str(&std::fs::read_to_string(&n).expect("read")).expect("json");
            let o = c.as_object_mut().expect("object");
            o.shift_remove("accessToken");
            o.shift_remove("expiresAt");
            std::fs::write(&n, c.to_string()).expect("write");
            let v = configs.join("kiro/v/v.json");
            let mut c: Value =
                serde_json::from_str(&std::fs::read_to_string(&v).expect("read")).expect("json");
            c["refreshToken"] = json!("aorrevoked");
            std::fs::write(&v, c.to_string()).expect("write");
        },
    );
    for _ in 0..2 {
        let (code, out) = post(&s, "/v1/messages", &[], &claude_body("Hi", false));
        assert_eq!(code, 200, "{out}\n{}", s.gw.logs());
    }
    let c = &s.mock.state.counters;
    assert_eq!(
        counter(&c.refresh_social),
        1,
        "the missing access token was fetched once"
    );
    assert_eq!(
        (counter(&c.refresh_idc), counter(&c.refresh_rejected)),
        (1, 1),
        "the revoked token was tried once"
    );
    assert_eq!(counter(&c.auth_rejected), 0);
    assert!(
        s.mock
            .state
            .generate_requests()
            .iter()
            .all(|r| r.account.as_deref() == Some("n"))
    );

    let mut s = s;
    assert!(s.gw.stop().success());
    let written: Value = parse(&std::fs::read_to_string(s.token_file("n")).expect("token file"));
    let keys: Vec<&str> = written
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "refreshToken",
            "profileArn",
            "authMethod",
            "socialProvider",
            "region",
            "accessToken",
            "expiresAt"
        ],
        "{written}"
    );
    assert_eq!(written["accessToken"], "aoan-1");
    let pools = s.pools();
    let v = pools[TYPE]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["customName"] == "v")
        .cloned()
        .expect("v");
    assert_eq!(v["isHealthy"], false, "{v}");
    assert!(
        v["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_grant")),
        "{v}"
    );
    let untouched: Value = parse(&std::fs::read_to_string(s.token_file("v")).expect("token file"));
    assert_eq!(
        untouched["refreshToken"], "aorrevoked",
        "a failed refresh never rewrites the credential"
    );
}
