//! The container files: both compose files validate with `docker-compose config` (no Docker
//! engine runs here) and keep the properties operators rely on — Redis as a store (AOF on,
//! `noeviction`, password required, healthcheck, volume), the gateway waiting for a healthy
//! Redis, no fixed API key; the image builds every plugin and runs as non-root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .join("docker")
}

fn render(file: &str, password: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(docker_dir())
        .args(["-f", file, "config"])
        .env_remove("REDIS_PASSWORD");
    if let Some(p) = password {
        cmd.env("REDIS_PASSWORD", p);
    }
    cmd.output()
        .expect("run docker-compose (.ci/run installs it)")
}

#[test]
fn compose_files_validate_and_keep_redis_a_store() {
    for file in ["docker-compose.yml", "docker-compose.scale.yml"] {
        let out = render(file, Some("pw-for-test"));
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for must in [
            "noeviction",
            "--appendonly",
            "--requirepass",
            "healthcheck",
            "service_healthy",
            "redis-data:/data",
            "REDIS_ENABLED: \"true\"",
        ] {
            assert!(text.contains(must), "{file} lacks {must:?}:\n{text}");
        }
        assert!(
            !text.contains("allkeys-lru"),
            "{file}: Redis must never evict state"
        );
        assert!(
            !text.to_ascii_lowercase().contains("api-key") && !text.contains("REQUIRED_API_KEY"),
            "{file}: no fixed API key"
        );
        let missing = render(file, None);
        assert!(
            !missing.status.success(),
            "{file} must refuse to render without REDIS_PASSWORD"
        );
    }
    let scale =
        String::from_utf8_lossy(&render("docker-compose.scale.yml", Some("x")).stdout).to_string();
    assert!(
        scale.contains("aiclient-1") && scale.contains("aiclient-2") && scale.contains("nginx"),
        "{scale}"
    );
}

#[test]
fn the_image_builds_all_plugins_and_runs_as_non_root() {
    let df = std::fs::read_to_string(docker_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(df.matches("FROM ").count() >= 2, "multi-stage");
    assert!(df.contains("cargo build --release --locked"));
    assert!(
        df.contains("lib*.so"),
        "ships the plugin libraries next to the binary"
    );
    assert!(df.contains("USER aiclient"), "runs as non-root");
    assert!(df.contains("HEALTHCHECK"));
    let nginx = std::fs::read_to_string(docker_dir().join("nginx.conf")).expect("nginx.conf");
    assert!(
        nginx.contains("proxy_buffering off"),
        "streams pass through unbuffered"
    );
}
