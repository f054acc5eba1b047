//! The file backend against the original's own files, through the real dylib: a config dir
//! built from the Node version's example shapes (`tests/fixtures/configs-example`) is served
//! as it is and rewritten only where something changed; data survives a reopen; a malformed
//! file stops startup untouched; counters coalesce without starving; token files land where
//! the original would look; and a reader never sees a half-written file.
//!
//! Every test works on its own copy of the fixture (as `configs/` in a temp dir, so the
//! accounts' `./configs/...` paths resolve as they do for the original).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::{merge_account, now_ms};
use aiclient_sdk::storage::{Account, AccountState, PluginState, Session, StateUpdate};
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value, json};

const KIRO: &str = "claude-kiro-oauth";
const KIRO1: &str = "2c69d0ac-b86f-43d8-9d17-0d300afc5cfd";
const KIRO2: &str = "7482abe6-8083-4288-bb7d-d8ecb7c461e2";
const GEMINI: &str = "gemini-cli-oauth";
const GEMINI1: &str = "ac200154-26b8-4f5f-8650-e8cc738b06e3";
const GEMINI2: &str = "4f8afcc2-a9bb-4b96-bb50-3b9667a71f54";
const QWEN: (&str, &str) = ("openai-qwen-oauth", "658a2114-c4c9-d713-b8d4-ceabf0e0bf18");
const IFLOW: &str = "openai-iflow";
const IFLOW1: &str = "11223344-5566-7788-99aa-bbccddeeff00";
const IFLOW2: &str = "aabbccdd-eeff-0011-2233-445566778899";
const CODEX: (&str, &str) = ("openai-codex-oauth", "5d1c0f7e-2b3a-4c5d-8e9f-0a1b2c3d4e5f");
const CUSTOM: (&str, &str) = ("openai-custom", "2f579c65-d3c5-41b1-9985-9f6e3d7bf39c");
const CLAUDE: (&str, &str) = ("claude-custom", "bb87047a-3b1d-4249-adbb-1087ecd58128");

const KIRO1_TOKEN: &str = "kiro/1748570000000_kiro-auth-token/1748570000000_kiro-auth-token.json";
const GEMINI1_TOKEN: &str = "gemini/1748570000001_oauth_creds.json";
const QWEN_TOKEN: &str = "qwen/1748570000002_oauth_creds.json";
const IFLOW1_TOKEN: &str = "iflow/iflow_token.json";
const IFLOW2_TOKEN: &str = "iflow/1748570000003_oauth_creds.json";
const CODEX_TOKEN: &str = "codex/1748570000000_codex-user@example.com_oauth_creds.json";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs-example")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(from).expect("list fixture") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).expect("copy fixture file");
        }
    }
}

/// A temp dir with a copy of the fixture as `configs/`; returns the guard and the config dir
/// (canonical, as the backend names it in messages).
fn example_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("configs");
    copy_dir(&fixture(), &dir);
    let dir = fs::canonicalize(&dir).expect("canonical config dir");
    (tmp, dir)
}

fn empty_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("configs");
    fs::create_dir_all(&dir).expect("create config dir");
    let dir = fs::canonicalize(&dir).expect("canonical config dir");
    (tmp, dir)
}

async fn try_open(dir: &Path, flush_interval_ms: u64) -> Result<Storage, PluginError> {
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_file"))
        .expect("load the file backend");
    let config = json!({"config_dir": dir, "instance_id": "file-test", "flush_interval_ms": flush_interval_ms});
    create_storage(&lib, &config).await
}

async fn open(dir: &Path) -> Storage {
    try_open(dir, 1000).await.expect("open the config dir")
}

fn read_json(p: &Path) -> Value {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).expect("JSON")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("serialise")
}

/// The object of account `u` in a `provider_pools.json` value.
fn entry_mut<'a>(pools: &'a mut Value, t: &str, u: &str) -> &'a mut Map<String, Value> {
    pools[t]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|e| e["uuid"] == u))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no {t}/{u} in the pools file"))
}

fn ms(iso: &str) -> i64 {
    aiclient_sdk::account::parse_time_exact(iso).expect("an ISO time")
}

async fn token(s: &Storage, t: &str, u: &str) -> Option<Value> {
    s.get_token(t, u)
        .await
        .expect("get token")
        .map(|j| parse(&j))
}

async fn writes_of(s: &Storage, file: &str) -> u64 {
    let st = s.status().await.expect("status");
    st["writesByFile"][file].as_u64().unwrap_or(0)
}

/// (1) The fixture is served exactly; after changes and a flush only the changed values differ
/// on disk, in the original formatting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_is_served_and_rewritten_only_where_changed() {
    let (_tmp, dir) = example_dir();
    let original_pools = read_json(&dir.join("provider_pools.json"));
    let s = open(&dir).await;

    // Accounts: every valid entry, in file order; an empty pool and an entry without uuid are
    // not served.
    let types = s.list_provider_types().await.expect("types");
    assert_eq!(
        types,
        [KIRO, GEMINI, QWEN.0, IFLOW, CODEX.0, CUSTOM.0, CLAUDE.0],
        "types with accounts, in file order"
    );
    let all = s.list_accounts(None).await.expect("list");
    assert_eq!(all.len(), 10);
    for a in &all {
        // Config + state put back together is the file's object, field for field.
        let merged = Value::Object(merge_account(a).expect("merge"));
        let want = original_pools[a.provider_type.as_str()]
            .as_array()
            .and_then(|arr| arr.iter().find(|e| e["uuid"] == a.uuid.as_str()))
            .expect("served account is in the file");
        assert_eq!(&merged, want, "{}/{}", a.provider_type, a.uuid);
    }
    let k1 = s
        .get_account(KIRO, KIRO1)
        .await
        .expect("get")
        .expect("kiro-1");
    assert_eq!(k1.state.usage_count, 1523);
    assert_eq!(
        k1.state.last_used.into_option(),
        Some(ms("2025-11-07T08:00:01.234Z"))
    );
    let k1cfg = parse(&k1.config);
    assert_eq!(
        k1cfg["_lastSelectionSeq"],
        json!(12345678901234567u64),
        "a 17-digit integer stays exact"
    );
    assert_eq!(k1cfg["notSupportedModels"], json!([]));
    assert!(
        k1cfg.get("usageCount").is_none(),
        "state fields are not in the config"
    );
    let k2 = s
        .get_account(KIRO, KIRO2)
        .await
        .expect("get")
        .expect("kiro-2");
    assert!(!k2.state.healthy);
    assert_eq!(k2.state.error_count, 3);
    assert_eq!(
        k2.state
            .last_error_message
            .as_ref()
            .map(|m| m.as_str())
            .into_option(),
        Some("401 Unauthorized")
    );
    assert_eq!(parse(&k2.config)["customName"], Value::Null);
    let g1 = parse(
        &s.get_account(GEMINI, GEMINI1)
            .await
            .expect("get")
            .expect("g1")
            .config,
    );
    assert_eq!(
        g1["zzExtra"],
        json!({"nested": [], "empty": {}, "n": 1234567890123456789u64, "ratio": 0.75})
    );
    let cl = s
        .get_account(CLAUDE.0, CLAUDE.1)
        .await
        .expect("get")
        .expect("claude");
    assert_eq!(cl.state.usage_count, 9007199254740993);
    assert_eq!(
        parse(&cl.config)["lastUsed"],
        "yesterday",
        "an unparseable time stays in the config verbatim"
    );

    // Tokens: each account's file, in the provider's own shape.
    for (t, u, file) in [
        (KIRO, KIRO1, KIRO1_TOKEN),
        (GEMINI, GEMINI1, GEMINI1_TOKEN),
        (QWEN.0, QWEN.1, QWEN_TOKEN),
        (IFLOW, IFLOW1, IFLOW1_TOKEN),
        (IFLOW, IFLOW2, IFLOW2_TOKEN),
        (CODEX.0, CODEX.1, CODEX_TOKEN),
    ] {
        assert_eq!(
            token(&s, t, u).await,
            Some(read_json(&dir.join(file))),
            "token of {t}/{u}"
        );
    }
    assert_eq!(
        token(&s, KIRO, KIRO1).await.expect("kiro token")["refreshToken"],
        "aor-mock-refresh-1"
    );
    assert_eq!(token(&s, GEMINI, GEMINI2).await, None, "no path, no token");
    assert_eq!(token(&s, CUSTOM.0, CUSTOM.1).await, None);

    // The other documents.
    let config = parse(&s.get_config().await.expect("config").expect("present"));
    assert_eq!(config, read_json(&dir.join("config.json")));
    assert_eq!(config["zzOperatorNote"]["big"], json!(12345678901234567u64));
    assert_eq!(config["redis"]["keyPrefix"], "aiclient:");
    let usage = parse(&s.get_usage_cache().await.expect("usage").expect("present"));
    assert_eq!(usage, read_json(&dir.join("usage-cache.json")));
    let mut plugins = s.list_plugin_states().await.expect("plugins");
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let flags: Vec<(&str, bool)> = plugins
        .iter()
        .map(|p| (p.name.as_str(), p.enabled))
        .collect();
    assert_eq!(
        flags,
        [
            ("ai-monitor", false),
            ("api-potluck", false),
            ("default-auth", true)
        ]
    );
    assert_eq!(
        parse(&plugins[1].extra),
        json!({"description": "Shared key pool", "zzOwner": ["ops"]})
    );
    assert_eq!(
        s.get_password_hash().await.expect("pwd").as_deref(),
        Some("s3cret-legacy"),
        "legacy plaintext, as is"
    );
    let live = s
        .get_session("live-session-key")
        .await
        .expect("session")
        .expect("the live session");
    assert_eq!(live.expires_at, 4102444800000);
    assert_eq!(parse(&live.data)["username"], "admin");
    assert!(
        s.get_session("expired-session-key")
            .await
            .expect("session")
            .is_none(),
        "expired: never returned"
    );
    assert_eq!(s.list_sessions().await.expect("sessions").len(), 1);

    // Change some of it.
    let t0 = ms("2025-11-08T00:00:00.000Z");
    s.update_state(KIRO, KIRO1, StateUpdate::usage(3, t0))
        .await
        .expect("usage");
    s.update_state(QWEN.0, QWEN.1, StateUpdate::error(1, t0, "upstream 500"))
        .await
        .expect("error");
    let new_kiro = json!({
        "accessToken": "aoa-mock-access-2", "refreshToken": "aor-mock-refresh-2",
        "profileArn": "arn:aws:codewhisperer:us-east-1:111122223333:profile/ABC",
        "expiresAt": "2026-05-30T05:00:00.000Z", "authMethod": "social", "provider": "Google", "region": "us-east-1"
    });
    let cas = s
        .cas_token(KIRO, KIRO1, "aor-mock-refresh-1", &new_kiro.to_string())
        .await
        .expect("cas");
    assert!(cas.swapped);
    let mut potluck = plugins[1].clone();
    potluck.enabled = true;
    s.set_plugin_state(potluck).await.expect("toggle plugin");
    s.set_password_hash("pbkdf2:00ff:abcd")
        .await
        .expect("password");
    let now = now_ms();
    let data = json!({"username": "admin", "loginTime": now, "expiryTime": now + 3_600_000});
    let new_session = Session {
        token_hash: "new-hash".into(),
        data: data.to_string().into(),
        expires_at: now + 3_600_000,
    };
    s.create_session(new_session).await.expect("session");
    s.flush().await.expect("flush");

    // provider_pools.json: the original with exactly the changed values, same key order and
    // the original's formatting (2-space JSON, no trailing newline).
    let mut want = original_pools.clone();
    let k1 = entry_mut(&mut want, KIRO, KIRO1);
    k1.insert("usageCount".into(), json!(1526));
    k1.insert("lastUsed".into(), json!("2025-11-08T00:00:00.000Z"));
    let q = entry_mut(&mut want, QWEN.0, QWEN.1);
    q.insert("errorCount".into(), json!(2));
    q.insert("lastErrorTime".into(), json!("2025-11-08T00:00:00.000Z"));
    q.insert("lastErrorMessage".into(), json!("upstream 500"));
    let on_disk = fs::read_to_string(dir.join("provider_pools.json")).expect("read pools");
    assert_eq!(parse(&on_disk), want, "only the changed values differ");
    assert_eq!(
        on_disk,
        pretty(&want),
        "same key order and formatting as the original's writes"
    );
    assert_eq!(want["openaiResponses-custom"], json!([]));

    // The Kiro token: rewritten in place, camelCase, nothing new next to it.
    let kiro_file = fs::read_to_string(dir.join(KIRO1_TOKEN)).expect("kiro token file");
    assert_eq!(kiro_file, pretty(&new_kiro));
    let kiro_dir: Vec<_> = fs::read_dir(dir.join("kiro"))
        .expect("kiro dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(kiro_dir.len(), 1, "no new file in kiro/: {kiro_dir:?}");

    let mut want_plugins = read_json(&fixture().join("plugins.json"));
    want_plugins["plugins"]["api-potluck"]["enabled"] = json!(true);
    assert_eq!(
        fs::read_to_string(dir.join("plugins.json")).expect("plugins"),
        pretty(&want_plugins)
    );
    assert_eq!(
        fs::read_to_string(dir.join("pwd")).expect("pwd"),
        "pbkdf2:00ff:abcd",
        "the hash replaces the plaintext"
    );
    let sessions = read_json(&dir.join("token-store.json"));
    let keys: Vec<&String> = sessions["tokens"]
        .as_object()
        .expect("tokens")
        .keys()
        .collect();
    assert_eq!(
        keys,
        ["live-session-key", "new-hash"],
        "the expired session is pruned on write"
    );
    assert_eq!(sessions["tokens"]["new-hash"], data);
    assert_eq!(
        sessions["zzStoreVersion"], 2,
        "unknown top-level keys survive"
    );

    // Untouched files are untouched, byte for byte.
    for file in [
        "config.json",
        "usage-cache.json",
        GEMINI1_TOKEN,
        QWEN_TOKEN,
        IFLOW1_TOKEN,
        IFLOW2_TOKEN,
        CODEX_TOKEN,
    ] {
        assert_eq!(
            fs::read(dir.join(file)).expect("read"),
            fs::read(fixture().join(file)).expect("read fixture"),
            "{file} was not rewritten"
        );
    }

    let st = s.status().await.expect("status");
    assert_eq!(st["backend"], "file");
    assert_eq!(st["connected"], true);
    assert_eq!(st["configDir"], dir.display().to_string());
    assert_eq!(st["pendingWrites"], 0);
    assert_eq!(st["lastWriteError"], Value::Null);
    assert!(
        !st.to_string().contains("pbkdf2"),
        "status never shows the password: {st}"
    );
}

/// Everything a backend serves, as one comparable value.
async fn dump(s: &Storage) -> Value {
    let mut accounts = Map::new();
    for a in s.list_accounts(None).await.expect("list") {
        let tok = token(s, &a.provider_type, &a.uuid).await;
        accounts.insert(
            format!("{}/{}", a.provider_type, a.uuid),
            json!({"config": parse(&a.config), "state": format!("{:?}", a.state), "token": tok}),
        );
    }
    let mut plugins: Vec<Value> = s
        .list_plugin_states()
        .await
        .expect("plugins")
        .iter()
        .map(|p| json!([p.name.as_str(), p.enabled, parse(&p.extra)]))
        .collect();
    plugins.sort_by_key(|p| p[0].as_str().unwrap_or_default().to_string());
    let mut sessions: Vec<Value> = s
        .list_sessions()
        .await
        .expect("sessions")
        .iter()
        .map(|x| json!([x.token_hash.as_str(), parse(&x.data), x.expires_at]))
        .collect();
    sessions.sort_by_key(|x| x[0].as_str().unwrap_or_default().to_string());
    let doc = |o: Option<String>| o.map(|j| parse(&j));
    json!({
        "types": s.list_provider_types().await.expect("types"),
        "accounts": accounts,
        "config": doc(s.get_config().await.expect("config")),
        "usage": doc(s.get_usage_cache().await.expect("usage")),
        "meta": doc(s.get_meta().await.expect("meta")),
        "password": s.get_password_hash().await.expect("pwd"),
        "plugins": plugins,
        "sessions": sessions,
    })
}

/// (2) What one instance wrote, the next instance on the same dir serves identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_after_writes_returns_the_same_data() {
    let (_tmp, dir) = example_dir();
    let before = {
        let s = open(&dir).await;
        let t0 = ms("2025-11-09T10:00:00.000Z");
        s.update_state(KIRO, KIRO2, StateUpdate::mark_healthy(t0))
            .await
            .expect("healthy");
        s.update_state(
            GEMINI,
            GEMINI1,
            StateUpdate {
                at: t0,
                health_check_model: abi_stable::std_types::ROption::RSome("gemini-2.5-pro".into()),
                ..StateUpdate::usage(7, t0)
            },
        )
        .await
        .expect("usage + health check");
        s.update_state(CUSTOM.0, CUSTOM.1, StateUpdate::set_disabled(true))
            .await
            .expect("disable");
        s.update_account(
            CUSTOM.0,
            CUSTOM.1,
            &json!({"customName": "renamed", "notSupportedModels": [], "checkModelName": null}),
        )
        .await
        .expect("patch");
        let fresh = Account {
            provider_type: "openai-qwen-oauth".into(),
            uuid: "new-qwen".into(),
            config: json!({"customName": "added", "uuid": "new-qwen", "QWEN_BASE_URL": "", "limits": [], "n": 98765432109876543u64}).to_string().into(),
            state: AccountState::default(),
        };
        s.add_account(fresh).await.expect("add");
        s.set_token("openai-qwen-oauth", "new-qwen", &json!({"access_token": "a", "refresh_token": "r", "resource_url": "portal.qwen.ai", "expiry_date": 1767225600000i64}).to_string())
            .await
            .expect("token for the new account");
        assert!(
            s.delete_account(CODEX.0, CODEX.1)
                .await
                .expect("delete codex")
        );
        let mut config = parse(&s.get_config().await.expect("config").expect("present"));
        config["REQUIRED_API_KEY"] = json!("changed-key");
        s.set_config(&config.to_string()).await.expect("config");
        s.set_usage_cache(
            &json!({"timestamp": "2025-11-09T10:00:00.000Z", "providers": {}}).to_string(),
        )
        .await
        .expect("usage");
        s.set_meta(&json!({"schemaVersion": 1, "migratedFrom": "node"}).to_string())
            .await
            .expect("meta");
        s.set_plugin_state(PluginState {
            name: "new-plugin".into(),
            enabled: true,
            extra: r#"{"description":"d"}"#.into(),
        })
        .await
        .expect("plugin");
        s.set_password_hash("pbkdf2:aa:bb").await.expect("pwd");
        s.flush().await.expect("flush");
        dump(&s).await
    };
    let usage = read_json(&dir.join("usage-cache.json"));
    assert_eq!(
        usage["zzCacheNote"], "kept",
        "an unknown top-level key of the usage cache survives a replace"
    );
    assert!(
        !dir.join(CODEX_TOKEN).exists(),
        "the deleted account's own token file is gone"
    );
    let after = dump(&open(&dir).await).await;
    assert_eq!(after, before);
    assert_eq!(
        after["accounts"][format!("{}/{}", CUSTOM.0, CUSTOM.1)]["config"]["customName"],
        "renamed"
    );
    assert!(
        after["accounts"]
            .get(format!("{}/{}", CODEX.0, CODEX.1))
            .is_none()
    );
}

/// (3) A malformed file stops startup with its path and position, and stays byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_fail_startup_naming_path_and_position() {
    let (_tmp, dir) = example_dir();
    let pools = dir.join("provider_pools.json");
    let broken = "{\n  \"openai-custom\": [\n    {\"uuid\": \"a\", \"OPENAI_API_KEY\": \"k\"}\n    {\"uuid\": \"b\"}\n  ]\n}";
    fs::write(&pools, broken).expect("write a broken pools file");
    let listing = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(&dir);
    let err = try_open(&dir, 1000)
        .await
        .err()
        .expect("a malformed pools file fails create");
    assert_eq!(err.code, ErrorCode::INVALID_INPUT, "{err}");
    assert!(
        err.message().contains(&pools.display().to_string()),
        "names the file: {err}"
    );
    assert!(
        err.message().contains("line 4, column 5"),
        "names the position: {err}"
    );
    assert_eq!(
        fs::read_to_string(&pools).expect("read"),
        broken,
        "the file is untouched"
    );
    assert_eq!(
        listing(&dir),
        files_before,
        "nothing was written next to it"
    );

    // A token file is checked the same way.
    fs::copy(fixture().join("provider_pools.json"), &pools).expect("restore pools");
    let qwen = dir.join(QWEN_TOKEN);
    fs::write(&qwen, "{\"access_token\": \"x\",}").expect("break a token file");
    let err = try_open(&dir, 1000)
        .await
        .err()
        .expect("a malformed token file fails create");
    assert!(err.message().contains(&qwen.display().to_string()), "{err}");
    assert!(err.message().contains("line 1, column 22"), "{err}");
    assert_eq!(
        fs::read_to_string(&qwen).expect("read"),
        "{\"access_token\": \"x\",}"
    );

    // So is a file of the wrong shape.
    fs::copy(fixture().join(QWEN_TOKEN), &qwen).expect("restore token");
    fs::write(dir.join("plugins.json"), r#"{"plugins": []}"#).expect("wrong shape");
    let err = try_open(&dir, 1000)
        .await
        .err()
        .expect("plugins must be an object");
    assert!(err.message().contains("plugins.json"), "{err}");
    fs::copy(fixture().join("plugins.json"), dir.join("plugins.json")).expect("restore plugins");
    open(&dir).await;
}

/// (4) 10,000 increments cost a handful of writes, and the values are exact after a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_coalesce_into_few_writes_and_stay_exact() {
    let (_tmp, dir) = empty_dir();
    let interval_ms = 250;
    let s = try_open(&dir, interval_ms).await.expect("open");
    let (t, u) = ("claude-custom", "hot");
    s.add_account(Account {
        provider_type: t.into(),
        uuid: u.into(),
        config: json!({"uuid": u}).to_string().into(),
        state: AccountState::default(),
    })
    .await
    .expect("add");
    s.flush().await.expect("flush");
    let w0 = writes_of(&s, "provider_pools.json").await;
    assert!(w0 >= 1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1250 {
                s.update_state(t, u, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    s.flush().await.expect("flush");
    let writes = writes_of(&s, "provider_pools.json").await - w0;
    // One write per tick begun in the window (the first may start right away), plus the
    // flush's own, plus one the writer may still have had in flight when `w0` was read.
    let bound = (elapsed.as_millis() as u64).div_ceil(interval_ms) + 3;
    assert!(
        writes <= bound,
        "{writes} writes for 10,000 increments in {elapsed:?} (bound {bound})"
    );
    assert!(writes < 100, "far fewer writes than increments: {writes}");
    assert_eq!(
        s.get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state
            .usage_count,
        10_000
    );
    let on_disk = read_json(&dir.join("provider_pools.json"));
    assert_eq!(
        on_disk[t][0]["usageCount"], 10_000,
        "exact on disk after flush"
    );
}

/// (4b) Sustained traffic cannot postpone the write (the original's debounce could).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_traffic_does_not_starve_the_writer() {
    let (_tmp, dir) = empty_dir();
    let s = try_open(&dir, 100).await.expect("open");
    let (t, u) = ("openai-custom", "busy");
    s.add_account(Account {
        provider_type: t.into(),
        uuid: u.into(),
        config: json!({"uuid": u}).to_string().into(),
        state: AccountState::default(),
    })
    .await
    .expect("add");
    s.flush().await.expect("flush");
    let w0 = writes_of(&s, "provider_pools.json").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worker = {
        let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                s.update_state(t, u, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("increment");
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Still under traffic: the file already carries counts.
    let seen = read_json(&dir.join("provider_pools.json"))[t][0]["usageCount"]
        .as_i64()
        .unwrap_or(0);
    let writes_during = writes_of(&s, "provider_pools.json").await - w0;
    stop.store(true, Ordering::Relaxed);
    worker.await.expect("worker");
    assert!(
        seen > 0,
        "the counters reached the disk while traffic continued"
    );
    assert!(
        writes_during >= 3,
        "about one write per 100 ms tick under traffic, got {writes_during} in 1.5 s"
    );
    s.flush().await.expect("flush");
    let total = done.load(Ordering::Relaxed) as i64;
    assert_eq!(
        read_json(&dir.join("provider_pools.json"))[t][0]["usageCount"],
        total
    );
}

/// (5) Tokens without a path get a new file the account then references; existing files are
/// rewritten in place in their own shape; deletion never touches files it does not own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_files_are_placed_rewritten_and_deleted_like_the_original() {
    let (tmp, dir) = example_dir();
    let s = open(&dir).await;

    // No path yet: a new file under the provider's directory, referenced the original's way.
    let g2_token = json!({"access_token": "g2-at", "refresh_token": "g2-rt", "token_type": "Bearer", "expiry_date": 1767225600000i64});
    s.set_token(GEMINI, GEMINI2, &g2_token.to_string())
        .await
        .expect("set g2");
    let g2 = parse(
        &s.get_account(GEMINI, GEMINI2)
            .await
            .expect("get")
            .expect("g2")
            .config,
    );
    let g2_ref = format!("./configs/gemini/{GEMINI2}.json");
    assert_eq!(g2["GEMINI_OAUTH_CREDS_FILE_PATH"], g2_ref.as_str());
    s.set_token(
        KIRO,
        KIRO2,
        r#"{"accessToken":"k2-at","refreshToken":"k2-rt","authMethod":"social"}"#,
    )
    .await
    .expect("set k2");
    let k2 = parse(
        &s.get_account(KIRO, KIRO2)
            .await
            .expect("get")
            .expect("k2")
            .config,
    );
    let k2_ref = format!("./configs/kiro/{KIRO2}/{KIRO2}.json");
    assert_eq!(
        k2["KIRO_OAUTH_CREDS_FILE_PATH"],
        k2_ref.as_str(),
        "a Kiro token gets a folder of its own"
    );
    s.set_token(CUSTOM.0, CUSTOM.1, r#"{"api_key":"x"}"#)
        .await
        .expect("set on a type without a token dir");
    let custom = parse(
        &s.get_account(CUSTOM.0, CUSTOM.1)
            .await
            .expect("get")
            .expect("custom")
            .config,
    );
    assert_eq!(
        custom["OPENAI_CUSTOM_TOKEN_FILE_PATH"],
        format!("./configs/tokens/openai-custom/{}.json", CUSTOM.1)
    );

    // Existing files: rewritten where they are, in their own shape.
    let qwen_new = json!({"access_token": "mock-qat-2", "token_type": "Bearer", "refresh_token": "mock-qrt-B", "resource_url": "portal.qwen.ai", "expiry_date": 1767229200000i64});
    assert!(
        s.cas_token(QWEN.0, QWEN.1, "mock-qrt-A", &qwen_new.to_string())
            .await
            .expect("cas")
            .swapped
    );
    let iflow_new = json!({"access_token": "i2-at-2", "refresh_token": "i2-rt-2", "expiry_date": "1767229200000", "token_type": "Bearer", "scope": "", "apiKey": "sk-mock-iflow-2"});
    s.set_token(IFLOW, IFLOW2, &iflow_new.to_string())
        .await
        .expect("set iflow 2");
    let kiro_new = json!({"accessToken": "aoa-2", "refreshToken": "aor-2", "expiresAt": "2026-05-30T05:00:00.000Z", "authMethod": "social"});
    s.set_token(KIRO, KIRO1, &kiro_new.to_string())
        .await
        .expect("set kiro 1");
    s.flush().await.expect("flush");

    assert_eq!(
        fs::read_to_string(dir.join(format!("gemini/{GEMINI2}.json"))).expect("new gemini file"),
        pretty(&g2_token)
    );
    assert_eq!(
        read_json(&dir.join(format!("kiro/{KIRO2}/{KIRO2}.json")))["refreshToken"],
        "k2-rt"
    );
    assert_eq!(
        fs::read_to_string(dir.join(QWEN_TOKEN)).expect("qwen"),
        pretty(&qwen_new),
        "snake_case, in place"
    );
    assert_eq!(
        fs::read_to_string(dir.join(IFLOW2_TOKEN)).expect("iflow"),
        pretty(&iflow_new)
    );
    let kiro_text = fs::read_to_string(dir.join(KIRO1_TOKEN)).expect("kiro");
    assert_eq!(kiro_text, pretty(&kiro_new), "camelCase, in place");
    let pools = read_json(&dir.join("provider_pools.json"));
    let find = |t: &str, u: &str| {
        pools[t]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["uuid"] == u))
            .cloned()
            .expect("entry")
    };
    assert_eq!(
        find(GEMINI, GEMINI2)["GEMINI_OAUTH_CREDS_FILE_PATH"],
        g2_ref.as_str(),
        "the pools file records the new path"
    );
    let i2 = find(IFLOW, IFLOW2);
    assert!(
        i2.get("IFLOW_TOKEN_FILE_PATH").is_none(),
        "the UI form's field is used as it is"
    );
    assert_eq!(
        i2["IFLOW_OAUTH_CREDS_FILE_PATH"],
        format!("./configs/{IFLOW2_TOKEN}")
    );

    // An operator's file outside the config dir: served, updated, never deleted.
    let outside = tmp.path().join("elsewhere/creds.json");
    fs::create_dir_all(outside.parent().expect("parent")).expect("mkdir");
    fs::write(&outside, r#"{"access_token":"o","refresh_token":"o-rt"}"#)
        .expect("write outside file");
    let acct = |u: &str, path: &str| Account {
        provider_type: GEMINI.into(),
        uuid: u.into(),
        config: json!({"uuid": u, "GEMINI_OAUTH_CREDS_FILE_PATH": path})
            .to_string()
            .into(),
        state: AccountState::default(),
    };
    s.add_account(acct("outside", &outside.display().to_string()))
        .await
        .expect("add outside");
    assert_eq!(
        token(&s, GEMINI, "outside").await.expect("outside token")["refresh_token"],
        "o-rt"
    );
    assert!(s.delete_account(GEMINI, "outside").await.expect("delete"));
    // A file inside the config dir shared by two accounts survives the first deletion.
    fs::write(
        dir.join("gemini/shared.json"),
        r#"{"refresh_token":"shared"}"#,
    )
    .expect("write shared");
    s.add_account(acct("share-1", "./configs/gemini/shared.json"))
        .await
        .expect("add share-1");
    s.add_account(acct("share-2", "configs/gemini/../gemini/shared.json"))
        .await
        .expect("add share-2");
    assert!(
        s.delete_account(GEMINI, "share-1")
            .await
            .expect("delete share-1")
    );
    assert!(s.delete_account(GEMINI, GEMINI2).await.expect("delete g2"));
    assert!(
        s.delete_token(KIRO, KIRO1)
            .await
            .expect("delete kiro-1 token")
    );
    s.flush().await.expect("flush");
    assert!(
        outside.exists(),
        "a file outside the config dir is never deleted"
    );
    assert!(
        dir.join("gemini/shared.json").exists(),
        "still referenced by share-2"
    );
    assert!(
        !dir.join(format!("gemini/{GEMINI2}.json")).exists(),
        "g2's own file went with it"
    );
    assert!(
        !dir.join(KIRO1_TOKEN).exists(),
        "delete_token removes an owned file"
    );
    assert!(
        !dir.join(KIRO1_TOKEN).parent().expect("parent").exists(),
        "and its now empty per-account folder"
    );
    assert_eq!(token(&s, KIRO, KIRO1).await, None);
    let k1 = parse(
        &s.get_account(KIRO, KIRO1)
            .await
            .expect("get")
            .expect("k1")
            .config,
    );
    assert!(
        k1.get("KIRO_OAUTH_CREDS_FILE_PATH").is_some(),
        "the path stays; a new token goes back there"
    );
    assert!(
        s.delete_account(GEMINI, "share-2")
            .await
            .expect("delete share-2")
    );
    s.flush().await.expect("flush");
    assert!(
        !dir.join("gemini/shared.json").exists(),
        "the last reference gone, the file goes"
    );
    assert!(dir.join("gemini").is_dir(), "the provider directory stays");
}

/// (6) Under heavy writes, every read of the files sees a complete, parseable document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_half_written_file() {
    let (_tmp, dir) = empty_dir();
    let s = try_open(&dir, 5).await.expect("open");
    let t = "openai-qwen-oauth";
    for i in 0..40 {
        let u = format!("q{i}");
        s.add_account(Account {
            provider_type: t.into(),
            uuid: u.as_str().into(),
            config: json!({"uuid": u, "customName": "x".repeat(200), "notSupportedModels": []})
                .to_string()
                .into(),
            state: AccountState::default(),
        })
        .await
        .expect("add");
        s.set_token(t, &u, &json!({"access_token": "a", "refresh_token": format!("r-{i}"), "pad": "y".repeat(2000)}).to_string())
            .await
            .expect("token");
    }
    s.flush().await.expect("flush");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let files = [dir.join("provider_pools.json"), dir.join("qwen/q0.json")];
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for f in &files {
                    let text = fs::read_to_string(f).expect("the file is always there");
                    if let Err(e) = serde_json::from_str::<Value>(&text) {
                        bad.push(format!("{}: {e} ({} bytes)", f.display(), text.len()));
                    }
                    reads += 1;
                }
            }
            (reads, bad)
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < Duration::from_millis(1500) {
                let u = format!("q{}", (w * 7 + n) % 40);
                s.update_state(t, &u, StateUpdate::usage(1, now_ms())).await.expect("increment");
                if n.is_multiple_of(50) {
                    let tok = json!({"access_token": format!("a{n}"), "refresh_token": format!("r{w}-{n}"), "pad": "z".repeat(3000)});
                    s.set_token(t, "q0", &tok.to_string()).await.expect("token");
                    s.update_account(t, &u, &json!({"customName": format!("n{n}")})).await.expect("patch");
                }
                n += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    s.flush().await.expect("flush");
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().expect("reader");
    assert!(
        bad.is_empty(),
        "{} of {reads} reads saw a broken file: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    assert!(reads > 100, "the reader raced the writer ({reads} reads)");
    let st = s.status().await.expect("status");
    assert!(
        st["writes"].as_u64().unwrap_or(0) > 20,
        "many writes happened meanwhile: {st}"
    );
    let leftovers: Vec<String> = fs::read_dir(&dir)
        .expect("list")
        .chain(fs::read_dir(dir.join("qwen")).expect("list qwen"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("aiclient-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}
