//! One WebSocket connection's life, shared by the chat and the relay and
//! knowing neither: a writer that drains the connection's bounded queue
//! and sends the pings its protocol's [`keepalive`] asks for ([`write`]),
//! a reader that enforces the size limit and the rate limits and hands
//! text frames to the protocol's [`Handler`] ([`read`]), and the close
//! handshake with a reason (1012 on shutdown).
//!
//! The upgrade is taken from hyper directly ([`upgrade`]) and the
//! connection runs on its TCP stream ([`conn`]): the client's frames are
//! decoded by the server's own codec ([`decode`]) from a buffer each worker
//! shares, and the server writes its own frames without a write buffer. The
//! socket is any `Stream` + `Sink` of WebSocket messages, so a protocol's
//! rules can be driven by channels in unit tests.

mod conn;
mod decode;
pub mod in_order;
mod keepalive;
mod read;
mod tcp;
pub mod throttle;
mod upgrade;
mod write;

pub use conn::Conn;
pub use keepalive::Keepalive;
pub use tcp::Tcp;
pub use upgrade::Upgrade;

use crate::fanout::{close, CloseReason, Kind, Peer, Queue};
use crate::metrics;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::response::Response;
use futures::{Sink, Stream, StreamExt};
use governor::Quota;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::future::{poll_fn, Future};
use std::time::Duration;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

/// How long a closing connection may take to flush its queue and close frame.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// A frame the connection layer refused before the protocol saw it; the
/// protocol says it in its own words ([`Handler::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than this many bytes.
    TooLarge(u64),
    RateLimited,
    Binary,
}

/// What a protocol does with the frames of one connection.
pub trait Handler: Send {
    const KIND: Kind;

    /// Handles a text frame that passed the limits; `Some` closes the
    /// connection with that reason.
    fn on_text(&mut self, text: Utf8Bytes) -> impl Future<Output = Option<CloseReason>> + Send;

    /// Finishes one piece of work that `on_text` started and left running
    /// (the chat's messages waiting for their commit), polled while the
    /// connection waits for its next frame; never done when none runs.
    fn settle(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The frame that tells the client why a frame was refused.
    fn refusal(&self, refusal: Refusal) -> Utf8Bytes;

    /// After the refusal of a binary frame: `Some` closes the connection.
    fn on_binary(&self) -> Option<CloseReason> {
        None
    }
}

/// The limits of one connection, as its protocol sets them.
#[derive(Clone)]
pub struct Limits {
    pub max_message_bytes: u64,
    /// Pings the connections and closes them at the shutdown.
    pub keepalive: Keepalive,
    /// How far apart writes are held while frames trickle in (zero: none).
    pub coalesce: Duration,
    /// Frames of any kind.
    pub frames: Quota,
    /// Bytes, when the protocol bounds them too.
    pub bytes: Option<Quota>,
}

/// Completes an upgrade request: the size limit and read buffer applied,
/// the `session` run on the connection as a task the drain waits for,
/// holding `place` (the connection's place in the limits) until it ends.
pub fn accept<F, Fut>(
    upgrade: Upgrade,
    max_message_bytes: u64,
    tasks: &TaskTracker,
    place: impl Send + 'static,
    session: F,
) -> Response
where
    F: FnOnce(Box<Conn>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = usize::try_from(max_message_bytes).unwrap_or(usize::MAX);
    let response = upgrade.response();
    // The task keeps what it captures for its whole life (a dead copy once
    // used): the upgrade's future alone, not the request's key, and the
    // session's captures boxed until the upgrade completes.
    tasks.spawn(serve(upgrade.on_upgrade, max, place, Box::new(session)));
    response
}

/// The connection's task: the upgrade completed, then the session. Not an
/// `async fn`, as `run` is not.
#[allow(clippy::manual_async_fn)]
pub fn serve<F, Fut, P>(
    on_upgrade: OnUpgrade,
    max: usize,
    place: P,
    session: Box<F>,
) -> impl Future<Output = ()> + Send
where
    F: FnOnce(Box<Conn>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    P: Send + 'static,
{
    async move {
        let conn = {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => return tracing::debug!(error = %err, "upgrade not completed"),
            };
            let Ok(parts) = upgraded.downcast::<TokioIo<Tcp>>() else {
                return tracing::error!("an upgraded connection is not a TCP stream");
            };
            Conn::new(parts.io.into_inner(), parts.read_buf, max)
        };
        session(conn).await;
        drop(place);
    }
}

/// Whether a queued frame still goes out: a protocol may drop frames the
/// preamble already covered (the chat's history).
pub type Fresh = Box<dyn FnMut(&str) -> bool + Send>;

/// What a connection is sent before anything queued for it.
#[derive(Default)]
pub struct Preamble {
    pub frames: Vec<Utf8Bytes>,
    pub fresh: Option<Fresh>,
}

/// The connection's own ends: its queue's two halves and its first frames.
pub struct Outbound {
    pub peer: Peer,
    pub queue: Queue,
    pub preamble: Preamble,
}

/// A WebSocket as the connection layer uses it.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>>
    + Sink<Message, Error = axum::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<S> Socket for S where
    S: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Send
        + Unpin
        + 'static
{
}

/// Runs the connection until either side closes it or the shutdown
/// closes it. Returns why it ended, for the log, and the handler.
///
/// The future owns the handler (the protocol's session), and is awaited in
/// place: the connection's task is then this future and little else, one
/// allocation (tokio rounds a task up to 128 bytes; a boxed future beside
/// a task cost both roundings). The caller boxes its other steps, and
/// borrows nothing across this one, so that none of them sizes the task.
/// Its parts are made here and passed to it already built: an async fn
/// keeps each argument for its whole life, so one it took apart would be
/// kept twice.
pub fn drive<'a, S: Socket, H: Handler + 'a>(
    socket: S,
    outbound: Outbound,
    handler: H,
    limits: &'a Limits,
) -> impl Future<Output = (String, H)> + Send + 'a {
    let Outbound {
        peer,
        queue,
        preamble,
    } = outbound;
    let writer = write::Writer::new(queue, preamble);
    run(Mutex::new(socket), writer, peer, handler, limits)
}

/// The writer is polled in the connection's own task, beside the reader:
/// a task of its own cost every idle connection half a kilobyte. Each side
/// does little when woken for the other (a readiness check, a queue
/// check). They share the socket through a lock that is never contended
/// (one task polls both), where futures' split kept a second allocation
/// and a frame of its own. The keepalive watches the connection from its
/// protocol's sweeper, which also closes it at the shutdown.
#[allow(clippy::manual_async_fn)]
fn run<'a, S: Socket, H: Handler + 'a>(
    socket: Mutex<S>,
    mut writer: write::Writer,
    peer: Peer,
    mut handler: H,
    limits: &'a Limits,
) -> impl Future<Output = (String, H)> + Send + 'a {
    // Not an `async fn`: that would move its arguments into locals of its
    // own and keep both copies for the connection's life
    // (rust-lang/rust#62958). A block uses what it captured in place.
    async move {
        let _watching = limits.keepalive.watch(&peer);
        let mut writer_done = false;
        let reason = tokio::select! {
            reason = read::read(&socket, &mut handler, &peer, limits) => reason,
            () = poll_fn(|cx| writer.poll_write(cx, &mut *socket.lock(), limits.coalesce)) => {
                writer_done = true;
                "connection lost while writing".to_owned()
            }
            // Closed by the server (a slow consumer, the ping timeout, the
            // shutdown) while the reader waits for a client that may never
            // send again.
            _ = poll_fn(|cx| peer.poll_closed(cx)) => String::new(),
        };
        if !peer.is_closed() {
            return (reason, handler);
        }
        if peer.close_reason() == close::PING_TIMEOUT {
            metrics::error(H::KIND.as_str(), "ping_timeout");
        }
        // Send the close frame, then wait for the client's, so that the socket
        // is not reset while the client still reads our last frames. A client
        // that reads nothing gets the socket dropped after the timeout.
        // Boxed: its timer would otherwise take space in every idle
        // connection's future.
        let closed = timeout(CLOSE_FLUSH, async {
            if !writer_done {
                poll_fn(|cx| writer.poll_write(cx, &mut *socket.lock(), limits.coalesce)).await;
            }
            while let Some(Ok(message)) = poll_fn(|cx| socket.lock().poll_next_unpin(cx)).await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        });
        let _ = Box::pin(closed).await;
        (peer.close_reason().reason.to_owned(), handler)
    }
}

#[cfg(test)]
#[path = "drive_tests.rs"]
mod tests;
