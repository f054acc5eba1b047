//! The storage conformance suite on the Redis backend, loaded as a real dylib. Each test gets
//! its own private redis-server (a free loopback port, never 6379; ~50 ms to start) kept alive
//! by the backend's guards, so tests run in parallel without sharing keys and no server
//! outlives the test process.

use aiclient::plugins::{create_storage, loader};
use aiclient_tests::conformance::Backend;
use aiclient_tests::redis_server::RedisServer;
use serde_json::json;

async fn fresh() -> Backend {
    let server = RedisServer::start();
    let lib = loader::load_storage(aiclient_tests::artifacts::get().lib("aiclient_backend_redis"))
        .expect("load the redis backend");
    let config = json!({"url": server.url(0), "key_prefix": "conformance:", "instance_id": "test"});
    let storage = create_storage(&lib, &config).await.expect("create");
    Backend {
        storage,
        guards: vec![Box::new(server)],
    }
}

aiclient_tests::conformance_suite!(fresh);
