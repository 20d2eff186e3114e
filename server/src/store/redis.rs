//! The shared state of all instances in Redis: who is in which room on which
//! instance, nicknames, relay registrations, heartbeats.
//! Multi-key changes run as Lua scripts so that two instances never see half
//! of one. Commands go through one auto-reconnecting multiplexed connection.

use super::keys::Keys;
use super::{Claim, Member};
use crate::hub::ConnId;
use crate::redis_client::RedisStatus;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisResult, Script};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use uuid::Uuid;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/leave.lua")));
static PURGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/purge.lua")));

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    instance: Uuid,
    /// Lifetime of the heartbeat key.
    ttl: Duration,
    status: Arc<RedisStatus>,
}

impl RedisStore {
    /// Creates the connection lazily: an unreachable Redis at start must not
    /// stop the server, so the first command connects (and later ones
    /// reconnect). Short timeouts keep an outage from stalling clients.
    pub fn new(
        client: redis::Client,
        keys: Keys,
        instance: Uuid,
        ttl: Duration,
        status: Arc<RedisStatus>,
    ) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisStore {
            conn,
            keys,
            instance,
            ttl,
            status,
        })
    }

    /// Whether the last command got an answer. While it did not, callers
    /// skip Redis instead of waiting for a timeout on every message; the
    /// heartbeat keeps probing and flips it back.
    pub fn status(&self) -> &RedisStatus {
        &self.status
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Takes the nickname; on a reclaim, also returns the connection that
    /// gave way.
    pub async fn claim(
        &self,
        room: &str,
        conn: ConnId,
        member: &Member,
        previous_key: Option<&str>,
    ) -> RedisResult<(Claim, Option<ConnId>)> {
        let key = member.pseudo.key();
        // The member as stored in the room's members hash; the scripts read
        // `key`, `session` and `instance` back.
        let json = serde_json::json!({
            "pseudo": member.pseudo.as_str(),
            "key": key,
            "session": member.session,
            "instance": self.instance,
        })
        .to_string();
        let (taken, replaced): (u8, String) = CLAIM
            .key(self.keys.members(room))
            .key(self.keys.pseudos(room))
            .key(self.keys.instance_chat(self.instance))
            .arg(conn.to_string())
            .arg(&key)
            .arg(previous_key.unwrap_or(""))
            .arg(json)
            .arg(member.session.to_string())
            .arg(room)
            .arg(self.keys.prefix())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match (taken, replaced.parse::<ConnId>()) {
            (0, _) => (Claim::Taken, None),
            (_, Ok(replaced)) => (Claim::Reclaimed, Some(replaced)),
            (_, Err(_)) => (Claim::Joined, None),
        })
    }

    /// True if the connection was still a member (not replaced or swept).
    pub async fn leave(&self, room: &str, conn: ConnId, member: &Member) -> RedisResult<bool> {
        let removed: u8 = LEAVE
            .key(self.keys.members(room))
            .key(self.keys.pseudos(room))
            .key(self.keys.instance_chat(self.instance))
            .arg(conn.to_string())
            .arg(member.pseudo.key())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(removed == 1)
    }

    pub async fn count(&self, room: &str) -> RedisResult<u64> {
        self.conn.clone().hlen(self.keys.members(room)).await
    }

    pub async fn relay_register(
        &self,
        action: &str,
        id: ConnId,
        registration: &str,
    ) -> RedisResult<()> {
        redis::pipe()
            .atomic()
            .sadd(self.keys.relay_action(action), id.to_string())
            .ignore()
            .set(self.keys.relay_client(id), registration)
            .ignore()
            .hset(
                self.keys.instance_relay(self.instance),
                id.to_string(),
                action,
            )
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    pub async fn relay_unregister(&self, action: &str, id: ConnId) -> RedisResult<()> {
        redis::pipe()
            .atomic()
            .srem(self.keys.relay_action(action), id.to_string())
            .ignore()
            .del(self.keys.relay_client(id))
            .ignore()
            .hdel(self.keys.instance_relay(self.instance), id.to_string())
            .ignore()
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Refreshes this instance's heartbeat. Returns false when the heartbeat
    /// had lapsed (first beat, Redis restarted empty, or this instance was
    /// swept as dead): the caller must then register its state again.
    pub async fn heartbeat(&self) -> RedisResult<bool> {
        let (previous,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.alive(self.instance))
            .arg(1)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .arg("GET")
            .sadd(self.keys.instances(), self.instance.to_string())
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(previous.is_some())
    }

    /// Removes the entries of instances whose heartbeat expired. Returns the
    /// (room, nickname) of every participant removed.
    pub async fn sweep(&self) -> RedisResult<Vec<(String, String)>> {
        self.purge("").await
    }

    /// Removes all of this instance's entries, heartbeat included (clean
    /// shutdown). Returns the (room, nickname) of the participants removed:
    /// those who did not reconnect elsewhere meanwhile.
    pub async fn remove_instance(&self) -> RedisResult<Vec<(String, String)>> {
        self.purge(&self.instance.to_string()).await
    }

    /// Removes this instance's entries but keeps it alive (before a resync).
    pub async fn remove_own_entries(&self) -> RedisResult<Vec<(String, String)>> {
        let removed = self.remove_instance().await?;
        self.heartbeat().await?;
        Ok(removed)
    }

    async fn purge(&self, instance: &str) -> RedisResult<Vec<(String, String)>> {
        let flat: Vec<String> = PURGE
            .arg(self.keys.prefix())
            .arg(instance)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect())
    }
}
