//! `GET /healthz` (can this instance serve, and how is its Redis link) and
//! `GET /metrics` (Prometheus text format).

use crate::hub::Kind;
use crate::{metrics, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The two halves of the Redis link, set by the tasks that use them.
pub struct RedisStatus {
    pubsub: AtomicBool,
    commands: AtomicBool,
    /// A change was made locally only: Redis must be resynced.
    stale: AtomicBool,
}

impl Default for RedisStatus {
    /// Commands are presumed to work until one fails, so that the first
    /// clients are registered in Redis rather than locally; pub/sub is down
    /// until its connection is made.
    fn default() -> Self {
        RedisStatus {
            pubsub: AtomicBool::new(false),
            commands: AtomicBool::new(true),
            stale: AtomicBool::new(false),
        }
    }
}

impl RedisStatus {
    pub fn set_pubsub(&self, up: bool) {
        self.pubsub.store(up, Ordering::Relaxed);
        metrics::redis_up(self.is_up());
    }

    pub fn set_commands(&self, up: bool) {
        self.commands.store(up, Ordering::Relaxed);
        metrics::redis_up(self.is_up());
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// True (once) if a change was made locally only since the last call.
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::Relaxed)
    }

    pub fn commands_up(&self) -> bool {
        self.commands.load(Ordering::Relaxed)
    }

    fn is_up(&self) -> bool {
        self.pubsub.load(Ordering::Relaxed) && self.commands.load(Ordering::Relaxed)
    }
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
