//! The host's handle on the active storage backend: the plugin's FFI object behind ordinary
//! async methods returning `Result<_, PluginError>`. Cheap to clone; every clone talks to the
//! same backend instance.
//!
//! The semantics of each call are the contract's (see `aiclient_sdk::storage`).

use std::sync::Arc;

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
        }
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
        self.obj.get_config().await.into_result().map(opt)
    }

    pub async fn set_config(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_config(r(json)).await.into_result()
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
        self.obj.get_password_hash().await.into_result().map(opt)
    }

    pub async fn set_password_hash(&self, hash: &str) -> Result<(), PluginError> {
        self.obj.set_password_hash(r(hash)).await.into_result()
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
        self.obj.get_usage_cache().await.into_result().map(opt)
    }

    pub async fn set_usage_cache(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_usage_cache(r(json)).await.into_result()
    }

    pub async fn list_plugin_states(&self) -> Result<Vec<PluginState>, PluginError> {
        Ok(self
            .obj
            .list_plugin_states()
            .await
            .into_result()?
            .into_vec())
    }

    pub async fn set_plugin_state(&self, state: PluginState) -> Result<(), PluginError> {
        self.obj.set_plugin_state(state).await.into_result()
    }

    pub async fn get_meta(&self) -> Result<Option<String>, PluginError> {
        self.obj.get_meta().await.into_result().map(opt)
    }

    pub async fn set_meta(&self, json: &str) -> Result<(), PluginError> {
        self.obj.set_meta(r(json)).await.into_result()
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
