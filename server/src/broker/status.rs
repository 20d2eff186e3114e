//! Whether the broker answers, as the tasks that use it find out: the
//! commands (set by every call) and the subscription connections (one per
//! shard). While commands are known to fail, callers skip the broker
//! instead of waiting for a timeout on every message; the membership task
//! keeps probing and flips it back.

use crate::metrics;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct LinkStatus {
    /// Whether `redis_up` reports this link (not for the in-memory broker,
    /// which has no link to lose).
    reported: bool,
    /// Subscription connections down.
    pubsub_down: AtomicUsize,
    commands: AtomicBool,
    /// Since when commands have answered without a break.
    answering_since: Mutex<Option<Instant>>,
}

/// One subscription connection is up until this is dropped (even by a
/// panic, so that a restarted task cannot count it twice).
pub struct PubsubUp<'a>(&'a LinkStatus);

impl Drop for PubsubUp<'_> {
    fn drop(&mut self) {
        self.0.pubsub_down.fetch_add(1, Ordering::Relaxed);
        self.0.report();
    }
}

impl LinkStatus {
    /// Commands are presumed to work until one fails, so that the first
    /// clients are registered in the broker rather than locally; pub/sub is
    /// down until its `pubsub_connections` are made.
    pub fn new(pubsub_connections: usize) -> Self {
        LinkStatus {
            reported: true,
            pubsub_down: AtomicUsize::new(pubsub_connections),
            commands: AtomicBool::new(true),
            answering_since: Mutex::new(None),
        }
    }

    /// A link that is always up, for the in-memory broker.
    pub fn in_memory() -> Self {
        LinkStatus {
            reported: false,
            ..LinkStatus::new(0)
        }
    }

    pub fn pubsub_up(&self) -> PubsubUp<'_> {
        self.pubsub_down.fetch_sub(1, Ordering::Relaxed);
        self.report();
        PubsubUp(self)
    }

    fn report(&self) {
        if self.reported {
            metrics::redis_up(self.is_up());
        }
    }

    pub fn set_commands(&self, up: bool) {
        self.commands.store(up, Ordering::Relaxed);
        let mut since = self.since();
        match (up, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, _) => *since = None,
            (true, Some(_)) => {}
        }
        drop(since);
        self.report();
    }

    /// How long commands have answered without a break.
    pub fn answering_for(&self) -> Duration {
        self.since().map_or(Duration::ZERO, |since| since.elapsed())
    }

    pub fn commands_up(&self) -> bool {
        self.commands.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.pubsub_down.load(Ordering::Relaxed) == 0 && self.commands_up()
    }

    fn since(&self) -> parking_lot::MutexGuard<'_, Option<Instant>> {
        self.answering_since.lock()
    }
}
