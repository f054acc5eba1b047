//! The durable journal of state the gateway could not write to storage (see
//! `docs/resilience.md`).
//!
//! While flushes fail, the flusher rewrites `<data_dir>/pending-writes.json` every flush
//! interval with *everything* still unwritten: per account, its coalesced counters followed by
//! its queued changes, in order. The file is replaced atomically (temp file, fsync, rename,
//! fsync of the directory), so it is always one complete snapshot, never a torn append. At
//! SIGTERM with storage down the same snapshot is written before exit. At startup, once the
//! backend answers, the journal is replayed in order before anything else is written, then
//! removed. A journal written against one backend is never replayed into another (a
//! `fallback-file` start keeps it for the Redis it belongs to).

use std::io::Write;
use std::path::{Path, PathBuf};

use abi_stable::std_types::{ROption, RString};
use aiclient_sdk::ErrorCode;
use aiclient_sdk::storage::StateUpdate;
use serde_json::{Value, json};

use crate::storage::Storage;

const FILE_NAME: &str = "pending-writes.json";

/// One account's unwritten updates, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub provider_type: String,
    pub uuid: String,
    pub updates: Vec<StateUpdate>,
    /// The first update's counters may already be in storage (the connection failed after it
    /// was sent); see [`InDoubt`].
    pub in_doubt: Option<InDoubt>,
}

/// A counters write whose outcome is unknown. If storage's `usageCount` equals
/// `expected_usage`, it landed and `usage`/`errors` must not be sent again. (Exact for one
/// instance per store; with several, another instance's writes can mask the check.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InDoubt {
    pub expected_usage: i64,
    pub usage: i64,
    pub errors: i64,
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    backend: String,
}

fn opt_str(o: &ROption<RString>) -> Value {
    match o {
        ROption::RSome(s) => Value::String(s.to_string()),
        ROption::RNone => Value::Null,
    }
}

fn to_json(u: &StateUpdate) -> Value {
    json!({
        "at": u.at,
        "usageDelta": u.usage_delta,
        "errorDelta": u.error_delta,
        "refreshDelta": u.refresh_delta,
        "errorMessage": opt_str(&u.error_message),
        "errorWindowMs": u.error_window_ms,
        "unhealthyAt": u.unhealthy_at,
        "healthy": u.healthy.into_option(),
        "disabled": u.disabled.into_option(),
        "needsRefresh": u.needs_refresh.into_option(),
        "scheduledRecoveryTime": u.scheduled_recovery_time.into_option(),
        "healthCheckModel": opt_str(&u.health_check_model),
        "clearErrors": u.clear_errors,
        "resetCounters": u.reset_counters,
        "touch": u.touch,
    })
}

fn from_json(v: &Value) -> StateUpdate {
    let i = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool);
    let s = |k: &str| -> ROption<RString> {
        v.get(k).and_then(Value::as_str).map(RString::from).into()
    };
    StateUpdate {
        at: i("at"),
        usage_delta: i("usageDelta"),
        error_delta: i("errorDelta"),
        refresh_delta: i("refreshDelta"),
        error_message: s("errorMessage"),
        error_window_ms: i("errorWindowMs"),
        unhealthy_at: i("unhealthyAt"),
        healthy: b("healthy").into(),
        disabled: b("disabled").into(),
        needs_refresh: b("needsRefresh").into(),
        scheduled_recovery_time: v
            .get("scheduledRecoveryTime")
            .and_then(Value::as_i64)
            .into(),
        health_check_model: s("healthCheckModel"),
        clear_errors: b("clearErrors").unwrap_or(false),
        reset_counters: b("resetCounters").unwrap_or(false),
        touch: b("touch").unwrap_or(false),
    }
}

impl Journal {
    /// The journal in `data_dir`, for the storage backend named `backend`.
    pub fn new(data_dir: &Path, backend: &str) -> Self {
        Self {
            dir: data_dir.to_path_buf(),
            backend: backend.to_string(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Replaces the journal with `entries`, durably (fsync of the file and the directory).
    /// An empty list removes it.
    pub fn write(&self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return self.remove();
        }
        std::fs::create_dir_all(&self.dir)?;
        let doc = json!({
            "backend": self.backend,
            "writtenAt": aiclient_sdk::account::now_ms(),
            "entries": entries.iter().map(|e| json!({
                "providerType": e.provider_type,
                "uuid": e.uuid,
                "updates": e.updates.iter().map(to_json).collect::<Vec<_>>(),
                "inDoubt": e.in_doubt.map(|d| json!({
                    "expectedUsage": d.expected_usage, "usage": d.usage, "errors": d.errors,
                })),
            })).collect::<Vec<_>>(),
        });
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(doc.to_string().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path())?;
        sync_dir(&self.dir)
    }

    /// The journal's entries, if there is one written for this backend. A journal for another
    /// backend is reported as `Err` naming it (and left in place).
    pub fn read(&self) -> Result<Option<Vec<Entry>>, String> {
        let text = match std::fs::read_to_string(self.path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path().display())),
        };
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", self.path().display()))?;
        let backend = doc.get("backend").and_then(Value::as_str).unwrap_or("");
        if backend != self.backend {
            return Err(format!(
                "{} holds writes for the {backend} backend, not {}; left in place",
                self.path().display(),
                self.backend
            ));
        }
        let entries = doc
            .get("entries")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|e| Entry {
                        provider_type: e["providerType"].as_str().unwrap_or("").to_string(),
                        uuid: e["uuid"].as_str().unwrap_or("").to_string(),
                        updates: e["updates"]
                            .as_array()
                            .map(|u| u.iter().map(from_json).collect())
                            .unwrap_or_default(),
                        in_doubt: e.get("inDoubt").filter(|d| d.is_object()).map(|d| InDoubt {
                            expected_usage: d["expectedUsage"].as_i64().unwrap_or(0),
                            usage: d["usage"].as_i64().unwrap_or(0),
                            errors: d["errors"].as_i64().unwrap_or(0),
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(entries))
    }

    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.path()) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replays the journal into `storage` in order, then removes it. Returns how many updates were
/// written. On a storage failure the journal is rewritten with what is left and the error is
/// returned; an account deleted meanwhile takes its updates with it.
pub async fn replay(storage: &Storage, journal: &Journal) -> Result<usize, String> {
    let entries = match journal.read() {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(0),
        Err(e) => {
            tracing::warn!("journal not replayed: {e}");
            return Ok(0);
        }
    };
    let total: usize = entries.iter().map(|e| e.updates.len()).sum();
    let progress = storage.resilience();
    progress.replay_started("journal", total as u64);
    let started = std::time::Instant::now();
    tracing::info!(
        accounts = entries.len(),
        updates = total,
        path = %journal.path().display(),
        "replaying the journal of unwritten state"
    );
    let mut written = 0;
    for (i, e) in entries.iter().enumerate() {
        let mut updates = e.updates.clone();
        if let (Some(d), Some(first)) = (e.in_doubt, updates.first_mut()) {
            match storage.get_account(&e.provider_type, &e.uuid).await {
                Ok(Some(a)) if a.state.usage_count == d.expected_usage => {
                    first.usage_delta -= d.usage;
                    first.error_delta -= d.errors;
                    tracing::info!(provider = %e.provider_type, uuid = %e.uuid, usage = d.usage, "a counters write interrupted by the outage had landed; not replayed");
                }
                Ok(_) => {}
                Err(err) => {
                    progress.replay_finished(false);
                    return Err(format!("journal replay could not start: {err}"));
                }
            }
        }
        let e = &Entry {
            updates,
            in_doubt: None,
            ..e.clone()
        };
        for (j, u) in e.updates.iter().enumerate() {
            match storage
                .update_state(&e.provider_type, &e.uuid, u.clone())
                .await
            {
                Ok(_) => {
                    written += 1;
                    progress.replay_progress(written as u64);
                }
                Err(err) if err.code == ErrorCode::NOT_FOUND => break,
                Err(err) => {
                    progress.replay_finished(false);
                    let mut rest = vec![Entry {
                        updates: e.updates[j..].to_vec(),
                        ..e.clone()
                    }];
                    rest.extend(entries[i + 1..].iter().cloned());
                    journal.write(&rest).map_err(|io| {
                        format!(
                            "journal replay failed ({err}) and the rest could not be kept: {io}"
                        )
                    })?;
                    return Err(format!(
                        "journal replay stopped after {written} of {total} updates: {err}"
                    ));
                }
            }
        }
    }
    journal.remove().map_err(|e| {
        progress.replay_finished(false);
        format!("journal replayed but not removed: {e}")
    })?;
    progress.replay_finished(true);
    tracing::info!(
        updates = written,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal replay finished; journal removed"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "redis");
        let mut u = StateUpdate::usage(3, 42);
        u.error_message = ROption::RSome("boom".into());
        u.healthy = ROption::RSome(false);
        u.scheduled_recovery_time = ROption::RSome(7);
        let entries = vec![Entry {
            provider_type: "openai-custom".into(),
            uuid: "a".into(),
            updates: vec![u, StateUpdate::default()],
            in_doubt: Some(InDoubt {
                expected_usage: 10,
                usage: 3,
                errors: 0,
            }),
        }];
        j.write(&entries).unwrap();
        assert_eq!(j.read().unwrap(), Some(entries));
        assert!(Journal::new(dir.path(), "file").read().is_err());
        j.write(&[]).unwrap();
        assert_eq!(j.read().unwrap(), None);
    }
}
