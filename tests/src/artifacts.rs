//! Building the real artifacts from inside a test.
//!
//! `cargo test` does not produce the plugins' `.so` files (it builds cdylib crates only as test
//! harnesses), so each test process runs one nested `cargo build` of every package below, with
//! `--message-format=json`, and takes the artifact paths cargo reports. That is exact under any
//! `CARGO_TARGET_DIR` or build-dir setting, and costs ~0.1 s when everything is up to date.
//! Cargo releases its build lock before running test binaries, so this does not deadlock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Every package whose binary or cdylib a test may need.
pub const PACKAGES: &[&str] = &[
    "aiclient",
    "aiclient-backend-memory",
    "aiclient-backend-file",
    "aiclient-backend-redis",
    "aiclient-provider-openai-custom",
    "aiclient-provider-claude-custom",
    "aiclient-provider-kiro",
    "aiclient-provider-gemini",
    "aiclient-provider-qwen",
    "aiclient-provider-iflow",
    "aiclient-provider-codex",
    "aiclient-fixture-panic-plugin",
    "aiclient-fixture-old-sdk-plugin",
    "aiclient-fixture-bad-layout-plugin",
];

pub struct Artifacts {
    /// cdylib paths by library (crate) name, e.g. `aiclient_backend_memory`.
    pub libs: HashMap<String, PathBuf>,
    /// binary paths by name, e.g. `aiclient`.
    pub bins: HashMap<String, PathBuf>,
}

impl Artifacts {
    pub fn lib(&self, name: &str) -> &Path {
        self.libs
            .get(name)
            .unwrap_or_else(|| panic!("no cdylib {name} was built; have {:?}", self.libs.keys()))
    }
    pub fn bin(&self, name: &str) -> &Path {
        self.bins
            .get(name)
            .unwrap_or_else(|| panic!("no binary {name} was built"))
    }
    /// The directory the host's plugin libraries are in (next to the binary).
    pub fn plugin_dir(&self) -> &Path {
        self.bin("aiclient")
            .parent()
            .expect("a binary has a directory")
    }
}

/// Builds (once per process) and returns the artifacts.
pub fn get() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| build(PACKAGES))
}

/// Builds just `packages` (in the profile of the calling binary: release for benchmarks).
pub fn build(packages: &[&str]) -> Artifacts {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--message-format=json-render-diagnostics"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo build");
    assert!(
        out.status.success(),
        "nested cargo build failed (see its output above)"
    );
    let mut a = Artifacts {
        libs: HashMap::new(),
        bins: HashMap::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .collect();
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .replace('-', "_");
        if kinds.contains(&"cdylib") {
            let so = msg["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX));
            if let Some(f) = so {
                a.libs.insert(name, PathBuf::from(f));
            }
        } else if kinds.contains(&"bin")
            && let Some(exe) = msg["executable"].as_str()
        {
            a.bins.insert(
                msg["target"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                PathBuf::from(exe),
            );
        }
    }
    a
}
