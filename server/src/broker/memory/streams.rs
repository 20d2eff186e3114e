//! Room streams in this process's memory (embedded mode): the same
//! semantics as in Redis, with one epoch per room for the life of the
//! process.

use crate::broker::{stamp, Stored};
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};

#[derive(Default)]
pub struct MemoryStreams {
    rooms: Mutex<HashMap<String, Room>>,
}

struct Room {
    epoch: String,
    offset: u64,
    events: VecDeque<Utf8Bytes>,
}

impl MemoryStreams {
    pub fn append(&self, room: &str, frame: &str) -> Utf8Bytes {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(|| Room {
            epoch: stamp::new_epoch(),
            offset: 0,
            events: VecDeque::with_capacity(HISTORY_LEN),
        });
        room.offset += 1;
        let stamped = stamp::stamp(frame, &room.epoch, room.offset);
        if room.events.len() == HISTORY_LEN {
            room.events.pop_front();
        }
        room.events.push_back(stamped.clone());
        stamped
    }

    pub fn read(&self, room: &str) -> Stored {
        let rooms = self.rooms.lock();
        rooms.get(room).map_or_else(Stored::default, |r| Stored {
            epoch: r.epoch.clone(),
            offset: r.offset,
            events: r.events.iter().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_up_and_the_history_is_capped() {
        let streams = MemoryStreams::default();
        assert_eq!(streams.read("r"), Stored::default());
        for _ in 0..HISTORY_LEN + 5 {
            streams.append("r", r#"{"type":"x"}"#);
        }
        let stored = streams.read("r");
        assert_eq!(stored.offset, (HISTORY_LEN + 5) as u64);
        assert_eq!(stored.events.len(), HISTORY_LEN);
        let (epoch, first) = stamp::position(&stored.events[0]).unwrap();
        assert_eq!((epoch, first), (stored.epoch.as_str(), 6));
        assert_eq!(streams.read("other").offset, 0);
    }
}
