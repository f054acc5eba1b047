//! Benchmark of the Redis backend through the real plugin boundary (the host's `Storage`
//! handle → FFI → the backend's Lua scripts), side by side with `redis-benchmark` on the same
//! private redis-server, so the backend's cost per operation can be read against a bare
//! single-command round trip. Not a test: it prints a table.
//!
//! `cargo bench -p aiclient-tests --bench redis_backend` (builds the plugins in release).
//! `BENCH_OPS` sets the operations per row (default 20,000).
//!
//! Rows: sequential (1 task: the per-op latency a request sees) and concurrent (32 tasks on
//! the backend's one multiplexed connection, 32 clients for redis-benchmark: throughput).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::{Account, AccountState, StateUpdate};
use aiclient_tests::redis_server::RedisServer;
use serde_json::json;

const POOL: &str = "claude-kiro-oauth";
const POOL_SIZE: usize = 20;
const CONCURRENCY: usize = 32;

struct Row {
    op: String,
    path: &'static str,
    conc: usize,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Runs `op(task, i)` `n` times split over `conc` tasks; per-call latencies and wall time.
async fn measure<F, Fut>(op: Arc<F>, n: usize, conc: usize) -> (f64, f64, f64)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..conc {
        let op = op.clone();
        let per = n / conc;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                op(task, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("bench task"));
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort();
    (
        all.len() as f64 / wall,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    )
}

async fn bench_op<F, Fut>(rows: &mut Vec<Row>, name: &str, n: usize, op: F)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    measure(op.clone(), n / 10, 4).await; // warm-up: connections, script cache, allocator
    for conc in [1, CONCURRENCY] {
        let (ops, p50, p99) = measure(op.clone(), n, conc).await;
        rows.push(Row {
            op: name.to_string(),
            path: "backend via FFI",
            conc,
            ops_per_s: ops,
            p50_us: p50,
            p99_us: p99,
        });
    }
}

/// `redis-benchmark -p PORT -n N -c C -q --csv <test>`: rps, p50 and p99 (ms → µs).
fn redis_benchmark(rows: &mut Vec<Row>, port: u16, n: usize, name: &str, args: &[&str]) {
    for conc in [1, CONCURRENCY] {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-n",
                &n.to_string(),
                "-c",
                &conc.to_string(),
                "-q",
                "--csv",
            ])
            .args(args)
            .output()
            .expect("run redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .nth(1)
            .unwrap_or_else(|| panic!("redis-benchmark printed {text:?}"));
        let f: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|v| v.trim_matches('"').parse().unwrap_or(f64::NAN))
            .collect();
        // "test","rps","avg","min","p50","p95","p99","max"
        rows.push(Row {
            op: name.to_string(),
            path: "redis-benchmark",
            conc,
            ops_per_s: f[0],
            p50_us: f[3] * 1e3,
            p99_us: f[5] * 1e3,
        });
    }
}

fn account(uuid: &str) -> Account {
    let config = json!({
        "uuid": uuid,
        "customName": null,
        "KIRO_OAUTH_CREDS_FILE_PATH": format!("./configs/kiro/{uuid}.json"),
        "checkModelName": "claude-sonnet-4",
        "notSupportedModels": [],
        "region": "us-east-1",
    });
    Account {
        provider_type: POOL.into(),
        uuid: uuid.into(),
        config: config.to_string().into(),
        state: AccountState::default(),
    }
}

async fn run() {
    let n: usize = std::env::var("BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = RedisServer::start();
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    let s: Storage = create_storage(&lib, &json!({"url": server.url(0), "instance_id": "bench"}))
        .await
        .expect("create the redis backend");
    // A subscriber is listening, as in a running gateway: every write's PUBLISH is delivered.
    let mut feed = s.subscribe().await.expect("subscribe");
    tokio::spawn(async move { while let Ok(Some(_)) = feed.next().await {} });

    for i in 0..POOL_SIZE {
        let u = format!("acct-{i}");
        s.add_account(account(&u)).await.expect("add");
        let token = json!({"accessToken": "a", "refreshToken": format!("{u}-r0"), "expiresAt": "2030-01-01T00:00:00.000Z"});
        s.set_token(POOL, &u, &token.to_string())
            .await
            .expect("token");
    }

    let mut rows = Vec::new();
    let st = s.clone();
    bench_op(
        &mut rows,
        "increment (update_state usage+1)",
        n,
        move |task, _| {
            let s = st.clone();
            async move {
                let u = format!("acct-{}", task % POOL_SIZE);
                s.update_state(POOL, &u, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("increment");
            }
        },
    )
    .await;
    let st = s.clone();
    bench_op(
        &mut rows,
        "pool read (list_accounts, 20 accts)",
        n / 4,
        move |_, _| {
            let s = st.clone();
            async move {
                let all = s.list_accounts(Some(POOL)).await.expect("list");
                assert_eq!(all.len(), POOL_SIZE);
            }
        },
    )
    .await;
    let st = s.clone();
    bench_op(&mut rows, "get_account", n, move |task, i| {
        let s = st.clone();
        async move {
            let u = format!("acct-{}", (task + i) % POOL_SIZE);
            s.get_account(POOL, &u).await.expect("get").expect("exists");
        }
    })
    .await;
    // Token CAS: each task rotates its own chain of refresh tokens, so every CAS swaps (a task
    // reads the current refresh token first when it starts a new chain).
    let st = s.clone();
    let chains: Arc<Vec<tokio::sync::Mutex<(String, String, u64)>>> = Arc::new(
        (0..CONCURRENCY)
            .map(|t| tokio::sync::Mutex::new((format!("cas-{t}"), String::new(), 0)))
            .collect(),
    );
    for t in 0..CONCURRENCY {
        s.add_account(Account {
            provider_type: "cas-pool".into(),
            ..account(&format!("cas-{t}"))
        })
        .await
        .expect("add");
    }
    bench_op(&mut rows, "token CAS (cas_token)", n, move |task, _| {
        let (s, chains) = (st.clone(), chains.clone());
        async move {
            let mut c = chains[task].lock().await;
            let next = format!("{}-r{}", c.0, c.2 + 1);
            let token = json!({"accessToken": "a", "refreshToken": next, "expiresAt": "2030-01-01T00:00:00.000Z"});
            let r = s.cas_token("cas-pool", &c.0, &c.1, &token.to_string()).await.expect("cas");
            assert!(r.swapped, "each task owns its chain");
            c.1 = next;
            c.2 += 1;
        }
    })
    .await;

    redis_benchmark(
        &mut rows,
        server.port,
        n.max(50_000),
        "INCR (raw)",
        &["-t", "incr"],
    );
    redis_benchmark(
        &mut rows,
        server.port,
        n.max(50_000),
        "HINCRBY (raw)",
        &["HINCRBY", "bench:raw", "f", "1"],
    );

    println!();
    println!(
        "redis-server {} on 127.0.0.1:{}, {} ops per backend row",
        redis_version(&server),
        server.port,
        n
    );
    println!("| operation | path | tasks/clients | ops/s | p50 µs | p99 µs |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            r.op, r.path, r.conc, r.ops_per_s, r.p50_us, r.p99_us
        );
    }
    let worst = rows
        .iter()
        .filter(|r| r.path == "backend via FFI" && r.conc == 1 && !r.op.starts_with("pool read"))
        .map(|r| r.p99_us)
        .fold(0.0, f64::max);
    println!(
        "\nsingle-op p99 through the backend (1 task, excluding the 20-account pool read): {worst:.0} µs (target < 1000 µs)"
    );
}

fn redis_version(server: &RedisServer) -> String {
    server
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
        .unwrap_or_default()
}

fn main() {
    // Like the gateway: a multi-thread host runtime (2 workers on this 2-core machine); the
    // plugin polls its futures inside its own runtime's context.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}
