//! Presence as the brokers record it: members of rooms and who holds a
//! nickname, relay clients, the room list and the live instances.

use crate::fanout::{ConnId, Hub};
use app::protocol::Pseudo;
use std::sync::Arc;
use uuid::Uuid;

/// The participant holding a nickname in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub conn: ConnId,
    /// Their author identity (see [`Member::id`]).
    pub id: String,
    /// Their address block, for anonymous participants (else empty).
    pub address: String,
}

/// A connection's place in a room, as presence records it. The member is
/// shared by the session and every record of it: a 5,000-member room kept
/// three copies of each, strings and all.
#[derive(Debug, Clone, Copy)]
pub struct Seat<'a> {
    pub room: &'a str,
    pub conn: ConnId,
    pub member: &'a Arc<Member>,
}

/// A participant who joined a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pseudo: Pseudo,
    /// The nickname as compared: two nicknames with one key are the same
    /// to a reader (`crate::nickname::key`).
    pub key: String,
    pub session: Uuid,
    /// Who they are whatever their name: what their messages record as
    /// their author (`crate::identity`).
    pub id: String,
    /// Their address block when anonymous (sanctions hold it), else empty.
    pub address: String,
}

impl Member {
    pub fn new(pseudo: Pseudo, session: Uuid) -> Self {
        Member {
            key: crate::nickname::key(&pseudo),
            pseudo,
            session,
            id: String::new(),
            address: String::new(),
        }
    }

    /// The same member, known as `id` from `address` (empty for subjects).
    pub fn by(self, id: String, address: String) -> Self {
        Member {
            id,
            address,
            ..self
        }
    }
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

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub claim: Claim,
    /// On a reclaim, the connection that gave way.
    pub replaced: Option<ConnId>,
    /// Nicknames of members of dead instances removed on the way.
    pub departed: Vec<String>,
}

/// A registered relay client, as the broker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayClient {
    pub id: ConnId,
    /// Its registration message.
    pub registration: String,
    /// The instance it is connected to.
    pub instance: Uuid,
}

/// An instance's line in the list of live instances, written by each
/// instance every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceEntry {
    pub id: Uuid,
    pub version: String,
    /// Its chat and relay connections.
    pub chat: u64,
    pub relay: u64,
    pub started_ms: u64,
    pub updated_ms: u64,
}

impl InstanceEntry {
    /// The line of the instance `id`, started then, with the connections
    /// of `hub`, now.
    pub fn of(id: Uuid, started: std::time::Instant, hub: &Hub) -> Self {
        let now = crate::clock::now_ms();
        InstanceEntry {
            id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            chat: hub.connections(crate::fanout::Kind::Chat) as u64,
            relay: hub.connections(crate::fanout::Kind::Relay) as u64,
            started_ms: now.saturating_sub(started.elapsed().as_millis() as u64),
            updated_ms: now,
        }
    }

    /// Written within [`ROOM_ENTRY_TTL_MS`]: the instance is alive.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.updated_ms + ROOM_ENTRY_TTL_MS >= now_ms
    }
}

/// A room's participants as the broker counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    pub count: u64,
    /// Up to the number asked for.
    pub names: Vec<String>,
    /// Nicknames of members of dead instances removed on the way.
    pub departed: Vec<String>,
}

/// This instance's entries of a room or action, kept alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// False when the broker no longer had them (restarted empty, or they
    /// expired): the caller must register them again.
    pub present: bool,
    /// Nicknames of members of dead instances removed on the way.
    pub departed: Vec<String>,
}

/// A room's line in the room list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomEntry {
    pub count: u64,
    pub activity: u64,
    pub updated_ms: u64,
}

/// Instances write their rooms' entries (the counts' full refresh) and
/// their own line every few seconds; one not written for this long belongs
/// to an instance that died, or to rooms whose instances died or emptied
/// without saying so.
const ROOM_ENTRY_TTL_MS: u64 = 15_000;

/// The room list as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomIndex {
    pub fresh: Vec<(String, RoomEntry)>,
    /// Rooms whose entry was stale, removed now: their instances died (or
    /// emptied them without saying so), and their members may be left to
    /// sweep.
    pub stale: Vec<String>,
}

impl RoomEntry {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.count > 0 && self.updated_ms + ROOM_ENTRY_TTL_MS >= now_ms
    }
}
