//! The chat wire protocol, shared by the browser and the server.
//!
//! Every frame is one JSON object tagged by a `"type"` field. The rules that
//! decide what is valid (nickname and message limits) live here too, so the
//! browser refuses bad input at once and the server refuses it again with the
//! very same code. `docs/protocol.md` describes the protocol for other clients.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Longest nickname, in characters (after trimming).
pub const MAX_PSEUDO_CHARS: usize = 32;
/// Longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// How many recent events a room keeps for newcomers and reconnecting clients.
pub const HISTORY_LEN: usize = 100;
/// The room a client joins when it names none.
pub const DEFAULT_ROOM: &str = "general";

/// A frame sent by a chat client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Take a nickname in the room. `session` lets a reconnecting client
    /// reclaim its own nickname from its previous, stale connection.
    Join {
        pseudo: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
    },
    /// Change the nickname of a client that has joined.
    Rename { pseudo: String },
    /// Post a message to the room. With an `id` (a UUID the client picks
    /// per message), the message exists once whatever is re-sent: a repeat
    /// of an id still in the room's history appends nothing and is
    /// acknowledged with the first one's position.
    Say {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
    },
    /// The participant is typing: the others see it for a few seconds.
    /// Sent at most every [`TYPING_EVERY_MS`] while typing; never stored.
    Typing,
    /// Delete a message of the room's history (a moderator, or its author
    /// within [`EDIT_WINDOW_SECS`]).
    Delete { id: Uuid },
    /// Change the text of one's own message (within [`EDIT_WINDOW_SECS`]).
    Edit { id: Uuid, text: String },
    /// Close a participant's connections (moderators).
    Kick { pseudo: String },
    /// Keep a participant out of the room for `seconds` (0 lifts the ban);
    /// with `redact_minutes`, their messages of the last minutes are
    /// deleted too (moderators).
    Ban {
        pseudo: String,
        seconds: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        redact_minutes: u64,
    },
    /// Let a participant read but not speak for `seconds` (0 lifts it)
    /// (moderators).
    Mute { pseudo: String, seconds: u64 },
    /// One message per `seconds` per participant in the room (0 ends it);
    /// moderators are not held (moderators).
    SlowMode { seconds: u64 },
    /// Earlier events of the room: the newest `limit` (1 to [`MAX_PAGE`])
    /// with an offset below `before`, answered with a `page`. Anybody
    /// reading the room may ask, joined or not.
    Older { before: u64, limit: u32 },
}

/// The most events a `page` (and each `history` frame) holds.
pub const MAX_PAGE: u32 = 200;

impl ClientMessage {
    /// The frame as JSON, written by hand: in the browser, serde_json's
    /// serializer would be there for this alone, and weigh kilobytes of
    /// WASM. Reads back as the same message (tested against serde).
    pub fn to_frame(&self) -> String {
        let (tag, mut frame) = (self.tag(), Frame(String::from("{\"type\":\"")));
        frame.0.push_str(tag);
        frame.0.push('"');
        match self {
            ClientMessage::Join { pseudo, session } => {
                frame.text("pseudo", pseudo);
                frame.id("session", session.as_ref());
            }
            ClientMessage::Rename { pseudo } | ClientMessage::Kick { pseudo } => {
                frame.text("pseudo", pseudo);
            }
            ClientMessage::Say { text, id } => {
                frame.text("text", text);
                frame.id("id", id.as_ref());
            }
            ClientMessage::Typing => {}
            ClientMessage::Delete { id } => frame.id("id", Some(id)),
            ClientMessage::Edit { id, text } => {
                frame.id("id", Some(id));
                frame.text("text", text);
            }
            ClientMessage::Ban {
                pseudo,
                seconds,
                redact_minutes,
            } => {
                frame.text("pseudo", pseudo);
                frame.number("seconds", *seconds);
                frame.number("redact_minutes", *redact_minutes);
            }
            ClientMessage::Mute { pseudo, seconds } => {
                frame.text("pseudo", pseudo);
                frame.number("seconds", *seconds);
            }
            ClientMessage::SlowMode { seconds } => frame.number("seconds", *seconds),
            ClientMessage::Older { before, limit } => {
                frame.number("before", *before);
                frame.number("limit", u64::from(*limit));
            }
        }
        frame.0.push('}');
        frame.0
    }

    fn tag(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Rename { .. } => "rename",
            ClientMessage::Say { .. } => "say",
            ClientMessage::Typing => "typing",
            ClientMessage::Delete { .. } => "delete",
            ClientMessage::Edit { .. } => "edit",
            ClientMessage::Kick { .. } => "kick",
            ClientMessage::Ban { .. } => "ban",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::SlowMode { .. } => "slow_mode",
            ClientMessage::Older { .. } => "older",
        }
    }
}

/// A UUID in its hyphenated form (as the server writes them), read without
/// uuid's parser: its error reporting weighs a kilobyte of WASM.
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let (mut out, mut n, mut high) = ([0u8; 16], 0, None);
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let digit = char::from(b).to_digit(16)? as u8;
        match high.take() {
            None => high = Some(digit),
            Some(h) => {
                out[n] = (h << 4) | digit;
                n += 1;
            }
        }
    }
    Some(Uuid::from_bytes(out))
}

/// A frame being written: `,"name":value` after its type.
struct Frame(String);

impl Frame {
    fn key(&mut self, name: &str) {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
    }

    fn number(&mut self, name: &str, value: u64) {
        self.key(name);
        self.0.push_str(&value.to_string());
    }

    fn id(&mut self, name: &str, id: Option<&Uuid>) {
        if let Some(id) = id {
            self.key(name);
            self.0.push('"');
            self.0.push_str(&id.to_string());
            self.0.push('"');
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped.
    fn text(&mut self, name: &str, text: &str) {
        self.key(name);
        let out = &mut self.0;
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                // Other control characters as \u00XX (no formatting code
                // in the WASM for this).
                c if (c as u32) < 0x20 => {
                    let hex = b"0123456789abcdef";
                    out.push_str("\\u00");
                    out.push(char::from(hex[(c as usize) >> 4]));
                    out.push(char::from(hex[(c as usize) & 15]));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// How long after sending a message its author may still edit or delete it.
pub const EDIT_WINDOW_SECS: u64 = 300;
/// The longest ban or mute, in seconds (30 days).
pub const MAX_SANCTION_SECS: u64 = 30 * 24 * 3600;
/// The longest slow mode interval, in seconds (one hour).
pub const MAX_SLOW_MODE_SECS: u64 = 3600;
/// The furthest back a ban may delete the banned person's messages.
pub const MAX_REDACT_MINUTES: u64 = 24 * 60;

/// How often a client says it is still typing.
pub const TYPING_EVERY_MS: u64 = 2_000;
/// How long "is typing" stays up after the last typing frame.
pub const TYPING_SHOWN_MS: u64 = 5_000;
/// Nicknames an online list holds; the rest are counted in `more`.
pub const ONLINE_SHOWN: usize = 100;
/// Rooms the room list holds: the busiest.
pub const ROOMS_SHOWN: usize = 20;

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Recent events of the room, oldest first: sent once right after the
    /// socket opens (only those after the client's position when it gave
    /// one). `epoch` and `offset` are the room stream's position once these
    /// events are applied: the client resumes from there. `recovered` is
    /// false when the client asked to resume from a position the server can
    /// no longer serve (it fell out of the bounded history, or the history
    /// was lost and a new epoch began): some events are missing for good.
    /// The server also sends a history frame with `recovered: false` and no
    /// events in the middle of a connection when it could not recover a gap.
    History {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        epoch: String,
        #[serde(default)]
        offset: u64,
        #[serde(default = "yes")]
        recovered: bool,
        events: Vec<ServerEvent>,
        /// More history frames follow (a long catch-up comes in pages of
        /// at most [`MAX_PAGE`] events; `offset` is then this page's last).
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// An answer to `older`: events oldest first, as stored (tombstones,
    /// edited text); `oldest` when nothing older is retained.
    Page {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        epoch: String,
        events: Vec<ServerEvent>,
        oldest: bool,
    },
    /// The client's own identity, after a successful join or rename.
    Joined {
        pseudo: String,
        session: Uuid,
        room: String,
        /// Moderation is on (access tokens are required): authors may edit
        /// and delete their recent messages.
        #[serde(default, skip_serializing_if = "is_false")]
        moderation: bool,
        /// This participant's token makes them a moderator.
        #[serde(default, skip_serializing_if = "is_false")]
        moderator: bool,
    },
    /// A chat message from a participant.
    Message(ChatMessage),
    /// Somebody joined, changed nickname or left.
    System(SystemMessage),
    /// How many participants the room has, across all server instances.
    Count { count: u64 },
    /// The last frame from the client was refused; the connection stays open.
    Error {
        code: ErrorCode,
        message: String,
        /// `muted`, `banned`: when it ends (ms since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
        /// `slow_mode`: how long before the next message is accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The room's participants by nickname, across all instances: sent
    /// once after the count when the socket opens. `more` is how many
    /// participants the list leaves out (past [`ONLINE_SHOWN`]), so that
    /// `names.len() + more` is the count.
    Online { names: Vec<String>, more: u64 },
    /// A change of the online list since the last `online` or
    /// `online_changed`: apply `removed`, then `added`.
    OnlineChanged {
        added: Vec<String>,
        removed: Vec<String>,
        more: u64,
    },
    /// A participant of the room is typing (nickname stamped by the
    /// server). Shown for [`TYPING_SHOWN_MS`] unless renewed, or until a
    /// message from them arrives.
    Typing { pseudo: String },
    /// The busiest rooms with participants, across all instances, up to
    /// [`ROOMS_SHOWN`]: sent when the socket opens and when it changes.
    Rooms { rooms: Vec<RoomSummary> },
    /// A `say` with an `id` is in the room's stream at this position (the
    /// first time, and again for every repeat).
    Ack {
        id: Uuid,
        epoch: String,
        offset: u64,
    },
    /// A message was deleted: readers remove it (its stored copy is a
    /// tombstone without its text). A stream event.
    Deleted(Amendment),
    /// A message's text was changed by its author. A stream event.
    Edited(Amendment),
    /// The same session took this connection's nickname on a newer
    /// connection: this one is no longer a member and closes (4001).
    Replaced,
}

/// A change to an earlier message of the stream, itself a stream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amendment {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    pub id: Uuid,
    /// The message changed.
    pub target: Uuid,
    /// Who changed it.
    pub by: String,
    /// The new text (`edited` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub ts: u64,
}

/// One room in the room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    /// Participants, across all instances.
    pub count: u64,
    /// Grows with every message in the room (the newest event's offset in
    /// its epoch): a client that saw a lower value has unread messages.
    pub activity: u64,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where an event sits in its room's stream: offsets count up from 1 within
/// an epoch; a new epoch (the history was lost) starts again from 1. The
/// stream stamps both on an event when it appends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    /// The `since` query value, `<epoch>:<offset>`.
    pub fn to_query(&self) -> String {
        format!("{}:{}", self.epoch, self.offset)
    }

    /// Reads a `since` query value.
    pub fn from_query(value: &str) -> Option<Position> {
        let (epoch, offset) = value.rsplit_once(':')?;
        Some(Position {
            epoch: epoch.to_owned(),
            offset: offset.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room stream's epoch, stamped when the event was appended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The event's offset in its epoch (from 1), stamped with `epoch`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    pub id: Uuid,
    /// The display name it was sent under.
    pub author: String,
    /// Who sent it, whatever the name: the subject (`sub`) of the author's
    /// access token, or for anonymous participants an identity the server
    /// derives from their session (`anon-` and 16 hex digits); empty for
    /// the backend's messages (`server`). Edits and deletions compare this,
    /// never the name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_id: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, set by the server that received it.
    pub ts: u64,
    /// A tombstone: the message was deleted and its text erased.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Its author changed the text since it was sent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    /// Posted by the backend through the server API, under a name it
    /// chose (not a participant's nickname).
    #[serde(default, skip_serializing_if = "is_false")]
    pub server: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemMessage {
    /// The room stream's epoch, stamped when the event was appended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The event's offset in its epoch (from 1), stamped with `epoch`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    pub id: Uuid,
    pub kind: SystemKind,
    /// The nickname concerned (the new one for a rename).
    pub pseudo: String,
    /// The former nickname, for a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// In a big room joins and leaves are announced together, one event
    /// per instance and second: the others named (at most
    /// [`ANNOUNCED_NAMES`] in all, `pseudo` included)...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<String>,
    /// ...and how many more came or went without being named.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u64,
    /// The moderator who acted (`kicked`, `banned`, `muted`, `slow_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When a ban or mute ends (ms since the Unix epoch); absent when it
    /// was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// The slow mode's interval (0: ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    pub ts: u64,
}

/// Names in one grouped join or leave announcement; the rest are counted.
pub const ANNOUNCED_NAMES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemKind {
    Joined,
    Renamed,
    Left,
    Kicked,
    Banned,
    Muted,
    SlowMode,
}

impl ServerEvent {
    /// The stream position of a chat or system event.
    pub fn position(&self) -> Option<Position> {
        let (epoch, offset) = match self {
            ServerEvent::Message(m) => (&m.epoch, m.offset),
            ServerEvent::System(s) => (&s.epoch, s.offset),
            ServerEvent::Deleted(a) | ServerEvent::Edited(a) => (&a.epoch, a.offset),
            _ => return None,
        };
        Some(Position {
            epoch: epoch.clone(),
            offset,
        })
    }
}

impl SystemMessage {
    /// The sentence a person reads, e.g. "alice is now bob", or "alice,
    /// bob and 10 others joined".
    pub fn text(&self) -> String {
        match (self.kind, &self.previous) {
            (SystemKind::Joined, _) => format!("{} joined", self.who()),
            (SystemKind::Renamed, Some(old)) => format!("{old} is now {}", self.pseudo),
            (SystemKind::Renamed, None) => format!("{} changed nickname", self.pseudo),
            (SystemKind::Left, _) => format!("{} left", self.who()),
            (SystemKind::Kicked, _) => format!("{} was removed by {}", self.pseudo, self.by()),
            (SystemKind::Banned | SystemKind::Muted, _) => {
                let (did, undid) = match self.kind {
                    SystemKind::Banned => ("banned", "unbanned"),
                    _ => ("muted", "unmuted"),
                };
                match self.until {
                    Some(until) => format!(
                        "{} was {did} by {} for {}",
                        self.pseudo,
                        self.by(),
                        duration_text(until.saturating_sub(self.ts) / 1000)
                    ),
                    None => format!("{} was {undid} by {}", self.pseudo, self.by()),
                }
            }
            (SystemKind::SlowMode, _) => match self.seconds.unwrap_or(0) {
                0 => format!("{} ended slow mode", self.by()),
                secs => format!(
                    "{} turned slow mode on: one message every {}",
                    self.by(),
                    duration_text(secs)
                ),
            },
        }
    }

    fn by(&self) -> &str {
        self.by.as_deref().unwrap_or("a moderator")
    }

    /// How many people the event is about (more than one when grouped).
    pub fn people(&self) -> u64 {
        1 + self.others.len() as u64 + self.more
    }

    /// The people concerned, as a sentence's subject.
    fn who(&self) -> String {
        let named: Vec<&str> = std::iter::once(self.pseudo.as_str())
            .chain(self.others.iter().map(String::as_str))
            .collect();
        match (named.split_last(), self.more) {
            (Some((last, [])), 0) => (*last).to_owned(),
            (Some((last, first)), 0) => format!("{} and {last}", first.join(", ")),
            (_, 1) => format!("{} and 1 other", named.join(", ")),
            (_, more) => format!("{} and {more} others", named.join(", ")),
        }
    }
}

/// A duration for people: "45 s", "10 min", "2 h", "3 days" (rounded up
/// to the unit).
pub fn duration_text(secs: u64) -> String {
    let up = |unit: u64| secs.div_ceil(unit);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", up(60)),
        3600..86400 => format!("{} h", up(3600)),
        _ => match up(86400) {
            1 => "1 day".into(),
            days => format!("{days} days"),
        },
    }
}

/// Why a frame was refused. Stable strings, meant for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// The `type` is missing or not one the server knows.
    UnknownType,
    /// The JSON has the right type but wrong or missing fields.
    InvalidMessage,
    /// The nickname breaks the nickname rule.
    InvalidPseudo,
    /// Another participant of the room holds that nickname.
    PseudoTaken,
    /// The message is empty or too long.
    InvalidText,
    /// `say` or `rename` before `join`.
    NotJoined,
    /// `join` on a connection that has already joined (use `rename`).
    AlreadyJoined,
    /// The frame is larger than the server accepts.
    TooLarge,
    /// Binary frames are not part of the protocol.
    BinaryFrame,
    /// Too many frames too fast.
    RateLimited,
    /// Too many new rooms from this address: the socket closes (1008).
    TooManyRooms,
    /// The room's stream cannot be written right now (its Redis does not
    /// answer): the message was not sent, or, when the message says so, it
    /// may have been stored although the server could not confirm it.
    Unavailable,
    /// The action is for moderators (or the message's author), or
    /// moderation is off (it needs access tokens).
    Forbidden,
    /// No such message in the room's recent history, or nobody by that
    /// nickname in the room.
    NotFound,
    /// The sender is muted in this room until `until`.
    Muted,
    /// Slow mode: the next message may come in `retry_after_ms`.
    SlowMode,
    /// Banned from the room until `until`: the socket closes (4003).
    Banned,
    /// Removed from the room by a moderator: the socket closes (4003).
    Kicked,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidPseudo,
        ErrorCode::PseudoTaken,
        ErrorCode::InvalidText,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::TooLarge,
        ErrorCode::BinaryFrame,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::Unavailable,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Muted,
        ErrorCode::SlowMode,
        ErrorCode::Banned,
        ErrorCode::Kicked,
    ];

    /// The code with this wire name.
    pub fn from_wire(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
    }

    /// The wire name, e.g. `"pseudo_taken"` (also a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidPseudo => "invalid_pseudo",
            ErrorCode::PseudoTaken => "pseudo_taken",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Muted => "muted",
            ErrorCode::SlowMode => "slow_mode",
            ErrorCode::Banned => "banned",
            ErrorCode::Kicked => "kicked",
        }
    }
}

/// A frame the server could not turn into a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientMessage {
    /// Decodes a text frame, telling apart "not JSON", "unknown type" and
    /// "bad fields" so that the client gets a precise error.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        // serde would also build an internally tagged enum from an array
        // that starts with the tag (`["say","hi"]`): frames are objects only.
        if !frame
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
                Err(err) => DecodeError {
                    code: ErrorCode::InvalidJson,
                    message: err.to_string(),
                },
                Ok(_) => DecodeError {
                    code: ErrorCode::InvalidMessage,
                    message: "a frame must be a JSON object with a \"type\"".into(),
                },
            });
        }
        serde_json::from_str(frame).map_err(|err| {
            let code = if serde_json::from_str::<serde::de::IgnoredAny>(frame).is_err() {
                ErrorCode::InvalidJson
            } else {
                let text = err.to_string();
                if text.contains("unknown variant") || text.contains("missing field `type`") {
                    ErrorCode::UnknownType
                } else {
                    ErrorCode::InvalidMessage
                }
            };
            DecodeError {
                code,
                message: err.to_string(),
            }
        })
    }
}

/// A nickname that passed the rule: trimmed, 1 to [`MAX_PSEUDO_CHARS`]
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pseudo(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PseudoError {
    Empty,
    TooLong,
    ControlCharacter,
    /// Invisible, bidirectional-control or blank-looking characters: a
    /// nickname with one could pass for another.
    Invisible,
}

impl fmt::Display for PseudoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PseudoError::Empty => write!(f, "the nickname is empty"),
            PseudoError::TooLong => write!(
                f,
                "the nickname is longer than {MAX_PSEUDO_CHARS} characters"
            ),
            PseudoError::ControlCharacter => {
                write!(f, "the nickname contains a control character")
            }
            PseudoError::Invisible => write!(
                f,
                "the nickname contains an invisible or direction-changing character"
            ),
        }
    }
}

impl Pseudo {
    pub fn parse(raw: &str) -> Result<Self, PseudoError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(PseudoError::Empty);
        }
        if trimmed.chars().count() > MAX_PSEUDO_CHARS {
            return Err(PseudoError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(PseudoError::ControlCharacter);
        }
        if trimmed.chars().any(invisible) {
            return Err(PseudoError::Invisible);
        }
        Ok(Pseudo(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Pseudo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text of a chat message: not blank, at most [`MAX_TEXT_CHARS`]
/// characters. Kept as typed (not trimmed) so that code blocks survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong,
    ControlCharacter,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => write!(f, "the message is empty"),
            TextError::TooLong => {
                write!(f, "the message is longer than {MAX_TEXT_CHARS} characters")
            }
            TextError::ControlCharacter => write!(
                f,
                "the message contains a control character (only newlines and tabs are allowed)"
            ),
        }
    }
}

/// Characters that render as nothing, or change the direction of what
/// follows: Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties:
/// soft hyphen, zero-width spaces and joiners, bidirectional controls,
/// variation selectors, Hangul fillers, tags ...) and the blank Braille
/// pattern, which looks like a space without being one.
pub fn invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x2800
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

impl MessageText {
    /// A text made of spaces and invisible characters only is empty;
    /// newlines and tabs are kept, other control characters refused.
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        let visible = raw.chars().any(|c| !c.is_whitespace() && !invisible(c));
        if !visible {
            return Err(TextError::Empty);
        }
        if raw.chars().count() > MAX_TEXT_CHARS {
            return Err(TextError::TooLong);
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(TextError::ControlCharacter);
        }
        Ok(MessageText(raw.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks a room name: 1 to [`MAX_ROOM_CHARS`] ASCII letters, digits, `-`
/// or `_`, so that it is safe inside Redis key names and URLs.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_CHARS
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip() {
        let session = Uuid::new_v4();
        for msg in [
            ClientMessage::Join {
                pseudo: "alice".into(),
                session: Some(session),
            },
            ClientMessage::Join {
                pseudo: "bob".into(),
                session: None,
            },
            ClientMessage::Rename {
                pseudo: "carol".into(),
            },
            ClientMessage::Say {
                text: "hello <b>".into(),
                id: None,
            },
            ClientMessage::Say {
                text: "once".into(),
                id: Some(Uuid::nil()),
            },
        ] {
            let json = serde_json::to_string(&msg).unwrap();
            assert_eq!(ClientMessage::decode(&json).unwrap(), msg);
        }
    }

    #[test]
    fn wire_format_is_tagged_by_type() {
        let json = serde_json::to_value(ClientMessage::Say {
            text: "hi".into(),
            id: None,
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"type": "say", "text": "hi"}));
        let mut message = ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::nil(),
            author: "a".into(),
            author_id: String::new(),
            text: "t".into(),
            ts: 5,
            deleted: false,
            edited: false,
            server: false,
        };
        // Not yet in a stream: no position on the wire.
        let json = serde_json::to_value(ServerEvent::Message(message.clone())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "id": Uuid::nil(), "author": "a", "text": "t", "ts": 5})
        );
        message.epoch = "e1".into();
        message.offset = 7;
        let event = ServerEvent::Message(message);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!((&json["epoch"], &json["offset"]), (&"e1".into(), &7.into()));
        assert_eq!(
            event.position(),
            Some(Position {
                epoch: "e1".into(),
                offset: 7
            })
        );
        let count = serde_json::to_value(ServerEvent::Count { count: 2 }).unwrap();
        assert_eq!(count, serde_json::json!({"type": "count", "count": 2}));
        let err = serde_json::to_value(ServerEvent::Error {
            code: ErrorCode::PseudoTaken,
            message: "x".into(),
            until: None,
            retry_after_ms: None,
        })
        .unwrap();
        assert_eq!(err["code"], "pseudo_taken");
    }

    #[test]
    fn server_events_round_trip() {
        let system = ServerEvent::System(SystemMessage {
            epoch: "e".into(),
            offset: 3,
            id: Uuid::new_v4(),
            kind: SystemKind::Renamed,
            pseudo: "new".into(),
            previous: Some("old".into()),
            others: Vec::new(),
            more: 0,
            ts: 1,
            by: None,
            until: None,
            seconds: None,
        });
        let history = ServerEvent::History {
            epoch: "e".into(),
            offset: 3,
            recovered: false,
            more: false,
            events: vec![system.clone()],
        };
        for event in [system, history] {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), event);
        }
        // A history frame without the stream fields reads as recovered.
        let bare: ServerEvent = serde_json::from_str(r#"{"type":"history","events":[]}"#).unwrap();
        assert_eq!(
            bare,
            ServerEvent::History {
                epoch: String::new(),
                offset: 0,
                recovered: true,
                more: false,
                events: vec![]
            }
        );
    }

    #[test]
    fn positions_read_and_write_the_since_query() {
        let position = Position {
            epoch: "a1b2".into(),
            offset: 42,
        };
        assert_eq!(position.to_query(), "a1b2:42");
        assert_eq!(Position::from_query("a1b2:42"), Some(position));
        assert_eq!(Position::from_query("a1b2"), None);
        assert_eq!(Position::from_query("a1b2:x"), None);
        assert_eq!(Position::from_query(":0").map(|p| p.offset), Some(0));
    }

    #[test]
    fn uuids_read_by_hand_as_uuid_reads_them() {
        for _ in 0..100 {
            let id = Uuid::new_v4();
            assert_eq!(parse_uuid(&id.to_string()), Some(id));
            assert_eq!(parse_uuid(&id.to_string().to_uppercase()), Some(id));
        }
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        for bad in [
            "",
            "67e55044",
            "67e55044x10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "67e5504410b1426f9247bb680e5fe0c8",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
        assert_eq!(parse_uuid(id), Uuid::parse_str(id).ok());
    }

    #[test]
    fn frames_written_by_hand_read_back_as_serde_reads_them() {
        let id = Some(Uuid::new_v4());
        let tricky = "a \"quote\" \\ back\nline\ttab \u{1} \u{1f} é 🦀 </script>";
        let messages = [
            ClientMessage::Join {
                pseudo: tricky.into(),
                session: id,
            },
            ClientMessage::Join {
                pseudo: "a".into(),
                session: None,
            },
            ClientMessage::Rename {
                pseudo: tricky.into(),
            },
            ClientMessage::Say {
                text: tricky.into(),
                id,
            },
            ClientMessage::Say {
                text: "x".into(),
                id: None,
            },
            ClientMessage::Typing,
            ClientMessage::Delete { id: Uuid::new_v4() },
            ClientMessage::Edit {
                id: Uuid::new_v4(),
                text: tricky.into(),
            },
            ClientMessage::Kick {
                pseudo: tricky.into(),
            },
            ClientMessage::Ban {
                pseudo: "b".into(),
                seconds: 60,
                redact_minutes: 0,
            },
            ClientMessage::Ban {
                pseudo: "b".into(),
                seconds: 60,
                redact_minutes: 5,
            },
            ClientMessage::Mute {
                pseudo: "b".into(),
                seconds: 0,
            },
            ClientMessage::SlowMode { seconds: 3600 },
            ClientMessage::Older {
                before: u64::MAX,
                limit: MAX_PAGE,
            },
        ];
        for message in messages {
            let frame = message.to_frame();
            assert_eq!(
                ClientMessage::decode(&frame).as_ref(),
                Ok(&message),
                "{frame}"
            );
        }
    }

    #[test]
    fn decode_tells_errors_apart() {
        let code = |frame: &str| ClientMessage::decode(frame).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("{\"type\":\"say\""), ErrorCode::InvalidJson);
        assert_eq!(code("{\"type\":\"dance\"}"), ErrorCode::UnknownType);
        assert_eq!(code("{\"text\":\"hi\"}"), ErrorCode::UnknownType);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("[\"say\",\"hi\"]"), ErrorCode::InvalidMessage);
        assert_eq!(code(" [\"say\""), ErrorCode::InvalidJson);
        assert_eq!(code("\"say\""), ErrorCode::InvalidMessage);
        assert_eq!(code("{\"type\":\"say\"}"), ErrorCode::InvalidMessage);
        assert_eq!(
            code("{\"type\":\"say\",\"text\":5}"),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code("{\"type\":\"join\",\"pseudo\":\"a\",\"session\":\"nope\"}"),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn pseudo_rule() {
        assert_eq!(Pseudo::parse("  alice ").unwrap().as_str(), "alice");
        assert_eq!(Pseudo::parse(""), Err(PseudoError::Empty));
        assert_eq!(Pseudo::parse("   "), Err(PseudoError::Empty));
        assert_eq!(
            Pseudo::parse(&"é".repeat(32))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            32
        );
        assert_eq!(Pseudo::parse(&"a".repeat(33)), Err(PseudoError::TooLong));
        assert_eq!(Pseudo::parse("a\u{7}b"), Err(PseudoError::ControlCharacter));
        assert_eq!(Pseudo::parse("a\nb"), Err(PseudoError::ControlCharacter));
        for invisible in [
            "alice\u{200b}",
            "al\u{ad}ice",
            "alice\u{fe0f}",
            "\u{202e}ecila",
            "\u{3164}",
            "\u{2800}",
        ] {
            assert_eq!(
                Pseudo::parse(invisible),
                Err(PseudoError::Invisible),
                "{invisible:?}"
            );
        }
    }

    #[test]
    fn message_text_must_show_something_and_hold_no_control_character() {
        assert!(MessageText::parse("line one\n\tline two").is_ok());
        for blank in ["", "  \n", "\u{200b}\u{200b}", " \u{2800} "] {
            assert_eq!(
                MessageText::parse(blank),
                Err(TextError::Empty),
                "{blank:?}"
            );
        }
        assert_eq!(
            MessageText::parse("ring\u{7}"),
            Err(TextError::ControlCharacter)
        );
    }

    #[test]
    fn text_rule() {
        assert!(MessageText::parse("hi").is_ok());
        assert_eq!(MessageText::parse(""), Err(TextError::Empty));
        assert_eq!(MessageText::parse(" \n "), Err(TextError::Empty));
        assert!(MessageText::parse(&"x".repeat(2000)).is_ok());
        assert_eq!(
            MessageText::parse(&"x".repeat(2001)),
            Err(TextError::TooLong)
        );
        assert_eq!(
            MessageText::parse("  keep spaces ").unwrap().into_string(),
            "  keep spaces "
        );
    }

    #[test]
    fn room_rule() {
        assert!(valid_room("general"));
        assert!(valid_room("a-b_9"));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
        assert!(!valid_room("a:b"));
        assert!(!valid_room(&"a".repeat(65)));
    }

    #[test]
    fn error_code_names_match_the_wire() {
        for code in ErrorCode::ALL {
            // A new code fails to compile here until ALL lists it.
            match code {
                ErrorCode::InvalidJson
                | ErrorCode::UnknownType
                | ErrorCode::InvalidMessage
                | ErrorCode::InvalidPseudo
                | ErrorCode::PseudoTaken
                | ErrorCode::InvalidText
                | ErrorCode::NotJoined
                | ErrorCode::AlreadyJoined
                | ErrorCode::TooLarge
                | ErrorCode::BinaryFrame
                | ErrorCode::RateLimited
                | ErrorCode::TooManyRooms
                | ErrorCode::Unavailable
                | ErrorCode::Forbidden
                | ErrorCode::NotFound
                | ErrorCode::Muted
                | ErrorCode::SlowMode
                | ErrorCode::Banned
                | ErrorCode::Kicked => {}
            }
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
    }

    #[test]
    fn system_text() {
        let mut sys = SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::nil(),
            kind: SystemKind::Joined,
            pseudo: "bob".into(),
            previous: None,
            others: Vec::new(),
            more: 0,
            ts: 0,
            by: None,
            until: None,
            seconds: None,
        };
        assert_eq!(sys.text(), "bob joined");
        sys.kind = SystemKind::Left;
        assert_eq!(sys.text(), "bob left");
        sys.kind = SystemKind::Renamed;
        sys.previous = Some("al".into());
        assert_eq!(sys.text(), "al is now bob");
    }

    #[test]
    fn moderation_text_and_durations() {
        let sys = |kind, until, seconds| SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::nil(),
            kind,
            pseudo: "bob".into(),
            previous: None,
            others: Vec::new(),
            more: 0,
            by: Some("mod".into()),
            until,
            seconds,
            ts: 1_000,
        };
        let text = |kind, until, seconds| sys(kind, until, seconds).text();
        assert_eq!(
            text(SystemKind::Kicked, None, None),
            "bob was removed by mod"
        );
        assert_eq!(
            text(SystemKind::Banned, Some(1_000 + 600_000), None),
            "bob was banned by mod for 10 min"
        );
        assert_eq!(
            text(SystemKind::Muted, None, None),
            "bob was unmuted by mod"
        );
        assert_eq!(
            text(SystemKind::SlowMode, None, Some(30)),
            "mod turned slow mode on: one message every 30 s"
        );
        assert_eq!(
            text(SystemKind::SlowMode, None, Some(0)),
            "mod ended slow mode"
        );
        assert_eq!(duration_text(59), "59 s");
        assert_eq!(duration_text(61), "2 min");
        assert_eq!(duration_text(3600), "1 h");
        assert_eq!(duration_text(86_400), "1 day");
        assert_eq!(duration_text(30 * 86_400), "30 days");
        let json =
            serde_json::to_value(ServerEvent::System(sys(SystemKind::Banned, Some(5), None)))
                .unwrap();
        assert_eq!(
            (&json["kind"], &json["by"], &json["until"]),
            (&"banned".into(), &"mod".into(), &5.into())
        );
    }

    #[test]
    fn grouped_system_text() {
        let mut sys = SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::nil(),
            kind: SystemKind::Joined,
            pseudo: "ann".into(),
            previous: None,
            others: vec!["bob".into()],
            more: 0,
            ts: 0,
            by: None,
            until: None,
            seconds: None,
        };
        assert_eq!(sys.text(), "ann and bob joined");
        sys.others.push("cy".into());
        assert_eq!(sys.text(), "ann, bob and cy joined");
        assert_eq!(sys.people(), 3);
        sys.more = 1;
        assert_eq!(sys.text(), "ann, bob, cy and 1 other joined");
        sys.kind = SystemKind::Left;
        sys.more = 12;
        assert_eq!(sys.text(), "ann, bob, cy and 12 others left");
        assert_eq!(sys.people(), 15);
        let json = serde_json::to_value(ServerEvent::System(sys)).unwrap();
        assert_eq!(json["others"], serde_json::json!(["bob", "cy"]));
        assert_eq!(json["more"], 12);
    }
}
