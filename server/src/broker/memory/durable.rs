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

use super::streams::MemoryStreams;
use crate::broker::{record_until, Appended, Author, BrokerError, Entry, Once, Sanction};
use anyhow::Context;
use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Room -> its epoch and newest offset.
const ROOMS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("rooms");
/// (room, offset) -> the stamped frame.
const EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("events");
/// (room, 0 ban / 1 mute, mark) -> the sanction's record.
const SANCTIONS: TableDefinition<(&str, u8, &str), &str> = TableDefinition::new("sanctions");
/// Room -> slow mode's interval in seconds.
const SLOW: TableDefinition<&str, u64> = TableDefinition::new("slow");

/// The file's name in `DATA_DIR`.
pub const FILE: &str = "rooms.redb";

/// Appends committed together at most.
const BATCH: usize = 1024;

pub struct Store {
    db: Database,
    path: PathBuf,
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
}

fn kind(sanction: Sanction) -> u8 {
    match sanction {
        Sanction::Ban => 0,
        Sanction::Mute => 1,
    }
}

impl Store {
    /// Opens (or makes) the file in `dir`. Another process holding it (the
    /// old one, during a reload) is waited for up to `wait`.
    pub fn open(dir: &Path, wait: Duration) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make DATA_DIR {}", dir.display()))?;
        let path = dir.join(FILE);
        let deadline = Instant::now() + wait;
        let mut told = false;
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    if !told {
                        tracing::info!(file = %path.display(), "the data file is held by another process (a reload?): waiting for it");
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => anyhow::bail!(
                    "{} is in use by another server process: give each instance its own DATA_DIR, or stop the other one",
                    path.display()
                ),
                Err(err) => anyhow::bail!(
                    "cannot open the rooms' file {}: {err}. If it is damaged, move it aside (keep it: it may be recoverable) and start again with empty rooms",
                    path.display()
                ),
            }
        };
        let store = Store { db, path };
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
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// What one job leaves to do once its batch is on disk (`Ok`), or was
/// refused (why).
pub type Done = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One job of the writer: applies itself to the rooms in memory (as
/// pending), says what to write, and what to do after.
pub type Job = Box<dyn FnOnce(&mut Vec<Change>) -> Done + Send>;

/// The writer thread's door.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on the store; it ends when every door is
    /// dropped.
    pub fn start(store: Arc<Store>) -> Writer {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rooms-writer".into())
            .spawn(move || write_batches(&store, &queue))
            .expect("a thread");
        Writer { jobs }
    }

    fn submit(&self, job: Job) -> Result<(), BrokerError> {
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Appends through the writer: pending in `streams` until its batch is
    /// on disk, then visible and answered (or undone and refused).
    pub async fn append(
        &self,
        streams: Arc<MemoryStreams>,
        room: &str,
        entry: Entry<'_>,
    ) -> Result<Appended, BrokerError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (room, entry) = (room.to_owned(), OwnedEntry::from(entry));
        self.submit(Box::new(move |changes| {
            let (appended, applied) = streams.append_pending(&room, entry.entry(), changes);
            Box::new(move |written: Result<(), &str>| {
                let answer_with = match written {
                    Ok(()) => {
                        streams.commit(&room, &applied);
                        Ok(appended)
                    }
                    Err(why) => {
                        streams.undo(&room, applied);
                        Err(BrokerError::Failed(why.to_owned()))
                    }
                };
                let _ = answer.send(answer_with);
            })
        }))?;
        answered.await.map_err(|_| stopped())?
    }

    /// Writes changes already made in memory (sanctions, slow mode).
    pub async fn write(&self, changes: Vec<Change>) -> Result<(), BrokerError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |batch| {
            batch.extend(changes);
            Box::new(move |written: Result<(), &str>| {
                let _ = answer.send(written.map_err(|why| BrokerError::Failed(why.to_owned())));
            })
        }))?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> BrokerError {
    BrokerError::Failed("the rooms' writer has stopped".into())
}

fn write_batches(store: &Store, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut changes = Vec::new();
        let mut done = vec![first(&mut changes)];
        while done.len() < BATCH {
            let Ok(job) = queue.try_recv() else { break };
            done.push(job(&mut changes));
        }
        let started = Instant::now();
        match store.write(&changes) {
            Ok(()) => {
                crate::metrics::rooms_committed(done.len(), started.elapsed());
                for job in done {
                    job(Ok(()));
                }
            }
            Err(err) => {
                let why = format!(
                    "the rooms' file {} refused the write: {err}",
                    store.path.display()
                );
                tracing::error!(error = %err, file = %store.path.display(), "appends not stored");
                for job in done.into_iter().rev() {
                    job(Err(&why));
                }
            }
        }
    }
}

/// An [`Entry`] that outlives its caller (it travels to the writer).
struct OwnedEntry {
    frame: String,
    once: Option<(Uuid, String)>,
    author: Option<(Vec<String>, String)>,
    replace: Option<(String, String)>,
}

impl From<Entry<'_>> for OwnedEntry {
    fn from(entry: Entry<'_>) -> Self {
        OwnedEntry {
            frame: entry.frame.to_owned(),
            once: entry.once.map(|once| (once.id, once.owner.to_owned())),
            author: entry
                .author
                .map(|author| (author.marks.to_vec(), author.id.to_owned())),
            replace: entry
                .replace
                .map(|(old, new)| (old.to_owned(), new.to_owned())),
        }
    }
}

impl OwnedEntry {
    fn entry(&self) -> Entry<'_> {
        Entry {
            frame: &self.frame,
            once: self
                .once
                .as_ref()
                .map(|(id, owner)| Once { id: *id, owner }),
            author: self.author.as_ref().map(|(marks, id)| Author { marks, id }),
            replace: self
                .replace
                .as_ref()
                .map(|(old, new)| (old.as_str(), new.as_str())),
        }
    }
}
