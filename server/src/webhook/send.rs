//! One POST to the backend, tried until acknowledged (signed at each try
//! with its time), and the backlog it is part of.

use super::super::wire;
use super::{Backlog, Webhooks, LEASE};
use crate::broker::{BrokerError, Lease, Position, Stored};
use crate::clock::now_ms;
use crate::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::{Duration, Instant};

impl Webhooks {
    /// POSTs until the backend acknowledges (2xx), keeping the lease
    /// between tries; false when the lease went to another instance or the
    /// instance stops. `event`: the position of the event sent (none for a
    /// gap).
    pub(super) async fn send(
        &self,
        room: &str,
        body: String,
        event: Option<&Position>,
    ) -> Result<bool, BrokerError> {
        let what = if event.is_some() { "event" } else { "gap" };
        let id = wire::delivery_id(&body);
        let mut delays = backoff();
        loop {
            let started = Instant::now();
            // Signed at each try: its time is the try's.
            let signature = wire::signature(&self.secret, now_ms() / 1000, &body);
            match self.post(&body, &id, &signature).await {
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

    async fn post(&self, body: &str, id: &str, signature: &str) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Webhook-Id", id)
            .header("X-Webhook-Signature", signature)
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

    /// The room owes `events`, the oldest of them from then.
    pub(super) fn note_backlog(&self, room: &str, events: u64, oldest_ms: Option<u64>) {
        let backlog = Backlog { events, oldest_ms };
        if let Some(entry) = self.rooms.lock().get_mut(room) {
            *entry = backlog;
        }
        self.publish_backlog();
    }

    pub(super) fn publish_backlog(&self) {
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
pub(super) fn event_ts(frame: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: Option<u64>,
    }
    serde_json::from_str::<Ts>(frame).ok()?.ts
}
