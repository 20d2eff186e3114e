//! Admission of a TCP connection as it is accepted (the connection limits,
//! [`capacity`], per peer address) and of a WebSocket upgrade before it
//! happens: the page's origin ([`origin`]), draining, and, behind a trusted
//! proxy, the per-address limit for the address it forwards
//! ([`client_ip`]). An upgrade refusal
//! is an HTTP status with a one-line reason, counted in
//! `ws_rejected_total{kind,reason}`.

pub mod capacity;
pub mod client_ip;
pub mod origin;

use crate::kind::Kind;
use crate::metrics;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use capacity::{Capacity, Full, Slot};
use client_ip::{ClientIp, ProxyHeader};
use ipnet::IpNet;
use origin::{AllowedOrigin, OriginPolicy, Refused};
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

/// A setting of who may connect that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSetting {
    #[error("{0:?} is not an origin: use scheme://host[:port] (no path), self or *")]
    Origin(String),
    #[error("{0:?}: PUBLIC_ORIGINS lists origins, scheme://host[:port]")]
    PublicOrigin(String),
    #[error("{0:?} is not a header name (or none)")]
    Header(String),
    #[error("{0:?} is not an IP address or CIDR range")]
    Network(String),
}

/// Who may connect, as configured.
pub struct Policy {
    pub allowed_origins: Vec<AllowedOrigin>,
    /// The site's own origins (always allowed).
    pub public_origins: Vec<AllowedOrigin>,
    pub chat_require_origin: bool,
    pub relay_require_origin: bool,
    pub proxy_header: ProxyHeader,
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Guard {
    pub fn new(policy: Policy) -> Self {
        let origins = |require| {
            OriginPolicy::new(
                policy.allowed_origins.clone(),
                require,
                &policy.public_origins,
            )
        };
        Guard {
            chat_origins: origins(policy.chat_require_origin),
            relay_origins: origins(policy.relay_require_origin),
            client_ip: Arc::new(ClientIp::new(
                policy.proxy_header.clone(),
                policy.trusted_proxies.clone(),
            )),
            connections: Capacity::new(
                capacity::fit_open_files(policy.max_connections),
                policy.max_connections_per_ip,
            ),
            forwarded: Capacity::new(usize::MAX, policy.max_connections_per_ip),
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
