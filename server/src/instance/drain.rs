//! A clean stop: once the ports stopped accepting and every socket was
//! told to close (1012), wait for their cleanup, then remove this
//! instance's entries from a broker that other instances share, all
//! within the grace period.

use crate::broker::Broker;
use crate::chat::Chat;
use crate::presence::Presence;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// How long closed clients get to reconnect to another instance and reclaim
/// their nickname before this instance's entries are removed.
const RECLAIM_WINDOW: Duration = Duration::from_secs(2);
/// Time kept for removing this instance from the broker.
const CLEANUP_TIME: Duration = Duration::from_secs(1);

pub struct Drain {
    pub tasks: TaskTracker,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<Presence>,
    pub chat: Arc<Chat>,
    pub grace: Duration,
}

impl Drain {
    pub async fn run(self) {
        let deadline = Instant::now() + self.grace;
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tasks.len(),
                "grace period over; closing the rest"
            );
        }
        if self.broker.shared() {
            self.leave(deadline).await;
        }
    }

    /// Removes this instance's entries once its clients had a moment to
    /// reconnect elsewhere; only those who did not are announced as gone.
    /// Done by `deadline`, whatever the broker does.
    async fn leave(&self, deadline: Instant) {
        let reclaim_until = (Instant::now() + RECLAIM_WINDOW).min(deadline - CLEANUP_TIME);
        tokio::time::sleep_until(reclaim_until).await;
        let cleanup = async {
            let departed = self.presence.depart().await?;
            let count = departed.len();
            for event in departed {
                self.chat.on_presence(event).await;
            }
            Ok::<usize, crate::broker::BrokerError>(count)
        };
        let until = deadline.max(Instant::now() + CLEANUP_TIME);
        match tokio::time::timeout_at(until, cleanup).await {
            Ok(Ok(departed)) => tracing::info!(departed, "removed this instance from the broker"),
            _ => {
                tracing::warn!("could not remove this instance from the broker; its entries expire")
            }
        }
    }
}
