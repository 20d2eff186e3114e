//! One server instance: its listening sockets, the wiring of its parts
//! ([`parts`]), its background tasks, and its drain ([`drain`]).
//!
//! [`run`] takes sockets already bound and returns as soon as the instance
//! serves, with their addresses: a test binds port 0 and knows where to
//! connect without reading a log; several instances in one process can
//! share one in-memory broker ([`Backing::Memory`]).

mod drain;
mod parts;

use crate::broker::memory::Shared;
use crate::config::Config;
use crate::http::listener;
use crate::http::serve::serve;
use anyhow::Context;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The sockets an instance serves on.
pub struct Listeners {
    /// The page, the chat socket, `/relay` and `/healthz`.
    pub http: TcpListener,
    /// The relay on a port of its own (`RELAY_PORT`; none when 0).
    pub relay: Option<TcpListener>,
    /// Metrics and health, kept apart from the public ports.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses (with SO_REUSEPORT when configured,
    /// for reloads without downtime).
    pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let reuse = config.reuse_port;
        let http_addr = config.http_addr();
        let http = listener::bind(http_addr, reuse).with_context(|| {
            format!("cannot listen on {http_addr}: set PORT (or BIND) to a free port")
        })?;
        let relay = match config.relay_addr() {
            Some(addr) => Some(listener::bind(addr, reuse).with_context(|| {
                format!(
                    "cannot listen on {addr}: set RELAY_PORT to a free port, or 0 to disable the relay"
                )
            })?),
            None => None,
        };
        let admin_addr = config.admin_addr();
        let admin = listener::bind(admin_addr, reuse).with_context(|| {
            format!("cannot listen on {admin_addr}: set ADMIN_PORT to a free port (one per instance on a host)")
        })?;
        Ok(Listeners { http, relay, admin })
    }
}

/// Where the instance's state is shared with the other instances.
pub enum Backing {
    /// As configured: Redis with `REDIS_URL`, this process's memory without.
    Configured,
    /// A memory shared with other instances of this process (tests).
    Memory(Shared),
}

/// A serving instance.
pub struct Running {
    pub instance: Uuid,
    pub http: SocketAddr,
    pub relay: Option<SocketAddr>,
    pub admin: SocketAddr,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the instance stopped (after `shutdown` and its drain).
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.done.await.context("the instance's task failed")?
    }
}

/// Starts an instance on `listeners` with its state as configured; it
/// serves until `shutdown` is cancelled, then drains: closes every socket
/// with 1012, waits for their cleanup (bounded by the grace period) and
/// removes its entries from a shared broker.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    start(listeners, config, Backing::Configured, shutdown).await
}

/// [`run`], with the state shared as `backing` says.
pub async fn start(
    listeners: Listeners,
    config: Config,
    backing: Backing,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    config.validate()?;
    let http_addr = listeners.http.local_addr()?;
    let relay_addr = listeners.relay.as_ref().map(TcpListener::local_addr);
    let relay_addr = relay_addr.transpose()?;
    let admin_addr = listeners.admin.local_addr()?;
    let parts = parts::Parts::build(&config, backing, http_addr, shutdown.clone()).await?;
    tracing::info!(
        http = %http_addr,
        relay = relay_addr.map(|a| a.to_string()),
        admin = %admin_addr,
        instance = %parts.instance,
        broker = ?parts.broker.mode(),
        "listening"
    );
    let instance = parts.instance;
    let done = tokio::spawn(serve_all(listeners, parts, config, shutdown));
    Ok(Running {
        instance,
        http: http_addr,
        relay: relay_addr,
        admin: admin_addr,
        done,
    })
}

/// Serves every port until shutdown, then drains.
async fn serve_all(
    listeners: Listeners,
    parts: parts::Parts,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    let (public, relay) = (parts.door("public", &config), parts.door("relay", &config));
    servers.spawn(serve(
        listeners.http,
        parts.public,
        public,
        shutdown.clone(),
    ));
    let admin = parts::admin_door(&config);
    servers.spawn(serve(listeners.admin, parts.admin, admin, shutdown.clone()));
    if let Some(listener) = listeners.relay {
        servers.spawn(serve(listener, parts.relay_port, relay, shutdown.clone()));
    }
    while let Some(result) = servers.join_next().await {
        result.context("server task failed")??;
    }
    parts.drain.run().await;
    tracing::info!("stopped");
    Ok(())
}
