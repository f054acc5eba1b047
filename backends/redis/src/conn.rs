//! The command connection: one auto-reconnecting `ConnectionManager` to a single server, or
//! the cluster client's `ClusterConnection` (slot-aware routing, follows `MOVED`/`ASK`,
//! refreshes the slot map after a failover). Both are cheap to clone and multiplexed.
//!
//! On a cluster a pipeline must stay within one slot (the client refuses a cross-slot one);
//! every `MULTI` and script here does (a `PUBLISH` in one is routed by [`publish_route`]), and
//! the one read that spans pools (the pool count of `status`/`list_provider_types`) sends one
//! command per pool there instead.

use redis::aio::MultiplexedConnection;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::SentinelClient;
use redis::{Arg, AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex};

/// The node a pipeline with a `PUBLISH` in it goes to: the slot of its first key.
///
/// The cluster client takes `PUBLISH`'s channel for a key and would refuse the `MULTI`
/// (`SET key …; PUBLISH channel …`) as cross-slot; the server does not (a channel is no key,
/// and a cluster `PUBLISH` reaches every node). `None`: no `PUBLISH`, the client routes.
fn publish_route(pipeline: &Pipeline) -> Option<Route> {
    let name = |c: &Cmd| match c.args_iter().next() {
        Some(Arg::Simple(n)) => n.to_ascii_uppercase(),
        _ => Vec::new(),
    };
    if !pipeline.cmd_iter().any(|c| name(c) == b"PUBLISH") {
        return None;
    }
    pipeline
        .cmd_iter()
        .filter(|c| !matches!(name(c).as_slice(), b"PUBLISH" | b"MULTI" | b"EXEC"))
        .find_map(|c| match c.args_iter().nth(1) {
            Some(Arg::Simple(key)) => Some(Route::with_key(key, SlotAddr::Master)),
            _ => None,
        })
}

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// A connection to the master the sentinels name. It is resolved on first use and again
/// after any connection-level failure (I/O error, dropped or refused connection, timeout, or
/// a `READONLY`/`MASTERDOWN`/`LOADING` reply: the node is no longer a usable master), so after a
/// failover the next call asks the sentinels for the new master.
#[derive(Clone)]
pub struct SentinelConn {
    client: Arc<tokio::sync::Mutex<SentinelClient>>,
    current: Arc<Mutex<Option<MultiplexedConnection>>>,
    config: AsyncConnectionConfig,
    db: i64,
}

impl SentinelConn {
    pub fn new(
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        config: AsyncConnectionConfig,
        db: i64,
    ) -> Self {
        Self {
            client,
            current: Arc::default(),
            config,
            db,
        }
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current master connection, discovering the master if there is none.
    pub async fn get(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut sentinel = self.client.lock().await;
        // Another caller may have connected while this one waited for the lock.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let c = sentinel
            .get_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn check<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r {
            let stale = e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if stale {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        r
    }
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.get().await?;
                let r = c.req_packed_command(cmd).await;
                s.check(r)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => match publish_route(pipeline) {
                None => c.req_packed_commands(pipeline, offset, count),
                Some(route) => Box::pin(c.route_pipeline(
                    pipeline.clone(),
                    offset,
                    count,
                    SingleNodeRoutingInfo::SpecificNode(route),
                )),
            },
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.get().await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                s.check(r)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(s) => s.db,
        }
    }
}
