//! The `gemini` provider plugin end to end: the real gateway binary (file or Redis backend)
//! with only the gemini plugin loaded, against the faithful Code Assist + Google OAuth mock
//! (`aiclient_tests::mocks::gemini`). Every client protocol (OpenAI, Claude, Gemini), unary and
//! streaming, tool calls, images, project discovery, token refresh (expiry, refresh-ahead,
//! 401, rotation, inline base64 credentials, exactly one token-endpoint call for 50 concurrent
//! requests — also across two gateways sharing Redis), write-back in the original shape,
//! upstream errors and what they do to the pool, broken streams, `anti-*` continuation and
//! the Antigravity surface.
//!
//! The default provider is deliberately `openai-custom` (not loaded): every request picks
//! `gemini-cli-oauth` by `Model-Provider` header or path prefix.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::gateway::Gateway;
use aiclient_tests::gateway::http;
use aiclient_tests::mocks::gemini::{self, Fault, GeminiMock, Injection, Options, ep};
use aiclient_tests::wire::{
    json_of, merged, openai_stream_text, read_json, sse_data, sse_json, weather_tool,
};
use serde_json::{Value, json};

const KEY: &str = "gemini-client-key";
const T: &str = "gemini-cli-oauth";
const MODEL: &str = "gemini-2.5-flash";
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        artifacts::build(&[
            "aiclient",
            "aiclient-provider-gemini",
            "aiclient-backend-file",
            "aiclient-backend-redis",
        ])
    })
}
/// `aiclient serve --port 0 <args>` loading only this test's plugins, in `cwd`.
fn start_gateway(cwd: &Path, args: &[&str]) -> Gateway {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--provider", "gemini"]);
    Gateway::start_with(artifacts(), cwd, &full, &[])
}

fn base_config() -> Value {
    json!({
        "REQUIRED_API_KEY": KEY,
        "MODEL_PROVIDER": "openai-custom",
        "SCHEDULED_HEALTH_CHECK": {"enabled": false},
        "REQUEST_BASE_DELAY": 10,
        "MAX_ERROR_COUNT": 3,
    })
}

/// An account of `mock`, its credential file at `./configs/gemini/<uuid>.json`.
fn account(mock: &GeminiMock, uuid: &str, patch: Value) -> Value {
    let a = json!({
        "customName": format!("acct {uuid}"),
        "uuid": uuid,
        "GEMINI_OAUTH_CREDS_FILE_PATH": format!("./configs/gemini/{uuid}.json"),
        "PROJECT_ID": gemini::PROJECT,
        "GEMINI_BASE_URL": mock.base_url(),
        "GEMINI_TOKEN_URL": mock.token_url(),
        "GEMINI_OAUTH_CLIENT_ID": "mock-client-id",
        "GEMINI_OAUTH_CLIENT_SECRET": "mock-client-secret",
        "checkModelName": MODEL,
        "isHealthy": true,
        "isDisabled": false,
        "usageCount": 0,
        "errorCount": 0,
    });
    merged(a, &patch)
}

struct Setup {
    _dir: tempfile::TempDir,
    configs: PathBuf,
    mock: GeminiMock,
    gw: Option<Gateway>,
}

impl Setup {
    /// A file-backend gateway with `accounts` (each with its credential file, if any).
    fn start(
        mock: GeminiMock,
        accounts: Vec<(Value, Option<Value>)>,
        config_patch: Value,
    ) -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let configs = dir.path().join("configs");
        std::fs::create_dir_all(configs.join("gemini")).expect("mkdir");
        let config = merged(base_config(), &config_patch);
        std::fs::write(
            configs.join("config.json"),
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("write config");
        let mut list = Vec::new();
        for (acct, cred) in accounts {
            if let Some(c) = cred {
                let path = acct["GEMINI_OAUTH_CREDS_FILE_PATH"]
                    .as_str()
                    .expect("a credential path");
                std::fs::write(
                    dir.path().join(path),
                    serde_json::to_string_pretty(&c).expect("json"),
                )
                .expect("write credential");
            }
            list.push(acct);
        }
        let pools = json!({ T: list });
        std::fs::write(
            configs.join("provider_pools.json"),
            serde_json::to_string_pretty(&pools).expect("json"),
        )
        .expect("write pools");
        let gw = start_gateway(
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
            gw: Some(gw),
        }
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("gateway running")
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
        let auth = format!("Bearer {KEY}");
        let mut h = vec![
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        h.extend_from_slice(headers);
        http(self.gw().addr, "POST", path, &h, &body.to_string())
    }

    /// OpenAI chat through the `Model-Provider` header.
    fn chat(&self, body: &Value) -> (u16, String) {
        self.post("/v1/chat/completions", &[("model-provider", T)], body)
    }

    fn logs(&self) -> String {
        self.gw
            .as_ref()
            .map(|g| g.stderr.try_iter().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Stops the gateway (flushing its state) and returns `provider_pools.json`.
    fn stop(&mut self) -> Value {
        let gw = self.gw.take().expect("gateway running");
        assert!(gw.terminate().success(), "clean shutdown");
        read_json(&self.configs.join("provider_pools.json"))
    }

    fn token_file(&self, uuid: &str) -> Value {
        read_json(&self.configs.join("gemini").join(format!("{uuid}.json")))
    }
}

fn gemini_text(resp: &Value) -> String {
    resp["candidates"][0]["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// A fresh mock with one account whose token is valid for an hour.
fn one_account(opts: Options, patch: Value) -> Setup {
    one_account_with(opts, patch, json!({}))
}

/// The same with `config_patch` applied to `config.json`.
fn one_account_with(opts: Options, patch: Value, config_patch: Value) -> Setup {
    let mock = gemini::start_in_thread(opts);
    let cred = mock.credential("at-1", "rt-1", HOUR);
    let acct = account(&mock, "g1", patch);
    Setup::start(mock, vec![(acct, Some(cred))], config_patch)
}

#[test]
fn openai_client_unary_stream_and_tool_round_trip() {
    let s = one_account(Options::default(), json!({}));
    // Unary, provider chosen by the Model-Provider header.
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(v["choices"][0]["message"]["content"], gemini::TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    // What reached Code Assist: the envelope, the headers, the pre-processed request.
    let rec = s.mock.last_request(ep::GENERATE).expect("a unary call");
    let env = rec.body.as_object().expect("envelope");
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["model", "project", "request"],
        "exactly the three envelope keys"
    );
    assert_eq!(rec.body["model"], MODEL);
    assert_eq!(rec.body["project"], gemini::PROJECT);
    assert!(
        rec.body["request"].get("model").is_none(),
        "top-level model removed from the request"
    );
    assert_eq!(rec.body["request"]["contents"][0]["role"], "user");
    assert_eq!(rec.header("authorization"), Some("Bearer at-1"));
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert!(
        rec.header("user-agent")
            .is_some_and(|u| u.starts_with(&format!("GeminiCLI/0.31.0/{MODEL} ("))),
        "{:?}",
        rec.header("user-agent")
    );
    assert_eq!(
        rec.header("x-goog-api-client"),
        Some("google-genai-sdk/1.41.0 gl-node/v22.19.0")
    );

    // Streaming, provider chosen by the path prefix.
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (st, out) = s.post("/gemini-cli-oauth/v1/chat/completions", &[], &body);
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), gemini::TEXT);
    assert_eq!(sse_data(&out).last().map(String::as_str), Some("[DONE]"));
    let finishes: Vec<Value> = sse_json(&out)
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![json!("stop")], "{out}");
    let rec = s.mock.last_request(ep::STREAM).expect("a stream call");
    assert_eq!(rec.query, "alt=sse");

    // Tool call round trip: functionCall → tool_calls; tool result → functionResponse.
    let mut ask = user("What is the weather in Paris? [tool]");
    ask["tools"] = weather_tool();
    let (st, out) = s.chat(&ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{out}");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        json_of(call["function"]["arguments"].as_str().expect("arguments")),
        json!({"city": "Paris"})
    );
    let sent = s.mock.last_request(ep::GENERATE).expect("call");
    let decl = &sent.body["request"]["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather", "{}", sent.body);
    let call_id = call["id"].as_str().expect("a call id").to_string();
    let follow = json!({"model": MODEL, "tools": weather_tool(), "messages": [
        {"role": "user", "content": "What is the weather in Paris? [tool]"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
    ]});
    let (st, out) = s.chat(&follow);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["content"],
        "The tool said: sunny, 21 C"
    );
    let sent = s.mock.last_request(ep::GENERATE).expect("call");
    let contents = sent.body["request"]["contents"]
        .as_array()
        .expect("contents");
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    let fr = &contents.last().expect("last")["parts"][0]["functionResponse"];
    assert_eq!(fr["name"], "get_weather", "{}", sent.body);
    assert_eq!(fr["response"]["result"], "sunny, 21 C");

    // Streaming tool call.
    let mut ask_s = ask.clone();
    ask_s["stream"] = json!(true);
    let (st, out) = s.chat(&ask_s);
    assert_eq!(st, 200, "{out}");
    let chunks = sse_json(&out);
    let name = chunks.iter().find_map(|c| {
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(name.as_deref(), Some("get_weather"), "{out}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
        "{out}"
    );
    assert_eq!(s.mock.calls(ep::TOKEN), 0, "a fresh token is not refreshed");
}

#[test]
fn claude_client_unary_stream_thinking_and_tool_use() {
    let s = one_account(Options::default(), json!({}));
    let msg = |text: &str| json!({"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]});
    let (st, out) = s.post(
        "/gemini-cli-oauth/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &msg("hi"),
    );
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let m = json_of(&out);
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], gemini::TEXT);
    assert_eq!(m["stop_reason"], "end_turn");

    // Thought parts become thinking blocks.
    let (st, out) = s.post(
        "/gemini-cli-oauth/v1/messages",
        &[],
        &msg("Think first [think]"),
    );
    assert_eq!(st, 200, "{out}");
    let m = json_of(&out);
    let kinds: Vec<&str> = m["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(kinds, ["thinking", "text"], "{out}");
    assert_eq!(m["content"][0]["thinking"], "Pondering the question.");

    // Streaming.
    let mut body = msg("hi");
    body["stream"] = json!(true);
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &body);
    assert_eq!(st, 200, "{out}");
    let events: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{out}");
    assert_eq!(events.last(), Some(&"message_stop"), "{out}");
    let text: String = sse_json(&out)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, gemini::TEXT);

    // tool_use round trip.
    let tools = json!([{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let ask = json!({"model": MODEL, "max_tokens": 256, "tools": tools, "messages": [{"role": "user", "content": "Weather? [tool-id]"}]});
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &ask);
    assert_eq!(st, 200, "{out}");
    let m = json_of(&out);
    assert_eq!(m["stop_reason"], "tool_use", "{out}");
    let tu = m["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(tu["name"], "get_weather");
    assert_eq!(tu["input"], json!({"city": "Paris"}));
    let follow = json!({"model": MODEL, "max_tokens": 256, "tools": tools, "messages": [
        {"role": "user", "content": "Weather? [tool-id]"},
        {"role": "assistant", "content": [tu]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu["id"], "content": "rainy"}]},
    ]});
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &follow);
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["content"][0]["text"], "The tool said: rainy");
    let sent = s.mock.last_request(ep::GENERATE).expect("call");
    let last = sent.body["request"]["contents"]
        .as_array()
        .expect("contents")
        .last()
        .cloned()
        .expect("a turn");
    assert_eq!(last["role"], "user");
    assert_eq!(
        last["parts"][0]["functionResponse"]["name"], "get_weather",
        "{}",
        sent.body
    );
}

#[test]
fn gemini_client_unary_sse_array_and_function_round_trip() {
    let s = one_account(Options::default(), json!({}));
    let path = |m: &str| format!("/gemini-cli-oauth/v1beta/models/{MODEL}:{m}");
    // snake_case system instruction and a content without role, as clients send them.
    let body = json!({
        "system_instruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"temperature": 0.5, "thinkingConfig": {"thinkingBudget": 1024}},
    });
    let (st, out) = s.post(&path("generateContent"), &[], &body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let r = json_of(&out);
    assert_eq!(gemini_text(&r), gemini::TEXT);
    assert!(
        r.get("response").is_none() && r.get("traceId").is_none(),
        "the Code Assist envelope is unwrapped: {out}"
    );
    assert_eq!(r["usageMetadata"]["totalTokenCount"], 8);
    let sent = s.mock.last_request(ep::GENERATE).expect("call").body;
    let req = &sent["request"];
    assert_eq!(
        req["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}], "role": "user"}),
        "{sent}"
    );
    assert!(req.get("system_instruction").is_none());
    assert_eq!(req["contents"][0]["role"], "user");
    assert_eq!(
        req["generationConfig"]["thinkingConfig"]["includeThoughts"], true,
        "thinking requested → thoughts included"
    );

    // SSE.
    let (st, out) = s.post(
        &format!("{}?alt=sse", path("streamGenerateContent")),
        &[],
        &body,
    );
    assert_eq!(st, 200, "{out}");
    let chunks = sse_json(&out);
    assert!(chunks.len() >= 3, "streamed in several chunks: {out}");
    assert!(
        chunks
            .iter()
            .all(|c| c.get("response").is_none() && c.get("candidates").is_some()),
        "{out}"
    );
    let text: String = chunks.iter().map(gemini_text).collect();
    assert_eq!(text, gemini::TEXT);
    assert_eq!(
        chunks.last().expect("last")["candidates"][0]["finishReason"],
        "STOP"
    );

    // Without alt=sse a Gemini stream is one JSON array (upstream still SSE).
    let (st, out) = s.post(&path("streamGenerateContent"), &[], &body);
    assert_eq!(st, 200, "{out}");
    let arr = json_of(&out);
    let text: String = arr
        .as_array()
        .expect("an array")
        .iter()
        .map(gemini_text)
        .collect();
    assert_eq!(text, gemini::TEXT);
    assert_eq!(
        s.mock.last_request(ep::STREAM).expect("stream").query,
        "alt=sse"
    );

    // functionCall / functionResponse.
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let ask = json!({"contents": [{"role": "user", "parts": [{"text": "weather [tool]"}]}], "tools": tools});
    let (st, out) = s.post(&path("generateContent"), &[], &ask);
    assert_eq!(st, 200, "{out}");
    let r = json_of(&out);
    let part = r["candidates"][0]["content"]["parts"][0].clone();
    assert_eq!(part["functionCall"]["name"], "get_weather", "{out}");
    assert_eq!(
        part["thoughtSignature"], "c2lnLW1vY2stdG9vbA==",
        "signatures pass through to Gemini clients"
    );
    let follow = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather [tool]"}]},
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "foggy"}}}]},
    ], "tools": tools});
    let (st, out) = s.post(&path("generateContent"), &[], &follow);
    assert_eq!(st, 200, "{out}");
    assert_eq!(gemini_text(&json_of(&out)), "The tool said: foggy");
    let sent = s.mock.last_request(ep::GENERATE).expect("call").body;
    assert_eq!(
        sent["request"]["contents"][1]["parts"][0]["thoughtSignature"], "c2lnLW1vY2stdG9vbA==",
        "{sent}"
    );

    // Safety outcomes are answers, not errors.
    let (st, out) = s.post(
        &path("generateContent"),
        &[],
        &json!({"contents": [{"role": "user", "parts": [{"text": "[block]"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["promptFeedback"]["blockReason"], "SAFETY");
    let (st, out) = s.post(
        &path("generateContent"),
        &[],
        &json!({"contents": [{"role": "user", "parts": [{"text": "[safety]"}]}]}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["candidates"][0]["finishReason"], "SAFETY");

    // The local model list.
    let (st, out) = http(
        s.gw().addr,
        "GET",
        "/gemini-cli-oauth/v1beta/models",
        &[("x-goog-api-key", KEY)],
        "",
    );
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("gemini-2.5-pro"), "{out}");
}

#[test]
fn images_arrive_as_inline_data() {
    let s = one_account(Options::default(), json!({}));
    // A 1x1 PNG (68 bytes).
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
    ]}]});
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let sent = s.mock.last_request(ep::GENERATE).expect("call").body;
    let parts = sent["request"]["contents"][0]["parts"]
        .as_array()
        .expect("parts")
        .clone();
    let inline = parts
        .iter()
        .find_map(|p| p.get("inlineData"))
        .expect("an inlineData part");
    assert_eq!(inline["mimeType"], "image/png");
    assert_eq!(inline["data"], png, "the bytes arrive unchanged");
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["content"],
        "Saw image/png, 68 bytes."
    );

    // Claude image block.
    let claude = json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "and this?"},
    ]}]});
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &claude);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["content"][0]["text"],
        "Saw image/png, 68 bytes."
    );

    // Gemini client inlineData passes through.
    let g = json!({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": png}}, {"text": "?"}]}]});
    let (st, out) = s.post(
        &format!("/gemini-cli-oauth/v1beta/models/{MODEL}:generateContent"),
        &[],
        &g,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(gemini_text(&json_of(&out)), "Saw image/jpeg, 68 bytes.");
}

#[test]
fn project_is_discovered_once_then_cached_and_onboarding_is_polled() {
    // loadCodeAssist names the project.
    let s = one_account(Options::default(), json!({"PROJECT_ID": ""}));
    for _ in 0..3 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "{out}\n{}", s.logs());
    }
    assert_eq!(
        s.mock.calls(ep::LOAD),
        1,
        "discovered once per account, then cached"
    );
    assert_eq!(s.mock.calls(ep::ONBOARD), 0);
    assert_eq!(
        s.mock.last_request(ep::GENERATE).expect("call").body["project"],
        gemini::PROJECT
    );
    let load = s.mock.last_request(ep::LOAD).expect("load");
    assert_eq!(load.body["metadata"]["pluginType"], "GEMINI");
    assert_eq!(load.body["cloudaicompanionProject"], "");
    assert_eq!(
        load.header("x-goog-api-client"),
        Some("google-genai-sdk/1.41.0 gl-node/v22.19.0")
    );
    assert!(
        !load
            .header("user-agent")
            .unwrap_or("")
            .starts_with("GeminiCLI/"),
        "no GeminiCLI UA on discovery"
    );
    drop(s);

    // No project yet: onboardUser is polled until done.
    let opts = Options {
        load_returns_project: false,
        onboard_pending_polls: 2,
        project: "onboarded-proj".into(),
        ..Options::default()
    };
    let s = one_account(
        opts,
        json!({"PROJECT_ID": null, "GEMINI_ONBOARD_POLL_MS": 50}),
    );
    let started = Instant::now();
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "two poll intervals waited"
    );
    assert_eq!(s.mock.calls(ep::LOAD), 1);
    assert_eq!(s.mock.calls(ep::ONBOARD), 3, "done:false twice, then done");
    assert_eq!(
        s.mock.last_request(ep::ONBOARD).expect("onboard").body["tierId"],
        "free-tier"
    );
    assert_eq!(
        s.mock.last_request(ep::GENERATE).expect("call").body["project"],
        "onboarded-proj"
    );
    let (st, _) = s.chat(&user("again"));
    assert_eq!(st, 200);
    assert_eq!(s.mock.calls(ep::ONBOARD), 3, "cached");

    // A refused token during discovery is refreshed like any other 401.
    let s2 = one_account(Options::default(), json!({"PROJECT_ID": ""}));
    s2.mock
        .inject(Injection::next(1, Fault::status(401)).on(ep::LOAD));
    let (st, out) = s2.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s2.logs());
    assert_eq!(s2.mock.calls(ep::TOKEN), 1);
    assert_eq!(s2.mock.calls(ep::LOAD), 2);
}

/// The credential file of a test account, with a field the plugin does not know.
fn credential_with_extra(mock: &GeminiMock, access: &str, refresh: &str, valid_for: i64) -> Value {
    let mut c = mock.credential(access, refresh, valid_for);
    c["x_operator_note"] = json!({"keep": [1, 2]});
    c
}

fn assert_refreshed_shape(before: &Value, after: &Value, refresh_token: &str) {
    let keys = |v: &Value| {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(after),
        keys(before),
        "same fields in the same order: {after}"
    );
    assert_ne!(after["access_token"], before["access_token"]);
    assert!(
        after["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("mock-at-refreshed-")),
        "{after}"
    );
    assert_eq!(after["refresh_token"], refresh_token);
    assert_eq!(after["token_type"], "Bearer");
    assert_eq!(after["scope"], gemini::SCOPE);
    assert_eq!(after["id_token"], before["id_token"]);
    assert_eq!(after["x_operator_note"], before["x_operator_note"]);
    let exp = after["expiry_date"].as_i64().expect("expiry_date in ms");
    let now = aiclient_sdk::account::now_ms();
    assert!(
        (exp - (now + 3_599_000)).abs() < 120_000,
        "expiry_date = now + expires_in: {exp} vs {now}"
    );
    assert!(after.get("expires_in").is_none());
}

#[test]
fn expired_and_nearly_expired_tokens_are_refreshed_and_written_back() {
    let mock = gemini::start_in_thread(Options::default());
    let expired = credential_with_extra(&mock, "at-old", "rt-keep", -MIN);
    let soon = credential_with_extra(&mock, "at-soon", "rt-soon", 10 * MIN);
    let a = account(&mock, "expired", json!({}));
    let b = account(&mock, "soon", json!({}));
    let mut s = Setup::start(
        mock.clone(),
        vec![(a, Some(expired.clone())), (b, Some(soon.clone()))],
        json!({}),
    );
    // Round robin over both: each account's token is refreshed once, before its first call.
    for i in 0..6 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        mock.calls(ep::TOKEN),
        2,
        "one refresh per account (expired, and within the 20 min window)"
    );
    let form = &mock.requests(ep::TOKEN)[0].form;
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        form.get("client_id").map(String::as_str),
        Some("mock-client-id")
    );
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some("mock-client-secret")
    );
    let used: Vec<String> = mock
        .requests(ep::GENERATE)
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(
        used.iter()
            .all(|a| a.starts_with("Bearer mock-at-refreshed-")),
        "only refreshed tokens were used: {used:?}"
    );
    let pools = s.stop();
    assert_refreshed_shape(&expired, &s.token_file("expired"), "rt-keep");
    assert_refreshed_shape(&soon, &s.token_file("soon"), "rt-soon");
    let raw = std::fs::read_to_string(s.configs.join("gemini/expired.json")).expect("read");
    assert!(
        raw.contains("\n  \"access_token\""),
        "pretty JSON like the original writes: {raw}"
    );
    let mut total = 0;
    for u in ["expired", "soon"] {
        let a = pool_account(&pools, u);
        assert_eq!(a["isHealthy"], true, "{a}");
        assert!(a["usageCount"].as_i64().is_some_and(|n| n >= 1), "{a}");
        total += a["usageCount"].as_i64().unwrap_or(0);
        assert_eq!(
            a["GEMINI_OAUTH_CREDS_FILE_PATH"],
            format!("./configs/gemini/{u}.json"),
            "the path is kept"
        );
    }
    assert_eq!(total, 6);
}

#[test]
fn a_refused_token_is_refreshed_and_the_request_retried() {
    let mut s = one_account(Options::default(), json!({}));
    let (st, _) = s.chat(&user("warm up"));
    assert_eq!(st, 200);
    // The upstream stops accepting the token although its expiry_date says otherwise.
    s.mock.expire_access_token("at-1");
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(s.mock.calls(ep::TOKEN), 1, "refreshed once");
    assert_eq!(
        s.mock.calls(ep::GENERATE),
        3,
        "warm-up, the refused call, the retry"
    );
    let auths: Vec<String> = s
        .mock
        .requests(ep::GENERATE)
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(auths[1], "Bearer at-1");
    assert!(
        auths[2].starts_with("Bearer mock-at-refreshed-"),
        "{auths:?}"
    );
    // Streaming: a 401 before any data is refreshed and retried too.
    s.mock
        .inject(Injection::next(1, Fault::status(401)).on(ep::STREAM));
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), gemini::TEXT);
    assert_eq!(
        s.mock.calls(ep::TOKEN),
        2,
        "a 401 forces a refresh even of a fresh-looking token"
    );
    // A 400 about the credential (not the request) is a refresh too.
    let auth400 = json!({"error": {"code": 400, "message": "The access token expired", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED"}]}});
    s.mock.inject(Injection::next(
        1,
        Fault::Status {
            status: 400,
            body: auth400,
            retry_after: None,
        },
    ));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(s.mock.calls(ep::TOKEN), 3);
    let pools = s.stop();
    let a = pool_account(&pools, "g1");
    assert_eq!(a["isHealthy"], true, "{a}");
    assert_eq!(
        a["errorCount"], 0,
        "a refused-then-refreshed token is no account error: {a}"
    );
    let tok = s.token_file("g1");
    assert_eq!(tok["refresh_token"], "rt-1");
    assert!(
        s.mock
            .access_token_valid(tok["access_token"].as_str().expect("token")),
        "the stored token is the newest: {tok}"
    );
}

#[test]
fn a_revoked_refresh_token_marks_the_account_unhealthy_and_another_serves() {
    let mock = gemini::start_in_thread(Options::default());
    let bad = mock.credential("at-bad", "rt-revoked", -MIN);
    mock.revoke_refresh_token("rt-revoked");
    let good = mock.credential("at-good", "rt-good", HOUR);
    let mut s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "bad", json!({})), Some(bad.clone())),
            (account(&mock, "good", json!({})), Some(good)),
        ],
        json!({}),
    );
    for i in 0..4 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "the failed refresh is not retried over and over"
    );
    assert_eq!(
        mock.requests(ep::TOKEN)[0]
            .form
            .get("refresh_token")
            .map(String::as_str),
        Some("rt-revoked")
    );
    let pools = s.stop();
    let b = pool_account(&pools, "bad");
    assert_eq!(b["isHealthy"], false, "{b}");
    assert!(
        b["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_grant")),
        "{b}"
    );
    assert_eq!(pool_account(&pools, "good")["usageCount"], 4);
    assert_eq!(
        s.token_file("bad"),
        bad,
        "the operator's credential is never rewritten by a failed refresh"
    );
}

#[test]
fn token_endpoint_failures_are_retried_or_fail_the_account() {
    // Two 503s from the token endpoint: retried (as google-auth-library does), then refreshed.
    let mock = gemini::start_in_thread(Options::default());
    let cred = mock.credential("at-old", "rt-1", -MIN);
    let s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "g1", json!({})), Some(cred))],
        json!({}),
    );
    mock.inject(Injection::next(2, Fault::status(503)).on(ep::TOKEN));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(mock.calls(ep::TOKEN), 3, "two retries, then success");
    let (st, out) = http(mock.addr, "GET", "/__mock/calls", &[], "");
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["calls"]["token"],
        3,
        "the inspection endpoint agrees: {out}"
    );
    drop(s);

    // A wrong OAuth client (401 invalid_client) is final: the account is marked unhealthy.
    let mock = gemini::start_in_thread(Options::default());
    let cred = mock.credential("at-old", "rt-1", -MIN);
    let acct = account(&mock, "g1", json!({"GEMINI_OAUTH_CLIENT_SECRET": "wrong"}));
    let mut s = Setup::start(mock.clone(), vec![(acct, Some(cred))], json!({}));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 503, "{out}");
    assert!(
        out.contains("invalid_client"),
        "the reason reaches the client: {out}"
    );
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "a 401 from the token endpoint is not retried"
    );
    assert_eq!(mock.inference_calls(), 0, "no call with an expired token");
    let pools = s.stop();
    let a = pool_account(&pools, "g1");
    assert_eq!(a["isHealthy"], false, "{a}");
    assert!(
        a["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_client")),
        "{a}"
    );
}

/// `n` concurrent OpenAI requests; the statuses.
fn concurrent(
    addr: std::net::SocketAddr,
    n: usize,
    provider_path: &'static str,
) -> Vec<(u16, String)> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"model": MODEL, "stream": i % 2 == 1, "messages": [{"role": "user", "content": format!("hi {i}")}]});
                let auth = format!("Bearer {KEY}");
                http(addr, "POST", provider_path, &[("content-type", "application/json"), ("authorization", &auth)], &body.to_string())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

#[test]
fn fifty_concurrent_requests_on_an_expired_token_refresh_exactly_once() {
    let opts = Options {
        token_delay_ms: 300,
        ..Options::default()
    };
    let mock = gemini::start_in_thread(opts);
    let cred = credential_with_extra(&mock, "at-expired", "rt-1", -MIN);
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "g1", json!({})), Some(cred.clone()))],
        json!({}),
    );
    let results = concurrent(s.gw().addr, 50, "/gemini-cli-oauth/v1/chat/completions");
    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "all 50 succeed: {failed:?}\n{}",
        s.logs()
    );
    println!(
        "token-endpoint calls for 50 concurrent requests (file backend): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(mock.calls(ep::TOKEN), 1, "exactly one token-endpoint call");
    assert_eq!(
        mock.inference_calls(),
        50,
        "no request was refused upstream"
    );
    s.stop();
    assert_refreshed_shape(&cred, &s.token_file("g1"), "rt-1");
}

#[test]
fn two_gateways_sharing_redis_refresh_exactly_once() {
    use aiclient::plugins::{create_storage, loader};
    use aiclient_tests::redis_server::RedisServer;

    let redis = RedisServer::start();
    let url = redis.url(0);
    let opts = Options {
        token_delay_ms: 300,
        ..Options::default()
    };
    let mock = gemini::start_in_thread(opts);
    let cred = credential_with_extra(&mock, "at-expired", "rt-shared", -MIN);
    let acct = account(
        &mock,
        "shared",
        json!({"GEMINI_OAUTH_CREDS_FILE_PATH": null}),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lib = loader::load_storage(artifacts().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    let storage = rt.block_on(async {
        let s = create_storage(&lib, &json!({"url": url, "instance_id": "seed"}))
            .await
            .expect("open redis storage");
        s.set_config(&base_config().to_string())
            .await
            .expect("config");
        let obj = acct.as_object().expect("object").clone();
        s.add_account(aiclient_sdk::account::split_account(T, obj).expect("split"))
            .await
            .expect("add account");
        s.set_token(T, "shared", &cred.to_string())
            .await
            .expect("token");
        s
    });
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["--storage", "redis", "--redis-url", url.as_str()];
    let gw1 = start_gateway(dir.path(), &args);
    let gw2 = start_gateway(dir.path(), &args);
    let (a1, a2) = (gw1.addr, gw2.addr);
    let t1 =
        std::thread::spawn(move || concurrent(a1, 50, "/gemini-cli-oauth/v1/chat/completions"));
    let t2 =
        std::thread::spawn(move || concurrent(a2, 50, "/gemini-cli-oauth/v1/chat/completions"));
    let mut results = t1.join().expect("gateway 1 requests");
    results.extend(t2.join().expect("gateway 2 requests"));
    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    let _logs = |g: &Gateway| g.stderr.try_iter().collect::<Vec<_>>().join("\n");
    assert!(
        failed.is_empty(),
        "all 100 succeed: {failed:?}\n{}\n{}",
        gw1.logs(),
        gw2.logs()
    );
    println!(
        "token-endpoint calls for 2 x 50 concurrent requests (two gateways, Redis): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "exactly one token-endpoint call across both instances"
    );
    assert_eq!(mock.inference_calls(), 100);
    let stored = rt
        .block_on(storage.get_token(T, "shared"))
        .expect("read token")
        .expect("a token");
    let stored = json_of(&stored);
    assert_refreshed_shape(&cred, &stored, "rt-shared");
    let issued = mock
        .requests(ep::GENERATE)
        .iter()
        .chain(mock.requests(ep::STREAM).iter())
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect::<std::collections::HashSet<_>>();
    assert_eq!(
        issued.len(),
        1,
        "every call used the one refreshed token: {issued:?}"
    );
    assert_eq!(
        issued.into_iter().next(),
        Some(format!(
            "Bearer {}",
            stored["access_token"].as_str().expect("token")
        )),
        "the stored token is the newest"
    );
    drop((gw1, gw2));
}

#[test]
fn rotated_refresh_tokens_are_kept_when_the_endpoint_rotates() {
    let opts = Options {
        rotate_refresh_tokens: true,
        ..Options::default()
    };
    let mock = gemini::start_in_thread(opts);
    let cred = credential_with_extra(&mock, "at-x", "rt-original", -MIN);
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "g1", json!({})), Some(cred.clone()))],
        json!({}),
    );
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert!(
        !mock.refresh_token_valid("rt-original"),
        "the mock rotated it"
    );
    // The next refresh (after a 401) must use the rotated refresh token.
    let current = mock
        .requests(ep::GENERATE)
        .last()
        .and_then(|r| {
            r.header("authorization")
                .map(|a| a.trim_start_matches("Bearer ").to_string())
        })
        .expect("token");
    mock.expire_access_token(&current);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(mock.calls(ep::TOKEN), 2);
    let second = mock.requests(ep::TOKEN)[1]
        .form
        .get("refresh_token")
        .cloned()
        .unwrap_or_default();
    assert!(
        second.starts_with("mock-rt-rotated-"),
        "the rotated refresh token was stored and used: {second}"
    );
    s.stop();
    let tok = s.token_file("g1");
    assert!(
        tok["refresh_token"]
            .as_str()
            .is_some_and(|r| r.starts_with("mock-rt-rotated-") && mock.refresh_token_valid(r)),
        "{tok}"
    );
}

#[test]
fn inline_base64_credentials_are_refreshed_in_memory() {
    let mock = gemini::start_in_thread(Options::default());
    let cred = mock.credential("at-inline", "rt-inline", -MIN);
    let b64 = base64(cred.to_string().as_bytes());
    let acct = account(
        &mock,
        "inline",
        json!({"GEMINI_OAUTH_CREDS_FILE_PATH": null, "GEMINI_OAUTH_CREDS_BASE64": b64}),
    );
    let s = Setup::start(mock.clone(), vec![(acct, None)], json!({}));
    for _ in 0..3 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "{out}\n{}", s.logs());
    }
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "refreshed once, then kept in memory"
    );
    // A 401 refreshes the inline credential and retries inside the plugin.
    mock.inject(Injection::next(1, Fault::status(401)));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(mock.calls(ep::TOKEN), 2);
    assert!(
        !s.configs.join("gemini/inline.json").exists(),
        "inline credentials are never written to a file"
    );
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn upstream_errors_become_client_errors_and_pool_health() {
    let mock = gemini::start_in_thread(Options::default());
    let ca = mock.credential("at-a", "rt-a", HOUR);
    let cb = mock.credential("at-b", "rt-b", HOUR);
    let mut s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "a", json!({})), Some(ca)),
            (account(&mock, "b", json!({})), Some(cb)),
        ],
        json!({"MAX_ERROR_COUNT": 2, "REQUEST_MAX_RETRIES": 0}),
    );
    let calls_with = |tok: &str| {
        mock.requests(ep::GENERATE)
            .iter()
            .filter(|r| r.header("authorization") == Some(&format!("Bearer {tok}")))
            .count()
    };

    // 400 (the request's fault): returned at once, no other account tried, nobody penalised.
    mock.inject(Injection::next(1, Fault::status(400)));
    let before = mock.inference_calls();
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 400, "{out}");
    assert!(
        json_of(&out)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mock injected 400")),
        "{out}"
    );
    assert_eq!(
        mock.inference_calls(),
        before + 1,
        "no retry on a client error"
    );
    // Claude clients get a Claude-shaped error.
    mock.inject(Injection::next(1, Fault::status(400)));
    let (st, out) = s.post(
        "/gemini-cli-oauth/v1/messages",
        &[],
        &json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(st, 400, "{out}");
    assert_eq!(json_of(&out)["type"], "error");

    // 429 with RetryInfo on account a: a cools down, b serves, and keeps serving.
    mock.inject(Injection::next(1, Fault::rate_limited(None, Some("30s"))).for_token("at-a"));
    let a_before = calls_with("at-a");
    for i in 0..4 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        calls_with("at-a"),
        a_before + 1,
        "a is not used while it cools down"
    );

    // Both cool down (Retry-After header on b): the client gets the 429.
    mock.inject(Injection::next(1, Fault::rate_limited(Some(30), None)).for_token("at-b"));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 429, "{out}");
    assert_eq!(mock.pending_faults(), 0);
    drop(s.gw.take());

    // 403 and 5xx count against the account: two in a row make it unhealthy; the other serves.
    let mock = gemini::start_in_thread(Options::default());
    let ca = mock.credential("at-a", "rt-a", HOUR);
    let cb = mock.credential("at-b", "rt-b", HOUR);
    s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "a", json!({})), Some(ca)),
            (account(&mock, "b", json!({})), Some(cb)),
        ],
        json!({"MAX_ERROR_COUNT": 2, "REQUEST_MAX_RETRIES": 0}),
    );
    mock.inject(Injection::next(1, Fault::status(403)).for_token("at-a"));
    mock.inject(Injection::next(1, Fault::status(503)).for_token("at-a"));
    for i in 0..6 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(mock.pending_faults(), 0, "both faults hit account a");
    // A connection cut before any data counts too, and the request moves on.
    mock.inject(Injection::next(1, Fault::Reset).for_token("at-b"));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 502, "a is unhealthy and b was cut off: {out}");
    let pools = s.stop();
    let a = pool_account(&pools, "a");
    assert_eq!(a["isHealthy"], false, "{a}");
    assert!(
        a["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{a}"
    );
    let b = pool_account(&pools, "b");
    assert_eq!(b["errorCount"], 1, "{b}");
    assert_eq!(b["isHealthy"], true, "{b}");
}

#[test]
fn broken_streams_are_clean_client_errors() {
    let s = one_account_with(
        Options::default(),
        json!({}),
        json!({"REQUEST_MAX_RETRIES": 0}),
    );
    let mut stream = user("hi");
    stream["stream"] = json!(true);

    // Garbage as the first event: nothing was sent yet, so the client gets a plain 502 error.
    s.mock.inject(Injection::next(10, Fault::MalformedFirst));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 502, "{out}\n{}", s.logs());
    assert!(
        json_of(&out)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed")),
        "{out}"
    );
    assert_eq!(
        s.mock.calls(ep::STREAM),
        1,
        "REQUEST_MAX_RETRIES 0: one attempt"
    );
    s.mock.clear_faults();

    // Garbage after two chunks: the stream ends with an error event and the OpenAI terminator.
    s.mock.inject(Injection::next(1, Fault::GarbageAfter(2)));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), "Hello from ", "{out}");
    assert!(
        out.contains("upstream stream failed") && out.contains("malformed"),
        "{out}"
    );
    assert_eq!(
        sse_data(&out).last().map(String::as_str),
        Some("[DONE]"),
        "{out}"
    );

    // The connection cut after two chunks, for a Claude client.
    s.mock.inject(Injection::next(1, Fault::BreakAfter(2)));
    let mut claude = json!({"model": MODEL, "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &claude);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("event: error"), "{out}");

    // An error object inside a 200 stream before any data is that error (429 → cooldown).
    s.mock
        .inject(Injection::next(1, Fault::ErrorEvent(429)).on(ep::STREAM));
    claude["stream"] = json!(false);
    let (st, out) = s.post("/gemini-cli-oauth/v1/messages", &[], &claude);
    assert_eq!(st, 200, "unary is not affected by a stream fault: {out}");
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 429, "{out}");

    // The gateway is alive and well (the account cools down after the 429).
    let (st, out) = http(s.gw().addr, "GET", "/health", &[], "");
    assert_eq!(st, 200, "{out}");
    assert!(
        s.gw.as_ref()
            .is_some_and(|g| g.stderr.try_iter().all(|l| !l.contains("panicked"))),
        "no panic anywhere"
    );
}

#[test]
fn anti_models_continue_after_max_tokens() {
    let s = one_account(Options::default(), json!({}));
    let body = json!({"model": format!("anti-{MODEL}"), "stream": true, "messages": [{"role": "user", "content": "Write a lot [max]"}]});
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(openai_stream_text(&out), "Part one. Part two.");
    let finishes: Vec<Value> = sse_json(&out)
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(
        finishes,
        vec![json!("stop")],
        "the intermediate MAX_TOKENS is not shown: {out}"
    );
    let calls = s.mock.requests(ep::STREAM);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].body["model"], MODEL,
        "the anti- prefix is not sent upstream"
    );
    let contents = calls[1].body["request"]["contents"]
        .as_array()
        .expect("contents")
        .clone();
    assert_eq!(contents.len(), 3, "{contents:?}");
    assert_eq!(
        contents[1],
        json!({"role": "model", "parts": [{"text": "Part one."}]})
    );
    assert_eq!(contents[2]["role"], "user");
    // Without the prefix, MAX_TOKENS is the answer.
    let plain = json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "Write a lot [max]"}]});
    let (st, out) = s.chat(&plain);
    assert_eq!(st, 200, "{out}");
    assert!(
        sse_json(&out)
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length"),
        "{out}"
    );
    // Unknown models fall back to the default model.
    let (st, _) =
        s.chat(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(st, 200);
    assert_eq!(
        s.mock.last_request(ep::GENERATE).expect("call").body["model"],
        MODEL
    );
}

#[test]
fn antigravity_accounts_use_their_surface() {
    let mock = gemini::start_in_thread(Options::default());
    let cred = mock.credential("at-ag", "rt-ag", HOUR);
    let acct = json!({
        "uuid": "ag1",
        "ANTIGRAVITY_OAUTH_CREDS_FILE_PATH": "./configs/gemini/ag1.json",
        "PROJECT_ID": gemini::PROJECT,
        "ANTIGRAVITY_BASE_URL": mock.base_url(),
        "ANTIGRAVITY_TOKEN_URL": mock.token_url(),
        "ANTIGRAVITY_OAUTH_CLIENT_ID": "mock-client-id",
        "ANTIGRAVITY_OAUTH_CLIENT_SECRET": "mock-client-secret",
        "isHealthy": true,
    });
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(configs.join("gemini")).expect("mkdir");
    std::fs::write(configs.join("config.json"), base_config().to_string()).expect("config");
    std::fs::write(configs.join("gemini/ag1.json"), cred.to_string()).expect("cred");
    std::fs::write(
        configs.join("provider_pools.json"),
        json!({"gemini-antigravity": [acct]}).to_string(),
    )
    .expect("pools");
    let gw = start_gateway(
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
        ],
    );
    let auth = format!("Bearer {KEY}");
    let h = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let body = json!({"model": "gemini-claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let (st, out) = http(
        gw.addr,
        "POST",
        "/gemini-antigravity/v1/chat/completions",
        &h,
        &body.to_string(),
    );
    let logs = || gw.stderr.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(st, 200, "{out}\n{}", logs());
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["content"],
        gemini::TEXT,
        "the stream was merged into one answer"
    );
    assert_eq!(mock.calls(ep::GENERATE), 0, "Claude models run as a stream");
    let rec = mock.last_request(ep::STREAM).expect("a stream call");
    assert_eq!(rec.body["model"], "claude-sonnet-4-5");
    assert_eq!(rec.body["userAgent"], "antigravity");
    assert_eq!(rec.body["requestType"], "agent");
    assert!(
        rec.body["requestId"]
            .as_str()
            .is_some_and(|r| r.starts_with("agent-")),
        "{}",
        rec.body
    );
    assert!(
        rec.body["request"]["sessionId"]
            .as_str()
            .is_some_and(|r| r.starts_with('-')),
        "{}",
        rec.body
    );
    assert!(rec.body["request"].get("safetySettings").is_none());
    assert_eq!(
        rec.header("user-agent"),
        Some("antigravity/1.104.0 darwin/arm64")
    );
    assert_eq!(rec.header("accept"), Some("text/event-stream"));
    // Streaming: usage only on the final chunk.
    let g = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let (st, out) = http(
        gw.addr,
        "POST",
        "/gemini-antigravity/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse",
        &h,
        &g.to_string(),
    );
    assert_eq!(st, 200, "{out}");
    let chunks = sse_json(&out);
    assert!(chunks.len() > 1);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.get("usageMetadata").is_none()),
        "{out}"
    );
    assert!(
        chunks.last().expect("last").get("usageMetadata").is_some(),
        "{out}"
    );
}

fn pool_account<'a>(pools: &'a Value, uuid: &str) -> &'a Value {
    pools[T]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["uuid"] == uuid)
        .expect("the account")
}

fn user(text: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": text}]})
}
