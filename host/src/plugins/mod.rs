//! Plugin libraries: [`loader`] finds and checks them, [`logsink`] carries their logs, and
//! this module turns a loaded library into a running backend or provider.

pub mod loader;
pub mod logsink;

use std::path::Path;

use aiclient_sdk::PluginError;
use serde_json::Value;

pub use loader::{Inspected, Kind, LoadError, LoadedProvider, LoadedStorage};

use crate::storage::Storage;

/// Creates a backend instance from a loaded library.
pub async fn create_storage(lib: &LoadedStorage, config: &Value) -> Result<Storage, PluginError> {
    let obj = (lib.module.create())(config.to_string().into())
        .await
        .into_result()?;
    Ok(Storage::new(obj, lib.info.name.as_str()))
}

/// Resolves, loads and creates the backend `name_or_path` in one step.
pub async fn open_storage(
    dir: &Path,
    name_or_path: &str,
    config: &Value,
) -> Result<(LoadedStorage, Storage), StartError> {
    let path = loader::resolve(dir, name_or_path, Kind::Storage)?;
    let lib = loader::load_storage(&path)?;
    let storage = create_storage(&lib, config)
        .await
        .map_err(|e| StartError::Create {
            name: lib.info.name.to_string(),
            error: e,
        })?;
    Ok((lib, storage))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("storage backend {name} failed to start: {error}")]
    Create { name: String, error: PluginError },
}
