//! A small closed-loop HTTP/1.1 load generator for the gateway benchmark: `C` workers, each with
//! one request in flight at a time, over hyper-util's pooled keep-alive client. Loopback only.
//!
//! ```text
//! loadgen --url http://127.0.0.1:PORT/v1/chat/completions
//!         [--concurrency C] [--duration S | --requests N] [--warmup S]
//!         [--stream] [--header k:v]... [--body JSON] [--method M]
//!         [--expect TEXT] [--timeout S] [--threads T]
//! ```
//!
//! - `--duration` (default 5 s when `--requests` is absent): workers start no request after the
//!   deadline; the ones in flight finish (each bounded by `--timeout`, default 30 s).
//! - `--requests N`: exactly N requests in total, shared by the workers.
//! - `--warmup S`: the same load for S seconds first, not measured (connections and the
//!   server's upstream pool warm up); its counts are reported apart.
//! - `--stream`: sets `"stream": true` in the JSON body; every body is read to its end anyway.
//! - `--expect TEXT`: a 2xx answer counts as ok only if its body contains TEXT (e.g. `[DONE]`
//!   for an OpenAI stream); otherwise it is an `unexpected_body` error.
//! - `--body` defaults to a one-message chat completion; `content-type: application/json` is
//!   sent unless a `--header` sets it.
//!
//! Prints one JSON object on stdout: `requests`, `ok`, `errors` (by status code, or
//! `transport` / `timeout` / `body` / `unexpected_body`), `elapsed_s`, `rps` (ok per second),
//! `latency_ms` of the successful requests (`p50`, `p90`, `p99`, `max`, `mean`, from all
//! samples, sorted), `bytes`, the load generator's own `cpu_ms`, and `warmup`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const USAGE: &str = "usage: loadgen --url URL [--concurrency C] [--duration S | --requests N] [--warmup S] \
[--stream] [--header k:v]... [--body JSON] [--method M] [--expect TEXT] [--timeout S] [--threads T]";

const DEFAULT_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// Upper bounds on everything a run can ask for.
const MAX_DURATION_S: f64 = 600.0;
const MAX_REQUESTS: u64 = 100_000_000;
const MAX_CONCURRENCY: usize = 10_000;
/// Latency samples kept in total (4 bytes each); requests beyond it are counted, not sampled.
const MAX_SAMPLES: usize = 20_000_000;

#[derive(Clone, Copy)]
enum Limit {
    Until(Instant),
    Count(u64),
}

struct Config {
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    concurrency: usize,
    duration: Duration,
    requests: Option<u64>,
    warmup: Duration,
    expect: Option<Vec<u8>>,
    timeout: Duration,
    threads: usize,
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|e| format!("{flag}: {e}"))?;
    if !(0.0..=MAX_DURATION_S).contains(&s) {
        return Err(format!("{flag} must be between 0 and {MAX_DURATION_S} s"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_args() -> Result<Config, String> {
    let mut url = None;
    let mut method = None;
    let mut headers = HeaderMap::new();
    let mut body = None;
    let mut stream = false;
    let mut c = Config {
        uri: Uri::default(),
        method: Method::POST,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        concurrency: 10,
        duration: Duration::from_secs(5),
        requests: None,
        warmup: Duration::ZERO,
        expect: None,
        timeout: Duration::from_secs(30),
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--stream" {
            stream = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" => url = Some(v),
            "--method" => {
                method =
                    Some(Method::from_bytes(v.as_bytes()).map_err(|e| format!("--method: {e}"))?)
            }
            "--concurrency" | "-c" => {
                c.concurrency = v.parse().map_err(|e| format!("--concurrency: {e}"))?;
                if !(1..=MAX_CONCURRENCY).contains(&c.concurrency) {
                    return Err(format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
                }
            }
            "--duration" | "-d" => c.duration = secs(&flag, &v)?,
            "--requests" | "-n" => {
                let n: u64 = v.parse().map_err(|e| format!("--requests: {e}"))?;
                if !(1..=MAX_REQUESTS).contains(&n) {
                    return Err(format!("--requests must be 1..={MAX_REQUESTS}"));
                }
                c.requests = Some(n);
            }
            "--warmup" => c.warmup = secs(&flag, &v)?,
            "--timeout" => {
                c.timeout = secs(&flag, &v)?;
                if c.timeout.is_zero() {
                    return Err("--timeout must be > 0".into());
                }
            }
            "--threads" => {
                c.threads = v.parse().map_err(|e| format!("--threads: {e}"))?;
                if !(1..=64).contains(&c.threads) {
                    return Err("--threads must be 1..=64".into());
                }
            }
            "--header" | "-H" => {
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--header {v}: expected name:value"))?;
                let name = HeaderName::from_bytes(k.trim().as_bytes())
                    .map_err(|e| format!("--header {k}: {e}"))?;
                let value =
                    HeaderValue::from_str(val.trim()).map_err(|e| format!("--header {k}: {e}"))?;
                headers.append(name, value);
            }
            "--body" => body = Some(v),
            "--expect" => c.expect = Some(v.into_bytes()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    c.uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
    if c.uri.scheme_str() != Some("http") {
        return Err("--url must be http:// (no TLS)".into());
    }
    match c.uri.host() {
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1") => {}
        other => return Err(format!("--url must be a loopback address, not {other:?}")),
    }
    let mut text = body.unwrap_or_else(|| DEFAULT_BODY.to_string());
    if stream {
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("--stream needs a JSON object --body: {e}"))?;
        let obj = v
            .as_object_mut()
            .ok_or("--stream needs a JSON object --body")?;
        obj.insert("stream".into(), Value::Bool(true));
        text = v.to_string();
    }
    c.method = method.unwrap_or(Method::POST);
    if c.method != Method::GET && c.method != Method::HEAD {
        c.body = Bytes::from(text);
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    c.headers = headers;
    Ok(c)
}

/// What one phase (warmup or measurement) produced.
#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    /// Latencies of successful requests, µs.
    samples: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.bytes += o.bytes;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.samples.extend(o.samples);
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

enum Outcome {
    Ok(u64),
    Err(String),
}

async fn one(client: &HttpClient, cfg: &Config) -> Outcome {
    let mut req = Request::new(Full::new(cfg.body.clone()));
    *req.method_mut() = cfg.method.clone();
    *req.uri_mut() = cfg.uri.clone();
    *req.headers_mut() = cfg.headers.clone();
    let fut = async {
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(_) => return Outcome::Err("transport".into()),
        };
        let status = resp.status();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Outcome::Err("body".into()),
        };
        if !status.is_success() {
            return Outcome::Err(status.as_u16().to_string());
        }
        if let Some(e) = &cfg.expect
            && !contains(&body, e)
        {
            return Outcome::Err("unexpected_body".into());
        }
        Outcome::Ok(body.len() as u64)
    };
    match tokio::time::timeout(cfg.timeout, fut).await {
        Ok(o) => o,
        Err(_) => Outcome::Err("timeout".into()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn worker(
    client: HttpClient,
    cfg: Arc<Config>,
    limit: Limit,
    issued: Arc<AtomicU64>,
    record: bool,
    cap: usize,
) -> Tally {
    let mut t = Tally::default();
    loop {
        match limit {
            Limit::Until(deadline) if Instant::now() >= deadline => break,
            Limit::Count(n) if issued.fetch_add(1, Ordering::Relaxed) >= n => break,
            _ => {}
        }
        let start = Instant::now();
        let outcome = one(&client, &cfg).await;
        t.requests += 1;
        match outcome {
            Outcome::Ok(n) => {
                t.ok += 1;
                t.bytes += n;
                if record && t.samples.len() < cap {
                    t.samples
                        .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
            }
            Outcome::Err(kind) => t.error(kind),
        }
    }
    t
}

async fn phase(
    client: &HttpClient,
    cfg: &Arc<Config>,
    limit: Limit,
    record: bool,
) -> (Tally, Duration) {
    let issued = Arc::new(AtomicU64::new(0));
    let cap = MAX_SAMPLES / cfg.concurrency;
    let start = Instant::now();
    let handles: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                cfg.clone(),
                limit,
                issued.clone(),
                record,
                cap,
            ))
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(_) => total.error("worker_panic"),
        }
    }
    (total, start.elapsed())
}

/// This process's user + system CPU time so far, ms (from `/proc/self/stat`).
fn cpu_ms(ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / ticks_per_s)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .unwrap_or(100.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> std::process::ExitCode {
    let cfg = match parse_args() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let ticks = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(async {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(conn);
        let warm = if cfg.warmup.is_zero() {
            None
        } else {
            Some(phase(&client, &cfg, Limit::Until(Instant::now() + cfg.warmup), false).await)
        };
        let limit = match cfg.requests {
            Some(n) => Limit::Count(n),
            None => Limit::Until(Instant::now() + cfg.duration),
        };
        let cpu0 = cpu_ms(ticks);
        let (mut t, elapsed) = phase(&client, &cfg, limit, true).await;
        let cpu = match (cpu0, cpu_ms(ticks)) {
            (Some(a), Some(b)) => Some(round3(b - a)),
            _ => None,
        };
        t.samples.sort_unstable();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mean = if t.samples.is_empty() {
            0.0
        } else {
            t.samples.iter().map(|&s| s as f64).sum::<f64>() / t.samples.len() as f64 / 1000.0
        };
        json!({
            "url": cfg.uri.to_string(),
            "concurrency": cfg.concurrency,
            "requests": t.requests,
            "ok": t.ok,
            "errors": t.errors,
            "elapsed_s": round3(secs),
            "rps": round3(t.ok as f64 / secs),
            "latency_ms": {
                "p50": round3(percentile(&t.samples, 50.0)),
                "p90": round3(percentile(&t.samples, 90.0)),
                "p99": round3(percentile(&t.samples, 99.0)),
                "max": round3(percentile(&t.samples, 100.0)),
                "mean": round3(mean),
                "samples": t.samples.len(),
            },
            "bytes": t.bytes,
            "cpu_ms": cpu,
            "cpu_ms_per_req": cpu.map(|c| round3(c / (t.requests.max(1) as f64)) ),
            "warmup": warm.map(|(w, e)| json!({"requests": w.requests, "ok": w.ok, "errors": w.errors, "elapsed_s": round3(e.as_secs_f64())})),
        })
    });
    // Idle pooled connections and their tasks go with the runtime.
    rt.shutdown_timeout(Duration::from_millis(200));
    let text = serde_json::to_string_pretty(&report).expect("json");
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}
