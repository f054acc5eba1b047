//! The management API through the real binary: every endpoint refuses without a session, bad
//! input is a 400 with a message, effects show up where an operator expects them (routing,
//! files, other sessions), and no secret of the fixture ever appears in a response or a log.

use std::path::PathBuf;

use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream::{self, MockUpstream};
use serde_json::{Value, json};

const CLIENT_KEY: &str = "client-secret-key-0001";
const UPSTREAM_KEY: &str = "upstream-secret-key-0002";
const UPSTREAM_KEY_2: &str = "upstream-secret-key-0003";
const OAUTH_ACCESS: &str = "ya29.oauth-access-secret-0006";
const OAUTH_REFRESH: &str = "1//oauth-refresh-secret-0007";

struct Env {
    _dir: tempfile::TempDir,
    configs: PathBuf,
    _mock: MockUpstream,
    gw: Gateway,
    token: String,
    password: String,
    /// Every response body seen, for the secrets scan.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Env {
    fn start() -> Env {
        let mock = mock_upstream::start_in_thread(&[UPSTREAM_KEY, UPSTREAM_KEY_2]);
        let dir = tempfile::tempdir().expect("tmp");
        let configs = dir.path().join("configs");
        std::fs::create_dir_all(&configs).expect("mkdir");
        let config = json!({"REQUIRED_API_KEY": CLIENT_KEY, "MODEL_PROVIDER": "openai-custom", "MAX_ERROR_COUNT": 1, "REQUEST_MAX_RETRIES": 0,
                            "redis": {"enabled": false, "password": "redis-secret-0004"}});
        let pools = json!({
            "openai-custom": [
                {"uuid": "a1", "customName": "primary", "OPENAI_BASE_URL": format!("{}/v1", mock.base_url()), "OPENAI_API_KEY": UPSTREAM_KEY},
            ],
            // An OAuth account whose token file holds secrets the API must never return.
            "gemini-cli-oauth": [
                {"uuid": "g1", "customName": "oauth", "GEMINI_OAUTH_CREDS_FILE_PATH": "./configs/gemini/g1.json", "PROJECT_ID": "p-1"},
            ],
        });
        std::fs::create_dir_all(configs.join("gemini")).expect("mkdir");
        let token = json!({"access_token": OAUTH_ACCESS, "refresh_token": OAUTH_REFRESH, "token_type": "Bearer", "expiry_date": 4102444800000i64});
        std::fs::write(configs.join("gemini/g1.json"), token.to_string()).expect("write token");
        std::fs::write(configs.join("config.json"), config.to_string()).expect("write");
        std::fs::write(configs.join("provider_pools.json"), pools.to_string()).expect("write");
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
            &[("AICLIENT_LOG", "debug")],
        );
        let password = gw
            .generated_password()
            .expect("a first start generates and prints an admin password");
        let mut env = Env {
            _dir: dir,
            configs,
            _mock: mock,
            gw,
            token: String::new(),
            password: password.clone(),
            seen: Default::default(),
        };
        let (st, body) = env.call(
            "POST",
            "/api/login",
            None,
            &json!({"password": password}).to_string(),
        );
        assert_eq!(st, 200, "{body}");
        env.token = serde_json::from_str::<Value>(&body).expect("json")["token"]
            .as_str()
            .expect("token")
            .to_string();
        env
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        let (st, out) = http(self.gw.addr, method, path, &h, body);
        self.seen.borrow_mut().push(out.clone());
        (st, out)
    }

    fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (st, out) = self.call(method, path, Some(&self.token), &body);
        (st, serde_json::from_str(&out).unwrap_or(Value::String(out)))
    }

    fn chat(&self, model: &str) -> u16 {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let (st, out) = http(
            self.gw.addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ],
            &body,
        );
        self.seen.borrow_mut().push(out);
        st
    }
}

/// Waits (up to 5 s) for the file backend's writer to put `want` into `file`.
fn eventually_in_file(file: &std::path::Path, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(v) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            && want(&v)
        {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never showed the change",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

const PROTECTED: &[(&str, &str)] = &[
    ("POST", "/api/logout"),
    ("GET", "/api/config"),
    ("POST", "/api/config"),
    ("POST", "/api/admin-password"),
    ("GET", "/api/providers"),
    ("POST", "/api/providers"),
    ("GET", "/api/providers/openai-custom"),
    ("PUT", "/api/providers/openai-custom/a1"),
    ("DELETE", "/api/providers/openai-custom/a1"),
    ("POST", "/api/providers/openai-custom/a1/disable"),
    ("POST", "/api/providers/openai-custom/a1/enable"),
    ("POST", "/api/providers/openai-custom/reset-health"),
    ("POST", "/api/providers/openai-custom/health-check"),
    ("DELETE", "/api/providers/openai-custom/delete-unhealthy"),
    ("GET", "/api/plugins"),
    ("POST", "/api/plugins/openai-custom/toggle"),
    ("GET", "/api/usage"),
    ("GET", "/api/events"),
    ("GET", "/api/storage/status"),
    ("GET", "/api/redis/status"),
    ("POST", "/api/redis/reseed"),
    ("GET", "/api/system"),
];

#[test]
fn every_route_but_login_and_health_needs_a_session() {
    let env = Env::start();
    for (m, p) in PROTECTED {
        for token in [None, Some("not-a-session"), Some("")] {
            let (st, body) = env.call(m, p, token, "{}");
            assert_eq!(st, 401, "{m} {p} with {token:?}: {body}");
            assert!(body.contains("UNAUTHORIZED"), "{body}");
        }
    }
    assert_eq!(env.call("GET", "/api/health", None, "").0, 200);
    assert_eq!(env.call("GET", "/health", None, "").0, 200);
}

#[test]
fn login_checks_the_hash_throttles_and_logout_ends_the_session() {
    let env = Env::start();
    let login = |pw: &str| {
        env.call(
            "POST",
            "/api/login",
            None,
            &json!({"password": pw}).to_string(),
        )
    };
    assert_eq!(login("").0, 400, "an empty password is a bad request");
    assert_eq!(env.call("POST", "/api/login", None, "{oops").0, 400);
    let stored = std::fs::read_to_string(env.configs.join("pwd")).expect("pwd written");
    assert!(
        stored.starts_with("pbkdf2:"),
        "only a hash is stored: {stored}"
    );
    assert!(!stored.contains(&env.password));

    // A second session works alongside; logout ends only the one it names.
    let (st, body) = login(&env.password);
    assert_eq!(st, 200, "{body}");
    let other = serde_json::from_str::<Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(env.call("POST", "/api/logout", Some(&other), "").0, 200);
    assert_eq!(
        env.call("GET", "/api/config", Some(&other), "").0,
        401,
        "a logged-out token is refused"
    );
    assert_eq!(
        env.api("GET", "/api/config", Value::Null).0,
        200,
        "the first session is unaffected"
    );

    // Password change: too short is refused; the new one works and the old one stops working.
    assert_eq!(
        env.api("POST", "/api/admin-password", json!({"password": "short"}))
            .0,
        400
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/admin-password",
            json!({"password": "a-new-long-password"})
        )
        .0,
        200
    );
    assert_eq!(login(&env.password).0, 401);
    assert_eq!(login("a-new-long-password").0, 200);

    // Five failures lock the address out, even for the right password.
    for _ in 0..4 {
        assert_eq!(login("wrong").0, 401);
    }
    assert_eq!(login("wrong").0, 401);
    let (st, body) = login("a-new-long-password");
    assert_eq!(st, 429, "locked out after five failures: {body}");
}

#[test]
fn config_is_masked_validated_and_applied_at_once() {
    let env = Env::start();
    let (st, cfg) = env.api("GET", "/api/config", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(cfg["REQUIRED_API_KEY"], "******");
    assert_eq!(cfg["redis"]["password"], "******");
    assert_eq!(cfg["hasApiKey"], true);

    let (st, body) = env.api("POST", "/api/config", json!({"SERVER_PORT": 99999}));
    assert_eq!(st, 400);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("SERVER_PORT"),
        "{body}"
    );
    assert_eq!(env.api("POST", "/api/config", json!([1])).0, 400);

    // Sending the mask back changes nothing; a new key applies to the very next request.
    assert_eq!(
        env.api(
            "POST",
            "/api/config",
            json!({"REQUIRED_API_KEY": "******", "MAX_ERROR_COUNT": 3})
        )
        .0,
        200
    );
    assert_eq!(
        env.chat("gpt-4o"),
        200,
        "the key was not overwritten with the mask"
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/config",
            json!({"REQUIRED_API_KEY": "rotated-client-key-0005"})
        )
        .0,
        200
    );
    assert_eq!(env.chat("gpt-4o"), 401, "the old key stops working at once");
    let written = eventually_in_file(&env.configs.join("config.json"), |v| {
        v["REQUIRED_API_KEY"] == "rotated-client-key-0005"
    });
    assert_eq!(written["MAX_ERROR_COUNT"], 3);
    assert_eq!(
        written["redis"]["password"], "redis-secret-0004",
        "unrelated keys survive"
    );
}

#[test]
fn providers_can_be_listed_added_edited_disabled_and_deleted() {
    let env = Env::start();
    let (st, all) = env.api("GET", "/api/providers", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        all["openai-custom"][0]["OPENAI_API_KEY"], "******",
        "API keys are masked: {all}"
    );
    assert_eq!(all["openai-custom"][0]["customName"], "primary");

    assert_eq!(
        env.api("POST", "/api/providers", json!({"providerConfig": {}}))
            .0,
        400,
        "providerType is required"
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/providers",
            json!({"providerType": "openai-custom"})
        )
        .0,
        400,
        "providerConfig is required"
    );
    let base =
        env.api("GET", "/api/providers", Value::Null).1["openai-custom"][0]["OPENAI_BASE_URL"]
            .clone();
    let (st, added) = env.api("POST", "/api/providers", json!({"providerType": "openai-custom", "providerConfig": {"customName": "second", "OPENAI_BASE_URL": base, "OPENAI_API_KEY": UPSTREAM_KEY_2}}));
    assert_eq!(st, 200, "{added}");
    let uuid = added["provider"]["uuid"]
        .as_str()
        .expect("a generated uuid")
        .to_string();
    assert_eq!(added["provider"]["OPENAI_API_KEY"], "******");
    let (_, by_type) = env.api("GET", "/api/providers/openai-custom", Value::Null);
    assert_eq!(
        (
            by_type["totalCount"].clone(),
            by_type["healthyCount"].clone()
        ),
        (json!(2), json!(2))
    );

    // Edit: the masked key sent back keeps the real one; unknown accounts are 404.
    let (st, upd) = env.api(
        "PUT",
        &format!("/api/providers/openai-custom/{uuid}"),
        json!({"providerConfig": {"customName": "renamed", "OPENAI_API_KEY": "******"}}),
    );
    assert_eq!(st, 200, "{upd}");
    assert_eq!(upd["provider"]["customName"], "renamed");
    assert_eq!(
        env.api(
            "PUT",
            "/api/providers/openai-custom/nope",
            json!({"providerConfig": {}})
        )
        .0,
        404
    );

    // Disable the original account: routing uses only the new one.
    assert_eq!(
        env.api(
            "POST",
            "/api/providers/openai-custom/a1/disable",
            Value::Null
        )
        .0,
        200
    );
    for _ in 0..3 {
        assert_eq!(env.chat("gpt-4o"), 200);
    }
    assert_eq!(
        env._mock.calls_with(UPSTREAM_KEY),
        0,
        "a disabled account gets no requests"
    );
    assert_eq!(
        env._mock.calls_with(UPSTREAM_KEY_2),
        3,
        "the edit kept the real key"
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/providers/openai-custom/a1/enable",
            Value::Null
        )
        .0,
        200
    );

    // Make the new account unhealthy (MAX_ERROR_COUNT 1), check, reset, delete unhealthy.
    let _ = env.chat("mock-500");
    let _ = env.chat("mock-500");
    let (_, check) = env.api(
        "POST",
        "/api/providers/openai-custom/health-check",
        Value::Null,
    );
    assert!(check["totalCount"].as_u64().expect("count") >= 1, "{check}");
    let _ = env.chat("mock-500");
    let _ = env.chat("mock-500");
    let (_, reset) = env.api(
        "POST",
        "/api/providers/openai-custom/reset-health",
        Value::Null,
    );
    assert_eq!(reset["resetCount"], 2, "{reset}");
    let (_, by_type) = env.api("GET", "/api/providers/openai-custom", Value::Null);
    assert_eq!(by_type["healthyCount"], 2, "{by_type}");
    assert_eq!(
        env.api(
            "POST",
            &format!("/api/providers/openai-custom/{uuid}/disable"),
            Value::Null
        )
        .0,
        200
    );
    let _ = env.chat("mock-500");
    let (st, del) = env.api(
        "DELETE",
        "/api/providers/openai-custom/delete-unhealthy",
        Value::Null,
    );
    assert_eq!(st, 200, "{del}");
    assert_eq!(del["deletedCount"], 1, "{del}");

    let (st, del) = env.api(
        "DELETE",
        &format!("/api/providers/openai-custom/{uuid}"),
        Value::Null,
    );
    assert_eq!(st, 200, "{del}");
    assert_eq!(
        env.api(
            "DELETE",
            &format!("/api/providers/openai-custom/{uuid}"),
            Value::Null
        )
        .0,
        404
    );
}

#[test]
fn plugins_toggle_in_the_backend_and_stop_routing() {
    let env = Env::start();
    let (_, list) = env.api("GET", "/api/plugins", Value::Null);
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert!(
        names.contains(&"openai-custom") && names.contains(&"file"),
        "{list}"
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/plugins/openai-custom/toggle",
            json!({"enabled": "no"})
        )
        .0,
        400
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/plugins/nope/toggle",
            json!({"enabled": false})
        )
        .0,
        404
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/plugins/file/toggle",
            json!({"enabled": false})
        )
        .0,
        400,
        "the active backend stays on"
    );
    assert_eq!(
        env.api(
            "POST",
            "/api/plugins/openai-custom/toggle",
            json!({"enabled": false})
        )
        .0,
        200
    );
    assert_eq!(
        env.chat("gpt-4o"),
        503,
        "a disabled provider plugin serves nothing"
    );
    eventually_in_file(&env.configs.join("plugins.json"), |v| {
        v["plugins"]["openai-custom"]["enabled"] == false
    });
    assert_eq!(
        env.api(
            "POST",
            "/api/plugins/openai-custom/toggle",
            json!({"enabled": true})
        )
        .0,
        200
    );
    assert_eq!(env.chat("gpt-4o"), 200);
}

#[test]
fn usage_events_status_and_no_secret_anywhere() {
    let env = Env::start();
    assert_eq!(env.chat("gpt-4o"), 200);
    let (st, all) = env.api("GET", "/api/providers", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        all["gemini-cli-oauth"][0]["GEMINI_OAUTH_CREDS_FILE_PATH"], "./configs/gemini/g1.json",
        "paths are shown, tokens are not: {all}"
    );
    let (st, usage) = env.api("GET", "/api/usage?refresh=true", Value::Null);
    assert_eq!(st, 200);
    assert_eq!(
        usage["providers"]["openai-custom"]["instances"][0]["usage"], 1,
        "{usage}"
    );
    let (_, storage) = env.api("GET", "/api/storage/status", Value::Null);
    assert_eq!(storage["type"], "file");
    let (_, redis) = env.api("GET", "/api/redis/status", Value::Null);
    assert_eq!(
        (redis["enabled"].clone(), redis["queuedWrites"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(env.api("GET", "/api/system", Value::Null).0, 200);

    // Events: a request's counter flush arrives as a provider_update.
    let addr = env.gw.addr;
    let token = env.token.clone();
    let reader = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /api/events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("send");
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !got.contains("event: provider_update") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        got
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(env.chat("gpt-4o"), 200);
    let got = reader.join().expect("reader");
    assert!(got.contains("text/event-stream"), "{got}");
    assert!(got.contains("event: provider_update"), "{got}");
    env.seen.borrow_mut().push(got);

    // The secrets scan: nothing the server sent or logged contains a fixture secret.
    let gw = env.gw.terminate_keep_logs();
    let logs: Vec<String> = gw;
    let secrets = [
        CLIENT_KEY,
        UPSTREAM_KEY,
        UPSTREAM_KEY_2,
        "redis-secret-0004",
        OAUTH_ACCESS,
        OAUTH_REFRESH,
        env.password.as_str(),
    ];
    for body in env.seen.borrow().iter().chain(logs.iter()) {
        for s in secrets {
            assert!(!body.contains(s), "secret {s:?} leaked in: {body}");
        }
    }
    // The session token is returned by the login (its purpose) and nowhere else.
    for line in &logs {
        assert!(
            !line.contains(&env.token),
            "the session token leaked into a log line: {line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("DEBUG")),
        "debug logging was on, so the scan saw everything"
    );
}
