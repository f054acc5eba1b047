//! The storage conformance suite on the file backend, loaded as a real dylib; every case gets
//! a fresh, empty config dir in its own temp dir.

use aiclient::plugins::{create_storage, loader};
use aiclient_tests::conformance::Backend;
use serde_json::json;

async fn fresh() -> Backend {
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_file"))
        .expect("load the file backend");
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("configs");
    let storage = create_storage(
        &lib,
        &json!({"config_dir": config_dir, "instance_id": "test"}),
    )
    .await
    .expect("create the file backend on an empty dir");
    // `guards` drop after `storage`, so the backend's last write pass still finds its dir.
    Backend {
        storage,
        guards: vec![Box::new(dir)],
    }
}

aiclient_tests::conformance_suite!(fresh);
