//! The third-party plugin kit: `plugins/template` lives outside the workspace and is built on
//! its own against the SDK crate alone; the already-built host loads it and serves through it.
//! The same template built against an SDK of another minor version is refused in one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aiclient_tests::gateway::{Gateway, command, http};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds a standalone plugin package; returns its cdylib. Shares one target dir so the second
/// build reuses the first one's dependencies.
fn build_plugin(manifest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(root().join("target/third-party"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building {} failed",
        manifest.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".so"))
                .map(PathBuf::from)
        })
        .next_back()
        .expect("a cdylib was built")
}

/// A copy of the SDK as a standalone package (workspace inheritance resolved) with `version`.
fn sdk_copy(dir: &Path, version: &str) -> PathBuf {
    let root_manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .expect("read")
        .parse()
        .expect("toml");
    let ws_deps = root_manifest["workspace"]["dependencies"]
        .as_table()
        .expect("workspace deps")
        .clone();
    let mut sdk: toml::Table = std::fs::read_to_string(root().join("sdk/Cargo.toml"))
        .expect("read")
        .parse()
        .expect("toml");
    let pkg = sdk["package"].as_table_mut().expect("package");
    pkg.insert("version".into(), toml::Value::String(version.into()));
    pkg.insert("edition".into(), toml::Value::String("2024".into()));
    for k in ["rust-version", "license"] {
        pkg.remove(k);
    }
    for section in ["dependencies", "dev-dependencies"] {
        if let Some(deps) = sdk.get_mut(section).and_then(|d| d.as_table_mut()) {
            for (name, spec) in deps.iter_mut() {
                *spec = ws_deps
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name} is declared in the workspace"));
            }
        }
    }
    let dest = dir.join("sdk");
    copy_dir(&root().join("sdk/src"), &dest.join("src"));
    sdk.insert("workspace".into(), toml::Value::Table(toml::Table::new()));
    std::fs::write(
        dest.join("Cargo.toml"),
        toml::to_string(&sdk).expect("toml"),
    )
    .expect("write");
    dest
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn an_out_of_tree_plugin_loads_into_the_built_host_and_a_mismatched_one_is_refused() {
    let so = build_plugin(&root().join("plugins/template/Cargo.toml"));

    // The host (built from the workspace) serves through the out-of-tree plugin.
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("mkdir");
    std::fs::write(
        configs.join("config.json"),
        json!({"REQUIRED_API_KEY": "tp-key", "MODEL_PROVIDER": "echo-template"}).to_string(),
    )
    .expect("write");
    std::fs::write(
        configs.join("provider_pools.json"),
        json!({"echo-template": [{"uuid": "e1", "customName": "echoer"}]}).to_string(),
    )
    .expect("write");
    let so_arg = so.to_str().expect("utf8").to_string();
    let gw = Gateway::start(
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
            "--provider",
            &so_arg,
        ],
        &[],
    );
    let auth = [
        ("authorization", "Bearer tp-key"),
        ("content-type", "application/json"),
    ];
    let (st, out) = http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &auth,
        &json!({"model": "echo-1", "messages": [{"role": "user", "content": "hello there"}]})
            .to_string(),
    );
    assert_eq!(st, 200, "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    // Converted for a Claude client, streamed.
    let (st, out) = http(gw.addr, "POST", "/v1/messages", &auth, &json!({"model": "echo-1", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi again"}]}).to_string());
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains("event: message_stop") && out.contains("again"),
        "{out}"
    );
    let (st, out) = http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &auth,
        &json!({"model": "echo-1", "messages": []}).to_string(),
    );
    assert_eq!(st, 400, "the plugin's client error passes through: {out}");
    drop(gw);

    // Built against an SDK of another minor version: refused before any of its code runs.
    let tmp = tempfile::tempdir().expect("tmp");
    let sdk = sdk_copy(tmp.path(), "0.2.0");
    let plugin = tmp.path().join("plugin");
    copy_dir(&root().join("plugins/template/src"), &plugin.join("src"));
    let manifest = std::fs::read_to_string(root().join("plugins/template/Cargo.toml"))
        .expect("read")
        .replace(
            "path = \"../../sdk\"",
            &format!("path = {:?}", sdk.to_str().expect("utf8")),
        )
        .replace(
            "name = \"aiclient-provider-echo-template\"",
            "name = \"aiclient-provider-echo-template-future\"",
        );
    std::fs::write(plugin.join("Cargo.toml"), manifest).expect("write");
    let bad = build_plugin(&plugin.join("Cargo.toml"));
    let err = aiclient::plugins::loader::load_provider(&bad)
        .err()
        .expect("refused")
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("incompatible SDK version: built against aiclient-sdk 0.2.0"),
        "{err}"
    );
    let bad_arg = bad.to_str().expect("utf8").to_string();
    let out = command(&[
        "serve",
        "--port",
        "0",
        "--storage",
        "memory",
        "--provider",
        &bad_arg,
    ])
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains("incompatible SDK version") && line.contains(&bad_arg),
        "{stderr}"
    );
}
