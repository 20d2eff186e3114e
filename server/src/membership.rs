//! This instance's entries in Redis (Redis mode only): it refreshes them
//! room by room and action by action, so that they outlive a dead instance
//! by one TTL at most, and registers them again wherever Redis lost them
//! (restart, failover, expiry) or missed changes made while it did not
//! answer. The participants of dead instances that Redis removes on the
//! way are announced by the count task.

use crate::store::RedisStore;
use crate::{chat, supervise, AppState};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long the start waits for Redis before serving without it.
const JOIN_WAIT: Duration = Duration::from_secs(1);

struct Membership {
    app: Arc<AppState>,
    redis: RedisStore,
    /// Whether Redis holds this instance's local view.
    in_sync: bool,
}

/// Probes Redis before the instance serves, then keeps its entries alive
/// in the background. An unreachable Redis does not hold the start up.
pub async fn start(app: Arc<AppState>, redis: RedisStore) {
    let mut first = Membership::new(app.clone(), redis.clone());
    let _ = tokio::time::timeout(JOIN_WAIT, first.beat()).await;
    let mut first = Some(first);
    let (restarts, shutdown) = (app.restarts.clone(), app.shutdown.clone());
    supervise::spawn("membership", restarts, shutdown, move || {
        // A restarted run starts afresh: it registers everything again.
        let membership = first
            .take()
            .unwrap_or_else(|| Membership::new(app.clone(), redis.clone()));
        membership.run()
    });
}

impl Membership {
    fn new(app: Arc<AppState>, redis: RedisStore) -> Self {
        Membership {
            app,
            redis,
            in_sync: false,
        }
    }

    async fn run(mut self) {
        let ttl = self.app.config.heartbeat_ttl();
        // Three refreshes per TTL: one lost refresh does not get an
        // instance taken for dead.
        let mut tick = tokio::time::interval_at(Instant::now() + ttl / 3, ttl / 3);
        loop {
            tokio::select! {
                _ = self.app.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat().await;
        }
    }

    async fn beat(&mut self) {
        let status = self.redis.status();
        if let Err(err) = self.redis.ping().await {
            if status.commands_up() {
                tracing::warn!(error = %err, "Redis does not answer; serving local clients only");
            }
            status.set_commands(false);
            self.in_sync = false;
            return;
        }
        if !status.commands_up() {
            tracing::info!("Redis commands answer again");
        }
        status.set_commands(true);
        let app = &self.app;
        let refreshed = app.store.refresh(&self.redis, !self.in_sync).await;
        // Told at once, whether or not the rest of the refresh went through.
        for (room, conn, pseudo) in app.store.take_conflicts() {
            chat::lost_nickname(app, &room, conn, &pseudo);
        }
        match refreshed {
            Ok(rooms) => {
                if !self.in_sync {
                    tracing::info!("this instance's presence is in Redis");
                }
                self.in_sync = true;
                for room in &rooms {
                    app.presence_changed(room).await;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not refresh this instance's entries in Redis; will retry");
                self.in_sync = false;
            }
        }
    }
}
