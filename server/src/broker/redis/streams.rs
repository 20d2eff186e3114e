//! Room streams in Redis: per room a HASH (epoch, newest offset) and a
//! LIST of the last stamped frames, both under the room's hash tag. The
//! append script assigns the offset, stores and publishes in one step
//! (SPUBLISH in a Redis Cluster: the room's channel is in the same slot).

use super::client::{publish_command, Commands};
use super::keys::Keys;
use crate::broker::{id_marker, stamp, Appended, BrokerError, Envelope, LinkStatus, Stored};
use crate::fanout::Topic;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use redis::Script;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

/// A room nobody talks in for a week is forgotten (a later event starts a
/// new epoch).
const TTL_SECS: u64 = 7 * 24 * 3600;

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

    pub async fn append(
        &self,
        room: &str,
        frame: &str,
        once: Option<Uuid>,
    ) -> Result<Appended, BrokerError> {
        self.reachable()?;
        let header = Envelope::new(self.instance, None, Utf8Bytes::from_static("")).encode();
        let body = frame.strip_prefix('{').unwrap_or(frame);
        let appended: redis::RedisResult<(String, bool)> = APPEND
            .key(self.keys.stream_meta(room))
            .key(self.keys.stream_events(room))
            .key(self.keys.channel(&Topic::Room(room.to_owned())))
            .arg(body)
            .arg(stamp::new_epoch())
            .arg(HISTORY_LEN)
            .arg(TTL_SECS)
            .arg(header)
            .arg(publish_command(&self.conn))
            .arg(once.map(id_marker).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await;
        let (frame, repeat) = appended.map_err(|err| self.failed(err))?;
        Ok(Appended {
            frame: frame.into(),
            repeat,
        })
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
