//! `aiclient migrate`, `export` and `init` end to end: the real binary, the real backend
//! plugins, a private redis-server per test.
//!
//! The fixture is generated per test (`Fixture::generate`): an AIClient-2-API `configs/` dir
//! with six provider types and 53 accounts, token files in the Kiro, Gemini, Qwen, iFlow and
//! Codex formats (referenced as `./configs/…` and `configs/…`, through both iFlow fields),
//! live and expired sessions keyed by raw tokens, a usage cache, plugin states, a legacy
//! plaintext `pwd`, and unknown fields everywhere the format allows them (16-digit integers,
//! `[]`, `{}`, nulls, unparseable state values, unicode).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aiclient::admin::auth::{token_hash, verify_password};
use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::storage::StateUpdate;
use aiclient_tests::artifacts;
use aiclient_tests::gateway::command;
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Map, Value, json};

const PLAIN_PASSWORD: &str = "s3cret-legacy-pw";
const FAR: i64 = 4_102_444_800_000; // 2100-01-01
const PER_TYPE: usize = 10;

struct Fixture {
    _tmp: tempfile::TempDir,
    /// `<tmp>/configs`.
    dir: PathBuf,
    /// Raw token → entry of the live sessions.
    live: Vec<(String, Value)>,
    /// Every secret value in the fixture (tokens, API keys, the password, session keys).
    secrets: Vec<String>,
}

/// 64 hex digits, distinct per seed (the shape of the original's tokens).
fn hex64(seed: usize) -> String {
    let a = (seed as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let b = a.rotate_left(61) ^ 0xdead_beef_cafe_f00d_0123_4567_89ab_cdef;
    format!("{a:032x}{b:032x}")
}

fn write_json(p: &Path, v: &Value) {
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, serde_json::to_string_pretty(v).expect("serialise")).expect("write");
}

fn read_json(p: &Path) -> Value {
    let t = fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

fn uuid(t: usize, i: usize) -> String {
    format!("{t:08x}-{i:04x}-4abc-8def-{:012x}", t * 1000 + i)
}

impl Fixture {
    fn generate() -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("configs");
        fs::create_dir_all(&dir).expect("mkdir");
        let mut secrets = vec![PLAIN_PASSWORD.to_string()];
        let mut pools = Map::new();
        let types = [
            "claude-kiro-oauth",
            "gemini-cli-oauth",
            "openai-qwen-oauth",
            "openai-iflow",
            "openai-codex-oauth",
        ];
        for (ti, t) in types.iter().enumerate() {
            let mut arr = Vec::new();
            for i in 0..PER_TYPE {
                let u = uuid(ti, i);
                let ms = 1_748_570_000_000u64 + (ti * 100 + i) as u64;
                let access = format!("acc-{t}-{i}-{}", hex64(ti * 100 + i));
                let refresh = format!("ref-{t}-{i}-{}", hex64(ti * 100 + i + 7));
                secrets.push(access.clone());
                secrets.push(refresh.clone());
                let (field, rel, token) = match *t {
                    "claude-kiro-oauth" => (
                        "KIRO_OAUTH_CREDS_FILE_PATH",
                        format!("kiro/{ms}_kiro-auth-token/{ms}_kiro-auth-token.json"),
                        json!({"accessToken": access, "refreshToken": refresh,
                               "expiresAt": "2025-11-07T09:00:00.000Z",
                               "authMethod": if i % 2 == 0 { "social" } else { "builder-id" },
                               "profileArn": format!("arn:aws:codewhisperer:us-east-1:{ms}:profile/X"),
                               "region": "us-east-1", "idcRegion": null,
                               "zzKiroExtra": {"list": [], "n": 12345678901234567u64}}),
                    ),
                    "gemini-cli-oauth" => (
                        "GEMINI_OAUTH_CREDS_FILE_PATH",
                        format!("gemini/{ms}_oauth_creds.json"),
                        json!({"access_token": access, "refresh_token": refresh,
                               "scope": "https://www.googleapis.com/auth/cloud-platform",
                               "token_type": "Bearer", "id_token": "eyJ.x.y",
                               "expiry_date": 1_762_502_400_000u64 + i as u64}),
                    ),
                    "openai-qwen-oauth" => (
                        "QWEN_OAUTH_CREDS_FILE_PATH",
                        format!("qwen/{ms}_oauth_creds.json"),
                        json!({"access_token": access, "refresh_token": refresh,
                               "token_type": "Bearer", "resource_url": "portal.qwen.ai",
                               "expiry_date": 1_762_502_400_000u64}),
                    ),
                    "openai-iflow" => (
                        if i % 2 == 0 {
                            "IFLOW_TOKEN_FILE_PATH"
                        } else {
                            "IFLOW_OAUTH_CREDS_FILE_PATH"
                        },
                        format!("iflow/{ms}_oauth_creds.json"),
                        json!({"access_token": access, "refresh_token": refresh,
                               "expiry_date": "2025-11-07 10:00", "token_type": "bearer",
                               "scope": "read", "apiKey": format!("sk-iflow-{}", hex64(i))}),
                    ),
                    _ => (
                        "CODEX_OAUTH_CREDS_FILE_PATH",
                        format!("codex/{ms}_codex-user{i}@example.com_oauth_creds.json"),
                        json!({"id_token": "eyJ.c.d", "access_token": access,
                               "refresh_token": refresh, "account_id": format!("acct-{i}"),
                               "last_refresh": "2025-11-07T08:00:00.000Z",
                               "email": format!("user{i}@example.com"), "type": "codex",
                               "expired": "2025-11-17T08:00:00.000Z"}),
                    ),
                };
                if let Some(k) = token.get("apiKey").and_then(Value::as_str) {
                    secrets.push(k.to_string());
                }
                write_json(&dir.join(&rel), &token);
                // Both spellings the original writes: `./configs/…` and `configs/…`.
                let reference = if i % 3 == 0 {
                    format!("configs/{rel}")
                } else {
                    format!("./configs/{rel}")
                };
                let mut acct = json!({
                    "customName": if i == 0 { Value::Null } else { Value::from(format!("{t} #{i} — 账号")) },
                    field: reference,
                    "uuid": u,
                    "checkModelName": "m",
                    "checkHealth": i % 2 == 0,
                    "isHealthy": i % 4 != 3,
                    "isDisabled": i == 5,
                    "usageCount": i * 37,
                    "errorCount": i % 4,
                    "lastUsed": if i % 2 == 0 { Value::from("2025-11-07T08:00:01.234Z") } else { Value::Null },
                    "lastErrorTime": null,
                    "lastErrorMessage": if i % 4 == 3 { Value::from("401 Unauthorized") } else { Value::Null },
                    "_lastSelectionSeq": 12345678901234567u64 + i as u64,
                    "notSupportedModels": [],
                    "zzExtra": {"nested": [], "empty": {}, "ratio": 0.75, "n": 1234567890123456789u64},
                });
                let o = acct.as_object_mut().expect("object");
                if i == 7 {
                    o.insert(
                        "lastHealthCheckTime".into(),
                        json!("2025-11-06T23:59:59.999Z"),
                    );
                    o.insert("lastHealthCheckModel".into(), json!("gemini-2.5-flash"));
                    o.insert(
                        "scheduledRecoveryTime".into(),
                        json!("2025-11-07T10:15:00.000Z"),
                    );
                }
                if i == 8 {
                    // Not a time the original wrote: kept verbatim in the config.
                    o.insert("lastUsed".into(), json!("yesterday"));
                    o.remove("usageCount");
                }
                if *t == "gemini-cli-oauth" {
                    o.insert("PROJECT_ID".into(), json!(format!("project-{i}")));
                }
                arr.push(acct);
            }
            pools.insert(t.to_string(), Value::Array(arr));
        }
        let mut custom = Vec::new();
        for i in 0..3 {
            let key = format!("sk-openai-{}", hex64(900 + i));
            secrets.push(key.clone());
            custom.push(
                json!({"customName": format!("OpenAI节点{i}"), "OPENAI_API_KEY": key,
                               "OPENAI_BASE_URL": "https://api.openai.com/v1", "uuid": uuid(9, i),
                               "isHealthy": true, "usageCount": 0}),
            );
        }
        pools.insert("openai-custom".into(), Value::Array(custom));
        write_json(&dir.join("provider_pools.json"), &Value::Object(pools));

        let api_key = format!("client-key-{}", hex64(1));
        secrets.push(api_key.clone());
        write_json(
            &dir.join("config.json"),
            &json!({"REQUIRED_API_KEY": api_key, "SERVER_PORT": 3000, "HOST": "0.0.0.0",
                    "MODEL_PROVIDER": "claude-kiro-oauth,gemini-cli-oauth",
                    "PROVIDER_POOLS_FILE_PATH": "configs/provider_pools.json",
                    "MAX_ERROR_COUNT": 3, "providerFallbackChain": {"gemini-cli-oauth": ["openai-qwen-oauth"]},
                    "modelFallbackMapping": {}, "PROXY_URL": null, "PROXY_ENABLED_PROVIDERS": [],
                    "zzOperatorNote": {"addedBy": "ops", "list": [], "big": 12345678901234567u64}}),
        );
        fs::write(dir.join("pwd"), format!("{PLAIN_PASSWORD}\n")).expect("pwd");
        let mut tokens = Map::new();
        let mut live = Vec::new();
        for i in 0..5 {
            let raw = hex64(5000 + i);
            secrets.push(raw.clone());
            let expired = i >= 3;
            let entry = json!({"username": "admin", "loginTime": 1_762_502_400_000u64 + i as u64,
                               "expiryTime": if expired { 1_700_000_000_000i64 } else { FAR + i as i64 }});
            if !expired {
                live.push((raw.clone(), entry.clone()));
            }
            tokens.insert(raw, entry);
        }
        write_json(&dir.join("token-store.json"), &json!({ "tokens": tokens }));
        write_json(
            &dir.join("usage-cache.json"),
            &json!({"timestamp": "2025-11-07T08:00:00.000Z",
                    "providers": {"claude-kiro-oauth": {"providerType": "claude-kiro-oauth",
                        "instances": [{"uuid": uuid(0, 1), "name": "k", "isHealthy": true,
                                       "isDisabled": false, "success": true,
                                       "usage": {"used": 12, "limit": 500}, "error": null}],
                        "totalCount": 10, "successCount": 9, "errorCount": 1}},
                    "zzCacheNote": [1, 2.5, "x"]}),
        );
        write_json(
            &dir.join("plugins.json"),
            &json!({"plugins": {
                "default-auth": {"enabled": true, "description": "Default API key auth"},
                "api-potluck": {"enabled": false, "description": "Shared key pool", "zzOwner": ["ops"]},
                "model-usage-stats": {"enabled": true, "description": "stats", "zzLimits": {"max": 5}}}}),
        );
        Fixture {
            _tmp: tmp,
            dir,
            live,
            secrets,
        }
    }

    fn accounts(&self) -> usize {
        5 * PER_TYPE + 3
    }

    fn pools(&self) -> Value {
        read_json(&self.dir.join("provider_pools.json"))
    }
}

fn run(args: &[&str]) -> Output {
    command(args).output().expect("run aiclient")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "exit {:?}:\n{t}", o.status.code());
    t
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// Every key of one db (`--scan`), with its DUMP, minus the meta key.
fn dump(r: &RedisServer, db: u32) -> BTreeMap<String, String> {
    let db = db.to_string();
    let keys = Command::new("redis-cli")
        .args(["-p", &r.port.to_string(), "-n", &db, "--scan"])
        .output()
        .expect("redis-cli --scan");
    let mut keys: Vec<String> = String::from_utf8_lossy(&keys.stdout)
        .lines()
        .filter(|k| !k.is_empty() && !k.ends_with("{global}:meta"))
        .map(str::to_string)
        .collect();
    keys.sort();
    if keys.is_empty() {
        return BTreeMap::new();
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &r.port.to_string(), "-n", &db, "--no-raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli");
    let input: String = keys.iter().map(|k| format!("DUMP \"{k}\"\n")).collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("send");
    let out = child.wait_with_output().expect("redis-cli");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), keys.len(), "one DUMP line per key");
    keys.into_iter().zip(lines).collect()
}

fn meta(r: &RedisServer, db: u32, prefix: &str) -> Value {
    let m = Command::new("redis-cli")
        .args([
            "-p",
            &r.port.to_string(),
            "-n",
            &db.to_string(),
            "GET",
            &format!("{prefix}{{global}}:meta"),
        ])
        .output()
        .expect("redis-cli");
    serde_json::from_slice(&m.stdout).expect("meta is JSON")
}

async fn open_redis(url: &str, prefix: &str) -> Storage {
    let lib = loader::load_storage(artifacts::get().lib("aiclient_backend_redis")).expect("load");
    create_storage(&lib, &json!({"url": url, "key_prefix": prefix}))
        .await
        .expect("open redis")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every file of the fixture dir is in `out` at the same relative path with equal JSON; the
/// documented transformations aside: `pwd` holds a hash of the plaintext, `token-store.json`
/// holds the live sessions under the SHA-256 of their tokens. `out` has nothing else but
/// `aiclient-meta.json`.
fn assert_exported_equal(f: &Fixture, out: &Path) {
    fn files(root: &Path, dir: &Path, acc: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                files(root, &p, acc);
            } else {
                acc.push(p.strip_prefix(root).expect("inside").to_path_buf());
            }
        }
    }
    let (mut want, mut have) = (Vec::new(), Vec::new());
    files(&f.dir, &f.dir, &mut want);
    files(out, out, &mut have);
    want.push("aiclient-meta.json".into());
    want.sort();
    have.sort();
    assert_eq!(have, want, "the same files at the same paths");
    for rel in &want {
        let (a, b) = (f.dir.join(rel), out.join(rel));
        match rel.to_str().expect("utf-8") {
            "aiclient-meta.json" => {
                let m = read_json(&b);
                assert_eq!(m["schemaVersion"], 1);
                assert_eq!(m["sessionKeys"], "sha256");
            }
            "pwd" => {
                let h = fs::read_to_string(&b).expect("pwd");
                assert!(h.starts_with("pbkdf2:"), "stored as a hash");
                assert!(
                    verify_password(PLAIN_PASSWORD, &h),
                    "the hash is of the password"
                );
            }
            "token-store.json" => {
                let tokens: Map<String, Value> = f
                    .live
                    .iter()
                    .map(|(raw, e)| (token_hash(raw), e.clone()))
                    .collect();
                assert_eq!(read_json(&b), json!({ "tokens": tokens }));
            }
            _ => assert_eq!(read_json(&b), read_json(&a), "{} differs", rel.display()),
        }
    }
}

/// A configs dir migrates to Redis completely (checked through the backend), exports back
/// equal, and a second migration changes nothing; new accounts are then added, alone.
#[test]
fn realistic_dir_migrates_to_redis_exports_back_equal_and_reruns_change_nothing() {
    let f = Fixture::generate();
    assert!(f.accounts() >= 50);
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = f.dir.to_str().expect("utf-8");

    let out = ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    assert!(out.contains("Migration complete."), "{out}");
    assert!(out.contains("all equal"), "{out}");
    let row = |out: &str, label: &str| -> Vec<u64> {
        let l = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row in:\n{out}"));
        l[l.find(label).expect("label") + label.len()..]
            .split_whitespace()
            .map(|n| n.parse().expect("a count"))
            .collect()
    };
    assert_eq!(row(&out, "provider types"), [6, 0, 0, 0]);
    assert_eq!(row(&out, "accounts"), [53, 0, 0, 0]);
    assert_eq!(row(&out, "tokens"), [50, 0, 0, 0]);
    assert_eq!(row(&out, "config"), [1, 0, 0, 0]);
    assert_eq!(row(&out, "password"), [1, 0, 0, 0]);
    assert_eq!(
        row(&out, "sessions"),
        [3, 0, 1, 0],
        "the expired ones are skipped"
    );
    assert_eq!(row(&out, "usage cache"), [1, 0, 0, 0]);
    assert_eq!(row(&out, "plugins"), [3, 0, 0, 0]);
    let m = meta(&redis, 0, "aiclient:");
    assert_eq!(m["schemaVersion"], 1);
    assert_eq!(m["lastRunStatus"], "complete");
    assert!(m["migratedFrom"].as_str().expect("source").contains(dir));
    assert!(m["migratedAt"].as_str().expect("time").ends_with('Z'));

    // What Redis holds, through the backend.
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        let accts = s.list_accounts(None).await.expect("list");
        assert_eq!(accts.len(), 53);
        let kiro: Vec<String> = s
            .list_accounts(Some("claude-kiro-oauth"))
            .await
            .expect("pool")
            .iter()
            .map(|a| a.uuid.to_string())
            .collect();
        assert_eq!(
            kiro,
            (0..PER_TYPE).map(|i| uuid(0, i)).collect::<Vec<_>>(),
            "pool order kept"
        );
        let pools = f.pools();
        for (t, list) in pools.as_object().expect("pools") {
            for e in list.as_array().expect("array") {
                let u = e["uuid"].as_str().expect("uuid");
                let a = s.get_account(t, u).await.expect("get").expect("exists");
                let merged = aiclient_sdk::account::merge_account(&a).expect("merge");
                assert_eq!(&Value::Object(merged), e, "{t}/{u} round-trips");
                let Some((_, path)) = e
                    .as_object()
                    .expect("object")
                    .iter()
                    .find(|(k, _)| k.ends_with("_FILE_PATH"))
                else {
                    continue;
                };
                let file = f
                    .dir
                    .parent()
                    .expect("root")
                    .join(path.as_str().expect("path"));
                let tok = s
                    .get_token(t, u)
                    .await
                    .expect("token")
                    .expect("stored under the uuid");
                assert_eq!(
                    serde_json::from_str::<Value>(&tok).expect("JSON"),
                    read_json(&file)
                );
            }
        }
        for (raw, entry) in &f.live {
            let sess = s
                .get_session(&token_hash(raw))
                .await
                .expect("session")
                .expect("a live session is found by the hash of its token");
            assert_eq!(sess.expires_at, entry["expiryTime"].as_i64().expect("ms"));
            assert!(
                s.get_session(raw).await.expect("get").is_none(),
                "never under the raw token"
            );
        }
        assert_eq!(s.list_sessions().await.expect("list").len(), 3);
        let pw = s.get_password_hash().await.expect("pw").expect("set");
        assert!(verify_password(PLAIN_PASSWORD, &pw));
    });

    // A second run changes nothing.
    let before = dump(&redis, 0);
    assert!(before.len() > 100, "{} keys", before.len());
    let out = ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    assert_eq!(row(&out, "accounts"), [0, 53, 0, 0], "{out}");
    assert_eq!(row(&out, "tokens"), [0, 50, 0, 0], "{out}");
    assert_eq!(row(&out, "password"), [0, 1, 0, 0], "{out}");
    assert_eq!(row(&out, "sessions"), [0, 3, 1, 0], "{out}");
    assert_eq!(dump(&redis, 0), before, "byte-identical apart from meta");

    // Export back: the same files at the same paths, equal JSON.
    let tmp = tempfile::tempdir().expect("tmp");
    let backup = tmp.path().join("backup");
    let out = ok(&run(&[
        "export",
        "--output-dir",
        backup.to_str().expect("utf-8"),
        "--redis-url",
        &url,
    ]));
    assert!(out.contains("Export complete"), "{out}");
    assert_exported_equal(&f, &backup);
    let stray: Vec<_> = fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(stray, ["backup"], "no staging dir is left behind");

    // New accounts in an existing type (and a new type) are added, nothing else changes.
    let mut pools = f.pools();
    let qwen = pools["openai-qwen-oauth"].as_array_mut().expect("array");
    qwen.push(json!({"uuid": "new-qwen-1", "customName": "late", "usageCount": 3}));
    pools["claude-custom"] = json!([{"uuid": "new-claude-1", "CLAUDE_API_KEY": "sk-ant-x"}]);
    write_json(&f.dir.join("provider_pools.json"), &pools);
    let out = ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    assert_eq!(row(&out, "accounts"), [2, 53, 0, 0], "{out}");
    assert_eq!(row(&out, "provider types"), [1, 6, 0, 0], "{out}");
    let after = dump(&redis, 0);
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(
        added
            .iter()
            .all(|k| k.contains("new-qwen-1") || k.contains("{pool:claude-custom}")),
        "{added:?}"
    );
    for (k, v) in &before {
        let same = after.get(k) == Some(v);
        let touched = k.ends_with("{global}:pools")
            || k.ends_with("{pool:openai-qwen-oauth}:accounts")
            || k.ends_with("{pool:openai-qwen-oauth}:seq");
        assert!(same || touched, "{k} changed");
    }
}

#[test]
fn dry_run_lists_every_item_and_writes_nothing() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = f.dir.to_str().expect("utf-8");
    let out = ok(&run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--dry-run",
    ]));
    assert!(out.contains("Dry run: nothing was written."), "{out}");
    let creates = out
        .lines()
        .filter(|l| l.trim_start().starts_with("create "))
        .count();
    // 6 types + config + 53 accounts + 50 tokens + password + 3 sessions + usage + 3 plugins
    assert_eq!(creates, 6 + 1 + 53 + 50 + 1 + 3 + 1 + 3, "{out}");
    assert!(
        out.contains(&format!(
            "create    account claude-kiro-oauth/{}",
            uuid(0, 3)
        )),
        "{out}"
    );
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "nothing written");

    // After a migration, a dry run tells unchanged from changed.
    ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    let before = dump(&redis, 0);
    let meta_before = meta(&redis, 0, "aiclient:");
    let mut pools = f.pools();
    pools["gemini-cli-oauth"][2]["customName"] = json!("edited");
    write_json(&f.dir.join("provider_pools.json"), &pools);
    let out = ok(&run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--dry-run",
    ]));
    let line = out
        .lines()
        .find(|l| l.contains(&format!("gemini-cli-oauth/{}", uuid(1, 2))) && l.contains("account"))
        .expect("the edited account is listed");
    assert!(line.trim_start().starts_with("keep"), "{line}");
    assert!(
        line.contains("/customName") && !line.contains("edited"),
        "{line}"
    );
    assert!(
        out.contains(&format!(
            "unchanged account gemini-cli-oauth/{}",
            uuid(1, 3)
        )),
        "{out}"
    );
    let out = ok(&run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--dry-run",
        "--force",
    ]));
    assert!(
        out.contains(&format!(
            "update    account gemini-cli-oauth/{}",
            uuid(1, 2)
        )),
        "{out}"
    );
    assert_eq!(dump(&redis, 0), before);
    assert_eq!(
        meta(&redis, 0, "aiclient:"),
        meta_before,
        "not even meta is written"
    );
}

#[test]
fn a_corrupted_file_names_file_and_position_and_leaves_the_target_untouched() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = f.dir.to_str().expect("utf-8");

    // Into an empty target: nothing at all is written.
    let pools_file = f.dir.join("provider_pools.json");
    let good = fs::read_to_string(&pools_file).expect("read");
    let truncated = &good[..good.len() / 2];
    fs::write(&pools_file, truncated).expect("truncate");
    let o = run(&["migrate", "--config-dir", dir, "--redis-url", &url]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("provider_pools.json"), "{msg}");
    let last_line = truncated.matches('\n').count() + 1;
    assert!(msg.contains(&format!("line {last_line}, column")), "{msg}");
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    assert_eq!(
        fs::read_to_string(&pools_file).expect("read"),
        truncated,
        "source untouched"
    );

    // Into a migrated target: not one key changes, meta included.
    fs::write(&pools_file, &good).expect("restore");
    ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    let before = dump(&redis, 0);
    let meta_before = meta(&redis, 0, "aiclient:");
    let mut pools = f.pools();
    pools["openai-custom"][0]["customName"] = json!("changed, but the dir is broken");
    write_json(&pools_file, &pools);
    let tok = f
        .dir
        .join("qwen")
        .read_dir()
        .expect("qwen dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    fs::write(&tok, "{\"access_token\": \"x\",\n \"refresh_token\": }").expect("break a token");
    let o = run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--force",
    ]);
    assert_eq!(code(&o), 1);
    let msg = text(&o);
    assert!(
        msg.contains(&tok.file_name().expect("name").to_string_lossy().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 2, column 19"), "{msg}");
    assert_eq!(dump(&redis, 0), before);
    assert_eq!(meta(&redis, 0, "aiclient:"), meta_before);

    fs::write(&tok, "{}").expect("fix the token");
    fs::write(f.dir.join("config.json"), "{\"REQUIRED_API_KEY\": \"k\",,}").expect("break config");
    let o = run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--force",
    ]);
    assert_eq!(code(&o), 1);
    assert!(
        text(&o).contains("config.json") && text(&o).contains("line 1, column 26"),
        "{}",
        text(&o)
    );
    assert_eq!(dump(&redis, 0), before);
}

#[test]
fn missing_token_files_are_reported_per_account_and_the_rest_migrates() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = f.dir.to_str().expect("utf-8");
    let pools = f.pools();
    let mut gone = Vec::new();
    for (t, i) in [("gemini-cli-oauth", 4), ("openai-codex-oauth", 6)] {
        let e = &pools[t][i];
        let path = e
            .as_object()
            .expect("object")
            .iter()
            .find(|(k, _)| k.ends_with("_FILE_PATH"))
            .expect("a path")
            .1
            .as_str()
            .expect("string")
            .to_string();
        fs::remove_file(f.dir.parent().expect("root").join(&path)).expect("remove");
        gone.push((t, e["uuid"].as_str().expect("uuid").to_string(), path));
    }
    let o = run(&["migrate", "--config-dir", dir, "--redis-url", &url]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let out = text(&o);
    for (t, u, path) in &gone {
        let line = out
            .lines()
            .find(|l| l.contains("FAILED") && l.contains(&format!("{t}/{u}")))
            .unwrap_or_else(|| panic!("{t}/{u} reported in:\n{out}"));
        let file = Path::new(path)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(line.contains(&file) && line.contains("missing"), "{line}");
    }
    assert!(out.contains("2 failed item(s)"), "{out}");
    let m = meta(&redis, 0, "aiclient:");
    assert_eq!(m["lastRunStatus"], "incomplete");
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        assert_eq!(
            s.list_accounts(None).await.expect("list").len(),
            53,
            "every account"
        );
        let (t, u, _) = &gone[0];
        assert!(s.get_account(t, u).await.expect("get").is_some());
        assert!(s.get_token(t, u).await.expect("get").is_none());
        let other = uuid(1, 5);
        assert!(
            s.get_token("gemini-cli-oauth", &other)
                .await
                .expect("get")
                .is_some()
        );
    });
    let o = run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--allow-missing-tokens",
    ]);
    let out = ok(&o);
    assert!(out.contains("skipped") && out.contains("missing"), "{out}");
    assert_eq!(meta(&redis, 0, "aiclient:")["lastRunStatus"], "complete");
}

#[test]
fn force_overwrites_changed_content_but_never_live_counters() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = f.dir.to_str().expect("utf-8");
    ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    let (t, u) = ("openai-qwen-oauth", uuid(2, 1));
    // The gateway has been serving from Redis: counters moved, the account was marked bad.
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        let up = StateUpdate::usage(1000, aiclient_sdk::account::now_ms());
        s.update_state(t, &u, up).await.expect("count");
    });
    let live_usage = 37 + 1000;
    let mut pools = f.pools();
    let e = pools[t]
        .as_array_mut()
        .expect("array")
        .iter_mut()
        .find(|e| e["uuid"] == u.as_str())
        .expect("entry");
    e["customName"] = json!("renamed in the file");
    e["QWEN_BASE_URL"] = json!("https://example.invalid/v1");
    write_json(&f.dir.join("provider_pools.json"), &pools);
    let mut cfg = read_json(&f.dir.join("config.json"));
    cfg["MAX_ERROR_COUNT"] = json!(7);
    write_json(&f.dir.join("config.json"), &cfg);

    let state = |s: &Storage| {
        let s = s.clone();
        let u = u.clone();
        async move {
            let a = s.get_account(t, &u).await.expect("get").expect("exists");
            let cfg: Value = serde_json::from_str(&a.config).expect("config");
            (a.state.usage_count, cfg)
        }
    };
    let out = ok(&run(&["migrate", "--config-dir", dir, "--redis-url", &url]));
    assert!(out.contains(&format!("kept      account {t}/{u}")), "{out}");
    assert!(out.contains("kept      config config.json"), "{out}");
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        let (usage, cfg) = state(&s).await;
        assert_eq!(usage, live_usage);
        assert_ne!(
            cfg["customName"], "renamed in the file",
            "not without --force"
        );
    });

    let out = ok(&run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--force",
    ]));
    assert!(out.contains(&format!("updated   account {t}/{u}")), "{out}");
    assert!(out.contains("the target's live state is kept"), "{out}");
    assert!(
        !out.contains("renamed in the file"),
        "values are not printed: {out}"
    );
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        let (usage, cfg) = state(&s).await;
        assert_eq!(usage, live_usage, "--force never resets live counters");
        assert_eq!(cfg["customName"], "renamed in the file");
        assert_eq!(cfg["QWEN_BASE_URL"], "https://example.invalid/v1");
        let c: Value =
            serde_json::from_str(&s.get_config().await.expect("cfg").expect("set")).expect("JSON");
        assert_eq!(c["MAX_ERROR_COUNT"], 7);
    });
    // And then it is stable again.
    let before = dump(&redis, 0);
    ok(&run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--force",
    ]));
    assert_eq!(dump(&redis, 0), before);
}

/// `--from`/`--to`: file → redis (db 1) → redis (db 2, another prefix) → file, and the last
/// dir equals the first.
#[test]
fn from_to_moves_state_file_to_redis_to_redis_to_file() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let dir = f.dir.to_str().expect("utf-8");
    let r1 = redis.url(1);
    let r2 = format!("{}?prefix=copy:", redis.url(2));
    ok(&run(&[
        "migrate",
        "--from",
        &format!("file:{dir}"),
        "--to",
        &r1,
    ]));
    let out = ok(&run(&["migrate", "--from", &r1, "--to", &r2]));
    assert!(out.contains("key prefix \"copy:\""), "{out}");
    let db2 = dump(&redis, 2);
    assert!(!db2.is_empty());
    assert!(
        db2.keys().all(|k| k.starts_with("copy:{")),
        "{:?}",
        db2.keys().next()
    );
    // The same content under both prefixes: key names differ only by the prefix.
    let db1: BTreeMap<String, String> = dump(&redis, 1)
        .into_iter()
        .map(|(k, v)| (k.replacen("aiclient:", "copy:", 1), v))
        .collect();
    assert_eq!(
        db1.keys().collect::<Vec<_>>(),
        db2.keys().collect::<Vec<_>>()
    );
    // Again: redis → redis is idempotent too.
    let out = ok(&run(&["migrate", "--from", &r1, "--to", &r2]));
    assert!(out.contains("Migration complete."), "{out}");
    assert_eq!(dump(&redis, 2), db2);

    let tmp = tempfile::tempdir().expect("tmp");
    let back = tmp.path().join("configs");
    let out = ok(&run(&[
        "migrate",
        "--from",
        &r2,
        "--to",
        &format!("file:{}", back.display()),
    ]));
    assert!(out.contains("all equal"), "{out}");
    assert_exported_equal(&f, &back);
    // file → file into the dir just written: nothing changes.
    let snapshot = |d: &Path| {
        let mut v = Vec::new();
        for e in walk(d) {
            v.push((e.clone(), fs::read(&e).expect("read")));
        }
        v
    };
    let before = snapshot(&back);
    let out = ok(&run(&[
        "migrate",
        "--from",
        &r2,
        "--to",
        &format!("file:{}", back.display()),
    ]));
    assert!(out.contains("Migration complete."), "{out}");
    let after = snapshot(&back);
    let changed: Vec<_> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.clone())
        .collect();
    assert!(
        changed.iter().all(|p| p.ends_with("aiclient-meta.json")),
        "{changed:?}"
    );

    // The same endpoint twice is refused as a bad invocation.
    let o = run(&["migrate", "--from", &r1, "--to", &redis.url(1)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(d).expect("list") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v.sort();
    v
}

#[test]
fn export_refuses_a_non_empty_dir_without_force_and_stays_inside_the_dir() {
    let f = Fixture::generate();
    let redis = RedisServer::start();
    let url = redis.url(0);
    // An account whose token file lies outside the configs dir, by absolute path.
    let outside = f.dir.parent().expect("root").join("elsewhere/creds.json");
    write_json(
        &outside,
        &json!({"access_token": "a", "refresh_token": "outside-rt"}),
    );
    let mut pools = f.pools();
    pools["gemini-cli-oauth"][9]["GEMINI_OAUTH_CREDS_FILE_PATH"] =
        json!(outside.display().to_string());
    write_json(&f.dir.join("provider_pools.json"), &pools);
    ok(&run(&[
        "migrate",
        "--config-dir",
        f.dir.to_str().expect("utf-8"),
        "--redis-url",
        &url,
    ]));

    let tmp = tempfile::tempdir().expect("tmp");
    let target = tmp.path().join("export");
    fs::create_dir_all(&target).expect("mkdir");
    fs::write(target.join("notes.txt"), "operator's file").expect("write");
    let t = target.to_str().expect("utf-8");
    let o = run(&["export", "--output-dir", t, "--redis-url", &url]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    assert_eq!(walk(&target), [target.join("notes.txt")], "nothing written");

    let outside_before = fs::read(&outside).expect("read");
    let out = ok(&run(&[
        "export",
        "--output-dir",
        t,
        "--redis-url",
        &url,
        "--force",
    ]));
    assert!(out.contains("Export complete"), "{out}");
    assert_eq!(
        fs::read_to_string(target.join("notes.txt")).expect("read"),
        "operator's file"
    );
    assert_eq!(
        fs::read(&outside).expect("read"),
        outside_before,
        "never written"
    );
    let exported = read_json(&target.join("provider_pools.json"));
    let u = uuid(1, 9);
    let reference = exported["gemini-cli-oauth"][9]["GEMINI_OAUTH_CREDS_FILE_PATH"]
        .as_str()
        .expect("a reference")
        .to_string();
    assert_eq!(
        reference,
        format!("./configs/gemini/{u}.json"),
        "rewritten inside"
    );
    assert_eq!(
        read_json(&target.join(format!("gemini/{u}.json")))["refresh_token"],
        "outside-rt"
    );
    // Every other account's reference is unchanged and its file is where it points.
    for (t, list) in exported.as_object().expect("pools") {
        for e in list.as_array().expect("array") {
            if let Some((_, p)) = e
                .as_object()
                .expect("obj")
                .iter()
                .find(|(k, _)| k.ends_with("_FILE_PATH"))
            {
                let rest = p
                    .as_str()
                    .expect("str")
                    .trim_start_matches("./")
                    .trim_start_matches("configs/");
                assert!(target.join(rest).is_file(), "{t}: {p}");
            }
        }
    }
    // No staging dir left next to it.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(names, ["export"]);
}

#[test]
fn init_prints_generated_secrets_once_and_refuses_existing_data() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let out = ok(&run(&["init", "--redis-url", &url]));
    let grab = |out: &str, label: &str| {
        out.lines()
            .find_map(|l| l.split(label).nth(1))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
            .trim()
            .to_string()
    };
    let pw = grab(&out, "admin password (shown once, stored hashed): ");
    let key = grab(&out, "client API key (REQUIRED_API_KEY, shown once): ");
    assert!(pw.len() >= 12 && key.len() >= 24, "{out}");
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        let h = s.get_password_hash().await.expect("pw").expect("set");
        assert!(h.starts_with("pbkdf2:") && verify_password(&pw, &h));
        let cfg: Value =
            serde_json::from_str(&s.get_config().await.expect("cfg").expect("set")).expect("JSON");
        assert_eq!(cfg["REQUIRED_API_KEY"], key.as_str());
        assert!(
            s.list_accounts(None).await.expect("list").is_empty(),
            "empty pools"
        );
        let plugins = s.list_plugin_states().await.expect("plugins");
        let on: Vec<&str> = plugins
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(on, ["default-auth"]);
        let m: Value =
            serde_json::from_str(&s.get_meta().await.expect("meta").expect("set")).expect("JSON");
        assert_eq!(m["schemaVersion"], 1);
    });
    let before = dump(&redis, 0);
    let o = run(&["init", "--redis-url", &url]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("already holds data"), "{}", text(&o));
    assert!(
        !text(&o).contains(&pw) && !text(&o).contains(&key),
        "secrets shown once only"
    );
    assert_eq!(dump(&redis, 0), before);

    // --force: new secrets, accounts kept.
    let f = Fixture::generate();
    ok(&run(&[
        "migrate",
        "--config-dir",
        f.dir.to_str().expect("utf-8"),
        "--redis-url",
        &url,
        "--force",
    ]));
    let out = ok(&run(&["init", "--redis-url", &url, "--force"]));
    let pw2 = grab(&out, "admin password (shown once, stored hashed): ");
    assert_ne!(pw2, pw, "never a fixed password");
    assert_ne!(
        grab(&out, "client API key (REQUIRED_API_KEY, shown once): "),
        key
    );
    rt().block_on(async {
        let s = open_redis(&url, "aiclient:").await;
        assert_eq!(
            s.list_accounts(None).await.expect("list").len(),
            53,
            "accounts kept"
        );
        assert!(
            s.list_sessions().await.expect("sessions").is_empty(),
            "sessions ended"
        );
    });

    // On the file backend too; the memory backend is refused as a bad invocation.
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().join("configs");
    let out = ok(&run(&[
        "init",
        "--storage",
        "file",
        "--config-dir",
        d.to_str().expect("utf-8"),
    ]));
    let pw3 = grab(&out, "admin password (shown once, stored hashed): ");
    assert!(verify_password(
        &pw3,
        &fs::read_to_string(d.join("pwd")).expect("pwd")
    ));
    assert_eq!(
        read_json(&d.join("plugins.json"))["plugins"]["default-auth"]["enabled"],
        true
    );
    let o = run(&["init", "--storage", "memory"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}

#[test]
fn help_says_what_force_overwrites_and_bad_invocations_exit_2() {
    let out = ok(&run(&["migrate", "--help"]));
    for needle in [
        "--force",
        "NEVER overwrites an existing account's live state",
        "usageCount",
        "nothing is ever deleted",
        "--dry-run",
        "--allow-missing-tokens",
        "file:DIR",
        "?prefix=",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in:\n{out}");
    }
    let out = ok(&run(&["export", "--help"]));
    assert!(
        out.contains("--output-dir") && out.contains("--force"),
        "{out}"
    );
    let out = ok(&run(&["init", "--help"]));
    assert!(
        out.contains("--force") && out.contains("keeps accounts"),
        "{out}"
    );

    assert_eq!(
        code(&run(&["migrate", "--from", "ftp://x", "--to", "memory:"])),
        2
    );
    assert_eq!(
        code(&run(&[
            "migrate",
            "--config-dir",
            "/nonexistent/configs",
            "--to",
            "memory:",
            "--dry-run"
        ])),
        2
    );
    assert_eq!(
        code(&run(&["migrate", "--config-dir", "a", "--from", "file:b"])),
        2,
        "conflicting flags"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let to = format!("file:{}", tmp.path().display());
    let o = run(&["migrate", "--from", "memory:", "--to", &to]);
    assert_eq!(
        code(&o),
        2,
        "an empty memory store is no source\n{}",
        text(&o)
    );
    assert_eq!(fs::read_dir(tmp.path()).expect("list").count(), 0);
    let o = run(&[
        "migrate",
        "--config-dir",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(
        code(&o),
        2,
        "the default target is memory: refused\n{}",
        text(&o)
    );
}

/// Tokens, API keys, the password, raw session tokens and the Redis password never reach the
/// output of any command, whatever happens.
#[test]
fn secrets_never_reach_the_output() {
    let f = Fixture::generate();
    let redis = RedisServer::start_with(&["--requirepass", "redis-pw-9f8e7d"]);
    let url = redis.url(0);
    assert!(url.contains("redis-pw-9f8e7d"));
    let dir = f.dir.to_str().expect("utf-8");
    let tmp = tempfile::tempdir().expect("tmp");
    let backup = tmp.path().join("b");
    // A missing token file and a changed account, so the failure and diff paths are printed.
    let mut pools = f.pools();
    pools["openai-custom"][1]["OPENAI_API_KEY"] = json!("sk-replaced-secret-value");
    fs::remove_file(
        f.dir
            .join("qwen")
            .read_dir()
            .expect("dir")
            .next()
            .expect("one")
            .expect("e")
            .path(),
    )
    .expect("rm");
    let mut outputs = vec![
        run(&[
            "migrate",
            "--config-dir",
            dir,
            "--redis-url",
            &url,
            "--dry-run",
        ]),
        run(&[
            "migrate",
            "--config-dir",
            dir,
            "--redis-url",
            &url,
            "--allow-missing-tokens",
        ]),
    ];
    write_json(&f.dir.join("provider_pools.json"), &pools);
    outputs.push(run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--dry-run",
        "--allow-missing-tokens",
    ]));
    outputs.push(run(&[
        "migrate",
        "--config-dir",
        dir,
        "--redis-url",
        &url,
        "--force",
        "--allow-missing-tokens",
    ]));
    outputs.push(run(&[
        "export",
        "--output-dir",
        backup.to_str().expect("utf-8"),
        "--redis-url",
        &url,
    ]));
    outputs.push(run(&[
        "migrate",
        "--from",
        &format!("redis://127.0.0.1:{}/0", redis.port),
        "--to",
        "memory:",
        "--dry-run",
    ]));
    assert_eq!(
        code(&outputs[0]),
        1,
        "a dry run predicts the missing token's failure"
    );
    for o in &outputs[1..5] {
        assert!(o.status.success(), "{}", text(o));
    }
    assert_ne!(code(&outputs[5]), 0, "no password: refused by the server");
    let mut secrets = f.secrets.clone();
    secrets.push("redis-pw-9f8e7d".into());
    secrets.push("sk-replaced-secret-value".into());
    for o in &outputs {
        let t = text(o);
        for s in &secrets {
            assert!(
                !t.contains(s.as_str()),
                "a secret ({}…) leaked into:\n{t}",
                &s[..6]
            );
        }
        for (raw, _) in &f.live {
            assert!(
                !t.contains(&raw[..16]),
                "a session token prefix leaked into:\n{t}"
            );
        }
    }
}

/// The Node version's own example dir: what the storage API cannot carry is reported, not
/// silently dropped.
#[test]
fn the_example_dir_reports_what_cannot_be_carried() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("configs");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs-example");
    for e in walk(&src) {
        let to = dir.join(e.strip_prefix(&src).expect("inside"));
        fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        fs::copy(&e, &to).expect("copy");
    }
    let out = ok(&run(&[
        "migrate",
        "--from",
        &format!("file:{}", dir.display()),
        "--to",
        "memory:",
        "--dry-run",
    ]));
    for needle in [
        "openai-custom[1]: no uuid",
        "openaiResponses-custom: an empty pool",
        "plugins.json \"zzSchema\"",
        "token-store.json \"zzStoreVersion\"",
        "1 expired session(s)",
        "a legacy plaintext password, stored as a PBKDF2 hash",
    ] {
        assert!(out.contains(needle), "{needle:?} not reported in:\n{out}");
    }
}
