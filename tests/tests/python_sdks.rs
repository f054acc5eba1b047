//! The official `openai` and `anthropic` Python SDKs as clients of the real gateway (chat,
//! streaming, tool calls, errors, model list, token count) against the mock upstream.
//! Needs `python3` with both SDKs installed (`.ci/run` installs them).

use std::process::Command;

use aiclient_tests::gateway::Gateway;
use aiclient_tests::mock_upstream;
use serde_json::json;

#[test]
fn official_python_sdks_work_against_the_gateway() {
    let mock = mock_upstream::start_in_thread(&["up-key-1", "claude-key-1"]);
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("mkdir");
    let config = json!({"REQUIRED_API_KEY": "sdk-key", "MODEL_PROVIDER": "openai-custom"});
    let pools = json!({
        "openai-custom": [{"uuid": "o1", "OPENAI_BASE_URL": format!("{}/v1", mock.base_url()), "OPENAI_API_KEY": "up-key-1"}],
        "claude-custom": [{"uuid": "c1", "CLAUDE_BASE_URL": mock.base_url(), "CLAUDE_API_KEY": "claude-key-1"}],
    });
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

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sdk_e2e.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("GATEWAY_URL", format!("http://{}", gw.addr))
        .env("API_KEY", "sdk-key")
        .output()
        .expect("run python3 (is it installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
