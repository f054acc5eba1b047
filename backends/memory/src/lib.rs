//! The in-memory storage backend: the whole storage contract in process memory, nothing to
//! install. State ends with the process; use it for trying the gateway out, for tests, and as
//! the reference the conformance suite holds the other backends to.
//!
//! One mutex guards everything. Every operation is a few map look-ups (~0.1 µs), so at the
//! gateway's call rates a single lock is faster than finer-grained ones would be, and it makes
//! every compound operation trivially atomic.

#![allow(non_local_definitions)]

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use aiclient_sdk::PluginError;
use aiclient_sdk::account::{STATE_FIELDS, merge_patch, now_ms, refresh_token_of};
use aiclient_sdk::storage::{
    Account, AccountState, Change, ChangeHub, ChangeKind, ChangeSubscription, PluginState, Session,
    StateUpdate, StorageBackend, TokenCas,
};
use indexmap::IndexMap;
use serde_json::{Value, json};

type Key = (String, String);

#[derive(Default)]
struct Store {
    config: Option<String>,
    /// provider type → uuid → (config JSON, state), both in insertion order.
    pools: IndexMap<String, IndexMap<String, (String, AccountState)>>,
    tokens: HashMap<Key, String>,
    locks: HashMap<Key, (String, Instant)>,
    password_hash: Option<String>,
    sessions: HashMap<String, Session>,
    usage_cache: Option<String>,
    plugins: IndexMap<String, PluginState>,
    meta: Option<String>,
}

pub struct MemoryBackend {
    store: Mutex<Store>,
    changes: ChangeHub,
    instance: String,
}

impl MemoryBackend {
    /// Config: `{"instance_id": "..."}` (optional; names this instance in change events).
    pub fn new(config: &Value) -> Self {
        let instance = config
            .get("instance_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Self {
            store: Mutex::new(Store::default()),
            changes: ChangeHub::default(),
            instance,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied change behind (every
        // mutation is a single assignment), so a poisoned lock is still consistent.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, kind: ChangeKind) {
        self.changes.publish(Change::new(kind, &self.instance));
    }

    fn publish_account(&self, kind: ChangeKind, t: &str, u: &str) {
        self.changes
            .publish(Change::account(kind, t, u, &self.instance));
    }
}

fn key(t: &str, u: &str) -> Key {
    (t.to_string(), u.to_string())
}

fn not_found(t: &str, u: &str) -> PluginError {
    PluginError::not_found(format!("no account {u} of type {t}"))
}

/// Checks that `json` is a JSON object; the contract's stored documents all are.
fn object(what: &str, json: &str) -> Result<serde_json::Map<String, Value>, PluginError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(PluginError::invalid_input(format!(
            "{what} must be a JSON object"
        ))),
        Err(e) => Err(PluginError::invalid_input(format!(
            "{what}: invalid JSON: {e}"
        ))),
    }
}

impl StorageBackend for MemoryBackend {
    async fn status(&self) -> Result<Value, PluginError> {
        let s = self.lock();
        let accounts: usize = s.pools.values().map(IndexMap::len).sum();
        Ok(json!({
            "backend": "memory",
            "connected": true,
            "durable": false,
            "providerTypes": s.pools.len(),
            "accounts": accounts,
            "instanceId": self.instance,
        }))
    }

    async fn get_config(&self) -> Result<Option<String>, PluginError> {
        Ok(self.lock().config.clone())
    }

    async fn set_config(&self, json: String) -> Result<(), PluginError> {
        object("config", &json)?;
        self.lock().config = Some(json);
        self.publish(ChangeKind::CONFIG);
        Ok(())
    }

    async fn list_provider_types(&self) -> Result<Vec<String>, PluginError> {
        Ok(self.lock().pools.keys().cloned().collect())
    }

    async fn list_accounts(
        &self,
        provider_type: Option<&str>,
    ) -> Result<Vec<Account>, PluginError> {
        let s = self.lock();
        let to_account = |t: &String, (u, (c, st)): (&String, &(String, AccountState))| Account {
            provider_type: t.as_str().into(),
            uuid: u.as_str().into(),
            config: c.as_str().into(),
            state: st.clone(),
        };
        Ok(match provider_type {
            Some(t) => match s.pools.get_key_value(t) {
                Some((t, pool)) => pool.iter().map(|e| to_account(t, e)).collect(),
                None => Vec::new(),
            },
            None => s
                .pools
                .iter()
                .flat_map(|(t, pool)| pool.iter().map(move |e| to_account(t, e)))
                .collect(),
        })
    }

    async fn get_account(&self, t: &str, u: &str) -> Result<Option<Account>, PluginError> {
        let s = self.lock();
        Ok(s.pools
            .get(t)
            .and_then(|p| p.get(u))
            .map(|(c, st)| Account {
                provider_type: t.into(),
                uuid: u.into(),
                config: c.as_str().into(),
                state: st.clone(),
            }))
    }

    async fn add_account(&self, account: Account) -> Result<(), PluginError> {
        let (t, u) = (account.provider_type.as_str(), account.uuid.as_str());
        if t.is_empty() || u.is_empty() {
            return Err(PluginError::invalid_input(
                "provider type and uuid must not be empty",
            ));
        }
        object("account config", &account.config)?;
        {
            let mut s = self.lock();
            let pool = s.pools.entry(t.to_string()).or_default();
            if pool.contains_key(u) {
                return Err(PluginError::conflict(format!(
                    "account {u} of type {t} exists"
                )));
            }
            pool.insert(
                u.to_string(),
                (account.config.to_string(), account.state.clone()),
            );
        }
        self.publish_account(ChangeKind::ACCOUNT, t, u);
        Ok(())
    }

    async fn update_account(&self, t: &str, u: &str, patch: Value) -> Result<Account, PluginError> {
        let Value::Object(p) = &patch else {
            return Err(PluginError::invalid_input(
                "an account patch must be a JSON object",
            ));
        };
        if let Some((name, _)) = STATE_FIELDS.iter().find(|(n, _)| p.contains_key(*n)) {
            return Err(PluginError::invalid_input(format!(
                "{name} is account state; change it with update_state"
            )));
        }
        if p.get("uuid").is_some_and(|v| v.as_str() != Some(u)) {
            return Err(PluginError::invalid_input(
                "a patch cannot change an account's uuid",
            ));
        }
        let acct = {
            let mut s = self.lock();
            let (c, st) = s
                .pools
                .get_mut(t)
                .and_then(|p| p.get_mut(u))
                .ok_or_else(|| not_found(t, u))?;
            let mut cfg: Value = serde_json::from_str(c)
                .map_err(|e| PluginError::internal(format!("stored account config: {e}")))?;
            merge_patch(&mut cfg, &patch);
            *c = cfg.to_string();
            Account {
                provider_type: t.into(),
                uuid: u.into(),
                config: c.as_str().into(),
                state: st.clone(),
            }
        };
        self.publish_account(ChangeKind::ACCOUNT, t, u);
        Ok(acct)
    }

    async fn delete_account(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let existed = {
            let mut s = self.lock();
            let existed = s.pools.get_mut(t).and_then(|p| p.shift_remove(u)).is_some();
            if s.pools.get(t).is_some_and(IndexMap::is_empty) {
                s.pools.shift_remove(t);
            }
            let k = key(t, u);
            s.tokens.remove(&k);
            s.locks.remove(&k);
            existed
        };
        if existed {
            self.publish_account(ChangeKind::ACCOUNT_DELETED, t, u);
        }
        Ok(existed)
    }

    async fn update_state(
        &self,
        t: &str,
        u: &str,
        update: StateUpdate,
    ) -> Result<AccountState, PluginError> {
        let st = {
            let mut s = self.lock();
            let (_, st) = s
                .pools
                .get_mut(t)
                .and_then(|p| p.get_mut(u))
                .ok_or_else(|| not_found(t, u))?;
            update.apply(st);
            st.clone()
        };
        self.publish_account(ChangeKind::ACCOUNT_STATE, t, u);
        Ok(st)
    }

    async fn get_token(&self, t: &str, u: &str) -> Result<Option<String>, PluginError> {
        Ok(self.lock().tokens.get(&key(t, u)).cloned())
    }

    async fn set_token(&self, t: &str, u: &str, json: String) -> Result<(), PluginError> {
        object("token", &json)?;
        {
            let mut s = self.lock();
            if !s.pools.get(t).is_some_and(|p| p.contains_key(u)) {
                return Err(not_found(t, u));
            }
            s.tokens.insert(key(t, u), json);
        }
        self.publish_account(ChangeKind::TOKEN, t, u);
        Ok(())
    }

    async fn cas_token(
        &self,
        t: &str,
        u: &str,
        expected: &str,
        json: String,
    ) -> Result<TokenCas, PluginError> {
        object("token", &json)?;
        let result = {
            let mut s = self.lock();
            if !s.pools.get(t).is_some_and(|p| p.contains_key(u)) {
                return Err(not_found(t, u));
            }
            let k = key(t, u);
            let current = s.tokens.get(&k);
            let current_rt = current
                .and_then(|c| refresh_token_of(c))
                .unwrap_or_default();
            if current_rt == expected {
                s.tokens.insert(k, json);
                TokenCas {
                    swapped: true,
                    current: ROption::RNone,
                }
            } else {
                TokenCas {
                    swapped: false,
                    current: current.map(|c| RString::from(c.as_str())).into(),
                }
            }
        };
        if result.swapped {
            self.publish_account(ChangeKind::TOKEN, t, u);
        }
        Ok(result)
    }

    async fn delete_token(&self, t: &str, u: &str) -> Result<bool, PluginError> {
        let existed = self.lock().tokens.remove(&key(t, u)).is_some();
        if existed {
            self.publish_account(ChangeKind::TOKEN, t, u);
        }
        Ok(existed)
    }

    async fn acquire_lock(
        &self,
        t: &str,
        u: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, PluginError> {
        if owner.is_empty() || ttl_ms == 0 {
            return Err(PluginError::invalid_input(
                "a lock needs an owner and a ttl",
            ));
        }
        let mut s = self.lock();
        let now = Instant::now();
        let k = key(t, u);
        match s.locks.get(&k) {
            Some((o, exp)) if *exp > now && o != owner => Ok(false),
            _ => {
                s.locks
                    .insert(k, (owner.to_string(), now + Duration::from_millis(ttl_ms)));
                Ok(true)
            }
        }
    }

    async fn release_lock(&self, t: &str, u: &str, owner: &str) -> Result<bool, PluginError> {
        let mut s = self.lock();
        let k = key(t, u);
        match s.locks.get(&k) {
            Some((o, exp)) if o == owner && *exp > Instant::now() => {
                s.locks.remove(&k);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_password_hash(&self) -> Result<Option<String>, PluginError> {
        Ok(self.lock().password_hash.clone())
    }

    async fn set_password_hash(&self, hash: String) -> Result<(), PluginError> {
        if hash.is_empty() {
            return Err(PluginError::invalid_input("empty password hash"));
        }
        self.lock().password_hash = Some(hash);
        self.publish(ChangeKind::PASSWORD);
        Ok(())
    }

    async fn create_session(&self, session: Session) -> Result<(), PluginError> {
        object("session data", &session.data)?;
        if session.token_hash.is_empty() {
            return Err(PluginError::invalid_input("empty session token hash"));
        }
        let mut s = self.lock();
        let now = now_ms();
        s.sessions.retain(|_, v| v.expires_at > now);
        s.sessions.insert(session.token_hash.to_string(), session);
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>, PluginError> {
        let mut s = self.lock();
        match s.sessions.get(token_hash) {
            Some(v) if v.expires_at > now_ms() => Ok(Some(v.clone())),
            Some(_) => {
                s.sessions.remove(token_hash);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool, PluginError> {
        let existed = self.lock().sessions.remove(token_hash).is_some();
        if existed {
            self.publish(ChangeKind::SESSION);
        }
        Ok(existed)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, PluginError> {
        let now = now_ms();
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|v| v.expires_at > now)
            .cloned()
            .collect())
    }

    async fn get_usage_cache(&self) -> Result<Option<String>, PluginError> {
        Ok(self.lock().usage_cache.clone())
    }

    async fn set_usage_cache(&self, json: String) -> Result<(), PluginError> {
        object("usage cache", &json)?;
        self.lock().usage_cache = Some(json);
        self.publish(ChangeKind::USAGE_CACHE);
        Ok(())
    }

    async fn list_plugin_states(&self) -> Result<Vec<PluginState>, PluginError> {
        Ok(self.lock().plugins.values().cloned().collect())
    }

    async fn set_plugin_state(&self, state: PluginState) -> Result<(), PluginError> {
        if state.name.is_empty() {
            return Err(PluginError::invalid_input("empty plugin name"));
        }
        object("plugin extra", &state.extra)?;
        self.lock().plugins.insert(state.name.to_string(), state);
        self.publish(ChangeKind::PLUGINS);
        Ok(())
    }

    async fn get_meta(&self) -> Result<Option<String>, PluginError> {
        Ok(self.lock().meta.clone())
    }

    async fn set_meta(&self, json: String) -> Result<(), PluginError> {
        object("meta", &json)?;
        self.lock().meta = Some(json);
        self.publish(ChangeKind::META);
        Ok(())
    }

    async fn subscribe(&self) -> Result<ChangeSubscription, PluginError> {
        Ok(self.changes.subscribe())
    }

    async fn flush(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

aiclient_sdk::export_storage_backend! {
    name: "memory",
    description: "In-process storage; nothing to install, state ends with the process",
    create: |config: Value| async move { Ok(MemoryBackend::new(&config)) },
}
