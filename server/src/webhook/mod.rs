//! Webhooks: every room event (joins, leaves, renames, messages, deletions,
//! edits, moderation) and every relay registration and unregistration is
//! POSTed to the backend (`WEBHOOK_URL`), at least once, in stream order
//! per room, signed with `WEBHOOK_SECRET` ([`wire`]).
//!
//! Rooms are streams with positions, so a webhook is a consumer with a
//! cursor kept in the broker:
//! - every append marks its room ([`Outbox`]); relay registrations are
//!   appended to a stream of their action for the purpose;
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
use std::collections::HashMap;
use std::sync::Arc;
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
}

/// The deliverers of the rooms this instance delivers, by room.
#[derive(Default)]
struct Wakers(Mutex<HashMap<String, Arc<Notify>>>);

/// Tries of a mark that failed (about a minute with the backoff).
const MARK_TRIES: usize = 15;

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
    /// failed where the append did not is tried again in the background.
    pub async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        let (marked, appended) =
            tokio::join!(self.broker.hook_mark(room), self.broker.append(room, entry));
        let appended = appended?;
        if let Err(err) = marked {
            self.mark_later(room, err);
        }
        self.wake.notify_one();
        if let Some(deliverer) = self.wakers.0.lock().get(room) {
            deliverer.notify_one();
        }
        if let Appended::New(frame) = &appended {
            if let Some((epoch, _)) = stamp::position(frame) {
                self.epochs.note(room, epoch);
            }
        }
        Ok(appended)
    }

    fn mark_later(&self, room: &str, err: BrokerError) {
        crate::metrics::error("webhook", "mark");
        tracing::warn!(room, error = %err, "webhooks: room not marked; trying again");
        let (broker, room) = (self.broker.clone(), room.to_owned());
        tokio::spawn(async move {
            for delay in deliver::backoff().take(MARK_TRIES) {
                tokio::time::sleep(delay).await;
                if broker.hook_mark(&room).await.is_ok() {
                    return;
                }
            }
            tracing::error!(
                room,
                "webhooks: room not marked: its last events wait for the next one"
            );
        });
    }

    /// Records that the relay client `id` registered for (`registered`) or
    /// left (`unregistered`) the action, with its registration message.
    pub async fn relay(&self, kind: &str, action: &str, id: Uuid, data: &str) {
        let stream = format!("{}{action}", wire::RELAY_STREAM);
        let frame = wire::relay_event(kind, id, action, data, now_ms());
        let entry = Entry {
            frame: &frame,
            ..Entry::default()
        };
        if let Err(err) = self.append(&stream, entry).await {
            crate::metrics::error("webhook", "relay_event_lost");
            tracing::warn!(%id, action, kind, error = %err, "relay event not recorded for the webhook");
        }
    }
}
