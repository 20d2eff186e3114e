//! The shared state of all instances in Redis: who is in which room,
//! nicknames, relay registrations.
//!
//! Everything of one room (or one relay action) lives under its partition's
//! hash tag, and every change is one script on those keys, so that two
//! instances never see half of one and a Redis Cluster runs each in one
//! slot. Entries belong to the instance that wrote them: each live instance
//! refreshes its own, per room and per action, and an instance's entries
//! whose time ran out (crash, kill -9, lost network) are removed by the
//! next script that touches that room: no step scans all keys or all
//! instances.

use super::client::Commands;
use super::keys::Keys;
use crate::broker::{Claim, Claimed, Holder, LinkStatus, Refreshed, RelayClient, Roster, Seat};
use crate::fanout::ConnId;
use redis::{AsyncCommands, RedisResult, Script};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use uuid::Uuid;

macro_rules! room_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/expiry.lua"),
                include_str!("lua/room_prune.lua"),
                include_str!($file)
            ))
        })
    };
}

macro_rules! relay_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/expiry.lua"),
                include_str!("lua/relay_prune.lua"),
                include_str!($file)
            ))
        })
    };
}

#[path = "directory.rs"]
mod directory;

static CLAIM: LazyLock<Script> = room_script!("lua/claim.lua");
static ROOM_REFRESH: LazyLock<Script> = room_script!("lua/refresh.lua");
static ROOM_COUNT: LazyLock<Script> = room_script!("lua/room_count.lua");
static ROOM_DEPART: LazyLock<Script> = room_script!("lua/depart.lua");
static HOLDER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/holder.lua")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/leave.lua")));
static RELAY_REGISTER: LazyLock<Script> = relay_script!("lua/relay_register.lua");
static RELAY_REFRESH: LazyLock<Script> = relay_script!("lua/refresh.lua");
static RELAY_DEPART: LazyLock<Script> = relay_script!("lua/depart.lua");
static RELAY_UNREGISTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/relay_unregister.lua")));

#[derive(Clone)]
pub struct RedisPresence {
    conn: Commands,
    keys: Keys,
    instance: Uuid,
    /// How long this instance's entries live without a refresh.
    ttl: Duration,
    status: Arc<LinkStatus>,
}

/// Nicknames of members of dead instances that a script removed on the way.
type Departed = Vec<String>;

impl RedisPresence {
    pub fn new(
        conn: Commands,
        keys: Keys,
        instance: Uuid,
        ttl: Duration,
        status: Arc<LinkStatus>,
    ) -> Self {
        RedisPresence {
            conn,
            keys,
            instance,
            ttl,
            status,
        }
    }

    /// Whether scripts may remove other instances' expired entries: only
    /// once Redis has answered for a whole TTL, so that after an outage the
    /// others get the time to refresh theirs.
    fn may_prune(&self) -> &'static str {
        if self.status.answering_for() >= self.ttl {
            "1"
        } else {
            "0"
        }
    }

    /// This instance's id when it leaves a room or action for good (its
    /// entry in the instances set goes too), '' otherwise.
    fn owner_if(&self, last_here: bool) -> String {
        if last_here {
            self.instance.to_string()
        } else {
            String::new()
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    fn room_script<'a>(&self, script: &'a Script, room: &str) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.keys.members(room));
        invocation
            .key(self.keys.pseudos(room))
            .key(self.keys.room_instances(room));
        invocation
    }

    fn relay_script<'a>(&self, script: &'a Script, action: &str) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.keys.relay_clients(action));
        invocation
            .key(self.keys.relay_owners(action))
            .key(self.keys.relay_instances(action));
        invocation
    }

    /// Takes the nickname; on a reclaim, also returns the connection that
    /// gave way.
    pub async fn claim(&self, seat: Seat<'_>, previous_key: Option<&str>) -> RedisResult<Claimed> {
        let Seat { room, conn, member } = seat;
        let key = &member.key;
        // The member as stored in the room's members hash; the scripts read
        // `pseudo`, `key`, `session` and `instance` back.
        let json = serde_json::json!({
            "pseudo": member.pseudo.as_str(),
            "key": key,
            "session": member.session,
            "instance": self.instance,
            "id": member.id,
            "address": member.address,
        })
        .to_string();
        let (taken, replaced, departed, opened): (u8, String, Departed, u8) = self
            .room_script(&CLAIM, room)
            .arg(conn.to_string())
            .arg(key)
            .arg(previous_key.unwrap_or(""))
            .arg(json)
            .arg(member.session.to_string())
            .arg(self.instance.to_string())
            .arg(self.ttl_ms())
            .arg(self.may_prune())
            .invoke_async(&mut self.conn.clone())
            .await?;
        // The script answers '' when nobody gave way.
        let replaced = replaced.parse::<ConnId>().ok();
        let claim = match (taken, replaced) {
            (0, _) => Claim::Taken,
            (_, Some(_)) => Claim::Reclaimed,
            (_, None) if opened == 1 => Claim::Opened,
            (_, None) => Claim::Joined,
        };
        Ok(Claimed {
            claim,
            replaced,
            departed,
        })
    }

    /// Who holds the nickname (by its key) in the room.
    pub async fn holder(&self, room: &str, key: &str) -> RedisResult<Option<Holder>> {
        #[derive(serde::Deserialize)]
        struct Stored {
            #[serde(default)]
            id: String,
            #[serde(default)]
            address: String,
        }
        let (conn, member): (Option<String>, Option<String>) = HOLDER
            .key(self.keys.pseudos(room))
            .key(self.keys.members(room))
            .arg(key)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(conn) = conn.and_then(|conn| conn.parse::<ConnId>().ok()) else {
            return Ok(None);
        };
        let stored = member.and_then(|json| serde_json::from_str::<Stored>(&json).ok());
        let (id, address) = stored.map_or_else(Default::default, |s| (s.id, s.address));
        Ok(Some(Holder { conn, id, address }))
    }

    /// True if the connection was still a member (not replaced or swept).
    /// `last_here`: this instance has no other member in the room.
    pub async fn leave(&self, seat: Seat<'_>, last_here: bool) -> RedisResult<bool> {
        let Seat { room, conn, member } = seat;
        let removed: u8 = self
            .room_script(&LEAVE, room)
            .arg(conn.to_string())
            .arg(&member.key)
            .arg(self.owner_if(last_here))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(removed == 1)
    }

    /// The room's participant count and up to `shown` of their nicknames.
    pub async fn roster(&self, room: &str, shown: usize) -> RedisResult<Roster> {
        let (count, departed, names): (u64, Departed, Vec<String>) = self
            .room_script(&ROOM_COUNT, room)
            .arg(shown)
            .arg(self.may_prune())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Roster {
            count,
            names,
            departed,
        })
    }

    /// Keeps this instance's members of the room alive. Returns false when
    /// Redis no longer had them (restarted empty, or they expired): the
    /// caller must register them again.
    pub async fn refresh_room(&self, room: &str) -> RedisResult<Refreshed> {
        self.refresh(&mut self.room_script(&ROOM_REFRESH, room))
            .await
    }

    /// Removes every member this instance has in the room; returns their
    /// nicknames (those who reconnected elsewhere meanwhile are not there).
    pub async fn depart_room(&self, room: &str) -> RedisResult<Departed> {
        self.room_script(&ROOM_DEPART, room)
            .arg(self.instance.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
    }

    pub async fn relay_register(
        &self,
        action: &str,
        id: ConnId,
        registration: &str,
    ) -> RedisResult<()> {
        self.relay_script(&RELAY_REGISTER, action)
            .arg(id.to_string())
            .arg(registration)
            .arg(self.instance.to_string())
            .arg(self.ttl_ms())
            .arg(self.may_prune())
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// `last_here`: this instance has no other client of the action.
    pub async fn relay_unregister(
        &self,
        action: &str,
        id: ConnId,
        last_here: bool,
    ) -> RedisResult<()> {
        self.relay_script(&RELAY_UNREGISTER, action)
            .arg(id.to_string())
            .arg(self.owner_if(last_here))
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// The action's registered clients with the instance each is on.
    pub async fn relay_clients(&self, action: &str) -> RedisResult<Vec<RelayClient>> {
        let (clients, owners): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(self.keys.relay_clients(action))
            .hgetall(self.keys.relay_owners(action))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(clients
            .into_iter()
            .filter_map(|(id, registration)| {
                let instance = owners.get(&id)?.parse().ok()?;
                Some(RelayClient {
                    id: id.parse().ok()?,
                    registration,
                    instance,
                })
            })
            .collect())
    }

    /// Like [`RedisPresence::refresh_room`], for the clients of an action.
    pub async fn refresh_action(&self, action: &str) -> RedisResult<Refreshed> {
        let mut refreshed = self
            .refresh(&mut self.relay_script(&RELAY_REFRESH, action))
            .await?;
        // The relay's script lists the client ids it removed: no one to
        // announce.
        refreshed.departed.clear();
        Ok(refreshed)
    }

    async fn refresh(&self, script: &mut redis::ScriptInvocation<'_>) -> RedisResult<Refreshed> {
        let (present, departed): (u8, Departed) = script
            .arg(self.instance.to_string())
            .arg(self.ttl_ms())
            .arg(self.may_prune())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Refreshed {
            present: present == 1,
            departed,
        })
    }

    pub async fn depart_action(&self, action: &str) -> RedisResult<()> {
        self.relay_script(&RELAY_DEPART, action)
            .arg(self.instance.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Whether Redis answers (with nothing to refresh, the membership task
    /// still needs to know).
    pub async fn ping(&self) -> RedisResult<()> {
        let _: String = self.conn.clone().ping().await?;
        Ok(())
    }
}
