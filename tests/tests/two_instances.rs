//! Two gateway processes sharing one Redis: counts driven through both add up exactly, and a
//! change made through one (account disabled, session, config, plugin state) is in force on
//! the other within a second.

use std::time::{Duration, Instant};

use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream;
use aiclient_tests::redis_server::RedisServer;
use aiclient_tests::seed;
use serde_json::{Value, json};

const KEY: &str = "two-instance-key";

/// Successful requests made outside the load phase (polls included: each 200 is a count).
static EXTRA_OK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn chat(gw: &Gateway, key: &str) -> u16 {
    let st = chat_once(gw, key);
    if st == 200 {
        EXTRA_OK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    st
}

fn chat_once(gw: &Gateway, key: &str) -> u16 {
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .0
}

fn within_1s(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if check() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 1 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn two_gateways_on_one_redis_count_exactly_and_see_each_others_changes() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let storage = rt.block_on(async {
        let s = seed::redis_storage(&url).await;
        let config = json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom", "REQUEST_MAX_RETRIES": 0});
        seed::openai_accounts(&s, &config, &mock.base_url(), 4).await;
        s
    });

    let dir = tempfile::tempdir().expect("tmp");
    let args = [
        "--storage",
        "redis",
        "--redis-url",
        url.as_str(),
        "--provider",
        "openai-custom",
    ];
    let a = Gateway::start(dir.path(), &args, &[("AICLIENT_INSTANCE_ID", "gw-a")]);
    let password = a
        .generated_password()
        .expect("the first instance generates the admin password");
    let b = Gateway::start(dir.path(), &args, &[("AICLIENT_INSTANCE_ID", "gw-b")]);
    assert!(
        b.generated_password().is_none(),
        "the second instance finds the password in Redis"
    );

    // Counts: 4 threads per gateway × 50 requests, all at once.
    let per = 50;
    let threads: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .flat_map(|addr| (0..4).map(move |_| addr))
        .map(|addr| {
            std::thread::spawn(move || {
                let body =
                    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
                        .to_string();
                (0..per)
                    .filter(|_| {
                        http(
                            addr,
                            "POST",
                            "/v1/chat/completions",
                            &[
                                ("authorization", &format!("Bearer {KEY}")),
                                ("content-type", "application/json"),
                            ],
                            &body,
                        )
                        .0 == 200
                    })
                    .count()
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(ok, 8 * per, "every request succeeded");

    // A session made on A works on B; an account disabled through A is disabled on B.
    let (st, body) = http(
        a.addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({"password": password}).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    let token = serde_json::from_str::<Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let auth = format!("Bearer {token}");
    let (st, _) = http(
        b.addr,
        "GET",
        "/api/providers",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(st, 200, "the session is shared through Redis");
    let (st, _) = http(
        a.addr,
        "POST",
        "/api/providers/openai-custom/acct-0/disable",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(st, 200);
    within_1s("B seeing acct-0 disabled", || {
        let (_, body) = http(
            b.addr,
            "GET",
            "/api/providers/openai-custom",
            &[("authorization", &auth)],
            "",
        );
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["providers"].as_array().cloned())
            .is_some_and(|list| {
                list.iter()
                    .any(|p| p["uuid"] == "acct-0" && p["isDisabled"] == true)
            })
    });
    let before = mock.calls_with("up-0");
    for _ in 0..8 {
        assert_eq!(chat(&b, KEY), 200);
    }
    assert_eq!(
        mock.calls_with("up-0"),
        before,
        "B routes nothing to the account disabled through A"
    );

    // A new client key set through A applies on B.
    let (st, _) = http(
        a.addr,
        "POST",
        "/api/config",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &json!({"REQUIRED_API_KEY": "rotated-key"}).to_string(),
    );
    assert_eq!(st, 200);
    within_1s("B accepting the rotated key", || {
        chat(&b, "rotated-key") == 200
    });
    assert_eq!(chat(&b, KEY), 401, "and refusing the old one");

    // A provider plugin disabled through A stops routing on B.
    let (st, _) = http(
        a.addr,
        "POST",
        "/api/plugins/openai-custom/toggle",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"enabled":false}"#,
    );
    assert_eq!(st, 200);
    within_1s("B refusing to route to the disabled plugin", || {
        chat(&b, "rotated-key") == 503
    });
    let (st, _) = http(
        a.addr,
        "POST",
        "/api/plugins/openai-custom/toggle",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"enabled":true}"#,
    );
    assert_eq!(st, 200);
    within_1s("B routing again", || chat(&b, "rotated-key") == 200);

    // Stop both (they flush), then the counts in Redis are exact.
    let successes = 8 * per + EXTRA_OK.load(std::sync::atomic::Ordering::Relaxed);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let accounts = rt
        .block_on(storage.list_accounts(Some("openai-custom")))
        .expect("list");
    let total: i64 = accounts.iter().map(|a| a.state.usage_count).sum();
    assert_eq!(
        total as usize, successes,
        "usageCount in Redis equals the successful requests through both gateways"
    );
}
