//! The provider-plugin interface: a plugin that serves one or more provider types (for example
//! `claude-kiro-oauth`) by talking to their upstream.
//!
//! This first version carries what the host needs to load, list and describe a provider plugin;
//! request execution is appended by the next SDK minor version (the gateway's), which every
//! in-tree plugin is rebuilt against.

use std::future::Future;
use std::sync::Arc;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RResult, RString},
};
use async_ffi::FfiFuture;

use crate::runtime::guard;
use crate::{HostContext, PluginError, PluginInfo};

/// The FFI-safe provider interface the host calls.
#[sabi_trait]
pub trait FfiProvider: Send + Sync {
    /// JSON: `{"providerTypes": [...], "protocol": "...", ...}`.
    fn describe(&self) -> RString;

    /// Escape hatch for operations newer than this interface.
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RString, payload: RString)
    -> FfiFuture<RResult<RString, PluginError>>;
}

pub type ProviderObject = FfiProvider_TO<'static, RArc<()>>;

/// The root module of a provider plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ProviderModRef)))]
#[sabi(missing_field(panic))]
pub struct ProviderMod {
    pub info: extern "C" fn() -> PluginInfo,
    pub init: extern "C" fn(HostContext),
    /// Add new fields below this one only.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(RString) -> FfiFuture<RResult<ProviderObject, PluginError>>,
}

impl RootModule for ProviderModRef {
    declare_root_module_statics! {ProviderModRef}
    const BASE_NAME: &'static str = crate::PROVIDER_BASE_NAME;
    const NAME: &'static str = "aiclient provider plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// What a provider plugin author implements.
pub trait Provider: Send + Sync + 'static {
    /// Which provider types this plugin serves and how; shown by `aiclient plugins list`.
    fn describe(&self) -> serde_json::Value;

    fn extension(
        &self,
        name: &str,
        _payload: String,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let err = PluginError::unsupported(format!("extension {name:?} is not supported"));
        async move { Err(err) }
    }
}

pub struct ProviderExport<T>(pub Arc<T>);

impl<T: Provider> FfiProvider for ProviderExport<T> {
    fn describe(&self) -> RString {
        crate::runtime::catch(|| Ok(self.0.describe().to_string()))
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
            .into()
    }
    fn extension(
        &self,
        name: RString,
        payload: RString,
    ) -> FfiFuture<RResult<RString, PluginError>> {
        let p = self.0.clone();
        guard(async move { Ok(p.extension(&name, payload.into()).await?.into()) })
    }
}

pub fn into_object<T: Provider>(provider: T) -> ProviderObject {
    FfiProvider_TO::from_ptr(
        RArc::new(ProviderExport(Arc::new(provider))),
        abi_stable::sabi_trait::TD_Opaque,
    )
}
