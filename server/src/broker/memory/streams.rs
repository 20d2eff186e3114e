//! Room streams in this process's memory (embedded mode): the same
//! semantics as in Redis, with one epoch per room for the life of the
//! process, and the room's sanctions and slow mode beside its stream (an
//! append checks them in the same step).

use crate::broker::{id_marker, stamp, Appended, Entry, Sanction, Stored};
use crate::clock::now_ms;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryStreams {
    rooms: Mutex<HashMap<String, Room>>,
}

struct Room {
    epoch: String,
    offset: u64,
    events: VecDeque<Utf8Bytes>,
    /// Nickname key -> until when (ms since the Unix epoch).
    bans: HashMap<String, u64>,
    mutes: HashMap<String, u64>,
    /// Slow mode's interval (zero: off), and when each author may speak
    /// again.
    slow: Duration,
    next_say: HashMap<String, Instant>,
}

impl Room {
    fn new() -> Self {
        Room {
            epoch: stamp::new_epoch(),
            offset: 0,
            events: VecDeque::with_capacity(HISTORY_LEN),
            bans: HashMap::new(),
            mutes: HashMap::new(),
            slow: Duration::ZERO,
            next_say: HashMap::new(),
        }
    }

    /// Why the author may not speak now, if they may not.
    fn held(&mut self, author: &str) -> Option<Appended> {
        let now = now_ms();
        self.mutes.retain(|_, until| *until > now);
        if let Some(&until_ms) = self.mutes.get(author) {
            return Some(Appended::Muted { until_ms });
        }
        let at = Instant::now();
        self.next_say.retain(|_, next| *next > at);
        if let Some(next) = self.next_say.get(author) {
            let retry_after_ms = next.duration_since(at).as_millis().max(1) as u64;
            return Some(Appended::Slowed { retry_after_ms });
        }
        None
    }
}

impl MemoryStreams {
    pub fn append(&self, room: &str, entry: Entry<'_>) -> Appended {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(Room::new);
        if let Some(marker) = entry.once.map(id_marker) {
            if let Some(first) = room.events.iter().find(|e| e.as_str().contains(&marker)) {
                return Appended::Repeat(first.clone());
            }
        }
        if let Some(held) = entry.author.and_then(|author| room.held(author)) {
            return held;
        }
        if let Some((old, new)) = entry.replace {
            let Some(stored) = room.events.iter_mut().find(|e| e.as_str() == old) else {
                return Appended::Gone;
            };
            *stored = new.into();
        }
        if let Some(author) = entry.author.filter(|_| !room.slow.is_zero()) {
            let next = Instant::now() + room.slow;
            room.next_say.insert(author.to_owned(), next);
        }
        room.offset += 1;
        let stamped = stamp::stamp(entry.frame, &room.epoch, room.offset);
        if room.events.len() == HISTORY_LEN {
            room.events.pop_front();
        }
        room.events.push_back(stamped.clone());
        Appended::New(stamped)
    }

    pub fn sanction(&self, room: &str, sanction: Sanction, key: &str, until_ms: Option<u64>) {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(Room::new);
        let held = match sanction {
            Sanction::Ban => &mut room.bans,
            Sanction::Mute => &mut room.mutes,
        };
        match until_ms {
            Some(until) => held.insert(key.to_owned(), until),
            None => held.remove(key),
        };
    }

    pub fn banned(&self, room: &str, key: &str) -> Option<u64> {
        let mut rooms = self.rooms.lock();
        let room = rooms.get_mut(room)?;
        let now = now_ms();
        room.bans.retain(|_, until| *until > now);
        room.bans.get(key).copied()
    }

    pub fn slow_mode(&self, room: &str, seconds: u64) {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room.to_owned()).or_insert_with(Room::new);
        room.slow = Duration::from_secs(seconds);
        if seconds == 0 {
            room.next_say.clear();
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
    use uuid::Uuid;

    fn plain(frame: &str) -> Entry<'_> {
        Entry {
            frame,
            ..Entry::default()
        }
    }

    fn frame_of(appended: Appended) -> Utf8Bytes {
        match appended {
            Appended::New(frame) | Appended::Repeat(frame) => frame,
            other => panic!("not appended: {other:?}"),
        }
    }

    #[test]
    fn offsets_count_up_and_the_history_is_capped() {
        let streams = MemoryStreams::default();
        assert_eq!(streams.read("r"), Stored::default());
        for _ in 0..HISTORY_LEN + 5 {
            streams.append("r", plain(r#"{"type":"x"}"#));
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
        let once = Entry {
            frame: &frame,
            once: Some(id),
            ..Entry::default()
        };
        let first = streams.append("r", once);
        assert!(matches!(first, Appended::New(_)));
        streams.append("r", plain(r#"{"type":"x"}"#));
        let again = streams.append("r", once);
        assert_eq!(again, Appended::Repeat(frame_of(first)));
        assert_eq!(streams.read("r").offset, 2);
        // Gone from the history, an id can be used again.
        for _ in 0..HISTORY_LEN {
            streams.append("r", plain(r#"{"type":"x"}"#));
        }
        assert!(matches!(streams.append("r", once), Appended::New(_)));
    }

    #[test]
    fn mutes_and_slow_mode_hold_an_author_and_replacements_are_exact() {
        let streams = MemoryStreams::default();
        let said = |author| Entry {
            frame: r#"{"type":"x"}"#,
            author: Some(author),
            ..Entry::default()
        };
        let until = now_ms() + 60_000;
        streams.sanction("r", Sanction::Mute, "bob", Some(until));
        assert_eq!(
            streams.append("r", said("bob")),
            Appended::Muted { until_ms: until }
        );
        assert!(matches!(streams.append("r", said("ann")), Appended::New(_)));
        streams.sanction("r", Sanction::Mute, "bob", None);
        streams.slow_mode("r", 60);
        assert!(matches!(streams.append("r", said("bob")), Appended::New(_)));
        assert!(matches!(
            streams.append("r", said("bob")),
            Appended::Slowed { retry_after_ms } if retry_after_ms > 59_000
        ));
        // Moderators and the server are not held.
        assert!(matches!(streams.append("r", plain("{}")), Appended::New(_)));
        streams.slow_mode("r", 0);
        let first = frame_of(streams.append("r", said("bob")));
        let replace = |old| Entry {
            frame: r#"{"type":"y"}"#,
            replace: Some((old, "{\"gone\":true}")),
            ..Entry::default()
        };
        assert!(matches!(
            streams.append("r", replace(&first)),
            Appended::New(_)
        ));
        assert_eq!(streams.append("r", replace(&first)), Appended::Gone);
        assert!(streams
            .read("r")
            .events
            .iter()
            .any(|e| e.as_str() == "{\"gone\":true}"));
        assert_eq!(streams.banned("r", "bob"), None);
        streams.sanction("r", Sanction::Ban, "bob", Some(until));
        assert_eq!(streams.banned("r", "bob"), Some(until));
    }
}
