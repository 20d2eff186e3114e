//! `GET /healthz` (can this instance serve, and how is its Redis link) and
//! `GET /metrics` (Prometheus text format).

use crate::broker::{Broker, InstanceEntry, Mode};
use crate::fanout::{Hub, Kind};
use crate::supervise::Restarts;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the health and metrics endpoints read.
pub struct Monitor {
    pub instance: Uuid,
    pub started: Instant,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub restarts: Arc<Restarts>,
    pub shutdown: CancellationToken,
    pub metrics: PrometheusHandle,
}

#[derive(Serialize)]
struct Health {
    /// "ok", or "draining" once shutdown started.
    status: &'static str,
    instance: String,
    version: &'static str,
    uptime_secs: u64,
    connections: Connections,
    /// "ok", "degraded" (unreachable: local clients only) or "disabled".
    redis: &'static str,
    /// Background tasks that ended or panicked and were restarted, with how
    /// many times (empty while all is well).
    restarted_tasks: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct Connections {
    chat: usize,
    relay: usize,
}

pub async fn healthz(State(app): State<Arc<Monitor>>) -> impl IntoResponse {
    let redis = match app.broker.mode() {
        Mode::Memory => "disabled",
        Mode::Redis | Mode::Cluster if app.broker.status().is_up() => "ok",
        Mode::Redis | Mode::Cluster => "degraded",
    };
    let draining = app.shutdown.is_cancelled();
    let health = Health {
        status: if draining { "draining" } else { "ok" },
        instance: app.instance.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        connections: Connections {
            chat: app.hub.connections(Kind::Chat),
            relay: app.hub.connections(Kind::Relay),
        },
        redis,
        restarted_tasks: app.restarts.snapshot(),
    };
    // Degraded Redis still serves local clients: only draining is unhealthy,
    // so a load balancer stops sending new clients to a stopping instance.
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(health))
}

/// How often an instance writes its line in the list of live instances.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

impl Monitor {
    /// Writes this instance's line every few seconds until shutdown (a
    /// broker that does not answer gets it on the next round).
    pub async fn announce(self: Arc<Self>) {
        let mut every = tokio::time::interval(ANNOUNCE_EVERY);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = every.tick() => {
                    let line = InstanceEntry::of(self.instance, self.started, &self.hub);
                    if let Err(err) = self.broker.announce(&line).await {
                        tracing::debug!(error = %err, "cannot write this instance's line");
                    }
                }
            }
        }
    }
}

pub async fn metrics_text(State(app): State<Arc<Monitor>>) -> impl IntoResponse {
    crate::memory::record_heap();
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
