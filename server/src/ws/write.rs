//! The writing half of a connection: its preamble, then its queue in
//! batches, keepalive pings, and the close frame.

use super::Preamble;
use crate::fanout::{Closer, Queue};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt};
use std::time::Duration;
use tokio::time::{interval_at, sleep_until, Instant};

/// Frames written in one go before a flush.
const WRITE_BATCH: usize = 64;
/// With `WRITE_COALESCE_MS`, writes that follow each other closer than
/// that, with fewer than this many frames ready, wait for the rest of the
/// tick: a trickle of frames (a busy room's fan-out) then leaves a few per
/// system call and packet instead of one each, since the socket has no
/// Nagle delay. A frame that finds the connection quiet for a tick leaves
/// at once, and a dense stream never waits.
const DENSE: usize = 2;

pub async fn write<S>(
    mut sink: S,
    mut queue: Queue,
    preamble: Preamble,
    closer: Closer,
    ping_every: Duration,
    coalesce: Duration,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    for frame in preamble.frames {
        if sink.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut fresh = preamble.fresh;
    let mut fresh = |frame: &Utf8Bytes| fresh.as_mut().is_none_or(|fresh| fresh(frame));
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let mut last_write: Option<Instant> = None;
    // One waiter for the connection's life, not one per frame written.
    let closed = closer.closed();
    tokio::pin!(closed);
    let why = loop {
        tokio::select! {
            biased;
            why = &mut closed => break why,
            frame = queue.recv() => {
                let Some(frame) = frame else { return };
                let batch = async {
                    if fresh(&frame) {
                        sink.feed(Message::Text(frame)).await?;
                    }
                    let mut written = 1;
                    let (mut yielded, mut waited) = (false, false);
                    while written < WRITE_BATCH {
                        let Some(frame) = queue.try_recv() else {
                            // Once, before a short write: the tasks that
                            // are ready (senders, other connections) run
                            // first and often queue more.
                            if !yielded {
                                yielded = true;
                                tokio::task::yield_now().await;
                                continue;
                            }
                            // Frames that trickle in close behind the last
                            // write (with WRITE_COALESCE_MS): wait for the
                            // tick, and take them all in one system call
                            // and one packet.
                            let due = last_write.map(|last| last + coalesce);
                            let trickle = !waited
                                && written < DENSE
                                && due.is_some_and(|due| Instant::now() < due);
                            if let (true, Some(due)) = (trickle, due) {
                                waited = true;
                                // Boxed: a timer held in this future would
                                // cost every idle connection its size.
                                Box::pin(sleep_until(due)).await;
                                continue;
                            }
                            break;
                        };
                        written += 1;
                        if fresh(&frame) {
                            sink.feed(Message::Text(frame)).await?;
                        }
                    }
                    if !coalesce.is_zero() {
                        last_write = Some(Instant::now());
                    }
                    sink.flush().await
                };
                tokio::select! {
                    written = batch => if written.is_err() { return },
                    // A client too slow to take this batch is being closed:
                    // stop waiting on its socket and go send the close.
                    why = &mut closed => break why,
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    };
    // Flush what is queued first: it often explains the close.
    while let Some(frame) = queue.try_recv() {
        if fresh(&frame) && sink.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    let frame = CloseFrame {
        code: why.code,
        reason: why.reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}
