//! Prometheus metrics at `GET /metrics` (text exposition format): requests by provider type,
//! client protocol and status; request latency; upstream failures; token refreshes; and, read
//! at scrape time, accounts by health, storage state and queued writes. Labels never carry
//! account ids, keys or tokens.
//!
//! Scraping needs the client API key or a web-UI session (Prometheus' `authorization`
//! setting), like every other endpoint, unless the operator opted out of keys entirely.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::gateway::Gateway;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub provider: String,
    pub protocol: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub provider: String,
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~82 s: covers both unary answers and long streams to their first byte.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// The gateway's counters; cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub upstream_failures: Family<OutcomeLabels, Counter>,
    pub token_refreshes: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aiclient");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_failures = Family::<OutcomeLabels, Counter>::default();
        let token_refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by provider type, client protocol and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by provider type",
            latency.clone(),
        );
        registry.register(
            "upstream_failures",
            "Upstream answers that counted against an account, by kind",
            upstream_failures.clone(),
        );
        registry.register(
            "token_refreshes",
            "Token refreshes by provider type and outcome",
            token_refreshes.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream_failures,
            token_refreshes,
        }
    }
}

impl Metrics {
    /// The registry's metrics, then the gauges read from the gateway now.
    pub async fn render(&self, gw: &Gateway) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // `encode` ends with "# EOF" (OpenMetrics); Prometheus' text format has none.
        if let Some(i) = out.rfind("# EOF") {
            out.truncate(i);
        }
        out.push_str("# HELP aiclient_accounts Accounts by provider type and state.\n# TYPE aiclient_accounts gauge\n");
        for t in gw.pools.provider_types() {
            let Some(pool) = gw.pools.pool(&t) else {
                continue;
            };
            let (mut healthy, mut unhealthy, mut disabled) = (0, 0, 0);
            for s in pool.slots() {
                let st = s.state();
                if st.disabled {
                    disabled += 1;
                } else if st.healthy && !st.needs_refresh {
                    healthy += 1;
                } else {
                    unhealthy += 1;
                }
            }
            for (state, n) in [
                ("healthy", healthy),
                ("unhealthy", unhealthy),
                ("disabled", disabled),
            ] {
                let _ = writeln!(
                    out,
                    "aiclient_accounts{{provider=\"{}\",state=\"{state}\"}} {n}",
                    escape(&t)
                );
            }
        }
        let status = gw.storage.status().await.ok();
        let up = status
            .as_ref()
            .and_then(|s| s.get("connected"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let queued = status
            .as_ref()
            .and_then(|s| s.get("queuedWrites").or_else(|| s.get("pendingWrites")))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let backend = escape(gw.storage.name());
        let _ = write!(
            out,
            "# HELP aiclient_storage_up Whether the storage backend answers and is connected.\n# TYPE aiclient_storage_up gauge\naiclient_storage_up{{backend=\"{backend}\"}} {}\n\
             # HELP aiclient_storage_queued_writes Writes accepted but not yet in the backend.\n# TYPE aiclient_storage_queued_writes gauge\naiclient_storage_queued_writes{{backend=\"{backend}\"}} {queued}\n",
            u8::from(up)
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn handler(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !crate::api::authorized_for_metrics(&gw, &headers).await {
        return (
            StatusCode::UNAUTHORIZED,
            "metrics need the client API key or a web-UI session\n",
        )
            .into_response();
    }
    let body = gw.metrics.render(&gw).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
