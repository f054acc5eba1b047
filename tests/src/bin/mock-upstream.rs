//! The mock OpenAI/Anthropic upstream (`aiclient_tests::mock_upstream::router`) as a standalone
//! process, for the load benchmark: the gateway and the load generator then measure against an
//! upstream that does not share their CPU accounting.
//!
//! ```text
//! mock-upstream [--port P] [--keys k1,k2,...] [--threads N]
//! ```
//!
//! Listens on `127.0.0.1:P` (0, the default, picks a free port) and prints
//! `listening on http://ADDR` on stdout once it accepts connections. `--threads` sizes the
//! tokio runtime (default 1). Loopback only. It runs until killed; on SIGTERM or ctrl-c it
//! prints `calls N` (the upstream calls it accepted) on stderr and exits 0.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aiclient_tests::mock_upstream::{Counters, router};

struct Args {
    port: u16,
    keys: Vec<String>,
    threads: usize,
}

const USAGE: &str = "usage: mock-upstream [--port P] [--keys k1,k2,...] [--threads N]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        keys: vec!["up-key-1".into()],
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => a.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--keys" => {
                a.keys = value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect();
            }
            "--threads" => {
                a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
                if !(1..=64).contains(&a.threads) {
                    return Err("--threads must be 1..=64".into());
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.keys.is_empty() {
        return Err("--keys lists no key".into());
    }
    Ok(a)
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("mock-upstream")
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let counters = Arc::new(Counters::default());
        let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
        let app = router(&keys, counters.clone());
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on 127.0.0.1:{}: {e}", args.port);
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().expect("local addr");
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await;
        eprintln!("calls {}", counters.total.load(Ordering::Relaxed));
        match served {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve failed: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
