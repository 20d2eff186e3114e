//! Admission of a WebSocket upgrade, decided before the upgrade: the page's
//! origin ([`origin`](crate::origin)), draining, and the connection limits
//! ([`capacity`](crate::capacity), counted per [`client_ip`](crate::client_ip)).
//! A refusal is an HTTP status with a one-line reason, counted in
//! `ws_rejected_total{kind,reason}`.

use crate::capacity::{Capacity, Full, Slot};
use crate::client_ip::ClientIp;
use crate::config::Config;
use crate::hub::Kind;
use crate::metrics;
use crate::origin::{OriginPolicy, Refused};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Guard {
    chat_origins: OriginPolicy,
    relay_origins: OriginPolicy,
    client_ip: ClientIp,
    capacity: Arc<Capacity>,
}

impl Guard {
    pub fn from_config(config: &Config) -> Self {
        Guard {
            chat_origins: OriginPolicy::new(
                config.allowed_origins.clone(),
                config.chat_require_origin,
                &config.public_origins,
            ),
            relay_origins: OriginPolicy::new(
                config.allowed_origins.clone(),
                config.relay_require_origin,
                &config.public_origins,
            ),
            client_ip: ClientIp::new(
                config.trusted_proxy_header.clone(),
                config.trusted_proxies.clone(),
            ),
            capacity: Capacity::new(
                config.max_connections as usize,
                config.max_connections_per_ip as usize,
            ),
        }
    }

    /// A slot for the connection (to hold until it ends), or why it is
    /// refused (a response).
    pub fn admit(
        &self,
        kind: Kind,
        headers: &HeaderMap,
        peer: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Slot, Refusal> {
        let origins = match kind {
            Kind::Chat => &self.chat_origins,
            Kind::Relay => &self.relay_origins,
        };
        let refusal = match origins.check(headers) {
            Err(Refused::Host) => Some(Refusal::Host),
            Err(Refused::Origin) => Some(Refusal::Origin),
            Err(Refused::NoOrigin) => Some(Refusal::NoOrigin),
            Ok(()) if shutdown.is_cancelled() => Some(Refusal::Draining),
            Ok(()) => None,
        };
        let refusal = match refusal {
            Some(refusal) => refusal,
            None => match self.capacity.acquire(self.client_ip.of(peer.ip(), headers)) {
                Ok(slot) => return Ok(slot),
                Err(Full::Instance) => Refusal::InstanceFull,
                Err(Full::Address) => Refusal::AddressFull,
            },
        };
        metrics::rejected(kind, refusal.label());
        tracing::debug!(kind = kind.as_str(), %peer, reason = refusal.label(), "upgrade refused");
        Err(refusal)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    Host,
    Origin,
    NoOrigin,
    Draining,
    InstanceFull,
    AddressFull,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::NoOrigin => "no_origin",
            Refusal::Draining => "draining",
            Refusal::InstanceFull => "instance_full",
            Refusal::AddressFull => "address_full",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Seconds a refused client should wait; browsers ignore it, programs
        // and load balancers may not.
        const RETRY: [(axum::http::HeaderName, &str); 1] = [(RETRY_AFTER, "5")];
        match self {
            Refusal::Host => (
                StatusCode::FORBIDDEN,
                "this server is not known by the name this page used (DNS rebinding?): \
                 add its public origin to PUBLIC_ORIGINS",
            )
                .into_response(),
            Refusal::Origin => (
                StatusCode::FORBIDDEN,
                "cross-site WebSocket refused: this page's origin is not in ALLOWED_ORIGINS",
            )
                .into_response(),
            Refusal::NoOrigin => (
                StatusCode::FORBIDDEN,
                "an Origin header is required to open this WebSocket",
            )
                .into_response(),
            Refusal::Draining => (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response(),
            Refusal::InstanceFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                RETRY,
                "server full: too many connections, try again later",
            )
                .into_response(),
            Refusal::AddressFull => (
                StatusCode::TOO_MANY_REQUESTS,
                RETRY,
                "too many connections from your address",
            )
                .into_response(),
        }
    }
}
