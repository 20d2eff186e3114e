//! The decoder against tungstenite, the reader it replaced: the same
//! messages and the same verdict for random conversations (valid and
//! broken frames, text cut inside characters, limits, cut short), fed in
//! random pieces; and each rule on its own.

use super::*;
use std::io::{self, Read, Write};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

const MAX: usize = 300;

/// How a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Waiting for more bytes, or after the close frame.
    Waiting,
    Refused(Class),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    TooLarge,
    Utf8,
    Protocol,
}

/// A message, comparable (a close frame by its presence: tungstenite
/// rewrites reserved codes).
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close,
}

fn got(message: Message) -> Got {
    match message {
        Message::Text(text) => Got::Text(text.as_str().to_owned()),
        Message::Binary(data) => Got::Binary(data.to_vec()),
        Message::Ping(data) => Got::Ping(data.to_vec()),
        Message::Pong(data) => Got::Pong(data.to_vec()),
        Message::Close(_) => Got::Close,
    }
}

/// What this decoder makes of `input` arriving in pieces of `pieces`
/// bytes, kept the way the connection keeps them.
fn ours(input: &[u8], pieces: &[usize]) -> (Vec<Got>, End) {
    let mut decoder = Decoder::new(MAX);
    let (mut held, mut got_so_far, mut at) = (Vec::new(), Vec::new(), 0);
    for &piece in pieces.iter().cycle() {
        loop {
            match decoder.frame(&held) {
                Err(Error::TooLarge) => return (got_so_far, End::Refused(Class::TooLarge)),
                Err(Error::Utf8) => return (got_so_far, End::Refused(Class::Utf8)),
                Err(Error::Protocol(_)) => return (got_so_far, End::Refused(Class::Protocol)),
                Ok(None) => break,
                Ok(Some((used, message))) => {
                    held.drain(..used);
                    got_so_far.extend(message.map(got));
                    if decoder.closed() {
                        return (got_so_far, End::Waiting);
                    }
                }
            }
        }
        if at == input.len() {
            return (got_so_far, End::Waiting);
        }
        let end = (at + piece.max(1)).min(input.len());
        held.extend_from_slice(&input[at..end]);
        at = end;
    }
    unreachable!("the pieces cycle")
}

/// Reads `input`, then says it would block.
struct Wire(io::Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What tungstenite makes of `input`, with the server's limits.
fn theirs(input: &[u8]) -> (Vec<Got>, End) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let stream = Wire(io::Cursor::new(input.to_vec()));
    let mut socket = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut got_so_far = Vec::new();
    loop {
        let end = match socket.read() {
            Ok(tungstenite::Message::Frame(_)) => unreachable!("not read"),
            Ok(message) => {
                let close = message.is_close();
                got_so_far.push(match message {
                    tungstenite::Message::Text(text) => Got::Text(text.as_str().to_owned()),
                    tungstenite::Message::Binary(data) => Got::Binary(data.to_vec()),
                    tungstenite::Message::Ping(data) => Got::Ping(data.to_vec()),
                    tungstenite::Message::Pong(data) => Got::Pong(data.to_vec()),
                    _ => Got::Close,
                });
                if !close {
                    continue;
                }
                End::Waiting
            }
            Err(tungstenite::Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => {
                End::Waiting
            }
            Err(tungstenite::Error::Capacity(_)) => End::Refused(Class::TooLarge),
            Err(tungstenite::Error::Utf8(_)) => End::Refused(Class::Utf8),
            Err(tungstenite::Error::Protocol(_)) => End::Refused(Class::Protocol),
            Err(other) => panic!("tungstenite: {other}"),
        };
        return (got_so_far, end);
    }
}

/// A small deterministic generator (xorshift), so that a failure repeats.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A frame as a client (or a broken client) would write it.
fn frame(random: &mut Random, out: &mut Vec<u8>) {
    const OPCODES: [u8; 10] = [0x1, 0x1, 0x1, 0x2, 0x0, 0x0, 0x9, 0xA, 0x8, 0x3];
    let mut opcode = OPCODES[random.below(OPCODES.len())];
    if random.chance(2) {
        opcode = 0xB;
    }
    let fin = random.chance(70);
    let len = match random.below(10) {
        0..=5 => random.below(40),
        6 | 7 => random.below(140),
        8 => 120 + random.below(200),
        _ => MAX - 2 + random.below(5),
    };
    let payload: Vec<u8> = match random.below(4) {
        0 => (0..len).map(|_| random.next() as u8).collect(),
        1 => (0..len).map(|_| b'a' + random.below(26) as u8).collect(),
        // Characters of 2 to 4 bytes, cut anywhere by the length.
        _ => "héllo wörld €✓ 😀 "
            .bytes()
            .cycle()
            .skip(random.below(8))
            .take(len)
            .collect(),
    };
    let payload = if opcode == 0x8 && random.chance(60) {
        let mut close = vec![0x03, 0xE8 + random.below(3) as u8];
        close.extend(payload.iter().take(len.saturating_sub(2)));
        close
    } else {
        payload
    };
    let reserved = if random.chance(3) { 0x40 } else { 0 };
    out.push(u8::from(fin) << 7 | reserved | opcode);
    let masked = !random.chance(3);
    let mask_bit = u8::from(masked) << 7;
    let len = payload.len();
    match random.below(10) {
        // Lengths in a longer form than they need, which are valid.
        0 => {
            out.push(mask_bit | 127);
            out.extend((len as u64).to_be_bytes());
        }
        1 => {
            out.push(mask_bit | 126);
            out.extend((len as u16).to_be_bytes());
        }
        _ if len < 126 => out.push(mask_bit | len as u8),
        _ => {
            out.push(mask_bit | 126);
            out.extend((len as u16).to_be_bytes());
        }
    }
    let key: [u8; 4] = (random.next() as u32).to_ne_bytes();
    if masked {
        out.extend(key);
    }
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(n, byte)| if masked { byte ^ key[n % 4] } else { *byte }),
    );
}

#[test]
fn random_conversations_read_as_tungstenite_reads_them() {
    let mut random = Random(0x5EED_1234_ABCD_0001);
    let mut refused = [0; 3];
    for case in 0..30_000 {
        let mut input = Vec::new();
        for _ in 0..1 + random.below(8) {
            frame(&mut random, &mut input);
        }
        if random.chance(20) {
            input.truncate(random.below(input.len() + 1));
        }
        let pieces: Vec<usize> = (0..4).map(|_| 1 + random.below(64)).collect();
        let (got_ours, end_ours) = ours(&input, &pieces);
        let (got_theirs, end_theirs) = theirs(&input);
        assert_eq!(got_ours, got_theirs, "case {case}: {input:?}");
        // Refused from the header where tungstenite waits for the payload
        // first: the same verdict, sooner.
        let sooner = end_theirs == End::Waiting && matches!(end_ours, End::Refused(_));
        assert!(
            end_ours == end_theirs || sooner,
            "case {case}: ours {end_ours:?}, tungstenite {end_theirs:?}: {input:?}"
        );
        if let End::Refused(class) = end_ours {
            refused[class as usize] += 1;
        }
    }
    // Each verdict was reached many times.
    assert!(refused.iter().all(|&n| n > 500), "{refused:?}");
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend(key);
    out.extend(payload.iter().enumerate().map(|(n, b)| b ^ key[n % 4]));
    out
}

fn decode_all(input: &[u8]) -> Result<Vec<Got>, Error> {
    let mut decoder = Decoder::new(MAX);
    let (mut at, mut messages) = (0, Vec::new());
    while let Some((used, message)) = decoder.frame(&input[at..])? {
        at += used;
        messages.extend(message.map(got));
    }
    Ok(messages)
}

#[test]
fn a_character_cut_between_fragments_is_whole_text() {
    let euro = "€".as_bytes();
    let mut input = masked(0x01, &euro[..1]);
    input.extend(masked(0x89, b"ping"));
    input.extend(masked(0x80, &euro[1..]));
    assert_eq!(
        decode_all(&input),
        Ok(vec![Got::Ping(b"ping".to_vec()), Got::Text("€".to_owned())])
    );
}

#[test]
fn text_that_cannot_become_utf8_is_refused_at_its_first_fragment() {
    let input = masked(0x01, b"ok \xFF");
    assert_eq!(decode_all(&input), Err(Error::Utf8));
}

#[test]
fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
    let header = [0x81, 0x80 | 126, 0x01, 0x2D, 1, 2, 3, 4];
    assert_eq!(
        Decoder::new(MAX).frame(&header).err(),
        Some(Error::TooLarge)
    );
    let mut fragments = masked(0x01, &[b'a'; 125]);
    fragments.extend(masked(0x00, &[b'a'; 125]));
    fragments.extend([0x80, 0x80 | 60, 1, 2, 3, 4]);
    assert_eq!(decode_all(&fragments), Err(Error::TooLarge));
}

#[test]
fn broken_frames_are_protocol_violations() {
    let cases: [(&str, Vec<u8>); 7] = [
        ("unmasked", vec![0x81, 0x01, b'a']),
        ("reserved bit", masked(0xC1, b"a")),
        ("reserved opcode", masked(0x83, b"a")),
        ("fragmented ping", masked(0x09, b"a")),
        ("continuation first", masked(0x80, b"a")),
        ("close of one byte", masked(0x88, b"\x03")),
        ("two messages at once", {
            let mut input = masked(0x01, b"a");
            input.extend(masked(0x81, b"b"));
            input
        }),
    ];
    for (what, input) in cases {
        assert!(
            matches!(decode_all(&input), Err(Error::Protocol(_))),
            "{what}"
        );
    }
}

#[test]
fn nothing_is_used_until_a_frame_is_whole() {
    let input = masked(0x81, b"hello");
    let mut decoder = Decoder::new(MAX);
    for cut in 0..input.len() {
        assert!(decoder.frame(&input[..cut]).unwrap().is_none(), "{cut}");
    }
    let (used, message) = decoder.frame(&input).unwrap().unwrap();
    assert_eq!(used, input.len());
    assert_eq!(message.map(got), Some(Got::Text("hello".to_owned())));
}
