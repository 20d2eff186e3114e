//! Webhook delivery state in Redis (see `crate::webhook`): one HASH of the
//! marked rooms (room -> a unique mark), and per room, under its hash tag,
//! a lease (which instance delivers it) and a cursor (up to where). Every
//! step that depends on who holds the lease is one script on the room's
//! slot.

use super::client::Commands;
use super::keys::Keys;
use super::streams::TTL_SECS;
use crate::broker::{Lease, Position, Stored};
use redis::{AsyncCommands, RedisResult, Script};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/hook_lease.lua")));
static ADVANCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/hook_advance.lua")));
static UNMARK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/hook_unmark.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/hook_release.lua")));

#[derive(Clone)]
pub struct RedisHooks {
    conn: Commands,
    keys: Keys,
    instance: Uuid,
}

impl RedisHooks {
    pub fn new(conn: Commands, keys: Keys, instance: Uuid) -> Self {
        RedisHooks {
            conn,
            keys,
            instance,
        }
    }

    pub async fn mark(&self, room: &str) -> RedisResult<()> {
        let mark = Uuid::new_v4().to_string();
        let mut conn = self.conn.clone();
        conn.hset(self.keys.hook_marks(), room, mark).await
    }

    pub async fn marked(&self) -> RedisResult<Vec<String>> {
        self.conn.clone().hkeys(self.keys.hook_marks()).await
    }

    pub async fn mark_of(&self, room: &str) -> RedisResult<String> {
        let mark: Option<String> = self.conn.clone().hget(self.keys.hook_marks(), room).await?;
        Ok(mark.unwrap_or_default())
    }

    pub async fn lease(&self, room: &str, ttl: Duration) -> RedisResult<Lease> {
        let answer: Vec<redis::Value> = LEASE
            .key(self.keys.hook_lease(room))
            .key(self.keys.hook_cursor(room))
            .key(self.keys.stream_meta(room))
            .key(self.keys.stream_events(room))
            .arg(self.instance.to_string())
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        // `{0}` when another instance holds the lease, else six fields.
        let Ok([_held, epoch, offset, stream_epoch, stream_offset, events]) =
            <[_; 6]>::try_from(answer)
        else {
            return Ok(Lease::Elsewhere);
        };
        let epoch: String = redis::from_redis_value(epoch)?;
        let cursor = (!epoch.is_empty()).then(|| Position {
            epoch,
            offset: redis::from_redis_value(offset).unwrap_or(0),
        });
        let events: Vec<String> = redis::from_redis_value(events)?;
        let stored = Stored {
            epoch: redis::from_redis_value(stream_epoch)?,
            offset: redis::from_redis_value(stream_offset)?,
            events: events.into_iter().map(Into::into).collect(),
        };
        Ok(Lease::Held { cursor, stored })
    }

    pub async fn advance(
        &self,
        room: &str,
        delivered: &Position,
        ttl: Duration,
    ) -> RedisResult<bool> {
        let moved: u8 = ADVANCE
            .key(self.keys.hook_lease(room))
            .key(self.keys.hook_cursor(room))
            .arg(self.instance.to_string())
            .arg(ttl.as_millis() as u64)
            .arg(&delivered.epoch)
            .arg(delivered.offset)
            .arg(TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(moved == 1)
    }

    pub async fn settle(&self, room: &str, mark: &str) -> RedisResult<bool> {
        let unmarked: u8 = UNMARK
            .key(self.keys.hook_marks())
            .arg(room)
            .arg(mark)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if unmarked == 0 {
            return Ok(false);
        }
        self.release(room).await?;
        Ok(true)
    }

    pub async fn release(&self, room: &str) -> RedisResult<()> {
        let _: u8 = RELEASE
            .key(self.keys.hook_lease(room))
            .arg(self.instance.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
