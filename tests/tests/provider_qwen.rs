//! The `qwen` provider plugin end to end: the real gateway binary (file or Redis backend) with
//! only the qwen and iflow plugins loaded, against the faithful Qwen mock
//! (`aiclient_tests::mocks::qwen`). Covered: OpenAI, Claude and Gemini clients, unary and
//! streaming, tool-call round trips, reasoning, images, the exact upstream request (headers,
//! system normalisation, `ext` tool, model mapping, `resource_url` routing), token refresh
//! (expiry, refresh-ahead, undated device-flow files, 401, rotation, omitted `resource_url` /
//! `refresh_token`, exactly one token-endpoint call for 50 concurrent requests — also across
//! two gateways sharing Redis), write-back in the original shape, failed refreshes that keep
//! the credential, upstream errors and what they do to the pool (quota until Beijing midnight,
//! cooldowns, error counts), the local rate limit, and broken streams.
//!
//! The default provider is deliberately `openai-custom` (not loaded): every request picks
//! `openai-qwen-oauth` by `Model-Provider` header or path prefix.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aiclient_sdk::account::now_ms;
use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::gateway::Gateway;
use aiclient_tests::gateway::http;
use aiclient_tests::mocks::qwen::{self, Fault, Injection, Options, QwenMock, ep};
use aiclient_tests::wire::{
    json_of, merged, openai_stream_text, read_json, sse_data, sse_json, streaming, weather_tool,
};
use serde_json::{Value, json};

const KEY: &str = "qwen-client-key";
const T: &str = "openai-qwen-oauth";
const MODEL: &str = "qwen3-coder-plus";
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        artifacts::build(&[
            "aiclient",
            "aiclient-provider-qwen",
            "aiclient-provider-iflow",
            "aiclient-backend-file",
            "aiclient-backend-redis",
        ])
    })
}
/// `aiclient serve --port 0 <args>` loading only this test's plugins, in `cwd`.
fn start_gateway(cwd: &Path, args: &[&str]) -> Gateway {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--provider", "qwen", "--provider", "iflow"]);
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

/// An account of `mock`, its credential file at `./configs/qwen/<uuid>.json`.
fn account(mock: &QwenMock, uuid: &str, patch: Value) -> Value {
    let a = json!({
        "customName": format!("acct {uuid}"),
        "uuid": uuid,
        "QWEN_OAUTH_CREDS_FILE_PATH": format!("./configs/qwen/{uuid}.json"),
        "QWEN_OAUTH_BASE_URL": mock.base_url(),
        "QWEN_OAUTH_CLIENT_ID": qwen::CLIENT_ID,
        "checkModelName": "qwen3-coder-flash",
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
    mock: QwenMock,
    gw: Option<Gateway>,
}

impl Setup {
    /// A file-backend gateway with `accounts` (each with its credential file, if any).
    fn start(mock: QwenMock, accounts: Vec<(Value, Option<Value>)>, config_patch: Value) -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let configs = dir.path().join("configs");
        std::fs::create_dir_all(configs.join("qwen")).expect("mkdir");
        let config = merged(base_config(), &config_patch);
        std::fs::write(
            configs.join("config.json"),
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("write config");
        let mut list = Vec::new();
        for (acct, cred) in accounts {
            if let Some(c) = cred {
                let path = acct["QWEN_OAUTH_CREDS_FILE_PATH"]
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
        std::fs::write(
            configs.join("provider_pools.json"),
            serde_json::to_string_pretty(&json!({ T: list })).expect("json"),
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
        self.gw.as_ref().map(Gateway::logs).unwrap_or_default()
    }

    /// Stops the gateway (flushing its state) and returns `provider_pools.json`.
    fn stop(&mut self) -> Value {
        let gw = self.gw.take().expect("gateway running");
        assert!(gw.terminate().success(), "clean shutdown");
        read_json(&self.configs.join("provider_pools.json"))
    }

    fn token_file(&self, uuid: &str) -> Value {
        read_json(&self.configs.join("qwen").join(format!("{uuid}.json")))
    }
}

/// A fresh mock with one account whose token is valid for an hour.
fn one_account(opts: Options, patch: Value, config_patch: Value) -> Setup {
    let mock = qwen::start_in_thread(opts);
    let cred = mock.credential("at-1", "rt-1", HOUR);
    let acct = account(&mock, "q1", patch);
    Setup::start(mock, vec![(acct, Some(cred))], config_patch)
}

fn no_panics(s: &Setup) {
    let logs = s.logs();
    assert!(!logs.contains("panicked"), "a panic was logged:\n{logs}");
}

#[test]
fn openai_client_unary_stream_and_tool_round_trip() {
    let s = one_account(Options::default(), json!({}), json!({}));
    // Unary, provider chosen by the Model-Provider header; the answer passes through.
    let mut body = user("hi");
    body["messages"] = json!([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
    ]);
    body["temperature"] = json!(0.3);
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], qwen::TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 20);

    // What reached Qwen: the Qwen Code headers and the pre-processed body.
    let rec = s.mock.last_request(ep::CHAT).expect("a chat call");
    assert_eq!(rec.header("authorization"), Some("Bearer at-1"));
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert_eq!(rec.header("accept"), Some("application/json"));
    let ua = rec.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("QwenCode/0.14.2 ("), "{ua}");
    assert_eq!(rec.header("x-dashscope-useragent"), Some(ua));
    assert_eq!(rec.header("x-dashscope-authtype"), Some("qwen-oauth"));
    assert_eq!(rec.header("x-dashscope-cachecontrol"), Some("enable"));
    assert_eq!(rec.header("x-stainless-lang"), Some("js"));
    assert_eq!(rec.header("x-stainless-runtime"), Some("node"));
    assert_eq!(rec.header("x-stainless-runtime-version"), Some("v22.17.0"));
    assert_eq!(rec.header("x-stainless-package-version"), Some("5.11.0"));
    assert!(rec.header("x-stainless-arch").is_some());
    assert_eq!(rec.body["model"], MODEL);
    assert_eq!(rec.body["temperature"], 0.3);
    assert_eq!(
        rec.body["messages"][0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "You are Qwen Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be terse."},
        ]})
    );
    assert_eq!(
        rec.body["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    assert_eq!(rec.body["tools"][0]["function"]["name"], "ext");
    assert!(rec.body.get("stream_options").is_none());

    // Streaming through the path prefix: include_usage requested, chunks passed through.
    let (st, out) = s.post(
        "/openai-qwen-oauth/v1/chat/completions",
        &[],
        &streaming(user("hi")),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), qwen::TEXT);
    let chunks = sse_json(&out);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"] == json!([]) && c["usage"]["total_tokens"] == 27),
        "the usage chunk with empty choices reaches the client: {out}"
    );
    assert_eq!(sse_data(&out).last().map(String::as_str), Some("[DONE]"));
    let rec = s.mock.last_request(ep::CHAT).expect("stream call");
    assert_eq!(rec.body["stream"], true);
    assert_eq!(rec.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(rec.header("accept"), Some("text/event-stream"));

    // An unknown model is sent as coder-model.
    let mut other = user("hi");
    other["model"] = json!("gpt-4o");
    let (st, out) = s.chat(&other);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        s.mock.last_request(ep::CHAT).expect("call").body["model"],
        "coder-model"
    );

    // Tool call, unary: the ext placeholder is never what the model calls.
    let mut ask = user("weather in Paris? [tool]");
    ask["tools"] = weather_tool();
    let (st, out) = s.chat(&ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    let names: Vec<&str> = rec.body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(names, ["ext", "get_weather"]);

    // Tool call, streamed: the arguments arrive in fragments and join up.
    let (st, out) = s.chat(&streaming(ask.clone()));
    assert_eq!(st, 200, "{out}");
    let args: String = sse_json(&out)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(
        sse_json(&out)
            .iter()
            .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
            .count()
            >= 3,
        "several fragments: {out}"
    );

    // The round trip: the tool's result goes back as a tool message.
    let mut follow = ask;
    let msgs = follow["messages"].as_array_mut().expect("messages");
    msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}));
    msgs.push(json!({"role": "tool", "tool_call_id": call["id"].clone(), "content": "sunny, 21C"}));
    let (st, out) = s.chat(&follow);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["content"],
        "The tool said: sunny, 21C"
    );
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    let roles: Vec<&str> = rec.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);

    // Reasoning passes through as reasoning_content.
    let (st, out) = s.chat(&user("[think] why?"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["reasoning_content"],
        "Pondering the question."
    );

    // The model list names the provider's models.
    let (st, out) = http(
        s.gw().addr,
        "GET",
        "/openai-qwen-oauth/v1/models",
        &[("authorization", &format!("Bearer {KEY}"))],
        "",
    );
    assert_eq!(st, 200, "{out}");
    for m in qwen::MODELS {
        assert!(out.contains(m), "{m} listed: {out}");
    }
    no_panics(&s);
}

#[test]
fn claude_client_unary_stream_thinking_and_tool_use() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let claude = |text: &str| {
        json!({"model": MODEL, "max_tokens": 256, "system": "Be terse.",
            "messages": [{"role": "user", "content": text}]})
    };
    let (st, out) = s.post("/v1/messages", &[("model-provider", T)], &claude("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], qwen::TEXT);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"]["cache_read_input_tokens"], 3,
        "prompt_tokens_details.cached_tokens: {out}"
    );
    assert_eq!(
        v["usage"]["input_tokens"], 17,
        "the uncached part of 20: {out}"
    );
    assert_eq!(v["usage"]["output_tokens"], 7);
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    assert_eq!(
        rec.body["messages"][0]["content"][1],
        json!({"type": "text", "text": "Be terse."}),
        "the Claude system prompt joins the Qwen Code system message"
    );

    // Thinking: reasoning_content becomes a thinking block before the text.
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &claude("[think] hi"));
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let blocks = v["content"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "thinking", "{out}");
    assert_eq!(blocks[0]["thinking"], "Pondering the question.");
    assert_eq!(blocks.last().expect("text")["text"], qwen::TEXT);

    // Streaming: Claude SSE events with the text deltas.
    let mut sreq = claude("hi");
    sreq["stream"] = json!(true);
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &sreq);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("event: message_start"), "{out}");
    assert!(out.contains("event: message_stop"), "{out}");
    let text: String = sse_json(&out)
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, qwen::TEXT);

    // Tool use and its result.
    let tools = json!([{"name": "get_weather", "description": "Weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let mut ask = claude("weather? [tool]");
    ask["tools"] = tools.clone();
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let tu = v["content"]
        .as_array()
        .expect("content")
        .iter()
        .find(|b| b["type"] == "tool_use")
        .cloned()
        .unwrap_or_else(|| panic!("a tool_use block: {out}"));
    assert_eq!(tu["name"], "get_weather");
    assert_eq!(tu["input"], json!({"city": "Paris"}));
    assert_eq!(v["stop_reason"], "tool_use");

    // Streamed tool use: input_json_delta fragments join up.
    let mut sask = ask.clone();
    sask["stream"] = json!(true);
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &sask);
    assert_eq!(st, 200, "{out}");
    let partial: String = sse_json(&out)
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).ok(),
        Some(json!({"city": "Paris"})),
        "{out}"
    );

    let mut follow = ask;
    let msgs = follow["messages"].as_array_mut().expect("messages");
    msgs.push(json!({"role": "assistant", "content": [tu.clone()]}));
    msgs.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tu["id"].clone(), "content": "sunny"}]}));
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &follow);
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["content"][0]["text"], "The tool said: sunny");
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    let last = rec.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["role"], "tool", "{}", rec.body);
    no_panics(&s);
}

#[test]
fn gemini_client_unary_sse_and_function_round_trip() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let gem = |text: &str| {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
            "systemInstruction": {"parts": [{"text": "Be terse."}]}})
    };
    let path = format!("/openai-qwen-oauth/v1beta/models/{MODEL}:generateContent");
    let (st, out) = s.post(&path, &[], &gem("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        qwen::TEXT
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 20);
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    assert_eq!(rec.body["model"], MODEL);
    assert_eq!(rec.body["messages"][0]["content"][1]["text"], "Be terse.");

    // SSE streaming.
    let spath = format!("/openai-qwen-oauth/v1beta/models/{MODEL}:streamGenerateContent?alt=sse");
    let (st, out) = s.post(&spath, &[], &gem("hi"));
    assert_eq!(st, 200, "{out}");
    let text: String = sse_json(&out)
        .iter()
        .flat_map(|e| {
            e["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, qwen::TEXT);

    // Function call and response.
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let mut ask = gem("weather? [tool]");
    ask["tools"] = tools;
    let (st, out) = s.post(&path, &[], &ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let fc = v["candidates"][0]["content"]["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find_map(|p| p.get("functionCall").cloned())
        .unwrap_or_else(|| panic!("a functionCall: {out}"));
    assert_eq!(fc["name"], "get_weather");
    assert_eq!(fc["args"], json!({"city": "Paris"}));
    let mut follow = ask;
    let contents = follow["contents"].as_array_mut().expect("contents");
    contents.push(json!({"role": "model", "parts": [{"functionCall": fc}]}));
    contents.push(
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
        "response": {"result": "rainy"}}}]}),
    );
    let (st, out) = s.post(&path, &[], &follow);
    assert_eq!(st, 200, "{out}");
    let text = json_of(&out)["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with("The tool said: ") && text.contains("rainy"),
        "{out}"
    );
    no_panics(&s);
}

#[test]
fn images_reach_the_vision_model() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let png_len = PNG.trim_end_matches('=').len() * 3 / 4;
    let want = format!("Saw image/png, {png_len} bytes.");
    // OpenAI client.
    let body = json!({"model": "vision-model", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]}]});
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(json_of(&out)["choices"][0]["message"]["content"], want);
    // Claude client.
    let body = json!({"model": "vision-model", "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"}]}]});
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &body);
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["content"][0]["text"], want);
    // Gemini client.
    let body = json!({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": PNG}}, {"text": "what is this?"}]}]});
    let (st, out) = s.post(
        "/openai-qwen-oauth/v1beta/models/vision-model:generateContent",
        &[],
        &body,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["candidates"][0]["content"]["parts"][0]["text"],
        want
    );
    // A coder model refuses images: the client's fault, returned as is.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]}]});
    let (st, out) = s.chat(&body);
    assert_eq!(st, 400, "{out}");
    assert!(out.contains("does not accept images"), "{out}");
}

/// The credential file of a test account, with a field the plugin does not know.
fn credential_with_extra(mock: &QwenMock, access: &str, refresh: &str, valid_for: i64) -> Value {
    let mut c = mock.credential(access, refresh, valid_for);
    c["x_operator_note"] = json!({"keep": [1, 2]});
    c
}

/// `after` is `before` refreshed: same keys in the same order, a new access token issued by
/// the mock, the expected refresh token, the mock as resource_url, expiry = now + 1 h in ms.
fn assert_refreshed_shape(mock: &QwenMock, before: &Value, after: &Value) {
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
    let at = after["access_token"].as_str().expect("access token");
    assert!(mock.access_token_valid(at), "the newest token: {after}");
    let rt = after["refresh_token"].as_str().expect("refresh token");
    assert!(
        mock.refresh_token_valid(rt),
        "a live refresh token: {after}"
    );
    assert_eq!(after["token_type"], "Bearer");
    assert_eq!(after["resource_url"], mock.base_url());
    assert_eq!(after["x_operator_note"], before["x_operator_note"]);
    let exp = after["expiry_date"].as_i64().expect("expiry_date in ms");
    let now = now_ms();
    assert!(
        (exp - (now + HOUR)).abs() < 120_000,
        "expiry_date = now + expires_in: {exp} vs {now}"
    );
}

#[test]
fn expired_nearly_expired_and_undated_tokens_are_refreshed_and_written_back() {
    let mock = qwen::start_in_thread(Options::default());
    let expired = credential_with_extra(&mock, "at-old", "rt-old", -MIN);
    let soon = credential_with_extra(&mock, "at-soon", "rt-soon", 10 * MIN);
    // Fresh device-flow output: no expiry_date, the relative expires_in instead.
    mock.add_refresh_token("rt-dev");
    mock.add_access_token("at-dev", mock.now_ms() + HOUR);
    let device = json!({"access_token": "at-dev", "refresh_token": "rt-dev", "token_type": "Bearer",
        "expires_in": 3600, "scope": "openid profile email model.completion", "resource_url": mock.base_url()});
    let mut s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "expired", json!({})), Some(expired.clone())),
            (account(&mock, "soon", json!({})), Some(soon.clone())),
            (account(&mock, "device", json!({})), Some(device.clone())),
        ],
        json!({}),
    );
    for i in 0..9 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        mock.calls(ep::TOKEN),
        3,
        "one refresh per account (expired, within 20 min, undated)"
    );
    let form = &mock.requests(ep::TOKEN)[0].form;
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        form.get("client_id").map(String::as_str),
        Some(qwen::CLIENT_ID)
    );
    assert!(form.get("client_secret").is_none(), "a public client");
    let rec = &mock.requests(ep::TOKEN)[0];
    assert_eq!(
        rec.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(rec.header("accept"), Some("application/json"));
    for (t, n) in mock.calls_per_token() {
        assert!(
            t.starts_with("mock-qat-"),
            "only refreshed tokens used: {t} ({n})"
        );
    }
    let pools = s.stop();
    assert_refreshed_shape(&mock, &expired, &s.token_file("expired"));
    assert_refreshed_shape(&mock, &soon, &s.token_file("soon"));
    let dev = s.token_file("device");
    assert!(dev.get("expires_in").is_none(), "{dev}");
    assert!(dev["expiry_date"].as_i64().is_some(), "{dev}");
    assert_eq!(dev["scope"], device["scope"], "unknown fields kept");
    assert!(
        mock.refresh_token_valid(dev["refresh_token"].as_str().expect("rt")),
        "the rotated refresh token was stored: {dev}"
    );
    let raw = std::fs::read_to_string(s.configs.join("qwen/expired.json")).expect("read");
    assert!(raw.contains("\n  \"access_token\""), "pretty JSON: {raw}");
    let mut total = 0;
    for u in ["expired", "soon", "device"] {
        let a = pool_account(&pools, u);
        assert_eq!(a["isHealthy"], true, "{a}");
        assert_eq!(
            a["QWEN_OAUTH_CREDS_FILE_PATH"],
            format!("./configs/qwen/{u}.json")
        );
        total += a["usageCount"].as_i64().unwrap_or(0);
    }
    assert_eq!(total, 9);
}

#[test]
fn a_refused_token_is_refreshed_and_the_request_retried() {
    let mut s = one_account(Options::default(), json!({}), json!({}));
    let (st, _) = s.chat(&user("warm up"));
    assert_eq!(st, 200);
    // The upstream stops accepting the token although its expiry_date says otherwise.
    s.mock.expire_access_token("at-1");
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(s.mock.calls(ep::TOKEN), 1, "refreshed once");
    let auths: Vec<String> = s
        .mock
        .requests(ep::CHAT)
        .iter()
        .filter_map(|r| r.bearer().map(str::to_string))
        .collect();
    assert_eq!(auths.len(), 3, "warm-up, the refused call, the retry");
    assert_eq!(auths[1], "at-1");
    assert!(auths[2].starts_with("mock-qat-"), "{auths:?}");

    // Streaming: a 401 before any data is refreshed and retried too.
    s.mock.inject(Injection::next(1, Fault::status(401)));
    let (st, out) = s.chat(&streaming(user("hi")));
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), qwen::TEXT);
    assert_eq!(s.mock.calls(ep::TOKEN), 2, "a 401 forces a refresh");

    // A 400 whose message names the credential is a refusal of it too.
    s.mock.inject(Injection::next(
        1,
        Fault::Status {
            status: 400,
            body: qwen::openai_error("Invalid access token.", "invalid_request_error", None),
            retry_after: None,
        },
    ));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(s.mock.calls(ep::TOKEN), 3);

    // The mock's clock passes the token's lifetime: 401, refresh, retry.
    s.mock.advance(2 * HOUR);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(s.mock.calls(ep::TOKEN), 4);
    assert_eq!(
        s.mock.rotations(),
        4,
        "every refresh rotated the refresh token"
    );
    let second_rt = s.mock.requests(ep::TOKEN)[1]
        .form
        .get("refresh_token")
        .cloned()
        .unwrap_or_default();
    assert!(
        second_rt.starts_with("mock-qrt-"),
        "the rotated refresh token was used next: {second_rt}"
    );
    let pools = s.stop();
    let a = pool_account(&pools, "q1");
    assert_eq!(a["isHealthy"], true, "{a}");
    assert_eq!(
        a["errorCount"], 0,
        "a refused-then-refreshed token is no error: {a}"
    );
    let tok = s.token_file("q1");
    assert!(
        s.mock
            .access_token_valid(tok["access_token"].as_str().expect("token")),
        "the stored token is the newest: {tok}"
    );
    assert!(
        s.mock
            .refresh_token_valid(tok["refresh_token"].as_str().expect("rt"))
    );
}

#[test]
fn without_resource_url_or_rotation_the_account_base_and_old_refresh_token_are_used() {
    let opts = Options {
        return_resource_url: false,
        rotate_refresh_tokens: false,
        return_refresh_token: false,
        ..Options::default()
    };
    let mock = qwen::start_in_thread(opts);
    let mut cred = mock.credential("at-x", "rt-keep", -MIN);
    // The credential's host is dead; after the refresh (which names none) the account's
    // QWEN_BASE_URL is used.
    cred["resource_url"] = json!("http://127.0.0.1:9");
    let acct = account(&mock, "q1", json!({"QWEN_BASE_URL": mock.base_url()}));
    let mut s = Setup::start(mock.clone(), vec![(acct, Some(cred))], json!({}));
    for _ in 0..2 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "{out}\n{}", s.logs());
    }
    assert_eq!(mock.calls(ep::TOKEN), 1);
    assert_eq!(mock.calls(ep::CHAT), 2);
    s.stop();
    let tok = s.token_file("q1");
    assert_eq!(tok["resource_url"], "", "{tok}");
    assert_eq!(
        tok["refresh_token"], "rt-keep",
        "the old one is kept: {tok}"
    );
}

/// `n` concurrent OpenAI requests (half streaming) to `path`.
fn concurrent(addr: std::net::SocketAddr, n: usize, path: &'static str) -> Vec<(u16, String)> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"model": MODEL, "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": format!("hi {i}")}]});
                let auth = format!("Bearer {KEY}");
                http(
                    addr,
                    "POST",
                    path,
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                    &body.to_string(),
                )
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
    let mock = qwen::start_in_thread(opts);
    let cred = credential_with_extra(&mock, "at-expired", "rt-1", -MIN);
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "q1", json!({})), Some(cred.clone()))],
        json!({}),
    );
    let results = concurrent(s.gw().addr, 50, "/openai-qwen-oauth/v1/chat/completions");
    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "all 50 succeed: {failed:?}\n{}",
        s.logs()
    );
    println!(
        "qwen token-endpoint calls for 50 concurrent requests (file backend): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(mock.calls(ep::TOKEN), 1, "exactly one token-endpoint call");
    assert_eq!(mock.calls(ep::CHAT), 50, "no request was refused upstream");
    assert_eq!(
        mock.calls_per_token().len(),
        1,
        "all used the one new token"
    );
    s.stop();
    assert_refreshed_shape(&mock, &cred, &s.token_file("q1"));
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
    let mock = qwen::start_in_thread(opts);
    let cred = credential_with_extra(&mock, "at-expired", "rt-shared", -MIN);
    let acct = account(&mock, "shared", json!({"QWEN_OAUTH_CREDS_FILE_PATH": null}));
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
        std::thread::spawn(move || concurrent(a1, 50, "/openai-qwen-oauth/v1/chat/completions"));
    let t2 =
        std::thread::spawn(move || concurrent(a2, 50, "/openai-qwen-oauth/v1/chat/completions"));
    let mut results = t1.join().expect("gateway 1 requests");
    results.extend(t2.join().expect("gateway 2 requests"));
    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "all 100 succeed: {failed:?}\n{}\n{}",
        gw1.logs(),
        gw2.logs()
    );
    println!(
        "qwen token-endpoint calls for 2 x 50 concurrent requests (two gateways, Redis): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "exactly one token-endpoint call across both instances"
    );
    assert_eq!(mock.calls(ep::CHAT), 100);
    let stored = rt
        .block_on(storage.get_token(T, "shared"))
        .expect("read token")
        .expect("a token");
    let stored = json_of(&stored);
    assert_refreshed_shape(&mock, &cred, &stored);
    let used = mock.calls_per_token();
    assert_eq!(
        used.len(),
        1,
        "every call used the one refreshed token: {used:?}"
    );
    assert_eq!(
        used.keys().next().map(String::as_str),
        stored["access_token"].as_str(),
        "the stored token is the newest"
    );
    drop((gw1, gw2));
}

#[test]
fn a_failed_refresh_keeps_the_credential_and_marks_the_account() {
    let mock = qwen::start_in_thread(Options::default());
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
        "a refused refresh is not repeated"
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
        "the operator's credential is kept as it was (the original deleted it)"
    );
    drop(s);

    // A refused client is final (unhealthy); a busy answer in a 200, a 500 after retries and
    // a timeout are not: the account rests before the next attempt and stays healthy.
    let cases = [
        (
            json!({"QWEN_OAUTH_CLIENT_ID": "wrong"}),
            None,
            0,
            "invalid_client",
            1,
            true,
        ),
        (
            json!({}),
            Some(Fault::ErrorIn200),
            1,
            "server_busy",
            1,
            false,
        ),
        (json!({}), Some(Fault::status(500)), 3, "HTTP 500", 3, false),
        (
            json!({}),
            Some(Fault::Slow(3_000)),
            1,
            "timed out",
            1,
            false,
        ),
    ];
    for (patch, fault, times, want, calls, is_final) in cases {
        let mock = qwen::start_in_thread(Options::default());
        let cred = mock.credential("at-x", "rt-x", -MIN);
        if let Some(f) = fault {
            mock.inject(Injection::next(times, f).on(ep::TOKEN));
        }
        let patch = merged(json!({"QWEN_REFRESH_TIMEOUT_MS": 1000}), &patch);
        let acct = account(&mock, "q1", patch);
        let mut s = Setup::start(mock.clone(), vec![(acct, Some(cred.clone()))], json!({}));
        let (st, out) = s.chat(&user("hi"));
        if is_final {
            assert_eq!(st, 503, "{want}: {out}");
            assert!(out.contains(want), "{want}: {out}");
        } else {
            assert_eq!(st, 429, "{want}: the only account rests: {out}");
            assert!(out.contains("retry in"), "{want}: {out}");
            // Resting: the next request does not hit the token endpoint again.
            let (st, _) = s.chat(&user("hi"));
            assert_eq!(st, 429, "{want}");
        }
        assert_eq!(mock.calls(ep::TOKEN), calls, "{want}");
        assert_eq!(
            mock.calls(ep::CHAT),
            0,
            "{want}: no call with an expired token"
        );
        let logs = s.logs();
        assert!(logs.contains(want), "{want}: the reason is logged:\n{logs}");
        let pools = s.stop();
        assert_eq!(pool_account(&pools, "q1")["isHealthy"], !is_final, "{want}");
        assert_eq!(s.token_file("q1"), cred, "{want}: credential untouched");
    }

    // Two 503s are retried inside the refresh, then it succeeds.
    let mock = qwen::start_in_thread(Options::default());
    let cred = mock.credential("at-x", "rt-x", -MIN);
    mock.inject(Injection::next(2, Fault::status(503)).on(ep::TOKEN));
    let s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "q1", json!({})), Some(cred))],
        json!({}),
    );
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(mock.calls(ep::TOKEN), 3);
    let (st, out) = http(mock.addr, "GET", "/__mock/calls", &[], "");
    assert_eq!(st, 200);
    assert_eq!(json_of(&out)["calls"]["token"], 3, "{out}");
}

#[test]
fn upstream_errors_become_client_errors_and_pool_health() {
    let mock = qwen::start_in_thread(Options::default());
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
    let calls_with = |tok: &str| mock.calls_per_token().get(tok).copied().unwrap_or(0);

    // 400 (the request's fault): returned at once, nobody penalised, no other account tried.
    mock.inject(Injection::next(1, Fault::status(400)));
    let before = mock.calls(ep::CHAT);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 400, "{out}");
    assert!(out.contains("mock injected 400"), "{out}");
    assert_eq!(
        mock.calls(ep::CHAT),
        before + 1,
        "no retry on a client error"
    );
    // A Claude client gets a Claude-shaped error.
    mock.inject(Injection::next(1, Fault::status(400)));
    let (st, out) = s.post(
        "/openai-qwen-oauth/v1/messages",
        &[],
        &json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(st, 400, "{out}");
    assert_eq!(json_of(&out)["type"], "error");

    // 429 with Retry-After on a: a cools down, b serves and keeps serving.
    mock.inject(Injection::next(1, Fault::rate_limited(Some(30))).for_token("at-a"));
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
    // b hits the free-quota error (403 body, unary): 429 to the client, b out until midnight.
    mock.inject(Injection::next(1, Fault::quota(403)).for_token("at-b"));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 429, "a cools down, b is out of quota: {out}");
    assert_eq!(mock.pending_faults(), 0);
    let pools = s.stop();
    let b = pool_account(&pools, "b");
    assert_eq!(b["isHealthy"], false, "{b}");
    assert!(
        b["lastErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("quota")),
        "{b}"
    );
    let recovery = b["scheduledRecoveryTime"]
        .as_str()
        .and_then(aiclient_sdk::account::parse_time_exact)
        .unwrap_or_else(|| panic!("a scheduled recovery: {b}"));
    assert_eq!(
        (recovery + 8 * HOUR) % (24 * HOUR),
        0,
        "recovery at 00:00 Beijing time (UTC+8): {b}"
    );
    assert!(
        recovery > now_ms() && recovery <= now_ms() + 24 * HOUR,
        "{b}"
    );
    drop(s);

    // 403 (refresh fails to help) and 5xx count against the account; the other serves.
    let mock = qwen::start_in_thread(Options::default());
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
    mock.inject(Injection::next(2, Fault::status(503)).for_token("at-a"));
    for i in 0..6 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(mock.pending_faults(), 0, "both 503s hit account a");
    // A connection cut before any data: the request moves on, the client gets 502 at the end.
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
    drop(s);

    // A 403 that a refresh does not cure: refreshed once, then the account is marked.
    let mock = qwen::start_in_thread(Options::default());
    let cred = mock.credential("at-a", "rt-a", HOUR);
    mock.inject(Injection::next(2, Fault::status(403)));
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "a", json!({})), Some(cred))],
        json!({"REQUEST_MAX_RETRIES": 0}),
    );
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 403, "{out}");
    assert_eq!(mock.calls(ep::TOKEN), 1, "one refresh for the refusal");
    assert_eq!(mock.calls(ep::CHAT), 2, "the refused call and one retry");
    let pools = s.stop();
    assert_eq!(pool_account(&pools, "a")["isHealthy"], false);
}

#[test]
fn the_local_rate_limit_refuses_calls_beyond_the_per_minute_budget() {
    let s = one_account(
        Options::default(),
        json!({"QWEN_RATE_LIMIT_PER_MINUTE": 3}),
        json!({"REQUEST_MAX_RETRIES": 0}),
    );
    for i in 0..3 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 429, "{out}");
    assert!(
        out.contains("rate limited") && out.contains("retry in"),
        "the account cools down until the window frees up: {out}"
    );
    assert_eq!(
        s.mock.calls(ep::CHAT),
        3,
        "the fourth never left the gateway"
    );
}

#[test]
fn broken_streams_are_clean_client_errors() {
    let s = one_account(
        Options::default(),
        json!({}),
        json!({"REQUEST_MAX_RETRIES": 0}),
    );
    let stream = streaming(user("hi"));

    // Garbage as the first event: nothing was sent yet, so the client gets a plain 502.
    s.mock.inject(Injection::next(1, Fault::MalformedFirst));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 502, "{out}\n{}", s.logs());
    assert!(
        json_of(&out)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed")),
        "{out}"
    );
    assert_eq!(
        s.mock.calls(ep::CHAT),
        1,
        "REQUEST_MAX_RETRIES 0: one attempt"
    );

    // A malformed line after two chunks: the stream ends with an error event and [DONE].
    s.mock.inject(Injection::next(1, Fault::MalformedAfter(2)));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), "Hello ", "{out}");
    assert!(
        out.contains("upstream stream failed") && out.contains("malformed"),
        "{out}"
    );
    assert_eq!(sse_data(&out).last().map(String::as_str), Some("[DONE]"));

    // The connection cut after two chunks, for a Claude client.
    s.mock.inject(Injection::next(1, Fault::BreakAfter(2)));
    let claude = json!({"model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, out) = s.post("/openai-qwen-oauth/v1/messages", &[], &claude);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("event: error"), "{out}");

    // A Gemini client and garbage first: a Gemini-shaped 502.
    s.mock.inject(Injection::next(1, Fault::MalformedFirst));
    let (st, out) = s.post(
        &format!("/openai-qwen-oauth/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"),
        &[],
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    );
    assert_eq!(st, 502, "{out}");
    assert!(json_of(&out)["error"]["message"].is_string(), "{out}");

    // The gateway is alive and well.
    let (st, out) = http(s.gw().addr, "GET", "/health", &[], "");
    assert_eq!(st, 200, "{out}");
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 200, "{out}");
    no_panics(&s);
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
