//! The gateway under load, side by side with the upstream it fronts.
//!
//! For every scenario (backend × pool size × unary/stream × concurrency) the runner starts a
//! fresh release `aiclient serve` on the file or Redis backend with a pool of `openai-custom`
//! accounts pointing at the standalone mock upstream (`src/bin/mock-upstream.rs`), then runs
//! the load generator (`src/bin/loadgen.rs`) twice with the same concurrency and duration, one
//! after the other: **directly against the mock** first, then **through the gateway**. Each run
//! is preceded by a 1 s warmup invocation (connections, the gateway's upstream pool). Then the
//! gateway gets SIGTERM (it flushes its counters) and the pool's `usageCount` total is read
//! back: file backend from `provider_pools.json`, Redis through the storage API.
//!
//! Columns: direct and gateway throughput (successful requests per second) and their ratio;
//! the gateway's p50/p99 latency; the gateway process's CPU (utime + stime from
//! `/proc/<pid>/stat`, all threads, plugin runtimes included) per request of the measured run;
//! the counter delta, `usageCount` after − before − successful gateway requests (warmup
//! included), which must be exactly 0.
//!
//! Run: `cargo bench -p aiclient-tests --bench gateway_load`. Everything runs on loopback on
//! this machine: load generator, mock and gateway share the CPUs, so the direct column is the
//! ceiling the machine allows, and the gateway column pays for its own CPU out of the same
//! budget. The table is printed and written to `target/gateway-load.md`.
//!
//! Environment:
//! - `AICLIENT_BENCH_QUICK=1`: C = 100 only, 3 s per run (8 scenarios, about 2 minutes);
//! - `AICLIENT_BENCH_SECS=S`: seconds per measured run (default 5; quick 3; at most 60);
//! - `AICLIENT_BENCH_BACKENDS=file,redis`, `AICLIENT_BENCH_ACCOUNTS=20,10000`,
//!   `AICLIENT_BENCH_MODES=unary,stream`, `AICLIENT_BENCH_C=10,100,500`: subsets;
//! - `AICLIENT_BENCH_SETTLE_MS=N`: wait N ms after the last request before SIGTERM (a
//!   diagnostic: lets the gateway's periodic counter flush finish before shutdown);
//! - `AICLIENT_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p"`: run the
//!   gateway under a tool (instruction counts are repeatable where times are not);
//! - `AICLIENT_BENCH_PERF=1`: record a `perf` profile (DWARF call graphs) of the gateway during
//!   each measured gateway run, into `target/gateway-load-logs/perf-*.data` (the profiler's
//!   overhead inflates that run's CPU column).
//!
//! A scenario whose counters are off or whose gateway did not exit cleanly keeps its gateway
//! log in `target/gateway-load-logs/`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::split_account;
use aiclient_tests::artifacts::{self, Artifacts};
use aiclient_tests::mock_upstream::TEXT;
use aiclient_tests::redis_server::RedisServer;
use serde_json::{Value, json};

const CLIENT_KEY: &str = "bench-client-key";
/// Upstream keys the mock accepts; account `i` uses key `i % UPSTREAM_KEYS`.
const UPSTREAM_KEYS: usize = 20;
const PROVIDER: &str = "openai-custom";
const WARMUP_SECS: f64 = 1.0;
const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
const MOCK: &str = env!("CARGO_BIN_EXE_mock-upstream");
/// The packages the nested build produces (the same set as a plain release build of the
/// gateway and its plugins, so it shares that build's artifacts).
const PACKAGES: &[&str] = &[
    "aiclient",
    "aiclient-backend-file",
    "aiclient-backend-redis",
    "aiclient-provider-openai-custom",
    "aiclient-provider-claude-custom",
];

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process killed (and reaped) when dropped, also on panic.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the whole process so far, ms.
    fn cpu_ms(&self, ticks: f64) -> f64 {
        proc_cpu_ms(self.pid(), ticks)
            .unwrap_or_else(|| panic!("cannot read /proc/{}/stat ({})", self.pid(), self.name))
    }

    /// SIGTERM, then wait up to `limit` for it to exit; true if it exited with success.
    fn terminate(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return false,
            }
        }
        eprintln!(
            "{} did not exit within {limit:?} of SIGTERM; killing it",
            self.name
        );
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn proc_cpu_ms(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / ticks)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .unwrap_or(100.0)
}

/// Spawns `cmd` (stdout piped, stderr to `log`) and waits up to `limit` for a
/// `listening on http://ADDR` line.
fn spawn_listening(
    name: &str,
    mut cmd: Command,
    log: &Path,
    limit: Duration,
) -> (Proc, SocketAddr) {
    let err = File::create(log).expect("create log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc {
        name: name.to_string(),
        child,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining stdout after the address so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(a) => (
            proc,
            a.parse()
                .unwrap_or_else(|e| panic!("{name} printed a bad address {a:?}: {e}")),
        ),
        Err(_) => {
            drop(proc);
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} did not start listening within {limit:?}; its log:\n{log}");
        }
    }
}

/// Runs `cmd` to completion, killing it after `limit`; returns its stdout.
fn run_bounded(name: &str, mut cmd: Command, limit: Duration) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut p = Proc {
        name: name.to_string(),
        child,
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = p.child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            drop(p);
            panic!("{name} ran longer than {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(status.success(), "{name} failed ({status}): {stderr}");
    stdout
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    File,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Redis => "redis",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Unary,
    Stream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary",
            Mode::Stream => "stream",
        }
    }
}

struct Plan {
    backends: Vec<Backend>,
    accounts: Vec<usize>,
    modes: Vec<Mode>,
    concurrency: Vec<usize>,
    secs: f64,
    /// Pause between the last request and SIGTERM (default none).
    settle: Duration,
    /// Record a `perf` profile of the gateway during each measured run.
    perf: bool,
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    (!items.is_empty()).then_some(items)
}

fn plan() -> Plan {
    let settle = Duration::from_millis(
        std::env::var("AICLIENT_BENCH_SETTLE_MS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            .min(60_000),
    );
    let quick = std::env::var("AICLIENT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let secs = std::env::var("AICLIENT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(if quick { 3.0 } else { 5.0 }, |s| s.min(60.0));
    let backends =
        env_list("AICLIENT_BENCH_BACKENDS").map_or(vec![Backend::File, Backend::Redis], |l| {
            l.iter()
                .map(|b| match b.as_str() {
                    "file" => Backend::File,
                    "redis" => Backend::Redis,
                    other => panic!("AICLIENT_BENCH_BACKENDS: unknown backend {other}"),
                })
                .collect()
        });
    let accounts = env_list("AICLIENT_BENCH_ACCOUNTS").map_or(vec![20, 10_000], |l| {
        l.iter()
            .map(|n| {
                n.parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .expect("AICLIENT_BENCH_ACCOUNTS: 1..=100000")
            })
            .collect()
    });
    let modes = env_list("AICLIENT_BENCH_MODES").map_or(vec![Mode::Unary, Mode::Stream], |l| {
        l.iter()
            .map(|m| match m.as_str() {
                "unary" => Mode::Unary,
                "stream" => Mode::Stream,
                other => panic!("AICLIENT_BENCH_MODES: unknown mode {other}"),
            })
            .collect()
    });
    let concurrency = env_list("AICLIENT_BENCH_C").map_or(
        if quick { vec![100] } else { vec![10, 100, 500] },
        |l| {
            l.iter()
                .map(|c| {
                    c.parse()
                        .ok()
                        .filter(|c| (1..=2000).contains(c))
                        .expect("AICLIENT_BENCH_C: 1..=2000")
                })
                .collect()
        },
    );
    Plan {
        backends,
        accounts,
        modes,
        concurrency,
        secs,
        settle,
        perf: std::env::var("AICLIENT_BENCH_PERF").is_ok_and(|v| !v.is_empty() && v != "0"),
    }
}

/// The loadgen's JSON report of one measured run, plus the CPU the sampled processes used.
struct Run {
    report: Value,
    /// ok requests of the warmup invocation.
    warm_ok: u64,
    /// CPU ms during the measured run, per sampled process.
    cpu: Vec<f64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.report["rps"].as_f64().unwrap_or(0.0)
    }
    fn ok(&self) -> u64 {
        self.report["ok"].as_u64().unwrap_or(0)
    }
    fn requests(&self) -> u64 {
        self.report["requests"].as_u64().unwrap_or(0)
    }
    fn lat(&self, p: &str) -> f64 {
        self.report["latency_ms"][p].as_f64().unwrap_or(0.0)
    }
    fn errors(&self) -> String {
        match self.report["errors"].as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => "0".into(),
        }
    }
    fn loadgen_cpu_per_req(&self) -> f64 {
        self.report["cpu_ms"].as_f64().unwrap_or(0.0) / self.requests().max(1) as f64
    }
}

fn loadgen_cmd(url: &str, key: &str, mode: Mode, c: usize, secs: f64) -> Command {
    let mut cmd = Command::new(LOADGEN);
    cmd.args([
        "--url",
        url,
        "--concurrency",
        &c.to_string(),
        "--duration",
        &secs.to_string(),
    ])
    .args([
        "--header",
        &format!("authorization: Bearer {key}"),
        "--timeout",
        "30",
        "--threads",
        "1",
    ]);
    match mode {
        Mode::Unary => cmd.args(["--expect", TEXT]),
        Mode::Stream => cmd.args(["--stream", "--expect", "[DONE]"]),
    };
    cmd
}

/// One load-generator setting.
struct Load<'a> {
    url: &'a str,
    key: &'a str,
    mode: Mode,
    c: usize,
    secs: f64,
}

/// A warmup invocation, then the measured one, sampling `sampled` processes' CPU around it.
/// With `profile`, `perf record` samples the first of them during the measured run.
fn measure(load: &Load, sampled: &[&Proc], ticks: f64, profile: Option<&Path>) -> Run {
    let Load {
        url,
        key,
        mode,
        c,
        secs,
    } = *load;
    let limit = Duration::from_secs_f64(secs + 90.0);
    let warm: Value = serde_json::from_str(&run_bounded(
        "loadgen",
        loadgen_cmd(url, key, mode, c, WARMUP_SECS),
        limit,
    ))
    .expect("loadgen prints JSON");
    let mut perf = profile.map(|out| start_perf(sampled[0].pid(), out, secs));
    let before: Vec<f64> = sampled.iter().map(|p| p.cpu_ms(ticks)).collect();
    let out = run_bounded("loadgen", loadgen_cmd(url, key, mode, c, secs), limit);
    let cpu = sampled
        .iter()
        .zip(&before)
        .map(|(p, b)| p.cpu_ms(ticks) - b)
        .collect();
    if let Some(p) = perf.as_mut() {
        let _ = Command::new("kill")
            .args(["-INT", &p.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("loadgen printed no JSON ({e}): {out}"));
    Run {
        report,
        warm_ok: warm["ok"].as_u64().unwrap_or(0),
        cpu,
    }
}

/// `perf record` with DWARF call graphs on `pid`, for at most `secs` + 5 s.
fn start_perf(pid: u32, out: &Path, secs: f64) -> Proc {
    let mut cmd = Command::new("perf");
    cmd.args([
        "record",
        "-q",
        "-F",
        "499",
        "--call-graph",
        "dwarf,16384",
        "-p",
        &pid.to_string(),
        "-o",
    ])
    .arg(out)
    .args(["--", "sleep", &format!("{}", secs.ceil() as u64 + 5)])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("AICLIENT_BENCH_PERF is set but perf cannot run: {e}"));
    // perf needs a moment to attach before the load starts.
    std::thread::sleep(Duration::from_millis(300));
    Proc {
        name: "perf".into(),
        child,
    }
}

fn account_json(i: usize, mock: SocketAddr) -> Value {
    json!({
        "uuid": format!("bench-{i:05}"),
        "customName": format!("bench account {i}"),
        "OPENAI_BASE_URL": format!("http://{mock}/v1"),
        "OPENAI_API_KEY": format!("up-key-{}", i % UPSTREAM_KEYS),
        "isHealthy": true,
        "isDisabled": false,
        "usageCount": 0,
        "errorCount": 0,
    })
}

fn service_config() -> Value {
    json!({"REQUIRED_API_KEY": CLIENT_KEY, "MODEL_PROVIDER": PROVIDER})
}

/// Where one pool of accounts lives, and how to read its counters back.
enum Store {
    File {
        configs: PathBuf,
    },
    Redis {
        url: String,
        storage: Storage,
        rt: Box<tokio::runtime::Runtime>,
        _lib: Box<loader::LoadedStorage>,
    },
}

impl Store {
    fn file(dir: &Path, n: usize, mock: SocketAddr) -> Store {
        let configs = dir.join(format!("configs-{n}"));
        std::fs::create_dir_all(&configs).expect("mkdir configs");
        let accounts: Vec<Value> = (0..n).map(|i| account_json(i, mock)).collect();
        std::fs::write(
            configs.join("config.json"),
            serde_json::to_string_pretty(&service_config()).expect("json"),
        )
        .expect("write config.json");
        std::fs::write(
            configs.join("provider_pools.json"),
            serde_json::to_string_pretty(&json!({ PROVIDER: accounts })).expect("json"),
        )
        .expect("write provider_pools.json");
        Store::File { configs }
    }

    /// Seeds database `db` through the backend's own storage API.
    fn redis(a: &Artifacts, redis: &RedisServer, db: u32, n: usize, mock: SocketAddr) -> Store {
        let url = redis.url(db);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let lib =
            loader::load_storage(a.lib("aiclient_backend_redis")).expect("load the redis backend");
        let storage = rt.block_on(async {
            let cfg = json!({"url": url, "key_prefix": "aiclient:", "instance_id": "bench-seed"});
            let s = create_storage(&lib, &cfg)
                .await
                .expect("create the redis backend");
            s.set_config(&service_config().to_string())
                .await
                .expect("set_config");
            for i in 0..n {
                let Value::Object(obj) = account_json(i, mock) else {
                    unreachable!("an object")
                };
                let acc = split_account(PROVIDER, obj).expect("split account");
                s.add_account(acc).await.expect("add_account");
            }
            s
        });
        Store::Redis {
            url,
            storage,
            rt: Box::new(rt),
            _lib: Box::new(lib),
        }
    }

    fn usage_total(&self) -> i64 {
        match self {
            Store::File { configs } => {
                let text = std::fs::read_to_string(configs.join("provider_pools.json"))
                    .expect("read provider_pools.json");
                let v: Value = serde_json::from_str(&text).expect("provider_pools.json is JSON");
                v[PROVIDER]
                    .as_array()
                    .expect("the pool")
                    .iter()
                    .map(|a| a["usageCount"].as_i64().unwrap_or(0))
                    .sum()
            }
            Store::Redis { storage, rt, .. } => rt.block_on(async {
                let accounts = storage
                    .list_accounts(Some(PROVIDER))
                    .await
                    .expect("list_accounts");
                accounts.iter().map(|a| a.state.usage_count).sum()
            }),
        }
    }

    fn gateway_args(&self) -> Vec<String> {
        match self {
            Store::File { configs } => {
                vec![
                    "--storage".into(),
                    "file".into(),
                    "--config-dir".into(),
                    configs.display().to_string(),
                ]
            }
            Store::Redis { url, .. } => vec![
                "--storage".into(),
                "redis".into(),
                "--redis-url".into(),
                url.clone(),
            ],
        }
    }
}

fn start_gateway(a: &Artifacts, store: &Store, work: &Path, log: &Path) -> (Proc, SocketAddr) {
    // `AICLIENT_BENCH_WRAP="valgrind --tool=callgrind …"`: run the gateway under a tool.
    let wrap: Vec<String> = std::env::var("AICLIENT_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut cmd = match wrap.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(a.bin("aiclient"));
            c
        }
        None => Command::new(a.bin("aiclient")),
    };
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(store.gateway_args())
        .arg("--provider")
        .arg(a.lib("aiclient_provider_openai_custom"))
        .current_dir(work)
        .env(
            "AICLIENT_PLUGIN_DIR",
            a.lib("aiclient_backend_file")
                .parent()
                .expect("a library has a directory"),
        )
        .env("NO_COLOR", "1");
    for k in [
        "RUST_LOG",
        "AICLIENT_CONFIG",
        "AICLIENT_LOG",
        "AICLIENT_API_KEY",
        "REDIS_URL",
        "REDIS_ENABLED",
        "AICLIENT_PROVIDERS",
    ] {
        cmd.env_remove(k);
    }
    spawn_listening("aiclient", cmd, log, Duration::from_secs(120))
}

struct Row {
    backend: Backend,
    accounts: usize,
    mode: Mode,
    c: usize,
    direct: Run,
    gateway: Run,
    counter_delta: i64,
    clean_exit: bool,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.gateway.rps() / self.direct.rps().max(1e-9)
    }
    fn gw_cpu_per_req(&self) -> f64 {
        self.gateway.cpu[0] / self.gateway.requests().max(1) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| backend | accounts | mode | C | direct req/s | gateway req/s | ratio | gw p50 ms | gw p99 ms | gw CPU ms/req | counter delta |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.4} | {} |\n",
            r.backend.name(),
            r.accounts,
            r.mode.name(),
            r.c,
            r.direct.rps(),
            r.gateway.rps(),
            r.ratio(),
            r.gateway.lat("p50"),
            r.gateway.lat("p99"),
            r.gw_cpu_per_req(),
            r.counter_delta,
        ));
    }
    s
}

fn diagnostics(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| backend | accounts | mode | C | direct p50/p99 ms | direct errors | gw errors | gw requests | loadgen CPU ms/req (direct / gw) | mock CPU ms/req (direct / gw) | clean exit |\n");
    s.push_str("|---|---:|---|---:|---:|---|---|---:|---:|---:|---|\n");
    for r in rows {
        let mock_direct = r.direct.cpu[0] / r.direct.requests().max(1) as f64;
        let mock_gw = r.gateway.cpu[1] / r.gateway.requests().max(1) as f64;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} / {:.2} | {} | {} | {} | {:.4} / {:.4} | {:.4} / {:.4} | {} |\n",
            r.backend.name(),
            r.accounts,
            r.mode.name(),
            r.c,
            r.direct.lat("p50"),
            r.direct.lat("p99"),
            r.direct.errors(),
            r.gateway.errors(),
            r.gateway.requests(),
            r.direct.loadgen_cpu_per_req(),
            r.gateway.loadgen_cpu_per_req(),
            mock_direct,
            mock_gw,
            if r.clean_exit { "yes" } else { "no" },
        ));
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn targets(rows: &[Row]) -> String {
    let mut s = String::new();
    let c100: Vec<&Row> = rows
        .iter()
        .filter(|r| r.c == 100 && r.mode == Mode::Unary)
        .collect();
    for r in &c100 {
        s.push_str(&format!(
            "- {} / {} accounts, C=100 unary: gateway {:.2}× direct (target ≥ 0.5×: {}); {:.4} ms CPU/req (target ≤ 0.05: {})\n",
            r.backend.name(),
            r.accounts,
            r.ratio(),
            verdict(r.ratio() >= 0.5),
            r.gw_cpu_per_req(),
            verdict(r.gw_cpu_per_req() <= 0.05),
        ));
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.counter_delta != 0)
        .map(|r| {
            format!(
                "{}/{}/{}/C={}: {}",
                r.backend.name(),
                r.accounts,
                r.mode.name(),
                r.c,
                r.counter_delta
            )
        })
        .collect();
    s.push_str(&format!(
        "- counters exact in every scenario: {}{}\n",
        verdict(bad.is_empty()),
        if bad.is_empty() {
            String::new()
        } else {
            format!(" ({})", bad.join("; "))
        }
    ));
    for big in rows.iter().filter(|r| r.accounts > 20) {
        if let Some(small) = rows.iter().find(|r| {
            r.accounts == 20 && r.backend == big.backend && r.mode == big.mode && r.c == big.c
        }) {
            let q = big.gateway.rps() / small.gateway.rps().max(1e-9);
            let cpu = big.gw_cpu_per_req() / small.gw_cpu_per_req().max(1e-9);
            s.push_str(&format!(
                "- {} {} C={}: {} accounts at {:.2}× the 20-account throughput (target ≥ 0.9×: {}); \
                 CPU per request {:.2}× the 20-account pool's\n",
                big.backend.name(),
                big.mode.name(),
                big.c,
                big.accounts,
                q,
                verdict(q >= 0.9),
                cpu,
            ));
        }
    }
    s
}

/// Copies the gateway log of a scenario whose counters or exit were wrong to `dir` and shows
/// its last warnings and errors.
fn keep_log(log: &Path, dir: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let notable: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    eprintln!(
        "gateway_load: counters or exit were wrong; {} warning/error lines in the gateway log, the last ones:",
        notable.len()
    );
    for l in notable.iter().rev().take(10).rev() {
        eprintln!("    {l}");
    }
    let _ = std::fs::create_dir_all(dir);
    if let Some(name) = log.file_name() {
        let dest = dir.join(name);
        match std::fs::copy(log, &dest) {
            Ok(_) => eprintln!("gateway_load: log kept at {}", dest.display()),
            Err(e) => eprintln!(
                "gateway_load: cannot keep the log at {}: {e}",
                dest.display()
            ),
        }
    }
}

fn target_dir(a: &Artifacts) -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // <target>/<profile>/aiclient
    a.bin("aiclient")
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model}); load average at start {}", loadavg())
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every column.
fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let started = Instant::now();
    let plan = plan();
    let ticks = clock_ticks();
    let machine = machine();
    eprintln!("gateway_load: building the release gateway and plugins…");
    let a = artifacts::build(PACKAGES);
    let work = tempfile::tempdir().expect("temp dir");

    let keys: Vec<String> = (0..UPSTREAM_KEYS).map(|i| format!("up-key-{i}")).collect();
    let mut mock_cmd = Command::new(MOCK);
    mock_cmd.args(["--port", "0", "--threads", "1", "--keys", &keys.join(",")]);
    let (mock, mock_addr) = spawn_listening(
        "mock-upstream",
        mock_cmd,
        &work.path().join("mock.log"),
        Duration::from_secs(30),
    );
    let direct_url = format!("http://{mock_addr}/v1/chat/completions");
    eprintln!(
        "gateway_load: mock upstream on {mock_addr}; {} s per run",
        plan.secs
    );

    let logs_dir = target_dir(&a).join("gateway-load-logs");
    let redis = plan
        .backends
        .contains(&Backend::Redis)
        .then(RedisServer::start);
    let mut rows: Vec<Row> = Vec::new();
    for &backend in &plan.backends {
        for (idx, &n) in plan.accounts.iter().enumerate() {
            let t = Instant::now();
            let store = match backend {
                Backend::File => Store::file(work.path(), n, mock_addr),
                Backend::Redis => Store::redis(
                    &a,
                    redis.as_ref().expect("redis started"),
                    idx as u32 + 1,
                    n,
                    mock_addr,
                ),
            };
            eprintln!(
                "gateway_load: {} pool of {n} accounts seeded in {:.1} s",
                backend.name(),
                t.elapsed().as_secs_f64()
            );
            for &mode in &plan.modes {
                for &c in &plan.concurrency {
                    let log = work.path().join(format!(
                        "gateway-{}-{n}-{}-{c}.log",
                        backend.name(),
                        mode.name()
                    ));
                    let before = store.usage_total();
                    let (mut gw, gw_addr) = start_gateway(&a, &store, work.path(), &log);
                    let gw_url = format!("http://{gw_addr}/v1/chat/completions");
                    let direct = measure(
                        &Load {
                            url: &direct_url,
                            key: "up-key-0",
                            mode,
                            c,
                            secs: plan.secs,
                        },
                        &[&mock],
                        ticks,
                        None,
                    );
                    let perf_out = plan.perf.then(|| {
                        let _ = std::fs::create_dir_all(&logs_dir);
                        logs_dir.join(format!(
                            "perf-{}-{n}-{}-{c}.data",
                            backend.name(),
                            mode.name()
                        ))
                    });
                    let gateway = measure(
                        &Load {
                            url: &gw_url,
                            key: CLIENT_KEY,
                            mode,
                            c,
                            secs: plan.secs,
                        },
                        &[&gw, &mock],
                        ticks,
                        perf_out.as_deref(),
                    );
                    if let Some(p) = &perf_out {
                        eprintln!(
                            "gateway_load: gateway profile in {} (perf report -i …)",
                            p.display()
                        );
                    }
                    if !plan.settle.is_zero() {
                        std::thread::sleep(plan.settle);
                    }
                    let clean_exit = gw.terminate(Duration::from_secs(60));
                    drop(gw);
                    let after = store.usage_total();
                    let counted = (gateway.ok() + gateway.warm_ok) as i64;
                    if after - before != counted || !clean_exit {
                        keep_log(&log, &logs_dir);
                    }
                    let row = Row {
                        backend,
                        accounts: n,
                        mode,
                        c,
                        direct,
                        gateway,
                        counter_delta: after - before - counted,
                        clean_exit,
                    };
                    eprintln!(
                        "gateway_load: {:<5} {:>5} accounts {:<6} C={:<3}  direct {:>7.0}/s  gateway {:>7.0}/s ({:.2}×)  p50 {:.2} ms  p99 {:.2} ms  {:.4} ms CPU/req  delta {}  errors {}",
                        backend.name(),
                        n,
                        mode.name(),
                        c,
                        row.direct.rps(),
                        row.gateway.rps(),
                        row.ratio(),
                        row.gateway.lat("p50"),
                        row.gateway.lat("p99"),
                        row.gw_cpu_per_req(),
                        row.counter_delta,
                        row.gateway.errors(),
                    );
                    rows.push(row);
                }
            }
            drop(store);
        }
    }
    drop(mock);
    drop(redis);

    let mut md = String::new();
    md.push_str("# Gateway load benchmark\n\n");
    md.push_str(&format!(
        "`cargo bench -p aiclient-tests --bench gateway_load`: {machine}; {} s per measured run after a {WARMUP_SECS} s warmup; \
         load generator (1 thread), mock upstream (1 thread) and gateway share the machine; load average at the end {}. \
         Total {:.0} s.\n\n",
        plan.secs,
        loadavg(),
        started.elapsed().as_secs_f64()
    ));
    md.push_str(&table(&rows));
    md.push_str("\n## Targets\n\n");
    md.push_str(&targets(&rows));
    md.push_str("\n## Diagnostics\n\n");
    md.push_str(&diagnostics(&rows));
    println!("\n{md}");
    let out = target_dir(&a).join("gateway-load.md");
    match std::fs::write(&out, &md) {
        Ok(()) => eprintln!("gateway_load: written to {}", out.display()),
        Err(e) => eprintln!("gateway_load: cannot write {}: {e}", out.display()),
    }
}
