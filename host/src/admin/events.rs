//! `GET /api/events`: server-sent events for the web UI. Storage changes (from this instance
//! or any other sharing the backend) become `provider_update`, `config_update` and
//! `plugin_update` events carrying only ids — the UI re-reads what changed through the
//! authenticated API, so no event ever carries a secret. Bursts of state changes (counter
//! flushes) are coalesced to at most one `provider_update` per account per 500 ms.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aiclient_sdk::storage::ChangeKind;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;

use super::AdminState;
use crate::gateway::Gateway;

/// A UI event: name and JSON data.
pub type UiEvent = (&'static str, String);

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<UiEvent>,
}

impl Hub {
    /// Starts following the storage change feed.
    pub fn start(gw: Arc<Gateway>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self { tx: tx.clone() };
        tokio::spawn(async move {
            loop {
                let mut feed = match gw.storage.subscribe().await {
                    Ok(f) => f,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut pending: HashSet<(String, String)> = HashSet::new();
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        c = feed.next() => match c {
                            Ok(Some(c)) => match c.kind {
                                ChangeKind::ACCOUNT | ChangeKind::ACCOUNT_DELETED | ChangeKind::ACCOUNT_STATE => {
                                    pending.insert((c.provider_type.to_string(), c.uuid.to_string()));
                                }
                                ChangeKind::CONFIG => { let _ = tx.send(("config_update", "{}".into())); }
                                ChangeKind::PLUGINS => { let _ = tx.send(("plugin_update", "{}".into())); }
                                ChangeKind::RESYNC => { let _ = tx.send(("provider_update", json!({"all": true}).to_string())); }
                                _ => {}
                            },
                            _ => break,
                        },
                        _ = tick.tick() => {
                            for (t, u) in pending.drain() {
                                let _ = tx.send(("provider_update", json!({"providerType": t, "uuid": u}).to_string()));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        hub
    }
}

pub async fn sse(
    State(s): State<AdminState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.events.tx.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok((name, data)) => Event::default().event(name).data(data),
            // Fell behind: tell the UI to reload everything.
            Err(broadcast::error::RecvError::Lagged(_)) => Event::default()
                .event("provider_update")
                .data(r#"{"all":true}"#),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(30)))
}
