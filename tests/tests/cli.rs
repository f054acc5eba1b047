//! The `aiclient` binary end to end: serve and /health, SIGTERM, `plugins list`, config errors,
//! and a panicking or incompatible backend plugin.

use aiclient_tests::artifacts;
use aiclient_tests::gateway::{Gateway, command};
use serde_json::Value;

#[test]
fn serves_health_on_the_memory_backend_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(dir.path(), &["--storage", "memory"], &[]);
    let (status, body) = gw.get("/health");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["storage"]["backend"], "memory");
    assert_eq!(gw.get("/api/health").0, 200);
    let st = gw.terminate();
    assert!(st.success(), "exit status after SIGTERM: {st:?}");
}

#[test]
fn plugins_list_shows_backends_with_kind_version_path_and_state() {
    let out = command(&["plugins", "list", "--format", "json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let plugins = v["plugins"].as_array().expect("list");
    let find = |name: &str| {
        plugins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {v:#}"))
    };
    for backend in ["memory", "file", "redis"] {
        assert_eq!(find(backend)["kind"], "storage", "{backend}");
    }
    for provider in [
        "openai-custom",
        "claude-custom",
        "kiro",
        "gemini",
        "qwen",
        "iflow",
        "codex",
    ] {
        let p = find(provider);
        assert_eq!(p["kind"], "provider", "{provider}");
        assert_eq!(
            p["enabled"], "enabled",
            "{provider}: every provider plugin found is enabled by default"
        );
    }
    let mem = find("memory");
    assert_eq!(mem["kind"], "storage");
    assert_eq!(mem["sdkVersion"], aiclient_sdk::SDK_VERSION);
    assert_eq!(mem["enabled"], "active", "memory is the default backend");
    assert!(
        mem["path"]
            .as_str()
            .expect("path")
            .ends_with("libaiclient_backend_memory.so")
    );
    let old = plugins
        .iter()
        .find(|p| {
            p["path"]
                .as_str()
                .is_some_and(|x| x.ends_with("libaiclient_fixture_old_sdk_plugin.so"))
        })
        .expect("the incompatible fixture is listed");
    assert!(
        old["error"]
            .as_str()
            .expect("error")
            .contains("incompatible SDK version"),
        "{old}"
    );

    let out = command(&["plugins", "list"]).output().expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("memory") && l.contains("storage") && l.contains("active")),
        "{table}"
    );
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("aiclient.toml");
    std::fs::write(
        &cfg,
        "[server]\nport = 1\n[storage]\nbackend = \"memory\"\nbakend = 1\n",
    )
    .expect("write");
    let out = command(&["--config", cfg.to_str().expect("utf8"), "serve"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bakend") && err.contains("aiclient.toml"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_panicking_backend_returns_errors_while_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = artifacts::get()
        .lib("aiclient_fixture_panic_plugin")
        .to_str()
        .expect("utf8")
        .to_string();
    let mut gw = Gateway::start(dir.path(), &["--storage", &lib], &[]);
    let (s1, b1) = gw.get("/health");
    assert_eq!(s1, 503, "the panicking status call is an error: {b1}");
    assert!(b1.contains("panicked"), "{b1}");
    let (s2, _) = gw.get("/health");
    assert_eq!(s2, 200, "the next call works");
    assert!(
        gw.child.try_wait().expect("wait").is_none(),
        "the process is still running"
    );
}

#[test]
fn an_incompatible_backend_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = artifacts::get()
        .lib("aiclient_fixture_old_sdk_plugin")
        .to_str()
        .expect("utf8")
        .to_string();
    let out = command(&["serve", "--port", "0", "--storage", &lib])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains(&lib) && line.contains("incompatible SDK version"),
        "{err}"
    );
}
