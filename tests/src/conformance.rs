//! The storage conformance suite: one set of behaviours every backend (memory, file, redis,
//! and any third-party backend) must show, driven through the real plugin library and the
//! host's [`Storage`] handle.
//!
//! A backend's test file provides an async factory returning a fresh, empty [`Backend`] and
//! invokes [`conformance_suite!`](crate::conformance_suite):
//!
//! ```text
//! async fn fresh() -> aiclient_tests::conformance::Backend { ... }
//! aiclient_tests::conformance_suite!(fresh);
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use abi_stable::std_types::{ROption, RString};
use aiclient::storage::Storage;
use aiclient_sdk::ErrorCode;
use aiclient_sdk::account::now_ms;
use aiclient_sdk::storage::{Account, AccountState, ChangeKind, PluginState, Session, StateUpdate};
use serde_json::{Value, json};

/// A backend under test plus whatever must live as long as it (temp dirs, servers).
pub struct Backend {
    pub storage: Storage,
    pub guards: Vec<Box<dyn Any + Send + Sync>>,
}

impl Deref for Backend {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.storage
    }
}

/// Generates one `#[tokio::test]` per conformance case, each on a fresh backend from `$factory`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@cases $factory;
            config_round_trip, accounts_crud, account_json_is_kept_exactly, state_updates,
            concurrent_increments_one_account, concurrent_increments_many_accounts,
            churn_loses_nothing_and_resurrects_nothing, tokens_and_cas, concurrent_cas_has_one_winner,
            locks, password_hash, sessions_expire, documents_and_plugin_states, change_feed,
            bad_input_is_an_error);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let backend = $factory().await;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
}

fn acct(t: &str, uuid: &str, config: Value) -> Account {
    Account {
        provider_type: t.into(),
        uuid: uuid.into(),
        config: config.to_string().into(),
        state: AccountState::default(),
    }
}

fn cfg(a: &Account) -> Value {
    serde_json::from_str(&a.config).expect("account config is JSON")
}

async fn add(s: &Storage, t: &str, uuid: &str) {
    s.add_account(acct(t, uuid, json!({ "uuid": uuid })))
        .await
        .unwrap_or_else(|e| panic!("add {t}/{uuid}: {e}"));
}

pub async fn config_round_trip(s: &Storage) {
    assert_eq!(
        s.get_config().await.expect("get config"),
        None,
        "a fresh backend has no config"
    );
    let c = json!({"REQUIRED_API_KEY": "k", "MODEL_PROVIDER": ["a", "b"], "empty": [], "n": 1234567890123456i64});
    s.set_config(&c.to_string()).await.expect("set config");
    let got: Value =
        serde_json::from_str(&s.get_config().await.expect("get").expect("present")).expect("JSON");
    assert_eq!(got, c);
    let c2 = json!({"REQUIRED_API_KEY": "k2"});
    s.set_config(&c2.to_string()).await.expect("replace config");
    let got: Value =
        serde_json::from_str(&s.get_config().await.expect("get").expect("present")).expect("JSON");
    assert_eq!(got, c2, "set_config replaces the whole document");
}

pub async fn accounts_crud(s: &Storage) {
    assert!(s.list_accounts(None).await.expect("list").is_empty());
    add(s, "claude-kiro-oauth", "k1").await;
    add(s, "claude-kiro-oauth", "k2").await;
    add(s, "openai-custom", "o1").await;

    let err = s
        .add_account(acct("claude-kiro-oauth", "k1", json!({"uuid": "k1"})))
        .await
        .expect_err("duplicate uuid");
    assert_eq!(err.code, ErrorCode::CONFLICT, "{err}");

    let mut types = s.list_provider_types().await.expect("types");
    types.sort();
    assert_eq!(types, ["claude-kiro-oauth", "openai-custom"]);
    let kiro: Vec<String> = s
        .list_accounts(Some("claude-kiro-oauth"))
        .await
        .expect("list")
        .iter()
        .map(|a| a.uuid.to_string())
        .collect();
    assert_eq!(kiro, ["k1", "k2"], "accounts list in insertion order");
    assert_eq!(s.list_accounts(None).await.expect("list all").len(), 3);
    assert!(
        s.list_accounts(Some("nope"))
            .await
            .expect("list unknown type")
            .is_empty()
    );

    let got = s
        .get_account("claude-kiro-oauth", "k1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.state, AccountState::default());

    let updated = s
        .update_account(
            "claude-kiro-oauth",
            "k1",
            &json!({"customName": "main", "uuid": "k1"}),
        )
        .await
        .expect("update");
    assert_eq!(cfg(&updated)["customName"], "main");
    let updated = s
        .update_account("claude-kiro-oauth", "k1", &json!({"customName": null}))
        .await
        .expect("remove key");
    assert!(
        cfg(&updated).get("customName").is_none(),
        "null in a merge patch removes the key"
    );

    let err = s
        .update_account("claude-kiro-oauth", "zz", &json!({"a": 1}))
        .await
        .expect_err("missing");
    assert_eq!(err.code, ErrorCode::NOT_FOUND);
    assert!(
        s.get_account("claude-kiro-oauth", "zz")
            .await
            .expect("get")
            .is_none(),
        "update never creates"
    );

    s.set_token("claude-kiro-oauth", "k2", r#"{"refreshToken":"r"}"#)
        .await
        .expect("token");
    assert!(
        s.delete_account("claude-kiro-oauth", "k2")
            .await
            .expect("delete")
    );
    assert!(
        s.get_account("claude-kiro-oauth", "k2")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        s.get_token("claude-kiro-oauth", "k2")
            .await
            .expect("get token"),
        None,
        "deleting an account deletes its token"
    );
    assert!(
        !s.delete_account("claude-kiro-oauth", "k2")
            .await
            .expect("delete again"),
        "second delete reports nothing deleted"
    );
}

/// What the Node fork broke: `[]` became `{}`, 16-digit integers were rounded, unknown fields
/// were dropped.
pub async fn account_json_is_kept_exactly(s: &Storage) {
    let config = json!({
        "uuid": "x1",
        "customName": null,
        "notSupportedModels": [],
        "nested": {"list": [], "obj": {}},
        "big": 1234567890123456789i64,
        "sixteen": 9007199254740993u64,
        "float": 0.1,
        "unicode": "帐号 ✓",
        "zzUnknownField": {"keep": true},
    });
    s.add_account(acct("gemini-cli-oauth", "x1", config.clone()))
        .await
        .expect("add");
    let got = s
        .get_account("gemini-cli-oauth", "x1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(cfg(&got), config);
    let keys: Vec<String> = cfg(&got)
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    let want: Vec<String> = config
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, want, "field order is kept");
    s.update_state("gemini-cli-oauth", "x1", StateUpdate::usage(5, now_ms()))
        .await
        .expect("state");
    let got = s
        .get_account("gemini-cli-oauth", "x1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        cfg(&got),
        config,
        "a state update never rewrites the config"
    );
    let patched = s
        .update_account("gemini-cli-oauth", "x1", &json!({"extra": []}))
        .await
        .expect("patch");
    assert_eq!(cfg(&patched)["notSupportedModels"], json!([]));
    assert_eq!(cfg(&patched)["extra"], json!([]));
    assert_eq!(cfg(&patched)["sixteen"], json!(9007199254740993u64));
    assert_eq!(
        patched.state.usage_count, 5,
        "a config patch never touches state"
    );
}

pub async fn state_updates(s: &Storage) {
    let (t, u) = ("openai-custom", "s1");
    add(s, t, u).await;
    let t0 = 1_700_000_000_000i64;
    let st = s
        .update_state(t, u, StateUpdate::usage(3, t0))
        .await
        .expect("usage");
    assert_eq!((st.usage_count, st.last_used), (3, ROption::RSome(t0)));
    let st = s
        .update_state(t, u, StateUpdate::usage(2, t0 - 5000))
        .await
        .expect("late usage");
    assert_eq!(
        (st.usage_count, st.last_used),
        (5, ROption::RSome(t0)),
        "a late flush never moves lastUsed back"
    );

    // Errors: three within the window make the account unhealthy.
    let err = |at| StateUpdate {
        error_window_ms: 10_000,
        unhealthy_at: 3,
        ..StateUpdate::error(1, at, "upstream 500")
    };
    let st = s.update_state(t, u, err(t0 + 1000)).await.expect("e1");
    assert_eq!((st.error_count, st.healthy), (1, true));
    assert_eq!(
        st.last_error_message,
        ROption::RSome(RString::from("upstream 500"))
    );
    let st = s.update_state(t, u, err(t0 + 2000)).await.expect("e2");
    assert_eq!(st.error_count, 2);
    // 30 s later: the window restarts the count.
    let st = s
        .update_state(t, u, err(t0 + 32_000))
        .await
        .expect("e3 after window");
    assert_eq!(
        (st.error_count, st.healthy),
        (1, true),
        "an error after the window restarts the count"
    );
    s.update_state(t, u, err(t0 + 33_000)).await.expect("e4");
    let st = s.update_state(t, u, err(t0 + 34_000)).await.expect("e5");
    assert_eq!(
        (st.error_count, st.healthy),
        (3, false),
        "the threshold marks unhealthy"
    );
    assert_eq!(st.last_error_time, ROption::RSome(t0 + 34_000));

    let recover = StateUpdate {
        scheduled_recovery_time: ROption::RSome(t0 + 99_000),
        ..Default::default()
    };
    let st = s.update_state(t, u, recover).await.expect("schedule");
    assert_eq!(st.scheduled_recovery_time, ROption::RSome(t0 + 99_000));

    let st = s
        .update_state(t, u, StateUpdate::mark_healthy(t0 + 40_000))
        .await
        .expect("healthy");
    assert!(st.healthy);
    assert_eq!((st.error_count, st.refresh_count), (0, 0));
    assert_eq!(st.last_error_time, ROption::RNone);
    assert_eq!(st.last_error_message, ROption::RNone);
    assert_eq!(
        st.scheduled_recovery_time,
        ROption::RNone,
        "healthy clears the recovery time"
    );
    assert_eq!(st.usage_count, 5, "marking healthy keeps usage");

    let st = s
        .update_state(
            t,
            u,
            StateUpdate::mark_unhealthy(t0 + 41_000, "401 from upstream"),
        )
        .await
        .expect("unhealthy");
    assert!(!st.healthy);
    assert_eq!(
        st.last_error_message,
        ROption::RSome(RString::from("401 from upstream"))
    );

    let st = s
        .update_state(t, u, StateUpdate::set_disabled(true))
        .await
        .expect("disable");
    assert!(st.disabled);
    let flags = StateUpdate {
        needs_refresh: ROption::RSome(true),
        refresh_delta: 2,
        ..Default::default()
    };
    let st = s.update_state(t, u, flags).await.expect("flags");
    assert!(st.needs_refresh);
    assert_eq!(st.refresh_count, 2);
    let check = StateUpdate {
        at: t0 + 50_000,
        health_check_model: ROption::RSome("gpt-4o-mini".into()),
        ..Default::default()
    };
    let st = s.update_state(t, u, check).await.expect("health check");
    assert_eq!(st.last_health_check_time, ROption::RSome(t0 + 50_000));
    assert_eq!(
        st.last_health_check_model,
        ROption::RSome(RString::from("gpt-4o-mini"))
    );
    let touch = StateUpdate {
        at: t0 + 60_000,
        touch: true,
        ..Default::default()
    };
    assert_eq!(
        s.update_state(t, u, touch).await.expect("touch").last_used,
        ROption::RSome(t0 + 60_000)
    );
    let reset = StateUpdate {
        reset_counters: true,
        ..Default::default()
    };
    let st = s.update_state(t, u, reset).await.expect("reset");
    assert_eq!(
        (st.usage_count, st.error_count, st.refresh_count),
        (0, 0, 0)
    );

    // The state read back equals the state returned.
    assert_eq!(
        s.get_account(t, u)
            .await
            .expect("get")
            .expect("exists")
            .state,
        st
    );

    let e = s
        .update_state(t, "missing", StateUpdate::usage(1, t0))
        .await
        .expect_err("missing account");
    assert_eq!(e.code, ErrorCode::NOT_FOUND);
    assert!(
        s.get_account(t, "missing").await.expect("get").is_none(),
        "a state update never creates an account"
    );
}

/// 64 tasks × 1,000 increments on one account → exactly 64,000.
pub async fn concurrent_increments_one_account(s: &Storage) {
    let (t, u) = ("claude-custom", "hot");
    add(s, t, u).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                s.update_state(t, u, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let st = s
        .get_account(t, u)
        .await
        .expect("get")
        .expect("exists")
        .state;
    assert_eq!(st.usage_count, 64_000);
}

/// 64 tasks × 1,000 increments spread over 64 accounts → every account's exact total.
pub async fn concurrent_increments_many_accounts(s: &Storage) {
    let t = "openai-qwen-oauth";
    for i in 0..64 {
        add(s, t, &format!("acct-{i}")).await;
    }
    let mut tasks = Vec::new();
    for task in 0..64usize {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..1000usize {
                let target = (task * 7 + j) % 64;
                let upd = if j % 10 == 0 {
                    StateUpdate {
                        error_delta: 1,
                        ..StateUpdate::usage(1, now_ms())
                    }
                } else {
                    StateUpdate::usage(1, now_ms())
                };
                s.update_state(t, &format!("acct-{target}"), upd)
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let mut want_usage = [0i64; 64];
    let mut want_err = [0i64; 64];
    for task in 0..64usize {
        for j in 0..1000usize {
            let target = (task * 7 + j) % 64;
            want_usage[target] += 1;
            if j % 10 == 0 {
                want_err[target] += 1;
            }
        }
    }
    let all = s.list_accounts(Some(t)).await.expect("list");
    assert_eq!(all.len(), 64);
    let total: i64 = all.iter().map(|a| a.state.usage_count).sum();
    assert_eq!(total, 64_000);
    for a in all {
        let i: usize = a.uuid.trim_start_matches("acct-").parse().expect("index");
        assert_eq!(a.state.usage_count, want_usage[i], "usage of {}", a.uuid);
        assert_eq!(a.state.error_count, want_err[i], "errors of {}", a.uuid);
    }
}

/// Accounts are added, updated and deleted while counters run on them and on others: the
/// stable accounts end exact, deleted accounts stay deleted, and every surviving account's
/// count equals the increments that succeeded on it. (Transient uuids are never reused, so
/// each success is attributable.)
pub async fn churn_loses_nothing_and_resurrects_nothing(s: &Storage) {
    let t = "openai-iflow";
    for i in 0..8 {
        add(s, t, &format!("stable-{i}")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let round = Arc::new(AtomicI64::new(0));
    let ok_counts: Arc<std::sync::Mutex<HashMap<String, i64>>> = Default::default();
    let stable_ok = Arc::new(AtomicI64::new(0));
    let mut workers = Vec::new();
    for w in 0..16i64 {
        let (s, stop, round, ok_counts, stable_ok) = (
            s.clone(),
            stop.clone(),
            round.clone(),
            ok_counts.clone(),
            stable_ok.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let stable = format!("stable-{}", (w + n) % 8);
                s.update_state(t, &stable, StateUpdate::usage(1, now_ms()))
                    .await
                    .expect("stable increment");
                stable_ok.fetch_add(1, Ordering::Relaxed);
                // Hit the current round's accounts and the previous round's (being deleted).
                let r = round.load(Ordering::Relaxed) - (n % 2);
                let transient = format!("tmp-{r}-{}", (w * 13 + n) % 20);
                match s
                    .update_state(t, &transient, StateUpdate::usage(1, now_ms()))
                    .await
                {
                    Ok(_) => {
                        *ok_counts
                            .lock()
                            .expect("lock")
                            .entry(transient)
                            .or_default() += 1
                    }
                    Err(e) => assert_eq!(
                        e.code,
                        ErrorCode::NOT_FOUND,
                        "only 'not found' may fail: {e}"
                    ),
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut deleted = Vec::new();
    let mut alive = Vec::new();
    for r in 0..6i64 {
        for i in 0..20 {
            let u = format!("tmp-{r}-{i}");
            s.add_account(acct(t, &u, json!({"uuid": u, "round": r})))
                .await
                .expect("add transient");
            alive.push(u);
        }
        round.store(r, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(15)).await;
        // Patch the previous round's accounts, then delete them.
        let prev: Vec<String> = alive
            .iter()
            .filter(|u| u.starts_with(&format!("tmp-{}-", r - 1)))
            .cloned()
            .collect();
        for u in &prev {
            s.update_account(t, u, &json!({"patched": true}))
                .await
                .expect("patch live account");
            assert!(s.delete_account(t, u).await.expect("delete"), "{u} existed");
        }
        alive.retain(|u| !prev.contains(u));
        deleted.extend(prev);
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let all = s.list_accounts(Some(t)).await.expect("list");
    let stable_total: i64 = all
        .iter()
        .filter(|a| a.uuid.starts_with("stable-"))
        .map(|a| a.state.usage_count)
        .sum();
    assert_eq!(
        stable_total,
        stable_ok.load(Ordering::Relaxed),
        "no stable increment lost"
    );
    for u in &deleted {
        assert!(
            s.get_account(t, u).await.expect("get").is_none(),
            "{u} was deleted and must stay deleted"
        );
        assert!(
            !all.iter().any(|a| a.uuid.as_str() == u),
            "{u} resurrected in the list"
        );
    }
    let counts = ok_counts.lock().expect("lock").clone();
    assert!(
        counts.keys().any(|u| alive.contains(u)),
        "the workers reached live transient accounts"
    );
    for u in &alive {
        let a = all
            .iter()
            .find(|a| a.uuid.as_str() == u)
            .unwrap_or_else(|| panic!("{u} is alive"));
        assert_eq!(
            a.state.usage_count,
            counts.get(u).copied().unwrap_or(0),
            "exact count on {u}"
        );
    }
    assert_eq!(all.len(), 8 + alive.len());
}

pub async fn tokens_and_cas(s: &Storage) {
    let (t, u) = ("gemini-cli-oauth", "g1");
    add(s, t, u).await;
    assert_eq!(s.get_token(t, u).await.expect("get"), None);
    let v1 = json!({"access_token": "a1", "refresh_token": "r1", "expiry_date": 1700000000000i64, "scope": "x"});
    s.set_token(t, u, &v1.to_string()).await.expect("set");
    let got: Value = serde_json::from_str(&s.get_token(t, u).await.expect("get").expect("present"))
        .expect("JSON");
    assert_eq!(got, v1);

    let v2 = json!({"access_token": "a2", "refresh_token": "r2", "expiry_date": 1700003600000i64, "scope": "x"});
    let cas = s.cas_token(t, u, "r1", &v2.to_string()).await.expect("cas");
    assert!(cas.swapped, "expected refresh token matches");
    // A stale refresher (still holding r1) must not overwrite r2.
    let v_stale = json!({"access_token": "stale", "refresh_token": "r-stale"});
    let cas = s
        .cas_token(t, u, "r1", &v_stale.to_string())
        .await
        .expect("stale cas");
    assert!(!cas.swapped, "a stale CAS is refused");
    let current: Value =
        serde_json::from_str(cas.current.as_ref().expect("current returned").as_str())
            .expect("JSON");
    assert_eq!(current, v2, "the refused CAS returns the newer token");
    let got: Value = serde_json::from_str(&s.get_token(t, u).await.expect("get").expect("present"))
        .expect("JSON");
    assert_eq!(got, v2);

    // Kiro's camelCase shape.
    let k = ("claude-kiro-oauth", "k1");
    add(s, k.0, k.1).await;
    let cas = s
        .cas_token(
            k.0,
            k.1,
            "",
            &json!({"accessToken": "a", "refreshToken": "kr1"}).to_string(),
        )
        .await
        .expect("cas on absent");
    assert!(
        cas.swapped,
        "an absent token matches an empty expected refresh token"
    );
    let cas = s.cas_token(k.0, k.1, "kr1", &json!({"accessToken": "b", "refreshToken": "kr2", "expiresAt": "2025-01-01T00:00:00.000Z"}).to_string()).await.expect("cas");
    assert!(cas.swapped);
    assert!(
        !s.cas_token(k.0, k.1, "kr1", r#"{"refreshToken":"x"}"#)
            .await
            .expect("cas")
            .swapped
    );

    let e = s
        .set_token(t, "no-such-account", r#"{"refresh_token":"x"}"#)
        .await
        .expect_err("orphan token");
    assert_eq!(
        e.code,
        ErrorCode::NOT_FOUND,
        "a token belongs to an account: {e}"
    );
    let e = s
        .cas_token(t, "no-such-account", "", r#"{"refresh_token":"x"}"#)
        .await
        .expect_err("orphan cas");
    assert_eq!(e.code, ErrorCode::NOT_FOUND, "{e}");

    assert!(s.delete_token(t, u).await.expect("delete token"));
    assert_eq!(s.get_token(t, u).await.expect("get"), None);
    assert!(
        s.get_account(t, u).await.expect("get").is_some(),
        "deleting a token keeps the account"
    );
}

/// 50 refreshers race with the same expected refresh token: exactly one wins.
pub async fn concurrent_cas_has_one_winner(s: &Storage) {
    let (t, u) = ("openai-codex-oauth", "c1");
    add(s, t, u).await;
    s.set_token(t, u, r#"{"refresh_token":"r0"}"#)
        .await
        .expect("set");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let new = json!({"refresh_token": format!("r1-{i}")}).to_string();
            s.cas_token(t, u, "r0", &new).await.expect("cas").swapped
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task"));
    }
    assert_eq!(winners, 1);
}

pub async fn locks(s: &Storage) {
    let (t, u) = ("claude-kiro-oauth", "l1");
    add(s, t, u).await;
    assert!(s.acquire_lock(t, u, "A", 10_000).await.expect("A acquires"));
    assert!(
        !s.acquire_lock(t, u, "B", 10_000).await.expect("B tries"),
        "held by A"
    );
    assert!(
        !s.release_lock(t, u, "B").await.expect("B releases"),
        "only the owner releases"
    );
    assert!(
        s.acquire_lock(t, u, "A", 10_000).await.expect("A again"),
        "the owner may extend"
    );
    assert!(s.release_lock(t, u, "A").await.expect("A releases"));
    assert!(
        s.acquire_lock(t, u, "B", 300)
            .await
            .expect("B acquires a free lock")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        s.acquire_lock(t, u, "C", 10_000)
            .await
            .expect("C after expiry"),
        "an expired lock is free"
    );
    assert!(
        !s.release_lock(t, u, "B").await.expect("B late release"),
        "an expired owner cannot release the new holder's lock"
    );
    assert!(s.release_lock(t, u, "C").await.expect("C releases"));
}

pub async fn password_hash(s: &Storage) {
    assert_eq!(
        s.get_password_hash().await.expect("get"),
        None,
        "no password unless one is set"
    );
    s.set_password_hash("pbkdf2:00ff:abcd").await.expect("set");
    assert_eq!(
        s.get_password_hash().await.expect("get").as_deref(),
        Some("pbkdf2:00ff:abcd")
    );
}

pub async fn sessions_expire(s: &Storage) {
    let now = now_ms();
    let sess = |h: &str, ttl: i64| Session {
        token_hash: h.into(),
        data: json!({"username": "admin", "loginTime": now, "expiryTime": now + ttl})
            .to_string()
            .into(),
        expires_at: now + ttl,
    };
    s.create_session(sess("h-long", 60_000))
        .await
        .expect("create");
    s.create_session(sess("h-short", 400))
        .await
        .expect("create");
    let got = s
        .get_session("h-long")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.expires_at, now + 60_000);
    let data: Value = serde_json::from_str(&got.data).expect("JSON");
    assert_eq!(data["username"], "admin");
    assert!(s.get_session("h-short").await.expect("get").is_some());
    assert_eq!(s.list_sessions().await.expect("list").len(), 2);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        s.get_session("h-short").await.expect("get").is_none(),
        "an expired session is gone"
    );
    let listed: Vec<String> = s
        .list_sessions()
        .await
        .expect("list")
        .iter()
        .map(|x| x.token_hash.to_string())
        .collect();
    assert_eq!(listed, ["h-long"]);
    assert!(s.delete_session("h-long").await.expect("delete"));
    assert!(s.get_session("h-long").await.expect("get").is_none());
    assert!(s.get_session("never").await.expect("get unknown").is_none());
}

pub async fn documents_and_plugin_states(s: &Storage) {
    assert_eq!(s.get_usage_cache().await.expect("usage"), None);
    let usage = json!({"timestamp": 1, "providers": {"claude-kiro-oauth": {"instances": []}}});
    s.set_usage_cache(&usage.to_string())
        .await
        .expect("set usage");
    let got: Value =
        serde_json::from_str(&s.get_usage_cache().await.expect("get").expect("present"))
            .expect("JSON");
    assert_eq!(got, usage);

    assert!(s.list_plugin_states().await.expect("plugins").is_empty());
    let p = |name: &str, enabled: bool| PluginState {
        name: name.into(),
        enabled,
        extra: json!({"description": format!("{name} plugin")})
            .to_string()
            .into(),
    };
    s.set_plugin_state(p("kiro", true)).await.expect("set");
    s.set_plugin_state(p("api-potluck", false))
        .await
        .expect("set");
    s.set_plugin_state(p("kiro", false)).await.expect("toggle");
    let mut states = s.list_plugin_states().await.expect("list");
    states.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(states.len(), 2);
    assert_eq!(
        (states[0].name.as_str(), states[0].enabled),
        ("api-potluck", false)
    );
    assert_eq!(
        (states[1].name.as_str(), states[1].enabled),
        ("kiro", false)
    );
    let extra: Value = serde_json::from_str(&states[1].extra).expect("JSON");
    assert_eq!(extra["description"], "kiro plugin");

    assert_eq!(s.get_meta().await.expect("meta"), None);
    s.set_meta(&json!({"schemaVersion": 1}).to_string())
        .await
        .expect("set meta");
    let meta: Value =
        serde_json::from_str(&s.get_meta().await.expect("meta").expect("present")).expect("JSON");
    assert_eq!(meta["schemaVersion"], 1);

    let status = s.status().await.expect("status");
    assert!(
        status.get("backend").and_then(Value::as_str).is_some(),
        "status names the backend: {status}"
    );
}

/// A change made through one handle is announced on the feed within 1 s.
pub async fn change_feed(s: &Storage) {
    let mut feed = s.subscribe().await.expect("subscribe");
    add(s, "openai-custom", "f1").await;
    s.update_state("openai-custom", "f1", StateUpdate::set_disabled(true))
        .await
        .expect("disable");
    s.set_config(r#"{"a":1}"#).await.expect("config");
    s.delete_account("openai-custom", "f1")
        .await
        .expect("delete");
    let mut seen = Vec::new();
    let want = [
        ChangeKind::ACCOUNT,
        ChangeKind::ACCOUNT_STATE,
        ChangeKind::CONFIG,
        ChangeKind::ACCOUNT_DELETED,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !want.iter().all(|k| seen.contains(k)) {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Ok(Some(c))) => {
                if c.kind == ChangeKind::ACCOUNT_STATE
                    || c.kind == ChangeKind::ACCOUNT
                    || c.kind == ChangeKind::ACCOUNT_DELETED
                {
                    assert_eq!(
                        (c.provider_type.as_str(), c.uuid.as_str()),
                        ("openai-custom", "f1")
                    );
                }
                seen.push(c.kind);
            }
            Ok(Ok(None)) => panic!("feed ended"),
            Ok(Err(e)) => panic!("feed error: {e}"),
            Err(_) => panic!("within 1 s saw only {seen:?}, want {want:?}"),
        }
    }
}

/// Malformed input is refused with INVALID_INPUT and changes nothing.
pub async fn bad_input_is_an_error(s: &Storage) {
    let e = s.set_config("{not json").await.expect_err("bad config");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    let e = s
        .set_config("[1,2]")
        .await
        .expect_err("config must be an object");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    assert_eq!(
        s.get_config().await.expect("get"),
        None,
        "nothing was written"
    );
    let e = s
        .add_account(acct("t", "u", json!([1])))
        .await
        .expect_err("config must be an object");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    let e = s
        .add_account(acct("", "u", json!({})))
        .await
        .expect_err("empty type");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    add(s, "t", "u").await;
    let e = s
        .update_account("t", "u", &json!({"usageCount": 5}))
        .await
        .expect_err("state through a patch");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    let e = s
        .update_account("t", "u", &json!({"uuid": "other"}))
        .await
        .expect_err("uuid change");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    let e = s
        .set_token("t", "u", "nope")
        .await
        .expect_err("bad token JSON");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
    assert_eq!(s.get_token("t", "u").await.expect("get"), None);
    let e = s
        .acquire_lock("t", "u", "", 1000)
        .await
        .expect_err("lock without owner");
    assert_eq!(e.code, ErrorCode::INVALID_INPUT, "{e}");
}
