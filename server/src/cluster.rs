//! Membership of this instance in the cluster (Redis mode only): refreshes
//! its heartbeat, registers its state again when Redis lost it, and sweeps
//! the entries of instances whose heartbeat expired (crash, kill -9, lost
//! network), telling their rooms that those participants left.

use crate::store::RedisStore;
use crate::{chat, AppState};
use std::sync::Arc;

pub async fn run(app: Arc<AppState>, redis: RedisStore, status: Arc<crate::health::RedisStatus>) {
    let ttl = app.config.heartbeat_ttl();
    // Three beats per TTL: one lost beat does not get an instance swept.
    let mut tick = tokio::time::interval(ttl / 3);
    let mut registered = false;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match redis.heartbeat(ttl).await {
            Ok(alive) => {
                if !status.commands_up() {
                    tracing::info!("Redis commands answer again");
                }
                status.set_commands(true);
                if !alive || !registered {
                    registered = register_again(&app, &redis).await;
                }
            }
            Err(err) => {
                if status.commands_up() {
                    tracing::warn!(error = %err, "Redis heartbeat failed; serving local clients only");
                }
                status.set_commands(false);
                continue;
            }
        }
        match redis.sweep().await {
            Ok(removed) => {
                for (room, pseudo) in removed {
                    tracing::info!(room, pseudo, "swept a participant of a dead instance");
                    chat::announce_departure(&app, &room, &pseudo).await;
                }
            }
            Err(err) => tracing::debug!(error = %err, "sweep failed"),
        }
    }
}

/// True once this instance's members and relay clients are in Redis.
async fn register_again(app: &AppState, redis: &RedisStore) -> bool {
    match app.store.register_again(redis).await {
        Ok(rooms) => {
            tracing::info!(rooms = rooms.len(), "registered this instance in Redis");
            for room in rooms {
                app.presence_changed(&room).await;
            }
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not register this instance in Redis; will retry");
            false
        }
    }
}
