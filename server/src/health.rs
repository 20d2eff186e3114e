//! `GET /healthz` (can this instance serve, and how is its Redis link) and
//! `GET /metrics` (Prometheus text format).

use crate::hub::Kind;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

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

pub async fn healthz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let redis = match app.store.redis() {
        None => "disabled",
        Some(redis) if redis.status().is_up() => "ok",
        Some(_) => "degraded",
    };
    let draining = app.shutdown.is_cancelled();
    let health = Health {
        status: if draining { "draining" } else { "ok" },
        instance: app.instance.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        connections: Connections {
            chat: app.bus.hub().connections(Kind::Chat),
            relay: app.bus.hub().connections(Kind::Relay),
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

pub async fn metrics_text(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
