//! What `serve` does when the configured Redis is not usable at startup.
//!
//! Two situations are covered, both governed by `[storage.redis] on_unavailable`
//! (env `AICLIENT_REDIS_ON_UNAVAILABLE`):
//!
//! - Redis is unreachable (the backend fails to start with a retryable `UNAVAILABLE`/`TIMEOUT`);
//! - Redis answers but is empty (no meta, no service config, no accounts): almost always a
//!   forgotten `aiclient migrate --config-dir DIR` (or `aiclient init`), so a WARN names both.
//!
//! The policies: `fallback-file` (the seed's behaviour, the default) serves from the file
//! backend at `[storage.file] config_dir` with a loud WARN naming why; `wait` retries with
//! backoff (500 ms doubling to 10 s), logging each attempt; `refuse` exits 1 with one line.
//! Any other startup failure (a newer schema, a bad plugin) is returned unchanged.

use std::time::Duration;

use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::json;

use crate::config::{Config, OnUnavailable};
use crate::plugins::{self, LoadedStorage, StartError};
use crate::storage::Storage;

/// The first wait between attempts under the `wait` policy, and its ceiling.
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Why the configured Redis cannot be served from.
enum Problem {
    Unreachable(String),
    Empty,
}

impl Problem {
    fn describe(&self) -> String {
        match self {
            Problem::Unreachable(e) => format!("Redis is unreachable ({e})"),
            Problem::Empty => "Redis holds no data (no meta, no config, no accounts)".into(),
        }
    }
}

/// Whether a backend error means "Redis is not there right now".
fn unreachable(e: &PluginError) -> bool {
    e.retryable && matches!(e.code, ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT)
}

/// True when the store has no meta, no service config and no accounts.
async fn is_empty(storage: &Storage) -> Result<bool, PluginError> {
    Ok(storage.get_meta().await?.is_none()
        && storage.get_config().await?.is_none()
        && storage.list_accounts(None).await?.is_empty())
}

fn warn_empty(config: &Config) {
    tracing::warn!(
        "Redis is reachable but empty (key prefix {:?}): no meta, no config, no accounts. \
         Import the existing configs with `aiclient migrate --config-dir {}` or start fresh \
         with `aiclient init`",
        config.file.storage.redis.key_prefix,
        config.file.storage.file.config_dir.display()
    );
}

/// Opens the configured backend, applying the Redis startup policy when Redis is configured.
pub async fn open(config: &Config, instance: &str) -> Result<(LoadedStorage, Storage), String> {
    let configured = || async {
        plugins::open_storage(
            &config.plugin_dir,
            &config.file.storage.backend,
            &config.backend_config(instance),
        )
        .await
    };
    if config.file.storage.backend != "redis" {
        return configured().await.map_err(|e| e.to_string());
    }
    let policy = config.file.storage.redis.on_unavailable;
    let mut delay = FIRST_DELAY;
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let problem = match configured().await {
            Ok(opened) => match is_empty(&opened.1).await {
                Ok(false) => {
                    // Data deleted underneath the running gateway is handled by this policy.
                    let policy = config.file.storage.redis.on_data_loss.policy();
                    opened.1.resilience().set_on_data_loss(policy);
                    if attempt > 1 {
                        tracing::info!(attempt, "Redis is reachable and holds data; starting");
                    }
                    return Ok(opened);
                }
                Ok(true) => {
                    warn_empty(config);
                    Problem::Empty
                }
                Err(e) if unreachable(&e) => Problem::Unreachable(e.to_string()),
                Err(e) => return Err(format!("cannot read the Redis backend: {e}")),
            },
            Err(StartError::Create { error, .. }) if unreachable(&error) => {
                Problem::Unreachable(error.to_string())
            }
            Err(e) => return Err(e.to_string()),
        };
        match policy {
            OnUnavailable::Refuse => {
                return Err(format!(
                    "{}; refusing to start (storage.redis.on_unavailable = \"refuse\")",
                    problem.describe()
                ));
            }
            OnUnavailable::FallbackFile => return fallback_file(config, instance, &problem).await,
            OnUnavailable::Wait => {
                tracing::warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "{}; waiting (storage.redis.on_unavailable = \"wait\")",
                    problem.describe()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

async fn fallback_file(
    config: &Config,
    instance: &str,
    problem: &Problem,
) -> Result<(LoadedStorage, Storage), String> {
    let dir = &config.file.storage.file.config_dir;
    tracing::warn!(
        "{}; FALLING BACK to the file backend at {} (storage.redis.on_unavailable = \
         \"fallback-file\"): state written now stays in that directory and does not reach Redis",
        problem.describe(),
        dir.display()
    );
    let cfg = json!({ "config_dir": dir, "instance_id": instance });
    plugins::open_storage(&config.plugin_dir, "file", &cfg)
        .await
        .map_err(|e| format!("{}; the file fallback failed too: {e}", problem.describe()))
}
