//! One WebSocket connection over its TCP stream: tungstenite reads and
//! checks what the client sends (masking, fragments, control frames, UTF-8,
//! size limits); the server's own frames are written here, each as a short
//! header and the payload it shares with every other recipient, gathered
//! into one `writev` per batch. Nothing is copied into a per-connection
//! write buffer, so a connection that was sent a page of history keeps no
//! buffer of that size afterwards (tungstenite's never shrinks).

use super::Tcp;
use crate::admission::capacity::Slot;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures::{Sink, Stream};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::protocol::{self, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Frames queued at most before a send waits for the socket.
const QUEUED: usize = 64;
/// Frames gathered into one `writev` at most (two slices each).
const GATHER: usize = 32;
/// A drained queue keeps its allocation up to this many frames.
const KEPT: usize = 8;

/// The read half as tungstenite sees it. What tungstenite writes itself
/// (its pong and close replies) goes nowhere: [`Conn`] answers pings, and
/// the connection layer sends its own close frame.
struct ReadOnly(OwnedReadHalf);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A frame waiting to be written: its header, and its payload shared.
struct Outgoing {
    header: [u8; 10],
    header_len: u8,
    payload: Payload,
}

enum Payload {
    Text(Utf8Bytes),
    Bytes(Bytes),
}

impl Outgoing {
    fn new(opcode: u8, payload: Payload) -> Self {
        let len = match &payload {
            Payload::Text(text) => text.len(),
            Payload::Bytes(bytes) => bytes.len(),
        };
        // FIN, no mask: a server's frames are never masked.
        let mut header = [0x80 | opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let header_len = match len {
            0..=125 => {
                header[1] = len as u8;
                2
            }
            126..=0xFFFF => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        Outgoing {
            header,
            header_len,
            payload,
        }
    }

    fn payload(&self) -> &[u8] {
        match &self.payload {
            Payload::Text(text) => text.as_bytes(),
            Payload::Bytes(bytes) => bytes,
        }
    }

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    fn len(&self) -> usize {
        self.header().len() + self.payload().len()
    }
}

fn close_frame(frame: Option<CloseFrame>) -> Outgoing {
    let payload = match frame {
        None => Bytes::new(),
        Some(frame) => {
            let mut payload = frame.code.to_be_bytes().to_vec();
            payload.extend_from_slice(frame.reason.as_bytes());
            Bytes::from(payload)
        }
    };
    Outgoing::new(0x8, Payload::Bytes(payload))
}

/// A server-side WebSocket on a TCP stream.
pub struct Conn {
    reader: WebSocketStream<ReadOnly>,
    writer: OwnedWriteHalf,
    /// The connection's place among the open connections, until it ends.
    _slot: Slot,
    queued: VecDeque<Outgoing>,
    /// Bytes of the first queued frame already written.
    written: usize,
    /// A pong is queued that the reader must push out itself (the writing
    /// side may be idle).
    pong_owed: bool,
    /// The writing side waits for the socket to take its frames. The
    /// reader then leaves the pong to it: a socket wakes only the last task
    /// that waited to write, and the writer must stay that task.
    flushing: bool,
    closed: bool,
}

impl Conn {
    /// Wraps an upgraded TCP stream; `read` holds what hyper read past the
    /// handshake. Boxed: each async layer a connection is passed through by
    /// value keeps a copy of what it was given for the connection's life
    /// (rust-lang/rust#62958), and a box is 8 bytes where a `Conn` is
    /// several hundred.
    pub async fn new(tcp: Tcp, read: Bytes, config: WebSocketConfig) -> Box<Conn> {
        let (reader, writer) = tcp.stream.into_split();
        let reader = WebSocketStream::from_partially_read(
            ReadOnly(reader),
            read.to_vec(),
            Role::Server,
            Some(config),
        )
        .await;
        Box::new(Conn {
            reader,
            writer,
            _slot: tcp.slot,
            queued: VecDeque::new(),
            written: 0,
            pong_owed: false,
            flushing: false,
            closed: false,
        })
    }

    /// Writes what is queued for the writing side, noting while it waits.
    fn poll_write_for_writer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let written = self.poll_write_queued(cx);
        self.flushing = written.is_pending();
        written.map_err(failed)
    }

    /// Writes what is queued, as few system calls as the socket allows.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queued.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2 * GATHER];
            let mut count = 0;
            // Only the first frame may be written in part.
            for (n, frame) in self.queued.iter().take(GATHER).enumerate() {
                let (header, payload) = (frame.header(), frame.payload());
                let skip = if n == 0 { self.written } else { 0 };
                let parts = match skip.checked_sub(header.len()) {
                    None => [&header[skip..], payload],
                    Some(into_payload) => [&[][..], &payload[into_payload..]],
                };
                for part in parts.into_iter().filter(|part| !part.is_empty()) {
                    slices[count] = IoSlice::new(part);
                    count += 1;
                }
            }
            let mut sent =
                ready!(Pin::new(&mut self.writer).poll_write_vectored(cx, &slices[..count]))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while sent > 0 {
                let left = self.queued[0].len() - self.written;
                if sent < left {
                    self.written += sent;
                    break;
                }
                sent -= left;
                self.written = 0;
                self.queued.pop_front();
            }
        }
        if self.queued.capacity() > KEPT {
            self.queued = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

fn failed(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> axum::Error {
    axum::Error::new(err)
}

/// A frame as the connection layer sees it.
fn received(message: protocol::Message) -> Option<Message> {
    Some(match message {
        protocol::Message::Text(text) => {
            let text = Utf8Bytes::try_from(Bytes::from(text)).expect("tungstenite checked it");
            Message::Text(text)
        }
        protocol::Message::Binary(data) => Message::Binary(data),
        protocol::Message::Ping(data) => Message::Ping(data),
        protocol::Message::Pong(data) => Message::Pong(data),
        protocol::Message::Close(frame) => Message::Close(frame.map(|frame| CloseFrame {
            code: frame.code.into(),
            reason: Utf8Bytes::try_from(Bytes::from(frame.reason)).expect("tungstenite checked it"),
        })),
        protocol::Message::Frame(_) => return None,
    })
}

impl Stream for Conn {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.pong_owed && !this.flushing {
            match this.poll_write_queued(cx) {
                Poll::Ready(Ok(())) => this.pong_owed = false,
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(failed(err)))),
                // Woken again when the socket takes it.
                Poll::Pending => {}
            }
        }
        loop {
            let message = match ready!(Pin::new(&mut this.reader).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(err)) => return Poll::Ready(Some(Err(failed(err)))),
                Some(Ok(message)) => message,
            };
            if let protocol::Message::Ping(data) = &message {
                if !this.closed {
                    let pong = Outgoing::new(0xA, Payload::Bytes(data.clone()));
                    this.queued.push_back(pong);
                    this.pong_owed = true;
                    if !this.flushing {
                        if let Poll::Ready(Ok(())) = this.poll_write_queued(cx) {
                            this.pong_owed = false;
                        }
                    }
                }
            }
            if let Some(message) = received(message) {
                return Poll::Ready(Some(Ok(message)));
            }
        }
    }
}

impl Sink<Message> for Conn {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        if self.queued.len() >= QUEUED {
            ready!(self.poll_write_for_writer(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        if self.closed {
            return Err(failed(io::Error::new(
                io::ErrorKind::NotConnected,
                "the close frame was sent",
            )));
        }
        let frame = match message {
            Message::Text(text) => Outgoing::new(0x1, Payload::Text(text)),
            Message::Binary(data) => Outgoing::new(0x2, Payload::Bytes(data)),
            Message::Ping(data) => Outgoing::new(0x9, Payload::Bytes(data)),
            Message::Pong(data) => Outgoing::new(0xA, Payload::Bytes(data)),
            Message::Close(frame) => {
                self.closed = true;
                close_frame(frame)
            }
        };
        self.queued.push_back(frame);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.poll_write_for_writer(cx))?;
        self.pong_owed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.writer).poll_shutdown(cx).map_err(failed)
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
