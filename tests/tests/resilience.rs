//! Redis going away (`docs/resilience.md`):
//! - at startup: each `on_unavailable` policy (fallback to the file backend, wait with backoff,
//!   refuse) happens with its clear log line, and an empty Redis is reported with a warning
//!   naming `aiclient migrate`;
//! - under load: `kill -9` of Redis, SIGTERM and `kill -9` of the gateway during an outage (the
//!   journal), `CLIENT PAUSE` for 5 s (latency bound, no failure, exact counts);
//! - data deleted underneath (`FLUSHDB`): detected, logged, reseeded from memory — or, with
//!   `on_data_loss = "report"`, shown in the status with nothing written.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use aiclient_tests::gateway::{self, Gateway};
use aiclient_tests::mock_upstream;
use aiclient_tests::redis_server::{RedisServer, free_port};
use aiclient_tests::seed;
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Seeds a service config and two accounts into the Redis at `url`.
fn seed_redis(url: &str) {
    runtime().block_on(async {
        let s = seed::redis_storage(url).await;
        let config = json!({"REQUIRED_API_KEY": "k", "MODEL_PROVIDER": "openai-custom"});
        seed::openai_accounts(&s, &config, "http://127.0.0.1:9", 2).await;
    });
}

/// Every stderr line the gateway wrote so far.
fn logs(gw: &Gateway) -> Vec<String> {
    gw.stderr.try_iter().collect()
}

fn redis_args(url: &str) -> [&str; 6] {
    [
        "--storage",
        "redis",
        "--redis-url",
        url,
        "--provider",
        "openai-custom",
    ]
}

#[test]
fn redis_down_with_fallback_file_serves_from_the_file_backend_with_a_warning() {
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    let gw = Gateway::start(
        dir.path(),
        &redis_args(&url),
        &[
            ("AICLIENT_REDIS_ON_UNAVAILABLE", "fallback-file"),
            ("AICLIENT_CONFIG_DIR", configs.to_str().expect("utf-8")),
        ],
    );
    assert!(
        gw.stdout.iter().any(|l| l.contains("(storage: file)")),
        "serves from the file backend: {:?}",
        gw.stdout
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = logs(&gw);
    assert!(
        log.iter().any(|l| l.contains("WARN")
            && l.contains("Redis is unreachable")
            && l.contains("FALLING BACK to the file backend")
            && l.contains(configs.to_str().expect("utf-8"))),
        "a loud warning names why and where: {log:#?}"
    );
    assert!(
        log.iter().all(|l| !l.contains("redis://")),
        "no Redis URL in the logs"
    );
    let (st, _) = gw.get("/health");
    assert_eq!(st, 200);
}

#[test]
fn redis_down_with_refuse_exits_1_with_one_clear_line() {
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let out = gateway::command(&[
        "serve",
        "--port",
        "0",
        "--storage",
        "redis",
        "--redis-url",
        &url,
    ])
    .current_dir(dir.path())
    .env("AICLIENT_REDIS_ON_UNAVAILABLE", "refuse")
    .stdin(Stdio::null())
    .output()
    .expect("run aiclient");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("Redis is unreachable")
            && errors[0].contains("refusing to start")
            && errors[0].contains("on_unavailable = \"refuse\""),
        "{}",
        errors[0]
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "never listened"
    );
}

/// A gateway process started by hand (the `wait` policy delays its "listening" line), killed
/// when dropped; stdout and stderr lines arrive on one channel.
struct Proc {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut full = vec!["serve", "--host", "127.0.0.1", "--port", "0"];
        full.extend_from_slice(args);
        let mut cmd = gateway::command(&full);
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aiclient");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(l);
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) until `n` lines so far satisfy `want`.
    fn wait_for(&mut self, what: &str, n: usize, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.seen.iter().filter(|l| want(l)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("{what} did not happen within 30 s: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_down_then_empty_with_wait_retries_until_it_holds_data() {
    let mut redis = RedisServer::start();
    let url = redis.url(0);
    redis.kill();
    let dir = tempfile::tempdir().expect("tmp");
    let mut gw = Proc::spawn(
        dir.path(),
        &redis_args(&url),
        &[("AICLIENT_REDIS_ON_UNAVAILABLE", "wait")],
    );
    gw.wait_for("two logged attempts while Redis is down", 2, |l| {
        l.contains("WARN") && l.contains("Redis is unreachable") && l.contains("waiting")
    });
    assert!(
        gw.seen.iter().any(|l| l.contains("attempt=2")),
        "attempts are numbered: {:#?}",
        gw.seen
    );
    assert!(
        !gw.seen.iter().any(|l| l.contains("listening on")),
        "does not serve while Redis is down"
    );

    // Redis comes back empty: the warning names the fix, and the gateway keeps waiting.
    redis.restart();
    gw.wait_for("the empty-Redis warning", 1, |l| {
        l.contains("aiclient migrate --config-dir") && l.contains("aiclient init")
    });
    gw.wait_for("waiting on the empty Redis", 1, |l| {
        l.contains("Redis holds no data") && l.contains("waiting")
    });
    assert!(!gw.seen.iter().any(|l| l.contains("listening on")));

    // Seeded: it starts on Redis.
    seed_redis(&url);
    gw.wait_for("listening", 1, |l| l.contains("listening on"));
    assert!(
        gw.seen
            .iter()
            .any(|l| l.contains("listening on") && l.contains("(storage: redis)")),
        "{:#?}",
        gw.seen
    );
}

#[test]
fn empty_redis_warns_to_run_migrate_then_applies_the_default_policy() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(dir.path(), &redis_args(&url), &[]);
    std::thread::sleep(Duration::from_millis(200));
    let log = logs(&gw);
    assert!(
        log.iter().any(|l| l.contains("WARN")
            && l.contains("Redis is reachable but empty")
            && l.contains("aiclient migrate --config-dir")),
        "{log:#?}"
    );
    assert!(
        gw.stdout.iter().any(|l| l.contains("(storage: file)")),
        "the default policy (fallback-file) applies: {:?}",
        gw.stdout
    );
    drop(gw);

    // Refuse on an empty Redis: exit 1, and the warning still names the fix.
    let out = gateway::command(&[
        "serve",
        "--port",
        "0",
        "--storage",
        "redis",
        "--redis-url",
        &url,
    ])
    .current_dir(dir.path())
    .env("AICLIENT_REDIS_ON_UNAVAILABLE", "refuse")
    .stdin(Stdio::null())
    .output()
    .expect("run aiclient");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aiclient migrate --config-dir"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("Redis holds no data")),
        "{stderr}"
    );
}

// ---- Redis lost under load: nothing counted is lost -------------------------------------

const KEY: &str = "resilience-key";

/// A Redis that fsyncs every write (so its own restart loses nothing), seeded with 4 accounts
/// on the mock upstream.
fn seeded_aof_redis(mock_base: &str) -> RedisServer {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url(0);
    runtime().block_on(async {
        let s = seed::redis_storage(&url).await;
        let config = json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom", "REQUEST_MAX_RETRIES": 0});
        seed::openai_accounts(&s, &config, mock_base, 4).await;
    });
    redis
}

fn usage_in_redis(url: &str) -> i64 {
    runtime().block_on(async {
        let s = seed::redis_storage(url).await;
        seed::usage_total(&s, "openai-custom").await
    })
}

fn chat(addr: std::net::SocketAddr) -> u16 {
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    gateway::http(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .0
}

/// Requests from 2 threads until stopped; returns (succeeded, failed).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64)>>,
    ok: Arc<AtomicU64>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                let okc = ok.clone();
                std::thread::spawn(move || {
                    let (mut good, mut bad) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        if chat(addr) == 200 {
                            good += 1;
                            okc.fetch_add(1, Ordering::Relaxed);
                        } else {
                            bad += 1;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (good, bad)
                })
            })
            .collect();
        Load { stop, threads, ok }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("load thread"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn login(gw: &Gateway) -> String {
    let pw = gw.generated_password().expect("generated admin password");
    let (st, body) = gateway::http(
        gw.addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({"password": pw}).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    format!("Bearer {}", v["token"].as_str().expect("token"))
}

fn redis_status(addr: std::net::SocketAddr, auth: &str) -> serde_json::Value {
    let (st, body) = gateway::http(
        addr,
        "GET",
        "/api/redis/status",
        &[("authorization", auth)],
        "",
    );
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn kill_9_redis_under_load_loses_no_count() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let mut redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let gw = Gateway::start(
        dir.path(),
        &redis_args(&url),
        &[("AICLIENT_DATA_DIR", data.to_str().expect("utf-8"))],
    );
    let auth = login(&gw);
    let before = redis_status(gw.addr, &auth);
    assert_eq!(before["connected"], true, "{before}");
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_secs(2));

    redis.kill();
    let outage = Instant::now();
    let mut max_queued = 0;
    let mut saw_degraded = false;
    while outage.elapsed() < Duration::from_secs(10) {
        let st = redis_status(gw.addr, &auth);
        max_queued = max_queued.max(st["queuedWrites"].as_i64().unwrap_or(0));
        saw_degraded |= st["degradedSince"].is_i64();
        assert!(!st.to_string().contains("redis://"), "no URL: {st}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = load.ok.load(Ordering::Relaxed);
    assert!(
        data.join("pending-writes.json").is_file(),
        "the journal exists during the outage"
    );
    redis.restart();
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed) = load.finish();
    // Drained: nothing queued, the journal gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let st = redis_status(gw.addr, &auth);
        if st["queuedWrites"] == 0 && st["degradedSince"].is_null() {
            break st;
        }
        assert!(Instant::now() < deadline, "never drained: {st}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let total = usage_in_redis(&url);
    eprintln!(
        "kill -9 redis: ok={ok} failed={failed} ok_at_restart={during} max_queued={max_queued} usage_total={total}"
    );
    assert!(ok > 100, "the load ran: {ok}");
    assert!(max_queued > 0, "queuedWrites > 0 during the outage");
    assert!(saw_degraded, "degradedSince shown during the outage");
    assert_eq!(after["queuedWrites"], 0);
    assert_eq!(
        total, ok as i64,
        "usageCount equals the successful requests"
    );
    assert!(
        !data.join("pending-writes.json").exists(),
        "journal removed"
    );
}

#[test]
fn sigterm_during_an_outage_journals_and_a_restart_replays_exactly() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let mut redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let env = [
        ("AICLIENT_DATA_DIR", data.to_str().expect("utf-8")),
        ("AICLIENT_REDIS_ON_UNAVAILABLE", "wait"),
    ];
    let gw = Gateway::start(dir.path(), &redis_args(&url), &env);
    let password = gw.generated_password().expect("generated admin password");
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_secs(1));
    redis.kill();
    std::thread::sleep(Duration::from_secs(3));
    let (ok, _) = load.finish();
    let logs = gw.terminate_keep_logs();
    assert!(
        data.join("pending-writes.json").is_file(),
        "SIGTERM with Redis down leaves the journal: {logs:#?}"
    );

    // Restarted while Redis is still down: it waits; Redis returns; the journal is replayed.
    let mut gw2 = Proc::spawn(dir.path(), &redis_args(&url), &env);
    gw2.wait_for("waiting for Redis", 1, |l| {
        l.contains("Redis is unreachable")
    });
    redis.restart();
    gw2.wait_for("listening", 1, |l| l.contains("listening on"));
    assert!(
        gw2.seen.iter().any(|l| l.contains("replaying the journal")),
        "{:#?}",
        gw2.seen
    );
    assert!(
        gw2.seen
            .iter()
            .any(|l| l.contains("journal replay finished") && l.contains("elapsed_ms=")),
        "{:#?}",
        gw2.seen
    );
    // The replay's progress is in the status.
    let addr: std::net::SocketAddr = gw2
        .seen
        .iter()
        .find_map(|l| l.split("listening on http://").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("listen address");
    let (st, body) = gateway::http(
        addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({ "password": password }).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).expect("json");
    let auth = format!("Bearer {}", token["token"].as_str().expect("token"));
    let replay = &redis_status(addr, &auth)["replay"];
    assert_eq!(replay["kind"], "journal", "{replay}");
    assert_eq!(replay["running"], false, "{replay}");
    assert_eq!(replay["ok"], true, "{replay}");
    assert!(replay["total"].as_u64().is_some_and(|n| n > 0), "{replay}");
    assert_eq!(replay["done"], replay["total"], "{replay}");
    assert!(
        replay["startedAt"].is_i64() && replay["finishedAt"].is_i64(),
        "{replay}"
    );
    assert!(
        !data.join("pending-writes.json").exists(),
        "journal removed"
    );
    let total = usage_in_redis(&url);
    eprintln!("sigterm during outage: ok={ok} usage_total={total}");
    assert!(ok > 20, "the load ran: {ok}");
    assert_eq!(
        total, ok as i64,
        "usageCount equals the successful requests"
    );
}

#[test]
fn kill_9_of_the_gateway_during_an_outage_loses_at_most_one_flush_interval() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let mut redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let env = [
        ("AICLIENT_DATA_DIR", data.to_str().expect("utf-8")),
        ("AICLIENT_REDIS_ON_UNAVAILABLE", "wait"),
    ];
    let gw = Gateway::start(dir.path(), &redis_args(&url), &env);
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_secs(1));
    redis.kill();
    std::thread::sleep(Duration::from_secs(3));
    // Requests done in the last 400 ms (two flush intervals) bound the allowed loss.
    let earlier = load.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(400));
    let (ok, _) = load.finish();
    drop(gw); // SIGKILL, right after the last request completed
    let window = ok - earlier;

    redis.restart();
    let mut gw2 = Proc::spawn(dir.path(), &redis_args(&url), &env);
    gw2.wait_for("listening", 1, |l| l.contains("listening on"));
    let total = usage_in_redis(&url);
    eprintln!(
        "kill -9 gateway during outage: ok={ok} usage_total={total} lost={} allowed<={window}",
        ok as i64 - total
    );
    assert!(ok > 20, "the load ran: {ok}");
    assert!(total <= ok as i64, "nothing counted twice: {total} > {ok}");
    assert!(
        ok as i64 - total <= window as i64,
        "lost {} > the requests of the last 400 ms ({window})",
        ok as i64 - total
    );
    assert!(
        !data.join("pending-writes.json").exists(),
        "journal replayed and removed"
    );
}

// ---- CLIENT PAUSE: Redis stops answering for 5 s under load -------------------------------

/// The Redis backend's default command timeout (`[storage.redis] command_timeout_ms`).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// Requests from 2 threads until stopped, each one timed: (started at, latency, status).
struct TimedLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, Duration, u16)>>>,
}

impl TimedLoad {
    fn start(addr: std::net::SocketAddr) -> TimedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let st = chat(addr);
                        seen.push((t, t.elapsed(), st));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    seen
                })
            })
            .collect();
        TimedLoad { stop, threads }
    }

    fn finish(mut self) -> Vec<(Instant, Duration, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .flat_map(|t| t.join().expect("load thread"))
            .collect()
    }
}

impl Drop for TimedLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty(), "no samples");
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

/// Polls `/api/redis/status` until the gateway has written everything; returns that status.
fn drained(addr: std::net::SocketAddr, auth: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = redis_status(addr, auth);
        if st["queuedWrites"] == 0 && st["degradedSince"].is_null() {
            return st;
        }
        assert!(Instant::now() < deadline, "never drained: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn client_pause_for_5s_under_load_fails_no_request_and_keeps_p99_below_the_command_timeout() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let gw = Gateway::start(
        dir.path(),
        &redis_args(&url),
        &[("AICLIENT_DATA_DIR", data.to_str().expect("utf-8"))],
    );
    let auth = login(&gw);
    let load = TimedLoad::start(gw.addr);
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "5000", "ALL"]), "OK");
    let paused = Instant::now();
    // The admin status answers within the bound while Redis is paused, and says so.
    let mut status_latencies = Vec::new();
    let mut saw_stale = false;
    while paused.elapsed() < Duration::from_millis(4500) {
        let t = Instant::now();
        let st = redis_status(gw.addr, &auth);
        status_latencies.push(t.elapsed());
        saw_stale |= st["connected"] == false;
        assert!(!st.to_string().contains("redis://127"), "no raw URL: {st}");
        if status_latencies.len() == 2 {
            // A load balancer's probe: the instance still serves, so it must stay in rotation.
            let (hs, hb) = gw.get("/health");
            assert_eq!(hs, 200, "/health during the pause: {hb}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let resumed = paused + Duration::from_secs(5);
    std::thread::sleep(resumed.saturating_duration_since(Instant::now()) + Duration::from_secs(3));
    let samples = load.finish();
    let after = drained(gw.addr, &auth);

    let ok = samples.iter().filter(|s| s.2 == 200).count() as i64;
    let failed: Vec<_> = samples.iter().filter(|s| s.2 != 200).collect();
    let during: Vec<Duration> = samples
        .iter()
        .filter(|s| s.0 >= paused && s.0 < resumed)
        .map(|s| s.1)
        .collect();
    let during_n = during.len();
    let (p99_all, p99_during) = (p99(samples.iter().map(|s| s.1).collect()), p99(during));
    let max_status = status_latencies.iter().max().copied().unwrap_or_default();
    let total = usage_in_redis(&url);
    eprintln!(
        "CLIENT PAUSE 5 s: requests={} ok={ok} failed={} during_pause={during_n} p99={p99_all:?} \
         p99_during_pause={p99_during:?} status_max={max_status:?} ({} polls) usage_total={total}",
        samples.len(),
        failed.len(),
        status_latencies.len(),
    );
    let bound = COMMAND_TIMEOUT + Duration::from_millis(100);
    assert!(failed.is_empty(), "no request failed: {failed:?}");
    assert!(during_n > 50, "the load ran during the pause: {during_n}");
    assert!(p99_all < bound, "p99 {p99_all:?} >= {bound:?}");
    assert!(
        p99_during < bound,
        "p99 during the pause {p99_during:?} >= {bound:?}"
    );
    assert!(
        max_status < bound,
        "GET /api/redis/status took {max_status:?} during the pause"
    );
    assert!(
        saw_stale,
        "the status showed Redis not answering during the pause"
    );
    assert_eq!(total, ok, "usageCount equals the successful requests");
    // The pause made flushes time out (degraded); the catch-up after it is in the status.
    assert_eq!(after["replay"]["kind"], "catch-up", "{after}");
    assert_eq!(after["replay"]["running"], false, "{after}");
    assert_eq!(after["replay"]["ok"], true, "{after}");
    assert!(after["replay"]["finishedAt"].is_i64(), "{after}");
    assert!(
        after["dataLoss"].is_null(),
        "a pause is no data loss: {after}"
    );
    let log = gw.logs();
    assert!(
        log.contains(&format!(
            "redis backend connected to redis://127.0.0.1:{}/0",
            redis.port
        )),
        "the connect line names host:port/db: {log}"
    );
    assert!(log.contains("degraded mode"), "{log}");
    assert!(log.contains("catch-up finished"), "{log}");
}

// ---- FLUSHDB while running: detected, logged, reseeded from memory (or reported) ----------

/// Whether the seeded state (meta, config, the 4 accounts) is in Redis.
fn state_in_redis(redis: &RedisServer) -> (bool, bool, i64) {
    let exists = |k: &str| redis.cli(&["EXISTS", k]) == "1";
    (
        exists("aiclient:{global}:meta"),
        exists("aiclient:{global}:config"),
        redis
            .cli(&["ZCARD", "aiclient:{pool:openai-custom}:accounts"])
            .parse()
            .unwrap_or(-1),
    )
}

#[test]
fn flushdb_under_load_is_detected_logged_and_reseeded_from_memory() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(dir.path(), &redis_args(&url), &[]);
    let password = gw.generated_password().expect("generated admin password");
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_secs(2));
    let before = usage_in_redis(&url);
    assert!(before > 0, "counts reached Redis before the FLUSHDB");

    assert_eq!(redis.cli(&["FLUSHDB"]), "OK");
    let flushed = Instant::now();
    let reseed_time = loop {
        let (meta, config, accounts) = state_in_redis(&redis);
        if meta && config && accounts == 4 {
            break flushed.elapsed();
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(10),
            "not reseeded within 10 s: meta={meta} config={config} accounts={accounts}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let right_after = usage_in_redis(&url);
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed) = load.finish();
    // Sessions are not reseeded: log in again (the password hash was).
    let (st, body) = gateway::http(
        gw.addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({ "password": password }).to_string(),
    );
    assert_eq!(st, 200, "the reseeded password hash logs in: {body}");
    let auth = format!(
        "Bearer {}",
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["token"]
            .as_str()
            .expect("token")
    );
    let status = drained(gw.addr, &auth);
    let total = usage_in_redis(&url);
    let log = gw.logs();
    eprintln!(
        "FLUSHDB: ok={ok} failed={failed} usage_before={before} right_after_reseed={right_after} \
         usage_total={total} reseeded_in={reseed_time:?} dataLoss={}",
        status["dataLoss"]
    );
    assert_eq!(failed, 0, "no request failed");
    assert!(
        right_after >= before,
        "the reseed kept the counts: {right_after} < {before}"
    );
    assert_eq!(
        total, ok as i64,
        "usageCount equals the successful requests"
    );
    let loss = &status["dataLoss"];
    assert!(loss["detectedAt"].is_i64(), "{status}");
    assert_eq!(loss["policy"], "reseed");
    assert_eq!(loss["writesPaused"], false);
    assert_eq!(loss["reseeded"]["accounts"], 4, "{loss}");
    assert_eq!(loss["reseeded"]["config"], true, "{loss}");
    assert_eq!(loss["reseeded"]["passwordHash"], true, "{loss}");
    assert!(loss["reseedFinishedAt"].is_i64(), "{loss}");
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("STORAGE DATA LOSS")
            && l.contains("FLUSHDB")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("reseed finished") && l.contains("accounts=4")),
        "{log}"
    );

    // A second gateway on the reseeded Redis starts (no "empty Redis" fallback, no new admin
    // password) and serves.
    let dir2 = tempfile::tempdir().expect("tmp");
    let gw2 = Gateway::start(dir2.path(), &redis_args(&url), &[]);
    assert!(
        gw2.stdout.iter().any(|l| l.contains("(storage: redis)")),
        "{:?}",
        gw2.stdout
    );
    assert_eq!(
        gw2.generated_password(),
        None,
        "the password hash was reseeded"
    );
    assert_eq!(chat(gw2.addr), 200);
}

#[test]
fn flushdb_with_on_data_loss_report_is_shown_in_the_status_and_nothing_is_rewritten() {
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let redis = seeded_aof_redis(&mock.base_url());
    let url = redis.url(0);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(
        dir.path(),
        &redis_args(&url),
        &[("AICLIENT_REDIS_ON_DATA_LOSS", "report")],
    );
    let auth = login(&gw);
    let load = Load::start(gw.addr);
    std::thread::sleep(Duration::from_secs(1));

    assert_eq!(redis.cli(&["FLUSHDB"]), "OK");
    let flushed = Instant::now();
    let status = loop {
        let st = redis_status(gw.addr, &auth);
        if st["dataLoss"].is_object() {
            break st;
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(10),
            "not reported within 10 s: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let detected_in = flushed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    // Still serving, from memory; nothing was written back.
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "Redis was not rewritten");
    let loss = &status["dataLoss"];
    assert_eq!(loss["policy"], "report", "{status}");
    assert_eq!(loss["writesPaused"], true, "{status}");
    assert!(loss["detectedAt"].is_i64(), "{status}");
    assert!(loss["reseeded"].is_null(), "{status}");
    let queued = redis_status(gw.addr, &auth)["queuedWrites"]
        .as_i64()
        .unwrap_or(0);
    assert!(queued > 0, "counts wait in memory: {queued}");
    let log = gw.logs();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("STORAGE DATA LOSS")
            && l.contains("policy=\"report\"")),
        "{log}"
    );
    assert!(log.contains("writes to storage paused"), "{log}");

    // The operator asks for the reseed: everything comes back, counts exact.
    let (st, body) = gateway::http(
        gw.addr,
        "POST",
        "/api/redis/reseed",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(st, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(r["reseeded"]["accounts"], 4, "{r}");
    std::thread::sleep(Duration::from_secs(1));
    let (ok, failed) = load.finish();
    let (st, body) = gateway::http(
        gw.addr,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        &json!({"password": gw.generated_password().expect("password")}).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    let auth = format!(
        "Bearer {}",
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["token"]
            .as_str()
            .expect("token")
    );
    let after = drained(gw.addr, &auth);
    let total = usage_in_redis(&url);
    eprintln!(
        "FLUSHDB (report): ok={ok} failed={failed} detected_in={detected_in:?} queued={queued} usage_total={total}"
    );
    assert_eq!(failed, 0, "no request failed");
    assert_eq!(after["dataLoss"]["writesPaused"], false, "{after}");
    assert_eq!(
        total, ok as i64,
        "usageCount equals the successful requests"
    );
    assert_eq!(state_in_redis(&redis), (true, true, 4));
}
