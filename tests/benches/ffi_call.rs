//! What the plugin boundary costs: one memory-backend counter increment (`update_state` with a
//! usage delta) through the real dylib and the host's `Storage` handle, against the same
//! backend code linked in and called directly (no FFI, no RString conversion, no guard).
//!
//! Run: `cargo bench -p aiclient-tests --bench ffi_call`. Each sample awaits N sequential calls
//! inside one `block_on`, so the runtime's entry cost is not counted per call.

use std::time::{Duration, Instant};

use aiclient::plugins::{create_storage, loader};
use aiclient_backend_memory::MemoryBackend;
use aiclient_sdk::storage::{Account, AccountState, StateUpdate, StorageBackend};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn account() -> Account {
    Account {
        provider_type: "openai-custom".into(),
        uuid: "bench".into(),
        config: r#"{"uuid":"bench"}"#.into(),
        state: AccountState::default(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let artifacts = aiclient_tests::artifacts::build(&["aiclient-backend-memory"]);
    let lib = loader::load_storage(artifacts.lib("aiclient_backend_memory"))
        .expect("load memory backend");
    let ffi = rt.block_on(async {
        let s = create_storage(&lib, &json!({})).await.expect("create");
        s.add_account(account()).await.expect("add");
        s
    });
    let direct = MemoryBackend::new(&json!({}));
    rt.block_on(direct.add_account(account())).expect("add");

    let mut g = c.benchmark_group("memory_increment");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("through_ffi", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    ffi.update_state("openai-custom", "bench", StateUpdate::usage(1, 1))
                        .await
                        .expect("incr");
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("direct_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    direct
                        .update_state("openai-custom", "bench", StateUpdate::usage(1, 1))
                        .await
                        .expect("incr");
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
