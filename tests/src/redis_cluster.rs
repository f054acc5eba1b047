//! Private Redis Cluster and Sentinel deployments for tests, built from [`RedisServer`]s (each
//! on its own free loopback port and temp dir, killed when dropped).
//!
//! [`RedisCluster::shared`] hands out one 3-master cluster to every test of a process that
//! runs at the same time (tests use distinct key prefixes); it is shut down when the last
//! handle drops, so no server outlives the tests.

use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::redis_server::{RedisServer, free_port};

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// (no replicas) and waits (≤ 20 s) until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                // An explicit bus port: the default (port + 10000) may be taken or over 65535.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not reach cluster_state:ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One 3-master cluster shared by every caller alive at the same time; a new one is
    /// started when the previous one has been dropped.
    pub fn shared() -> Arc<RedisCluster> {
        static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.upgrade() {
            return c;
        }
        let c = Arc::new(RedisCluster::start(3));
        *slot = Arc::downgrade(&c);
        c
    }

    /// The nodes as `redis://127.0.0.1:<port>` URLs (the backend's `cluster_nodes`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }
}

/// One `redis-server --sentinel` on a free loopback port, killed when dropped.
pub struct Sentinel {
    child: Option<std::process::Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Sentinel {
    /// Starts a sentinel monitoring `master_port` as `master_name` (quorum 2, down after 1 s,
    /// failover timeout 3 s) and waits (≤ 10 s) until it answers.
    pub fn start(master_name: &str, master_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 3000\n",
                dir = dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let s = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.cli(&["PING"]).contains("PONG") {
            assert!(Instant::now() < deadline, "sentinel did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_default()
    }

    /// The port of the master this sentinel currently names.
    pub fn master_port(&self, master_name: &str) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", master_name]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
