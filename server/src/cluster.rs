//! Membership of this instance in the cluster (Redis mode only): refreshes
//! its heartbeat, makes Redis hold its local view again whenever Redis lost
//! or missed part of it, and sweeps the entries of instances whose
//! heartbeat expired (crash, kill -9, lost network), telling their rooms
//! that those participants left.

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
    /// Since when the heartbeat has answered without a break.
    healthy_since: Option<Instant>,
}

/// Registers the instance before it serves (so that its first clients are
/// not written while a first resync runs), then keeps it registered in the
/// background. An unreachable Redis does not hold the start up.
pub async fn start(app: Arc<AppState>, redis: RedisStore) {
    let mut first = Membership::new(app.clone(), redis.clone());
    let _ = tokio::time::timeout(JOIN_WAIT, first.beat()).await;
    let mut first = Some(first);
    let (restarts, shutdown) = (app.restarts.clone(), app.shutdown.clone());
    supervise::spawn("cluster", restarts, shutdown, move || {
        // A restarted run starts afresh: it registers the instance again.
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
            healthy_since: None,
        }
    }

    async fn run(mut self) {
        let ttl = self.app.config.heartbeat_ttl();
        // Three beats per TTL: one lost beat does not get an instance swept.
        let mut tick = tokio::time::interval_at(Instant::now() + ttl / 3, ttl / 3);
        loop {
            tokio::select! {
                _ = self.app.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.beat().await {
                continue;
            }
            // After an outage longer than the TTL every heartbeat has
            // expired: give the other instances one TTL to beat again
            // before taking them for dead.
            if self
                .healthy_since
                .is_some_and(|since| since.elapsed() >= ttl)
            {
                self.sweep().await;
            }
        }
    }

    /// Refreshes the heartbeat and resyncs when needed; false if Redis
    /// did not answer.
    async fn beat(&mut self) -> bool {
        let status = self.redis.status();
        match self.redis.heartbeat().await {
            Ok(alive) => {
                if !status.commands_up() {
                    tracing::info!("Redis commands answer again");
                }
                status.set_commands(true);
                self.healthy_since.get_or_insert_with(Instant::now);
                if !alive || status.take_stale() || !self.in_sync {
                    self.in_sync = self.resync().await;
                }
                true
            }
            Err(err) => {
                if status.commands_up() {
                    tracing::warn!(error = %err, "Redis heartbeat failed; serving local clients only");
                }
                status.set_commands(false);
                self.healthy_since = None;
                false
            }
        }
    }

    /// True once Redis holds exactly this instance's local view.
    async fn resync(&self) -> bool {
        let app = &self.app;
        let resynced = app.store.resync(&self.redis).await;
        // Told at once, whether or not the rest of the resync went through.
        for (room, conn, pseudo) in app.store.take_conflicts() {
            chat::lost_nickname(app, &room, conn, &pseudo);
        }
        match resynced {
            Ok(resync) => {
                tracing::info!(
                    rooms = resync.rooms.len(),
                    "this instance's presence is in Redis"
                );
                for (room, pseudo) in &resync.departed {
                    chat::announce_departure(app, room, pseudo).await;
                }
                for room in &resync.rooms {
                    app.presence_changed(room).await;
                }
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not register this instance in Redis; will retry");
                false
            }
        }
    }

    async fn sweep(&self) {
        match self.redis.sweep().await {
            Ok(removed) => {
                for (room, pseudo) in removed {
                    tracing::info!(room, pseudo, "swept a participant of a dead instance");
                    chat::announce_departure(&self.app, &room, &pseudo).await;
                }
            }
            Err(err) => tracing::debug!(error = %err, "sweep failed"),
        }
    }
}
