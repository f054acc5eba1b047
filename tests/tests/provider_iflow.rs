//! The `iflow` provider plugin end to end: the real gateway binary (file or Redis backend)
//! with only the qwen and iflow plugins loaded, against the faithful iFlow mock
//! (`aiclient_tests::mocks::iflow`). Covered: OpenAI, Claude and Gemini clients, unary and
//! streaming (also `data:` without a space), tool-call round trips, GLM thinking from
//! `reasoning_effort`, images, the exact upstream request (API key as bearer, `iFlow-Cli`,
//! a fresh `session-id` and a valid HMAC signature per call, model mapping, `noop` tool), the
//! model listing with its fallback, token refresh (the 45 h window, every `expiry_date`
//! format and both field spellings written back in kind, a refused API key, a credential
//! without `apiKey`, rotated refresh tokens kept even when the user-info step fails, omitted
//! `expires_in` / `refresh_token`, exactly one token-endpoint call for 50 concurrent requests —
//! also across two gateways sharing Redis), failed refreshes that keep the credential,
//! upstream errors and what they do to the pool, and broken streams.
//!
//! The default provider is deliberately `openai-custom` (not loaded): every request picks
//! `openai-iflow` by `Model-Provider` header or path prefix.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aiclient_sdk::account::{format_time, now_ms, parse_time_exact};
use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::gateway::Gateway;
use aiclient_tests::gateway::http;
use aiclient_tests::mocks::iflow::{self, Fault, IFlowMock, Injection, Options, ep};
use aiclient_tests::wire::{
    json_of, merged, openai_stream_text, read_json, sse_data, sse_json, streaming, weather_tool,
};
use serde_json::{Value, json};

const KEY: &str = "iflow-client-key";
const T: &str = "openai-iflow";
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

/// An account of `mock`, its credential file at `./configs/iflow/<uuid>.json`.
fn account(mock: &IFlowMock, uuid: &str, patch: Value) -> Value {
    let a = json!({
        "customName": format!("acct {uuid}"),
        "uuid": uuid,
        "IFLOW_TOKEN_FILE_PATH": format!("./configs/iflow/{uuid}.json"),
        "IFLOW_BASE_URL": mock.api_base(),
        "IFLOW_OAUTH_BASE_URL": mock.base_url(),
        "IFLOW_OAUTH_CLIENT_ID": iflow::CLIENT_ID,
        "IFLOW_OAUTH_CLIENT_SECRET": iflow::CLIENT_SECRET,
        "checkModelName": "qwen3-coder-plus",
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
    mock: IFlowMock,
    gw: Option<Gateway>,
}

impl Setup {
    /// A file-backend gateway with `accounts` (each with its credential file, if any).
    fn start(mock: IFlowMock, accounts: Vec<(Value, Option<Value>)>, config_patch: Value) -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let configs = dir.path().join("configs");
        std::fs::create_dir_all(configs.join("iflow")).expect("mkdir");
        let config = merged(base_config(), &config_patch);
        std::fs::write(
            configs.join("config.json"),
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("write config");
        let mut list = Vec::new();
        for (acct, cred) in accounts {
            if let Some(c) = cred {
                let path = acct["IFLOW_TOKEN_FILE_PATH"]
                    .as_str()
                    .or(acct["IFLOW_OAUTH_CREDS_FILE_PATH"].as_str())
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
        read_json(&self.configs.join("iflow").join(format!("{uuid}.json")))
    }
}

/// `ms` as `YYYY-MM-DD HH:mm` (UTC).
fn plain_time(ms: i64) -> String {
    format_time(ms)[..16].replace('T', " ")
}

/// `YYYY-MM-DD HH:mm` (UTC) as ms.
fn parse_plain_time(s: &str) -> Option<i64> {
    (s.len() == 16)
        .then(|| parse_time_exact(&format!("{}:00.000Z", s.replace(' ', "T"))))
        .flatten()
}

/// A fresh mock with one account (`i1`) whose token is valid for 48 h.
fn one_account(opts: Options, patch: Value, config_patch: Value) -> Setup {
    let mock = iflow::start_in_thread(opts);
    let cred = mock.credential("i1", "iat-1", "irt-1", 48 * HOUR);
    let acct = account(&mock, "i1", patch);
    Setup::start(mock, vec![(acct, Some(cred))], config_patch)
}

fn no_panics(s: &Setup) {
    let logs = s.logs();
    assert!(!logs.contains("panicked"), "a panic was logged:\n{logs}");
}

/// The call carried the signing headers and a valid signature for `key`.
fn assert_signed(rec: &iflow::Recorded, key: &str) {
    assert_eq!(rec.bearer(), Some(key));
    assert_eq!(rec.header("user-agent"), Some("iFlow-Cli"));
    let session = rec.header("session-id").unwrap_or_default();
    assert!(
        session.starts_with("session-") && session.len() == 44,
        "{session}"
    );
    let ts = rec.header("x-iflow-timestamp").unwrap_or_default();
    let t: i64 = ts.parse().expect("a ms timestamp");
    assert!((t - now_ms()).abs() < 5 * MIN, "{ts}");
    assert_eq!(
        rec.header("x-iflow-signature"),
        Some(iflow::expected_signature(key, session, ts).as_str())
    );
}

#[test]
fn openai_client_unary_stream_and_tool_round_trip() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let key = s.mock.api_key("i1").expect("key");
    let mut body = user("hi");
    body["temperature"] = json!(0.2);
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], iflow::TEXT);
    assert_eq!(v["usage"]["total_tokens"], 20);

    // The API key (not the OAuth token) with iFlow's signature; a body passed through.
    let rec = s.mock.last_request(ep::CHAT).expect("a chat call");
    assert_signed(&rec, &key);
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert_eq!(rec.header("accept"), Some("application/json"));
    assert_eq!(rec.body["model"], MODEL);
    assert_eq!(rec.body["temperature"], 0.2);
    assert_eq!(
        rec.body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );
    assert!(rec.body.get("tools").is_none(), "absent tools stay absent");

    // Streaming through the path prefix; the mock answers with `data:` (no space).
    s.mock.configure(|o| o.compact_sse = true);
    let (st, out) = s.post(
        "/openai-iflow/v1/chat/completions",
        &[],
        &streaming(user("hi")),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), iflow::TEXT);
    assert!(
        sse_json(&out)
            .iter()
            .any(|c| c["usage"]["total_tokens"] == 20),
        "usage on the last chunk: {out}"
    );
    assert_eq!(sse_data(&out).last().map(String::as_str), Some("[DONE]"));
    s.mock.configure(|o| o.compact_sse = false);
    let rec = s.mock.last_request(ep::CHAT).expect("stream call");
    assert_signed(&rec, &key);
    assert_eq!(rec.body["stream"], true);
    assert!(rec.body.get("stream_options").is_none());
    assert_eq!(rec.header("accept"), Some("text/event-stream"));
    let sessions: std::collections::HashSet<String> = s
        .mock
        .requests(ep::CHAT)
        .iter()
        .filter_map(|r| r.header("session-id").map(str::to_string))
        .collect();
    assert_eq!(sessions.len(), 2, "a new session id per call");

    // Unknown models become deepseek-r1; `tools: []` becomes the noop placeholder.
    let mut other = user("hi");
    other["model"] = json!("gpt-4o");
    other["tools"] = json!([]);
    let (st, out) = s.chat(&other);
    assert_eq!(st, 200, "{out}");
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    assert_eq!(rec.body["model"], "deepseek-r1");
    assert_eq!(rec.body["tools"][0]["function"]["name"], "noop");

    // GLM thinking from reasoning_effort.
    let mut glm = user("hi");
    glm["model"] = json!("glm-4.6");
    glm["reasoning_effort"] = json!("high");
    let (st, out) = s.chat(&glm);
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["choices"][0]["message"]["reasoning_content"],
        "The user greets me."
    );
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    assert_eq!(
        rec.body["chat_template_kwargs"],
        json!({"enable_thinking": true, "clear_thinking": false})
    );
    assert!(rec.body.get("reasoning_effort").is_none());
    glm["reasoning_effort"] = json!("none");
    let (st, out) = s.chat(&glm);
    assert_eq!(st, 200, "{out}");
    let rec = s.mock.last_request(ep::CHAT).expect("call");
    assert_eq!(
        rec.body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );

    // Tool call, unary then streamed, then the round trip.
    let mut ask = user("weather in Paris? [tool]");
    ask["tools"] = weather_tool();
    let (st, out) = s.chat(&ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
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
    no_panics(&s);
}

#[test]
fn claude_client_unary_stream_thinking_and_tool_use() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let claude = |text: &str| json!({"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]});
    let (st, out) = s.post("/v1/messages", &[("model-provider", T)], &claude("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(v["content"][0]["text"], iflow::TEXT);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 8);
    assert_eq!(v["usage"]["output_tokens"], 12);

    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &claude("[think] hi"));
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    assert_eq!(v["content"][0]["type"], "thinking", "{out}");
    assert_eq!(v["content"][0]["thinking"], "The user greets me.");

    let mut sreq = claude("hi");
    sreq["stream"] = json!(true);
    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &sreq);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("event: message_stop"), "{out}");
    let text: String = sse_json(&out)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, iflow::TEXT);

    let mut ask = claude("weather? [tool]");
    ask["tools"] = json!([{"name": "get_weather", "description": "Weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &ask);
    assert_eq!(st, 200, "{out}");
    let v = json_of(&out);
    let tu = v["content"]
        .as_array()
        .expect("content")
        .iter()
        .find(|b| b["type"] == "tool_use")
        .cloned()
        .unwrap_or_else(|| panic!("a tool_use block: {out}"));
    assert_eq!(tu["input"], json!({"city": "Paris"}));
    assert_eq!(v["stop_reason"], "tool_use");
    let mut follow = ask;
    let msgs = follow["messages"].as_array_mut().expect("messages");
    msgs.push(json!({"role": "assistant", "content": [tu.clone()]}));
    msgs.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tu["id"].clone(), "content": "sunny"}]}));
    let mut sfollow = follow.clone();
    sfollow["stream"] = json!(true);
    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &sfollow);
    assert_eq!(st, 200, "{out}");
    let text: String = sse_json(&out)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "The tool said: sunny");
    no_panics(&s);
}

#[test]
fn gemini_client_unary_sse_and_function_round_trip() {
    let s = one_account(Options::default(), json!({}), json!({}));
    let gem = |text: &str| json!({"contents": [{"role": "user", "parts": [{"text": text}]}]});
    let path = format!("/openai-iflow/v1beta/models/{MODEL}:generateContent");
    let (st, out) = s.post(&path, &[], &gem("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    let v = json_of(&out);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        iflow::TEXT
    );
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 20);

    let spath = format!("/openai-iflow/v1beta/models/{MODEL}:streamGenerateContent?alt=sse");
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
    assert_eq!(text, iflow::TEXT);

    let mut ask = gem("weather? [tool]");
    ask["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let (st, out) = s.post(&spath, &[], &ask);
    assert_eq!(st, 200, "{out}");
    let fc = sse_json(&out)
        .iter()
        .flat_map(|e| {
            e["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find_map(|p| p.get("functionCall").cloned())
        .unwrap_or_else(|| panic!("a streamed functionCall: {out}"));
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
    let want = format!(
        "Saw image/png, {} bytes.",
        PNG.trim_end_matches('=').len() * 3 / 4
    );
    let body = json!({"model": "qwen3-vl-plus", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]}]});
    let (st, out) = s.chat(&body);
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(json_of(&out)["choices"][0]["message"]["content"], want);
    let body = json!({"model": "qwen3-vl-plus", "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"}]}]});
    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &body);
    assert_eq!(st, 200, "{out}");
    assert_eq!(json_of(&out)["content"][0]["text"], want);
    let body = json!({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": PNG}}, {"text": "what is this?"}]}]});
    let (st, out) = s.post(
        "/openai-iflow/v1beta/models/qwen3-vl-plus:generateContent",
        &[],
        &body,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        json_of(&out)["candidates"][0]["content"]["parts"][0]["text"],
        want
    );
}

#[test]
fn the_model_listing_comes_from_upstream_with_a_static_fallback() {
    use abi_stable::std_types::{ROption, RString};
    use aiclient::plugins::loader;
    use aiclient_sdk::provider::{Operation, ProviderRequest};

    let mock = iflow::start_in_thread(Options::default());
    let cred = mock.credential("i1", "iat-1", "irt-1", 48 * HOUR);
    let acct = account(&mock, "i1", json!({}));
    let lib = loader::load_provider(artifacts().lib("aiclient_provider_iflow"))
        .expect("load the iflow plugin");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let provider = rt
        .block_on((lib.module.create())(
            json!({"instance_id": "t"}).to_string().into(),
        ))
        .into_result()
        .expect("create");
    let list = |token: Option<&Value>| {
        let req = ProviderRequest {
            operation: Operation::LIST_MODELS,
            provider_type: T.into(),
            model: RString::new(),
            stream: false,
            body: "{}".into(),
            account_uuid: "i1".into(),
            account: acct.to_string().into(),
            token: match token {
                Some(t) => ROption::RSome(t.to_string().into()),
                None => ROption::RNone,
            },
            request_id: "t-1".into(),
            timeout_ms: 5_000,
            options: "{}".into(),
        };
        let r = rt
            .block_on(provider.call(req))
            .into_result()
            .expect("list models");
        assert_eq!(r.status, 200);
        let v = json_of(&r.body);
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let ids = list(Some(&cred));
    assert_eq!(mock.calls(ep::MODELS), 1);
    assert_signed(
        &mock.last_request(ep::MODELS).expect("call"),
        cred["apiKey"].as_str().expect("key"),
    );
    assert_eq!(
        ids,
        [
            "deepseek-r1",
            "deepseek-v3",
            "deepseek-v3.2",
            "glm-4.6",
            "glm-4.7",
            "glm-5",
            "kimi-k2.5",
            "minimax-m2.1",
            "minimax-m2.5"
        ],
        "the upstream's list plus the known extras"
    );
    mock.inject(Injection::next(1, Fault::status(500)).on(ep::MODELS));
    let ids = list(Some(&cred));
    assert_eq!(
        ids.len(),
        20,
        "the static list when the upstream fails: {ids:?}"
    );
    assert_eq!(ids[0], "deepseek-r1");
    assert_eq!(list(None).len(), 20, "no credential: the static list");
}

/// Every `expiry_date` format and both field spellings: refreshed when due (within 45 h),
/// written back in kind, with the new API key.
#[test]
fn every_expiry_format_is_refreshed_when_due_and_written_back_in_kind() {
    let opts = Options {
        rotate_api_keys: true,
        ..Options::default()
    };
    let mock = iflow::start_in_thread(opts);
    let soon = mock.now_ms() + 10 * HOUR;
    let mut cases: Vec<(&str, Value, Value)> = Vec::new();
    let mut c = mock.credential("ms", "a-ms", "r-ms", -MIN);
    c["x_note"] = json!("kept");
    cases.push(("ms", c, json!({})));
    let mut c = mock.credential("str", "a-str", "r-str", 10 * HOUR);
    c["expiry_date"] = json!(soon.to_string());
    cases.push(("str", c, json!({})));
    let mut c = mock.credential("iso", "a-iso", "r-iso", 10 * HOUR);
    c["expiry_date"] = json!(format_time(soon));
    cases.push(("iso", c, json!({})));
    let mut c = mock.credential("plain", "a-plain", "r-plain", 10 * HOUR);
    c["expiry_date"] = json!(plain_time(soon));
    cases.push(("plain", c, json!({})));
    let c = mock.credential("camel", "a-camel", "r-camel", 10 * HOUR);
    let camel = json!({"accessToken": c["access_token"], "refreshToken": c["refresh_token"],
        "expiryDate": c["expiry_date"], "tokenType": "Bearer", "scope": "", "api_key": c["apiKey"]});
    cases.push((
        "camel",
        camel,
        json!({"IFLOW_TOKEN_FILE_PATH": null, "IFLOW_OAUTH_CREDS_FILE_PATH": "./configs/iflow/camel.json"}),
    ));
    // Valid for 47 h: outside the 45 h window, never refreshed.
    let fresh = mock.credential("fresh", "a-fresh", "r-fresh", 47 * HOUR);
    cases.push(("fresh", fresh.clone(), json!({})));
    let accounts = cases
        .iter()
        .map(|(u, c, p)| (account(&mock, u, p.clone()), Some(c.clone())))
        .collect();
    let mut s = Setup::start(mock.clone(), accounts, json!({}));
    for i in 0..12 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(mock.calls(ep::TOKEN), 5, "one refresh per due account");
    assert_eq!(
        mock.calls(ep::USER_INFO),
        5,
        "one API-key fetch per refresh"
    );
    let rec = mock.requests(ep::TOKEN)[0].clone();
    assert_eq!(
        rec.form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        rec.form.get("client_id").map(String::as_str),
        Some(iflow::CLIENT_ID)
    );
    assert_eq!(
        rec.form.get("client_secret").map(String::as_str),
        Some(iflow::CLIENT_SECRET)
    );
    assert!(
        rec.header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "client credentials both ways"
    );
    let info = mock.requests(ep::USER_INFO)[0].clone();
    assert!(
        info.query
            .get("accessToken")
            .is_some_and(|t| t.starts_with("mock-iat-")),
        "{:?}",
        info.query
    );
    let used = mock.calls_per_key();
    let pools = s.stop();
    for (u, before, _) in &cases {
        let after = s.token_file(u);
        let keys = |v: &Value| {
            v.as_object()
                .expect("obj")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&after),
            keys(before),
            "{u}: same fields, same order: {after}"
        );
        assert_eq!(pool_account(&pools, u)["isHealthy"], true);
        if *u == "fresh" {
            assert_eq!(&after, before, "not due: untouched");
            continue;
        }
        let (at, rt, exp, key) = if *u == "camel" {
            ("accessToken", "refreshToken", "expiryDate", "api_key")
        } else {
            ("access_token", "refresh_token", "expiry_date", "apiKey")
        };
        assert!(
            mock.access_token_valid(after[at].as_str().expect("at")),
            "{u}: {after}"
        );
        assert!(
            mock.refresh_token_valid(after[rt].as_str().expect("rt")),
            "{u}: rotated refresh token stored: {after}"
        );
        let new_key = after[key].as_str().expect("key");
        assert_ne!(Some(new_key), before[key].as_str(), "{u}: a new key");
        assert!(mock.api_key_valid(new_key), "{u}");
        assert!(used.contains_key(new_key), "{u}: the new key was used");
        let want = now_ms() + 48 * HOUR;
        let got = match (*u, &after[exp]) {
            ("ms" | "camel", Value::Number(n)) => n.as_i64().expect("ms"),
            ("str", Value::String(s)) => s.parse().expect("numeric string"),
            ("iso", Value::String(s)) => parse_time_exact(s).expect("ISO like toISOString"),
            ("plain", Value::String(s)) => parse_plain_time(s).expect("YYYY-MM-DD HH:mm"),
            (u, other) => panic!("{u}: expiry in the wrong format: {other}"),
        };
        assert!(
            (got - want).abs() < 3 * MIN,
            "{u}: expiry = now + 48 h: {after}"
        );
    }
    assert_eq!(s.token_file("ms")["x_note"], "kept");
    assert_eq!(
        pool_account(&pools, "camel")["IFLOW_OAUTH_CREDS_FILE_PATH"],
        "./configs/iflow/camel.json"
    );
}

#[test]
fn a_refused_api_key_is_refreshed_and_the_request_retried() {
    let mut s = one_account(Options::default(), json!({}), json!({}));
    let key = s.mock.api_key("i1").expect("key");
    let (st, _) = s.chat(&user("warm up"));
    assert_eq!(st, 200);
    // The OAuth access token expiring does not matter to inference: the key keeps working.
    s.mock.expire_access_token("iat-1");
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        s.mock.calls(ep::TOKEN),
        0,
        "no refresh for an expired OAuth token"
    );

    // The key is revoked: 401, refresh (token + user info), retry with the new key.
    s.mock.revoke_api_key(&key);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(s.mock.calls(ep::TOKEN), 1);
    assert_eq!(s.mock.calls(ep::USER_INFO), 1);
    let new_key = s.mock.api_key("i1").expect("new key");
    assert_ne!(new_key, key);
    let last = s.mock.last_request(ep::CHAT).expect("retry");
    assert_signed(&last, &new_key);

    // A 400 naming the key (as the real service may answer) is a refusal of it too.
    s.mock.configure(|o| o.refused_key_status = 400);
    s.mock.revoke_api_key(&new_key);
    let (st, out) = s.chat(&streaming(user("hi")));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(openai_stream_text(&out), iflow::TEXT);
    assert_eq!(s.mock.calls(ep::TOKEN), 2);
    // A 400 about the request itself is the client's: no refresh, no retry.
    let before = s.mock.calls(ep::CHAT);
    let (st, out) = s.chat(&json!({"model": MODEL, "messages": []}));
    assert_eq!(st, 400, "{out}");
    assert_eq!(s.mock.calls(ep::TOKEN), 2);
    assert_eq!(s.mock.calls(ep::CHAT), before + 1);
    let pools = s.stop();
    let a = pool_account(&pools, "i1");
    assert_eq!(a["isHealthy"], true, "{a}");
    assert_eq!(a["errorCount"], 0, "{a}");
    let tok = s.token_file("i1");
    let stored = tok["apiKey"].as_str().expect("key");
    assert!(
        s.mock.api_key_valid(stored),
        "the stored key is the newest: {tok}"
    );
    assert!(
        s.mock
            .refresh_token_valid(tok["refresh_token"].as_str().expect("rt"))
    );
}

#[test]
fn a_refresh_token_alone_bootstraps_an_api_key() {
    let mock = iflow::start_in_thread(Options::default());
    let mut cred = mock.credential("i1", "iat-1", "irt-1", 48 * HOUR);
    let original_key = cred["apiKey"].as_str().expect("key").to_string();
    cred.as_object_mut().expect("obj").remove("apiKey");
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "i1", json!({})), Some(cred))],
        json!({}),
    );
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(mock.calls(ep::TOKEN), 1);
    assert_eq!(mock.calls(ep::USER_INFO), 1);
    assert_eq!(
        mock.last_request(ep::CHAT).expect("call").bearer(),
        Some(original_key.as_str())
    );
    s.stop();
    assert_eq!(s.token_file("i1")["apiKey"], original_key.as_str());
}

#[test]
fn a_rotated_refresh_token_survives_a_failed_user_info_step() {
    let opts = Options {
        rotate_api_keys: true,
        ..Options::default()
    };
    let mock = iflow::start_in_thread(opts);
    let cred = mock.credential("i1", "iat-1", "irt-1", -MIN);
    let key = cred["apiKey"].as_str().expect("key").to_string();
    mock.inject(Injection::next(1, Fault::user_info_refused()).on(ep::USER_INFO));
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "i1", json!({})), Some(cred.clone()))],
        json!({}),
    );
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(
        st,
        200,
        "the previous key still serves: {out}\n{}",
        s.logs()
    );
    assert_eq!(mock.calls(ep::TOKEN), 1);
    assert!(!mock.refresh_token_valid("irt-1"), "the mock rotated it");
    assert_eq!(
        mock.last_request(ep::CHAT).expect("call").bearer(),
        Some(key.as_str())
    );
    // The key is revoked later: the next refresh must use the rotated refresh token.
    mock.revoke_api_key(&key);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 200, "{out}\n{}", s.logs());
    assert_eq!(mock.calls(ep::TOKEN), 2);
    let used = mock.requests(ep::TOKEN)[1]
        .form
        .get("refresh_token")
        .cloned()
        .unwrap_or_default();
    assert!(
        used.starts_with("mock-irt-"),
        "the rotated refresh token was kept and used: {used}"
    );
    s.stop();
    let tok = s.token_file("i1");
    assert!(
        mock.refresh_token_valid(tok["refresh_token"].as_str().expect("rt")),
        "{tok}"
    );
    assert!(
        mock.api_key_valid(tok["apiKey"].as_str().expect("key")),
        "{tok}"
    );
}

#[test]
fn omitted_expires_in_and_refresh_token_and_the_post_refresh_guard() {
    let opts = Options {
        omit_expires_in: true,
        rotate_refresh_tokens: false,
        return_refresh_token: false,
        ..Options::default()
    };
    let mock = iflow::start_in_thread(opts);
    let cred = mock.credential("i1", "iat-1", "irt-keep", -MIN);
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "i1", json!({})), Some(cred))],
        json!({}),
    );
    // The new token lives 1 h (inside the 45 h window), yet it is not refreshed again at once.
    for i in 0..5 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "the 30 s post-refresh guard holds"
    );
    s.stop();
    let tok = s.token_file("i1");
    assert_eq!(tok["refresh_token"], "irt-keep", "{tok}");
    let exp = tok["expiry_date"].as_i64().expect("ms");
    assert!(
        (exp - (now_ms() + HOUR)).abs() < 2 * MIN,
        "expires_in defaults to 3600 s: {tok}"
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
        rotate_api_keys: true,
        ..Options::default()
    };
    let mock = iflow::start_in_thread(opts);
    let cred = mock.credential("i1", "iat-expired", "irt-1", -MIN);
    let mut s = Setup::start(
        mock.clone(),
        vec![(account(&mock, "i1", json!({})), Some(cred.clone()))],
        json!({}),
    );
    let results = concurrent(s.gw().addr, 50, "/openai-iflow/v1/chat/completions");
    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "all 50 succeed: {failed:?}\n{}",
        s.logs()
    );
    println!(
        "iflow token-endpoint calls for 50 concurrent requests (file backend): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(mock.calls(ep::TOKEN), 1, "exactly one token-endpoint call");
    assert_eq!(mock.calls(ep::USER_INFO), 1);
    assert_eq!(mock.calls(ep::CHAT), 50);
    let used = mock.calls_per_key();
    assert_eq!(used.len(), 1, "all 50 used the one new key: {used:?}");
    s.stop();
    let tok = s.token_file("i1");
    assert_eq!(
        Some(tok["apiKey"].as_str().expect("key")),
        used.keys().next().map(String::as_str)
    );
    assert!(mock.refresh_token_valid(tok["refresh_token"].as_str().expect("rt")));
}

#[test]
fn two_gateways_sharing_redis_refresh_exactly_once() {
    use aiclient::plugins::{create_storage, loader};
    use aiclient_tests::redis_server::RedisServer;

    let redis = RedisServer::start();
    let url = redis.url(0);
    let opts = Options {
        token_delay_ms: 300,
        rotate_api_keys: true,
        ..Options::default()
    };
    let mock = iflow::start_in_thread(opts);
    let cred = mock.credential("shared", "iat-expired", "irt-shared", -MIN);
    let acct = account(&mock, "shared", json!({"IFLOW_TOKEN_FILE_PATH": null}));
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
    let t1 = std::thread::spawn(move || concurrent(a1, 50, "/openai-iflow/v1/chat/completions"));
    let t2 = std::thread::spawn(move || concurrent(a2, 50, "/openai-iflow/v1/chat/completions"));
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
        "iflow token-endpoint calls for 2 x 50 concurrent requests (two gateways, Redis): {}",
        mock.calls(ep::TOKEN)
    );
    assert_eq!(
        mock.calls(ep::TOKEN),
        1,
        "exactly one token-endpoint call across both"
    );
    assert_eq!(mock.calls(ep::USER_INFO), 1);
    assert_eq!(mock.calls(ep::CHAT), 100);
    let stored = rt
        .block_on(storage.get_token(T, "shared"))
        .expect("read token")
        .expect("a token");
    let stored = json_of(&stored);
    let keys = |v: &Value| {
        v.as_object()
            .expect("obj")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&stored), keys(&cred), "the original shape: {stored}");
    assert!(mock.refresh_token_valid(stored["refresh_token"].as_str().expect("rt")));
    assert!(mock.access_token_valid(stored["access_token"].as_str().expect("at")));
    let used = mock.calls_per_key();
    assert_eq!(used.len(), 1, "every call used the one new key: {used:?}");
    assert_eq!(
        used.keys().next().map(String::as_str),
        stored["apiKey"].as_str(),
        "the stored key is the newest"
    );
    drop((gw1, gw2));
}

#[test]
fn a_failed_refresh_keeps_the_credential_and_marks_the_account() {
    let mock = iflow::start_in_thread(Options::default());
    let bad = mock.credential("bad", "iat-bad", "irt-revoked", -MIN);
    mock.revoke_refresh_token("irt-revoked");
    let good = mock.credential("good", "iat-good", "irt-good", 48 * HOUR);
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
    assert_eq!(mock.calls(ep::USER_INFO), 0);
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
    assert_eq!(s.token_file("bad"), bad, "the credential is kept as it was");
    drop(s);

    // A wrong client secret is final (unhealthy); a 500 and a timeout are not: the account
    // rests before the next attempt and stays healthy.
    let cases = [
        (
            json!({"IFLOW_OAUTH_CLIENT_SECRET": "wrong"}),
            None,
            "invalid_client",
            true,
        ),
        (json!({}), Some(Fault::status(500)), "HTTP 500", false),
        (
            json!({"IFLOW_REFRESH_TIMEOUT_MS": 800}),
            Some(Fault::Slow(3_000)),
            "timed out",
            false,
        ),
    ];
    for (patch, fault, want, is_final) in cases {
        let mock = iflow::start_in_thread(Options::default());
        let cred = mock.credential("i1", "iat-x", "irt-x", -MIN);
        if let Some(f) = fault {
            mock.inject(Injection::next(1, f).on(ep::TOKEN));
        }
        let mut s = Setup::start(
            mock.clone(),
            vec![(account(&mock, "i1", patch), Some(cred.clone()))],
            json!({}),
        );
        let (st, out) = s.chat(&user("hi"));
        if is_final {
            assert_eq!(st, 503, "{want}: {out}");
            assert!(out.contains(want), "{want}: {out}");
        } else {
            assert_eq!(st, 429, "{want}: the only account rests: {out}");
        }
        assert_eq!(mock.calls(ep::TOKEN), 1, "{want}");
        assert_eq!(mock.calls(ep::USER_INFO), 0, "{want}");
        let logs = s.logs();
        assert!(logs.contains(want), "{want}: the reason is logged:\n{logs}");
        let pools = s.stop();
        assert_eq!(pool_account(&pools, "i1")["isHealthy"], !is_final, "{want}");
        assert_eq!(s.token_file("i1"), cred, "{want}: credential untouched");
    }
}

#[test]
fn upstream_errors_become_client_errors_and_pool_health() {
    let mock = iflow::start_in_thread(Options::default());
    let ca = mock.credential("a", "iat-a", "irt-a", 48 * HOUR);
    let cb = mock.credential("b", "iat-b", "irt-b", 48 * HOUR);
    let (ka, kb) = (
        ca["apiKey"].as_str().expect("key").to_string(),
        cb["apiKey"].as_str().expect("key").to_string(),
    );
    let mut s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "a", json!({})), Some(ca)),
            (account(&mock, "b", json!({})), Some(cb)),
        ],
        json!({"MAX_ERROR_COUNT": 2, "REQUEST_MAX_RETRIES": 0}),
    );
    let calls_with = |k: &str| mock.calls_per_key().get(k).copied().unwrap_or(0);

    // A 400 that is the request's fault: returned at once, nobody penalised.
    mock.inject(Injection::next(1, Fault::status(400)));
    let before = mock.calls(ep::CHAT);
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 400, "{out}");
    assert!(out.contains("mock injected 400"), "{out}");
    assert_eq!(mock.calls(ep::CHAT), before + 1);
    assert_eq!(mock.calls(ep::TOKEN), 0, "no refresh for it");

    // 429 with Retry-After on a: a cools down, b serves; then b too: the client gets 429.
    mock.inject(Injection::next(1, Fault::rate_limited(Some(30))).for_key(&ka));
    let a_before = calls_with(&ka);
    for i in 0..3 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(
        calls_with(&ka),
        a_before + 1,
        "a is not used while it cools down"
    );
    mock.inject(Injection::next(1, Fault::rate_limited(None)).for_key(&kb));
    let (st, out) = s.chat(&user("hi"));
    assert_eq!(st, 429, "{out}");
    assert_eq!(mock.pending_faults(), 0);
    drop(s.gw.take());

    // 403 ("API key may be invalid") and 5xx count against the account, no refresh.
    let mock = iflow::start_in_thread(Options::default());
    let ca = mock.credential("a", "iat-a", "irt-a", 48 * HOUR);
    let cb = mock.credential("b", "iat-b", "irt-b", 48 * HOUR);
    let (ka, kb) = (
        ca["apiKey"].as_str().expect("key").to_string(),
        cb["apiKey"].as_str().expect("key").to_string(),
    );
    s = Setup::start(
        mock.clone(),
        vec![
            (account(&mock, "a", json!({})), Some(ca)),
            (account(&mock, "b", json!({})), Some(cb)),
        ],
        json!({"MAX_ERROR_COUNT": 2, "REQUEST_MAX_RETRIES": 0}),
    );
    mock.inject(Injection::next(1, Fault::status(403)).for_key(&ka));
    mock.inject(Injection::next(1, Fault::status(503)).for_key(&ka));
    for i in 0..6 {
        let (st, out) = s.chat(&user("hi"));
        assert_eq!(st, 200, "request {i}: {out}\n{}", s.logs());
    }
    assert_eq!(mock.pending_faults(), 0, "both faults hit a");
    assert_eq!(mock.calls(ep::TOKEN), 0, "a 403 is not a refresh for iFlow");
    mock.inject(Injection::next(1, Fault::Reset).for_key(&kb));
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
    let s = one_account(
        Options::default(),
        json!({}),
        json!({"REQUEST_MAX_RETRIES": 0}),
    );
    let stream = streaming(user("hi"));
    s.mock.inject(Injection::next(1, Fault::MalformedFirst));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 502, "{out}\n{}", s.logs());
    assert!(
        json_of(&out)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed")),
        "{out}"
    );
    s.mock.inject(Injection::next(1, Fault::MalformedAfter(2)));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 200, "{out}");
    assert_eq!(openai_stream_text(&out), "Hello ", "{out}");
    assert!(
        out.contains("upstream stream failed") && out.contains("malformed"),
        "{out}"
    );
    assert_eq!(sse_data(&out).last().map(String::as_str), Some("[DONE]"));
    s.mock.inject(Injection::next(1, Fault::BreakAfter(2)));
    let claude = json!({"model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let (st, out) = s.post("/openai-iflow/v1/messages", &[], &claude);
    assert_eq!(st, 200, "{out}");
    assert!(out.contains("event: error"), "{out}");
    // A stream cut before any data: a plain 502, and the gateway is fine afterwards.
    s.mock.inject(Injection::next(1, Fault::Reset));
    let (st, out) = s.chat(&stream);
    assert_eq!(st, 502, "{out}");
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
