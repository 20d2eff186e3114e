//! This instance's follower of every room stream it has listeners on.
//!
//! Events reach an instance two ways: its own appends (the stamped frame the
//! append returns) and other instances' appends (pub/sub). The feed of a
//! room hands them to the local connections strictly in offset order, each
//! once: an event ahead of the next offset waits, and if the missing ones do
//! not arrive soon (a pub/sub reconnect lost them), the feed reads them back
//! from the stream. What the stream no longer holds is announced to the
//! room's connections as a history frame with `"recovered":false`, never
//! skipped silently.

use super::resume::Snapshot;
use super::sequencer::Feed;
use crate::broker::{stamp, Broker, BrokerError, Stored};
use crate::fanout::{ConnId, Hub, Peer, Topic};
use crate::metrics;
use axum::extract::ws::Utf8Bytes;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long an event may wait for the ones before it before the feed reads
/// them from the stream. Pub/sub and the append's reply race by well under
/// a millisecond, so this only fires for real losses.
const GAP_WAIT: Duration = Duration::from_millis(200);
/// Pause before trying again to read a stream that did not answer.
const RETRY: Duration = Duration::from_millis(500);

pub struct Feeds {
    hub: Arc<Hub>,
    rooms: Mutex<HashMap<String, Feed>>,
    repairs: mpsc::UnboundedSender<String>,
    /// Rooms to repair, taken by whichever run of the repair task is live.
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Feeds {
    /// The feeds; the caller runs [`Feeds::repair_loop`] (supervised).
    pub fn new(hub: Arc<Hub>) -> Arc<Self> {
        let (repairs, queue) = mpsc::unbounded_channel();
        Arc::new(Feeds {
            hub,
            rooms: Mutex::default(),
            repairs,
            queue: tokio::sync::Mutex::new(queue),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Feed>> {
        self.rooms.lock()
    }

    /// Adds a local listener to a room, following its stream from now on.
    /// Under the feeds' lock, so that a room's last listener leaving cannot
    /// drop the feed a new listener just joined.
    pub fn listen(&self, room: &str, id: ConnId, peer: Peer) {
        let mut rooms = self.lock();
        rooms.entry(room.to_owned()).or_default();
        self.hub.insert(&Topic::Room(room.into()), id, peer);
    }

    /// Removes a local listener; true when it was the room's last here.
    pub fn unlisten(&self, room: &str, id: ConnId) -> bool {
        let mut rooms = self.lock();
        let last = self.hub.remove(&Topic::Room(room.into()), id);
        if last {
            rooms.remove(room);
        }
        last
    }

    /// How far this instance delivered the room's stream (the offset of the
    /// newest event in its epoch): it grows with every event, for the room
    /// list's unread marks.
    pub fn activity(&self, room: &str) -> u64 {
        self.lock().get(room).map_or(0, Feed::delivered)
    }

    /// A connection read the stream: the feed follows it from there if it
    /// did not know where the stream was yet.
    pub fn start(&self, room: &str, snapshot: &Snapshot) {
        let mut rooms = self.lock();
        let Some(feed) = rooms.get_mut(room) else {
            return;
        };
        let mut out = self.sender(room);
        feed.start(&snapshot.epoch, snapshot.offset, &mut out);
        // Behind the stream: the events in between are most likely in
        // flight, but if not they must be read back.
        if feed.behind() {
            self.queue(room, feed, false);
        }
    }

    /// An event of the room's stream, from this instance's append or from
    /// pub/sub (each may bring it; the second is dropped).
    pub fn offer(&self, room: &str, frame: Utf8Bytes) {
        let Some((epoch, offset)) = stamp::position(&frame) else {
            metrics::error("stream", "unstamped");
            tracing::warn!(room, "dropped a room event without a stream position");
            return;
        };
        let epoch = epoch.to_owned();
        let mut rooms = self.lock();
        let Some(feed) = rooms.get_mut(room) else {
            return;
        };
        let mut out = self.sender(room);
        feed.offer(&epoch, offset, frame, &mut out);
        if feed.behind() {
            self.queue(room, feed, false);
        }
    }

    /// Reads the room's stream again soon: a connection could not read it,
    /// or the pub/sub connection was lost and events published meanwhile
    /// must be delivered from the stream.
    pub fn repair(&self, room: &str) {
        let mut rooms = self.lock();
        if let Some(feed) = rooms.get_mut(room) {
            self.queue(room, feed, true);
        }
    }

    fn queue(&self, room: &str, feed: &mut Feed, forced: bool) {
        feed.forced |= forced;
        if !feed.queued {
            feed.queued = true;
            let _ = self.repairs.send(room.to_owned());
        }
    }

    fn sender(&self, room: &str) -> impl FnMut(&Utf8Bytes) + '_ {
        let topic = Topic::Room(room.into());
        move |frame: &Utf8Bytes| {
            self.hub.deliver(&topic, frame, None);
        }
    }

    /// Brings the feed up to date with the stream as read just now.
    fn fill(&self, room: &str, stored: Stored) {
        let mut rooms = self.lock();
        let Some(feed) = rooms.get_mut(room) else {
            return;
        };
        let mut out = self.sender(room);
        feed.fill(stored, &mut out);
        if feed.behind() {
            self.queue(room, feed, false);
        }
    }

    /// The room's stream as a repair needs it: its newest events, and
    /// back to the feed's next offset when that is older but still
    /// retained (a busy room whose pub/sub lags: the events left the
    /// newest 100, not the stream).
    async fn read_missing(&self, broker: &dyn Broker, room: &str) -> Result<Stored, BrokerError> {
        let stored = broker.read(room).await?;
        let first = stored.offset + 1 - stored.events.len() as u64;
        let next = self
            .lock()
            .get(room)
            .and_then(|feed| feed.next_in(&stored.epoch));
        let Some(next) = next.filter(|next| (1..first).contains(next)) else {
            return Ok(stored);
        };
        match broker.since(room, next - 1, stored.offset).await? {
            Some(events) if events.len() as u64 == stored.offset + 1 - next => {
                Ok(Stored { events, ..stored })
            }
            _ => Ok(stored),
        }
    }

    /// Whether the room still needs its repair: the gap may have closed
    /// while the repair waited, as it nearly always does.
    fn needs_repair(&self, room: &str) -> bool {
        let mut rooms = self.lock();
        let Some(feed) = rooms.get_mut(room) else {
            return false;
        };
        feed.queued = false;
        std::mem::take(&mut feed.forced) || feed.behind()
    }

    /// Reads back from the broker what the feeds miss, room by room, as
    /// they ask, until `shutdown`.
    pub async fn repair_loop(
        self: Arc<Self>,
        broker: Arc<dyn Broker>,
        shutdown: CancellationToken,
    ) {
        let mut queue = self.queue.lock().await;
        // Rooms a previous run took off the queue but did not repair (it
        // panicked) are queued again.
        for (room, feed) in self.lock().iter_mut().filter(|(_, feed)| feed.queued) {
            feed.queued = false;
            self.queue(room, feed, true);
        }
        loop {
            let room = tokio::select! {
                _ = shutdown.cancelled() => return,
                room = queue.recv() => match room {
                    Some(room) => room,
                    None => return,
                },
            };
            // Let events in flight arrive first; batch what queues meanwhile.
            tokio::time::sleep(GAP_WAIT).await;
            let mut rooms = HashSet::from([room]);
            while let Ok(room) = queue.try_recv() {
                rooms.insert(room);
            }
            for room in rooms {
                if !self.needs_repair(&room) {
                    continue;
                }
                match self.read_missing(broker.as_ref(), &room).await {
                    Ok(stored) => self.fill(&room, stored),
                    Err(err) => {
                        tracing::debug!(room, error = %err, "cannot repair the room's feed yet");
                        let feeds = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(RETRY).await;
                            feeds.repair(&room);
                        });
                    }
                }
            }
        }
    }
}
