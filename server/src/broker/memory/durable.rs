//! The embedded broker's rooms on disk: one redb file under `DATA_DIR`
//! (`rooms.redb`). redb is pure Rust, has had a stable file format since
//! 1.0, is crash-safe by default (a commit is one fsync; a torn commit is
//! detected by its checksums and rolled back) and lets readers run beside
//! the writer.
//!
//! Appends are group-committed: one writer thread takes every append
//! waiting, applies each to the rooms in memory as *pending* (invisible to
//! readers, but seen by the appends after it), writes them all in one
//! durable transaction, and only then makes them visible and answers: an
//! event is acknowledged, published and readable only once it is on disk,
//! and many senders share one fsync. A commit that fails (a full disk) is
//! undone in memory, newest first, and every append of the batch is refused:
//! an offset is never handed out twice in one epoch.
//!
//! Rooms are read from the file when first used and leave memory when idle:
//! memory holds the last events of the rooms in use, whatever the file
//! holds. Slow mode waits are not kept (they are seconds long).

use crate::broker::{record_until, Position, Sanction};
use anyhow::Context;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Room -> its epoch and newest offset.
pub(super) const ROOMS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("rooms");
/// (room, offset) -> the stamped frame.
pub(super) const EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("events");
/// (room, event id) -> its offset: moderation finds any retained message.
pub(super) const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ids");
/// Room -> the webhook's cursor: the last event delivered (an empty
/// epoch: marked, nothing delivered yet).
pub(super) const HOOKS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("hooks");
/// (room, 0 ban / 1 mute, mark) -> the sanction's record.
pub(super) const SANCTIONS: TableDefinition<(&str, u8, &str), &str> =
    TableDefinition::new("sanctions");
/// Room -> slow mode's interval in seconds.
pub(super) const SLOW: TableDefinition<&str, u64> = TableDefinition::new("slow");

/// The file's name in `DATA_DIR`.
pub const FILE: &str = "rooms.redb";
/// Memory redb keeps of the file's pages (its default is 1 GiB): the
/// server's memory does not grow with the history read back.
const CACHE: usize = 32 * 1024 * 1024;

/// Beside it: which process holds it (`pid=<pid> port=<PORT>`), for the
/// next one to tell a reload from a mistake.
const HOLDER: &str = "rooms.holder";

pub struct Store {
    pub(super) db: Database,
    pub(super) path: PathBuf,
}

/// A room as the file holds it (an empty epoch: it has sanctions or slow
/// mode but no event yet).
#[derive(Debug, Default)]
pub struct Loaded {
    pub epoch: String,
    pub offset: u64,
    /// Its last events, oldest first.
    pub events: Vec<String>,
    /// (sanction, mark, record), those still in force.
    pub sanctions: Vec<(Sanction, String, String)>,
    pub slow_secs: u64,
}

/// One change a batch writes.
pub enum Change {
    Event {
        room: String,
        epoch: String,
        offset: u64,
        frame: String,
    },
    /// A stored event overwritten (a deletion or an edit).
    Replace {
        room: String,
        offset: u64,
        frame: String,
    },
    /// A sanction's record under a mark, or its removal.
    Sanction {
        room: String,
        sanction: Sanction,
        mark: String,
        record: Option<String>,
    },
    Slow {
        room: String,
        seconds: u64,
    },
    /// The webhook's cursor in the room.
    Cursor {
        room: String,
        epoch: String,
        offset: u64,
    },
}

/// A stored event's id (every event has one).
pub(super) fn event_id(frame: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        id: uuid::Uuid,
    }
    serde_json::from_str::<Event>(frame)
        .ok()
        .map(|event| event.id.to_string())
}

fn kind(sanction: Sanction) -> u8 {
    match sanction {
        Sanction::Ban => 0,
        Sanction::Mute => 1,
    }
}

impl Store {
    /// Opens (or makes) the file in `dir`. Held by another process: when
    /// that one was started for the same port (`PORT`), it is the old one
    /// of a reload, and is waited for up to `wait`; otherwise the start is
    /// refused at once, naming it.
    pub fn open(dir: &Path, port: u16, wait: Duration) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make DATA_DIR {}", dir.display()))?;
        let path = dir.join(FILE);
        let holder_file = dir.join(HOLDER);
        let deadline = Instant::now() + wait;
        let mut told = false;
        let db = loop {
            match Database::builder().set_cache_size(CACHE).create(&path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    let holder = std::fs::read_to_string(&holder_file).unwrap_or_default();
                    let holder = holder.trim();
                    let reload = holder.ends_with(&format!(" port={port}"));
                    if !reload || Instant::now() >= deadline {
                        anyhow::bail!(
                            "{} is in use by another server process ({holder}): give each instance its own DATA_DIR, or stop the other one",
                            path.display()
                        );
                    }
                    if !told {
                        tracing::info!(file = %path.display(), holder, "the data file is held by another process (a reload?): waiting for it");
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => anyhow::bail!(
                    "cannot open the rooms' file {}: {err}. If it is damaged, move it aside (keep it: it may be recoverable) and start again with empty rooms, or put a backup (GET /api/backup) in its place",
                    path.display()
                ),
            }
        };
        let holder = format!("pid={} port={port}\n", std::process::id());
        std::fs::write(&holder_file, holder)
            .with_context(|| format!("cannot write {}", holder_file.display()))?;
        let store = Store { db, path };
        // Makes the tables on a new file (reads expect them).
        store
            .write(&[])
            .with_context(|| format!("cannot write to {}", store.path.display()))?;
        Ok(store)
    }

    /// The room's epoch and position, its last `window` events and its
    /// sanctions and slow mode in force; `None` for a room never written.
    pub fn load(
        &self,
        room: &str,
        window: usize,
        now_ms: u64,
    ) -> Result<Option<Loaded>, redb::Error> {
        let read = self.db.begin_read()?;
        let rooms = read.open_table(ROOMS)?;
        let mut loaded = Loaded::default();
        if let Some(entry) = rooms.get(room)? {
            let (epoch, offset) = entry.value();
            (loaded.epoch, loaded.offset) = (epoch.to_owned(), offset);
        }
        let events = read.open_table(EVENTS)?;
        let newest = events
            .range((room, 0)..=(room, u64::MAX))?
            .rev()
            .take(window);
        for event in newest {
            loaded.events.push(event?.1.value().to_owned());
        }
        loaded.events.reverse();
        let sanctions = read.open_table(SANCTIONS)?;
        for row in sanctions.range((room, 0, "")..=(room, u8::MAX, "\u{10FFFF}"))? {
            let (key, record) = row?;
            let (_, kind, mark) = key.value();
            let record = record.value();
            if record_until(record).is_some_and(|until| until > now_ms) {
                let sanction = if kind == 0 {
                    Sanction::Ban
                } else {
                    Sanction::Mute
                };
                loaded
                    .sanctions
                    .push((sanction, mark.to_owned(), record.to_owned()));
            }
        }
        let slow = read.open_table(SLOW)?;
        loaded.slow_secs = slow.get(room)?.map_or(0, |s| s.value());
        let written = loaded.offset > 0 || !loaded.sanctions.is_empty() || loaded.slow_secs > 0;
        Ok(written.then_some(loaded))
    }

    /// The webhook's rooms: each with its cursor (none: nothing delivered
    /// yet) and whether events were stored after it.
    pub fn hook_cursors(&self) -> Result<Vec<(String, Option<Position>, bool)>, redb::Error> {
        let read = self.db.begin_read()?;
        let (hooks, rooms) = (read.open_table(HOOKS)?, read.open_table(ROOMS)?);
        let mut found = Vec::new();
        for row in hooks.iter()? {
            let (room, cursor) = row?;
            let (room, (epoch, offset)) = (room.value().to_owned(), cursor.value());
            let newest = rooms.get(room.as_str())?.map(|entry| {
                let (epoch, offset) = entry.value();
                (epoch.to_owned(), offset)
            });
            let behind = newest
                .is_some_and(|(newest_epoch, newest)| newest_epoch != epoch || newest > offset);
            let cursor = (!epoch.is_empty()).then(|| Position {
                epoch: epoch.to_owned(),
                offset,
            });
            found.push((room, cursor, behind));
        }
        Ok(found)
    }

    /// The retained event with this id, as stored.
    pub fn find(&self, room: &str, id: &str) -> Result<Option<String>, redb::Error> {
        let read = self.db.begin_read()?;
        let Some(offset) = read.open_table(IDS)?.get((room, id))? else {
            return Ok(None);
        };
        let events = read.open_table(EVENTS)?;
        let found = events.get((room, offset.value()))?;
        Ok(found.map(|frame| frame.value().to_owned()))
    }

    /// The room's events from offset `from` to `to`, oldest first.
    pub fn range(&self, room: &str, from: u64, to: u64) -> Result<Vec<String>, redb::Error> {
        let read = self.db.begin_read()?;
        let events = read.open_table(EVENTS)?;
        let mut found = Vec::new();
        for event in events.range((room, from)..=(room, to))? {
            found.push(event?.1.value().to_owned());
        }
        Ok(found)
    }

    /// Up to `limit` of the room's newest events below `before`, oldest
    /// first, its epoch, and whether nothing older is stored.
    pub fn page(
        &self,
        room: &str,
        before: u64,
        limit: usize,
    ) -> Result<(String, Vec<String>, bool), redb::Error> {
        let read = self.db.begin_read()?;
        let epoch = read
            .open_table(ROOMS)?
            .get(room)?
            .map(|entry| entry.value().0.to_owned())
            .unwrap_or_default();
        let events = read.open_table(EVENTS)?;
        let mut page = Vec::with_capacity(limit + 1);
        for event in events
            .range((room, 0)..(room, before))?
            .rev()
            .take(limit + 1)
        {
            page.push(event?.1.value().to_owned());
        }
        let oldest = page.len() <= limit;
        page.truncate(limit);
        page.reverse();
        Ok((epoch, page, oldest))
    }

    /// Writes the changes in one durable transaction (the tables are made
    /// on the first).
    pub fn write(&self, changes: &[Change]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut rooms = txn.open_table(ROOMS)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut sanctions = txn.open_table(SANCTIONS)?;
            let mut slow = txn.open_table(SLOW)?;
            let mut hooks = txn.open_table(HOOKS)?;
            let mut ids = txn.open_table(IDS)?;
            for change in changes {
                match change {
                    Change::Event {
                        room,
                        epoch,
                        offset,
                        frame,
                    } => {
                        events.insert((room.as_str(), *offset), frame.as_str())?;
                        rooms.insert(room.as_str(), (epoch.as_str(), *offset))?;
                        if let Some(id) = event_id(frame) {
                            ids.insert((room.as_str(), id.as_str()), *offset)?;
                        }
                    }
                    Change::Replace {
                        room,
                        offset,
                        frame,
                    } => {
                        events.insert((room.as_str(), *offset), frame.as_str())?;
                    }
                    Change::Sanction {
                        room,
                        sanction,
                        mark,
                        record,
                    } => {
                        let key = (room.as_str(), kind(*sanction), mark.as_str());
                        match record {
                            Some(record) => sanctions.insert(key, record.as_str())?,
                            None => sanctions.remove(key)?,
                        };
                    }
                    Change::Slow { room, seconds } => {
                        slow.insert(room.as_str(), *seconds)?;
                    }
                    Change::Cursor {
                        room,
                        epoch,
                        offset,
                    } => {
                        hooks.insert(room.as_str(), (epoch.as_str(), *offset))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
