//! Room streams in this process's memory (embedded mode): the same
//! semantics as in Redis, with one epoch per room for the life of the
//! process.

use crate::broker::{id_marker, stamp, Appended, Stored};
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

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
    pub fn append(&self, room: &str, frame: &str, once: Option<Uuid>) -> Appended {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(|| Room {
            epoch: stamp::new_epoch(),
            offset: 0,
            events: VecDeque::with_capacity(HISTORY_LEN),
        });
        if let Some(marker) = once.map(id_marker) {
            if let Some(first) = room.events.iter().find(|e| e.as_str().contains(&marker)) {
                return Appended {
                    frame: first.clone(),
                    repeat: true,
                };
            }
        }
        room.offset += 1;
        let stamped = stamp::stamp(frame, &room.epoch, room.offset);
        if room.events.len() == HISTORY_LEN {
            room.events.pop_front();
        }
        room.events.push_back(stamped.clone());
        Appended {
            frame: stamped,
            repeat: false,
        }
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
            streams.append("r", r#"{"type":"x"}"#, None);
        }
        let stored = streams.read("r");
        assert_eq!(stored.offset, (HISTORY_LEN + 5) as u64);
        assert_eq!(stored.events.len(), HISTORY_LEN);
        let (epoch, first) = stamp::position(&stored.events[0]).unwrap();
        assert_eq!((epoch, first), (stored.epoch.as_str(), 6));
        assert_eq!(streams.read("other").offset, 0);
    }

    #[test]
    fn an_id_still_in_the_history_is_appended_once() {
        let streams = MemoryStreams::default();
        let id = Uuid::new_v4();
        let frame = format!(r#"{{"type":"message","id":"{id}","text":"hi"}}"#);
        let first = streams.append("r", &frame, Some(id));
        assert!(!first.repeat);
        streams.append("r", r#"{"type":"x"}"#, None);
        let again = streams.append("r", &frame, Some(id));
        assert_eq!((again.repeat, &again.frame), (true, &first.frame));
        assert_eq!(streams.read("r").offset, 2);
        // Gone from the history, an id can be used again.
        for _ in 0..HISTORY_LEN {
            streams.append("r", r#"{"type":"x"}"#, None);
        }
        assert!(!streams.append("r", &frame, Some(id)).repeat);
    }
}
