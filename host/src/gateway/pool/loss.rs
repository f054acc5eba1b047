//! The data-loss guard: the backend's data deleted underneath a running gateway (`FLUSHDB`,
//! `FLUSHALL`, a Redis restarted without persistence, keys deleted by hand).
//!
//! **Detection** never touches the request path. The flusher reads one marker a second (and at
//! once when a flush finds an account of the in-memory view missing): the meta document if
//! this process has seen one, else the service config, else the provider-type registry. A
//! marker that was there and is gone means the data was lost.
//!
//! **What then** is `[storage.redis] on_data_loss`:
//! - `reseed` (default): an ERROR line, then everything this process holds in memory is written
//!   back — every account of the pools with its state as last acknowledged (counters, health),
//!   the tokens it has cached, the plugin states, the password hash, the usage cache, the
//!   service config and, last, the meta document (with `reseededAt`/`reseededBy`). Counts not
//!   yet flushed stay pending and are written by the next flush on top, so `usageCount` ends
//!   exact. Admin sessions are not restored (log in again).
//! - `report`: an ERROR line, the loss in `GET /api/redis/status` (`dataLoss`), and no more
//!   writes: the gateway serves from memory and journals its unwritten state until an operator
//!   restores the data or asks for a reseed (`POST /api/redis/reseed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::Account;
use aiclient_sdk::{ErrorCode, PluginError};
use serde_json::{Map, Value};

use super::{FLUSH_CONCURRENCY, PoolManager, Slot, lock};
use crate::storage::{OnDataLoss, ReseedCounts};

#[derive(Default)]
pub struct LossGuard {
    /// A flush (or a reload) found the in-memory view's accounts missing in storage.
    suspect: AtomicBool,
    /// Policy `report` after a detected loss: nothing is written until a reseed.
    paused: AtomicBool,
}

impl LossGuard {
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::Release);
    }

    pub fn suspected(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    pub fn writes_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }
}

impl PoolManager {
    /// Whether any pool has accounts in memory.
    pub(super) fn holds_accounts(&self) -> bool {
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|p| p.counts().0 > 0)
    }

    fn guarded(&self) -> Option<OnDataLoss> {
        self.storage.resilience().on_data_loss()
    }

    /// One read of the marker this process knows to exist: `Ok(None)` while it is there,
    /// `Ok(Some(what vanished))` when it is gone.
    async fn probe(&self) -> Result<Option<&'static str>, PluginError> {
        let m = self.storage.mirror();
        if m.meta().is_some() || m.config().is_some() {
            return self.storage.marker_gone().await;
        }
        if self.holds_accounts() && self.storage.list_provider_types().await?.is_empty() {
            return Ok(Some("no provider type is registered any more"));
        }
        Ok(None)
    }

    /// Whether the store lost its data (false when no guard runs for this backend).
    pub(super) async fn storage_lost_data(&self) -> Result<bool, PluginError> {
        if self.guarded().is_none() {
            return Ok(false);
        }
        Ok(self.probe().await?.is_some())
    }

    /// A flush found `slot`'s account missing: true when that is because the store lost its
    /// data (its unwritten state must be kept for the reseed), false when the account was
    /// deleted (its counts go with it).
    pub(super) async fn missing_in_storage(&self, slot: &Slot) -> Result<bool, PluginError> {
        let in_view = self
            .pool(&slot.provider_type)
            .is_some_and(|p| p.get(&slot.uuid).is_some());
        if !in_view || !self.storage_lost_data().await? {
            return Ok(false);
        }
        self.loss.suspect();
        Ok(true)
    }

    /// The flusher's check (see the module docs); acts on a detected loss by the policy.
    pub async fn check_data_loss(&self) {
        let Some(policy) = self.guarded() else { return };
        if self.loss.writes_paused() {
            return;
        }
        let suspect = self.loss.suspect.swap(false, Ordering::AcqRel);
        let marker = match self.probe().await {
            Ok(None) => return,
            Ok(Some(m)) => m,
            Err(e) => {
                // Storage not answering is an outage, not a loss; look again later.
                if suspect {
                    self.loss.suspect();
                }
                tracing::debug!(error = %e, "data-loss probe failed");
                return;
            }
        };
        let evidence = if suspect {
            format!("{marker}; a flush found accounts of the in-memory view missing")
        } else {
            marker.to_string()
        };
        let res = self.storage.resilience();
        res.update_data_loss(|d| {
            d.detected_at = now_ms();
            d.policy = policy.name();
            d.evidence = evidence.clone();
            d.detections += 1;
            d.writes_paused = policy == OnDataLoss::Report;
        });
        tracing::error!(
            backend = self.storage.name(),
            policy = policy.name(),
            evidence = %evidence,
            "STORAGE DATA LOSS: the backend's data was deleted underneath the running gateway \
             (FLUSHDB/FLUSHALL, a restart without persistence, or keys deleted by hand)"
        );
        match policy {
            OnDataLoss::Reseed => {
                let _ = self.reseed().await;
            }
            OnDataLoss::Report => {
                self.loss.paused.store(true, Ordering::Release);
                self.journal_unwritten();
                tracing::error!(
                    "storage.redis.on_data_loss = \"report\": writes to storage paused; serving \
                     from memory and journaling unwritten state. Restore the data and restart, \
                     or write the in-memory view back with POST /api/redis/reseed"
                );
            }
        }
    }

    /// Writes this process's in-memory view back to storage (see the module docs). Runs with
    /// the flush lock held, so no flush interleaves; writes resume afterwards.
    pub async fn reseed(&self) -> Result<ReseedCounts, PluginError> {
        let _one_at_a_time = self.flushing.lock().await;
        let res = self.storage.resilience();
        let started = Instant::now();
        res.update_data_loss(|d| {
            d.reseed_started_at = Some(now_ms());
            d.reseed_error = None;
        });
        let slots: usize = self.all_slots().len();
        tracing::info!(
            accounts = slots,
            "reseeding storage from the in-memory view"
        );
        match self.reseed_inner().await {
            Ok(c) => {
                let ms = started.elapsed().as_millis() as u64;
                self.loss.paused.store(false, Ordering::Release);
                self.loss.suspect.store(false, Ordering::Release);
                res.update_data_loss(|d| {
                    d.writes_paused = false;
                    d.reseed_finished_at = Some(now_ms());
                    d.reseed_ms = Some(ms);
                    d.reseeded = Some(c);
                });
                tracing::info!(
                    accounts = c.accounts,
                    accounts_existing = c.accounts_existing,
                    tokens = c.tokens,
                    plugin_states = c.plugin_states,
                    config = c.config,
                    meta = c.meta,
                    password_hash = c.password_hash,
                    usage_cache = c.usage_cache,
                    elapsed_ms = ms,
                    "reseed finished: storage rewritten from memory; unflushed counts follow with \
                     the next flush; admin sessions were not restored (log in again)"
                );
                Ok(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "reseed failed; it is tried again at the next check");
                res.update_data_loss(|d| d.reseed_error = Some(e.to_string()));
                // A loss still there is detected again by the next probe.
                self.loss.suspect();
                Err(e)
            }
        }
    }

    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let mut types: Vec<(String, Arc<super::Pool>)> = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        types.sort_by(|a, b| a.0.cmp(&b.0));
        types.into_iter().flat_map(|(_, p)| p.slots()).collect()
    }

    async fn reseed_inner(&self) -> Result<ReseedCounts, PluginError> {
        use futures_util::StreamExt;
        let s = &self.storage;
        let m = s.mirror();
        let mut c = ReseedCounts::default();
        for p in m.plugin_states() {
            s.set_plugin_state(p).await?;
            c.plugin_states += 1;
        }
        if let Some(h) = m.password_hash() {
            s.set_password_hash(&h).await?;
            c.password_hash = true;
        }
        if let Some(u) = m.usage_cache() {
            s.set_usage_cache(&u).await?;
            c.usage_cache = true;
        }
        // Accounts in list order (the first add of a type registers it), each with its state
        // as storage last acknowledged it; the counts not yet flushed stay pending here.
        let results: Vec<Result<(bool, bool), PluginError>> =
            futures_util::stream::iter(self.all_slots())
                .map(|slot| async move {
                    let account = Account {
                        provider_type: slot.provider_type.as_ref().into(),
                        uuid: slot.uuid.as_ref().into(),
                        config: slot.config().as_str().into(),
                        state: lock(&slot.state).clone(),
                    };
                    let added = match s.add_account(account).await {
                        Ok(()) => true,
                        // Another instance reseeded it first.
                        Err(e) if e.code == ErrorCode::CONFLICT => false,
                        Err(e) => return Err(e),
                    };
                    let token = match slot.cached_token() {
                        Some(Some(t)) if added => {
                            s.set_token(&slot.provider_type, &slot.uuid, &t).await?;
                            true
                        }
                        _ => false,
                    };
                    Ok((added, token))
                })
                .buffered(FLUSH_CONCURRENCY)
                .collect()
                .await;
        for r in results {
            let (added, token) = r?;
            if added {
                c.accounts += 1;
            } else {
                c.accounts_existing += 1;
            }
            c.tokens += u64::from(token);
        }
        if let Some(cfg) = m.config() {
            s.set_config(&cfg).await?;
            c.config = true;
        }
        // Meta last: once it is back, the reseed is complete (it is the probe's marker).
        let mut meta = m
            .meta()
            .and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
            .unwrap_or_default();
        meta.insert("reseededAt".into(), Value::from(now_ms()));
        meta.insert("reseededBy".into(), Value::from(&*self.instance));
        s.set_meta(&Value::Object(meta).to_string()).await?;
        c.meta = true;
        Ok(c)
    }
}
