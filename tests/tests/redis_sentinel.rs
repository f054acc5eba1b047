//! The real gateway on Redis Sentinel (`REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`): a master,
//! one replica and 3 sentinels on loopback. Under request load the master is killed; the
//! gateway keeps answering (the request path serves from memory) and, once the sentinels
//! have promoted the replica, its writes reach the new master.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aiclient::plugins::{create_storage, loader};
use aiclient_tests::gateway::{Gateway, http};
use aiclient_tests::mock_upstream;
use aiclient_tests::redis_cluster::Sentinel;
use aiclient_tests::redis_server::RedisServer;
use aiclient_tests::seed;
use serde_json::json;

const KEY: &str = "sentinel-key";
const MASTER: &str = "mymaster";

fn chat(addr: std::net::SocketAddr) -> u16 {
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    http(
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

#[test]
fn gateway_serves_through_a_sentinel_failover_and_writes_to_the_new_master() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(MASTER, master.port))
        .collect();
    let sentinel_urls: Vec<String> = sentinels
        .iter()
        .map(|s| format!("redis://127.0.0.1:{}", s.port))
        .collect();
    // The replica is in sync and every sentinel knows it before anything is written.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
        && sentinels.iter().all(|s| {
            s.cli(&["SENTINEL", "replicas", MASTER])
                .contains(&replica.port.to_string())
        }))
    {
        assert!(Instant::now() < deadline, "replica/sentinels not ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mock = mock_upstream::start_in_thread(&["up-0", "up-1"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = seed::redis_storage(&master.url(0)).await;
        let config = json!({"REQUIRED_API_KEY": KEY, "MODEL_PROVIDER": "openai-custom", "REQUEST_MAX_RETRIES": 0});
        seed::openai_accounts(&s, &config, &mock.base_url(), 2).await;
    });

    let dir = tempfile::tempdir().expect("tmp");
    let joined = sentinel_urls.join(",");
    let gw = Gateway::start(
        dir.path(),
        &["--storage", "redis", "--provider", "openai-custom"],
        &[
            ("AICLIENT_INSTANCE_ID", "gw-sentinel"),
            ("REDIS_SENTINELS", &joined),
            ("REDIS_SENTINEL_MASTER", MASTER),
            ("AICLIENT_REDIS_ON_UNAVAILABLE", "refuse"),
        ],
    );
    assert_eq!(chat(gw.addr), 200, "serving before the failover");

    // Load: 2 threads sending requests back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let failed_over = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let ok_after = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failed_over, ok, ok_after, bad, addr) = (
                stop.clone(),
                failed_over.clone(),
                ok.clone(),
                ok_after.clone(),
                bad.clone(),
                gw.addr,
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let after = failed_over.load(Ordering::SeqCst);
                    if chat(addr) == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if after {
                            ok_after.fetch_add(1, Ordering::SeqCst);
                        }
                    } else {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Kill the master; wait (≤ 30 s) until the sentinels name the replica.
    let old_port = master.port;
    master.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sentinels[0].master_port(MASTER) != Some(replica.port)
        || !replica.cli(&["ROLE"]).starts_with("master")
    {
        assert!(
            Instant::now() < deadline,
            "no failover within 30 s (sentinel names port {:?}, old {old_port})",
            sentinels[0].master_port(MASTER)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    failed_over.store(true, Ordering::SeqCst);
    let ok_at_failover = ok.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().expect("load thread");
    }
    let (ok, ok_after, bad) = (
        ok.load(Ordering::SeqCst),
        ok_after.load(Ordering::SeqCst),
        bad.load(Ordering::SeqCst),
    );
    assert_eq!(bad, 0, "every request was answered 200 ({ok} ok)");
    assert!(
        ok > ok_at_failover && ok_after > 0,
        "served after the failover"
    );

    let logs = gw.logs();
    assert!(
        logs.contains("redis+sentinel://"),
        "the gateway connected through the sentinels:\n{logs}"
    );
    assert!(
        logs.contains("change feed resubscribed"),
        "the change feed found the new master:\n{logs}"
    );
    // Stop the gateway (it flushes), then read the counts through the sentinels: every
    // request acknowledged after the failover counted on the new master.
    assert!(gw.terminate().success(), "gateway exits cleanly");
    let total = rt.block_on(async {
        let lib =
            loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_redis"))
                .expect("load the redis backend");
        let s = create_storage(
            &lib,
            &json!({"sentinels": sentinel_urls, "sentinel_master": MASTER, "instance_id": "check"}),
        )
        .await
        .expect("connect through the sentinels");
        seed::usage_total(&s, "openai-custom").await
    });
    assert!(
        total >= ok_after as i64,
        "counts reached the new master: usageCount {total}, requests after the failover {ok_after}, all {ok}"
    );
    // The new master has them itself (not only some cache): read one hash directly.
    assert!(
        replica
            .cli(&["EXISTS", "aiclient:{pool:openai-custom}:account:acct-0"])
            .contains('1')
    );
}
