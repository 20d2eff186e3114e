//! The client's frames (RFC 6455, section 5), decoded by the server's own
//! codec so that an idle connection holds no read buffer: bytes are read
//! into a buffer each worker thread shares ([`super::conn`]), and a
//! connection keeps only the part of a frame that has not arrived yet.
//!
//! The rules are tungstenite's, checked against it frame by frame in the
//! tests: client frames masked, reserved bits and opcodes refused, control
//! frames whole and at most 125 bytes, fragments in order, text valid
//! UTF-8, frames and messages no larger than the limit (refused from the
//! header, before the payload is read).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;

/// Why the client's bytes are not a WebSocket conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("frame or message larger than the limit")]
    TooLarge,
    #[error("text that is not UTF-8")]
    Utf8,
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

/// A data message being assembled from its fragments.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    Text,
    Binary,
}

/// The decoding state of one connection: empty while no message is in
/// fragments.
pub struct Decoder {
    max: usize,
    /// The fragments so far, unmasked.
    fragments: Vec<u8>,
    /// The kind of the message in fragments, if one is.
    fragmented: Option<Data>,
    /// How much of the fragmented text is known to be UTF-8: invalid text
    /// is refused at the fragment that makes it so.
    checked: usize,
    closed: bool,
}

/// A frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, then payload bytes.
    size: usize,
    len: usize,
}

impl Decoder {
    /// Frames and messages up to `max` bytes of payload.
    pub fn new(max: usize) -> Self {
        Decoder {
            max,
            fragments: Vec::new(),
            fragmented: None,
            checked: 0,
            closed: false,
        }
    }

    /// The client's close frame was read: nothing follows it.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Decodes the frame at the start of `input`. `Ok(None)`: its bytes
    /// are not all there yet (nothing is used). Otherwise how many bytes
    /// it took, and the message it completed, if it did.
    pub fn frame(&mut self, input: &[u8]) -> Result<Option<(usize, Option<Message>)>, Error> {
        let Some(header) = self.header(input)? else {
            return Ok(None);
        };
        let Some(masked) = input.get(header.size..header.size + header.len) else {
            return Ok(None);
        };
        let used = header.size + header.len;
        let mut payload = masked.to_vec();
        unmask(&mut payload, header.mask);
        let message = match header.opcode {
            0x8 => {
                self.closed = true;
                Some(Message::Close(close_frame(payload)?))
            }
            0x9 => Some(Message::Ping(Bytes::from(payload))),
            0xA => Some(Message::Pong(Bytes::from(payload))),
            0x0 => {
                self.fragments.extend_from_slice(&payload);
                self.check_fragments()?;
                if header.fin {
                    Some(self.complete()?)
                } else {
                    None
                }
            }
            opcode => {
                let data = if opcode == 0x1 {
                    Data::Text
                } else {
                    Data::Binary
                };
                if header.fin {
                    Some(message(data, payload)?)
                } else {
                    self.fragments = payload;
                    self.fragmented = Some(data);
                    self.checked = 0;
                    self.check_fragments()?;
                    None
                }
            }
        };
        Ok(Some((used, message)))
    }

    /// The header at the start of `input`, with the checks it allows.
    fn header(&self, input: &[u8]) -> Result<Option<Header>, Error> {
        let [first, second, ..] = *input else {
            return Ok(None);
        };
        let opcode = first & 0x0F;
        let (mut size, len) = match second & 0x7F {
            126 => match input.get(2..4) {
                Some(bytes) => (4, u64::from(u16::from_be_bytes([bytes[0], bytes[1]]))),
                None => return Ok(None),
            },
            127 => match input.get(2..10) {
                Some(bytes) => (10, u64::from_be_bytes(bytes.try_into().expect("8 bytes"))),
                None => return Ok(None),
            },
            len => (2, u64::from(len)),
        };
        let masked = second & 0x80 != 0;
        let mut mask = [0; 4];
        if masked {
            let Some(key) = input.get(size..size + 4) else {
                return Ok(None);
            };
            mask.copy_from_slice(key);
            size += 4;
        }
        let header = Header {
            fin: first & 0x80 != 0,
            opcode,
            mask,
            size,
            len: usize::try_from(len).unwrap_or(usize::MAX),
        };
        // In tungstenite's order, so that a frame broken in several ways
        // gets the same verdict.
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return Err(Error::Protocol("reserved opcode"));
        }
        if header.len > self.max {
            return Err(Error::TooLarge);
        }
        if !masked {
            return Err(Error::Protocol("unmasked frame from a client"));
        }
        if first & 0x70 != 0 {
            return Err(Error::Protocol("reserved bits set"));
        }
        if header.opcode >= 0x8 {
            if !header.fin {
                return Err(Error::Protocol("fragmented control frame"));
            }
            if header.len > 125 {
                return Err(Error::Protocol("control frame over 125 bytes"));
            }
        } else if header.opcode == 0x0 {
            if self.fragmented.is_none() {
                return Err(Error::Protocol("continuation of no message"));
            }
            if self.fragments.len() + header.len > self.max {
                return Err(Error::TooLarge);
            }
        } else if self.fragmented.is_some() {
            return Err(Error::Protocol("a new message before the last fragment"));
        }
        Ok(Some(header))
    }

    /// Refuses fragmented text once it cannot become UTF-8.
    fn check_fragments(&mut self) -> Result<(), Error> {
        if self.fragmented != Some(Data::Text) {
            return Ok(());
        }
        match std::str::from_utf8(&self.fragments[self.checked..]) {
            Ok(_) => self.checked = self.fragments.len(),
            // Cut inside a character: the next fragment may end it.
            Err(err) if err.error_len().is_none() => self.checked += err.valid_up_to(),
            Err(_) => return Err(Error::Utf8),
        }
        Ok(())
    }

    /// The message the last fragment completed; the state is empty again.
    fn complete(&mut self) -> Result<Message, Error> {
        let data = self.fragmented.take().expect("checked by the header");
        self.checked = 0;
        message(data, std::mem::take(&mut self.fragments))
    }
}

fn message(data: Data, payload: Vec<u8>) -> Result<Message, Error> {
    Ok(match data {
        Data::Binary => Message::Binary(Bytes::from(payload)),
        Data::Text => Message::Text(text(payload)?),
    })
}

fn text(payload: Vec<u8>) -> Result<Utf8Bytes, Error> {
    String::from_utf8(payload)
        .map(Utf8Bytes::from)
        .map_err(|_| Error::Utf8)
}

/// A close frame's code and reason. A code the RFC reserves is passed on
/// as it came (tungstenite made it 1002): the server does not echo it.
fn close_frame(payload: Vec<u8>) -> Result<Option<CloseFrame>, Error> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Error::Protocol("close frame with one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason = text(payload[2..].to_vec())?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Client payloads are masked with a 4-byte key (RFC 6455, section 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
