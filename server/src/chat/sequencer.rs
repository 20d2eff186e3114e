//! One room's sequencer: it hands the room's events out strictly in
//! offset order, each once, holds those that arrive ahead of the next
//! offset, and says when events are missing ([`Feed::behind`]) or lost for
//! good (a history frame with `"recovered":false`). Pure state: the feeds
//! ([`super::feed`]) drive it and read the stream for it.

use crate::broker::{stamp, Stored};
use crate::metrics;
use app::protocol::HISTORY_LEN;
use axum::extract::ws::Utf8Bytes;
use std::collections::BTreeMap;

/// Events held back at most: past this, the gap is given up (the stream's
/// bounded history could not fill it anyway).
const MAX_PENDING: usize = 4 * HISTORY_LEN;

/// Reads of the stream that found the missing events gone from its bounded
/// history before they are given up: they may still be on their way through
/// pub/sub, which a busy instance reads late (the repair loop reads again
/// every 0.2 s or so while the feed is behind).
const PATIENCE: u32 = 5;

/// Sent to a room's connections when events are missing for good.
fn unrecovered() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"history","offset":0,"recovered":false,"events":[]}"#)
}

#[derive(Default)]
pub struct Feed {
    /// `None` until a read of the stream says where it is.
    epoch: Option<String>,
    /// The offset to hand out next.
    next: u64,
    /// Events that arrived ahead of `next`, with their epoch.
    pending: BTreeMap<u64, (String, Utf8Bytes)>,
    /// The highest offset of the current epoch known to exist.
    known: u64,
    /// The epoch followed before the current one.
    retired: Option<String>,
    /// The stream must be read again whatever `known` says (the pub/sub
    /// connection was lost, or a connection could not read the stream).
    pub(super) forced: bool,
    /// A repair is queued.
    pub(super) queued: bool,
    /// Reads in a row that found the missing events gone from the history.
    short_reads: u32,
}

impl Feed {
    /// The offset of the newest event handed out in the current epoch.
    pub fn delivered(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// The offset to hand out next, if the feed follows `epoch`.
    pub fn next_in(&self, epoch: &str) -> Option<u64> {
        (self.epoch.as_deref() == Some(epoch)).then_some(self.next)
    }

    /// Events known to exist have not all been handed out.
    pub fn behind(&self) -> bool {
        self.epoch.is_some() && self.next <= self.known
    }

    pub fn offer(
        &mut self,
        epoch: &str,
        offset: u64,
        frame: Utf8Bytes,
        out: &mut impl FnMut(&Utf8Bytes),
    ) {
        if self.outdated(epoch) {
            return;
        }
        match &self.epoch {
            // Held until a read of the stream says where to start.
            None => {
                self.pending.insert(offset, (epoch.to_owned(), frame));
                if self.pending.len() > MAX_PENDING {
                    self.pending.pop_first();
                }
                return;
            }
            Some(current) if current != epoch => self.adopt(epoch, out),
            Some(_) => {}
        }
        self.known = self.known.max(offset);
        if offset == self.next {
            // The usual case: in order, handed out without being held.
            out(&frame);
            self.next += 1;
            self.drain(out);
        } else if offset > self.next {
            self.pending.insert(offset, (epoch.to_owned(), frame));
            // Nothing to hand out yet; gives the gap up if too much waits.
            self.drain(out);
        }
    }

    pub fn start(&mut self, epoch: &str, offset: u64, out: &mut impl FnMut(&Utf8Bytes)) {
        if self.outdated(epoch) {
            return;
        }
        match &self.epoch {
            None => self.begin(epoch, offset, out),
            Some(current) if current == epoch => {}
            // The stream began a new epoch that no event here showed yet.
            Some(_) => {
                self.adopt(epoch, out);
                self.drain(out);
            }
        }
        self.known = self.known.max(offset);
    }

    /// Catches up with the stream as read.
    pub fn fill(&mut self, stored: Stored, out: &mut impl FnMut(&Utf8Bytes)) {
        if self.outdated(&stored.epoch) {
            return;
        }
        match &self.epoch {
            None => self.begin(&stored.epoch, stored.offset, out),
            Some(current) if *current != stored.epoch => self.adopt(&stored.epoch, out),
            Some(_) => {}
        }
        let first = stored
            .events
            .first()
            .and_then(|e| stamp::position(e))
            .map_or(stored.offset + 1, |(_, o)| o);
        if self.next < first {
            // The missing events are no longer in the bounded history: given
            // up after a few reads, unless pub/sub brings them meanwhile.
            self.short_reads += 1;
            if self.short_reads > PATIENCE {
                metrics::error("stream", "gap_unrecovered");
                out(&unrecovered());
                self.next = first;
            }
        }
        for frame in stored.events {
            if let Some((epoch, offset)) = stamp::position(&frame) {
                if offset >= self.next {
                    let epoch = epoch.to_owned();
                    self.pending.insert(offset, (epoch, frame));
                }
            }
        }
        self.known = self.known.max(stored.offset);
        // What is still held came after the read, with events missing in
        // between that are in flight or need another read (`behind`).
        self.drain(out);
    }

    /// Starts following the stream from a read that ended at `offset`. The
    /// events held since the first listener subscribed are handed out too,
    /// even those the read already had: a listener that read earlier needs
    /// them, and each connection's writer skips what its own history held.
    fn begin(&mut self, epoch: &str, offset: u64, out: &mut impl FnMut(&Utf8Bytes)) {
        self.pending.retain(|_, (e, _)| e == epoch);
        let first_held = self.pending.keys().next().copied();
        self.epoch = Some(epoch.to_owned());
        self.next = first_held.map_or(offset + 1, |held| held.min(offset + 1));
        self.known = self.pending.keys().last().copied().unwrap_or(0).max(offset);
        self.drain(out);
    }

    /// Hands out the held events that follow in order.
    fn drain(&mut self, out: &mut impl FnMut(&Utf8Bytes)) {
        let Some(epoch) = self.epoch.as_deref() else {
            return;
        };
        while let Some(entry) = self.pending.first_entry() {
            let offset = *entry.key();
            if entry.get().0 != epoch || offset < self.next {
                entry.remove();
                continue;
            }
            if offset != self.next {
                break;
            }
            let (_, frame) = entry.remove();
            out(&frame);
            self.next += 1;
        }
        if !self.behind() {
            // Caught up: the next gap gets the whole patience again.
            self.short_reads = 0;
        }
        if self.pending.len() > MAX_PENDING {
            self.skip_gap(out);
        }
    }

    /// Gives up on the offsets missing before the first held event; the
    /// room's connections are told.
    fn skip_gap(&mut self, out: &mut impl FnMut(&Utf8Bytes)) {
        if let Some(&first) = self.pending.keys().next() {
            metrics::error("stream", "gap_unrecovered");
            out(&unrecovered());
            self.next = first;
            self.drain(out);
        }
    }

    /// An epoch older than one this feed followed: a late event or read
    /// from before the stream began its current epoch, to be ignored (epochs
    /// sort in the order they began). A read that found no epoch at all (its
    /// Redis restarted empty) is ignored too once the feed follows one: it
    /// may predate the new epoch, whose first event announces the loss.
    fn outdated(&self, epoch: &str) -> bool {
        match self.epoch.as_deref().max(self.retired.as_deref()) {
            None => false,
            Some(newest) if epoch.is_empty() => !newest.is_empty(),
            Some(newest) => epoch < newest,
        }
    }

    /// The stream has a new epoch: its history may have been lost (Redis
    /// restarted or failed over, or the room expired), so events of the old
    /// one may be missing.
    fn adopt(&mut self, epoch: &str, out: &mut impl FnMut(&Utf8Bytes)) {
        if let Some(old) = self.epoch.take().filter(|e| !e.is_empty()) {
            out(&unrecovered());
            self.retired = Some(old);
        }
        self.epoch = Some(epoch.to_owned());
        self.next = 1;
        self.known = 0;
        self.short_reads = 0;
        self.pending.retain(|_, (e, _)| e == epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(epoch: &str, offset: u64) -> Utf8Bytes {
        stamp::stamp(r#"{"type":"message"}"#, epoch, offset)
    }

    /// Runs `f` on a feed and returns what it handed out: offsets, and 0
    /// for an "unrecovered" notice.
    fn run(feed: &mut Feed, f: impl FnOnce(&mut Feed, &mut dyn FnMut(&Utf8Bytes))) -> Vec<u64> {
        let mut out = Vec::new();
        let mut sink = |frame: &Utf8Bytes| out.push(stamp::position(frame).map_or(0, |(_, o)| o));
        f(feed, &mut sink);
        out
    }

    fn offer(feed: &mut Feed, epoch: &str, offsets: &[u64]) -> Vec<u64> {
        run(feed, |feed, out| {
            for &o in offsets {
                feed.offer(epoch, o, event(epoch, o), &mut |f| out(f));
            }
        })
    }

    fn started(epoch: &str, offset: u64) -> Feed {
        let mut feed = Feed::default();
        run(&mut feed, |feed, out| {
            feed.start(epoch, offset, &mut |f| out(f))
        });
        feed
    }

    #[test]
    fn events_go_out_in_offset_order_once() {
        let mut feed = started("e", 3);
        assert_eq!(offer(&mut feed, "e", &[4, 6, 5, 5, 4, 3, 7]), [4, 5, 6, 7]);
        assert!(feed.pending.is_empty() && !feed.behind());
        // A gap stays held and asks for a repair.
        feed.offer("e", 9, event("e", 9), &mut |_| {});
        assert!(feed.behind());
    }

    #[test]
    fn events_before_the_first_read_wait_for_it() {
        let mut feed = Feed::default();
        assert_eq!(offer(&mut feed, "e", &[5, 4, 6]), Vec::<u64>::new());
        // A connection whose history went up to 5 starts the feed: every
        // held event goes out (an earlier reader may need 4; each writer
        // skips what its own history held).
        let out = run(&mut feed, |feed, out| feed.start("e", 5, &mut |f| out(f)));
        assert_eq!(out, [4, 5, 6]);
        // Another connection read further than the feed got: behind.
        run(&mut feed, |feed, out| feed.start("e", 8, &mut |f| out(f)));
        assert!(feed.behind());
    }

    #[test]
    fn a_repair_fills_the_gap_or_says_it_cannot() {
        let mut feed = started("e", 2);
        assert_eq!(offer(&mut feed, "e", &[3, 6]), [3]);
        let stored = |from: u64, to: u64| Stored {
            epoch: "e".into(),
            offset: to,
            events: (from..=to).map(|o| event("e", o)).collect(),
        };
        let out = run(&mut feed, |feed, out| {
            feed.fill(stored(1, 6), &mut |f| out(f))
        });
        assert_eq!(out, [4, 5, 6]);
        assert!(!feed.behind());
        // Events 8 and 9 fell out of the history: they may still come
        // through pub/sub, for a few reads; then a notice, and 10.
        assert_eq!(offer(&mut feed, "e", &[7]), [7]);
        for _ in 0..PATIENCE {
            let out = run(&mut feed, |feed, out| {
                feed.fill(stored(10, 10), &mut |f| out(f))
            });
            assert_eq!(out, Vec::<u64>::new());
            assert!(feed.behind());
        }
        let out = run(&mut feed, |feed, out| {
            feed.fill(stored(10, 10), &mut |f| out(f))
        });
        assert_eq!(out, [0, 10]);
        // An event published after the read still waits for the one before
        // it (in flight), and asks for another read.
        assert_eq!(offer(&mut feed, "e", &[13]), Vec::<u64>::new());
        let out = run(&mut feed, |feed, out| {
            feed.fill(stored(1, 11), &mut |f| out(f))
        });
        assert_eq!(out, [11]);
        assert!(feed.behind());
        assert_eq!(offer(&mut feed, "e", &[12]), [12, 13]);
        assert!(!feed.behind());
    }

    #[test]
    fn events_gone_from_the_history_but_still_in_flight_are_waited_for() {
        let mut feed = started("e", 2);
        let stored = Stored {
            epoch: "e".into(),
            offset: 12,
            events: (10..=12).map(|o| event("e", o)).collect(),
        };
        let out = run(&mut feed, |feed, out| feed.fill(stored, &mut |f| out(f)));
        assert_eq!(out, Vec::<u64>::new(), "3 to 9 may still come");
        assert_eq!(
            offer(&mut feed, "e", &[3, 4, 5, 6, 7, 8, 9]),
            [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert!(!feed.behind());
        assert_eq!(feed.short_reads, 0);
    }

    #[test]
    fn a_read_that_ends_before_events_already_handed_out_changes_nothing() {
        let mut feed = started("e", 2);
        assert_eq!(offer(&mut feed, "e", &[3, 4]), [3, 4]);
        // Read when the stream was at 3, filled after 4 went out.
        let stored = Stored {
            epoch: "e".into(),
            offset: 3,
            events: (1..=3).map(|o| event("e", o)).collect(),
        };
        let out = run(&mut feed, |feed, out| feed.fill(stored, &mut |f| out(f)));
        assert!(out.is_empty());
        assert_eq!(offer(&mut feed, "e", &[5]), [5]);
    }

    #[test]
    fn a_new_epoch_is_announced_and_followed_from_its_start() {
        let mut feed = started("a-old", 7);
        assert_eq!(offer(&mut feed, "b-new", &[1, 2]), [0, 1, 2]);
        // Late events and reads of the old epoch change nothing.
        assert_eq!(offer(&mut feed, "a-old", &[8]), Vec::<u64>::new());
        let late = Stored {
            epoch: "a-old".into(),
            offset: 8,
            events: vec![event("a-old", 8)],
        };
        let out = run(&mut feed, |feed, out| feed.fill(late, &mut |f| out(f)));
        assert!(out.is_empty());
        // Nor does a read made while Redis had no stream at all.
        let out = run(&mut feed, |feed, out| {
            feed.fill(Stored::default(), &mut |f| out(f))
        });
        assert!(out.is_empty());
        assert_eq!(offer(&mut feed, "b-new", &[3]), [3]);
        // An empty stream's first epoch is no loss.
        let mut fresh = started("", 0);
        assert_eq!(offer(&mut fresh, "e", &[1]), [1]);
    }

    #[test]
    fn a_gap_nobody_fills_is_given_up_once_too_much_waits() {
        let mut feed = started("e", 0);
        let offsets: Vec<u64> = (2..=MAX_PENDING as u64 + 2).collect();
        let out = offer(&mut feed, "e", &offsets);
        assert_eq!(out[0], 0);
        assert_eq!(out[1..], offsets[..]);
    }
}
