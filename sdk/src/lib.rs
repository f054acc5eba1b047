//! # aiclient-sdk
//!
//! The interface that aiclient's storage backends and provider plugins are built against.
//! Plugins are `cdylib`s that the `aiclient` host loads at run time with
//! [`abi_stable`](https://docs.rs/abi_stable); this crate defines everything that crosses that
//! boundary and does the boundary's chores so a plugin author writes ordinary async Rust.
//!
//! ## The design choice: ordinary traits in, FFI-safe objects out
//!
//! A plugin author implements [`storage::StorageBackend`] or [`provider::Provider`] — async
//! methods returning `Result<_, PluginError>` — and invokes [`export_storage_backend!`] or
//! [`export_provider!`]. The macro generates the abi_stable root module and wraps every call so
//! that:
//! - **panics never cross the boundary**: a panic anywhere in a plugin call (before or while
//!   its future runs, or when it is dropped) comes back as [`PluginError`] with code
//!   [`ErrorCode::PANIC`] and the host keeps serving. Uncaught, a panic in an `extern "C"`
//!   function ends the host process;
//! - **the plugin's own tokio runtime is used**: each plugin library owns a runtime, and every
//!   future is polled by the host inside that runtime's context ([`runtime`]), so timers and
//!   sockets work at the speed of direct calls;
//! - **logs reach the host**: `tracing` events inside the plugin are forwarded to the host's
//!   subscriber and tagged with the plugin's name ([`log`]).
//!
//! Configuration crosses as a JSON string and unforeseen operations go through an
//! `extension(name, json)` method on every object, so neither ever changes the ABI.
//!
//! ## Writing a plugin
//!
//! ```toml
//! [package]
//! name = "my-backend"
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # rlib: so its own unit tests can link it
//! [dependencies]
//! aiclient-sdk = "0.1"
//! abi_stable = "0.11.3"             # the root-module attribute refers to it by name
//! serde_json = "1"
//! ```
//!
//! ```text
//! #![allow(non_local_definitions)] // abi_stable's macros trip this rustc lint
//! use aiclient_sdk::storage::StorageBackend;
//!
//! struct MyBackend { /* … */ }
//! impl StorageBackend for MyBackend { /* async fn … */ }
//!
//! aiclient_sdk::export_storage_backend! {
//!     name: "my-backend",
//!     description: "What it stores where",
//!     create: |config: serde_json::Value| async move { Ok(MyBackend::new(&config)?) },
//! }
//! ```
//!
//! `cargo build --release` produces `target/release/libmy_backend.so`. Copy it into the host's
//! plugin directory (next to the `aiclient` executable by default) and name it in
//! `aiclient.toml`, by name or by path. `aiclient plugins list` shows whether it loads.
//!
//! Rules inside a plugin: never `block_on` (it would silently block a host worker); spawn
//! background work (connection drivers, producers) on the runtime from [`runtime::handle`];
//! keep methods cancel-safe — the host drops a future to cancel it.
//!
//! ## Versioning
//!
//! The crate version *is* the interface version, checked by the host before anything in the
//! library runs:
//! - a plugin loads only if its SDK has the same `0.MINOR` as the host's (abi_stable's layout
//!   check would refuse it anyway — type layouts embed the package version — but with a
//!   5,900-line dump instead of one line);
//! - patch releases only append methods after the `#[sabi(last_prefix_field)]` marker. A host
//!   can load plugins built against the same or a newer patch; a host newer than a plugin
//!   refuses it if it added a method the plugin lacks, so rebuild plugins with the host;
//! - a deliberate break bumps the minor version.
//!
//! Libraries are never unloaded; changing a plugin means restarting the host.

#![allow(non_local_definitions)]

pub mod account;
pub mod error;
#[doc(hidden)]
pub mod export;
pub mod log;
pub mod provider;
pub mod runtime;
pub mod sse;
pub mod storage;

use abi_stable::{StableAbi, std_types::RString};

pub use abi_stable;
pub use async_ffi::{BorrowingFfiFuture, FfiFuture};
pub use error::{ErrorCode, PluginError};
pub use log::HostContext;

/// `abi_stable` base name of the storage-backend root module; tells the two plugin kinds apart.
pub const STORAGE_BASE_NAME: &str = "aiclient_storage";
/// `abi_stable` base name of the provider-plugin root module.
pub const PROVIDER_BASE_NAME: &str = "aiclient_provider";
/// This SDK's version: the interface version plugins are checked against.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A plugin's self-description.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
}
