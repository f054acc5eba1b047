//! What the export macros expand to: the root module's three functions, each safe to call
//! from the host whatever the plugin does (a panic in the synchronous part of an `extern "C"`
//! function would otherwise end the whole host process with exit code 1).

use std::future::Future;

use abi_stable::std_types::{RResult, RString};
use async_ffi::FfiFuture;

use crate::runtime::{self, guard};
use crate::{HostContext, PluginError, PluginInfo};

#[doc(hidden)]
pub fn info(name: &str, version: &str, description: &str) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: version.into(),
        description: description.into(),
    }
}

#[doc(hidden)]
pub fn init(name: &str, ctx: HostContext) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime::set_name(name);
        crate::log::install(ctx.log_sink);
    }));
}

/// Parses the config, sizes the runtime (`"runtime_threads"`, default 1), then runs the
/// author's constructor inside the guarded future.
#[doc(hidden)]
pub fn create<B, O, C, Fut>(
    name: &str,
    config: RString,
    ctor: C,
    wrap: fn(B) -> O,
) -> FfiFuture<RResult<O, PluginError>>
where
    C: FnOnce(serde_json::Value) -> Fut,
    Fut: Future<Output = Result<B, PluginError>> + Send + 'static,
    B: 'static,
    O: 'static,
{
    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cfg: serde_json::Value = if config.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&config)
                .map_err(|e| PluginError::invalid_input(format!("plugin config: {e}")))?
        };
        let threads = cfg
            .get("runtime_threads")
            .and_then(serde_json::Value::as_u64)
            .map_or(runtime::DEFAULT_THREADS, |n| n as usize);
        runtime::set_name(name);
        runtime::set_threads(threads);
        let _enter = runtime::handle().enter();
        Ok(ctor(cfg))
    }))
    .unwrap_or_else(|p| Err(runtime::panic_error(p)));
    match prepared {
        Ok(fut) => guard(async move { fut.await.map(wrap) }),
        Err(e) => guard(async move { Err(e) }),
    }
}

/// Exports a [`StorageBackend`](crate::storage::StorageBackend) as a storage-backend plugin.
///
/// ```text
/// aiclient_sdk::export_storage_backend! {
///     name: "memory",
///     description: "In-process storage; state ends with the process",
///     create: |config: serde_json::Value| async move { Ok(MemoryBackend::new(&config)) },
/// }
/// ```
///
/// The crate must be a `cdylib` and depend on `abi_stable` (the root-module attribute names
/// it). `create` receives the backend's JSON config and runs on the plugin's runtime.
#[macro_export]
macro_rules! export_storage_backend {
    (name: $name:expr, description: $desc:expr, create: $create:expr $(,)?) => {
        #[::abi_stable::export_root_module]
        pub fn __aiclient_storage_root_module() -> $crate::storage::StorageModRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::storage::StorageMod {
                info: __aiclient_info,
                init: __aiclient_init,
                create: __aiclient_create,
            }
            .leak_into_prefix()
        }
        extern "C" fn __aiclient_info() -> $crate::PluginInfo {
            $crate::export::info($name, env!("CARGO_PKG_VERSION"), $desc)
        }
        extern "C" fn __aiclient_init(ctx: $crate::HostContext) {
            $crate::export::init($name, ctx)
        }
        extern "C" fn __aiclient_create(
            config: ::abi_stable::std_types::RString,
        ) -> $crate::FfiFuture<
            ::abi_stable::std_types::RResult<$crate::storage::StorageObject, $crate::PluginError>,
        > {
            $crate::export::create($name, config, $create, $crate::storage::into_object)
        }
    };
}

/// Exports a [`Provider`](crate::provider::Provider) as a provider plugin; the same shape as
/// [`export_storage_backend!`].
#[macro_export]
macro_rules! export_provider {
    (name: $name:expr, description: $desc:expr, create: $create:expr $(,)?) => {
        #[::abi_stable::export_root_module]
        pub fn __aiclient_provider_root_module() -> $crate::provider::ProviderModRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::provider::ProviderMod {
                info: __aiclient_info,
                init: __aiclient_init,
                create: __aiclient_create,
            }
            .leak_into_prefix()
        }
        extern "C" fn __aiclient_info() -> $crate::PluginInfo {
            $crate::export::info($name, env!("CARGO_PKG_VERSION"), $desc)
        }
        extern "C" fn __aiclient_init(ctx: $crate::HostContext) {
            $crate::export::init($name, ctx)
        }
        extern "C" fn __aiclient_create(
            config: ::abi_stable::std_types::RString,
        ) -> $crate::FfiFuture<
            ::abi_stable::std_types::RResult<$crate::provider::ProviderObject, $crate::PluginError>,
        > {
            $crate::export::create($name, config, $create, $crate::provider::into_object)
        }
    };
}
