//! `HISTORY_MAX_AGE` on Redis, off the append path: a room's events list
//! lives as long as the age limit after its last append (so a room nobody
//! writes to any more loses it all at once, by Redis itself), and a pass
//! every tenth of the limit pops the events past it from the rooms this
//! instance appended to. `HISTORY_MAX_EVENTS` stays in the append script:
//! one constant-time `LTRIM` per append is what bounds Redis memory exactly.

use super::client::Commands;
use super::keys::Keys;
use crate::broker::retention::Retention;
use crate::clock::now_ms;
use parking_lot::Mutex;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

static TRIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/trim.lua")));

pub struct Trimmer {
    conn: Commands,
    keys: Keys,
    retention: Retention,
    /// Rooms this instance appended to that still hold events, with a count
    /// of appends: a room found empty leaves only if nothing was appended
    /// to it meanwhile.
    rooms: Mutex<HashMap<String, u64>>,
}

impl Trimmer {
    pub fn new(conn: Commands, keys: Keys, retention: Retention) -> Arc<Self> {
        Arc::new(Trimmer {
            conn,
            keys,
            retention,
            rooms: Mutex::default(),
        })
    }

    /// Notes an append to the room.
    pub fn appended(&self, room: &str) {
        if self.retention.max_age.is_none() {
            return;
        }
        let mut rooms = self.rooms.lock();
        match rooms.get_mut(room) {
            Some(appends) => *appends += 1,
            None => {
                rooms.insert(room.to_owned(), 1);
            }
        }
    }

    /// Trims by age until the instance stops (supervised; only with an
    /// age limit).
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.retention.every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.pass().await;
        }
    }

    async fn pass(&self) {
        let Some(cutoff) = self.retention.cutoff_ms(now_ms()) else {
            return;
        };
        let rooms: Vec<(String, u64)> = self
            .rooms
            .lock()
            .iter()
            .map(|(room, appends)| (room.clone(), *appends))
            .collect();
        let mut trimmed = 0;
        for (room, appends) in rooms {
            let done: redis::RedisResult<(u64, u64)> = TRIM
                .key(self.keys.stream_events(&room))
                .arg(cutoff)
                .invoke_async(&mut self.conn.clone())
                .await;
            match done {
                Ok((popped, left)) => {
                    trimmed += popped;
                    let mut rooms = self.rooms.lock();
                    if left == 0 && rooms.get(&room) == Some(&appends) {
                        rooms.remove(&room);
                    }
                }
                // Redis away: the next pass tries again.
                Err(err) => {
                    tracing::debug!(room, error = %err, "rooms not trimmed by age");
                    break;
                }
            }
        }
        crate::metrics::history_trimmed(trimmed);
    }
}
