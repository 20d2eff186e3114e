//! One WebSocket connection over its TCP stream. What the client sends is
//! read into a buffer the worker thread shares and decoded by
//! [`decode`]: an idle connection holds no read buffer. The server's own
//! frames are written here, each as a short header and the payload it
//! shares with every other recipient, gathered into one `writev` per batch:
//! nothing is copied into a per-connection write buffer, so a connection
//! that was sent a page of history keeps no buffer of that size afterwards.

use super::decode::{self, Decoder};
use super::Tcp;
use crate::admission::capacity::Slot;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures::{Sink, Stream};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Frames queued at most before a send waits for the socket.
const QUEUED: usize = 64;
/// Frames gathered into one `writev` at most (two slices each).
const GATHER: usize = 32;
/// Bytes read at most at once, into the worker's buffer.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Where the connections polled on this thread read: a connection
    /// keeps only the bytes of a frame that is not whole yet.
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into());
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

    fn is_pong(&self) -> bool {
        self.header[0] & 0x0F == 0xA
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
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read but not decoded: a frame not whole yet, or the frames
    /// that came with the last one returned, from `held_from` on. Empty,
    /// without an allocation, between frames.
    held: Vec<u8>,
    /// Where the undecoded bytes of `held` start: the decoded ones are cut
    /// off once per read, not once per frame (a client's tiny frames would
    /// otherwise move the rest of the buffer for each).
    held_from: usize,
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
    /// handshake, and the client's frames and messages are refused above
    /// `max` bytes. Boxed: each async layer a connection is passed through
    /// by value keeps a copy of what it was given for the connection's life
    /// (rust-lang/rust#62958), and a box is 8 bytes where a `Conn` is a
    /// couple of hundred.
    pub fn new(tcp: Tcp, read: Bytes, max: usize) -> Box<Conn> {
        Box::new(Conn {
            stream: tcp.stream,
            decoder: Decoder::new(max),
            held: read.to_vec(),
            held_from: 0,
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
                ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?;
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
        // Given back: an idle connection keeps no room for frames (a
        // batch costs an allocation or two, a few frames of room kept
        // cost every idle connection 200 bytes).
        self.queued = VecDeque::new();
        Poll::Ready(Ok(()))
    }
}

fn failed(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> axum::Error {
    axum::Error::new(err)
}

/// What one read brought.
enum Read {
    Message(Message),
    /// Nothing whole yet: read again.
    More,
    Ended,
}

impl Conn {
    /// Decodes the next message from the bytes held, if they hold one.
    fn decode_held(&mut self) -> Result<Option<Message>, decode::Error> {
        while let Some((used, message)) = self.decoder.frame(&self.held[self.held_from..])? {
            self.held_from += used;
            if self.held_from == self.held.len() {
                self.held = Vec::new();
                self.held_from = 0;
            }
            if message.is_some() {
                return Ok(message);
            }
        }
        Ok(None)
    }

    /// Reads into the worker's buffer and decodes there; only what is left
    /// of a frame is copied into the connection's own.
    fn poll_read_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read, axum::Error>> {
        if self.held_from > 0 {
            self.held.drain(..self.held_from);
            self.held_from = 0;
        }
        let (stream, decoder, held) = (&mut self.stream, &mut self.decoder, &mut self.held);
        SCRATCH_BUFFER.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(stream).poll_read(cx, &mut buf)).map_err(failed)?;
            let read = buf.filled();
            if read.is_empty() {
                return Poll::Ready(Ok(Read::Ended));
            }
            if !held.is_empty() {
                held.extend_from_slice(read);
                return Poll::Ready(Ok(Read::More));
            }
            let mut at = 0;
            while let Some((used, message)) = decoder.frame(&read[at..]).map_err(failed)? {
                at += used;
                if let Some(message) = message {
                    held.extend_from_slice(&read[at..]);
                    return Poll::Ready(Ok(Read::Message(message)));
                }
            }
            held.extend_from_slice(&read[at..]);
            Poll::Ready(Ok(Read::More))
        })
    }

    /// Queues the answer to a ping. A pong still waiting is replaced, as
    /// the RFC allows: a client that pings and never reads makes one pong
    /// wait, not one per ping.
    fn queue_pong(&mut self, data: Bytes) {
        let pong = Outgoing::new(0xA, Payload::Bytes(data));
        let waiting = self.queued.iter().rposition(Outgoing::is_pong);
        match waiting {
            // Not begun: the first frame may be written in part.
            Some(at) if at > 0 || self.written == 0 => self.queued[at] = pong,
            _ => self.queued.push_back(pong),
        }
    }

    /// The client's next message; a ping is answered here.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, axum::Error>>> {
        let message = loop {
            if self.decoder.closed() {
                return Poll::Ready(None);
            }
            match self.decode_held() {
                Ok(Some(message)) => break message,
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(failed(err)))),
            }
            match ready!(self.poll_read_message(cx)) {
                Ok(Read::Message(message)) => break message,
                Ok(Read::More) => {}
                Ok(Read::Ended) => return Poll::Ready(None),
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
        };
        if let Message::Ping(data) = &message {
            if !self.closed {
                self.queue_pong(data.clone());
                self.pong_owed = true;
                if !self.flushing {
                    if let Poll::Ready(Ok(())) = self.poll_write_queued(cx) {
                        self.pong_owed = false;
                    }
                }
            }
        }
        Poll::Ready(Some(Ok(message)))
    }
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
        this.poll_message(cx)
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
        Pin::new(&mut self.stream).poll_shutdown(cx).map_err(failed)
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
