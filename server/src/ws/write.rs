//! The writing half of a connection: its preamble, then its queue in
//! batches, the pings its keepalive asks for, and the close frame.
//!
//! Hand-written rather than an `async fn`: every idle connection keeps its
//! writer for life, and the compiler lays an `async fn` out at the size of
//! its largest await (several hundred bytes here, with the sink's futures
//! and a timer per select). This one holds its fields and a small step; a
//! coalescing timer is allocated only while it runs. It is given the
//! socket at each poll, which the reader uses between polls: the two share
//! it without a lock of their own.

use super::Preamble;
use crate::fanout::{CloseReason, Queue};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::Sink;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{sleep_until, Instant, Sleep};

/// Frames written in one go before a flush.
const WRITE_BATCH: u8 = 64;
/// With `WRITE_COALESCE_MS`, writes that follow each other closer than
/// that, with fewer than this many frames ready, wait for the rest of the
/// tick: a trickle of frames (a busy room's fan-out) then leaves a few per
/// system call and packet instead of one each, since the socket has no
/// Nagle delay. A frame that finds the connection quiet for a tick leaves
/// at once, and a dense stream never waits.
const DENSE: u8 = 2;

/// Where the writer is.
#[derive(Clone, Copy)]
enum Step {
    /// Sending the preamble.
    Preamble,
    /// Waiting for a frame, the close or a ping to send.
    Idle,
    /// Gathering frames (`written` so far) before one flush. `yielded`:
    /// once, when the queue runs dry, the tasks that are ready (senders,
    /// other connections) run first, and often queue more. `waited`: the
    /// coalescing tick was waited for.
    Batch {
        written: u8,
        yielded: bool,
        waited: bool,
    },
    /// Flushing a batch or a ping.
    Flush,
    /// Sending what is queued, then the close frame.
    Closing(CloseReason),
    /// Flushing the close frame.
    Closed,
}

/// The writer is done: the socket failed, every sender is gone, or the
/// close frame was sent.
struct Done;

impl From<axum::Error> for Done {
    fn from(_: axum::Error) -> Self {
        Done
    }
}

pub struct Writer {
    queue: Queue,
    /// Boxed, and gone once sent: the writer lives as long as the
    /// connection.
    preamble: Option<Box<std::vec::IntoIter<Utf8Bytes>>>,
    fresh: Option<super::Fresh>,
    /// A frame taken for the sink, waiting until it takes one more.
    pending: Option<Message>,
    /// The coalescing tick being waited for.
    hold: Option<Pin<Box<Sleep>>>,
    last_write: Option<Instant>,
    step: Step,
}

impl Writer {
    pub fn new(queue: Queue, preamble: Preamble) -> Self {
        Writer {
            queue,
            preamble: Some(Box::new(preamble.frames.into_iter())),
            fresh: preamble.fresh,
            pending: None,
            hold: None,
            last_write: None,
            step: Step::Preamble,
        }
    }

    /// Takes `frame` for the sink unless the preamble already covered it.
    fn take(&mut self, frame: Utf8Bytes) {
        if self.fresh.as_mut().is_none_or(|fresh| fresh(&frame)) {
            self.pending = Some(Message::Text(frame));
        }
    }

    /// Hands the pending frame to the sink once it takes one more.
    fn poll_pending<S: Sink<Message, Error = axum::Error> + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut S,
    ) -> Poll<Result<(), axum::Error>> {
        if self.pending.is_some() {
            ready!(Pin::new(&mut *sink).poll_ready(cx))?;
            let message = self.pending.take().expect("checked above");
            Pin::new(sink).start_send(message)?;
        }
        Poll::Ready(Ok(()))
    }

    /// One step of the writer.
    fn poll_step<S: Sink<Message, Error = axum::Error> + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut S,
        coalesce: Duration,
    ) -> Poll<Result<(), Done>> {
        match self.step {
            Step::Preamble => {
                ready!(self.poll_pending(cx, sink))?;
                match self.preamble.as_mut().and_then(|frames| frames.next()) {
                    Some(frame) => self.pending = Some(Message::Text(frame)),
                    None => {
                        self.preamble = None;
                        self.step = Step::Flush;
                    }
                }
            }
            Step::Idle => {
                if let Some(why) = self.queue.closed() {
                    self.step = Step::Closing(why);
                } else if let Poll::Ready(frame) = self.queue.poll_recv(cx) {
                    // None: every sender is gone, the connection is over.
                    let frame = frame.ok_or(Done)?;
                    self.take(frame);
                    self.step = Step::Batch {
                        written: 1,
                        yielded: false,
                        waited: false,
                    };
                } else if self.queue.take_ping_due() {
                    self.pending = Some(Message::Ping(Default::default()));
                    self.step = Step::Flush;
                } else {
                    return Poll::Pending;
                }
            }
            Step::Batch {
                mut written,
                mut yielded,
                mut waited,
            } => {
                // A client too slow to take this batch is being closed:
                // stop waiting on its socket and go send the close.
                if let Some(why) = self.queue.closed() {
                    self.step = Step::Closing(why);
                    return Poll::Ready(Ok(()));
                }
                if self.poll_pending(cx, sink)?.is_pending() {
                    self.queue.register(cx);
                    return Poll::Pending;
                }
                if let Some(hold) = &mut self.hold {
                    if hold.as_mut().poll(cx).is_pending() {
                        self.queue.register(cx);
                        return Poll::Pending;
                    }
                    self.hold = None;
                }
                let mut gathering = written < WRITE_BATCH;
                if gathering {
                    if let Some(frame) = self.queue.try_recv() {
                        self.take(frame);
                        written += 1;
                    } else if !yielded {
                        yielded = true;
                        self.step = Step::Batch {
                            written,
                            yielded,
                            waited,
                        };
                        // Tokio's yield puts off the wake-up until the
                        // worker ran every task that is ready (a wake-up
                        // here would only requeue this task behind them,
                        // and the batch would be 15-20% smaller in the
                        // relay's closed loop). Its first poll does that;
                        // the future keeps nothing else.
                        let _ = pin!(tokio::task::yield_now()).poll(cx);
                        return Poll::Pending;
                    } else if let Some(due) = self.trickle(written, waited, coalesce) {
                        // Frames that trickle in close behind the last
                        // write (with WRITE_COALESCE_MS): wait for the tick,
                        // and take them all in one system call and packet.
                        waited = true;
                        self.hold = Some(Box::pin(sleep_until(due)));
                    } else {
                        gathering = false;
                    }
                }
                self.step = if gathering {
                    Step::Batch {
                        written,
                        yielded,
                        waited,
                    }
                } else {
                    if !coalesce.is_zero() {
                        self.last_write = Some(Instant::now());
                    }
                    Step::Flush
                };
            }
            Step::Flush => {
                ready!(self.poll_pending(cx, sink))?;
                ready!(Pin::new(&mut *sink).poll_flush(cx))?;
                self.step = Step::Idle;
            }
            Step::Closing(why) => {
                ready!(self.poll_pending(cx, sink))?;
                // Flush what is queued first: it often explains the close.
                match self.queue.try_recv() {
                    Some(frame) => self.take(frame),
                    None => {
                        self.pending = Some(Message::Close(Some(CloseFrame {
                            code: why.code,
                            reason: why.reason.into(),
                        })));
                        self.step = Step::Closed;
                    }
                }
            }
            Step::Closed => {
                ready!(self.poll_pending(cx, sink))?;
                ready!(Pin::new(&mut *sink).poll_flush(cx))?;
                return Poll::Ready(Err(Done));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// When a batch of `written` frames should wait for the coalescing
    /// tick: the last write was less than a tick ago and few frames came.
    fn trickle(&self, written: u8, waited: bool, coalesce: Duration) -> Option<Instant> {
        let due = self.last_write? + coalesce;
        (!waited && written < DENSE && Instant::now() < due).then_some(due)
    }
}

impl Writer {
    /// Writes until the writer is done, on `sink`, holding trickling
    /// frames for `coalesce` (the protocol's, given at each poll rather
    /// than kept by every connection).
    pub fn poll_write<S>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut S,
        coalesce: Duration,
    ) -> Poll<()>
    where
        S: Sink<Message, Error = axum::Error> + Unpin,
    {
        while ready!(self.poll_step(cx, sink, coalesce)).is_ok() {}
        Poll::Ready(())
    }
}
