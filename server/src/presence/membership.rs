//! This instance's entries in the broker: it refreshes them room by room
//! and action by action, so that they outlive a dead instance by one lease
//! at most, and registers them again wherever the broker lost them
//! (restart, failover, expiry) or missed changes made while it did not
//! answer. What the chat must hear of it comes out as presence events.

use super::Presence;
use crate::broker::Broker;
use crate::supervise::{self, Restarts};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the start waits for the broker before serving without it.
const JOIN_WAIT: Duration = Duration::from_secs(1);

struct Membership {
    presence: Arc<Presence>,
    broker: Arc<dyn Broker>,
    /// How long entries live without a refresh.
    ttl: Duration,
    /// Whether the broker holds this instance's local view.
    in_sync: bool,
}

/// Probes the broker before the instance serves, then keeps its entries
/// alive in the background. An unreachable broker does not hold the start up.
pub async fn start(
    presence: Arc<Presence>,
    broker: Arc<dyn Broker>,
    ttl: Duration,
    restarts: Arc<Restarts>,
    shutdown: CancellationToken,
) {
    let fresh = move || Membership {
        presence: presence.clone(),
        broker: broker.clone(),
        ttl,
        in_sync: false,
    };
    let mut first = fresh();
    let _ = tokio::time::timeout(JOIN_WAIT, first.beat()).await;
    let mut first = Some(first);
    supervise::spawn("membership", restarts, shutdown.clone(), move || {
        // A restarted run starts afresh: it registers everything again.
        let membership = first.take().unwrap_or_else(&fresh);
        membership.run(shutdown.clone())
    });
}

impl Membership {
    async fn run(mut self, shutdown: CancellationToken) {
        // Three refreshes per lease: one lost refresh does not get an
        // instance taken for dead.
        let every = self.ttl / 3;
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat().await;
        }
    }

    async fn beat(&mut self) {
        let status = self.broker.status();
        if let Err(err) = self.broker.ping().await {
            if status.commands_up() {
                tracing::warn!(error = %err, "the broker does not answer; serving local clients only");
            }
            status.set_commands(false);
            self.in_sync = false;
            return;
        }
        if !status.commands_up() {
            tracing::info!("the broker answers again");
        }
        status.set_commands(true);
        match self.presence.refresh(!self.in_sync).await {
            Ok(()) => {
                if !self.in_sync {
                    tracing::info!("this instance's presence is in the broker");
                }
                self.in_sync = true;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not refresh this instance's entries in the broker; will retry");
                self.in_sync = false;
            }
        }
    }
}
