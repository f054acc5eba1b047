//! The storage contract: every kind of state the gateway keeps, behind one interface that the
//! memory, file and Redis backends implement the same way (and that one conformance suite
//! checks on all of them).
//!
//! A backend author implements [`StorageBackend`] (ordinary async Rust) and exports it with
//! [`export_storage_backend!`](crate::export_storage_backend); the macro bridges it to the
//! FFI-safe [`FfiStorage`] trait object the host calls. The semantics every backend must keep:
//!
//! - **A failed call is an error, never an empty value.** `Ok(None)` means "does not exist";
//!   a backend that cannot tell (Redis down) returns `Err(UNAVAILABLE)`. (The Node fork
//!   returned `{}` on failure, and that let any bearer token into its UI.)
//! - **Service config** (`config.json`): one JSON object, replaced whole.
//! - **Accounts**: `(provider_type, uuid)` → config JSON + [`AccountState`]. `add_account`
//!   refuses an existing uuid (`CONFLICT`); `update_account` applies a JSON merge patch
//!   (RFC 7386: `null` removes a key) to the config and never touches state;
//!   `delete_account` also deletes the account's token; operations on a missing account return
//!   `NOT_FOUND` and never create it, so a counter flush racing a delete cannot resurrect it.
//! - **State**: changed only by [`StateUpdate`], applied atomically as [`StateUpdate::apply`]
//!   documents. Counters are never read-modify-written by the caller.
//! - **Tokens**: the credential JSON per account, in the provider's original shape. Tokens never
//!   expire in storage. A token belongs to an account: `set_token`/`cas_token` on a missing
//!   account return `NOT_FOUND`. `cas_token` stores the new token only if the stored token's refresh
//!   token (field `refresh_token` or `refreshToken`, see [`crate::account::refresh_token_of`])
//!   equals `expected_refresh`; otherwise it returns the current token, so a stale refresher
//!   cannot overwrite a newer one. An absent token matches an empty `expected_refresh`.
//! - **Locks**: a short per-account lock with an owner and an expiry; `acquire_lock` succeeds
//!   if free or expired (or already held by the same owner, which extends it); `release_lock`
//!   deletes only if the owner matches (compare-and-delete).
//! - **Password**: only a hash is ever stored (the file backend also reads a legacy plaintext
//!   `pwd`; the host tells the two apart).
//! - **Sessions**: keyed by a hash of the bearer token; expiry enforced by the backend
//!   (`get_session` never returns an expired one).
//! - **Usage cache, plugin states, meta**: JSON documents / per-plugin flags.
//! - **Change feed**: `subscribe` returns a stream of [`Change`]s made by this or any other
//!   instance sharing the backend; a `RESYNC` event means "events were missed, reload all".
//! - **Status**: a JSON object for `/api/storage/status`; never contains a password.

mod types;

use std::future::Future;
use std::sync::Arc;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RString, RVec},
};
use async_ffi::{BorrowingFfiFuture, FfiFuture};

pub use types::*;

use crate::runtime::guard;
use crate::{HostContext, PluginError, PluginInfo};

/// The FFI-safe storage interface the host calls. Plugin authors do not implement this
/// directly; they implement [`StorageBackend`] and export it with the macro.
///
/// Append-only: new methods go below the last one, after `#[sabi(last_prefix_field)]`'s
/// method, and need a minor SDK version bump (see the crate docs on versioning).
#[sabi_trait]
pub trait FfiStorage: Send + Sync {
    fn status(&self) -> FfiFuture<RResult<RString, PluginError>>;
    fn get_config(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>>;
    fn set_config(&self, json: RString) -> FfiFuture<RResult<(), PluginError>>;
    fn list_provider_types(&self) -> FfiFuture<RResult<RVec<RString>, PluginError>>;
    fn list_accounts(
        &self,
        provider_type: ROption<RString>,
    ) -> FfiFuture<RResult<RVec<Account>, PluginError>>;
    fn get_account(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<ROption<Account>, PluginError>>;
    fn add_account(&self, account: Account) -> FfiFuture<RResult<(), PluginError>>;
    fn update_account(
        &self,
        provider_type: RString,
        uuid: RString,
        patch: RString,
    ) -> FfiFuture<RResult<Account, PluginError>>;
    fn delete_account(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<bool, PluginError>>;
    fn update_state(
        &self,
        provider_type: RString,
        uuid: RString,
        update: StateUpdate,
    ) -> FfiFuture<RResult<AccountState, PluginError>>;
    fn get_token(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<ROption<RString>, PluginError>>;
    fn set_token(
        &self,
        provider_type: RString,
        uuid: RString,
        json: RString,
    ) -> FfiFuture<RResult<(), PluginError>>;
    fn cas_token(
        &self,
        provider_type: RString,
        uuid: RString,
        expected_refresh: RString,
        json: RString,
    ) -> FfiFuture<RResult<TokenCas, PluginError>>;
    fn delete_token(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<bool, PluginError>>;
    fn acquire_lock(
        &self,
        provider_type: RString,
        uuid: RString,
        owner: RString,
        ttl_ms: u64,
    ) -> FfiFuture<RResult<bool, PluginError>>;
    fn release_lock(
        &self,
        provider_type: RString,
        uuid: RString,
        owner: RString,
    ) -> FfiFuture<RResult<bool, PluginError>>;
    fn get_password_hash(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>>;
    fn set_password_hash(&self, hash: RString) -> FfiFuture<RResult<(), PluginError>>;
    fn create_session(&self, session: Session) -> FfiFuture<RResult<(), PluginError>>;
    fn get_session(&self, token_hash: RString)
    -> FfiFuture<RResult<ROption<Session>, PluginError>>;
    fn delete_session(&self, token_hash: RString) -> FfiFuture<RResult<bool, PluginError>>;
    fn list_sessions(&self) -> FfiFuture<RResult<RVec<Session>, PluginError>>;
    fn get_usage_cache(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>>;
    fn set_usage_cache(&self, json: RString) -> FfiFuture<RResult<(), PluginError>>;
    fn list_plugin_states(&self) -> FfiFuture<RResult<RVec<PluginState>, PluginError>>;
    fn set_plugin_state(&self, state: PluginState) -> FfiFuture<RResult<(), PluginError>>;
    fn get_meta(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>>;
    fn set_meta(&self, json: RString) -> FfiFuture<RResult<(), PluginError>>;
    fn subscribe(&self) -> FfiFuture<RResult<ChangeStreamObject, PluginError>>;
    fn flush(&self) -> FfiFuture<RResult<(), PluginError>>;
    /// Escape hatch for operations newer than this interface: a JSON request by name.
    #[sabi(last_prefix_field)]
    fn extension(
        &self,
        name: RString,
        payload: RString,
    ) -> FfiFuture<RResult<RString, PluginError>>;
}

/// A storage backend as the host holds it (cheap to clone).
pub type StorageObject = FfiStorage_TO<'static, RArc<()>>;

/// The change feed as it crosses the boundary.
#[sabi_trait]
pub trait FfiChangeStream: Send {
    /// The next change; `None` once the backend is gone.
    #[sabi(last_prefix_field)]
    fn next(&mut self) -> BorrowingFfiFuture<'_, RResult<ROption<Change>, PluginError>>;
}

pub type ChangeStreamObject = FfiChangeStream_TO<'static, RBox<()>>;

/// The root module of a storage backend library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = StorageModRef)))]
#[sabi(missing_field(panic))]
pub struct StorageMod {
    /// The plugin's name, version and description (no side effects).
    pub info: extern "C" fn() -> PluginInfo,
    /// Installs the log bridge and panic hook. Called once, before `create`.
    pub init: extern "C" fn(HostContext),
    /// Builds a backend from its JSON config.
    /// Add new fields below this one only.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(RString) -> FfiFuture<RResult<StorageObject, PluginError>>,
}

impl RootModule for StorageModRef {
    declare_root_module_statics! {StorageModRef}
    const BASE_NAME: &'static str = crate::STORAGE_BASE_NAME;
    const NAME: &'static str = "aiclient storage backend";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// What a storage backend author implements. See the module docs for the semantics each
/// method must keep; [`export_storage_backend!`](crate::export_storage_backend) does the rest.
///
/// Methods return `impl Future + Send`; an implementation may simply write `async fn`.
pub trait StorageBackend: Send + Sync + 'static {
    fn status(&self) -> impl Future<Output = Result<serde_json::Value, PluginError>> + Send;
    fn get_config(&self) -> impl Future<Output = Result<Option<String>, PluginError>> + Send;
    fn set_config(&self, json: String) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn list_provider_types(&self) -> impl Future<Output = Result<Vec<String>, PluginError>> + Send;
    fn list_accounts(
        &self,
        provider_type: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Account>, PluginError>> + Send;
    fn get_account(
        &self,
        provider_type: &str,
        uuid: &str,
    ) -> impl Future<Output = Result<Option<Account>, PluginError>> + Send;
    fn add_account(&self, account: Account)
    -> impl Future<Output = Result<(), PluginError>> + Send;
    fn update_account(
        &self,
        provider_type: &str,
        uuid: &str,
        patch: serde_json::Value,
    ) -> impl Future<Output = Result<Account, PluginError>> + Send;
    fn delete_account(
        &self,
        provider_type: &str,
        uuid: &str,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;
    fn update_state(
        &self,
        provider_type: &str,
        uuid: &str,
        update: StateUpdate,
    ) -> impl Future<Output = Result<AccountState, PluginError>> + Send;
    fn get_token(
        &self,
        provider_type: &str,
        uuid: &str,
    ) -> impl Future<Output = Result<Option<String>, PluginError>> + Send;
    fn set_token(
        &self,
        provider_type: &str,
        uuid: &str,
        json: String,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn cas_token(
        &self,
        provider_type: &str,
        uuid: &str,
        expected_refresh: &str,
        json: String,
    ) -> impl Future<Output = Result<TokenCas, PluginError>> + Send;
    fn delete_token(
        &self,
        provider_type: &str,
        uuid: &str,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;
    fn acquire_lock(
        &self,
        provider_type: &str,
        uuid: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;
    fn release_lock(
        &self,
        provider_type: &str,
        uuid: &str,
        owner: &str,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;
    fn get_password_hash(&self)
    -> impl Future<Output = Result<Option<String>, PluginError>> + Send;
    fn set_password_hash(
        &self,
        hash: String,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn create_session(
        &self,
        session: Session,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn get_session(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<Session>, PluginError>> + Send;
    fn delete_session(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;
    fn list_sessions(&self) -> impl Future<Output = Result<Vec<Session>, PluginError>> + Send;
    fn get_usage_cache(&self) -> impl Future<Output = Result<Option<String>, PluginError>> + Send;
    fn set_usage_cache(&self, json: String)
    -> impl Future<Output = Result<(), PluginError>> + Send;
    fn list_plugin_states(
        &self,
    ) -> impl Future<Output = Result<Vec<PluginState>, PluginError>> + Send;
    fn set_plugin_state(
        &self,
        state: PluginState,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn get_meta(&self) -> impl Future<Output = Result<Option<String>, PluginError>> + Send;
    fn set_meta(&self, json: String) -> impl Future<Output = Result<(), PluginError>> + Send;
    fn subscribe(&self) -> impl Future<Output = Result<ChangeSubscription, PluginError>> + Send;
    /// Makes every accepted write durable (a no-op where writes are durable already).
    fn flush(&self) -> impl Future<Output = Result<(), PluginError>> + Send;
    /// Named operations beyond this interface; `UNSUPPORTED` unless overridden.
    fn extension(
        &self,
        name: &str,
        _payload: String,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let err = PluginError::unsupported(format!("extension {name:?} is not supported"));
        async move { Err(err) }
    }
}

/// A subscription to a backend's [`ChangeHub`].
pub struct ChangeSubscription(tokio::sync::broadcast::Receiver<Change>);

impl ChangeSubscription {
    /// The next change, a `RESYNC` if this subscriber fell behind, `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<Change> {
        use tokio::sync::broadcast::error::RecvError;
        match self.0.recv().await {
            Ok(c) => Some(c),
            Err(RecvError::Lagged(_)) => Some(Change::resync()),
            Err(RecvError::Closed) => None,
        }
    }
}

/// Fan-out of change events inside a backend. A subscriber that falls more than `capacity`
/// events behind gets a `RESYNC` instead of the events it missed.
#[derive(Clone)]
pub struct ChangeHub {
    tx: tokio::sync::broadcast::Sender<Change>,
}

impl ChangeHub {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(capacity.max(16)).0,
        }
    }
    /// Sends to every current subscriber (none is fine).
    pub fn publish(&self, change: Change) {
        let _ = self.tx.send(change);
    }
    pub fn subscribe(&self) -> ChangeSubscription {
        ChangeSubscription(self.tx.subscribe())
    }
}

impl Default for ChangeHub {
    fn default() -> Self {
        Self::new(4096)
    }
}

struct ChangeStreamExport(ChangeSubscription);

impl FfiChangeStream for ChangeStreamExport {
    fn next(&mut self) -> BorrowingFfiFuture<'_, RResult<ROption<Change>, PluginError>> {
        guard(async move { Ok(self.0.recv().await.into()) })
    }
}

/// Bridges a [`StorageBackend`] to [`FfiStorage`]. Every call's future runs through
/// [`guard`]: panics become `PANIC` errors and the plugin runtime's context is entered.
pub struct StorageExport<T>(pub Arc<T>);

fn ropt(o: Option<String>) -> ROption<RString> {
    o.map(RString::from).into()
}

impl<T: StorageBackend> FfiStorage for StorageExport<T> {
    fn status(&self) -> FfiFuture<RResult<RString, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.status().await?.to_string().into()) })
    }
    fn get_config(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.get_config().await.map(ropt) })
    }
    fn set_config(&self, json: RString) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_config(json.into()).await })
    }
    fn list_provider_types(&self) -> FfiFuture<RResult<RVec<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move {
            Ok(b.list_provider_types()
                .await?
                .into_iter()
                .map(RString::from)
                .collect())
        })
    }
    fn list_accounts(
        &self,
        provider_type: ROption<RString>,
    ) -> FfiFuture<RResult<RVec<Account>, PluginError>> {
        let b = self.0.clone();
        guard(async move {
            let t = provider_type.as_ref().map(|s| s.as_str()).into_option();
            Ok(b.list_accounts(t).await?.into())
        })
    }
    fn get_account(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<ROption<Account>, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.get_account(&provider_type, &uuid).await?.into()) })
    }
    fn add_account(&self, account: Account) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.add_account(account).await })
    }
    fn update_account(
        &self,
        provider_type: RString,
        uuid: RString,
        patch: RString,
    ) -> FfiFuture<RResult<Account, PluginError>> {
        let b = self.0.clone();
        guard(async move {
            let patch: serde_json::Value = serde_json::from_str(&patch)?;
            b.update_account(&provider_type, &uuid, patch).await
        })
    }
    fn delete_account(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<bool, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.delete_account(&provider_type, &uuid).await })
    }
    fn update_state(
        &self,
        provider_type: RString,
        uuid: RString,
        update: StateUpdate,
    ) -> FfiFuture<RResult<AccountState, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.update_state(&provider_type, &uuid, update).await })
    }
    fn get_token(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<ROption<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.get_token(&provider_type, &uuid).await.map(ropt) })
    }
    fn set_token(
        &self,
        provider_type: RString,
        uuid: RString,
        json: RString,
    ) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_token(&provider_type, &uuid, json.into()).await })
    }
    fn cas_token(
        &self,
        provider_type: RString,
        uuid: RString,
        expected_refresh: RString,
        json: RString,
    ) -> FfiFuture<RResult<TokenCas, PluginError>> {
        let b = self.0.clone();
        guard(async move {
            b.cas_token(&provider_type, &uuid, &expected_refresh, json.into())
                .await
        })
    }
    fn delete_token(
        &self,
        provider_type: RString,
        uuid: RString,
    ) -> FfiFuture<RResult<bool, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.delete_token(&provider_type, &uuid).await })
    }
    fn acquire_lock(
        &self,
        provider_type: RString,
        uuid: RString,
        owner: RString,
        ttl_ms: u64,
    ) -> FfiFuture<RResult<bool, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.acquire_lock(&provider_type, &uuid, &owner, ttl_ms).await })
    }
    fn release_lock(
        &self,
        provider_type: RString,
        uuid: RString,
        owner: RString,
    ) -> FfiFuture<RResult<bool, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.release_lock(&provider_type, &uuid, &owner).await })
    }
    fn get_password_hash(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.get_password_hash().await.map(ropt) })
    }
    fn set_password_hash(&self, hash: RString) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_password_hash(hash.into()).await })
    }
    fn create_session(&self, session: Session) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.create_session(session).await })
    }
    fn get_session(
        &self,
        token_hash: RString,
    ) -> FfiFuture<RResult<ROption<Session>, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.get_session(&token_hash).await?.into()) })
    }
    fn delete_session(&self, token_hash: RString) -> FfiFuture<RResult<bool, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.delete_session(&token_hash).await })
    }
    fn list_sessions(&self) -> FfiFuture<RResult<RVec<Session>, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.list_sessions().await?.into()) })
    }
    fn get_usage_cache(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.get_usage_cache().await.map(ropt) })
    }
    fn set_usage_cache(&self, json: RString) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_usage_cache(json.into()).await })
    }
    fn list_plugin_states(&self) -> FfiFuture<RResult<RVec<PluginState>, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.list_plugin_states().await?.into()) })
    }
    fn set_plugin_state(&self, state: PluginState) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_plugin_state(state).await })
    }
    fn get_meta(&self) -> FfiFuture<RResult<ROption<RString>, PluginError>> {
        let b = self.0.clone();
        guard(async move { b.get_meta().await.map(ropt) })
    }
    fn set_meta(&self, json: RString) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.set_meta(json.into()).await })
    }
    fn subscribe(&self) -> FfiFuture<RResult<ChangeStreamObject, PluginError>> {
        let b = self.0.clone();
        guard(async move {
            let sub = b.subscribe().await?;
            Ok(FfiChangeStream_TO::from_value(
                ChangeStreamExport(sub),
                abi_stable::sabi_trait::TD_Opaque,
            ))
        })
    }
    fn flush(&self) -> FfiFuture<RResult<(), PluginError>> {
        let b = self.0.clone();
        guard(async move { b.flush().await })
    }
    fn extension(
        &self,
        name: RString,
        payload: RString,
    ) -> FfiFuture<RResult<RString, PluginError>> {
        let b = self.0.clone();
        guard(async move { Ok(b.extension(&name, payload.into()).await?.into()) })
    }
}

/// Wraps a backend value into the object the host receives.
pub fn into_object<T: StorageBackend>(backend: T) -> StorageObject {
    FfiStorage_TO::from_ptr(
        RArc::new(StorageExport(Arc::new(backend))),
        abi_stable::sabi_trait::TD_Opaque,
    )
}
