//! The Redis backend on a 3-master Redis Cluster (`cluster_nodes`): the whole storage
//! conformance suite, and two backend instances counting into one account exactly.
//!
//! All tests of this file share one cluster ([`RedisCluster::shared`], killed when the last
//! test using it ends); each test uses its own key prefix, so they never see each other's keys
//! or change messages.

use std::sync::atomic::{AtomicU64, Ordering};

use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::{Account, AccountState, StateUpdate};
use aiclient_tests::conformance::Backend;
use aiclient_tests::redis_cluster::RedisCluster;
use serde_json::{Value, json};

fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(cluster: &RedisCluster, prefix: &str, instance: &str) -> Storage {
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    let config: Value = json!({
        "cluster_nodes": cluster.urls(),
        "key_prefix": prefix,
        "instance_id": instance,
    });
    create_storage(&lib, &config)
        .await
        .expect("create on the cluster")
}

async fn fresh() -> Backend {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .expect("start the cluster");
    let storage = open(&cluster, &unique_prefix("conformance"), "test").await;
    Backend {
        storage,
        guards: vec![Box::new(cluster)],
    }
}

aiclient_tests::conformance_suite!(fresh);

/// Two backend instances on one cluster, 8 tasks × 1,000 increments split across them → the
/// exact total, seen by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_count_exactly_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .expect("start the cluster");
    let prefix = unique_prefix("two");
    let a = open(&cluster, &prefix, "a").await;
    let b = open(&cluster, &prefix, "b").await;
    let (t, u) = ("openai-custom", "shared-acct");
    a.add_account(Account {
        provider_type: t.into(),
        uuid: u.into(),
        config: json!({"uuid": u}).to_string().into(),
        state: AccountState::default(),
    })
    .await
    .expect("add");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                s.update_state(t, u, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    for s in [&a, &b] {
        let st = s
            .get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state;
        assert_eq!(st.usage_count, 8_000);
    }
    drop(cluster);
}
