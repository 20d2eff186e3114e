//! Webhook delivery state in this process's memory: the marked rooms, and
//! per room its lease and cursor (see `crate::webhook`).

use crate::broker::Position;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Default)]
pub struct Hooks {
    /// Room -> its mark (unique: drawn from `next_mark`).
    marks: HashMap<String, u64>,
    next_mark: u64,
    /// Room -> the instance delivering it, until when.
    leases: HashMap<String, (Uuid, Instant)>,
    cursors: HashMap<String, Position>,
    /// Rooms the data file knows as the webhook's (durable mode).
    written: HashSet<String>,
}

impl Hooks {
    /// The webhook's rooms as the data file keeps them: those with
    /// events after their cursor are marked again.
    pub fn restored(rooms: Vec<(String, Option<Position>, bool)>) -> Hooks {
        let mut hooks = Hooks::default();
        for (room, cursor, behind) in rooms {
            if behind {
                hooks.mark(&room);
            }
            if let Some(cursor) = cursor {
                hooks.cursors.insert(room.clone(), cursor);
            }
            hooks.written.insert(room);
        }
        hooks
    }

    /// Marks the room; true the first time a room is marked, which the
    /// data file must then learn (a mark is not written each time: the
    /// cursor behind the room's newest event says it).
    pub fn mark(&mut self, room: &str) -> bool {
        self.next_mark += 1;
        self.marks.insert(room.to_owned(), self.next_mark);
        !self.cursors.contains_key(room) && self.written.insert(room.to_owned())
    }

    pub fn marked(&self) -> Vec<String> {
        self.marks.keys().cloned().collect()
    }

    pub fn mark_of(&self, room: &str) -> String {
        self.marks.get(room).map(u64::to_string).unwrap_or_default()
    }

    /// The room's cursor if this instance holds (now) its lease.
    pub fn lease(&mut self, room: &str, me: Uuid, ttl: Duration) -> Option<Option<Position>> {
        self.hold(room, me, ttl)
            .then(|| self.cursors.get(room).cloned())
    }

    pub fn advance(&mut self, room: &str, me: Uuid, delivered: &Position, ttl: Duration) -> bool {
        let held = self.holder(room) == Some(me) && self.hold(room, me, ttl);
        if held {
            self.cursors.insert(room.to_owned(), delivered.clone());
        }
        held
    }

    pub fn settle(&mut self, room: &str, me: Uuid, mark: &str) -> bool {
        if self.mark_of(room) != mark {
            return false;
        }
        self.marks.remove(room);
        self.release(room, me);
        true
    }

    pub fn release(&mut self, room: &str, me: Uuid) {
        if self.holder(room) == Some(me) {
            self.leases.remove(room);
        }
    }

    /// The instance holding the room's lease, if it has not expired.
    fn holder(&self, room: &str) -> Option<Uuid> {
        let (holder, until) = self.leases.get(room)?;
        (*until > Instant::now()).then_some(*holder)
    }

    /// Takes or renews the lease unless another instance holds it.
    fn hold(&mut self, room: &str, me: Uuid, ttl: Duration) -> bool {
        if self.holder(room).is_some_and(|holder| holder != me) {
            return false;
        }
        let until = Instant::now() + ttl;
        self.leases.insert(room.to_owned(), (me, until));
        true
    }
}
