//! One connection's sending side: its bounded outbound queue and how it
//! is closed.
//!
//! The queue is a `VecDeque` behind a mutex, drained by the writer a batch
//! at a time (it swaps the whole deque for its empty one), with a count
//! beside it that makes it bounded. A linked-list channel (futures' mpsc)
//! allocated and freed one node per frame, on two threads: at millions of
//! deliveries a second, malloc and free were a quarter of the server's
//! CPU. Nothing is allocated until the first frame, a deque grown by a
//! burst is let go once drained, and the writer lets go of its buffer
//! whenever it waits, so an idle connection holds none.

use super::{close, CloseReason, Kind};
use crate::metrics;
use axum::extract::ws::Utf8Bytes;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};

/// A drained deque up to this capacity is kept for the next batch while
/// frames keep coming (none once they stop).
const KEPT_CAPACITY: usize = 64;

/// Ping intervals in a row without a word from the client that close it.
const SILENT_INTERVALS: u8 = 2;

/// What the senders and the writer share.
struct Shared {
    state: Mutex<State>,
    /// Frames queued and not yet taken by the writer.
    queued: AtomicUsize,
    /// Whether the client sent anything since the keepalive last looked
    /// (the handshake counts).
    heard: AtomicBool,
    /// Ping intervals in a row the client was silent.
    silent: AtomicU8,
    /// The keepalive asks the writer for a ping.
    ping_due: AtomicBool,
    /// Why the connection is being closed, once it is: the first reason
    /// given wins.
    closed: OnceLock<CloseReason>,
    /// The writer, when it waits for frames (or for the close).
    writer: AtomicWaker,
    /// The connection's reader side, when it waits for the close.
    reader: AtomicWaker,
}

impl Shared {
    fn close(&self, why: CloseReason) {
        if self.closed.set(why).is_ok() {
            self.writer.wake();
            self.reader.wake();
        }
    }
}

struct State {
    frames: VecDeque<Utf8Bytes>,
    senders: usize,
    /// Whether the writer still takes frames.
    open: bool,
    /// The marks of who holds the connection (`crate::identity`), so that
    /// a ban or a disconnection order finds it. Kept here, with the
    /// connection, rather than in an index of every mark: a room of
    /// anonymous members spent most of a member's memory on that index.
    marks: Marks,
}

/// The sending half of one connection: its bounded queue, and the way to
/// close it (its writer sends a close frame and stops).
pub struct Peer {
    pub kind: Kind,
    shared: Arc<Shared>,
    capacity: usize,
}

impl Clone for Peer {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Peer {
            kind: self.kind,
            shared: self.shared.clone(),
            capacity: self.capacity,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.state.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.writer.wake();
        }
    }
}

impl Peer {
    pub fn new(kind: Kind, capacity: usize) -> (Self, Queue) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                senders: 1,
                open: true,
                marks: Marks::default(),
            }),
            queued: AtomicUsize::new(0),
            heard: AtomicBool::new(true),
            silent: AtomicU8::new(0),
            ping_due: AtomicBool::new(false),
            closed: OnceLock::new(),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
        });
        let peer = Peer {
            kind,
            shared: shared.clone(),
            capacity,
        };
        let queue = Queue {
            shared,
            taken: VecDeque::new(),
        };
        (peer, queue)
    }

    /// Queues a frame without waiting. A full queue means the client reads
    /// slower than it is sent to: it is disconnected rather than buffered.
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        let queued = &self.shared.queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            queued.fetch_sub(1, Ordering::Relaxed);
            if !self.is_closed() {
                metrics::slow_consumer(self.kind);
                self.close(close::SLOW_CONSUMER);
            }
            return false;
        }
        let was_empty = {
            let mut state = self.shared.state.lock();
            if !state.open {
                // The connection is gone.
                drop(state);
                queued.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            state.frames.push_back(frame);
            state.frames.len() == 1
        };
        // The writer takes everything queued at once: one wake-up per
        // batch, not per frame.
        if was_empty {
            self.shared.writer.wake();
        }
        true
    }

    /// Asks the writer to send a close frame with this reason and stop;
    /// the first reason given wins.
    pub fn close(&self, why: CloseReason) {
        self.shared.close(why);
    }

    /// Lists the connection under these marks too.
    pub fn mark(&self, marks: impl IntoIterator<Item = String>) {
        let mut state = self.shared.state.lock();
        for mark in marks {
            if !state.marks.iter().any(|known| known == mark.as_bytes()) {
                state.marks.push(&mark);
            }
        }
    }

    /// Whether the connection is listed under any of the marks.
    pub fn is_marked(&self, marks: &[String]) -> bool {
        let state = self.shared.state.lock();
        let found = state
            .marks
            .iter()
            .any(|mark| marks.iter().any(|m| m.as_bytes() == mark));
        found
    }

    /// The client sent something (a frame, a pong): it is alive.
    pub fn heard(&self) {
        self.shared.heard.store(true, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.get().is_some()
    }

    /// The connection as its protocol's keepalive holds it.
    pub fn watched(&self) -> Watched {
        Watched(Arc::downgrade(&self.shared))
    }

    /// Why the connection was closed (`CLOSED` if it was not).
    pub fn close_reason(&self) -> CloseReason {
        self.shared.closed.get().copied().unwrap_or(close::CLOSED)
    }

    /// Ready once the connection is closed; for the connection's reader
    /// side (one waiter).
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Some(why) = self.shared.closed.get() {
            return Poll::Ready(*why);
        }
        self.shared.reader.register(cx.waker());
        // Again once registered: a close in between would not wake.
        match self.shared.closed.get() {
            Some(why) => Poll::Ready(*why),
            None => Poll::Pending,
        }
    }
}

/// A connection's marks in one allocation, each its length (4 bytes) then
/// its bytes: a box per mark and a slice of them cost a member of a room
/// about 200 bytes.
#[derive(Default)]
struct Marks(Box<[u8]>);

impl Marks {
    fn push(&mut self, mark: &str) {
        let mut all = std::mem::take(&mut self.0).into_vec();
        let len = u32::try_from(mark.len()).expect("a mark is shorter than 4 GiB");
        all.extend_from_slice(&len.to_le_bytes());
        all.extend_from_slice(mark.as_bytes());
        self.0 = all.into_boxed_slice();
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<4>()?;
            let (mark, after) = after.split_at(u32::from_le_bytes(*len) as usize);
            rest = after;
            Some(mark)
        })
    }
}

/// A connection as its protocol's keepalive holds it: weakly, so that it
/// keeps nothing of a connection that ended.
pub struct Watched(Weak<Shared>);

impl Watched {
    /// A ping interval went by: the writer is asked for a ping, unless the
    /// client was silent for too long, which closes it.
    pub fn tick(&self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if shared.heard.swap(false, Ordering::Relaxed) {
            shared.silent.store(0, Ordering::Relaxed);
        } else if shared.silent.fetch_add(1, Ordering::Relaxed) + 1 >= SILENT_INTERVALS {
            return shared.close(close::PING_TIMEOUT);
        }
        shared.ping_due.store(true, Ordering::Relaxed);
        shared.writer.wake();
    }

    /// Closes the connection for the shutdown.
    pub fn shut(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.close(close::SHUTDOWN);
        }
    }
}

/// The receiving half, drained by the connection's writer.
pub struct Queue {
    shared: Arc<Shared>,
    /// Frames taken from the shared deque, not yet handed out.
    taken: VecDeque<Utf8Bytes>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.state.lock().open = false;
    }
}

impl Queue {
    /// Why the connection is being closed, once it is. The writer is woken
    /// by a close as by a frame.
    pub fn closed(&self) -> Option<CloseReason> {
        self.shared.closed.get().copied()
    }

    /// Whether the keepalive asked for a ping since the last call.
    pub fn take_ping_due(&self) -> bool {
        self.shared.ping_due.swap(false, Ordering::Relaxed)
    }

    /// Wakes the writer on the next frame or the close.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.shared.writer.register(cx.waker());
    }

    /// The next frame; `None` once every sender is gone and all is taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Utf8Bytes>> {
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(Some(frame));
        }
        self.shared.writer.register(cx.waker());
        // Again once registered: a frame queued in between would not wake.
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(Some(frame));
        }
        if self.shared.state.lock().senders == 0 {
            return Poll::Ready(None);
        }
        // Idle until the next frame: the connection keeps no buffer.
        self.taken = VecDeque::new();
        Poll::Pending
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        if self.taken.is_empty() {
            self.take_all();
        }
        let frame = self.taken.pop_front()?;
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        Some(frame)
    }

    /// Swaps the empty local deque for the shared one. With nothing
    /// queued, the connection goes idle and both give their room back: an
    /// idle connection kept up to two deques' worth of its last bursts.
    fn take_all(&mut self) {
        let mut state = self.shared.state.lock();
        if state.frames.is_empty() {
            let shared = std::mem::take(&mut state.frames);
            drop(state);
            drop(shared);
            self.taken = VecDeque::new();
            return;
        }
        if self.taken.capacity() > KEPT_CAPACITY {
            self.taken = VecDeque::new();
        }
        std::mem::swap(&mut self.taken, &mut state.frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn frames_come_out_in_order_and_the_end_shows_once_every_sender_is_gone() {
        let (peer, mut queue) = Peer::new(Kind::Relay, 100);
        let other = peer.clone();
        for i in 0..10 {
            assert!(peer.send(i.to_string().into()));
        }
        assert_eq!(queue.try_recv().unwrap().as_str(), "0");
        assert!(other.send("10".into()));
        for i in 1..=10 {
            assert_eq!(
                poll_fn(|cx| queue.poll_recv(cx)).await.unwrap().as_str(),
                i.to_string()
            );
        }
        assert!(queue.try_recv().is_none());
        drop(peer);
        let waiting = tokio::spawn(async move { poll_fn(|cx| queue.poll_recv(cx)).await });
        tokio::task::yield_now().await;
        assert!(other.send("late".into()));
        drop(other);
        assert_eq!(waiting.await.unwrap().unwrap().as_str(), "late");
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_and_a_gone_writer_takes_nothing() {
        let (peer, mut queue) = Peer::new(Kind::Chat, 100);
        let sender = peer.clone();
        let waiting = tokio::spawn(async move {
            let first = poll_fn(|cx| queue.poll_recv(cx)).await;
            (first, queue)
        });
        tokio::task::yield_now().await;
        assert!(sender.send("x".into()));
        let (first, queue) = waiting.await.unwrap();
        assert_eq!(first.unwrap().as_str(), "x");
        drop(queue);
        assert!(!peer.send("y".into()), "the connection is gone");
    }

    #[test]
    fn the_bound_counts_frames_taken_out_of_the_shared_deque_too() {
        let (peer, mut queue) = Peer::new(Kind::Chat, 3);
        for i in 0..3 {
            assert!(peer.send(i.to_string().into()));
        }
        assert_eq!(queue.try_recv().unwrap().as_str(), "0");
        assert!(peer.send("3".into()));
        // 1 and 2 (taken, not yet written) and 3 fill it.
        assert!(!peer.send("4".into()));
        assert!(peer.is_closed());
        assert_eq!(queue.closed(), Some(close::SLOW_CONSUMER));
    }

    #[test]
    fn a_connection_is_found_under_each_of_its_marks_only() {
        let (peer, _queue) = Peer::new(Kind::Chat, 8);
        assert!(!peer.is_marked(&["addr:1".into()]));
        let long = "x".repeat(70_000);
        peer.mark(["addr:1".to_owned(), String::new()]);
        peer.mark(["name:al".to_owned(), "addr:1".to_owned(), long.clone()]);
        for mark in ["addr:1", "", "name:al", long.as_str()] {
            assert!(peer.is_marked(&["other".into(), mark.into()]), "{mark:.10}");
        }
        assert!(!peer.is_marked(&["name:a".into(), "addr:12".into()]));
        let listed = peer.shared.state.lock().marks.iter().count();
        assert_eq!(listed, 4, "each mark once");
    }

    /// Room for frames is kept while they keep coming, and given back
    /// once the queue is drained: an idle connection holds none.
    #[test]
    fn a_drained_queue_keeps_no_room() {
        let (peer, mut queue) = Peer::new(Kind::Chat, 1024);
        for burst in 0..3 {
            for i in 0..40 {
                assert!(peer.send(format!("{burst}.{i}").into()));
            }
            for i in 0..40 {
                assert_eq!(queue.try_recv().unwrap().as_str(), format!("{burst}.{i}"));
            }
            assert!(queue.try_recv().is_none());
            assert_eq!(queue.taken.capacity(), 0);
            assert_eq!(queue.shared.state.lock().frames.capacity(), 0);
        }
    }
}
