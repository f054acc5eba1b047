//! The host's handle on the active storage backend: the plugin's FFI object behind ordinary
//! async methods returning `Result<_, PluginError>`. Cheap to clone; every clone talks to the
//! same backend instance.
//!
//! The semantics of each call are the contract's (see `aiclient_sdk::storage`).
//!
//! Two pieces of host-side memory ride along with the handle (shared by every clone):
//! - the [`Mirror`]: the last service config, meta, password hash, usage cache and plugin
//!   states this process read from or wrote to the backend. It never answers a read (storage
//!   stays the source of truth); it is what the gateway reseeds the backend from when the data
//!   is deleted underneath it (`FLUSHDB`, see `docs/resilience.md`);
//! - the [`Resilience`] record: the data-loss policy and what happened (journal replay and
//!   catch-up progress, detected data loss, reseeds), for `GET /api/redis/status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use abi_stable::std_types::{ROption, RString};
use aiclient_sdk::PluginError;
use aiclient_sdk::storage::{
    Account, AccountState, Change, ChangeStreamObject, PluginState, Session, StateUpdate,
    StorageObject, TokenCas,
};
use serde_json::Value;

#[derive(Clone)]
pub struct Storage {
    obj: Arc<StorageObject>,
    name: Arc<str>,
    mirror: Arc<Mirror>,
    resilience: Arc<Resilience>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last known value of each service-wide document, as this process last saw it stored.
/// Only values storage returned or acknowledged are recorded; a read that finds nothing does
/// not erase what was known (after a `FLUSHDB` that is exactly what must be written back).
#[derive(Default)]
pub struct Mirror {
    config: Mutex<Option<String>>,
    meta: Mutex<Option<String>>,
    password_hash: Mutex<Option<String>>,
    usage_cache: Mutex<Option<String>>,
    plugins: Mutex<BTreeMap<String, PluginState>>,
}

fn remember(slot: &Mutex<Option<String>>, v: Option<&str>) {
    if let Some(v) = v {
        *guard(slot) = Some(v.to_string());
    }
}

impl Mirror {
    pub fn config(&self) -> Option<String> {
        guard(&self.config).clone()
    }
    pub fn meta(&self) -> Option<String> {
        guard(&self.meta).clone()
    }
    pub fn password_hash(&self) -> Option<String> {
        guard(&self.password_hash).clone()
    }
    pub fn usage_cache(&self) -> Option<String> {
        guard(&self.usage_cache).clone()
    }
    pub fn plugin_states(&self) -> Vec<PluginState> {
        guard(&self.plugins).values().cloned().collect()
    }
}

/// What the data-loss guard does when the backend's data vanishes while serving
/// (`[storage.redis] on_data_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDataLoss {
    /// Write everything the gateway holds in memory back (the default).
    #[default]
    Reseed,
    /// Log it, show it in the status, and stop writing; serve from memory.
    Report,
}

impl OnDataLoss {
    pub fn name(self) -> &'static str {
        match self {
            Self::Reseed => "reseed",
            Self::Report => "report",
        }
    }
}

/// Progress of the last journal replay (startup) or post-outage catch-up.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayProgress {
    /// `journal` (the startup replay of `pending-writes.json`) or `catch-up` (the first
    /// flushes after an outage, writing what accumulated in memory).
    pub kind: &'static str,
    pub running: bool,
    /// Updates (journal) or accounts (catch-up) to write, and how many are written.
    pub total: u64,
    pub done: u64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Whether it completed; `false` while running or after a failure.
    pub ok: bool,
}

/// A detected loss of the backend's data, and what was done about it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataLoss {
    pub detected_at: i64,
    /// `reseed` or `report`.
    pub policy: &'static str,
    /// What showed it: the key that vanished, or an account a flush found missing.
    pub evidence: String,
    /// How often data loss was detected since the start.
    pub detections: u64,
    /// Writes to storage are paused (`report` policy, until a reseed).
    pub writes_paused: bool,
    pub reseed_started_at: Option<i64>,
    pub reseed_finished_at: Option<i64>,
    pub reseed_ms: Option<u64>,
    /// What the last reseed wrote back.
    pub reseeded: Option<ReseedCounts>,
    pub reseed_error: Option<String>,
}

/// What one reseed wrote back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReseedCounts {
    pub accounts: u64,
    /// Accounts that already existed (another instance reseeded them first).
    pub accounts_existing: u64,
    pub tokens: u64,
    pub plugin_states: u64,
    pub config: bool,
    pub meta: bool,
    pub password_hash: bool,
    pub usage_cache: bool,
}

/// The data-loss policy and the resilience events of this process.
#[derive(Default)]
pub struct Resilience {
    on_data_loss: Mutex<Option<OnDataLoss>>,
    replay: Mutex<Option<ReplayProgress>>,
    data_loss: Mutex<Option<DataLoss>>,
}

impl Resilience {
    /// The data-loss policy; `None`: no data-loss guard runs (backends that cannot lose data
    /// underneath a running gateway, such as `memory`).
    pub fn on_data_loss(&self) -> Option<OnDataLoss> {
        *guard(&self.on_data_loss)
    }

    pub fn set_on_data_loss(&self, p: OnDataLoss) {
        *guard(&self.on_data_loss) = Some(p);
    }

    pub fn replay(&self) -> Option<ReplayProgress> {
        guard(&self.replay).clone()
    }

    pub fn replay_started(&self, kind: &'static str, total: u64) {
        *guard(&self.replay) = Some(ReplayProgress {
            kind,
            running: true,
            total,
            done: 0,
            started_at: Some(aiclient_sdk::account::now_ms()),
            finished_at: None,
            ok: false,
        });
    }

    pub fn replay_progress(&self, done: u64) {
        if let Some(r) = guard(&self.replay).as_mut() {
            r.done = done;
        }
    }

    pub fn replay_finished(&self, ok: bool) {
        if let Some(r) = guard(&self.replay).as_mut() {
            r.running = false;
            r.ok = ok;
            r.finished_at = Some(aiclient_sdk::account::now_ms());
        }
    }

    pub fn data_loss(&self) -> Option<DataLoss> {
        guard(&self.data_loss).clone()
    }

    /// Changes the data-loss record (created on first use).
    pub fn update_data_loss<R>(&self, f: impl FnOnce(&mut DataLoss) -> R) -> R {
        f(guard(&self.data_loss).get_or_insert_with(DataLoss::default))
    }
}

fn r(s: &str) -> RString {
    RString::from(s)
}

fn opt(o: ROption<RString>) -> Option<String> {
    o.into_option().map(RString::into_string)
}

impl Storage {
    pub fn new(obj: StorageObject, name: &str) -> Self {
        Self {
            obj: Arc::new(obj),
            name: name.into(),
            mirror: Arc::default(),
            resilience: Arc::default(),
        }
    }

    /// What this process last saw stored (see [`Mirror`]).
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The data-loss policy and the resilience events of this process.
    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// One read of the service-wide document this process knows to exist (meta, else the
    /// config): `Ok(Some(what))` when it vanished, `Ok(None)` while it is there or when neither
    /// was ever seen. The data-loss guard's marker.
    pub async fn marker_gone(&self) -> Result<Option<&'static str>, PluginError> {
        if self.mirror.meta().is_some() {
            let gone = self.get_meta().await?.is_none();
            return Ok(gone.then_some("the meta document is gone"));
        }
        if self.mirror.config().is_some() {
            let gone = self.get_config().await?.is_none();
            return Ok(gone.then_some("the service config is gone"));
        }
        Ok(None)
    }

    /// The backend plugin's name (`memory`, `file`, `redis`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn status(&self) -> Result<Value, PluginError> {
        let s = self.obj.status().await.into_result()?;
        serde_json::from_str(&s)
            .map_err(|e| PluginError::internal(format!("backend status is not JSON: {e}")))
    }

    pub async fn get_config(&self) -> Result<Option<String>, PluginError> {
        let v = self.obj.get_config().await.into_result().map(opt)?;
        remember(&self.mirror.config, v.as_deref());
        Ok(v)
    }

    pub async fn set_config(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_config(r(json)).await.into_result()?;
        remember(&self.mirror.config, Some(json));
        Ok(())
    }

    pub async fn list_provider_types(&self) -> Result<Vec<String>, PluginError> {
        let v = self.obj.list_provider_types().await.into_result()?;
        Ok(v.into_iter().map(RString::into_string).collect())
    }

    pub async fn list_accounts(
        &self,
        provider_type: Option<&str>,
    ) -> Result<Vec<Account>, PluginError> {
        let t = provider_type.map(r).into();
        Ok(self.obj.list_accounts(t).await.into_result()?.into_vec())
    }

    pub async fn get_account(&self, t: &str, uuid: &str) -> Result<Option<Account>, PluginError> {
        Ok(self
            .obj
            .get_account(r(t), r(uuid))
            .await
            .into_result()?
            .into_option())
    }

    pub async fn add_account(&self, account: Account) -> Result<(), PluginError> {
        self.obj.add_account(account).await.into_result()
    }

    pub async fn update_account(
        &self,
        t: &str,
        uuid: &str,
        patch: &Value,
    ) -> Result<Account, PluginError> {
        self.obj
            .update_account(r(t), r(uuid), patch.to_string().into())
            .await
            .into_result()
    }

    pub async fn delete_account(&self, t: &str, uuid: &str) -> Result<bool, PluginError> {
        self.obj.delete_account(r(t), r(uuid)).await.into_result()
    }

    pub async fn update_state(
        &self,
        t: &str,
        uuid: &str,
        update: StateUpdate,
    ) -> Result<AccountState, PluginError> {
        self.obj
            .update_state(r(t), r(uuid), update)
            .await
            .into_result()
    }

    pub async fn get_token(&self, t: &str, uuid: &str) -> Result<Option<String>, PluginError> {
        self.obj
            .get_token(r(t), r(uuid))
            .await
            .into_result()
            .map(opt)
    }

    pub async fn set_token(&self, t: &str, uuid: &str, json: &str) -> Result<(), PluginError> {
        self.obj
            .set_token(r(t), r(uuid), r(json))
            .await
            .into_result()
    }

    pub async fn cas_token(
        &self,
        t: &str,
        uuid: &str,
        expected_refresh: &str,
        json: &str,
    ) -> Result<TokenCas, PluginError> {
        self.obj
            .cas_token(r(t), r(uuid), r(expected_refresh), r(json))
            .await
            .into_result()
    }

    pub async fn delete_token(&self, t: &str, uuid: &str) -> Result<bool, PluginError> {
        self.obj.delete_token(r(t), r(uuid)).await.into_result()
    }

    pub async fn acquire_lock(
        &self,
        t: &str,
        uuid: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, PluginError> {
        self.obj
            .acquire_lock(r(t), r(uuid), r(owner), ttl_ms)
            .await
            .into_result()
    }

    pub async fn release_lock(
        &self,
        t: &str,
        uuid: &str,
        owner: &str,
    ) -> Result<bool, PluginError> {
        self.obj
            .release_lock(r(t), r(uuid), r(owner))
            .await
            .into_result()
    }

    pub async fn get_password_hash(&self) -> Result<Option<String>, PluginError> {
        let v = self.obj.get_password_hash().await.into_result().map(opt)?;
        remember(&self.mirror.password_hash, v.as_deref());
        Ok(v)
    }

    pub async fn set_password_hash(&self, hash: &str) -> Result<(), PluginError> {
        self.obj.set_password_hash(r(hash)).await.into_result()?;
        remember(&self.mirror.password_hash, Some(hash));
        Ok(())
    }

    pub async fn create_session(&self, session: Session) -> Result<(), PluginError> {
        self.obj.create_session(session).await.into_result()
    }

    pub async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, PluginError> {
        Ok(self
            .obj
            .get_session(r(token_hash))
            .await
            .into_result()?
            .into_option())
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, PluginError> {
        self.obj.delete_session(r(token_hash)).await.into_result()
    }

    pub async fn list_sessions(&self) -> Result<Vec<Session>, PluginError> {
        Ok(self.obj.list_sessions().await.into_result()?.into_vec())
    }

    pub async fn get_usage_cache(&self) -> Result<Option<String>, PluginError> {
        let v = self.obj.get_usage_cache().await.into_result().map(opt)?;
        remember(&self.mirror.usage_cache, v.as_deref());
        Ok(v)
    }

    pub async fn set_usage_cache(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_usage_cache(r(json)).await.into_result()?;
        remember(&self.mirror.usage_cache, Some(json));
        Ok(())
    }

    pub async fn list_plugin_states(&self) -> Result<Vec<PluginState>, PluginError> {
        let v = self
            .obj
            .list_plugin_states()
            .await
            .into_result()?
            .into_vec();
        let mut known = guard(&self.mirror.plugins);
        for s in &v {
            known.insert(s.name.to_string(), s.clone());
        }
        Ok(v)
    }

    pub async fn set_plugin_state(&self, state: PluginState) -> Result<(), PluginError> {
        self.obj
            .set_plugin_state(state.clone())
            .await
            .into_result()?;
        guard(&self.mirror.plugins).insert(state.name.to_string(), state);
        Ok(())
    }

    pub async fn get_meta(&self) -> Result<Option<String>, PluginError> {
        let v = self.obj.get_meta().await.into_result().map(opt)?;
        remember(&self.mirror.meta, v.as_deref());
        Ok(v)
    }

    pub async fn set_meta(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_meta(r(json)).await.into_result()?;
        remember(&self.mirror.meta, Some(json));
        Ok(())
    }

    pub async fn subscribe(&self) -> Result<ChangeFeed, PluginError> {
        Ok(ChangeFeed(self.obj.subscribe().await.into_result()?))
    }

    pub async fn flush(&self) -> Result<(), PluginError> {
        self.obj.flush().await.into_result()
    }

    pub async fn extension(&self, name: &str, payload: &str) -> Result<String, PluginError> {
        Ok(self
            .obj
            .extension(r(name), r(payload))
            .await
            .into_result()?
            .into_string())
    }
}

/// A subscription to the backend's change feed.
pub struct ChangeFeed(ChangeStreamObject);

impl ChangeFeed {
    /// The next change; `Ok(None)` once the backend has gone away.
    pub async fn next(&mut self) -> Result<Option<Change>, PluginError> {
        Ok(self.0.next().await.into_result()?.into_option())
    }
}
