//! Room streams in this process's memory (embedded mode): the same
//! semantics as in Redis, with one epoch per room for the life of the
//! process, and the room's sanctions and slow mode beside its stream (an
//! append checks them in the same step). A room nobody appended to for
//! [`ROOM_TTL`] is forgotten, as its keys expire in Redis.

use crate::broker::{
    id_marker, record_marks, record_until, sanction_record, stamp, Appended, Author, Entry,
    Sanction, Stored, ROOM_TTL,
};
use crate::clock::now_ms;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

pub struct MemoryStreams {
    rooms: Mutex<Rooms>,
    ttl: Duration,
}

#[derive(Default)]
struct Rooms {
    by_name: HashMap<String, Room>,
    /// Appends since idle rooms were last looked for.
    appends: u32,
}

/// Idle rooms are looked for once per this many appends: memory only grows
/// by appending.
const SWEEP_EVERY: u32 = 1024;

struct Room {
    epoch: String,
    offset: u64,
    events: VecDeque<Utf8Bytes>,
    /// Mark -> the sanction's record (`crate::broker::sanction_record`).
    bans: HashMap<String, String>,
    mutes: HashMap<String, String>,
    /// Slow mode's interval (zero: off), and when each author (by
    /// identity) may speak again.
    slow: Duration,
    next_say: HashMap<String, Instant>,
    /// When it was last written to.
    touched: Instant,
}

impl Default for MemoryStreams {
    fn default() -> Self {
        MemoryStreams::with_ttl(ROOM_TTL)
    }
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
            touched: Instant::now(),
        }
    }

    /// Whether a ban or mute still holds somebody.
    fn sanctions(&mut self) -> bool {
        self.held_by(Sanction::Ban, &[]);
        self.held_by(Sanction::Mute, &[]);
        !(self.bans.is_empty() && self.mutes.is_empty())
    }

    fn held_by(&mut self, sanction: Sanction, marks: &[String]) -> Option<u64> {
        let now = now_ms();
        let held = match sanction {
            Sanction::Ban => &mut self.bans,
            Sanction::Mute => &mut self.mutes,
        };
        held.retain(|_, record| record_until(record).is_some_and(|until| until > now));
        marks
            .iter()
            .filter_map(|mark| held.get(mark).and_then(|r| record_until(r)))
            .max()
    }

    /// Why the author may not speak now, if they may not.
    fn held(&mut self, author: &Author<'_>) -> Option<Appended> {
        if let Some(until_ms) = self.held_by(Sanction::Mute, author.marks) {
            return Some(Appended::Muted { until_ms });
        }
        let at = Instant::now();
        self.next_say.retain(|_, next| *next > at);
        if let Some(next) = self.next_say.get(author.id) {
            let retry_after_ms = next.duration_since(at).as_millis().max(1) as u64;
            return Some(Appended::Slowed { retry_after_ms });
        }
        None
    }
}

impl MemoryStreams {
    /// Rooms idle for `ttl` are forgotten.
    pub fn with_ttl(ttl: Duration) -> Self {
        MemoryStreams {
            rooms: Mutex::default(),
            ttl,
        }
    }

    /// Rooms held in memory.
    #[cfg(test)]
    pub fn rooms(&self) -> usize {
        self.rooms.lock().by_name.len()
    }

    pub fn append(&self, room: &str, entry: Entry<'_>) -> Appended {
        let mut rooms = self.rooms.lock();
        rooms.appends += 1;
        if rooms.appends >= SWEEP_EVERY {
            rooms.appends = 0;
            let ttl = self.ttl;
            rooms
                .by_name
                .retain(|_, room| room.touched.elapsed() < ttl || room.sanctions());
            crate::metrics::rooms_stored(rooms.by_name.len());
        }
        let room = self.room(&mut rooms, room);
        if let Some(once) = entry.once {
            let marker = id_marker(once.id);
            if let Some(first) = room.events.iter().find(|e| e.as_str().contains(&marker)) {
                if !first.as_str().contains(once.owner) {
                    return Appended::Conflict;
                }
                return Appended::Repeat(first.clone());
            }
        }
        if let Some(held) = entry.author.and_then(|author| room.held(&author)) {
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
            room.next_say.insert(author.id.to_owned(), next);
        }
        room.offset += 1;
        room.touched = Instant::now();
        let stamped = stamp::stamp(entry.frame, &room.epoch, room.offset);
        if room.events.len() == HISTORY_LEN {
            room.events.pop_front();
        }
        room.events.push_back(stamped.clone());
        Appended::New(stamped)
    }

    /// The room, made if needed (a room forgotten meanwhile starts again,
    /// in a new epoch).
    fn room<'a>(&self, rooms: &'a mut Rooms, name: &str) -> &'a mut Room {
        let ttl = self.ttl;
        let room = rooms
            .by_name
            .entry(name.to_owned())
            .or_insert_with(Room::new);
        if room.touched.elapsed() >= ttl {
            // Its sanctions expire by themselves, as their keys in Redis.
            let (bans, mutes) = (
                std::mem::take(&mut room.bans),
                std::mem::take(&mut room.mutes),
            );
            *room = Room {
                bans,
                mutes,
                ..Room::new()
            };
        }
        room
    }

    pub fn sanction(&self, room: &str, sanction: Sanction, marks: &[String], until: Option<u64>) {
        let mut rooms = self.rooms.lock();
        let room = self.room(&mut rooms, room);
        let held = match sanction {
            Sanction::Ban => &mut room.bans,
            Sanction::Mute => &mut room.mutes,
        };
        match until {
            Some(until) => {
                let record = sanction_record(until, marks);
                for mark in marks {
                    held.insert(mark.clone(), record.clone());
                }
            }
            None => {
                let mut lifted: HashSet<String> = marks.iter().cloned().collect();
                for mark in marks {
                    if let Some(record) = held.get(mark) {
                        lifted.extend(record_marks(record).map(str::to_owned));
                    }
                }
                held.retain(|mark, _| !lifted.contains(mark));
            }
        }
    }

    pub fn sanctioned(&self, room: &str, sanction: Sanction, marks: &[String]) -> Option<u64> {
        let mut rooms = self.rooms.lock();
        rooms.by_name.get_mut(room)?.held_by(sanction, marks)
    }

    pub fn slow_mode(&self, room: &str, seconds: u64) {
        let mut rooms = self.rooms.lock();
        let room = self.room(&mut rooms, room);
        room.slow = Duration::from_secs(seconds);
        if seconds == 0 {
            room.next_say.clear();
        }
    }

    pub fn read(&self, room: &str) -> Stored {
        let rooms = self.rooms.lock();
        let room = rooms.by_name.get(room);
        room.filter(|r| r.touched.elapsed() < self.ttl)
            .map_or_else(Stored::default, |r| Stored {
                epoch: r.epoch.clone(),
                offset: r.offset,
                events: r.events.iter().cloned().collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Once;
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
            once: Some(Once {
                id,
                owner: "\"text\"",
            }),
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
        let (bob, ann) = (["n:bob".to_owned()], ["n:ann".to_owned()]);
        let said = |marks| Entry {
            frame: r#"{"type":"x"}"#,
            author: Some(Author {
                marks,
                id: &marks[0],
            }),
            ..Entry::default()
        };
        let until = now_ms() + 60_000;
        streams.sanction("r", Sanction::Mute, &bob, Some(until));
        assert_eq!(
            streams.append("r", said(&bob)),
            Appended::Muted { until_ms: until }
        );
        assert!(matches!(streams.append("r", said(&ann)), Appended::New(_)));
        streams.sanction("r", Sanction::Mute, &bob, None);
        streams.slow_mode("r", 60);
        assert!(matches!(streams.append("r", said(&bob)), Appended::New(_)));
        assert!(matches!(
            streams.append("r", said(&bob)),
            Appended::Slowed { retry_after_ms } if retry_after_ms > 59_000
        ));
        // Moderators and the server are not held.
        assert!(matches!(streams.append("r", plain("{}")), Appended::New(_)));
        streams.slow_mode("r", 0);
        let first = frame_of(streams.append("r", said(&bob)));
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
        assert_eq!(streams.sanctioned("r", Sanction::Ban, &bob), None);
        streams.sanction("r", Sanction::Ban, &bob, Some(until));
        assert_eq!(streams.sanctioned("r", Sanction::Ban, &bob), Some(until));
    }

    #[test]
    fn an_id_somebody_else_sent_is_a_conflict_not_a_repeat() {
        let streams = MemoryStreams::default();
        let id = Uuid::new_v4();
        let theirs = format!(r#"{{"type":"message","id":"{id}","author_id":"mallory"}}"#);
        let mine = format!(r#"{{"type":"message","id":"{id}","server":true}}"#);
        let once = |owner| Some(Once { id, owner });
        let first = Entry {
            frame: &theirs,
            once: once(r#""author_id":"mallory""#),
            ..Entry::default()
        };
        assert!(matches!(streams.append("r", first), Appended::New(_)));
        let second = Entry {
            frame: &mine,
            once: once(r#""server":true"#),
            ..Entry::default()
        };
        assert_eq!(streams.append("r", second), Appended::Conflict);
        assert_eq!(streams.read("r").offset, 1);
    }

    #[test]
    fn a_sanction_holds_every_mark_and_is_lifted_from_any() {
        let streams = MemoryStreams::default();
        let until = now_ms() + 60_000;
        let marks = [
            "n:bob".to_owned(),
            "i:anon-1".to_owned(),
            "a:10.0.0.7".to_owned(),
        ];
        streams.sanction("r", Sanction::Ban, &marks, Some(until));
        for mark in &marks {
            let one = [mark.clone()];
            assert_eq!(streams.sanctioned("r", Sanction::Ban, &one), Some(until));
        }
        assert_eq!(streams.sanctioned("r", Sanction::Mute, &marks), None);
        // Lifted by the name alone: every mark recorded with it goes.
        streams.sanction("r", Sanction::Ban, &marks[..1], None);
        assert_eq!(streams.sanctioned("r", Sanction::Ban, &marks), None);
    }

    #[test]
    fn an_idle_room_is_forgotten_but_not_its_sanctions() {
        let streams = MemoryStreams::with_ttl(Duration::from_millis(50));
        let bob = ["n:bob".to_owned()];
        streams.sanction("banned", Sanction::Ban, &bob, Some(now_ms() + 60_000));
        for i in 0..SWEEP_EVERY {
            streams.append(&format!("r{i}"), plain("{}"));
        }
        assert_eq!(streams.rooms(), SWEEP_EVERY as usize + 1);
        std::thread::sleep(Duration::from_millis(60));
        for _ in 0..SWEEP_EVERY {
            streams.append("busy", plain("{}"));
        }
        // The busy room, and the one whose ban still holds.
        assert_eq!(streams.rooms(), 2);
        assert_eq!(streams.read("r1"), Stored::default());
        assert!(streams.sanctioned("banned", Sanction::Ban, &bob).is_some());
    }
}
