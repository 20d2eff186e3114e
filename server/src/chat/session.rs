//! One chat connection: it listens to its room from the start, then joins
//! with a nickname to speak.

use super::control::Removal;
use super::moderation::{Actor, Denied};
use super::{encode, Chat, Opening};
use crate::broker::{stamp, Appended, Claim, Entry, Member, Sanction, Seat, Subscription};
use crate::fanout::{close, CloseReason, ConnId, Kind, Peer, Topic};
use crate::metrics;
use crate::ws::throttle::{Throttle, Verdict};
use crate::ws::{self, Handler, Outbound, Refusal, Socket};
use app::protocol::{
    duration_text, ChatMessage, ClientMessage, ErrorCode, MessageText, Pseudo, ServerEvent,
    SystemKind, DEFAULT_ROOM,
};
use axum::extract::ws::Utf8Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Typing frames relayed per connection at most this often (clients send
/// one every `TYPING_EVERY_MS`).
const TYPING_GAP: Duration = Duration::from_millis(1_000);

pub async fn run<S: Socket>(chat: Arc<Chat>, socket: S, opening: Opening) {
    let id = Uuid::new_v4();
    let started = Instant::now();
    let (peer, queue) = Peer::new(Kind::Chat, chat.limits.outbound_queue);
    let Opening {
        room,
        resume,
        name,
        moderator,
        subject,
        address,
    } = opening;
    metrics::connection_opened(Kind::Chat);
    tracing::info!(conn = %id, kind = "chat", room, "connection opened");
    let topic = Topic::Room(room.clone());
    let _subject = subject.map(|sub| chat.hub.subject(&sub, &topic, id));
    // Boxed: opening (history read, subscription) is over before the
    // connection's long life, and would otherwise size its task.
    let (preamble, subscription) = Box::pin(chat.open(&room, id, &peer, &resume)).await;
    let mut session = ChatSession {
        chat: chat.clone(),
        id,
        subscription: Some(subscription),
        topic,
        room,
        peer: peer.clone(),
        member: None,
        name,
        moderator,
        renames: Throttle::new(chat.limits.renames),
        joins: Throttle::new(chat.limits.joins),
        address,
        typed: None,
    };
    let outbound = Outbound {
        peer,
        queue,
        preamble,
    };
    let limits = &chat.limits.socket;
    let reason = ws::drive(socket, outbound, &mut session, limits, &chat.shutdown).await;
    let pseudo = session.member.as_ref().map(|m| m.pseudo.to_string());
    Box::pin(session.leave()).await;
    metrics::connection_closed(Kind::Chat);
    tracing::info!(
        conn = %id,
        kind = "chat",
        room = session.room,
        pseudo,
        duration_ms = started.elapsed().as_millis() as u64,
        reason,
        "connection closed"
    );
}

/// Chat actions with a bucket of their own (`JOIN_LIMIT_PER_MIN`,
/// `RENAME_LIMIT_PER_MIN`): each writes to the broker and a rename is
/// announced to the whole room, so they are held far below the frame rate.
#[derive(Clone, Copy)]
enum Limited {
    Join,
    Rename,
}

impl Limited {
    /// The `errors_total` label.
    fn label(self) -> &'static str {
        match self {
            Limited::Join => "join_limited",
            Limited::Rename => "rename_limited",
        }
    }

    /// Why a client that keeps trying is closed; its reason starts the
    /// error messages too.
    fn close(self) -> CloseReason {
        match self {
            Limited::Join => close::JOIN_FLOOD,
            Limited::Rename => close::RENAME_FLOOD,
        }
    }
}

struct ChatSession {
    chat: Arc<Chat>,
    id: ConnId,
    /// The instance follows the room for this connection until it leaves.
    subscription: Option<Subscription>,
    room: String,
    topic: Topic,
    peer: Peer,
    member: Option<Member>,
    /// The nickname an access token gives, when tokens are required.
    name: Option<Pseudo>,
    /// The access token makes this participant a moderator.
    moderator: bool,
    renames: Throttle,
    joins: Throttle,
    /// The client's address, for `NEW_ROOMS_PER_MIN`.
    address: IpAddr,
    /// When this connection's last typing frame went out.
    typed: Option<Instant>,
}

impl Handler for ChatSession {
    const KIND: Kind = Kind::Chat;

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<CloseReason> {
        match ClientMessage::decode(&text) {
            Err(err) => self.refuse(err.code, err.message),
            Ok(ClientMessage::Join { pseudo, session }) => match self.joins.check() {
                Verdict::Allowed => return self.join(&pseudo, session).await,
                verdict => return self.throttled(verdict, Limited::Join),
            },
            Ok(ClientMessage::Rename { pseudo }) => match self.renames.check() {
                Verdict::Allowed => self.rename(&pseudo).await,
                verdict => return self.throttled(verdict, Limited::Rename),
            },
            Ok(ClientMessage::Say { text, id }) => self.say(&text, id).await,
            Ok(ClientMessage::Typing) => self.typing().await,
            Ok(moderation) => self.moderate(moderation).await,
        }
        None
    }

    fn refusal(&self, refusal: Refusal) -> Utf8Bytes {
        let (code, message) = match refusal {
            Refusal::TooLarge(max) => (
                ErrorCode::TooLarge,
                format!("message larger than {max} bytes"),
            ),
            Refusal::RateLimited => (
                ErrorCode::RateLimited,
                "too many messages: slow down".into(),
            ),
            Refusal::Binary => (
                ErrorCode::BinaryFrame,
                "binary frames are not supported: send JSON as text".into(),
            ),
        };
        encode(&ServerEvent::Error {
            code,
            message,
            until: None,
            retry_after_ms: None,
        })
    }
}

impl ChatSession {
    /// Answers a join or rename over its limit; a client that keeps trying
    /// regardless is closed with 1008.
    fn throttled(&self, verdict: Verdict, limited: Limited) -> Option<CloseReason> {
        metrics::error("chat", limited.label());
        let why = limited.close();
        let message = match verdict {
            Verdict::Refused(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                format!("{}: try again in {} s", why.reason, secs.max(1))
            }
            Verdict::Allowed | Verdict::Abuse => format!("{}: closing", why.reason),
        };
        self.peer.send(encode(&ServerEvent::Error {
            code: ErrorCode::RateLimited,
            message,
            until: None,
            retry_after_ms: None,
        }));
        (verdict == Verdict::Abuse).then_some(why)
    }

    fn refuse(&self, code: ErrorCode, message: String) {
        metrics::error("chat", code.as_str());
        self.peer.send(encode(&ServerEvent::Error {
            code,
            message,
            until: None,
            retry_after_ms: None,
        }));
    }

    fn confirm(&self, member: &Member) {
        self.peer.send(encode(&ServerEvent::Joined {
            pseudo: member.pseudo.to_string(),
            session: member.session,
            room: self.room.clone(),
            moderation: self.chat.moderation(),
            moderator: self.moderator && self.chat.moderation(),
        }));
    }

    /// The connection that gave way to this one (same session, same
    /// nickname) is told and closed, wherever it is: one live owner per
    /// nickname.
    async fn replaced(&self, replaced: Option<crate::fanout::ConnId>) {
        if let Some(conn) = replaced {
            let last = encode(&ServerEvent::Replaced);
            self.chat
                .remove(&self.room, conn, Removal::Replaced, last)
                .await;
        }
    }

    /// Whether the nickname is banned from the room; a ban ends the
    /// connection. While the broker does not answer, joins go ahead.
    async fn banned(&self, member: &Member) -> Option<CloseReason> {
        if !self.chat.moderation() {
            return None;
        }
        match self.chat.broker.banned(&self.room, &member.key).await {
            Ok(Some(until)) => {
                metrics::error("chat", ErrorCode::Banned.as_str());
                let left = until.saturating_sub(crate::clock::now_ms()).div_ceil(1000);
                let message = format!("you are banned from this room for {}", duration_text(left));
                let denied = Denied {
                    until: Some(until),
                    ..Denied::new(ErrorCode::Banned, message)
                };
                self.peer.send(denied.frame());
                Some(close::BANNED)
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(room = self.room, error = %err, "cannot check bans; letting the join through");
                None
            }
        }
    }

    /// Moderation frames (see [`super::moderation`]).
    async fn moderate(&mut self, message: ClientMessage) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before moderating".into());
        };
        let actor = Actor {
            pseudo: member.pseudo.as_str(),
            key: &member.key,
            moderator: self.moderator,
            trusted: false,
        };
        let (chat, room) = (&self.chat, self.room.as_str());
        let done = match message {
            ClientMessage::Delete { id } => chat.delete(room, id, &actor).await,
            ClientMessage::Edit { id, text } => chat.edit(room, id, &text, &actor).await,
            ClientMessage::Kick { pseudo } => chat.kick(room, &pseudo, &actor).await,
            ClientMessage::Ban {
                pseudo,
                seconds,
                redact_minutes,
            } => {
                let ban = Sanction::Ban;
                chat.sanction(room, ban, &pseudo, seconds, redact_minutes, &actor)
                    .await
            }
            ClientMessage::Mute { pseudo, seconds } => {
                let mute = Sanction::Mute;
                chat.sanction(room, mute, &pseudo, seconds, 0, &actor).await
            }
            ClientMessage::SlowMode { seconds } => chat.set_slow_mode(room, seconds, &actor).await,
            ClientMessage::Join { .. }
            | ClientMessage::Rename { .. }
            | ClientMessage::Say { .. }
            | ClientMessage::Typing => Ok(()),
        };
        if let Err(denied) = done {
            metrics::error("chat", denied.code.as_str());
            self.peer.send(denied.frame());
        }
    }

    fn seat<'a>(&'a self, member: &'a Member) -> Seat<'a> {
        Seat {
            room: &self.room,
            conn: self.id,
            member,
        }
    }

    async fn join(&mut self, raw: &str, session: Option<Uuid>) -> Option<CloseReason> {
        if let Some(member) = &self.member {
            let message = format!(
                "already joined as {}: send rename to change nickname",
                member.pseudo
            );
            self.refuse(ErrorCode::AlreadyJoined, message);
            return None;
        }
        let pseudo = match (&self.name, Pseudo::parse(raw)) {
            // Whatever was asked for: nobody speaks as somebody else.
            (Some(name), _) => name.clone(),
            (None, Ok(pseudo)) => pseudo,
            (None, Err(err)) => {
                self.refuse(ErrorCode::InvalidPseudo, err.to_string());
                return None;
            }
        };
        let member = Member::new(pseudo, session.unwrap_or_else(Uuid::new_v4));
        if let Some(banned) = self.banned(&member).await {
            return Some(banned);
        }
        // Recorded before any await, so that a connection cut short from
        // here on still releases the nickname when it closes (releasing one
        // it never got is harmless).
        self.member = Some(member.clone());
        let chat = &self.chat;
        let (claim, replaced) = chat.presence.claim(self.seat(&member), None).await;
        if claim == Claim::Taken {
            self.member = None;
            let message = format!("the nickname {} is taken in this room", member.pseudo);
            self.refuse(ErrorCode::PseudoTaken, message);
            return None;
        }
        // Only the join that found the room empty opened it (decided by the
        // claim, so that a crowd arriving at once counts once), and it is
        // undone over the limit.
        if claim == Claim::Opened
            && self.room != DEFAULT_ROOM
            && chat.new_rooms.check_key(&self.address).is_err()
        {
            self.member = None;
            chat.presence.leave(self.seat(&member)).await;
            chat.presence_changed(&self.room).await;
            let message = "too many new rooms from your address: try again in a minute";
            self.refuse(ErrorCode::TooManyRooms, message.into());
            return None;
        }
        self.confirm(&member);
        self.replaced(replaced).await;
        tracing::info!(conn = %self.id, room = self.room, pseudo = %member.pseudo, ?claim, "joined");
        // A reclaim is the same person back on a new connection: not news.
        if matches!(claim, Claim::Joined | Claim::Opened) {
            let pseudo = member.pseudo.as_str();
            chat.arrival(&self.room, SystemKind::Joined, pseudo).await;
        }
        chat.presence_changed(&self.room).await;
        None
    }

    async fn rename(&mut self, raw: &str) {
        let Some(current) = self.member.clone() else {
            return self.refuse(ErrorCode::NotJoined, "join before renaming".into());
        };
        if self.name.is_some() {
            let message = "the nickname comes from your access token".into();
            return self.refuse(ErrorCode::InvalidPseudo, message);
        }
        let pseudo = match Pseudo::parse(raw) {
            Ok(pseudo) => pseudo,
            Err(err) => return self.refuse(ErrorCode::InvalidPseudo, err.to_string()),
        };
        if pseudo == current.pseudo {
            return self.confirm(&current);
        }
        let member = Member::new(pseudo, current.session);
        let chat = &self.chat;
        let previous = Some(current.key.as_str());
        let (claim, replaced) = chat.presence.claim(self.seat(&member), previous).await;
        if claim == Claim::Taken {
            let message = format!("the nickname {} is taken in this room", member.pseudo);
            return self.refuse(ErrorCode::PseudoTaken, message);
        }
        self.member = Some(member.clone());
        self.confirm(&member);
        self.replaced(replaced).await;
        let previous = Some(current.pseudo.to_string());
        let renamed = chat.system(SystemKind::Renamed, member.pseudo.to_string(), previous);
        chat.announce(&self.room, &ServerEvent::System(renamed))
            .await;
    }

    async fn say(&mut self, raw: &str, once: Option<Uuid>) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before sending messages".into());
        };
        let text = match MessageText::parse(raw) {
            Ok(text) => text,
            Err(err) => return self.refuse(ErrorCode::InvalidText, err.to_string()),
        };
        let message = ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: once.unwrap_or_else(Uuid::new_v4),
            author: member.pseudo.to_string(),
            text: text.into_string(),
            ts: crate::clock::now_ms(),
            deleted: false,
            edited: false,
            server: false,
        };
        // The message ends this bout of typing: the next one is news.
        self.typed = None;
        // Acknowledged (echoed back) only once it is in the stream, so no
        // crash can lose a message its sender saw as sent.
        let frame = encode(&ServerEvent::Message(message));
        let entry = Entry {
            frame: &frame,
            once,
            // Moderators are held by neither mutes nor slow mode.
            author: (!self.moderator).then_some(member.key.as_str()),
            replace: None,
        };
        match self.chat.append(&self.room, entry).await {
            Ok(Appended::New(stored) | Appended::Repeat(stored)) => self.acknowledge(once, &stored),
            Ok(Appended::Muted { until_ms }) => {
                let left = until_ms
                    .saturating_sub(crate::clock::now_ms())
                    .div_ceil(1000);
                let message = format!("you are muted in this room for {}", duration_text(left));
                let denied = Denied {
                    until: Some(until_ms),
                    ..Denied::new(ErrorCode::Muted, message)
                };
                metrics::error("chat", denied.code.as_str());
                self.peer.send(denied.frame());
            }
            Ok(Appended::Slowed { retry_after_ms }) => {
                let wait = duration_text(retry_after_ms.div_ceil(1000));
                let message = format!("slow mode: wait {wait} before sending another message");
                let denied = Denied {
                    retry_after_ms: Some(retry_after_ms),
                    ..Denied::new(ErrorCode::SlowMode, message)
                };
                metrics::error("chat", denied.code.as_str());
                self.peer.send(denied.frame());
            }
            // No stored event to overwrite was given.
            Ok(Appended::Gone) => {}
            Err(err) => {
                tracing::warn!(conn = %self.id, room = self.room, error = %err, "message not sent");
                // A reply that timed out may follow an append that went through.
                let message = match (err.is_timeout(), once) {
                    (true, Some(_)) => "the chat could not confirm that your message was stored: send it again with the same id, it will not be doubled",
                    (true, None) => "the chat could not confirm that your message was stored: it may not have been sent; check the conversation before sending it again",
                    (false, _) => "the chat cannot store messages right now: yours was not sent; try again in a moment",
                };
                self.refuse(ErrorCode::Unavailable, message.into());
            }
        }
    }

    /// Tells the sender of a message with an id where it is in the stream
    /// (the first time and for every repeat).
    fn acknowledge(&self, once: Option<Uuid>, stored: &str) {
        let (Some(id), Some((epoch, offset))) = (once, stamp::position(stored)) else {
            return;
        };
        self.peer.send(encode(&ServerEvent::Ack {
            id,
            epoch: epoch.to_owned(),
            offset,
        }));
    }

    /// Tells the others in the room that this participant is typing, at
    /// most once per [`TYPING_GAP`]; not stored in the room's stream.
    async fn typing(&mut self) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before typing".into());
        };
        if self.typed.is_some_and(|at| at.elapsed() < TYPING_GAP) {
            return;
        }
        self.typed = Some(Instant::now());
        let frame = encode(&ServerEvent::Typing {
            pseudo: member.pseudo.to_string(),
        });
        self.chat.broadcast(&self.topic, frame, self.id).await;
    }

    async fn leave(&mut self) {
        let chat = &self.chat;
        chat.feeds.unlisten(&self.room, self.id);
        self.subscription.take();
        // On shutdown the instance's entries are removed all at once after
        // a short wait, so that people who reconnect elsewhere meanwhile
        // reclaim their nickname instead of "leaving" and "joining".
        if chat.shutdown.is_cancelled() {
            return;
        }
        if let Some(member) = self.member.take() {
            if chat.presence.leave(self.seat(&member)).await {
                chat.departed(&self.room, member.pseudo.as_str()).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
