//! `GET /metrics`: needs the API key, parses as Prometheus text exposition, and counts what
//! happened (requests by provider/status, latency, account health, storage state).

use std::collections::HashMap;

use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream;
use serde_json::json;

/// A strict reader of the text format: `# HELP`/`# TYPE` comments and `name{labels} value`
/// samples; returns samples keyed by `name{labels}`. Panics (failing the test) on any other line.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "unknown comment: {line}");
            let name = parts.next().expect("a metric name");
            if kind == "TYPE" {
                let t = parts.next().expect("a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
                typed.insert(name.to_string());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1]
                .split("\",")
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(
                    !v.trim_end_matches('"').contains('"') || v.contains("\\\""),
                    "{line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count", "_total", "_created"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            typed.contains(name) || typed.contains(family),
            "sample before its TYPE: {line}"
        );
        out.insert(series.to_string(), v);
    }
    out
}

#[test]
fn metrics_are_protected_parse_and_count() {
    let mock = mock_upstream::start_in_thread(&["k1"]);
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("mkdir");
    std::fs::write(configs.join("config.json"), json!({"REQUIRED_API_KEY": "metrics-key", "MODEL_PROVIDER": "openai-custom", "REQUEST_MAX_RETRIES": 0}).to_string()).expect("write");
    std::fs::write(
        configs.join("provider_pools.json"),
        json!({"openai-custom": [{"uuid": "m1", "OPENAI_BASE_URL": format!("{}/v1", mock.base_url()), "OPENAI_API_KEY": "k1"}]}).to_string(),
    )
    .expect("write");
    let gw = Gateway::start(
        dir.path(),
        &[
            "--storage",
            "file",
            "--config-dir",
            configs.to_str().expect("utf8"),
            "--provider",
            "openai-custom",
        ],
        &[],
    );
    assert_eq!(gw.get("/metrics").0, 401, "no key, no metrics");

    let auth = [
        ("authorization", "Bearer metrics-key"),
        ("content-type", "application/json"),
    ];
    for model in ["gpt-4o", "gpt-4o", "mock-400", "mock-500"] {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        http(gw.addr, "POST", "/v1/chat/completions", &auth, &body);
    }
    let (st, text) = http(gw.addr, "GET", "/metrics", &auth, "");
    assert_eq!(st, 200, "{text}");
    let m = parse(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in:\n{text}"))
    };
    assert_eq!(
        get(r#"aiclient_requests_total{provider="openai-custom",protocol="OpenAi",status="200"}"#),
        2.0
    );
    assert_eq!(
        get(r#"aiclient_requests_total{provider="openai-custom",protocol="OpenAi",status="400"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aiclient_request_duration_seconds_count{provider="openai-custom"}"#),
        3.0
    );
    assert_eq!(
        get(
            r#"aiclient_upstream_failures_total{provider="openai-custom",outcome="upstream_error"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"aiclient_accounts{provider="openai-custom",state="healthy"}"#),
        1.0
    );
    assert_eq!(get(r#"aiclient_storage_up{backend="file"}"#), 1.0);
    assert!(m.contains_key(r#"aiclient_storage_queued_writes{backend="file"}"#));
    assert!(
        !text.contains("k1\"") && !text.contains("metrics-key"),
        "no secrets in metrics"
    );
}
