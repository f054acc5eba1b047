//! A rolling restart under load: two gateways share one Redis; clients spread requests over
//! both (retrying elsewhere when a connection is refused, as a load balancer does); one
//! instance gets SIGTERM while unary requests and slow streams are in flight, then comes back.
//! Every request the gateway accepted (answered with a status line) completes successfully,
//! and the counts in Redis equal the successful requests exactly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiclient_tests::gateway::Gateway;
use aiclient_tests::mock_upstream;
use aiclient_tests::redis_server::RedisServer;
use aiclient_tests::seed;
use serde_json::json;

const KEY: &str = "rolling-key";

enum Outcome {
    /// Refused or reset before any answer: not accepted; the client goes elsewhere.
    NotAccepted,
    Ok,
    /// Accepted (a status line came back) but failed or cut short.
    Failed(String),
}

fn request(addr: SocketAddr, stream: bool) -> Outcome {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Outcome::NotAccepted;
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let model = if stream { "mock-slow" } else { "gpt-4o" };
    let body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return Outcome::NotAccepted;
    }
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    if !text.starts_with("HTTP/1.1 ") {
        return Outcome::NotAccepted;
    }
    if read.is_err() {
        return Outcome::Failed(format!("connection broke mid-answer: {text}"));
    }
    if !text.starts_with("HTTP/1.1 200") {
        return Outcome::Failed(text.lines().next().unwrap_or_default().to_string());
    }
    let complete = if stream {
        text.contains("data: [DONE]")
    } else {
        text.contains(mock_upstream::TEXT)
    };
    if complete {
        Outcome::Ok
    } else {
        Outcome::Failed(format!("incomplete answer: {text}"))
    }
}

#[test]
fn a_rolling_restart_loses_no_accepted_request_and_no_count() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mock = mock_upstream::start_in_thread(&["up-0", "up-1", "up-2", "up-3"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let storage = rt.block_on(async {
        let s = seed::redis_storage(&url).await;
        seed::openai_accounts(
            &s,
            &json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom"}),
            &mock.base_url(),
            4,
        )
        .await;
        s
    });
    let dir = tempfile::tempdir().expect("tmp");
    let args = [
        "--storage",
        "redis",
        "--redis-url",
        url.as_str(),
        "--provider",
        "openai-custom",
    ];
    let a = Gateway::start(dir.path(), &args, &[("AICLIENT_INSTANCE_ID", "a")]);
    let b = Gateway::start(dir.path(), &args, &[("AICLIENT_INSTANCE_ID", "b")]);

    let targets = Arc::new(Mutex::new(vec![a.addr, b.addr]));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let straddled = Arc::new(AtomicUsize::new(0));
    let term_at: Arc<Mutex<Option<Instant>>> = Default::default();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (targets, stop, ok, failures, straddled, term_at) = (
                targets.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
                straddled.clone(),
                term_at.clone(),
            );
            std::thread::spawn(move || {
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let stream = n % 3 == 0;
                    let list = targets.lock().expect("lock").clone();
                    // Try each instance once, starting round-robin, like a load balancer.
                    for k in 0..list.len() {
                        let started = Instant::now();
                        match request(list[(n + k) % list.len()], stream) {
                            Outcome::NotAccepted => continue,
                            Outcome::Ok => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if let Some(t) = *term_at.lock().expect("lock")
                                    && started < t
                                    && Instant::now() > t
                                {
                                    straddled.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Outcome::Failed(why) => failures.lock().expect("lock").push(why),
                        }
                        break;
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    // Roll instance A: SIGTERM (it finishes what it accepted), then a new A.
    *term_at.lock().expect("lock") = Some(Instant::now());
    let status = a.terminate();
    assert!(status.success(), "A exits cleanly: {status:?}");
    let a2 = Gateway::start(dir.path(), &args, &[("AICLIENT_INSTANCE_ID", "a2")]);
    targets.lock().expect("lock")[0] = a2.addr;
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert!(a2.terminate().success());
    assert!(b.terminate().success());

    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "accepted requests failed during the restart: {failures:#?}"
    );
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert!(
        straddled.load(Ordering::Relaxed) > 0,
        "some requests were in flight across the SIGTERM and finished"
    );
    let total = rt.block_on(seed::usage_total(&storage, "openai-custom"));
    assert_eq!(
        total as usize, ok,
        "usageCount equals the successful requests"
    );
}
