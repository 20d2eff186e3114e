//! Membership of this instance in the cluster (Redis mode only): refreshes
//! its heartbeat, makes Redis hold its local view again whenever Redis lost
//! or missed part of it, and sweeps the entries of instances whose
//! heartbeat expired (crash, kill -9, lost network), telling their rooms
//! that those participants left.

use crate::health::RedisStatus;
use crate::store::RedisStore;
use crate::{chat, AppState};
use std::sync::Arc;
use tokio::time::Instant;

pub async fn run(app: Arc<AppState>, redis: RedisStore, status: Arc<RedisStatus>) {
    let ttl = app.config.heartbeat_ttl();
    // Three beats per TTL: one lost beat does not get an instance swept.
    let mut tick = tokio::time::interval(ttl / 3);
    let mut in_sync = false;
    // Since when the heartbeat has answered without a break.
    let mut healthy_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match redis.heartbeat().await {
            Ok(alive) => {
                if !status.commands_up() {
                    tracing::info!("Redis commands answer again");
                }
                status.set_commands(true);
                healthy_since.get_or_insert_with(Instant::now);
                if !alive || status.take_stale() || !in_sync {
                    in_sync = resync(&app, &redis).await;
                }
            }
            Err(err) => {
                if status.commands_up() {
                    tracing::warn!(error = %err, "Redis heartbeat failed; serving local clients only");
                }
                status.set_commands(false);
                healthy_since = None;
                continue;
            }
        }
        // After an outage longer than the TTL every heartbeat has expired:
        // give the other instances one TTL to beat again before taking them
        // for dead.
        if healthy_since.is_some_and(|since| since.elapsed() >= ttl) {
            sweep(&app, &redis).await;
        }
    }
}

/// True once Redis holds exactly this instance's local view.
async fn resync(app: &AppState, redis: &RedisStore) -> bool {
    match app.store.resync(redis).await {
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

async fn sweep(app: &AppState, redis: &RedisStore) {
    match redis.sweep().await {
        Ok(removed) => {
            for (room, pseudo) in removed {
                tracing::info!(room, pseudo, "swept a participant of a dead instance");
                chat::announce_departure(app, &room, &pseudo).await;
            }
        }
        Err(err) => tracing::debug!(error = %err, "sweep failed"),
    }
}
