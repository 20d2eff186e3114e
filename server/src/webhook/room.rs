//! Delivering one room: its events after the cursor, in order, each
//! POSTed until acknowledged, the cursor moving behind them; then its mark
//! settled once nothing more can be on its way.

use super::super::plan::{plan, Plan};
use super::super::wire;
use super::send::{backoff, event_ts};
use super::{Pass, Webhooks, LEASE, MARK_CHECK, REREAD, SETTLE_AFTER};
use crate::broker::{BrokerError, Lease, Position, Stored};
use crate::webhook::REMEMBERED;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::time::sleep;

impl Webhooks {
    /// Delivers the room until everything was, another instance has it,
    /// or the instance stops; says which.
    pub(super) async fn deliver_room(&self, room: &str, waker: &Notify) -> Pass {
        let mut trouble = backoff();
        // The mark last seen, and when it was first seen.
        let mut seen: Option<(String, Instant)> = None;
        let mut ended = Pass::Done;
        while !self.shutdown.is_cancelled() {
            match self.pass(room, &mut seen).await {
                Ok(pass @ (Pass::Done | Pass::Elsewhere | Pass::Yielded)) => {
                    ended = pass;
                    break;
                }
                Ok(Pass::Again { busy }) => {
                    trouble = backoff();
                    // Rooms are waiting for a slot: this one gives its own
                    // up and waits its turn with them (still marked).
                    if self.waiting.load(Ordering::Relaxed) {
                        ended = Pass::Yielded;
                        break;
                    }
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
        // lease expires (a reload does not hold the webhooks up); a room
        // that gave its slot up may go to any instance.
        if self.shutdown.is_cancelled() || ended == Pass::Yielded {
            if let Err(err) = self.broker.hook_release(room).await {
                tracing::debug!(room, error = %err, "webhooks: lease left to expire");
            }
        }
        ended
    }

    pub(super) async fn pass(
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
    pub(super) fn next<'a>(
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
    pub(super) async fn deliver(&self, room: &str, plan: &Plan<'_>) -> Result<bool, BrokerError> {
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

    pub(super) async fn advance_to(
        &self,
        room: &str,
        delivered: Option<&Position>,
    ) -> Result<bool, BrokerError> {
        match delivered {
            Some(delivered) => self.advance(room, delivered).await,
            None => Ok(true),
        }
    }

    pub(super) async fn advance(
        &self,
        room: &str,
        delivered: &Position,
    ) -> Result<bool, BrokerError> {
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

    /// Returns when the caught-up room may have more: this instance
    /// appended, its mark changed, or `REREAD` passed.
    pub(super) async fn more(&self, room: &str, mark: &str, waker: &Notify) {
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

    pub(super) async fn pause(&self, delay: Duration) {
        tokio::select! {
            _ = sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}
