//! Retention on the embedded broker: a background thread trims what is
//! past `HISTORY_MAX_AGE` or beyond `HISTORY_MAX_EVENTS`, from the data
//! file and from the rooms in memory, never on the append path.

use super::durable::{event_id, Store, EVENTS, IDS, ROOMS};
use super::streams::MemoryStreams;
use crate::broker::retention::Retention;
use crate::clock::now_ms;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Weak};

/// Events removed in one transaction at most: a big trim is many short
/// commits, and appends wait for one at a time only.
const CHUNK: usize = 10_000;

/// Starts the thread; it ends once the rooms are dropped. It runs a pass
/// every [`Retention::every`], and sooner when nudged (the writer does so
/// every [`NUDGE_EVERY`] events, so that counts stay near their limit).
pub fn start(
    streams: &Arc<MemoryStreams>,
    store: Option<&Arc<Store>>,
    retention: Retention,
) -> Option<SyncSender<()>> {
    if !retention.trims() {
        return None;
    }
    let (streams, store) = (Arc::downgrade(streams), store.map(Arc::downgrade));
    let (nudge, nudged) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("rooms-trimmer".into())
        .spawn(move || loop {
            if let Err(RecvTimeoutError::Disconnected) = nudged.recv_timeout(retention.every()) {
                // Nobody writes any more: time alone moves the age limit.
                std::thread::sleep(retention.every());
            }
            let Some(streams) = streams.upgrade() else {
                return;
            };
            let store = store.as_ref().map(Weak::upgrade);
            pass(
                &streams,
                store.as_ref().and_then(Option::as_ref),
                &retention,
            );
        })
        .expect("a thread");
    Some(nudge)
}

/// Appends written between two nudges of the trimmer.
pub const NUDGE_EVERY: usize = 1000;

/// One pass over every room.
pub fn pass(streams: &MemoryStreams, store: Option<&Arc<Store>>, retention: &Retention) {
    let now = now_ms();
    let mut floors = HashMap::new();
    let mut trimmed = 0;
    if let Some(store) = store {
        match store.trim(retention, now) {
            Ok((kept, count)) => (floors, trimmed) = (kept, count),
            Err(err) => {
                tracing::error!(error = %err, file = %store.path.display(), "cannot trim the rooms' file");
            }
        }
        if let Ok(meta) = std::fs::metadata(&store.path) {
            crate::metrics::rooms_file_bytes(meta.len());
        }
    }
    let in_memory = streams.trim(retention, now, &floors);
    // Without a file, memory is all there is to count.
    crate::metrics::history_trimmed(if store.is_some() { trimmed } else { in_memory });
}

impl Store {
    /// Removes every room's events past the retention; returns the rooms
    /// trimmed with their oldest offset kept, and how many events went.
    pub fn trim(
        &self,
        retention: &Retention,
        now_ms: u64,
    ) -> Result<(HashMap<String, u64>, u64), redb::Error> {
        let rooms: Vec<(String, u64)> = {
            let read = self.db.begin_read()?;
            let table = read.open_table(ROOMS)?;
            let mut rooms = Vec::new();
            for row in table.iter()? {
                let (name, entry) = row?;
                rooms.push((name.value().to_owned(), entry.value().1));
            }
            rooms
        };
        let (mut kept, mut total) = (HashMap::new(), 0);
        for (room, newest) in rooms {
            let first_kept = retention.first_kept(newest);
            if !self.oldest_past(&room, first_kept, retention, now_ms)? {
                continue;
            }
            loop {
                let txn = self.db.begin_write()?;
                let doomed = {
                    let mut events = txn.open_table(EVENTS)?;
                    let mut ids = txn.open_table(IDS)?;
                    let mut doomed = Vec::new();
                    for row in events.range((room.as_str(), 0)..=(room.as_str(), u64::MAX))? {
                        let (key, frame) = row?;
                        let offset = key.value().1;
                        let frame = frame.value();
                        if offset >= first_kept && !retention.too_old(frame, now_ms) {
                            break;
                        }
                        doomed.push((offset, event_id(frame)));
                        if doomed.len() == CHUNK {
                            break;
                        }
                    }
                    for (offset, id) in &doomed {
                        events.remove((room.as_str(), *offset))?;
                        if let Some(id) = id {
                            ids.remove((room.as_str(), id.as_str()))?;
                        }
                    }
                    doomed
                };
                let Some((last, _)) = doomed.last() else {
                    txn.abort()?;
                    break;
                };
                txn.commit()?;
                kept.insert(room.clone(), last + 1);
                total += doomed.len() as u64;
                if doomed.len() < CHUNK {
                    break;
                }
            }
        }
        Ok((kept, total))
    }

    /// Whether the room's oldest stored event is past the retention (read
    /// alone: most rooms have nothing to trim, and a write would make the
    /// appends wait).
    fn oldest_past(
        &self,
        room: &str,
        first_kept: u64,
        retention: &Retention,
        now_ms: u64,
    ) -> Result<bool, redb::Error> {
        let read = self.db.begin_read()?;
        let events = read.open_table(EVENTS)?;
        let mut range = events.range((room, 0)..=(room, u64::MAX))?;
        Ok(match range.next() {
            Some(row) => {
                let (key, frame) = row?;
                key.value().1 < first_kept || retention.too_old(frame.value(), now_ms)
            }
            None => false,
        })
    }
}
