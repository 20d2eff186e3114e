//! The life of one WebSocket connection, shared by the chat and the relay:
//! a writer that drains the connection's bounded queue and sends keepalive
//! pings, a reader that enforces the size limit, the rate limit and the
//! keepalive timeout and hands text frames to the protocol [`Handler`], and
//! the close handshake with a reason (including 1012 on shutdown).

use crate::config::Config;
use crate::hub::{close, Closer, Kind, Peer, Queue};
use crate::metrics;
use crate::stream::stamp;
use crate::throttle::{Throttle, Verdict};
use app::protocol::ErrorCode;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use governor::Quota;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{interval_at, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// Read buffer, allocated for the life of each connection: sized for what
/// clients send (small JSON frames), since tungstenite zero-fills all of it
/// before each read and keeps it while the connection idles. Larger frames
/// still arrive, in several reads.
const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes to the socket: a batch of
/// frames goes out in few system calls.
const WRITE_BUFFER: usize = 16 * 1024;
/// Frames written in one go before a flush.
const WRITE_BATCH: usize = 64;
/// How long a closing connection may take to flush its queue and close frame.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// What a protocol does with the frames of one connection.
pub trait Handler: Send {
    const KIND: Kind;

    /// Handles a text frame that passed the limits; `Some` closes the
    /// connection with that code and reason.
    fn on_text(
        &mut self,
        text: Utf8Bytes,
    ) -> impl Future<Output = Option<(u16, &'static str)>> + Send;

    /// An error frame in this protocol's shape.
    fn error_frame(&self, code: ErrorCode, message: &str) -> Utf8Bytes;

    /// After the error for a binary frame: `Some` closes the connection.
    fn on_binary(&self) -> Option<(u16, &'static str)> {
        None
    }
}

/// Applies the configured limits to an upgrade request.
pub fn configure(ws: WebSocketUpgrade, config: &Config) -> WebSocketUpgrade {
    let max = config.max_message_bytes as usize;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
}

pub struct Limits {
    pub max_message_bytes: u64,
    pub ping_interval: Duration,
    /// Frames of any kind, per chat connection: sized for people.
    pub chat_frames: Quota,
    /// Frames of any kind, per relay connection: sized for programs.
    pub relay_frames: Quota,
    /// Bytes per relay connection: what keeps a fast program's cost bounded.
    pub relay_bytes: Quota,
    /// Chat nickname changes, per connection.
    pub renames: Quota,
    /// Chat join attempts, per connection.
    pub joins: Quota,
    /// Rooms opened, per client address.
    pub new_rooms: Quota,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        Limits {
            max_message_bytes: config.max_message_bytes,
            ping_interval: config.ping_interval(),
            chat_frames: Quota::per_second(nonzero(config.chat_rate_limit_per_sec))
                .allow_burst(nonzero(config.chat_rate_limit_burst)),
            relay_frames: Quota::per_second(nonzero(config.relay_rate_limit_per_sec))
                .allow_burst(nonzero(config.relay_rate_limit_burst)),
            relay_bytes: Quota::per_second(nonzero(config.relay_bytes_per_sec)),
            renames: Quota::per_minute(nonzero(config.rename_limit_per_min)),
            joins: Quota::per_minute(nonzero(config.join_limit_per_min)),
            new_rooms: Quota::per_minute(nonzero(config.new_rooms_per_min)),
        }
    }
}

/// Where a new chat connection's history ended. Events up to there that
/// also arrive live (published while the history was read) are not sent
/// again, so a reconnecting client gets each missed event once.
pub struct Replayed {
    pub epoch: String,
    pub offset: u64,
}

impl Replayed {
    /// Whether a frame is a room event the history already held: `None`
    /// for frames that are not room events.
    fn covers(&self, frame: &str) -> Option<bool> {
        let (epoch, offset) = stamp::position(frame)?;
        Some(epoch == self.epoch && offset <= self.offset)
    }
}

/// What a connection is sent before anything queued for it.
#[derive(Default)]
pub struct Preamble {
    pub frames: Vec<Utf8Bytes>,
    pub replayed: Option<Replayed>,
}

/// Runs the connection until either side closes it or `shutdown` fires.
/// Returns why it ended, for the log.
///
/// The future is boxed: awaited in place, the caller's task would hold it
/// next to its own state, and every idle connection costs the task's
/// largest size.
pub fn drive<'a, H: Handler>(
    socket: WebSocket,
    peer: Peer,
    queue: Queue,
    preamble: Preamble,
    handler: &'a mut H,
    limits: &'a Limits,
    shutdown: &'a CancellationToken,
) -> Pin<Box<impl Future<Output = String> + Send + 'a>> {
    Box::pin(run(
        socket, peer, queue, preamble, handler, limits, shutdown,
    ))
}

async fn run<H: Handler>(
    socket: WebSocket,
    peer: Peer,
    queue: Queue,
    preamble: Preamble,
    handler: &mut H,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> String {
    let (sink, mut stream) = socket.split();
    // The writer runs as its own task: a frame queued for this client then
    // wakes the writer alone, not the reader and the rest of this future
    // (which a select! polls all together), for every delivery. It stops
    // when this connection ends, whichever way.
    let mut writer = AbortOnDropHandle::new(tokio::spawn(write(
        sink,
        queue,
        preamble,
        peer.closer.clone(),
        limits.ping_interval,
    )));
    let mut writer_done = false;
    let reason = {
        let reader = read(&mut stream, handler, &peer, limits);
        tokio::select! {
            reason = reader => reason,
            _ = &mut writer => {
                writer_done = true;
                "connection lost while writing".to_owned()
            }
            // Closed by the server (e.g. a slow consumer) while the reader
            // waits for a client that may never send again.
            _ = peer.closer.closed() => String::new(),
            _ = shutdown.cancelled() => {
                peer.closer.close(close::RESTART, "service restart");
                String::new()
            }
        }
    };
    if !peer.closer.is_closed() {
        return reason;
    }
    // Send the close frame, then wait for the client's, so that the socket
    // is not reset while the client still reads our last frames. A client
    // that reads nothing gets the socket dropped after the timeout.
    let _ = timeout(CLOSE_FLUSH, async {
        if !writer_done {
            let _ = (&mut writer).await;
        }
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    peer.closer.reason().1.to_owned()
}

async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: Queue,
    preamble: Preamble,
    closer: Closer,
    ping_every: Duration,
) {
    for frame in preamble.frames {
        if sink.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut replayed = preamble.replayed;
    // Room events arrive in offset order: the first one past the history
    // ends the check.
    let mut fresh = |frame: &Utf8Bytes| match replayed.as_ref().and_then(|r| r.covers(frame)) {
        Some(true) => false,
        Some(false) => {
            replayed = None;
            true
        }
        None => true,
    };
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    // One waiter for the connection's life, not one per frame written.
    let closed = closer.closed();
    tokio::pin!(closed);
    let (code, reason) = loop {
        tokio::select! {
            biased;
            reason = &mut closed => break reason,
            frame = queue.recv() => {
                let Some(frame) = frame else { return };
                let batch = async {
                    if fresh(&frame) {
                        sink.feed(Message::Text(frame)).await?;
                    }
                    for _ in 1..WRITE_BATCH {
                        let Some(frame) = queue.try_recv() else { break };
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
                    reason = &mut closed => break reason,
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
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

async fn read<H: Handler>(
    stream: &mut SplitStream<WebSocket>,
    handler: &mut H,
    peer: &Peer,
    limits: &Limits,
) -> String {
    let kind = H::KIND.as_str();
    let (frames, bytes) = match H::KIND {
        Kind::Chat => (Throttle::new(limits.chat_frames), None),
        Kind::Relay => (
            Throttle::new(limits.relay_frames),
            Some(Throttle::new(limits.relay_bytes)),
        ),
    };
    // Pings go out every interval; a healthy client answers each one.
    let idle = limits.ping_interval * 2 + Duration::from_secs(1);
    loop {
        let message = match timeout(idle, stream.next()).await {
            Err(_) => {
                metrics::error(kind, "ping_timeout");
                peer.closer.close(close::GOING_AWAY, "ping timeout");
                return "ping timeout".to_owned();
            }
            Ok(None) => return "client went away".to_owned(),
            Ok(Some(Err(err))) => match ReadError::of(err) {
                ReadError::TooBig => {
                    metrics::error(kind, "too_large");
                    let text = format!("message larger than {} bytes", limits.max_message_bytes);
                    peer.send(handler.error_frame(ErrorCode::TooLarge, &text));
                    peer.closer.close(close::TOO_BIG, "message too big");
                    return "message too big".to_owned();
                }
                ReadError::InvalidUtf8 => {
                    metrics::error(kind, "invalid_utf8");
                    peer.closer
                        .close(close::INVALID_DATA, "text frame is not UTF-8");
                    return "invalid UTF-8".to_owned();
                }
                ReadError::Other => return "read error".to_owned(),
            },
            Ok(Some(Ok(message))) => message,
        };
        let size = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
            Message::Close(_) => {
                // Through the writer, so that the close reply is flushed.
                peer.closer.close(close::NORMAL, "client closed");
                return "client closed".to_owned();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        metrics::received(H::KIND, size);
        let verdict = match (frames.check(), &bytes) {
            (Verdict::Allowed, Some(bytes)) => bytes.check_n(size),
            (verdict, _) => verdict,
        };
        if verdict != Verdict::Allowed {
            metrics::error(kind, "rate_limited");
            let error = handler.error_frame(ErrorCode::RateLimited, "too many messages: slow down");
            peer.send(error);
            if verdict == Verdict::Abuse {
                peer.closer.close(close::POLICY, "rate limit exceeded");
                return "rate limit exceeded".to_owned();
            }
            continue;
        }
        let Message::Text(text) = message else {
            metrics::error(kind, "binary");
            let error = handler.error_frame(
                ErrorCode::BinaryFrame,
                "binary frames are not supported: send JSON as text",
            );
            peer.send(error);
            if let Some((code, reason)) = handler.on_binary() {
                peer.closer.close(code, reason);
                return reason.to_owned();
            }
            continue;
        };
        // Boxed: the protocol's work on a frame (Redis calls included)
        // would otherwise sit in every idle connection's task, which is
        // allocated at its largest size.
        if let Some((code, reason)) = Box::pin(handler.on_text(text)).await {
            peer.closer.close(code, reason);
            return reason.to_owned();
        }
    }
}

/// Why reading a frame failed, when the client can be told.
enum ReadError {
    TooBig,
    /// A text frame that is not UTF-8: close 1007, not a dropped socket.
    InvalidUtf8,
    Other,
}

impl ReadError {
    fn of(err: axum::Error) -> ReadError {
        match err
            .into_inner()
            .downcast::<tungstenite::Error>()
            .map(|e| *e)
        {
            Ok(tungstenite::Error::Capacity(_)) => ReadError::TooBig,
            Ok(tungstenite::Error::Utf8(_)) => ReadError::InvalidUtf8,
            _ => ReadError::Other,
        }
    }
}
