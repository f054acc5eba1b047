//! The web UI end to end, in a real headless Chromium: `tests/ui/e2e.mjs` (playwright-core
//! driving Debian's `/usr/bin/chromium`) logs in, adds an account, edits and disables it,
//! disables a provider plugin and sees the dashboard mark that pool as not served, then makes
//! client requests through the gateway and sees the usage and error counts change live (from
//! `/api/events`, without a reload). It saves a screenshot of the dashboard to
//! `target/ui-artifacts/dashboard.png`.
//!
//! Needs `node` and `/usr/bin/chromium` (`.ci/run` installs Debian's `chromium` package); the
//! npm dependencies in `tests/ui/` are installed here with `npm ci` when missing. Node is only
//! a test tool: the gateway serves its UI without it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream;
use serde_json::{Value, json};

const CLIENT_KEY: &str = "ui-client-key-0001";
const UPSTREAM_KEY: &str = "ui-upstream-key-0002";
const CLAUDE_KEY: &str = "ui-claude-key-0003";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A child process that is ended when dropped: SIGTERM first (so Node's Playwright closes its
/// browser), SIGKILL after 5 s.
struct Guard(Option<Child>);

impl Guard {
    /// Waits up to `limit` for the exit; on time-out ends the process and returns `None`.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.0.as_mut().expect("a running child");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().expect("wait for child") {
                self.0 = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `cmd` with stdout and stderr going to `log`, for at most `limit`; returns the exit
/// status and what it printed. Panics (after ending it) if it runs over.
fn run_logged(mut cmd: Command, log: &Path, limit: Duration, what: &str) -> (ExitStatus, String) {
    let out = File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut guard =
        Guard(Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("start {what}: {e} (is it installed?)")
        })));
    let status = guard.wait_for(limit);
    drop(guard);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(st) => (st, text),
        None => panic!("{what} did not finish within {limit:?}; output so far:\n{text}"),
    }
}

/// `npm ci` in `tests/ui` unless its dependencies are already there.
fn ensure_npm_deps(ui: &Path, scratch: &Path) {
    if ui
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(ui);
    let (st, out) = run_logged(
        cmd,
        &scratch.join("npm-ci.log"),
        Duration::from_secs(300),
        "npm ci",
    );
    assert!(st.success(), "npm ci in {} failed:\n{out}", ui.display());
}

fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace.join(t)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("ui-artifacts")
}

fn api(gw: &Gateway, token: &str, path: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (st, body) = http(gw.addr, "GET", path, &[("authorization", &auth)], "");
    assert_eq!(st, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON answer")
}

#[test]
fn web_ui_in_headless_chromium() {
    let started = Instant::now();
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    );
    let scratch = tempfile::tempdir().expect("tmp");
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    ensure_npm_deps(&ui, scratch.path());

    let mock = mock_upstream::start_in_thread(&[UPSTREAM_KEY, CLAUDE_KEY]);
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("mkdir");
    let config = json!({"REQUIRED_API_KEY": CLIENT_KEY, "MODEL_PROVIDER": "openai-custom",
                        "MAX_ERROR_COUNT": 5, "REQUEST_MAX_RETRIES": 0});
    let pools = json!({"openai-custom": [
        {"uuid": "a1", "customName": "primary", "OPENAI_BASE_URL": format!("{}/v1", mock.base_url()), "OPENAI_API_KEY": UPSTREAM_KEY},
    ]});
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
        &[],
    );
    let password = gw
        .generated_password()
        .expect("a first start generates and prints an admin password");

    let shots = artifacts_dir();
    std::fs::create_dir_all(&shots).expect("create the artifacts dir");
    let screenshot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let failure_shot = shots.join("failure.png");
    let _ = std::fs::remove_file(&failure_shot);

    let mut node = Command::new("node");
    node.arg(ui.join("e2e.mjs"))
        .current_dir(&ui)
        .env("AICLIENT_URL", format!("http://{}", gw.addr))
        .env("AICLIENT_PASSWORD", &password)
        .env("AICLIENT_API_KEY", CLIENT_KEY)
        .env("MOCK_BASE_URL", mock.base_url())
        .env("CLAUDE_API_KEY", CLAUDE_KEY)
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOT", &screenshot)
        .env("FAILURE_SCREENSHOT", &failure_shot);
    let (st, out) = run_logged(
        node,
        &scratch.path().join("e2e.log"),
        Duration::from_secs(180),
        "node tests/ui/e2e.mjs",
    );
    assert!(
        st.success(),
        "the browser test failed ({st}); screenshot of the failure (if it got that far): {}\n{out}",
        failure_shot.display()
    );
    println!("{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ui e2e: ") && l.ends_with(" 0 failed")),
        "the browser test printed no summary:\n{out}"
    );

    // What the browser did is real: the backend has it too.
    let (st, body) = http(
        gw.addr,
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
    let plugins = api(&gw, &token, "/api/plugins");
    let enabled = |name: &str| {
        plugins["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no plugin {name}: {plugins}"))["enabled"]
            .clone()
    };
    assert_eq!(enabled("claude-custom"), json!(false), "{plugins}");
    assert_eq!(enabled("openai-custom"), json!(true), "{plugins}");
    let providers = api(&gw, &token, "/api/providers");
    let added = &providers["claude-custom"][0];
    assert_eq!(added["customName"], "e2e-renamed", "{providers}");
    assert_eq!(added["CLAUDE_API_KEY"], "******", "{providers}");
    // The edit sent the key back masked; the stored account still has the real one.
    let pools_file = configs.join("provider_pools.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&pools_file).unwrap_or_default();
        if text.contains("e2e-renamed") && text.contains(CLAUDE_KEY) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "provider_pools.json lost the edited account's key:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a1 = &providers["openai-custom"][0];
    assert!(a1["usageCount"].as_i64().unwrap_or(0) >= 1, "{providers}");
    assert!(a1["errorCount"].as_i64().unwrap_or(0) >= 1, "{providers}");
    assert!(
        mock.calls_with(UPSTREAM_KEY) >= 2,
        "the client requests reached the upstream"
    );

    let png = std::fs::read(&screenshot).expect("the browser test saved a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        screenshot.display(),
        png.len()
    );
    println!(
        "dashboard screenshot: {} ({} bytes); whole test took {:.1?}",
        screenshot.display(),
        png.len(),
        started.elapsed()
    );
}
