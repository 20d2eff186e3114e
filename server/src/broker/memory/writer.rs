//! The data file's one writer: a thread that takes every append waiting,
//! applies each to the rooms in memory as pending, writes them all in one
//! durable transaction (group commit), and only then makes them visible
//! and answers; a refused commit undoes them, newest first.

use super::durable::{Change, Store};
use super::streams::MemoryStreams;
use super::trim::NUDGE_EVERY;
use crate::broker::{Appended, Author, BrokerError, Entry, Once};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Appends committed together at most.
const BATCH: usize = 1024;

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
    /// `trimmer`: nudged every [`NUDGE_EVERY`] jobs written.
    pub fn start(store: Arc<Store>, trimmer: Option<mpsc::SyncSender<()>>) -> Writer {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rooms-writer".into())
            .spawn(move || write_batches(&store, &queue, trimmer))
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

fn write_batches(
    store: &Store,
    queue: &mpsc::Receiver<Job>,
    trimmer: Option<mpsc::SyncSender<()>>,
) {
    let mut since_nudge = 0;
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
                since_nudge += done.len();
                if let Some(trimmer) = trimmer.as_ref().filter(|_| since_nudge >= NUDGE_EVERY) {
                    since_nudge = 0;
                    // Full: a pass is already due.
                    let _ = trimmer.try_send(());
                }
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
