//! The reading half of a connection: limits first, then the protocol.

use super::decode;
use super::throttle::{Throttle, Verdict};
use super::{Handler, Limits, Refusal};
use crate::fanout::{close, CloseReason, Peer};
use crate::metrics;
use axum::extract::ws::{Message, Utf8Bytes};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use std::future::{poll_fn, Future};

/// The state of the limits one connection is held to.
#[derive(Default)]
struct Gate {
    frames: Throttle,
    bytes: Throttle,
}

impl Gate {
    fn check(&mut self, limits: &Limits, size: usize) -> Verdict {
        match (self.frames.check(&limits.frames), &limits.bytes) {
            (Verdict::Allowed, Some(quota)) => self.bytes.check_n(quota, size),
            (verdict, _) => verdict,
        }
    }
}

/// Reads until the connection ends; returns why, for the log. Not an
/// `async fn`, which would keep a second copy of its arguments for the
/// connection's life (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)]
pub fn read<'a, S, H>(
    stream: &'a Mutex<S>,
    handler: &'a mut H,
    peer: &'a Peer,
    limits: &'a Limits,
) -> impl Future<Output = String> + Send + 'a
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
    H: Handler,
{
    async move {
        let mut gate = Gate::default();
        loop {
            let read = tokio::select! {
                read = poll_fn(|cx| stream.lock().poll_next_unpin(cx)) => read,
                () = handler.settle() => continue,
            };
            let message = match read {
                None => return "client went away".to_owned(),
                Some(Err(err)) => return failed(err, handler, peer, limits),
                Some(Ok(message)) => message,
            };
            let text = match admit(&mut gate, message, &*handler, peer, limits) {
                Admitted::Text(text) => text,
                Admitted::Skip => continue,
                Admitted::End(reason) => return reason,
            };
            // Boxed: the protocol's work on a frame (broker calls included)
            // would otherwise sit in every idle connection's task, which is
            // allocated at its largest size.
            if let Some(why) = Box::pin(handler.on_text(text)).await {
                return closing(peer, why);
            }
        }
    }
}

/// What becomes of a frame the client sent.
enum Admitted {
    /// For the protocol.
    Text(Utf8Bytes),
    /// Answered here (a ping, a refusal), or nothing to do.
    Skip,
    /// The connection ends, for this reason.
    End(String),
}

/// The limits applied to a frame, outside the reader's future: a local the
/// future borrowed would keep its space there across the protocol's work.
fn admit<H: Handler>(
    gate: &mut Gate,
    message: Message,
    handler: &H,
    peer: &Peer,
    limits: &Limits,
) -> Admitted {
    // The keepalive counts every frame.
    peer.heard();
    let size = match &message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        // Through the writer, so that the close reply is flushed.
        Message::Close(_) => return Admitted::End(closing(peer, close::CLIENT_CLOSED)),
        Message::Ping(_) | Message::Pong(_) => return Admitted::Skip,
    };
    metrics::received(H::KIND, size);
    let verdict = gate.check(limits, size);
    if verdict != Verdict::Allowed {
        metrics::error(H::KIND.as_str(), "rate_limited");
        peer.send(handler.refusal(Refusal::RateLimited));
        if verdict == Verdict::Abuse {
            return Admitted::End(closing(peer, close::RATE_LIMITED));
        }
        return Admitted::Skip;
    }
    let Message::Text(text) = message else {
        metrics::error(H::KIND.as_str(), "binary");
        peer.send(handler.refusal(Refusal::Binary));
        return match handler.on_binary() {
            Some(why) => Admitted::End(closing(peer, why)),
            None => Admitted::Skip,
        };
    };
    Admitted::Text(text)
}

/// Closes the connection (through its writer) and says why.
fn closing(peer: &Peer, why: CloseReason) -> String {
    peer.close(why);
    why.reason.to_owned()
}

/// A frame that could not be read: the client is told when it can be.
fn failed<H: Handler>(err: axum::Error, handler: &H, peer: &Peer, limits: &Limits) -> String {
    let kind = H::KIND.as_str();
    let cause = err.into_inner().downcast::<decode::Error>().map(|e| *e);
    match cause {
        Ok(decode::Error::TooLarge) => {
            metrics::error(kind, "too_large");
            peer.send(handler.refusal(Refusal::TooLarge(limits.max_message_bytes)));
            closing(peer, close::TOO_LARGE)
        }
        // A text frame that is not UTF-8: close 1007, not a dropped socket.
        Ok(decode::Error::Utf8) => {
            metrics::error(kind, "invalid_utf8");
            peer.close(close::NOT_UTF8);
            "invalid UTF-8".to_owned()
        }
        // Told, like the other refusals, where a bare drop would leave the
        // client's developer guessing.
        Ok(decode::Error::Protocol(why)) => {
            metrics::error(kind, "protocol");
            peer.close(close::PROTOCOL_VIOLATION);
            format!("protocol violation: {why}")
        }
        _ => "read error".to_owned(),
    }
}
