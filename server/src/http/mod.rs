//! The HTTP side: which routes each port serves ([`site`], [`admin`] with
//! the server API of [`crate::api`], behind its `Host` check), the
//! accept loop and each connection's HTTP life ([`serve`]), listening
//! sockets ([`listener`]), and `/healthz` and `/metrics` ([`health`]).

mod admin_host;
pub mod health;
pub mod listener;
pub mod serve;
mod site;

use crate::api::{self, Api};
use crate::chat::{self, Chat};
use crate::relay::{self, Relay};
pub use admin_host::AdminHosts;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use health::Monitor;
use std::net::SocketAddr;
use std::sync::Arc;

/// The public port: the page (server-rendered Leptos app and its static
/// files), the chat socket, the relay on `/relay`, and health for load
/// balancers. Metrics are on the admin port only.
pub fn public(
    chat: &Arc<Chat>,
    relay: &Arc<Relay>,
    monitor: &Arc<Monitor>,
    site_root: &str,
    addr: SocketAddr,
) -> Router {
    let sockets = Router::new()
        .route("/ws", get(chat::upgrade))
        .with_state(chat.clone())
        .merge(
            Router::new()
                .route("/relay", get(relay::upgrade))
                .with_state(relay.clone()),
        );
    Router::new()
        .route("/healthz", get(health::healthz))
        .with_state(monitor.clone())
        .merge(sockets)
        .merge(site::routes(site_root, addr))
}

/// The relay port: every path upgrades to the relay, as the original did.
pub fn relay_port(relay: &Arc<Relay>) -> Router {
    Router::new()
        .fallback(get(relay::upgrade))
        .with_state(relay.clone())
}

/// The private admin endpoints: metrics, health for whoever monitors the
/// instance from inside, and the server API; only for requests that name
/// it as it knows itself ([`admin_host`]).
pub fn admin(monitor: &Arc<Monitor>, api: Arc<Api>, hosts: AdminHosts) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics_text))
        .route("/healthz", get(health::healthz))
        .with_state(monitor.clone())
        .merge(api::routes(api))
        .layer(middleware::from_fn_with_state(
            Arc::new(hosts),
            admin_host::check,
        ))
}
