//! Admission of a TCP connection as it is accepted (the connection limits,
//! [`capacity`](crate::capacity), per peer address) and of a WebSocket
//! upgrade before it happens: the page's origin ([`origin`](crate::origin)),
//! draining, and, behind a trusted proxy, the per-address limit for the
//! address it forwards ([`client_ip`](crate::client_ip)). An upgrade refusal
//! is an HTTP status with a one-line reason, counted in
//! `ws_rejected_total{kind,reason}`.

use crate::capacity::{self, Capacity, Full, Slot};
use crate::client_ip::ClientIp;
use crate::config::Config;
use crate::hub::Kind;
use crate::metrics;
use crate::origin::{OriginPolicy, Refused};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Guard {
    chat_origins: OriginPolicy,
    relay_origins: OriginPolicy,
    client_ip: Arc<ClientIp>,
    /// Every TCP connection on the public and relay ports.
    connections: Arc<Capacity>,
    /// WebSockets through a trusted proxy, by the address it forwards.
    forwarded: Arc<Capacity>,
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
            client_ip: Arc::new(ClientIp::new(
                config.trusted_proxy_header.clone(),
                config.trusted_proxies.clone(),
            )),
            connections: Capacity::new(
                capacity::fit_open_files(config.max_connections as usize),
                config.max_connections_per_ip as usize,
            ),
            forwarded: Capacity::new(usize::MAX, config.max_connections_per_ip as usize),
        }
    }

    /// A place for a TCP connection from `peer` on the public or relay port,
    /// held as long as its socket is open.
    pub fn connect(&self, peer: IpAddr) -> Result<Slot, Full> {
        if self.client_ip.is_proxy(peer) {
            self.connections.acquire_unlimited_address(peer)
        } else {
            self.connections.acquire(peer)
        }
    }

    /// The client's address for a request from `peer` (the forwarded one
    /// behind a trusted proxy).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.client_ip.of(peer, headers)
    }

    /// Whether the upgrade may go ahead: behind a trusted proxy, with a
    /// place for the forwarded address (to hold until the socket ends);
    /// otherwise why it is refused (a response).
    pub fn admit(
        &self,
        kind: Kind,
        headers: &HeaderMap,
        peer: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Option<Slot>, Refusal> {
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
            // Direct clients were counted when their connection was accepted.
            None if !self.client_ip.is_proxy(peer.ip()) => return Ok(None),
            None => match self
                .forwarded
                .acquire(self.client_ip.of(peer.ip(), headers))
            {
                Ok(slot) => return Ok(Some(slot)),
                Err(_) => Refusal::AddressFull,
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
    AddressFull,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::NoOrigin => "no_origin",
            Refusal::Draining => "draining",
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
            Refusal::AddressFull => {
                (StatusCode::TOO_MANY_REQUESTS, RETRY, Full::Address.reason()).into_response()
            }
        }
    }
}
