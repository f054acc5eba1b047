//! Redis-specific behaviour of the Redis backend beyond the conformance suite, checked on the
//! real dylib against private redis-servers (one per test, free loopback port, never 6379):
//! stored bytes read straight from Redis, no `KEYS`/`SCAN` at run time, two instances sharing
//! one server, the schema-version guard, password hygiene, TTLs, error mapping, the change
//! feed's resync, and the Lua state machine against `StateUpdate::apply`.

use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::{Account, AccountState, ChangeKind, PluginState, Session, StateUpdate};
use aiclient_sdk::{ErrorCode, PluginError};
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Value, json};

async fn open_with(config: Value) -> Result<Storage, PluginError> {
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    create_storage(&lib, &config).await
}

async fn open(server: &RedisServer, prefix: &str, instance: &str) -> Storage {
    open_with(json!({"url": server.url(0), "key_prefix": prefix, "instance_id": instance}))
        .await
        .expect("create the redis backend")
}

fn acct(t: &str, uuid: &str, config: &Value) -> Account {
    Account {
        provider_type: t.into(),
        uuid: uuid.into(),
        config: config.to_string().into(),
        state: AccountState::default(),
    }
}

/// A config the Node fork broke: `[]`/`{}` kept apart, 16+-digit integers, unknown fields.
fn tricky_config(uuid: &str) -> Value {
    json!({
        "uuid": uuid,
        "customName": null,
        "notSupportedModels": [],
        "nested": {"list": [], "obj": {}, "deep": [[], {}]},
        "sixteen": 1234567890123456i64,
        "above2pow53": 9007199254740993u64,
        "big": 1234567890123456789i64,
        "zzUnknownField": {"keep": true, "list": [1, 2, 3]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_json_is_byte_exact_in_redis_and_through_the_backend() {
    let server = RedisServer::start();
    let s = open(&server, "raw:", "a").await;
    let (t, u) = ("gemini-cli-oauth", "x1");
    let config = tricky_config(u);
    let text = config.to_string();
    s.add_account(acct(t, u, &config)).await.expect("add");
    s.update_state(t, u, StateUpdate::usage(3, now_ms()))
        .await
        .expect("count");
    s.update_state(t, u, StateUpdate::error(1, now_ms(), "boom"))
        .await
        .expect("error");

    let key = format!("raw:{{pool:{t}}}:account:{u}");
    let raw = server.cli(&["HGET", &key, "config"]);
    assert_eq!(
        raw, text,
        "the config is stored verbatim and counters never rewrite it"
    );
    assert!(
        raw.contains(r#""notSupportedModels":[]"#) && raw.contains("9007199254740993"),
        "{raw}"
    );
    assert_eq!(
        server.cli(&["HGET", &key, "usageCount"]),
        "3",
        "counters are their own fields"
    );
    assert_eq!(server.cli(&["HGET", &key, "errorCount"]), "1");
    assert_eq!(server.cli(&["HGET", &key, "lastErrorMessage"]), "boom");

    let got = s.get_account(t, u).await.expect("get").expect("exists");
    assert_eq!(got.config.as_str(), text, "read back byte for byte");

    // A merge patch keeps every unknown field, `[]`, the big integers and the field order.
    let patched = s
        .update_account(t, u, &json!({"customName": "main", "extra": []}))
        .await
        .expect("patch");
    let v: Value = serde_json::from_str(&patched.config).expect("JSON");
    let raw: Value =
        serde_json::from_str(&server.cli(&["HGET", &key, "config"])).expect("raw JSON");
    assert_eq!(raw, v, "what the patch returned is what Redis holds");
    let mut want = config.clone();
    want["customName"] = json!("main");
    want["extra"] = json!([]);
    assert_eq!(v, want);
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(
        keys.first().map(|k| k.as_str()),
        Some("uuid"),
        "order kept: {keys:?}"
    );
    assert_eq!(v["above2pow53"].as_u64(), Some(9007199254740993));
    assert_eq!(v["big"].as_i64(), Some(1234567890123456789));
    assert_eq!(patched.state.usage_count, 3, "a patch never touches state");

    // Tokens and documents are stored as the exact text given.
    let token =
        r#"{"access_token":"a","refresh_token":"r1","expiry_date":1700000000000123,"scopes":[]}"#;
    s.set_token(t, u, token).await.expect("token");
    assert_eq!(
        server.cli(&["HGET", &format!("raw:{{pool:{t}}}:token:{u}"), "json"]),
        token
    );
    assert_eq!(
        server.cli(&["HGET", &format!("raw:{{pool:{t}}}:token:{u}"), "refresh"]),
        "r1"
    );
    assert_eq!(
        s.get_token(t, u).await.expect("get").as_deref(),
        Some(token)
    );
    let cfg = r#"{"MODEL_PROVIDER":[],"PROXY":{},"n":1234567890123456}"#;
    s.set_config(cfg).await.expect("config");
    assert_eq!(server.cli(&["GET", "raw:{global}:config"]), cfg);
    assert_eq!(s.get_config().await.expect("get").as_deref(), Some(cfg));
}

/// Every runtime operation, then `INFO commandstats`: no KEYS, no SCAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_or_scan_at_run_time() {
    let server = RedisServer::start();
    let s = open(&server, "ks:", "a").await;
    assert_eq!(server.cli(&["CONFIG", "RESETSTAT"]), "OK");
    let mut feed = s.subscribe().await.expect("subscribe");
    let t = "openai-custom";
    s.status().await.expect("status");
    s.set_config(r#"{"a":1}"#).await.expect("config");
    s.get_config().await.expect("config");
    for u in ["u1", "u2"] {
        s.add_account(acct(t, u, &json!({"uuid": u})))
            .await
            .expect("add");
    }
    s.list_provider_types().await.expect("types");
    s.list_accounts(None).await.expect("all");
    s.list_accounts(Some(t)).await.expect("pool");
    s.get_account(t, "u1").await.expect("get");
    s.update_account(t, "u1", &json!({"x": 1}))
        .await
        .expect("patch");
    s.update_state(t, "u1", StateUpdate::usage(1, now_ms()))
        .await
        .expect("state");
    s.set_token(t, "u1", r#"{"refresh_token":"r"}"#)
        .await
        .expect("token");
    s.get_token(t, "u1").await.expect("token");
    s.cas_token(t, "u1", "r", r#"{"refresh_token":"r2"}"#)
        .await
        .expect("cas");
    s.delete_token(t, "u1").await.expect("delete token");
    s.acquire_lock(t, "u1", "me", 1000).await.expect("lock");
    s.release_lock(t, "u1", "me").await.expect("unlock");
    s.set_password_hash("h").await.expect("pwd");
    s.get_password_hash().await.expect("pwd");
    let sess = Session {
        token_hash: "th".into(),
        data: "{}".into(),
        expires_at: now_ms() + 60_000,
    };
    s.create_session(sess).await.expect("session");
    s.get_session("th").await.expect("session");
    s.list_sessions().await.expect("sessions");
    s.delete_session("th").await.expect("session");
    s.set_usage_cache("{}").await.expect("usage");
    s.get_usage_cache().await.expect("usage");
    let p = PluginState {
        name: "p".into(),
        enabled: true,
        extra: "{}".into(),
    };
    s.set_plugin_state(p).await.expect("plugin");
    s.list_plugin_states().await.expect("plugins");
    s.set_meta(r#"{"schemaVersion":1}"#).await.expect("meta");
    s.get_meta().await.expect("meta");
    s.delete_account(t, "u2").await.expect("delete");
    s.flush().await.expect("flush");
    assert!(feed.next().await.expect("feed").is_some());

    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_evalsha"),
        "the scripts ran: {stats}"
    );
    for banned in [
        "cmdstat_keys:",
        "cmdstat_scan:",
        "cmdstat_hscan:",
        "cmdstat_sscan:",
        "cmdstat_zscan:",
    ] {
        assert!(
            !stats.contains(banned),
            "{banned} used at run time:\n{stats}"
        );
    }

    // The keys written follow docs/redis-schema.md: `<prefix>{global}:…` or
    // `<prefix>{pool:<type>}:…` (KEYS here is the test inspecting, not the backend).
    let all = server.cli(&["KEYS", "*"]);
    for k in all.lines() {
        let ok = [
            "config",
            "pools",
            "password",
            "sessions",
            "usage",
            "plugins",
            "plugin-extra",
            "meta",
        ]
        .iter()
        .any(|n| k == format!("ks:{{global}}:{n}"))
            || k.starts_with(&format!("ks:{{pool:{t}}}:"));
        assert!(ok, "unexpected key {k:?}");
    }
}

/// Two backend instances on one server: 8 tasks each × 1,000 increments → exact total.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_count_exactly() {
    let server = RedisServer::start();
    let a = open(&server, "two:", "inst-a").await;
    let b = open(&server, "two:", "inst-b").await;
    let (t, u) = ("claude-custom", "shared");
    a.add_account(acct(t, u, &json!({"uuid": u})))
        .await
        .expect("add through A");
    assert!(
        b.get_account(t, u).await.expect("get").is_some(),
        "B sees A's account"
    );
    let mut tasks = Vec::new();
    for s in [&a, &b] {
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..1000 {
                    s.update_state(t, u, StateUpdate::usage(1, now_ms()))
                        .await
                        .expect("increment");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(
        a.get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state
            .usage_count,
        16_000
    );
    assert_eq!(
        b.get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state
            .usage_count,
        16_000
    );
    let raw = server.cli(&[
        "HGET",
        &format!("two:{{pool:{t}}}:account:{u}"),
        "usageCount",
    ]);
    assert_eq!(raw, "16000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_a_change_within_a_second() {
    let server = RedisServer::start();
    let a = open(&server, "feed:", "inst-a").await;
    let b = open(&server, "feed:", "inst-b").await;
    let (t, u) = ("openai-custom", "f1");
    a.add_account(acct(t, u, &json!({"uuid": u})))
        .await
        .expect("add");
    let mut feed = b.subscribe().await.expect("subscribe through B");
    let started = Instant::now();
    a.update_state(t, u, StateUpdate::set_disabled(true))
        .await
        .expect("disable through A");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let c = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("B saw no change within 1 s")
            .expect("feed")
            .expect("feed open");
        if c.kind == ChangeKind::ACCOUNT_STATE {
            assert_eq!(
                (c.provider_type.as_str(), c.uuid.as_str(), c.origin.as_str()),
                (t, u, "inst-a")
            );
            break;
        }
    }
    let seen_after = started.elapsed();
    assert!(
        b.get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state
            .disabled
    );
    assert!(seen_after < Duration::from_secs(1), "{seen_after:?}");
    // The wire format is the documented one.
    let mut raw_feed = a.subscribe().await.expect("subscribe");
    b.set_config("{}").await.expect("config through B");
    let c = tokio::time::timeout(Duration::from_secs(1), raw_feed.next())
        .await
        .expect("in time")
        .expect("feed");
    let c = c.expect("open");
    assert_eq!((c.kind, c.origin.as_str()), (ChangeKind::CONFIG, "inst-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_is_refused() {
    let server = RedisServer::start();
    assert_eq!(
        server.cli(&["SET", "new:{global}:meta", r#"{"schemaVersion":99}"#]),
        "OK"
    );
    let e = open_with(json!({"url": server.url(0), "key_prefix": "new:"}))
        .await
        .err()
        .expect("a newer schema must be refused");
    assert_eq!(e.code, ErrorCode::INCOMPATIBLE, "{e}");
    assert!(
        e.message.contains("99") && e.message.contains("new:"),
        "the message says why: {e}"
    );
    assert!(!e.retryable);
    // Same server, other prefix: unaffected; an older or equal version is fine.
    open(&server, "other:", "x").await;
    assert_eq!(
        server.cli(&["SET", "old:{global}:meta", r#"{"schemaVersion":1}"#]),
        "OK"
    );
    let s = open(&server, "old:", "x").await;
    let meta: Value =
        serde_json::from_str(&s.get_meta().await.expect("meta").expect("present")).expect("JSON");
    assert_eq!(meta["schemaVersion"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_appears() {
    const PW: &str = "Sup3r-Secret-Pa55";
    let mut server = RedisServer::start_with(&["--requirepass", PW]);
    let url = server.url(0);
    assert!(url.contains(PW), "the harness puts the password in the URL");
    let s = open_with(json!({"url": url, "key_prefix": "pw:", "instance_id": "a"}))
        .await
        .expect("connect");
    let status = s.status().await.expect("status").to_string();
    assert!(!status.contains(PW), "{status}");
    assert!(
        status.contains(&format!("127.0.0.1:{}", server.port)),
        "status names the server: {status}"
    );
    let v: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(
        (v["backend"].as_str(), v["connected"].as_bool()),
        (Some("redis"), Some(true))
    );
    assert_eq!(v["keyPrefix"], "pw:");

    // Separate fields instead of the URL work too, and are masked the same way.
    let port = server.port;
    let s2 =
        open_with(json!({"host": "127.0.0.1", "port": port, "password": PW, "key_prefix": "pw:"}))
            .await
            .expect("connect with separate fields");
    assert!(!s2.status().await.expect("status").to_string().contains(PW));

    // A wrong password: a clean error that quotes neither password.
    let wrong = format!("redis://:Wrong-{PW}@127.0.0.1:{port}/0");
    let e = open_with(json!({"url": wrong, "key_prefix": "pw:"}))
        .await
        .err()
        .expect("refused");
    eprintln!("wrong password → {e}");
    assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "{e}");
    assert!(
        !e.message.contains(PW) && !e.message.contains("Wrong-"),
        "{e}"
    );
    // No password at all: also refused, cleanly.
    let e = open_with(json!({"host": "127.0.0.1", "port": port, "connect_timeout_ms": 2000}))
        .await
        .err()
        .expect("refused without a password");
    eprintln!("no password → {e}");
    assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "{e}");

    // Errors while the server is down name the server, never the password.
    server.kill();
    let e = s.get_config().await.expect_err("server down");
    eprintln!("server down → {e}");
    assert!(e.retryable, "{e}");
    assert!(
        matches!(e.code, ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT),
        "{e}"
    );
    assert!(!e.message.contains(PW), "{e}");
    let e = s.status().await.expect_err("status while down is an error");
    assert!(!e.message.contains(PW), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_through_redis_ttl_and_tokens_never_do() {
    let server = RedisServer::start();
    let s = open(&server, "ttl:", "a").await;
    let now = now_ms();
    let sess = |h: &str, ttl: i64| Session {
        token_hash: h.into(),
        data: json!({"username": "admin"}).to_string().into(),
        expires_at: now + ttl,
    };
    s.create_session(sess("short", 400)).await.expect("create");
    s.create_session(sess("long", 3_600_000))
        .await
        .expect("create");
    let key = "ttl:{global}:session:short";
    let pttl: i64 = server
        .cli(&["PTTL", key])
        .parse()
        .expect("PTTL is a number");
    assert!(
        pttl > 0 && pttl <= 400,
        "the session key's TTL is the time to expires_at: {pttl}"
    );
    let pttl: i64 = server
        .cli(&["PTTL", "ttl:{global}:session:long"])
        .parse()
        .expect("number");
    assert!(pttl > 3_590_000 && pttl <= 3_600_000, "{pttl}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        server.cli(&["EXISTS", key]),
        "0",
        "Redis dropped the expired session"
    );
    assert!(s.get_session("short").await.expect("get").is_none());
    assert_eq!(s.list_sessions().await.expect("list").len(), 1);

    let (t, u) = ("claude-kiro-oauth", "k1");
    s.add_account(acct(t, u, &json!({"uuid": u})))
        .await
        .expect("add");
    s.set_token(t, u, r#"{"refreshToken":"a"}"#)
        .await
        .expect("token");
    let token_key = format!("ttl:{{pool:{t}}}:token:{u}");
    assert_eq!(
        server.cli(&["PTTL", &token_key]),
        "-1",
        "tokens never expire"
    );
    assert!(
        s.cas_token(t, u, "a", r#"{"refreshToken":"b"}"#)
            .await
            .expect("cas")
            .swapped
    );
    assert_eq!(server.cli(&["PTTL", &token_key]), "-1", "nor after a CAS");
    assert_eq!(
        server.cli(&["PTTL", &format!("ttl:{{pool:{t}}}:account:{u}")]),
        "-1"
    );
    assert!(s.acquire_lock(t, u, "me", 5000).await.expect("lock"));
    let pttl: i64 = server
        .cli(&["PTTL", &format!("ttl:{{pool:{t}}}:lock:{u}")])
        .parse()
        .expect("number");
    assert!(pttl > 0 && pttl <= 5000, "locks do expire: {pttl}");
}

/// A call while Redis is down is an error (never an empty value); after a restart calls work
/// again and the change feed announces RESYNC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_an_error_and_the_feed_resyncs_after() {
    let mut server = RedisServer::start();
    let s = open(&server, "down:", "a").await;
    s.set_config(r#"{"a":1}"#).await.expect("config");
    let mut feed = s.subscribe().await.expect("subscribe");
    server.kill();
    for e in [
        s.get_config()
            .await
            .map(|_| ())
            .expect_err("get config while down"),
        s.get_account("t", "u")
            .await
            .map(|_| ())
            .expect_err("get account while down"),
        s.list_accounts(None)
            .await
            .map(|_| ())
            .expect_err("list while down"),
        s.get_session("x")
            .await
            .map(|_| ())
            .expect_err("session while down"),
    ] {
        assert!(
            matches!(e.code, ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT),
            "{e}"
        );
        assert!(e.retryable, "{e}");
    }
    server.restart();
    // The data is gone (no persistence in the test server); what matters is that calls work
    // again and hosts are told to reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.get_config().await {
            Ok(v) => {
                assert_eq!(v, None);
                break;
            }
            Err(e) if Instant::now() < deadline => assert!(e.retryable, "{e}"),
            Err(e) => panic!("no reconnect within 10 s: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resync = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let c = feed.next().await.expect("feed").expect("open");
            if c.kind == ChangeKind::RESYNC {
                return c;
            }
        }
    })
    .await
    .expect("RESYNC after the listener reconnected");
    assert_eq!(resync.origin.as_str(), "");
    let status = s.status().await.expect("status");
    assert_eq!(status["changeFeed"]["subscribed"], true, "{status}");
    assert!(
        status["changeFeed"]["reconnects"].as_u64() >= Some(1),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_resource_exhausted() {
    let server = RedisServer::start();
    let s = open(&server, "oom:", "a").await;
    let (t, u) = ("openai-custom", "o1");
    s.add_account(acct(t, u, &json!({"uuid": u})))
        .await
        .expect("add");
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    let e = s
        .set_config(r#"{"a":1}"#)
        .await
        .expect_err("config under OOM");
    assert_eq!(e.code, ErrorCode::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.retryable);
    let e = s
        .update_state(t, u, StateUpdate::usage(1, now_ms()))
        .await
        .expect_err("script under OOM");
    assert_eq!(e.code, ErrorCode::RESOURCE_EXHAUSTED, "{e}");
    assert!(
        s.get_account(t, u)
            .await
            .expect("reads still work")
            .is_some()
    );
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let st = s
        .update_state(t, u, StateUpdate::usage(1, now_ms()))
        .await
        .expect("after OOM");
    assert_eq!(st.usage_count, 1, "the refused update changed nothing");
}

/// A tiny deterministic generator (xorshift64*), so a failure replays the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_update(r: &mut Rng, t0: i64) -> StateUpdate {
    let tri = |r: &mut Rng| match r.below(6) {
        0 => ROption::RSome(true),
        1 => ROption::RSome(false),
        _ => ROption::RNone,
    };
    let small = |r: &mut Rng| {
        if r.chance(40) {
            r.below(4) as i64 - 1
        } else {
            0
        }
    };
    StateUpdate {
        at: t0 + r.below(60_000) as i64,
        usage_delta: small(r),
        error_delta: small(r),
        refresh_delta: small(r),
        error_message: if r.chance(20) {
            ROption::RSome(RString::from(format!("e{}", r.below(9))))
        } else {
            ROption::RNone
        },
        error_window_ms: if r.chance(50) { 10_000 } else { 0 },
        unhealthy_at: if r.chance(50) { r.below(5) as i64 } else { 0 },
        healthy: tri(r),
        disabled: tri(r),
        needs_refresh: tri(r),
        scheduled_recovery_time: if r.chance(10) {
            ROption::RSome(t0 + r.below(99_999) as i64)
        } else {
            ROption::RNone
        },
        health_check_model: if r.chance(10) {
            ROption::RSome(RString::from("gpt-4o-mini"))
        } else {
            ROption::RNone
        },
        clear_errors: r.chance(7),
        reset_counters: r.chance(4),
        touch: r.chance(20),
    }
}

/// The Lua script against the reference: 1,500 random updates on accounts that start with
/// different `present` masks; after every step the returned state equals `apply`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lua_state_machine_matches_state_update_apply() {
    let server = RedisServer::start();
    let s = open(&server, "ref:", "a").await;
    let t = "openai-custom";
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let t0 = 1_700_000_000_000i64;
    let starts = [
        AccountState::default(),
        AccountState {
            present: 0,
            ..AccountState::default()
        },
        AccountState {
            usage_count: 7,
            error_count: 2,
            healthy: false,
            last_error_time: ROption::RSome(t0),
            last_error_message: ROption::RSome("old".into()),
            scheduled_recovery_time: ROption::RSome(t0 + 5),
            present: aiclient_sdk::storage::field::ALL,
            ..AccountState::default()
        },
    ];
    for (i, start) in starts.iter().enumerate() {
        let u = format!("r{i}");
        let mut a = acct(t, &u, &json!({"uuid": u}));
        a.state = start.clone();
        s.add_account(a).await.expect("add");
        assert_eq!(
            &s.get_account(t, &u)
                .await
                .expect("get")
                .expect("exists")
                .state,
            start,
            "stored as given"
        );
        let mut want = start.clone();
        for step in 0..500 {
            let up = random_update(&mut r, t0);
            up.apply(&mut want);
            let got = s.update_state(t, &u, up.clone()).await.expect("update");
            assert_eq!(got, want, "account {u} step {step}: {up:?}");
        }
        assert_eq!(
            s.get_account(t, &u)
                .await
                .expect("get")
                .expect("exists")
                .state,
            want
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_types_are_invalid_input() {
    let server = RedisServer::start();
    let e = open_with(json!({"url": server.url(0), "key_prefix": "a{b}"}))
        .await
        .err()
        .expect("braces");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    let e = open_with(json!({"url": "mysql://u:pw123@h"}))
        .await
        .err()
        .expect("bad url");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    assert!(!e.message.contains("pw123"), "{e}");
    let s = open(&server, "in:", "a").await;
    let e = s
        .add_account(acct("bad}type", "u", &json!({})))
        .await
        .expect_err("brace in type");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    // Nothing on a closed port answers: a bounded, retryable error.
    let port = aiclient_tests::redis_server::free_port();
    let started = Instant::now();
    let e = open_with(json!({"host": "127.0.0.1", "port": port, "connect_timeout_ms": 1500}))
        .await
        .err()
        .expect("nothing listens there");
    assert!(
        e.retryable && matches!(e.code, ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the connect timeout"
    );
}

/// Runs a command (openssl) and fails the test with its output if it fails.
fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rediss://`: a private CA, a server certificate for 127.0.0.1, the server's TLS port next
/// to its plain one (the harness pings the plain one). Commands and the change feed both go
/// over TLS; without the CA the connection is refused cleanly (no panic, no hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(std::process::Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=aiclient test CA",
        ]));
    run(std::process::Command::new("openssl")
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ]));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext file");
    run(std::process::Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.pem"),
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
    ]));
    let tls_port = aiclient_tests::redis_server::free_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &p("server.pem"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let s = open_with(
        json!({"url": url, "tls_ca_file": p("ca.pem"), "key_prefix": "tls:", "instance_id": "t"}),
    )
    .await
    .expect("connect over TLS");
    let status = s.status().await.expect("status");
    assert_eq!(
        (status["tls"].as_bool(), status["url"].as_str()),
        (Some(true), Some(url.as_str())),
        "{status}"
    );
    let mut feed = s.subscribe().await.expect("subscribe");
    s.set_config(r#"{"over":"tls"}"#)
        .await
        .expect("write over TLS");
    assert_eq!(
        server.cli(&["GET", "tls:{global}:config"]),
        r#"{"over":"tls"}"#
    );
    let c = tokio::time::timeout(Duration::from_secs(1), feed.next())
        .await
        .expect("in time")
        .expect("feed");
    assert_eq!(
        c.expect("open").kind,
        ChangeKind::CONFIG,
        "the feed runs over TLS too"
    );

    let e = open_with(json!({"url": url, "key_prefix": "tls:", "connect_timeout_ms": 2000}))
        .await
        .err()
        .expect("an unknown CA is refused");
    eprintln!("unknown CA → {e}");
    assert_eq!(e.code, ErrorCode::UNAVAILABLE, "{e}");
    let e = open_with(json!({"url": server.url(0), "tls_ca_file": p("ca.pem")}))
        .await
        .err()
        .expect("CA without TLS");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
}
