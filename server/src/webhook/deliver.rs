//! The deliverer: finds marked rooms, takes their lease, and POSTs their
//! events after the cursor one by one, moving the cursor after each 2xx
//! (`room.rs`, `send.rs`). At most [`PARALLEL_ROOMS`] rooms at once per
//! instance; while marked rooms wait for a slot, a room gives its slot up
//! after each batch and waits its turn with them, so that busy rooms
//! cannot starve quiet ones.

#[path = "room.rs"]
mod room;
#[path = "send.rs"]
mod send;

use super::{Epochs, Outbox, Retries, Wakers};
use crate::broker::{Broker, Position};
use crate::metrics;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a room stays with an instance that stopped renewing its lease
/// (it died, or lost the broker).
const LEASE: Duration = Duration::from_secs(10);
/// How often each instance looks for marked rooms (besides being woken by
/// its own appends).
const POLL: Duration = Duration::from_millis(250);
/// A room is marked as its event is appended (the mark sent first): its
/// mark is only removed once the stream was read this long after the mark
/// was seen, longer than an append can take (the broker's answer timeout),
/// so that the event of an append still on its way is not left unmarked.
const SETTLE_AFTER: Duration = Duration::from_secs(3);
/// Meanwhile, a caught-up room is looked at again when this instance
/// appends to it, when its mark changes (another instance appended; the
/// mark is checked this often), or after `REREAD` in any case.
const MARK_CHECK: Duration = Duration::from_millis(50);
const REREAD: Duration = Duration::from_millis(200);
/// No answer within this counts as a failure (retried).
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Rooms delivered at once by one instance (each in order).
const PARALLEL_ROOMS: usize = 32;
/// A room another instance delivers is not tried again for this long, so
/// that the slots go to the rooms nobody delivers.
const ELSEWHERE_PAUSE: Duration = Duration::from_secs(1);
/// Looks for marked rooms at most this often, however often it is woken.
const MIN_SCAN: Duration = Duration::from_millis(50);

pub struct Webhooks {
    broker: Arc<dyn Broker>,
    client: reqwest::Client,
    url: String,
    secret: String,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// The rooms this instance is delivering, with what they still owe.
    rooms: Mutex<HashMap<String, Backlog>>,
    /// Their deliverers, woken by this instance's appends.
    wakers: Arc<Wakers>,
    /// Rooms found delivered by another instance, and when.
    elsewhere: Mutex<HashMap<String, Instant>>,
    /// A marked room found no free slot at the last scan.
    waiting: AtomicBool,
    /// What the outbox failed to write, written again by the scans.
    retries: Arc<Retries>,
    /// The last position this instance delivered, per room (to tell a gap
    /// when the broker lost a cursor).
    delivered: Mutex<HashMap<String, Position>>,
    epochs: Arc<Epochs>,
    shutdown: CancellationToken,
    /// The instance's tasks: its drain waits for the deliverers to hand
    /// their rooms over.
    tasks: TaskTracker,
}

/// What a room being delivered still owes the backend.
#[derive(Debug, Clone, Copy, Default)]
struct Backlog {
    events: u64,
    /// When its oldest undelivered event happened (ms since the Unix epoch).
    oldest_ms: Option<u64>,
}

/// A room being delivered by this instance, until dropped.
struct Started<'a> {
    webhooks: &'a Webhooks,
    room: &'a str,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.webhooks.wakers.0.lock().remove(self.room);
        self.webhooks.rooms.lock().remove(self.room);
        self.webhooks.publish_backlog();
    }
}

/// How one pass over a room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Everything delivered, mark removed, lease given back.
    Done,
    /// Another instance holds the room (or took it over).
    Elsewhere,
    /// Marked again, or too soon to tell: look again (at once when this
    /// pass delivered something: more is likely on its way).
    Again { busy: bool },
    /// Gave its slot up to rooms waiting for one (still marked).
    Yielded,
}

impl Webhooks {
    pub fn new(
        broker: Arc<dyn Broker>,
        url: String,
        secret: String,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .user_agent(concat!("chat-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| anyhow::anyhow!("cannot build the webhook HTTP client: {err}"))?;
        Ok(Arc::new(Webhooks {
            broker,
            client,
            url,
            secret,
            wake: Arc::new(Notify::new()),
            slots: Arc::new(Semaphore::new(PARALLEL_ROOMS)),
            rooms: Mutex::default(),
            wakers: Arc::default(),
            elsewhere: Mutex::default(),
            waiting: AtomicBool::new(false),
            retries: Arc::default(),
            delivered: Mutex::default(),
            epochs: Arc::default(),
            shutdown,
            tasks,
        }))
    }

    /// What the chat and the relay mark rooms with.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            broker: self.broker.clone(),
            wake: self.wake.clone(),
            epochs: self.epochs.clone(),
            wakers: self.wakers.clone(),
            retries: self.retries.clone(),
        }
    }

    /// Looks for marked rooms and delivers them, until shutdown.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.outbox().retry().await;
            match self.broker.hook_marked().await {
                Ok(mut marked) => {
                    metrics::webhook_rooms_marked(marked.len());
                    // Every instance gets the rooms in one order: shuffled,
                    // the slots of each go to different rooms.
                    marked.sort_by_cached_key(|_| uuid::Uuid::new_v4());
                    self.elsewhere
                        .lock()
                        .retain(|_, at| at.elapsed() < ELSEWHERE_PAUSE);
                    // Every room gets its try: no short cut.
                    let mut waiting = false;
                    for room in marked {
                        waiting |= !self.start(room);
                    }
                    self.waiting.store(waiting, Ordering::Relaxed);
                }
                Err(err) => tracing::debug!(error = %err, "webhooks: marked rooms unreadable"),
            }
            // The oldest undelivered event's age grows by itself.
            self.publish_backlog();
            let next_scan = sleep(MIN_SCAN);
            tokio::select! {
                _ = sleep(POLL) => {}
                _ = self.wake.notified() => next_scan.await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Starts delivering the room unless it is already, or another
    /// instance does; false when it waits for a slot.
    fn start(self: &Arc<Self>, room: String) -> bool {
        if self.rooms.lock().contains_key(&room) || self.elsewhere.lock().contains_key(&room) {
            return true;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        self.rooms.lock().insert(room.clone(), Backlog::default());
        let waker = Arc::new(Notify::new());
        self.wakers.0.lock().insert(room.clone(), waker.clone());
        let me = self.clone();
        self.tasks.spawn(async move {
            // Forgotten however the task ends (a panic included), so that
            // the room can be started again.
            let _started = Started {
                webhooks: &me,
                room: &room,
            };
            if me.deliver_room(&room, &waker).await == Pass::Elsewhere {
                me.elsewhere.lock().insert(room.clone(), Instant::now());
            }
            drop(slot);
        });
        true
    }
}
