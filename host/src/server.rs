//! The HTTP server: the axum application and its lifecycle. `run` takes a bound listener and a
//! shutdown future, so tests bind port 0 and stop it cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use aiclient_sdk::ErrorCode;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::admin::{AdminState, PluginRow};
use crate::gateway::Gateway;

/// What the server-level handlers can reach.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub started: Instant,
    /// The loaded plugin libraries, for the management API.
    pub plugins: Vec<PluginRow>,
}

pub fn router(state: AppState) -> Router {
    let admin = AdminState::new(state.gateway.clone(), state.plugins.clone());
    Router::new()
        .route("/health", get(health))
        .route("/api/health", get(health))
        .with_state(state.clone())
        .merge(crate::admin::router(admin))
        .merge(crate::ui::router())
        .merge(crate::api::router(state.gateway))
}

/// How long `GET /health` waits for the backend's status before answering "degraded".
const HEALTH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /health`: 200 while the gateway can serve: `"status": "ok"`, or `"degraded"` when its
/// storage backend is unreachable or gives no status within [`HEALTH_WAIT`] (a paused or hung
/// storage never hangs the probe; requests are served from memory meanwhile); 503 when the
/// backend is broken (it panics or fails internally). The body says which backend and what it
/// reports (never a password).
async fn health(State(s): State<AppState>) -> impl IntoResponse {
    let now = aiclient_sdk::account::now_ms();
    let uptime = s.started.elapsed().as_secs();
    let gw = &s.gateway;
    let status = match tokio::time::timeout(HEALTH_WAIT, gw.storage.status()).await {
        Ok(r) => r,
        Err(_) => Err(aiclient_sdk::PluginError::timeout(format!(
            "the backend gave no status within {} ms",
            HEALTH_WAIT.as_millis()
        ))),
    };
    let (code, label, storage) = match status {
        Ok(status) => (StatusCode::OK, "ok", status),
        // Requests are served from memory while storage is away or stalled (writes wait in
        // the journal): the instance is degraded, not down. A 503 here would make every load
        // balancer drop every instance sharing the stalled Redis at once.
        Err(e) if matches!(e.code, ErrorCode::UNAVAILABLE | ErrorCode::TIMEOUT) => (
            StatusCode::OK,
            "degraded",
            json!({ "backend": gw.storage.name(), "error": e.to_string() }),
        ),
        // The backend itself is broken (a panic, an internal error): that needs an operator.
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            json!({ "backend": gw.storage.name(), "error": e.to_string() }),
        ),
    };
    (
        code,
        Json(json!({
            "status": label,
            "timestamp": now,
            "uptimeSeconds": uptime,
            "instanceId": &*gw.instance_id,
            "storage": storage,
        })),
    )
}

/// Serves until `shutdown` completes; then stops accepting, lets in-flight requests (streams
/// included) finish for up to `grace`, and writes pending counters and the storage backend's
/// buffered writes before returning. A load balancer sees refused connections from the first
/// moment and moves traffic to the other instances.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let gw = state.gateway.clone();
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = began_tx.send(());
    };
    // Login throttling needs each client's address.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Streams go out as many small writes: without TCP_NODELAY, Nagle holds each one back until
    // the client acknowledges the previous (up to its 40 ms delayed-ACK timer per event).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let deadline = async move {
        if began_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = std::future::IntoFuture::into_future(serve) => r?,
        _ = deadline => tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the shutdown grace period; closing them"),
    }
    tracing::info!("server stopped; flushing counters and storage");
    if let Err(e) = gw.pools.flush_or_journal().await {
        tracing::error!(error = %e, "writing pending counters at shutdown failed; they are in the journal");
    }
    if let Err(e) = gw.storage.flush().await {
        tracing::error!(error = %e, "storage flush at shutdown failed");
    }
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
