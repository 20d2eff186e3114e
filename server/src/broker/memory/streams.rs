//! Room streams in this process's memory (embedded mode): the same
//! semantics as in Redis, with one epoch per room, and the room's sanctions
//! and slow mode beside its stream (an append checks them in the same
//! step).
//!
//! Without a data file (`DATA_DIR=memory`) a room nobody appended to for
//! [`ROOM_TTL`] is forgotten, as its keys expire in Redis. With one
//! ([`super::durable`]), an append is first *pending* (seen by the appends
//! after it, by no reader), then made visible once its batch is on disk,
//! or undone; rooms come from the file when first used and leave memory
//! when idle.

mod reading;

use super::durable::{Change, Loaded, Store};
use crate::broker::retention::CATCH_UP;
use crate::broker::{
    id_marker, record_marks, record_until, sanction_record, stamp, Appended, Author, Entry,
    Sanction, ROOM_TTL,
};
use crate::clock::now_ms;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct MemoryStreams {
    rooms: Mutex<Rooms>,
    ttl: Duration,
    /// The data file, in durable mode.
    store: Option<Arc<Store>>,
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

/// How long a room of the data file stays in memory unused.
const DURABLE_IDLE: Duration = Duration::from_secs(600);

struct Room {
    epoch: String,
    offset: u64,
    /// The newest offset readers may see: the rest is pending (durable
    /// mode), on its way to the disk.
    committed: u64,
    events: VecDeque<Utf8Bytes>,
    /// Mark -> the sanction's record (`crate::broker::sanction_record`).
    bans: HashMap<String, String>,
    mutes: HashMap<String, String>,
    /// Slow mode's interval (zero: off), and when each author (by
    /// identity) may speak again.
    slow: Duration,
    next_say: HashMap<String, Instant>,
    /// Events older than `events` overwritten since the room was loaded
    /// (a moderator deleting an old message), by offset: the data file's
    /// copy may not be written yet.
    amended: HashMap<u64, Utf8Bytes>,
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
            committed: 0,
            events: VecDeque::with_capacity(HISTORY_LEN),
            bans: HashMap::new(),
            mutes: HashMap::new(),
            slow: Duration::ZERO,
            next_say: HashMap::new(),
            amended: HashMap::new(),
            touched: Instant::now(),
        }
    }

    /// A room as the data file holds it.
    fn loaded(loaded: Loaded) -> Self {
        let fresh = Room::new();
        let epoch = if loaded.epoch.is_empty() {
            fresh.epoch.clone()
        } else {
            loaded.epoch
        };
        let mut room = Room {
            epoch,
            offset: loaded.offset,
            committed: loaded.offset,
            events: loaded.events.into_iter().map(Utf8Bytes::from).collect(),
            slow: Duration::from_secs(loaded.slow_secs),
            ..fresh
        };
        for (sanction, mark, record) in loaded.sanctions {
            room.held_mut(sanction).insert(mark, record);
        }
        room
    }

    fn held_mut(&mut self, sanction: Sanction) -> &mut HashMap<String, String> {
        match sanction {
            Sanction::Ban => &mut self.bans,
            Sanction::Mute => &mut self.mutes,
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
        let held = self.held_mut(sanction);
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

    /// Its events readers may see.
    fn visible(&self) -> impl Iterator<Item = &Utf8Bytes> {
        let pending = (self.offset - self.committed) as usize;
        self.events
            .iter()
            .take(self.events.len().saturating_sub(pending))
    }
}

/// What an append changed in memory, to write it or undo it.
pub struct Applied {
    /// The new event's offset and frame.
    pub new: Option<(u64, Utf8Bytes)>,
    /// The overwritten event: its offset and its frame before.
    pub replaced: Option<(u64, Utf8Bytes)>,
}

impl MemoryStreams {
    /// Rooms idle for `ttl` are forgotten.
    pub fn with_ttl(ttl: Duration) -> Self {
        MemoryStreams {
            rooms: Mutex::default(),
            ttl,
            store: None,
        }
    }

    /// Rooms kept in the data file: they leave memory when idle and come
    /// back from it.
    pub fn durable(store: Arc<Store>) -> Self {
        MemoryStreams {
            rooms: Mutex::default(),
            ttl: DURABLE_IDLE,
            store: Some(store),
        }
    }

    /// Rooms held in memory.
    #[cfg(test)]
    pub fn rooms(&self) -> usize {
        self.rooms.lock().by_name.len()
    }

    /// Appends at once (no data file).
    pub fn append(&self, room: &str, entry: Entry<'_>) -> Appended {
        let mut rooms = self.rooms.lock();
        let (appended, applied) = self.apply(&mut rooms, room, entry);
        if let Some((offset, _)) = applied.new {
            self.room(&mut rooms, room).committed = offset;
        }
        appended
    }

    /// Durable mode: appends as pending, and says what to write.
    pub fn append_pending(
        &self,
        room: &str,
        entry: Entry<'_>,
        changes: &mut Vec<Change>,
    ) -> (Appended, Applied) {
        let mut rooms = self.rooms.lock();
        let (appended, applied) = self.apply(&mut rooms, room, entry);
        let epoch = self.room(&mut rooms, room).epoch.clone();
        if let Some((offset, frame)) = &applied.replaced {
            let new = match &entry.replace {
                Some((_, new)) => new.to_string(),
                None => frame.to_string(),
            };
            let offset = *offset;
            changes.push(Change::Replace {
                room: room.to_owned(),
                offset,
                frame: new,
            });
        }
        if let Some((offset, frame)) = &applied.new {
            changes.push(Change::Event {
                room: room.to_owned(),
                epoch,
                offset: *offset,
                frame: frame.to_string(),
            });
        }
        (appended, applied)
    }

    /// Durable mode: the append is on disk: readers see it.
    pub fn commit(&self, room: &str, applied: &Applied) {
        if let Some((offset, _)) = applied.new {
            let mut rooms = self.rooms.lock();
            if let Some(room) = rooms.by_name.get_mut(room) {
                room.committed = room.committed.max(offset);
            }
        }
    }

    /// Durable mode: the append's batch was refused: it is undone (the
    /// batch's appends are undone newest first).
    pub fn undo(&self, room: &str, applied: Applied) {
        let mut rooms = self.rooms.lock();
        let Some(room) = rooms.by_name.get_mut(room) else {
            return;
        };
        if let Some((offset, _)) = applied.new {
            if room.offset == offset {
                room.offset -= 1;
                room.events.pop_back();
            }
        }
        if let Some((offset, old)) = applied.replaced {
            let at = room
                .events
                .iter()
                .position(|e| stamp::position(e).is_some_and(|(_, o)| o == offset));
            match at {
                Some(at) => room.events[at] = old,
                None => {
                    room.amended.insert(offset, old);
                }
            }
        }
    }

    fn apply(&self, rooms: &mut Rooms, name: &str, entry: Entry<'_>) -> (Appended, Applied) {
        let mut applied = Applied {
            new: None,
            replaced: None,
        };
        rooms.appends += 1;
        if rooms.appends >= SWEEP_EVERY {
            rooms.appends = 0;
            let (ttl, durable) = (self.ttl, self.store.is_some());
            rooms.by_name.retain(|_, room| {
                room.touched.elapsed() < ttl
                    || room.offset > room.committed
                    || (!durable && room.sanctions())
            });
            crate::metrics::rooms_stored(rooms.by_name.len());
        }
        let room = self.room(rooms, name);
        if let Some(once) = entry.once {
            let marker = id_marker(once.id);
            if let Some(first) = room.events.iter().find(|e| e.as_str().contains(&marker)) {
                if !first.as_str().contains(once.owner) {
                    return (Appended::Conflict, applied);
                }
                return (Appended::Repeat(first.clone()), applied);
            }
        }
        if let Some(held) = entry.author.and_then(|author| room.held(&author)) {
            return (held, applied);
        }
        if let Some((old, new)) = entry.replace {
            let offset = stamp::position(old).map_or(0, |(_, offset)| offset);
            if let Some(stored) = room.events.iter_mut().find(|e| e.as_str() == old) {
                applied.replaced = Some((offset, std::mem::replace(stored, new.into())));
            } else if self
                .stored_beyond(room, name, offset)
                .is_some_and(|stored| stored.as_str() == old)
            {
                room.amended.insert(offset, new.into());
                applied.replaced = Some((offset, old.into()));
            } else {
                return (Appended::Gone, applied);
            }
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
        applied.new = Some((room.offset, stamped.clone()));
        (Appended::New(stamped), applied)
    }

    /// The room: from memory, else from the data file, else a new one. A
    /// room forgotten without a data file starts again, in a new epoch.
    fn room<'a>(&self, rooms: &'a mut Rooms, name: &str) -> &'a mut Room {
        if !rooms.by_name.contains_key(name) {
            let room = self.load(name).map_or_else(Room::new, Room::loaded);
            rooms.by_name.insert(name.to_owned(), room);
            crate::metrics::rooms_stored(rooms.by_name.len());
        }
        let room = rooms.by_name.get_mut(name).expect("just made");
        if self.store.is_none() && room.touched.elapsed() >= self.ttl {
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

    fn load(&self, name: &str) -> Option<Loaded> {
        let store = self.store.as_ref()?;
        match store.load(name, HISTORY_LEN, now_ms()) {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(room = name, error = %err, "cannot read the room from the data file");
                None
            }
        }
    }

    /// Holds (or lifts) the sanction; returns what to write.
    pub fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
        until: Option<u64>,
    ) -> Vec<Change> {
        let mut rooms = self.rooms.lock();
        let name = room;
        let room = self.room(&mut rooms, name);
        let held = room.held_mut(sanction);
        let mut changes = Vec::new();
        let mut write = |mark: &str, record: Option<String>| {
            changes.push(Change::Sanction {
                room: name.to_owned(),
                sanction,
                mark: mark.to_owned(),
                record,
            });
        };
        match until {
            Some(until) => {
                let record = sanction_record(until, marks);
                for mark in marks {
                    held.insert(mark.clone(), record.clone());
                    write(mark, Some(record.clone()));
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
                for mark in &lifted {
                    write(mark, None);
                }
            }
        }
        changes
    }

    pub fn sanctioned(&self, room: &str, sanction: Sanction, marks: &[String]) -> Option<u64> {
        let mut rooms = self.rooms.lock();
        self.existing(&mut rooms, room)?.held_by(sanction, marks)
    }

    /// The room if it exists, in memory or in the data file (which it is
    /// then read from); a room never written is not made.
    fn existing<'a>(&self, rooms: &'a mut Rooms, name: &str) -> Option<&'a mut Room> {
        if !rooms.by_name.contains_key(name) {
            let loaded = self.load(name)?;
            rooms.by_name.insert(name.to_owned(), Room::loaded(loaded));
        }
        rooms.by_name.get_mut(name)
    }

    /// Sets slow mode; returns what to write.
    pub fn slow_mode(&self, room: &str, seconds: u64) -> Change {
        let mut rooms = self.rooms.lock();
        let name = room;
        let room = self.room(&mut rooms, name);
        room.slow = Duration::from_secs(seconds);
        if seconds == 0 {
            room.next_say.clear();
        }
        Change::Slow {
            room: name.to_owned(),
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Once, Stored};
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
        // Long enough that no room expires while the first ones are made,
        // however slowly a busy machine makes them (50 ms did not hold).
        let streams = MemoryStreams::with_ttl(Duration::from_secs(1));
        let bob = ["n:bob".to_owned()];
        streams.sanction("banned", Sanction::Ban, &bob, Some(now_ms() + 60_000));
        for i in 0..SWEEP_EVERY {
            streams.append(&format!("r{i}"), plain("{}"));
        }
        assert_eq!(streams.rooms(), SWEEP_EVERY as usize + 1);
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..SWEEP_EVERY {
            streams.append("busy", plain("{}"));
        }
        // The busy room, and the one whose ban still holds.
        assert_eq!(streams.rooms(), 2);
        assert_eq!(streams.read("r1"), Stored::default());
        assert!(streams.sanctioned("banned", Sanction::Ban, &bob).is_some());
    }
}

#[cfg(test)]
mod durable_tests {
    use super::*;
    use crate::broker::memory::durable::Store;

    fn entry(frame: &str) -> Entry<'_> {
        Entry {
            frame,
            ..Entry::default()
        }
    }

    /// Pending appends are seen by no reader; a refused batch is undone
    /// (an offset is never given twice); what was written comes back from
    /// the file, sanctions and slow mode included, in the same epoch.
    #[test]
    fn pending_appends_are_invisible_undone_or_kept() {
        let dir = std::env::temp_dir().join(format!("streams-{}", uuid::Uuid::new_v4()));
        let until = now_ms() + 60_000;
        let epoch = {
            let store = Arc::new(Store::open(&dir, 0, Duration::ZERO).unwrap());
            let streams = MemoryStreams::durable(store.clone());
            let mut changes = Vec::new();
            let (_, first) = streams.append_pending("r", entry(r#"{"type":"a"}"#), &mut changes);
            let (_, second) = streams.append_pending("r", entry(r#"{"type":"b"}"#), &mut changes);
            assert_eq!(streams.read("r").events.len(), 0, "pending: unseen");
            store.write(&changes[..1]).unwrap();
            streams.commit("r", &first);
            streams.undo("r", second);
            let stored = streams.read("r");
            assert_eq!((stored.offset, stored.events.len()), (1, 1));
            // The next append takes the undone offset: it was never given.
            let mut changes = Vec::new();
            let (appended, third) =
                streams.append_pending("r", entry(r#"{"type":"c"}"#), &mut changes);
            assert!(matches!(appended, Appended::New(f) if stamp::position(&f).unwrap().1 == 2));
            changes.extend(streams.sanction("r", Sanction::Mute, &["n:bob".into()], Some(until)));
            changes.push(streams.slow_mode("r", 30));
            store.write(&changes).unwrap();
            streams.commit("r", &third);
            stored.epoch
        };
        // As after a restart.
        let streams =
            MemoryStreams::durable(Arc::new(Store::open(&dir, 0, Duration::ZERO).unwrap()));
        let stored = streams.read("r");
        assert_eq!((stored.epoch.as_str(), stored.offset), (epoch.as_str(), 2));
        assert!(stored.events[1].as_str().contains(r#""type":"c""#));
        let mute = streams.sanctioned("r", Sanction::Mute, &["n:bob".into()]);
        assert_eq!(mute, Some(until));
        let said = Entry {
            frame: "{}",
            author: Some(Author {
                marks: &["n:ann".into()],
                id: "ann",
            }),
            ..Entry::default()
        };
        assert!(matches!(streams.append("r", said), Appended::New(_)));
        assert!(
            matches!(streams.append("r", said), Appended::Slowed { .. }),
            "slow mode kept"
        );
        assert_eq!(streams.read("never").offset, 0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A second process on the file is refused, naming the file and the
    /// process holding it: at once when started for another port (a
    /// mistake), after the wait for the same port (a reload whose old
    /// process does not let go).
    #[test]
    fn a_held_file_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("streams-{}", uuid::Uuid::new_v4()));
        let _held = Store::open(&dir, 4100, Duration::ZERO).unwrap();
        let started = Instant::now();
        let refused = Store::open(&dir, 4200, Duration::from_secs(30))
            .err()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not waited for"
        );
        let message = refused.to_string();
        let holder = format!("pid={} port=4100", std::process::id());
        assert!(
            message.contains("rooms.redb")
                && message.contains("in use")
                && message.contains(&holder),
            "{message}"
        );
        let started = Instant::now();
        assert!(Store::open(&dir, 4100, Duration::from_millis(300)).is_err());
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "a reload is waited for"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
