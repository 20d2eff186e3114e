//! One chat connection: it listens to its room from the start, then joins
//! with a nickname to speak. Who is behind it ([`Person`]) decides what its
//! messages record as their author, which sanctions hold it and which
//! rate limits it shares with its other connections. Joining and renaming
//! are in `membership.rs`, speaking and typing in `speech.rs`, reading
//! earlier events in `scroll_back.rs`, the per-person rate limits in
//! `allowance.rs`.

use super::moderation::{Actor, Denied};
use super::sanctions::Named;
use super::{encode, Chat, Opening};
use crate::broker::{Member, Sanction, Seat, Subscription};
use crate::fanout::{close, CloseReason, ConnId, Kind, Peer, Topic};
use crate::identity::Person;
use crate::metrics;
use crate::ws::in_order::InOrder;
use crate::ws::throttle::{Throttle, Verdict};
use crate::ws::{self, Handler, Outbound, Preamble, Refusal, Socket};
use app::protocol::{duration_text, ClientMessage, ErrorCode, Pseudo, ServerEvent};
use axum::extract::ws::Utf8Bytes;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[path = "allowance.rs"]
mod allowance;
#[path = "membership.rs"]
mod membership;
#[path = "scroll_back.rs"]
mod scroll_back;
#[path = "speech.rs"]
mod speech;

use allowance::{allowed, Limited};

/// The connection's life: opening, its frames, leaving. The opening and
/// the leaving are boxed, and nothing here borrows the session: their
/// state, or a session kept in place, would otherwise size the task of
/// every idle connection (the session lives in the connection's future,
/// and its id comes back from it). Not an `async fn`, which would keep a
/// second copy of its arguments (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)]
pub fn run<S: Socket>(
    chat: Arc<Chat>,
    socket: S,
    opening: Box<Opening>,
) -> impl Future<Output = ()> + Send {
    async move {
        let started = Instant::now();
        let (session, outbound) = Box::pin(open(chat.clone(), opening)).await;
        let limits = &chat.limits.socket;
        let (reason, session) = ws::drive(socket, outbound, session, limits).await;
        let (id, topic, pseudo) = Box::pin(session.close()).await;
        metrics::connection_closed(Kind::Chat);
        tracing::info!(
            conn = %id,
            kind = "chat",
            room = topic.name(),
            pseudo,
            duration_ms = started.elapsed().as_millis() as u64,
            reason,
            "connection closed"
        );
    }
}

/// The session for `opening`, and what its connection is sent first.
async fn open(chat: Arc<Chat>, opening: Box<Opening>) -> (ChatSession, Outbound) {
    let opening = *opening;
    let id = Uuid::new_v4();
    let (peer, queue) = Peer::new(Kind::Chat, chat.limits.outbound_queue);
    let Opening {
        room,
        resume,
        name,
        moderator,
        person,
        address,
    } = opening;
    metrics::connection_opened(Kind::Chat);
    tracing::info!(conn = %id, kind = "chat", room, "connection opened");
    let topic = Topic::Room(room.into());
    let room = topic.name();
    let marks = person.marks();
    // Listed under the marks of who holds it, so that a ban closes it
    // wherever it is.
    peer.mark(marks.iter().cloned());
    // A banned person may not even read the room: refused before anything
    // of it is read or sent.
    let (preamble, subscription) = match chat.refusal(room, &marks).await {
        Some(denied) => {
            metrics::error("chat", denied.code.as_str());
            peer.close(close::BANNED);
            let frames = vec![denied.frame()];
            (
                Preamble {
                    frames,
                    fresh: None,
                },
                None,
            )
        }
        // Boxed: opening (history read, subscription) is over before the
        // connection's long life, and would otherwise size its task.
        None => {
            let (preamble, subscription) = Box::pin(chat.open(room, id, &peer, &resume)).await;
            (preamble, Some(subscription))
        }
    };
    // Not kept in the task through the connection's life.
    drop((marks, resume));
    let session = ChatSession {
        chat: chat.clone(),
        id,
        subscription,
        topic,
        peer: peer.clone(),
        member: None,
        name: name.map(Box::new),
        moderator,
        person,
        address,
        joins: Throttle::default(),
        typed: None,
        said: InOrder::default(),
    };
    let outbound = Outbound {
        peer,
        queue,
        preamble,
    };
    (session, outbound)
}

impl Chat {
    /// Why somebody with these marks may not enter the room, if banned.
    /// While the broker does not answer, they are let in.
    pub(super) async fn refusal(&self, room: &str, marks: &[String]) -> Option<Denied> {
        match self.broker.sanctioned(room, Sanction::Ban, marks).await {
            Ok(Some(until)) => {
                let left = until.saturating_sub(crate::clock::now_ms()).div_ceil(1000);
                let message = format!("you are banned from this room for {}", duration_text(left));
                Some(Denied {
                    until: Some(until),
                    ..Denied::new(ErrorCode::Banned, message)
                })
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(room, error = %err, "cannot check bans; letting the connection through");
                None
            }
        }
    }
}

struct ChatSession {
    chat: Arc<Chat>,
    id: ConnId,
    /// The instance follows the room for this connection until it leaves.
    subscription: Option<Subscription>,
    /// The room (a name shared with the hub and the subscription).
    topic: Topic,
    peer: Peer,
    member: Option<Arc<Member>>,
    /// The nickname an access token gives, when tokens are required
    /// (boxed: most connections have none, and each holds this field).
    name: Option<Box<Pseudo>>,
    /// The access token makes this participant a moderator.
    moderator: bool,
    person: Person,
    /// The client's address block, for `NEW_ROOMS_PER_MIN`.
    address: IpAddr,
    /// Join attempts on this connection.
    joins: Throttle,
    /// When this connection's last typing frame went out.
    typed: Option<Instant>,
    /// Messages waiting for their commit, answered in the order sent.
    said: InOrder<speech::Said>,
}

impl Handler for ChatSession {
    const KIND: Kind = Kind::Chat;

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<CloseReason> {
        let message = ClientMessage::decode(&text);
        // Frames are answered in the order they came: only a message may
        // start while earlier ones wait for their commit.
        if !matches!(message, Ok(ClientMessage::Say { .. })) {
            self.settle_all().await;
        }
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                self.refuse(err.code, err.message);
                return None;
            }
        };
        // The cheap checks first: nothing is read from the broker for a
        // person over their allowance. A join without a session starts one
        // here, so that its allowance is that session's.
        let message = match message {
            ClientMessage::Join { pseudo, session } => ClientMessage::Join {
                pseudo,
                session: Some(session.unwrap_or_else(Uuid::new_v4)),
            },
            other => other,
        };
        let (throttle, limited) = match &message {
            ClientMessage::Join { .. } => (&self.chat.senders.joins, Limited::Join),
            ClientMessage::Rename { .. } => (&self.chat.senders.renames, Limited::Rename),
            _ => (&self.chat.senders.actions, Limited::Action),
        };
        // Joins are held per connection too: a client that sends a new
        // session with each attempt is a new person each time.
        let per_connection = match limited {
            Limited::Join => self.joins.check(&self.chat.limits.joins),
            _ => Verdict::Allowed,
        };
        if per_connection != Verdict::Allowed {
            return self.throttled(per_connection, limited);
        }
        if let Some(verdict) = allowed(throttle, &self.rate_key(&message)) {
            self.settle_all().await;
            return self.throttled(verdict, limited);
        }
        match message {
            ClientMessage::Join { pseudo, session } => {
                return self.join(&pseudo, session.unwrap_or_default()).await
            }
            ClientMessage::Rename { pseudo } => self.rename(&pseudo).await,
            ClientMessage::Say { text, id } => self.say(&text, id).await,
            ClientMessage::Typing => self.typing().await,
            ClientMessage::Older { before, limit } => self.older(before, limit).await,
            moderation => self.moderate(moderation).await,
        }
        None
    }

    async fn settle(&mut self) {
        let said = self.said.next().await;
        self.answer(said);
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
    fn room(&self) -> &str {
        self.topic.name()
    }

    /// What holds this connection's member (mutes, bans).
    fn member_marks(&self, member: &Member) -> Vec<String> {
        self.person.member_marks(&member.key, &member.id)
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

    fn deny(&self, denied: &Denied) {
        metrics::error("chat", denied.code.as_str());
        self.peer.send(denied.frame());
    }

    /// Moderation frames (see [`super::moderation`]).
    async fn moderate(&mut self, message: ClientMessage) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before moderating".into());
        };
        let marks = self.member_marks(member);
        let actor = Actor {
            pseudo: member.pseudo.as_str(),
            id: &member.id,
            marks: &marks,
            moderator: self.moderator,
            trusted: false,
        };
        let (chat, room) = (&self.chat, self.room());
        let done = match message {
            ClientMessage::Delete { id } => chat.delete(room, id, &actor).await,
            ClientMessage::Edit { id, text } => chat.edit(room, id, &text, &actor).await,
            ClientMessage::Kick { pseudo } => chat.kick(room, &pseudo, &actor).await,
            ClientMessage::Ban {
                pseudo,
                seconds,
                redact_minutes,
            } => {
                let (ban, named) = (Sanction::Ban, Named::Pseudo(&pseudo));
                chat.sanction(room, ban, named, seconds, redact_minutes, &actor)
                    .await
            }
            ClientMessage::Mute { pseudo, seconds } => {
                let (mute, named) = (Sanction::Mute, Named::Pseudo(&pseudo));
                chat.sanction(room, mute, named, seconds, 0, &actor).await
            }
            ClientMessage::SlowMode { seconds } => chat.set_slow_mode(room, seconds, &actor).await,
            ClientMessage::Join { .. }
            | ClientMessage::Rename { .. }
            | ClientMessage::Say { .. }
            | ClientMessage::Typing
            | ClientMessage::Older { .. } => Ok(()),
        };
        if let Err(denied) = done {
            self.deny(&denied);
        }
    }

    fn seat<'a>(&'a self, member: &'a Arc<Member>) -> Seat<'a> {
        Seat {
            room: self.room(),
            conn: self.id,
            member,
        }
    }

    /// Leaves; returns its id, the room and the nickname it had, for the
    /// log.
    async fn close(mut self) -> (ConnId, Topic, Option<String>) {
        let pseudo = self.member.as_ref().map(|m| m.pseudo.to_string());
        self.leave().await;
        (self.id, self.topic, pseudo)
    }

    async fn leave(&mut self) {
        let chat = &self.chat;
        chat.feeds.unlisten(self.room(), self.id);
        self.subscription.take();
        // On shutdown the instance's entries are removed all at once after
        // a short wait, so that people who reconnect elsewhere meanwhile
        // reclaim their nickname instead of "leaving" and "joining".
        if chat.shutdown.is_cancelled() {
            return;
        }
        if let Some(member) = self.member.take() {
            if chat.presence.leave(self.seat(&member)).await {
                chat.departed(self.room(), member.pseudo.as_str()).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
