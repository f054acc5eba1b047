//! Seeding a Redis-backed gateway's state through the storage API (as `aiclient migrate` would),
//! for tests that run gateways on Redis.

use aiclient::plugins::{create_storage, loader};
use aiclient::storage::Storage;
use aiclient_sdk::account::split_account;
use serde_json::{Value, json};

/// Connects to the Redis at `url` through the real backend plugin.
pub async fn redis_storage(url: &str) -> Storage {
    let lib = loader::load_storage(crate::artifacts::get().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    create_storage(&lib, &json!({"url": url, "instance_id": "seed"}))
        .await
        .expect("connect to redis")
}

/// Writes `config` and `n` `openai-custom` accounts (`acct-<i>`, upstream key `up-<i>`) pointing
/// at the mock upstream at `mock_base`.
pub async fn openai_accounts(s: &Storage, config: &Value, mock_base: &str, n: usize) {
    s.set_config(&config.to_string()).await.expect("config");
    for i in 0..n {
        let acct = json!({"uuid": format!("acct-{i}"), "OPENAI_BASE_URL": format!("{mock_base}/v1"), "OPENAI_API_KEY": format!("up-{i}")});
        s.add_account(
            split_account(
                "openai-custom",
                acct.as_object().expect("an object").clone(),
            )
            .expect("split"),
        )
        .await
        .expect("add account");
    }
}

/// Total `usageCount` of a provider type's accounts.
pub async fn usage_total(s: &Storage, provider_type: &str) -> i64 {
    s.list_accounts(Some(provider_type))
        .await
        .expect("list")
        .iter()
        .map(|a| a.state.usage_count)
        .sum()
}
