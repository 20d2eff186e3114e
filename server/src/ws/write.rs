//! The writing half of a connection: its preamble, then its queue in
//! batches, keepalive pings, and the close frame.

use super::Preamble;
use crate::fanout::{Closer, Queue};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt};
use std::time::Duration;
use tokio::time::{interval_at, Instant};

/// Frames written in one go before a flush.
const WRITE_BATCH: usize = 64;

pub async fn write<S>(
    mut sink: S,
    mut queue: Queue,
    preamble: Preamble,
    closer: Closer,
    ping_every: Duration,
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
                    let mut yielded = false;
                    while written < WRITE_BATCH {
                        let Some(frame) = queue.try_recv() else {
                            // Once, before a short write: the tasks that
                            // are ready (senders, other connections) run
                            // first and often queue more. The socket has
                            // no Nagle delay: this is the batching.
                            if yielded {
                                break;
                            }
                            yielded = true;
                            tokio::task::yield_now().await;
                            continue;
                        };
                        written += 1;
                        if fresh(&frame) {
                            sink.feed(Message::Text(frame)).await?;
                        }
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
