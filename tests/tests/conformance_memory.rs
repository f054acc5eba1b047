//! The storage conformance suite on the memory backend, loaded as a real dylib.

use aiclient::plugins::{create_storage, loader};
use aiclient_tests::conformance::Backend;
use serde_json::json;

async fn fresh() -> Backend {
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_memory"))
        .expect("load the memory backend");
    let storage = create_storage(&lib, &json!({"instance_id": "test"}))
        .await
        .expect("create");
    Backend {
        storage,
        guards: Vec::new(),
    }
}

aiclient_tests::conformance_suite!(fresh);
