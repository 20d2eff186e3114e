//! Webhooks: every room event (joins, leaves, renames, messages, deletions,
//! edits, moderation) and every relay registration and unregistration is
//! POSTed to the backend (`WEBHOOK_URL`), at least once, in stream order
//! per room, signed with `WEBHOOK_SECRET` ([`wire`]).
//!
//! Rooms are streams with positions, so a webhook is a consumer with a
//! cursor kept in the broker:
//! - every append marks its room ([`Outbox`]); relay registrations are
//!   appended to one stream for them all (`!relay`, bounded as a room's
//!   history), for the purpose;
//! - each instance looks for marked rooms and delivers those whose lease
//!   it gets: one instance per room at a time; the lease expires 10 s
//!   after a deliverer dies and another instance takes the room over from
//!   its cursor ([`deliver`]);
//! - the cursor moves after each 2xx only; failures are retried with
//!   exponential backoff and jitter; events that left the history before
//!   they were delivered are announced as a `gap` ([`plan`]).

mod deliver;
mod plan;
pub mod wire;

use crate::broker::{stamp, Appended, Broker, BrokerError, Entry};
use crate::clock::now_ms;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

pub use deliver::Webhooks;

/// Appends with the room marked for delivery; held by whatever appends
/// (the chat, the relay) when webhooks are on.
#[derive(Clone)]
pub struct Outbox {
    broker: Arc<dyn Broker>,
    /// Wakes this instance's deliverer: the first event of a quiet room
    /// goes out at once rather than at the next look for marked rooms.
    wake: Arc<Notify>,
    epochs: Arc<Epochs>,
    wakers: Arc<Wakers>,
    retries: Arc<Retries>,
}

/// What the outbox could not write, written again by the deliverer's next
/// scans, for as long as it takes.
#[derive(Default)]
struct Retries {
    /// Rooms whose mark failed where their append did not.
    marks: Mutex<HashSet<String>>,
    /// Relay events (stream, frame) not appended, oldest first.
    relay: Mutex<VecDeque<(String, String)>>,
}

/// The deliverers of the rooms this instance delivers, by room.
#[derive(Default)]
struct Wakers(Mutex<HashMap<String, Arc<Notify>>>);

/// An append slower than this is marked again after it: well under the
/// time a deliverer waits before removing a mark (3 s).
const SLOW_APPEND: Duration = Duration::from_secs(1);

/// Relay events kept for a broker that does not answer; the oldest are
/// dropped past this (counted in `errors_total`).
const RELAY_KEPT: usize = 10_000;

/// Rooms this instance remembers, bounded: forgotten all at once past this
/// many.
const REMEMBERED: usize = 100_000;

/// Per room, the oldest epoch this instance appended to and has not seen
/// delivered past: when the broker lost a room's cursor (a Redis that
/// keeps nothing restarted), an instance that wrote to the room in an
/// earlier epoch knows that some of its events may not have been delivered.
#[derive(Default)]
struct Epochs(Mutex<HashMap<String, String>>);

impl Epochs {
    /// An event of this epoch was appended here (an older epoch noted and
    /// not yet delivered past stays).
    fn note(&self, room: &str, epoch: &str) {
        let mut epochs = self.0.lock();
        if epochs.contains_key(room) {
            return;
        }
        if epochs.len() >= REMEMBERED {
            epochs.clear();
        }
        epochs.insert(room.to_owned(), epoch.to_owned());
    }

    /// The room's events were delivered in this epoch.
    fn delivered(&self, room: &str, epoch: &str) {
        if let Some(known) = self.0.lock().get_mut(room) {
            epoch.clone_into(known);
        }
    }

    fn of(&self, room: &str) -> Option<String> {
        self.0.lock().get(room).cloned()
    }
}

impl Outbox {
    /// Appends to the room's stream with the room marked for the webhook.
    /// The mark is sent first and both go at once: one round trip, and on
    /// one Redis, one connection, where the mark lands first. A mark that
    /// failed where the append did not is written again by the deliverer.
    pub async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        let started = Instant::now();
        let (marked, appended) =
            tokio::join!(self.broker.hook_mark(room), self.broker.append(room, entry));
        // A slow append (on a cluster the mark and the append take different
        // roads) or one that timed out (it may still take effect) may land
        // after a deliverer settled its mark: the room is marked again.
        let late = started.elapsed() > SLOW_APPEND;
        if late || appended.as_ref().is_err_and(BrokerError::is_timeout) {
            self.retries.marks.lock().insert(room.to_owned());
        }
        let appended = appended?;
        if let Err(err) = marked {
            crate::metrics::error("webhook", "mark");
            tracing::warn!(room, error = %err, "webhooks: room not marked; trying again");
            self.retries.marks.lock().insert(room.to_owned());
        }
        // The room's deliverer if it is here, else the search for rooms.
        match self.wakers.0.lock().get(room) {
            Some(deliverer) => deliverer.notify_one(),
            None => self.wake.notify_one(),
        }
        if let Appended::New(frame) = &appended {
            if let Some((epoch, _)) = stamp::position(frame) {
                self.epochs.note(room, epoch);
            }
        }
        Ok(appended)
    }

    /// Records that the relay client `id` registered for (`registered`) or
    /// left (`unregistered`) the action, with its registration message;
    /// while the broker does not answer, kept and written in order later.
    pub async fn relay(&self, kind: &str, action: &str, id: Uuid, data: &str) {
        let stream = wire::RELAY_STREAM.to_owned();
        let frame = wire::relay_event(kind, id, action, data, now_ms());
        let waiting = !self.retries.relay.lock().is_empty();
        if waiting || self.append_relay(&stream, &frame).await.is_err() {
            let mut kept = self.retries.relay.lock();
            if kept.len() >= RELAY_KEPT {
                kept.pop_front();
                crate::metrics::error("webhook", "relay_event_lost");
            }
            kept.push_back((stream, frame));
        }
    }

    async fn append_relay(&self, stream: &str, frame: &str) -> Result<Appended, BrokerError> {
        let entry = Entry {
            frame,
            ..Entry::default()
        };
        self.append(stream, entry).await
    }

    /// Writes again what failed: marks, then relay events in order (up to
    /// the first that fails again).
    async fn retry(&self) {
        let rooms: Vec<String> = self.retries.marks.lock().drain().collect();
        for room in rooms {
            if self.broker.hook_mark(&room).await.is_err() {
                self.retries.marks.lock().insert(room);
            }
        }
        loop {
            let Some((stream, frame)) = self.retries.relay.lock().front().cloned() else {
                return;
            };
            if self.append_relay(&stream, &frame).await.is_err() {
                return;
            }
            self.retries.relay.lock().pop_front();
        }
    }
}
