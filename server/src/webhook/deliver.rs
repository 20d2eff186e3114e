//! The deliverer: finds marked rooms, takes their lease, and POSTs their
//! events after the cursor one by one, moving the cursor after each 2xx.

use super::plan::{plan, Plan};
use super::{wire, Epochs, Outbox, Retries, Wakers, REMEMBERED};
use crate::broker::{Broker, BrokerError, Lease, Position, Stored};
use crate::clock::now_ms;
use crate::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use parking_lot::Mutex;
use std::collections::HashMap;
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
                    for room in marked {
                        self.start(room);
                    }
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

    fn start(self: &Arc<Self>, room: String) {
        if self.rooms.lock().contains_key(&room) || self.elsewhere.lock().contains_key(&room) {
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
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
    }

    /// Delivers the room until everything was, another instance has it,
    /// or the instance stops; says which.
    async fn deliver_room(&self, room: &str, waker: &Notify) -> Pass {
        let mut trouble = backoff();
        // The mark last seen, and when it was first seen.
        let mut seen: Option<(String, Instant)> = None;
        let mut ended = Pass::Done;
        while !self.shutdown.is_cancelled() {
            match self.pass(room, &mut seen).await {
                Ok(pass @ (Pass::Done | Pass::Elsewhere)) => {
                    ended = pass;
                    break;
                }
                Ok(Pass::Again { busy }) => {
                    trouble = backoff();
                    if !busy {
                        let mark = seen.as_ref().map(|(mark, _)| mark.as_str());
                        self.more(room, mark.unwrap_or_default(), waker).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(room, error = %err, "webhooks: broker unavailable; retrying");
                    self.pause(trouble.next().unwrap_or(LEASE)).await;
                }
            }
        }
        // A stopping instance hands its rooms over at once, not after the
        // lease expires (a reload does not hold the webhooks up).
        if self.shutdown.is_cancelled() {
            if let Err(err) = self.broker.hook_release(room).await {
                tracing::debug!(room, error = %err, "webhooks: lease left to expire");
            }
        }
        ended
    }

    async fn pass(
        &self,
        room: &str,
        seen: &mut Option<(String, Instant)>,
    ) -> Result<Pass, BrokerError> {
        let Lease::Held { cursor, stored } = self.broker.hook_lease(room, LEASE).await? else {
            return Ok(Pass::Elsewhere);
        };
        if let Some(plan) = self.next(room, cursor, &stored) {
            if !self.deliver(room, &plan).await? {
                return Ok(Pass::Elsewhere);
            }
            self.epochs.delivered(room, &stored.epoch);
            return Ok(Pass::Again { busy: true });
        }
        if !stored.epoch.is_empty() {
            self.epochs.delivered(room, &stored.epoch);
        }
        // Caught up. The mark is read, then the stream once more: an event
        // appended after this read of the mark marks the room again, and
        // the settle below sees it.
        let mark = self.broker.hook_mark_of(room).await?;
        let read_at = Instant::now();
        let Lease::Held { cursor, stored } = self.broker.hook_lease(room, LEASE).await? else {
            return Ok(Pass::Elsewhere);
        };
        if self.next(room, cursor, &stored).is_some() {
            return Ok(Pass::Again { busy: true });
        }
        let first_seen = match seen {
            Some((last, at)) if *last == mark => *at,
            _ => {
                *seen = Some((mark.clone(), read_at));
                read_at
            }
        };
        if read_at < first_seen + SETTLE_AFTER && !mark.is_empty() {
            return Ok(Pass::Again { busy: false });
        }
        let settled = self.broker.hook_settle(room, &mark).await?;
        Ok(if settled {
            Pass::Done
        } else {
            Pass::Again { busy: false }
        })
    }

    /// What to send next from the stored stream, after the broker's cursor
    /// or, when the broker lost it, after what this instance delivered.
    fn next<'a>(
        &self,
        room: &str,
        cursor: Option<Position>,
        stored: &'a Stored,
    ) -> Option<Plan<'a>> {
        let cursor = cursor.or_else(|| self.delivered.lock().get(room).cloned());
        let known_epoch = self.epochs.of(room);
        plan(cursor.as_ref(), known_epoch.as_deref(), stored)
    }

    /// Sends the plan's gap and events in order; false when the lease was
    /// lost on the way.
    async fn deliver(&self, room: &str, plan: &Plan<'_>) -> Result<bool, BrokerError> {
        if let Some(gap) = &plan.gap {
            tracing::warn!(room, after = ?gap.after, resume = ?gap.resume, "webhooks: events lost before delivery; sending a gap");
            let sent = self.send(room, wire::gap_body(room, gap), None).await?;
            if !sent || !self.advance(room, &gap.before_resume()).await? {
                return Ok(false);
            }
        }
        // The cursor moves to each event while the next one is sent: one
        // round trip per event. Safe: a POST gives up after 5 s, well
        // within the lease, so an instance that finds it lost the lease has
        // sent at most the one event past its cursor, which the next
        // deliverer sends again, before anything later.
        let mut delivered: Option<Position> = None;
        for (i, frame) in plan.events.iter().enumerate() {
            let at = Position {
                epoch: plan.first.epoch.clone(),
                offset: plan.first.offset + i as u64,
            };
            let owed = (plan.events.len() - i) as u64;
            self.note_backlog(room, owed, event_ts(frame));
            let body = wire::event_body(room, &at, frame);
            let (sent, advanced) = tokio::join!(
                self.send(room, body, Some(&at)),
                self.advance_to(room, delivered.as_ref())
            );
            if !advanced? || !sent? {
                return Ok(false);
            }
            delivered = Some(at);
        }
        self.note_backlog(room, 0, None);
        self.advance_to(room, delivered.as_ref()).await
    }

    async fn advance_to(
        &self,
        room: &str,
        delivered: Option<&Position>,
    ) -> Result<bool, BrokerError> {
        match delivered {
            Some(delivered) => self.advance(room, delivered).await,
            None => Ok(true),
        }
    }

    async fn advance(&self, room: &str, delivered: &Position) -> Result<bool, BrokerError> {
        let moved = self.broker.hook_advance(room, delivered, LEASE).await?;
        if moved {
            let mut remembered = self.delivered.lock();
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
            remembered.insert(room.to_owned(), delivered.clone());
        }
        Ok(moved)
    }

    /// POSTs until the backend acknowledges (2xx), keeping the lease
    /// between tries; false when the lease went to another instance or the
    /// instance stops. `event`: the position of the event sent (none for a
    /// gap).
    async fn send(
        &self,
        room: &str,
        body: String,
        event: Option<&Position>,
    ) -> Result<bool, BrokerError> {
        let what = if event.is_some() { "event" } else { "gap" };
        let signature = wire::signature(&self.secret, &body);
        let mut delays = backoff();
        loop {
            let started = Instant::now();
            match self.post(&body, &signature).await {
                Ok(()) => {
                    metrics::webhook_sent(what, "delivered", started.elapsed());
                    return Ok(true);
                }
                Err(why) => {
                    metrics::webhook_sent(what, "failed", started.elapsed());
                    tracing::warn!(room, error = %why, "webhook not acknowledged; retrying");
                }
            }
            self.pause(delays.next().unwrap_or(LEASE)).await;
            if self.shutdown.is_cancelled() {
                return Ok(false);
            }
            let Lease::Held { stored, .. } = self.broker.hook_lease(room, LEASE).await? else {
                return Ok(false);
            };
            if let Some(at) = event {
                self.recount(room, at, &stored);
            }
        }
    }

    /// While an event is retried, what follows it keeps coming: counts the
    /// room's backlog again from its stream.
    fn recount(&self, room: &str, sending: &Position, stored: &Stored) {
        if stored.epoch == sending.epoch {
            let owed = (stored.offset + 1).saturating_sub(sending.offset);
            let oldest_ms = self.rooms.lock().get(room).and_then(|b| b.oldest_ms);
            self.note_backlog(room, owed, oldest_ms);
        }
    }

    async fn post(&self, body: &str, signature: &str) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Signature-256", signature)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|err| format!("no answer: {err}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(format!("answered {status}"))
    }

    /// Returns when the caught-up room may have more: this instance
    /// appended, its mark changed, or `REREAD` passed.
    async fn more(&self, room: &str, mark: &str, waker: &Notify) {
        let until = tokio::time::Instant::now() + REREAD;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                _ = waker.notified() => return,
                _ = sleep(MARK_CHECK) => {}
                _ = self.shutdown.cancelled() => return,
            }
            match self.broker.hook_mark_of(room).await {
                Ok(now) if now == mark => {}
                _ => return,
            }
        }
    }

    async fn pause(&self, delay: Duration) {
        tokio::select! {
            _ = sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// The room owes `events`, the oldest of them from then.
    fn note_backlog(&self, room: &str, events: u64, oldest_ms: Option<u64>) {
        let backlog = Backlog { events, oldest_ms };
        if let Some(entry) = self.rooms.lock().get_mut(room) {
            *entry = backlog;
        }
        self.publish_backlog();
    }

    fn publish_backlog(&self) {
        let rooms = self.rooms.lock();
        let events = rooms.values().map(|b| b.events).sum::<u64>();
        let oldest = rooms.values().filter_map(|b| b.oldest_ms).min();
        let age = oldest.map_or(0, |ms| now_ms().saturating_sub(ms));
        metrics::webhook_backlog(events, Duration::from_millis(age));
    }
}

/// Retries: 0.2 s doubling up to 2 s, with jitter (each pause at most
/// twice that), for as long as it takes. A failed POST (at most 5 s) and
/// the pause after it stay within the 10 s lease, renewed before each try.
pub(super) fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// When a stored event happened (its `ts`).
fn event_ts(frame: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: Option<u64>,
    }
    serde_json::from_str::<Ts>(frame).ok()?.ts
}
