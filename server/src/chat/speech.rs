//! Speaking in a room: messages, stored once and acknowledged once stored,
//! recording who wrote them; typing, held by mutes too.

use super::super::encode;
use super::super::moderation::Denied;
use super::ChatSession;
use crate::broker::{owner_marker, stamp, Appended, Author, BrokerError, Entry, Once};
use app::protocol::{duration_text, ChatMessage, ErrorCode, MessageText, ServerEvent};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Typing frames relayed per connection at most this often (clients send
/// one every `TYPING_EVERY_MS`).
const TYPING_GAP: Duration = Duration::from_millis(1_000);

/// Messages one connection may have waiting for their commit at once
/// (when the broker queues appends in order): a sender's burst shares
/// commits instead of waiting for one commit per message.
const IN_FLIGHT: usize = 16;

/// What became of a message this connection sent.
pub(super) struct Said {
    once: Option<Uuid>,
    appended: Result<Appended, BrokerError>,
}

impl ChatSession {
    pub(super) async fn say(&mut self, raw: &str, once: Option<Uuid>) {
        let text = match MessageText::parse(raw) {
            Ok(text) => text,
            Err(err) => {
                self.settle_all().await;
                return self.refuse(ErrorCode::InvalidText, err.to_string());
            }
        };
        let Some(member) = &self.member else {
            self.settle_all().await;
            return self.refuse(ErrorCode::NotJoined, "join before sending messages".into());
        };
        let message = ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: once.unwrap_or_else(Uuid::new_v4),
            author: member.pseudo.to_string(),
            author_id: member.id.clone(),
            text: text.into_string(),
            ts: crate::clock::now_ms(),
            deleted: false,
            edited: false,
            server: false,
        };
        // Acknowledged (echoed back) only once it is in the stream, so no
        // crash can lose a message its sender saw as sent.
        let frame = encode(&ServerEvent::Message(message));
        let marks = self.member_marks(member);
        let owner = owner_marker(&member.id);
        // Moderators are held by neither mutes nor slow mode.
        let held = (!self.moderator).then(|| member.id.clone());
        let (chat, room) = (self.chat.clone(), self.room().to_owned());
        let appending = async move {
            let entry = Entry {
                frame: &frame,
                once: once.map(|id| Once { id, owner: &owner }),
                author: held.as_ref().map(|id| Author { marks: &marks, id }),
                replace: None,
            };
            let appended = chat.append(&room, entry).await;
            Said { once, appended }
        };
        // The message ends this bout of typing: the next one is news.
        self.typed = None;
        let in_flight = match self.chat.broker.appends_in_order() {
            true => IN_FLIGHT,
            false => 1,
        };
        while self.said.len() >= in_flight {
            let said = self.said.next().await;
            self.answer(said);
        }
        if let Some(said) = self.said.start(appending).await {
            self.answer(said);
        }
    }

    /// Answers every message still waiting for its commit: what this
    /// connection sends next is answered after them.
    pub(super) async fn settle_all(&mut self) {
        while !self.said.is_empty() {
            let said = self.said.next().await;
            self.answer(said);
        }
    }

    /// Tells the sender what became of a message: an ack when it has an id,
    /// or why it was not sent.
    pub(super) fn answer(&self, Said { once, appended }: Said) {
        match appended {
            Ok(Appended::New(stored) | Appended::Repeat(stored)) => self.acknowledge(once, &stored),
            Ok(Appended::Muted { until_ms }) => self.deny(&Denied::muted(until_ms)),
            Ok(Appended::Slowed { retry_after_ms }) => {
                let wait = duration_text(retry_after_ms.div_ceil(1000));
                let message = format!("slow mode: wait {wait} before sending another message");
                let denied = Denied {
                    retry_after_ms: Some(retry_after_ms),
                    ..Denied::new(ErrorCode::SlowMode, message)
                };
                self.deny(&denied);
            }
            Ok(Appended::Conflict) => {
                let message = "another message already has this id: send yours with a new id";
                self.refuse(ErrorCode::InvalidMessage, message.into());
            }
            // No stored event to overwrite was given.
            Ok(Appended::Gone) => {}
            Err(err) => {
                tracing::warn!(conn = %self.id, room = self.room(), error = %err, "message not sent");
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
    /// most once per [`TYPING_GAP`]; not stored in the room's stream. A
    /// muted participant is not shown typing.
    pub(super) async fn typing(&mut self) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before typing".into());
        };
        if self.typed.is_some_and(|at| at.elapsed() < TYPING_GAP) {
            return;
        }
        self.typed = Some(Instant::now());
        if !self.moderator {
            if let Some(denied) = self.muted(member).await {
                return self.deny(&denied);
            }
        }
        let frame = encode(&ServerEvent::Typing {
            pseudo: member.pseudo.to_string(),
        });
        self.chat.broadcast(&self.topic, frame, self.id).await;
    }
}
