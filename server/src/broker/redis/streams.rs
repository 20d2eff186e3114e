//! Room streams in Redis: per room a HASH (epoch, newest offset) and a
//! LIST of the last stamped frames, both under the room's hash tag. The
//! append script assigns the offset, stores and publishes in one step
//! (SPUBLISH in a Redis Cluster: the room's channel is in the same slot),
//! checking the room's mutes and slow mode (keys beside the stream, under
//! the same hash tag) on the way.

use super::client::{publish_command, Commands};
use super::keys::Keys;
use super::trim::Trimmer;
use crate::broker::retention::Retention;
use crate::broker::{
    id_marker, record_marks, record_until, sanction_record, stamp, Appended, BrokerError, Entry,
    Envelope, LinkStatus, Page, Sanction, Stored, ROOM_TTL,
};
use crate::clock::now_ms;
use crate::fanout::Topic;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use redis::Script;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

/// A room nobody talks in for a week is forgotten (a later event starts a
/// new epoch).
pub const TTL_SECS: u64 = ROOM_TTL.as_secs();

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/append.lua")));
static RANGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/range.lua")));

#[derive(Clone)]
pub struct RedisStreams {
    conn: Commands,
    keys: Keys,
    instance: Uuid,
    status: Arc<LinkStatus>,
    retention: Retention,
    trimmer: Arc<Trimmer>,
}

impl RedisStreams {
    pub fn new(
        conn: Commands,
        keys: Keys,
        instance: Uuid,
        status: Arc<LinkStatus>,
        retention: Retention,
        trimmer: Arc<Trimmer>,
    ) -> Self {
        RedisStreams {
            conn,
            keys,
            instance,
            status,
            retention,
            trimmer,
        }
    }

    /// How long a room's events live after its last append: a week, or
    /// the age limit when shorter (everything is past it by then).
    fn events_ttl_secs(&self) -> u64 {
        let age = self.retention.max_age.map_or(u64::MAX, |age| {
            age.as_secs() + u64::from(age.subsec_nanos() > 0)
        });
        TTL_SECS.min(age)
    }

    pub async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        self.reachable()?;
        let header = Envelope::new(self.instance, None, Utf8Bytes::from_static("")).encode();
        let body = entry.frame.strip_prefix('{').unwrap_or(entry.frame);
        // Every key the script may touch is named, all under the room's tag.
        let (marks, author_id) = entry.author.map_or((&[][..], ""), |a| (a.marks, a.id));
        let (old, new) = entry.replace.unwrap_or_default();
        let mut script = APPEND.key(self.keys.stream_meta(room));
        script
            .key(self.keys.stream_events(room))
            .key(self.keys.channel(&Topic::Room(room.into())))
            .key(self.keys.slow_mode(room))
            .key(self.keys.slow_wait(room, author_id));
        for mark in marks {
            script.key(self.keys.sanction(room, Sanction::Mute, mark));
        }
        let appended: redis::RedisResult<(String, u8)> = script
            .arg(body)
            .arg(stamp::new_epoch())
            .arg(self.retention.max_events.unwrap_or(u64::MAX))
            .arg(TTL_SECS)
            .arg(header)
            .arg(publish_command(&self.conn))
            .arg(
                entry
                    .once
                    .map(|once| id_marker(once.id))
                    .unwrap_or_default(),
            )
            .arg(if entry.author.is_some() { "1" } else { "" })
            .arg(old)
            .arg(new)
            .arg(entry.once.map_or("", |once| once.owner))
            .arg(HISTORY_LEN)
            .arg(self.events_ttl_secs())
            .invoke_async(&mut self.conn.clone())
            .await;
        let (answer, status) = appended.map_err(|err| self.failed(err))?;
        if status == 0 {
            self.trimmer.appended(room);
        }
        let number = || answer.parse::<u64>().unwrap_or(0);
        Ok(match status {
            0 => Appended::New(answer.into()),
            1 => Appended::Repeat(answer.into()),
            2 => Appended::Gone,
            3 => Appended::Muted { until_ms: number() },
            4 => Appended::Slowed {
                retry_after_ms: number(),
            },
            _ => Appended::Conflict,
        })
    }

    /// Sets the sanction under every mark (each key expires with it), or
    /// lifts it from these marks and every mark recorded with them.
    pub async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
        until_ms: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.reachable()?;
        let keys: Vec<String> = marks
            .iter()
            .map(|mark| self.keys.sanction(room, sanction, mark))
            .collect();
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<()> = match until_ms {
            Some(until) => {
                let left = until.saturating_sub(now_ms()).max(1);
                let record = sanction_record(until, marks);
                let mut set = redis::pipe();
                for key in &keys {
                    set.cmd("SET")
                        .arg(key)
                        .arg(&record)
                        .arg("PX")
                        .arg(left)
                        .ignore();
                }
                set.query_async(&mut conn).await
            }
            None => self.lift(room, sanction, &keys, &mut conn).await,
        };
        done.map_err(|err| self.failed(err))
    }

    async fn lift(
        &self,
        room: &str,
        sanction: Sanction,
        keys: &[String],
        conn: &mut Commands,
    ) -> redis::RedisResult<()> {
        let records: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query_async(conn).await?;
        let mut lifted: BTreeSet<String> = keys.iter().cloned().collect();
        for record in records.iter().flatten() {
            let recorded =
                record_marks(record).map(|mark| self.keys.sanction(room, sanction, mark));
            lifted.extend(recorded);
        }
        redis::cmd("DEL")
            .arg(lifted.into_iter().collect::<Vec<_>>())
            .query_async(conn)
            .await
    }

    pub async fn sanctioned(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
    ) -> Result<Option<u64>, BrokerError> {
        self.reachable()?;
        if marks.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = marks
            .iter()
            .map(|mark| self.keys.sanction(room, sanction, mark))
            .collect();
        let records: redis::RedisResult<Vec<Option<String>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn.clone())
            .await;
        let records = records.map_err(|err| self.failed(err))?;
        Ok(records
            .iter()
            .flatten()
            .filter_map(|r| record_until(r))
            .max())
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

    /// The room's position and its newest [`HISTORY_LEN`] events (what a
    /// joining member is shown).
    pub async fn read(&self, room: &str) -> Result<Stored, BrokerError> {
        self.read_range(room, -(HISTORY_LEN as isize), -1).await
    }

    /// The room's position and the retained events from list index
    /// `start` to `stop` (negative: from the newest, -1 being it).
    async fn read_range(
        &self,
        room: &str,
        start: isize,
        stop: isize,
    ) -> Result<Stored, BrokerError> {
        self.reachable()?;
        let (meta, events) = (self.keys.stream_meta(room), self.keys.stream_events(room));
        let read: redis::RedisResult<(Option<String>, Option<u64>, Vec<String>)> = redis::pipe()
            .atomic()
            .hget(&meta, "epoch")
            .hget(&meta, "offset")
            .lrange(&events, start, stop)
            .query_async(&mut self.conn.clone())
            .await;
        let (epoch, offset, events) = read.map_err(|err| self.failed(err))?;
        Ok(Stored {
            epoch: epoch.unwrap_or_default(),
            offset: offset.unwrap_or(0),
            events: events.into_iter().map(Utf8Bytes::from).collect(),
        })
    }

    /// The retained event with this id (the whole retained list is read:
    /// for moderation, not for every frame).
    pub async fn find(&self, room: &str, id: Uuid) -> Result<Option<Utf8Bytes>, BrokerError> {
        let marker = id_marker(id);
        let stored = self.read_range(room, 0, -1).await?;
        Ok(stored.events.into_iter().find(|e| e.contains(&marker)))
    }

    /// The retained events after `after` up to `upto`; `None` unless all
    /// of them are retained.
    pub async fn since(
        &self,
        room: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<Utf8Bytes>>, BrokerError> {
        let (_, first, _, events) = self.range(room, after + 1, upto, u64::MAX).await?;
        Ok((first <= after + 1).then_some(events))
    }

    /// Up to `limit` of the newest retained events below `before`.
    pub async fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, BrokerError> {
        let high = before.saturating_sub(1);
        let (epoch, first, low, events) = self.range(room, 1, high, limit as u64).await?;
        Ok(Page {
            epoch,
            events,
            oldest: low <= first,
        })
    }

    /// The room's epoch, its oldest retained offset, and its newest
    /// `most` retained events from offset `low` to `high` with the first
    /// one's offset.
    async fn range(
        &self,
        room: &str,
        low: u64,
        high: u64,
        most: u64,
    ) -> Result<(String, u64, u64, Vec<Utf8Bytes>), BrokerError> {
        self.reachable()?;
        // Lua numbers are doubles: "no limit" must stay one.
        let cap = |n: u64| n.min(1 << 52);
        let read: redis::RedisResult<(String, i64, i64, Vec<String>)> = RANGE
            .key(self.keys.stream_meta(room))
            .key(self.keys.stream_events(room))
            .arg(cap(low))
            .arg(cap(high))
            .arg(cap(most))
            .invoke_async(&mut self.conn.clone())
            .await;
        let (epoch, first, low, events) = read.map_err(|err| self.failed(err))?;
        let events = events.into_iter().map(Utf8Bytes::from).collect();
        Ok((epoch, first.max(1) as u64, low.max(1) as u64, events))
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
