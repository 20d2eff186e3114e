//! Presence, nicknames and the relay registry behind one API, so
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
use local::{Local, MemberEntry, RelayEntry};
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
    /// Members found holding a nickname that Redis gave to somebody else,
    /// kept until the caller acts on them (even if the resync failed later).
    conflicts: Mutex<Vec<Conflict>>,
}

/// (room, connection, nickname) of a member who lost its nickname to a
/// participant of another instance who held it in Redis.
pub type Conflict = (String, ConnId, String);

impl Store {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Store {
            local: Mutex::default(),
            redis,
            conflicts: Mutex::default(),
        }
    }

    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// Redis, unless it is known to be unreachable right now (then the
    /// change is made locally and Redis is marked for a resync).
    fn reachable(&self) -> Option<&RedisStore> {
        let redis = self.redis.as_ref()?;
        if redis.status().commands_up() {
            return Some(redis);
        }
        redis.status().mark_stale();
        None
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
                Ok((claim, replaced)) => {
                    if claim != Claim::Taken {
                        let mut local = self.local();
                        if let Some(replaced) = replaced {
                            local.forget(room, replaced);
                        }
                        local.mirror(room, conn, member, previous_key.as_deref());
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

    /// Makes Redis hold exactly this instance's local view again, after
    /// Redis lost entries (restart), swept them (missed heartbeats), or
    /// missed changes that were made locally while it did not answer.
    /// Returns the (room, nickname) of participants Redis still had but
    /// who left meanwhile, and every room whose participants may have changed.
    pub async fn resync(&self, redis: &RedisStore) -> ::redis::RedisResult<Resync> {
        let stale = redis.remove_own_entries().await?;
        let (members, relay) = self.snapshot();
        for (room, conn, member) in &members {
            if redis.claim(room, *conn, member, None).await?.0 == Claim::Taken {
                // Taken here while Redis was away, and held in Redis by
                // somebody else: they keep it, this connection gives it up.
                tracing::warn!(%conn, room, pseudo = %member.pseudo, "nickname taken on another instance while Redis was away; it stays with them");
                self.local().leave(room, *conn, member);
                self.conflicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((room.clone(), *conn, member.pseudo.to_string()));
            }
        }
        for (action, id, registration) in &relay {
            redis.relay_register(action, *id, registration).await?;
        }
        // Whoever left while the entries above were written was removed
        // from Redis before being written back: remove them again.
        let (members_now, relay_now) = self.snapshot();
        for (room, conn, member) in &members {
            if !members_now.iter().any(|(_, c, _)| c == conn) {
                redis.leave(room, *conn, member).await?;
            }
        }
        for (action, id, _) in &relay {
            if !relay_now.iter().any(|(_, i, _)| i == id) {
                redis.relay_unregister(action, *id).await?;
            }
        }
        let mut rooms: Vec<String> = stale
            .iter()
            .map(|(room, _)| room.clone())
            .chain(members.iter().map(|(room, _, _)| room.clone()))
            .collect();
        rooms.sort();
        rooms.dedup();
        let departed = stale
            .into_iter()
            .filter(|(room, pseudo)| {
                !members_now
                    .iter()
                    .any(|(r, _, m)| r == room && m.pseudo.as_str() == pseudo)
            })
            .collect();
        Ok(Resync { departed, rooms })
    }

    /// The nickname conflicts found by resyncs, once each.
    pub fn take_conflicts(&self) -> Vec<Conflict> {
        std::mem::take(&mut *self.conflicts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn snapshot(&self) -> (Vec<MemberEntry>, Vec<RelayEntry>) {
        let local = self.local();
        (local.members(), local.relay_clients())
    }
}

pub struct Resync {
    pub departed: Vec<(String, String)>,
    pub rooms: Vec<String>,
}

fn redis_failed(redis: &RedisStore, operation: &'static str, err: &::redis::RedisError) {
    metrics::error("redis", operation);
    tracing::warn!(operation, error = %err, "Redis call failed; using this instance's local state until it answers again");
    redis.status().set_commands(false);
    redis.status().mark_stale();
}
