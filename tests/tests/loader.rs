//! The loader, through real libraries: every failure is one line naming the file and the cause,
//! and a panicking plugin returns errors while the host keeps going.

use std::path::{Path, PathBuf};

use aiclient::plugins::{create_storage, loader};
use aiclient_sdk::ErrorCode;
use aiclient_tests::artifacts;
use serde_json::json;

fn one_line(e: &loader::LoadError, path: &Path) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "a load error is one line: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    msg
}

#[tokio::test]
async fn loads_the_memory_backend_with_its_info_and_sdk_version() {
    let path = artifacts::get().lib("aiclient_backend_memory");
    let lib = loader::load_storage(path).expect("load");
    assert_eq!(lib.info.name.as_str(), "memory");
    assert_eq!(lib.inspected.kind, loader::Kind::Storage);
    assert_eq!(lib.inspected.sdk_version, aiclient_sdk::SDK_VERSION);
    // Loading another backend after it returns that one, not a cached first module
    // (RootModule::load_from_file's trap).
    let other = loader::load_storage(artifacts::get().lib("aiclient_fixture_panic_plugin"))
        .expect("load fixture");
    assert_eq!(other.info.name.as_str(), "panic-fixture");
    let s = create_storage(&other, &json!({})).await.expect("create");
    assert_eq!(s.name(), "panic-fixture");
}

#[test]
fn a_missing_file_is_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("libnothing.so");
    let e = loader::load_storage(&path)
        .err()
        .expect("missing file fails");
    assert!(one_line(&e, &path).contains("file not found"));
    let e =
        loader::resolve(dir.path(), "nothing", loader::Kind::Storage).expect_err("resolve fails");
    let msg = e.to_string();
    assert!(
        msg.contains("libnothing.so") && msg.contains("libaiclient_backend_nothing.so"),
        "lists what it tried: {msg}"
    );
}

#[test]
fn a_file_that_is_not_a_library_is_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, b"not an ELF file").expect("write");
    let e = loader::load_storage(&path).err().expect("fails");
    assert!(one_line(&e, &path).contains("not a loadable library"));
}

/// A real shared library that is not a plugin: the C library this test process runs on.
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .map(PathBuf::from)
        .expect("libc is mapped")
}

#[test]
fn a_library_without_a_root_module_is_not_a_plugin() {
    let path = libc_path();
    let e = loader::load_storage(&path).err().expect("fails");
    assert!(one_line(&e, &path).contains("not an aiclient plugin"));
}

#[test]
fn the_wrong_kind_is_named() {
    let path = artifacts::get().lib("aiclient_backend_memory");
    let e = loader::load_provider(path)
        .err()
        .expect("a backend is not a provider");
    let msg = one_line(&e, path);
    assert!(
        msg.contains("wrong plugin kind: it is a storage backend, expected a provider plugin"),
        "{msg}"
    );
}

#[test]
fn a_plugin_built_against_another_sdk_version_is_refused_in_one_line() {
    let path = artifacts::get().lib("aiclient_fixture_old_sdk_plugin");
    let e = loader::load_storage(path).err().expect("refused");
    let msg = one_line(&e, path);
    assert!(
        msg.contains("incompatible SDK version: built against aiclient-sdk 0.0.7"),
        "{msg}"
    );
    assert!(
        msg.contains(aiclient_sdk::SDK_VERSION),
        "says what to rebuild against: {msg}"
    );
}

#[test]
fn an_abi_layout_mismatch_is_summarized_to_one_line() {
    let path = artifacts::get().lib("aiclient_fixture_bad_layout_plugin");
    let e = loader::load_storage(path).err().expect("refused");
    let msg = one_line(&e, path);
    assert!(
        msg.contains("incompatible plugin interface: mismatched package / Expected: aiclient-sdk"),
        "{msg}"
    );
    assert!(
        msg.len() < 600,
        "abi_stable's report is summarised, not dumped ({} chars): {msg}",
        msg.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_a_plugin_come_back_as_errors_and_the_host_keeps_going() {
    let lib =
        loader::load_storage(artifacts::get().lib("aiclient_fixture_panic_plugin")).expect("load");

    let e = create_storage(&lib, &json!({"panic_in_create": true}))
        .await
        .err()
        .expect("create panics");
    assert_eq!(e.code, ErrorCode::PANIC);
    assert!(
        e.message.contains("create panics on purpose"),
        "keeps the message: {e}"
    );

    let s = create_storage(
        &lib,
        &json!({"panic_get_config": true, "panic_set_config": true}),
    )
    .await
    .expect("create");
    let e = s.status().await.expect_err("first status panics");
    assert_eq!(e.code, ErrorCode::PANIC);
    assert!(e.message.contains("status call 0 panics on purpose"), "{e}");
    let st = s
        .status()
        .await
        .expect("second status works: the plugin is still usable");
    assert_eq!(st["backend"], "panic-fixture");

    let e = s
        .get_config()
        .await
        .expect_err("panics before its future exists");
    assert_eq!(e.code, ErrorCode::PANIC);
    assert!(e.message.contains("before returning its future"), "{e}");

    let e = s.set_config("{}").await.expect_err("panics after an await");
    assert_eq!(e.code, ErrorCode::PANIC);
    assert!(e.message.contains("after an await"), "{e}");

    // Many concurrent panicking calls: every one is an error, none takes anything down.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.set_config("{}").await.map_err(|e| e.code)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), Err(ErrorCode::PANIC));
    }
    let answers = [s.status().await.is_ok(), s.status().await.is_ok()];
    assert_eq!(
        answers.iter().filter(|ok| **ok).count(),
        1,
        "status keeps alternating: the plugin still answers"
    );
}
