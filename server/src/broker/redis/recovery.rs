//! Noticing that Redis is back. While the link is down (a command failed,
//! or a subscription connection was lost), Redis is pinged every
//! [`PROBE_EVERY`] through the command connection (which reconnects on the
//! way); the first answer lets commands through again and wakes the
//! subscription tasks out of their backoff, so chat writes and relay
//! forwarding resume within a probe of Redis answering, instead of at the
//! next membership beat or backoff step. A command connection that keeps
//! failing is replaced now and then, in case it is the connection that is
//! stuck rather than Redis that is away.

use super::client::Commands;
use crate::broker::LinkStatus;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// While probes keep failing, the command connection is replaced by a new
/// one this often ([`Commands::renew`]: a cluster connection can be stuck
/// where no probe gets it out).
const RENEW_EVERY: Duration = Duration::from_secs(2);
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
        // When the command connection was last known good or renewed.
        let mut fresh = Instant::now();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if self.status.is_up() {
                fresh = Instant::now();
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
                fresh = Instant::now();
            } else if fresh.elapsed() >= RENEW_EVERY {
                tracing::debug!("Redis still does not answer; renewing the command connection");
                self.conn.renew();
                fresh = Instant::now();
            }
        }
    }
}
