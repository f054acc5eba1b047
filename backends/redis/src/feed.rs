//! The change feed's receiving side: one listener task per backend instance, on a dedicated
//! pub/sub connection (a subscribed RESP2 connection can run nothing else), forwarding every
//! message of the prefix's channel into the instance's [`ChangeHub`].
//!
//! Every write publishes on the channel (inside its Lua script or MULTI), and this instance's
//! own writes come back through the same subscription, so local and remote changes arrive in
//! one order. While the connection is down events are lost; after it is back and subscribed
//! again the listener publishes [`Change::resync`] locally so hosts reload in full.
//!
//! Liveness: a closed socket ends the message stream at once; a half-open one is caught by a
//! `PING` every [`PING_EVERY`] that must answer within the command timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aiclient_sdk::PluginError;
use aiclient_sdk::storage::{Change, ChangeHub, ChangeKind};
use futures_core::Stream;
use redis::aio::{PubSub, PubSubStream};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::errors::{self, Ctx};

/// How often an idle subscription is checked (a dead peer is noticed within this plus the
/// command timeout).
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect back-off: starts at 100 ms, doubles up to 2 s, so a restarted server is seen
/// again within ~2 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What `status()` reports about the listener.
#[derive(Default)]
pub struct FeedState {
    pub subscribed: AtomicBool,
    pub reconnects: AtomicU64,
    /// Messages on the channel that were not change events (ignored).
    pub malformed: AtomicU64,
}

/// One change event as published: `{"kind":4,"type":"…","uuid":"…","origin":"…"}`.
pub fn encode(kind: ChangeKind, provider_type: &str, uuid: &str, origin: &str) -> String {
    json!({"kind": kind.0, "type": provider_type, "uuid": uuid, "origin": origin}).to_string()
}

pub fn decode(payload: &[u8]) -> Option<Change> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let kind = u8::try_from(v.get("kind")?.as_u64()?).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    Some(Change::account(
        ChangeKind(kind),
        s("type"),
        s("uuid"),
        s("origin"),
    ))
}

pub struct Listener {
    /// Where to subscribe: one server, or a cluster's seed nodes (tried in turn: any node
    /// receives every `PUBLISH` of the cluster).
    pub clients: Vec<redis::Client>,
    /// Sentinel mode: every (re)subscription asks the sentinels for the master first
    /// (`clients` is then unused).
    pub sentinel: Option<Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>>,
    pub channel: String,
    pub hub: ChangeHub,
    pub state: Arc<FeedState>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub ctx: Ctx,
}

impl Listener {
    /// Spawns the listener on the plugin runtime. The receiver answers once the first
    /// subscription is confirmed (or failed: then the task has ended).
    pub fn start(self) -> (AbortHandle, oneshot::Receiver<Result<(), PluginError>>) {
        let (tx, rx) = oneshot::channel();
        let task = aiclient_sdk::runtime::handle().spawn(self.run(tx));
        (task.abort_handle(), rx)
    }

    async fn run(self, ready: oneshot::Sender<Result<(), PluginError>>) {
        let mut ready = Some(ready);
        let mut backoff = BACKOFF_MIN;
        // Failed attempts since the connection was lost: only the first is a warning, the rest
        // (one per back-off, up to every 2 s during an outage) are debug lines.
        let mut failures = 0u32;
        let mut node = 0usize;
        loop {
            match self.connect(node).await {
                Ok(pubsub) => {
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    self.state.subscribed.store(true, Ordering::SeqCst);
                    match ready.take() {
                        Some(tx) => {
                            let _ = tx.send(Ok(()));
                        }
                        None => {
                            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                "change feed resubscribed to {}; announcing RESYNC",
                                self.ctx.server
                            );
                            self.hub.publish(Change::resync());
                        }
                    }
                    let reason = self.pump(pubsub).await;
                    self.state.subscribed.store(false, Ordering::SeqCst);
                    tracing::warn!("change feed lost its connection ({reason}); reconnecting");
                }
                Err(e) => {
                    node = (node + 1) % self.clients.len();
                    // At start every node gets one try before the open fails.
                    if node != 0 && ready.is_some() {
                        continue;
                    }
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("change feed cannot resubscribe yet: {e}");
                    } else {
                        tracing::debug!("change feed resubscribe attempt {failures} failed: {e}");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self, node: usize) -> Result<PubSub, PluginError> {
        let attempt = async {
            let client = match &self.sentinel {
                Some(s) => s.lock().await.async_get_client().await?,
                None => self.clients[node].clone(),
            };
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(ps)) => Ok(ps),
            Ok(Err(e)) => Err(errors::from_redis(&e, "subscribe", &self.ctx)),
            Err(_) => Err(errors::timed_out(
                "subscribe",
                self.connect_timeout,
                &self.ctx,
            )),
        }
    }

    /// Forwards messages until the connection is gone; returns why.
    async fn pump(&self, pubsub: PubSub) -> String {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = next(&mut stream) => match msg {
                    Some(m) => match decode(m.get_payload_bytes()) {
                        Some(change) => self.hub.publish(change),
                        None => {
                            self.state.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    None => return "connection closed".to_string(),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.command_timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return self.ctx.redactor.redact(&format!("ping failed: {e}")),
                        Err(_) => return format!("no PONG within {} ms", self.command_timeout.as_millis()),
                    }
                }
            }
        }
    }
}

/// The next message (cancel-safe: the stream is a channel receiver).
async fn next(stream: &mut PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = encode(ChangeKind::ACCOUNT_STATE, "openai-custom", "u1", "inst-a");
        let c = decode(m.as_bytes()).expect("decodes");
        assert_eq!(
            c,
            Change::account(ChangeKind::ACCOUNT_STATE, "openai-custom", "u1", "inst-a")
        );
        assert!(decode(b"not json").is_none());
        assert!(decode(br#"{"kind":999}"#).is_none());
    }
}
