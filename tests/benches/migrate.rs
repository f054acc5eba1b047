//! Benchmark of `aiclient migrate`: a generated AIClient-2-API `configs/` dir with 10,000
//! accounts, each with its own token file, imported into a private redis-server by the real
//! (release) binary; then the idempotent second run and the export back to files. Not a test:
//! it prints the times (target for the import: < 10 s on the 2-core dev machine), and fails
//! only if a command fails.
//!
//! `cargo bench -p aiclient-tests --bench migrate` (builds the binary and backends in
//! release). `BENCH_ACCOUNTS` changes the number of accounts (default 10,000).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aiclient_tests::artifacts;
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Map, Value, json};

const TYPES: [(&str, &str, &str); 5] = [
    ("claude-kiro-oauth", "KIRO_OAUTH_CREDS_FILE_PATH", "kiro"),
    ("gemini-cli-oauth", "GEMINI_OAUTH_CREDS_FILE_PATH", "gemini"),
    ("openai-qwen-oauth", "QWEN_OAUTH_CREDS_FILE_PATH", "qwen"),
    ("openai-iflow", "IFLOW_TOKEN_FILE_PATH", "iflow"),
    ("openai-codex-oauth", "CODEX_OAUTH_CREDS_FILE_PATH", "codex"),
];

fn generate(dir: &Path, n: usize) {
    let mut pools: Map<String, Value> = Map::new();
    for i in 0..n {
        let (t, field, sub) = TYPES[i % TYPES.len()];
        let u = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let rel = if sub == "kiro" {
            format!("kiro/{u}/{u}.json")
        } else {
            format!("{sub}/{u}_oauth_creds.json")
        };
        let token = if sub == "kiro" {
            json!({"accessToken": format!("acc-{i:060}"), "refreshToken": format!("ref-{i:060}"),
                   "expiresAt": "2025-11-07T09:00:00.000Z", "authMethod": "social", "region": "us-east-1"})
        } else {
            json!({"access_token": format!("acc-{i:060}"), "refresh_token": format!("ref-{i:060}"),
                   "token_type": "Bearer", "expiry_date": 1_762_502_400_000u64 + i as u64})
        };
        let p = dir.join(&rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, serde_json::to_vec_pretty(&token).expect("json")).expect("write token");
        let acct = json!({"customName": format!("{t} {i}"), field: format!("./configs/{rel}"),
                          "uuid": u, "checkHealth": false, "isHealthy": i % 7 != 0,
                          "isDisabled": false, "usageCount": i, "errorCount": i % 3,
                          "lastUsed": "2025-11-07T08:00:01.234Z", "lastErrorTime": null,
                          "lastErrorMessage": null, "notSupportedModels": [],
                          "_lastSelectionSeq": 12345678901234567u64 + i as u64});
        pools
            .entry(t.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("array")
            .push(acct);
    }
    fs::write(
        dir.join("provider_pools.json"),
        serde_json::to_vec_pretty(&Value::Object(pools)).expect("json"),
    )
    .expect("write pools");
    fs::write(
        dir.join("config.json"),
        json!({"REQUIRED_API_KEY": "bench-key", "MODEL_PROVIDER": "gemini-cli-oauth"}).to_string(),
    )
    .expect("write config");
    fs::write(
        dir.join("plugins.json"),
        json!({"plugins": {"default-auth": {"enabled": true}}}).to_string(),
    )
    .expect("write plugins");
}

fn timed(a: &artifacts::Artifacts, plugin_dir: &Path, args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(a.bin("aiclient"))
        .args(args)
        .env_remove("AICLIENT_CONFIG")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_ENABLED")
        .env("AICLIENT_PLUGIN_DIR", plugin_dir)
        .env("AICLIENT_LOG", "warn")
        .output()
        .expect("run aiclient");
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "aiclient {args:?} failed:\n{text}");
    (took, text)
}

fn main() {
    // `cargo bench` passes `--bench`; with a filter that does not match, run nothing.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"migrate".contains(&f)) {
        return;
    }
    let n: usize = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let a = artifacts::build(&[
        "aiclient",
        "aiclient-backend-file",
        "aiclient-backend-redis",
        "aiclient-backend-memory",
    ]);
    let plugin_dir = a
        .lib("aiclient_backend_redis")
        .parent()
        .expect("lib dir")
        .to_path_buf();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("configs");
    let t = Instant::now();
    generate(&dir, n);
    println!(
        "generated {n} accounts with token files in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let redis = RedisServer::start();
    let url = redis.url(0);
    let d = dir.to_str().expect("utf-8");

    let (first, out) = timed(
        &a,
        &plugin_dir,
        &["migrate", "--config-dir", d, "--redis-url", &url],
    );
    assert!(out.contains("Migration complete."), "{out}");
    let (second, out) = timed(
        &a,
        &plugin_dir,
        &["migrate", "--config-dir", d, "--redis-url", &url],
    );
    assert!(out.contains("Migration complete."), "{out}");
    let backup = tmp.path().join("backup");
    let (export, out) = timed(
        &a,
        &plugin_dir,
        &[
            "export",
            "--output-dir",
            backup.to_str().expect("utf-8"),
            "--redis-url",
            &url,
        ],
    );
    assert!(out.contains("Export complete"), "{out}");

    println!();
    println!(
        "migrate benchmark ({n} accounts, {n} token files, release build, private redis-server)"
    );
    println!("{:<44} {:>9}", "step", "seconds");
    println!(
        "{:<44} {:>9.2}   (target < 10 s: {})",
        "migrate configs/ → redis (verified)",
        first.as_secs_f64(),
        if first < Duration::from_secs(10) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "{:<44} {:>9.2}",
        "second run (everything unchanged, verified)",
        second.as_secs_f64()
    );
    println!(
        "{:<44} {:>9.2}   (bound by the file backend's atomic writes: two fsyncs per token file)",
        "export redis → configs/ (verified)",
        export.as_secs_f64()
    );
}
