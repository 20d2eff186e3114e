//! Presence, nicknames and the relay registry behind one API, so
//! the chat and relay code read the same in embedded and Redis mode.
//!
//! With Redis, Redis decides (nicknames are unique across instances, counts
//! are totals) and [`local::Local`] mirrors this instance's part of it. When
//! a Redis call fails, the instance goes on alone with its local view and
//! says so in the logs; the membership task (`crate::cluster`) registers
//! the local view again once Redis answers.

pub mod keys;
mod local;
pub mod redis;

use crate::hub::{ConnId, Topic};
use crate::metrics;
use crate::nickname;
use app::protocol::{Pseudo, RoomSummary};
use axum::extract::ws::Utf8Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use local::{Local, MemberEntry, RelayEntry};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use self::redis::Departed;
pub use self::redis::RedisStore;
use ::redis::{RedisError, RedisResult};

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
    /// Likewise, and the room had nobody before: this join opened it.
    Opened,
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
    /// (room, nickname) of members of dead instances that Redis removed,
    /// to be announced as gone.
    departures: Mutex<Vec<(String, String)>>,
    /// Rooms and actions changed here while Redis did not answer: Redis
    /// must be told their state again.
    stale: Mutex<HashSet<Topic>>,
}

/// A room's line in the room list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomEntry {
    pub count: u64,
    pub activity: u64,
    pub updated_ms: u64,
}

/// Instances write their rooms' entries every few seconds (the counts'
/// full refresh); one not written for this long belongs to rooms whose
/// instances died or emptied without saying so.
const ROOM_ENTRY_TTL_MS: u64 = 15_000;

impl RoomEntry {
    /// `<count> <activity> <updated ms>`, as stored.
    fn parse(value: &str) -> Option<RoomEntry> {
        let mut numbers = value.split(' ').map(str::parse::<u64>);
        let entry = RoomEntry {
            count: numbers.next()?.ok()?,
            activity: numbers.next()?.ok()?,
            updated_ms: numbers.next()?.ok()?,
        };
        Some(entry)
    }

    fn is_fresh(&self, now_ms: u64) -> bool {
        self.count > 0 && self.updated_ms + ROOM_ENTRY_TTL_MS >= now_ms
    }
}

impl std::fmt::Display for RoomEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.count, self.activity, self.updated_ms)
    }
}

/// (room, connection, nickname) of a member who lost its nickname to a
/// participant of another instance who held it in Redis.
pub type Conflict = (String, ConnId, String);

/// How many rooms and actions a refresh sends to Redis at once.
const REFRESH_CONCURRENCY: usize = 32;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data
    // half-updated in a way that matters more than losing the instance.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Store {
            local: Mutex::default(),
            redis,
            conflicts: Mutex::default(),
            departures: Mutex::default(),
            stale: Mutex::default(),
        }
    }

    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// Redis, unless it is known to be unreachable right now (then the
    /// change is made locally and the topic is marked for a resync).
    fn reachable(&self, topic: impl FnOnce() -> Topic) -> Option<&RedisStore> {
        let redis = self.redis.as_ref()?;
        if redis.status().commands_up() {
            return Some(redis);
        }
        lock(&self.stale).insert(topic());
        None
    }

    fn failed(&self, redis: &RedisStore, operation: &'static str, topic: Topic, err: &RedisError) {
        metrics::error("redis", operation);
        tracing::warn!(operation, error = %err, "Redis call failed; using this instance's local state until it answers again");
        redis.status().set_commands(false);
        lock(&self.stale).insert(topic);
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        lock(&self.local)
    }

    fn departed(&self, room: &str, pseudos: Departed) {
        if !pseudos.is_empty() {
            lock(&self.departures).extend(pseudos.into_iter().map(|p| (room.to_owned(), p)));
        }
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
        let previous_key = previous.map(nickname::key);
        let topic = || Topic::Room(room.to_owned());
        if let Some(redis) = self.reachable(topic) {
            match redis
                .claim(room, conn, member, previous_key.as_deref())
                .await
            {
                Ok((claim, replaced, departed)) => {
                    self.departed(room, departed);
                    if claim != Claim::Taken {
                        let mut local = self.local();
                        if let Some(replaced) = replaced {
                            local.forget(room, replaced);
                        }
                        local.mirror(room, conn, member, previous_key.as_deref());
                    }
                    return claim;
                }
                Err(err) => self.failed(redis, "claim", topic(), &err),
            }
        }
        self.local()
            .claim(room, conn, member, previous_key.as_deref())
    }

    /// True if the connection was still the member (not replaced by a newer
    /// connection of the same session, nor swept).
    pub async fn leave(&self, room: &str, conn: ConnId, member: &Member) -> bool {
        let (local, last_here) = {
            let mut local = self.local();
            (local.leave(room, conn, member), local.count(room) == 0)
        };
        let topic = || Topic::Room(room.to_owned());
        if let Some(redis) = self.reachable(topic) {
            match redis.leave(room, conn, member, last_here).await {
                Ok(removed) => return removed,
                Err(err) => self.failed(redis, "leave", topic(), &err),
            }
        }
        local
    }

    /// Participants of the room (all instances with Redis, this one
    /// without), and the nicknames of up to `shown` of them.
    pub async fn online(&self, room: &str, shown: usize) -> (u64, Vec<String>) {
        let topic = || Topic::Room(room.to_owned());
        if let Some(redis) = self.reachable(topic) {
            match redis.online(room, shown).await {
                Ok((count, departed, names)) => {
                    self.departed(room, departed);
                    return (count, names);
                }
                Err(err) => self.failed(redis, "count", topic(), &err),
            }
        }
        self.local().online(room, shown)
    }

    /// Records a room's count and activity in the room list.
    pub async fn index_room(&self, room: &str, count: u64, activity: u64) {
        let entry = RoomEntry {
            count,
            activity,
            updated_ms: crate::now_ms(),
        };
        if let Some(redis) = &self.redis {
            // Known to be down: the list waits rather than the counts.
            if !redis.status().commands_up() {
                return;
            }
            if let Err(err) = redis.index_room(room, &entry).await {
                tracing::debug!(room, error = %err, "cannot update the room list");
            }
            return;
        }
        self.local().index_room(room, entry);
    }

    /// The busiest rooms with participants, at most `shown`.
    pub async fn busiest_rooms(&self, shown: usize) -> anyhow::Result<Vec<RoomSummary>> {
        let now = crate::now_ms();
        let mut rooms = match &self.redis {
            Some(redis) if !redis.status().commands_up() => anyhow::bail!("Redis is down"),
            Some(redis) => redis.room_index(now).await?,
            None => self.local().room_index(now),
        };
        rooms.sort_by(|(a, x), (b, y)| y.count.cmp(&x.count).then_with(|| a.cmp(b)));
        Ok(rooms
            .into_iter()
            .take(shown)
            .map(|(name, entry)| RoomSummary {
                name,
                count: entry.count,
                activity: entry.activity,
            })
            .collect())
    }

    /// Records a relay client under its action, with its registration
    /// message (the first JSON it sent).
    pub async fn relay_register(&self, action: &str, id: ConnId, registration: &Utf8Bytes) {
        self.local()
            .relay_register(action, id, registration.clone());
        let topic = || Topic::Action(action.to_owned());
        if let Some(redis) = self.reachable(topic) {
            if let Err(err) = redis.relay_register(action, id, registration).await {
                self.failed(redis, "relay_register", topic(), &err);
            }
        }
    }

    pub async fn relay_unregister(&self, action: &str, id: ConnId) {
        let last_here = {
            let mut local = self.local();
            local.relay_unregister(action, id);
            local.action_clients(action).is_empty()
        };
        let topic = || Topic::Action(action.to_owned());
        if let Some(redis) = self.reachable(topic) {
            if let Err(err) = redis.relay_unregister(action, id, last_here).await {
                self.failed(redis, "relay_unregister", topic(), &err);
            }
        }
    }

    /// Keeps this instance's entries alive in Redis, room by room and
    /// action by action, and makes Redis hold exactly the local view again
    /// wherever it lost part of it (restart, expiry) or missed changes made
    /// while it did not answer; with `everything`, in every room and action
    /// (after a failed refresh). Returns the rooms whose participants may
    /// have changed.
    pub async fn refresh(&self, redis: &RedisStore, everything: bool) -> RedisResult<Vec<String>> {
        let stale = std::mem::take(&mut *lock(&self.stale));
        let (members, relay) = self.snapshot();
        let mut topics: HashSet<Topic> = members
            .iter()
            .map(|(room, _, _)| Topic::Room(room.clone()))
            .chain(
                relay
                    .iter()
                    .map(|(action, _, _)| Topic::Action(action.clone())),
            )
            .collect();
        topics.extend(stale.iter().cloned());
        let result = stream::iter(topics)
            .map(|topic| {
                let resync = everything || stale.contains(&topic);
                async move {
                    let changed = self.refresh_topic(redis, &topic, resync).await?;
                    Ok::<_, RedisError>(changed.then_some(topic))
                }
            })
            .buffer_unordered(REFRESH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await;
        match result {
            Ok(changed) => Ok(changed
                .into_iter()
                .flatten()
                .filter_map(|topic| match topic {
                    Topic::Room(room) => Some(room),
                    Topic::Action(_) => None,
                })
                .collect()),
            Err(err) => {
                // Told again next time, in full.
                lock(&self.stale).extend(stale);
                Err(err)
            }
        }
    }

    /// True if the topic was registered again.
    async fn refresh_topic(
        &self,
        redis: &RedisStore,
        topic: &Topic,
        resync: bool,
    ) -> RedisResult<bool> {
        let present = match topic {
            Topic::Room(room) => {
                let (present, departed) = redis.refresh_room(room).await?;
                self.departed(room, departed);
                present
            }
            Topic::Action(action) => redis.refresh_action(action).await?,
        };
        if present && !resync {
            return Ok(false);
        }
        match topic {
            Topic::Room(room) => self.resync_room(redis, room).await?,
            Topic::Action(action) => self.resync_action(redis, action).await?,
        }
        Ok(true)
    }

    /// Replaces this instance's entries of a room in Redis with its local
    /// view. Whoever Redis still had but who left meanwhile is announced as
    /// gone; whoever lost a nickname to another instance's holder is told.
    async fn resync_room(&self, redis: &RedisStore, room: &str) -> RedisResult<()> {
        let stale = redis.depart_room(room).await?;
        let members = self.local().room_members(room);
        for (conn, member) in &members {
            let (claim, _, departed) = redis.claim(room, *conn, member, None).await?;
            self.departed(room, departed);
            if claim == Claim::Taken {
                // Taken here while Redis was away, and held in Redis by
                // somebody else: they keep it, this connection gives it up.
                tracing::warn!(%conn, room, pseudo = %member.pseudo, "nickname taken on another instance while Redis was away; it stays with them");
                self.local().leave(room, *conn, member);
                lock(&self.conflicts).push((room.to_owned(), *conn, member.pseudo.to_string()));
            }
        }
        // Whoever left while the entries above were written was removed
        // from Redis before being written back: remove them again.
        let now = self.local().room_members(room);
        for (conn, member) in &members {
            if !now.iter().any(|(c, _)| c == conn) {
                redis.leave(room, *conn, member, now.is_empty()).await?;
            }
        }
        let gone = stale
            .into_iter()
            .filter(|pseudo| !now.iter().any(|(_, m)| m.pseudo.as_str() == pseudo))
            .collect();
        self.departed(room, gone);
        Ok(())
    }

    async fn resync_action(&self, redis: &RedisStore, action: &str) -> RedisResult<()> {
        redis.depart_action(action).await?;
        let clients = self.local().action_clients(action);
        for (id, registration) in &clients {
            redis.relay_register(action, *id, registration).await?;
        }
        let now = self.local().action_clients(action);
        for (id, _) in &clients {
            if !now.iter().any(|(i, _)| i == id) {
                redis.relay_unregister(action, *id, now.is_empty()).await?;
            }
        }
        Ok(())
    }

    /// Removes all of this instance's entries from Redis (clean shutdown).
    /// Returns the (room, nickname) of the participants removed: those who
    /// did not reconnect elsewhere meanwhile.
    pub async fn depart(&self, redis: &RedisStore) -> RedisResult<Vec<(String, String)>> {
        let (members, relay) = self.snapshot();
        let rooms: HashSet<String> = members.into_iter().map(|(room, _, _)| room).collect();
        let actions: HashSet<String> = relay.into_iter().map(|(action, _, _)| action).collect();
        let mut departed = Vec::new();
        for room in rooms {
            let pseudos = redis.depart_room(&room).await?;
            departed.extend(pseudos.into_iter().map(|p| (room.clone(), p)));
        }
        for action in actions {
            redis.depart_action(&action).await?;
        }
        Ok(departed)
    }

    /// The nickname conflicts found by resyncs, once each.
    pub fn take_conflicts(&self) -> Vec<Conflict> {
        std::mem::take(&mut *lock(&self.conflicts))
    }

    /// The (room, nickname) of members of dead instances that Redis
    /// removed, once each: to be announced as gone.
    pub fn take_departures(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *lock(&self.departures))
    }

    fn snapshot(&self) -> (Vec<MemberEntry>, Vec<RelayEntry>) {
        let local = self.local();
        (local.members(), local.relay_clients())
    }
}
