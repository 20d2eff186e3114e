//! Noticing that Redis is back. While the link is down (a command failed,
//! or a subscription connection was lost), Redis is pinged every
//! [`PROBE_EVERY`] through the command connection (which reconnects on the
//! way); the first answer lets commands through again and wakes the
//! subscription tasks out of their backoff, so chat writes and relay
//! forwarding resume within a probe of Redis answering, instead of at the
//! next membership beat or backoff step.

use super::client::Commands;
use crate::broker::LinkStatus;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A probe unanswered for this long counts as failed (Redis may be paused
/// or overloaded: the next probe asks again).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Recovery {
    /// The command connection: a probe through it also reconnects it.
    pub conn: Commands,
    pub status: Arc<LinkStatus>,
    /// Woken when Redis answers again.
    pub back: Arc<Notify>,
    pub shutdown: CancellationToken,
}

impl Recovery {
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if self.status.is_up() {
                continue;
            }
            let probe = async { self.conn.clone().ping::<String>().await };
            if let Ok(Ok(_)) = timeout(PROBE_TIMEOUT, probe).await {
                if !self.status.commands_up() {
                    tracing::info!("Redis answers again");
                }
                self.status.set_commands(true);
                // Subscription tasks waiting out a backoff connect now.
                self.back.notify_waiters();
            }
        }
    }
}
