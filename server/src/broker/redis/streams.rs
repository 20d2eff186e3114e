//! Room streams in Redis: per room a HASH (epoch, newest offset) and a
//! LIST of the last stamped frames, both under the room's hash tag. The
//! append script assigns the offset, stores and publishes in one step
//! (SPUBLISH in a Redis Cluster: the room's channel is in the same slot),
//! checking the room's mutes and slow mode (keys beside the stream, under
//! the same hash tag) on the way.

use super::client::{publish_command, Commands};
use super::keys::Keys;
use crate::broker::{
    id_marker, stamp, Appended, BrokerError, Entry, Envelope, LinkStatus, Sanction, Stored,
};
use crate::clock::now_ms;
use crate::fanout::Topic;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use redis::Script;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

/// A room nobody talks in for a week is forgotten (a later event starts a
/// new epoch).
pub const TTL_SECS: u64 = 7 * 24 * 3600;

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/append.lua")));

#[derive(Clone)]
pub struct RedisStreams {
    conn: Commands,
    keys: Keys,
    instance: Uuid,
    status: Arc<LinkStatus>,
}

impl RedisStreams {
    pub fn new(conn: Commands, keys: Keys, instance: Uuid, status: Arc<LinkStatus>) -> Self {
        RedisStreams {
            conn,
            keys,
            instance,
            status,
        }
    }

    pub async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        self.reachable()?;
        let header = Envelope::new(self.instance, None, Utf8Bytes::from_static("")).encode();
        let body = entry.frame.strip_prefix('{').unwrap_or(entry.frame);
        // Every key the script may touch is named, all under the room's tag.
        let author = entry.author.unwrap_or_default();
        let (old, new) = entry.replace.unwrap_or_default();
        let appended: redis::RedisResult<(String, u8)> = APPEND
            .key(self.keys.stream_meta(room))
            .key(self.keys.stream_events(room))
            .key(self.keys.channel(&Topic::Room(room.to_owned())))
            .key(self.keys.sanction(room, Sanction::Mute, author))
            .key(self.keys.slow_mode(room))
            .key(self.keys.slow_wait(room, author))
            .arg(body)
            .arg(stamp::new_epoch())
            .arg(HISTORY_LEN)
            .arg(TTL_SECS)
            .arg(header)
            .arg(publish_command(&self.conn))
            .arg(entry.once.map(id_marker).unwrap_or_default())
            .arg(if entry.author.is_some() { "1" } else { "" })
            .arg(old)
            .arg(new)
            .invoke_async(&mut self.conn.clone())
            .await;
        let (answer, status) = appended.map_err(|err| self.failed(err))?;
        let number = || answer.parse::<u64>().unwrap_or(0);
        Ok(match status {
            0 => Appended::New(answer.into()),
            1 => Appended::Repeat(answer.into()),
            2 => Appended::Gone,
            3 => Appended::Muted { until_ms: number() },
            _ => Appended::Slowed {
                retry_after_ms: number(),
            },
        })
    }

    pub async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        key: &str,
        until_ms: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.reachable()?;
        let name = self.keys.sanction(room, sanction, key);
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<()> = match until_ms {
            Some(until) => {
                let left = until.saturating_sub(now_ms()).max(1);
                redis::cmd("SET")
                    .arg(&name)
                    .arg(until)
                    .arg("PX")
                    .arg(left)
                    .query_async(&mut conn)
                    .await
            }
            None => redis::cmd("DEL").arg(&name).query_async(&mut conn).await,
        };
        done.map_err(|err| self.failed(err))
    }

    pub async fn banned(&self, room: &str, key: &str) -> Result<Option<u64>, BrokerError> {
        self.reachable()?;
        let name = self.keys.sanction(room, Sanction::Ban, key);
        let until: redis::RedisResult<Option<u64>> = redis::cmd("GET")
            .arg(name)
            .query_async(&mut self.conn.clone())
            .await;
        until.map_err(|err| self.failed(err))
    }

    pub async fn slow_mode(&self, room: &str, seconds: u64) -> Result<(), BrokerError> {
        self.reachable()?;
        let name = self.keys.slow_mode(room);
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<()> = if seconds == 0 {
            redis::cmd("DEL").arg(&name).query_async(&mut conn).await
        } else {
            let mut set = redis::cmd("SET");
            set.arg(&name).arg(seconds).arg("EX").arg(TTL_SECS);
            set.query_async(&mut conn).await
        };
        done.map_err(|err| self.failed(err))
    }

    pub async fn read(&self, room: &str) -> Result<Stored, BrokerError> {
        self.reachable()?;
        let (meta, events) = (self.keys.stream_meta(room), self.keys.stream_events(room));
        let read: redis::RedisResult<(Option<String>, Option<u64>, Vec<String>)> = redis::pipe()
            .atomic()
            .hget(&meta, "epoch")
            .hget(&meta, "offset")
            .lrange(&events, 0, -1)
            .query_async(&mut self.conn.clone())
            .await;
        let (epoch, offset, events) = read.map_err(|err| self.failed(err))?;
        Ok(Stored {
            epoch: epoch.unwrap_or_default(),
            offset: offset.unwrap_or(0),
            events: events.into_iter().map(Utf8Bytes::from).collect(),
        })
    }

    /// Fails at once while Redis is known to be down, rather than making
    /// every sender wait for a timeout; the heartbeat and the pub/sub
    /// reconnect flip it back as soon as Redis answers.
    fn reachable(&self) -> Result<(), BrokerError> {
        if self.status.commands_up() {
            return Ok(());
        }
        Err(BrokerError::Unreachable)
    }

    fn failed(&self, err: redis::RedisError) -> BrokerError {
        crate::metrics::error("redis", "stream");
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            self.status.set_commands(false);
        }
        super::broker_error(err)
    }
}
