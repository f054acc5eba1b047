//! Redis going away at startup: each `on_unavailable` policy (fallback to the file backend,
//! wait with backoff, refuse) happens with its clear log line, and an empty Redis is reported
//! with a warning naming `aiclient migrate`.

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
