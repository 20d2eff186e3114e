//! Presence, nicknames, history and the relay registry behind one API, so
//! the chat and relay code read the same in embedded and Redis mode.
//!
//! With Redis, Redis decides (nicknames are unique across instances, counts
//! are totals) and [`local::Local`] mirrors this instance's part of it. When
//! a Redis call fails, the instance goes on alone with its local view and
//! says so in the logs; the cluster task registers the local view again once
//! Redis answers.

pub mod keys;
mod local;
pub mod redis;

use crate::hub::ConnId;
use crate::metrics;
use app::protocol::Pseudo;
use axum::extract::ws::Utf8Bytes;
use local::Local;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

pub use self::redis::RedisStore;

/// A participant who joined a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pseudo: Pseudo,
    pub session: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The nickname is now this connection's.
    Joined,
    /// The same session held it on an older connection, which gave way.
    Reclaimed,
    /// Another participant holds it.
    Taken,
}

pub struct Store {
    local: Mutex<Local>,
    redis: Option<RedisStore>,
}

impl Store {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Store {
            local: Mutex::default(),
            redis,
        }
    }

    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// Redis, unless it is known to be unreachable right now.
    fn reachable(&self) -> Option<&RedisStore> {
        self.redis.as_ref().filter(|r| r.status().commands_up())
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // A panic while holding this lock cannot leave the maps half-updated
        // in a way that matters more than losing the whole instance would.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `member.pseudo` in the room for the connection; `previous` is
    /// the nickname it replaces on a rename.
    pub async fn claim(
        &self,
        room: &str,
        conn: ConnId,
        member: &Member,
        previous: Option<&Pseudo>,
    ) -> Claim {
        let previous_key = previous.map(Pseudo::key);
        if let Some(redis) = self.reachable() {
            match redis
                .claim(room, conn, member, previous_key.as_deref())
                .await
            {
                Ok(claim) => {
                    if claim != Claim::Taken {
                        self.local()
                            .mirror(room, conn, member, previous_key.as_deref());
                    }
                    return claim;
                }
                Err(err) => redis_failed(redis, "claim", &err),
            }
        }
        self.local()
            .claim(room, conn, member, previous_key.as_deref())
    }

    /// True if the connection was still the member (not replaced by a newer
    /// connection of the same session, nor swept).
    pub async fn leave(&self, room: &str, conn: ConnId, member: &Member) -> bool {
        let local = self.local().leave(room, conn, member);
        if let Some(redis) = self.reachable() {
            match redis.leave(room, conn, member).await {
                Ok(removed) => return removed,
                Err(err) => redis_failed(redis, "leave", &err),
            }
        }
        local
    }

    /// Participants of the room: all instances with Redis, this one without.
    pub async fn count(&self, room: &str) -> u64 {
        if let Some(redis) = self.reachable() {
            match redis.count(room).await {
                Ok(count) => return count,
                Err(err) => redis_failed(redis, "count", &err),
            }
        }
        self.local().count(room)
    }

    pub async fn append_history(&self, room: &str, frame: &Utf8Bytes) {
        if let Some(redis) = self.reachable() {
            match redis.append_history(room, frame).await {
                Ok(()) => return,
                Err(err) => redis_failed(redis, "history", &err),
            }
        }
        self.local().append_history(room, frame.clone());
    }

    /// The room's recent events, oldest first; only those after `after` when
    /// it is among them (a reconnecting client catching up).
    pub async fn history(&self, room: &str, after: Option<Uuid>) -> Vec<Utf8Bytes> {
        let mut frames = None;
        if let Some(redis) = self.reachable() {
            match redis.history(room).await {
                Ok(f) => frames = Some(f),
                Err(err) => redis_failed(redis, "history", &err),
            }
        }
        let frames = frames.unwrap_or_else(|| self.local().history(room));
        since(frames, after)
    }

    /// Records a relay client under its action, with its registration
    /// message (the first JSON it sent).
    pub async fn relay_register(&self, action: &str, id: ConnId, registration: &Utf8Bytes) {
        self.local()
            .relay_register(action, id, registration.clone());
        if let Some(redis) = self.reachable() {
            if let Err(err) = redis.relay_register(action, id, registration).await {
                redis_failed(redis, "relay_register", &err);
            }
        }
    }

    pub async fn relay_unregister(&self, action: &str, id: ConnId) {
        self.local().relay_unregister(action, id);
        if let Some(redis) = self.reachable() {
            if let Err(err) = redis.relay_unregister(action, id).await {
                redis_failed(redis, "relay_unregister", &err);
            }
        }
    }

    /// Writes this instance's members and relay clients to Redis again,
    /// after Redis lost them (restart) or swept them (missed heartbeats).
    /// Returns the rooms whose participants changed.
    pub async fn register_again(&self, redis: &RedisStore) -> ::redis::RedisResult<Vec<String>> {
        let (members, relay) = {
            let local = self.local();
            (local.members(), local.relay_clients())
        };
        let mut rooms = Vec::new();
        for (room, conn, member) in members {
            if redis.claim(&room, conn, &member, None).await? == Claim::Taken {
                tracing::warn!(%conn, room, pseudo = %member.pseudo, "nickname taken elsewhere while Redis was away; keeping both");
            }
            rooms.push(room);
        }
        for (action, id, registration) in relay {
            redis.relay_register(&action, id, &registration).await?;
        }
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }
}

fn redis_failed(redis: &RedisStore, operation: &'static str, err: &::redis::RedisError) {
    metrics::error("redis", operation);
    tracing::warn!(operation, error = %err, "Redis call failed; using this instance's local state until it answers again");
    redis.status().set_commands(false);
}

fn since(frames: Vec<Utf8Bytes>, after: Option<Uuid>) -> Vec<Utf8Bytes> {
    let Some(after) = after else {
        return frames;
    };
    let position = frames
        .iter()
        .rposition(|frame| crate::event_id(frame) == Some(after));
    match position {
        Some(i) => frames[i + 1..].to_vec(),
        // Too old (or unknown): everything we have; the client drops repeats.
        None => frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_returns_only_what_follows_the_last_seen_event() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let frames: Vec<Utf8Bytes> = ids
            .iter()
            .map(|id| format!(r#"{{"type":"message","id":"{id}"}}"#).into())
            .collect();
        assert_eq!(since(frames.clone(), None).len(), 3);
        assert_eq!(since(frames.clone(), Some(ids[0])), frames[1..]);
        assert!(since(frames.clone(), Some(ids[2])).is_empty());
        assert_eq!(since(frames.clone(), Some(Uuid::new_v4())).len(), 3);
    }
}
