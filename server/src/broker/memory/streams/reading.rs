//! What readers get from the rooms: the events visible now, catch-up and
//! pages from the data file behind them, and retention's trim.

use super::{MemoryStreams, Room, CATCH_UP};
use crate::broker::retention::Retention;
use crate::broker::{id_marker, stamp, Page, Position, Stored};
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;

impl MemoryStreams {
    /// The retained event with this id, as stored now: from memory, else
    /// from the data file.
    pub fn find(&self, room: &str, id: uuid::Uuid) -> Option<Utf8Bytes> {
        let marker = id_marker(id);
        let rooms = self.rooms.lock();
        let held = rooms.by_name.get(room);
        if let Some(found) = held.and_then(|r| r.visible().find(|e| e.contains(&marker))) {
            return Some(found.clone());
        }
        let stored = self.store.as_ref()?.find(room, &id.to_string());
        let stored = stored.unwrap_or_else(|err| {
            tracing::error!(room, error = %err, "cannot read the data file");
            None
        })?;
        let offset = stamp::position(&stored).map(|(_, offset)| offset);
        let amended = offset.and_then(|offset| held?.amended.get(&offset));
        Some(amended.cloned().unwrap_or_else(|| stored.into()))
    }

    /// An event older than memory holds, at its offset: as overwritten
    /// meanwhile, else as the data file has it.
    pub(super) fn stored_beyond(&self, room: &Room, name: &str, offset: u64) -> Option<Utf8Bytes> {
        if let Some(frame) = room.amended.get(&offset) {
            return Some(frame.clone());
        }
        let found = self.store.as_ref()?.range(name, offset, offset).ok()?;
        found.into_iter().next().map(Utf8Bytes::from)
    }

    /// Drops the events past the retention, or below the oldest offset
    /// the data file kept (`floors`); returns how many went.
    pub fn trim(&self, retention: &Retention, now_ms: u64, floors: &HashMap<String, u64>) -> u64 {
        let mut rooms = self.rooms.lock();
        let mut trimmed = 0;
        for (name, room) in rooms.by_name.iter_mut() {
            let floor = floors.get(name).copied().unwrap_or(0);
            let floor = floor.max(retention.first_kept(room.committed));
            while let Some(oldest) = room.events.front() {
                let offset = stamp::position(oldest).map_or(0, |(_, offset)| offset);
                let past = offset < floor || retention.too_old(oldest, now_ms);
                // Pending events are the newest: never past anything.
                if !past || offset > room.committed {
                    break;
                }
                room.events.pop_front();
                trimmed += 1;
            }
        }
        trimmed
    }

    /// A long catch-up from the data file: the events after `after` up to
    /// `upto`, at most [`CATCH_UP`] of them; `None` without a file.
    pub fn since(&self, room: &str, after: u64, upto: u64) -> Option<Vec<Utf8Bytes>> {
        let store = self.store.as_ref()?;
        if upto.saturating_sub(after) > CATCH_UP {
            return None;
        }
        match store.range(room, after + 1, upto) {
            Ok(events) => Some(events.into_iter().map(Utf8Bytes::from).collect()),
            Err(err) => {
                tracing::error!(room, error = %err, "cannot read missed events from the data file");
                None
            }
        }
    }

    /// The room's stream for the webhook's deliverer: what memory holds,
    /// or, when the cursor is further behind and the data file retains
    /// everything after it, all of that (up to [`CATCH_UP`] events).
    pub fn stored_after(&self, room: &str, cursor: Option<&Position>) -> Stored {
        let stored = self.read(room);
        let oldest = stored.offset + 1 - stored.events.len() as u64;
        let Some(cursor) = cursor.filter(|c| c.epoch == stored.epoch && c.offset + 1 < oldest)
        else {
            return stored;
        };
        match self.since(room, cursor.offset, stored.offset) {
            Some(events) if events.len() as u64 == stored.offset - cursor.offset => {
                Stored { events, ..stored }
            }
            _ => stored,
        }
    }

    /// Scroll-back: from the data file when there is one (it holds more
    /// than memory), else from memory.
    pub fn page(&self, room: &str, before: u64, limit: usize) -> Page {
        let Some(store) = &self.store else {
            return Page::of(self.read(room), before, limit);
        };
        match store.page(room, before, limit) {
            Ok((epoch, events, oldest)) => Page {
                epoch,
                events: events.into_iter().map(Utf8Bytes::from).collect(),
                oldest,
            },
            Err(err) => {
                tracing::error!(room, error = %err, "cannot read a page from the data file");
                Page::of(self.read(room), before, limit)
            }
        }
    }

    pub fn read(&self, room: &str) -> Stored {
        let mut rooms = self.rooms.lock();
        let durable = self.store.is_some();
        let room = self.existing(&mut rooms, room);
        room.filter(|r| durable || r.touched.elapsed() < self.ttl)
            .map_or_else(Stored::default, |r| Stored {
                epoch: r.epoch.clone(),
                offset: r.committed,
                events: r.visible().cloned().collect(),
            })
    }
}
