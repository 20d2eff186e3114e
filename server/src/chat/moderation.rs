//! Moderation kept in the room's stream: deleting and editing a message,
//! kicking, banning and muting a participant, slow mode. Each action is a
//! stream event (so that readers catching up see it too), and what it
//! changes lives in the broker beside the stream: a deleted or edited
//! message is overwritten in the stored history in the same step as the
//! event is appended, so that the history never serves the old text again;
//! bans and mutes expire by themselves; the append that stores a message
//! checks mutes and slow mode.
//!
//! Moderation by participants needs access tokens (`CHAT_AUTH=required`):
//! only then is a participant somebody (the token's subject), so that "the
//! author" and "a moderator" (the token's `roles` claim) mean something.
//! Authorship is the message's `author_id`, never its name; nobody but the
//! backend changes the backend's messages. The server API moderates either
//! way; sanctions hold every mark of their target (`crate::identity`).

use super::{encode, Chat};
use crate::broker::{stamp, Appended, Author, BrokerError, Entry};
use crate::clock::now_ms;
use app::protocol::{
    duration_text, Amendment, ChatMessage, ErrorCode, MessageText, ServerEvent, SystemKind,
    EDIT_WINDOW_SECS, MAX_SLOW_MODE_SECS,
};
use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

/// Who acts.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub pseudo: &'a str,
    /// Their author identity (empty for the server).
    pub id: &'a str,
    /// What mutes and slow mode hold them by.
    pub marks: &'a [String],
    pub moderator: bool,
    /// The backend, through the server API: it moderates whether or not
    /// chat access tokens are on.
    pub trusted: bool,
}

impl Actor<'static> {
    /// The server API.
    pub const SERVER: Actor<'static> = Actor {
        pseudo: "server",
        id: "",
        marks: &[],
        moderator: true,
        trusted: true,
    };
}

/// Why an action was refused: an error frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub code: ErrorCode,
    pub message: String,
    pub until: Option<u64>,
    pub retry_after_ms: Option<u64>,
}

impl Denied {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Denied {
            code,
            message: message.into(),
            until: None,
            retry_after_ms: None,
        }
    }

    pub fn frame(&self) -> Utf8Bytes {
        encode(&ServerEvent::Error {
            code: self.code,
            message: self.message.clone(),
            until: self.until,
            retry_after_ms: self.retry_after_ms,
        })
    }
}

impl Denied {
    /// The refusal of a muted person's action.
    pub fn muted(until_ms: u64) -> Self {
        let left = until_ms.saturating_sub(now_ms()).div_ceil(1000);
        let message = format!("you are muted in this room for {}", duration_text(left));
        Denied {
            until: Some(until_ms),
            ..Denied::new(ErrorCode::Muted, message)
        }
    }
}

impl From<BrokerError> for Denied {
    fn from(err: BrokerError) -> Self {
        let message = format!("the chat cannot do this right now ({err}): try again in a moment");
        Denied::new(ErrorCode::Unavailable, message)
    }
}

/// What happens to a message.
pub(super) enum Change {
    Delete,
    Edit(String),
}

/// How often a change is tried again when the message changed meanwhile.
const ATTEMPTS: usize = 5;

fn forbidden(message: &str) -> Denied {
    Denied::new(ErrorCode::Forbidden, message)
}

impl Chat {
    /// Moderation is on only with access tokens.
    pub(super) fn moderation(&self) -> bool {
        self.auth.is_some()
    }

    fn moderation_on(&self, actor: &Actor<'_>) -> Result<(), Denied> {
        if actor.trusted || self.moderation() {
            return Ok(());
        }
        Err(forbidden(
            "moderation is off on this server: it needs access tokens (CHAT_AUTH=required)",
        ))
    }

    pub(super) fn moderator(&self, actor: &Actor<'_>) -> Result<(), Denied> {
        self.moderation_on(actor)?;
        if actor.moderator {
            return Ok(());
        }
        Err(forbidden("this is for moderators"))
    }

    pub async fn delete(&self, room: &str, target: Uuid, actor: &Actor<'_>) -> Result<(), Denied> {
        self.change(room, target, Change::Delete, actor).await
    }

    pub async fn edit(
        &self,
        room: &str,
        target: Uuid,
        text: &str,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        let text = MessageText::parse(text)
            .map_err(|err| Denied::new(ErrorCode::InvalidText, err.to_string()))?;
        let change = Change::Edit(text.into_string());
        self.change(room, target, change, actor).await
    }

    /// Overwrites the stored message and appends the event saying so, in
    /// one step; read again if the message changed in between.
    pub(super) async fn change(
        &self,
        room: &str,
        target: Uuid,
        change: Change,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        self.moderation_on(actor)?;
        let not_found = || {
            Denied::new(
                ErrorCode::NotFound,
                format!("no message {target} in this room's history"),
            )
        };
        for _ in 0..ATTEMPTS {
            let old = self
                .broker
                .find(room, target)
                .await?
                .ok_or_else(not_found)?;
            let old = &old;
            let (Some((epoch, offset)), Ok(ServerEvent::Message(mut message))) =
                (stamp::position(old), serde_json::from_str(old))
            else {
                return Err(not_found());
            };
            if message.deleted {
                return Err(not_found());
            }
            may_change(&message, &change, actor)?;
            let text = match &change {
                Change::Delete => {
                    message.text.clear();
                    message.deleted = true;
                    message.edited = false;
                    None
                }
                Change::Edit(text) => {
                    message.text.clone_from(text);
                    message.edited = true;
                    Some(text.clone())
                }
            };
            (message.epoch, message.offset) = (String::new(), 0);
            let new = stamp::stamp(&encode(&ServerEvent::Message(message)), epoch, offset);
            let amendment = Amendment {
                epoch: String::new(),
                offset: 0,
                id: Uuid::new_v4(),
                target,
                by: actor.pseudo.to_owned(),
                text,
                ts: now_ms(),
            };
            let event = match change {
                Change::Delete => ServerEvent::Deleted(amendment),
                Change::Edit(_) => ServerEvent::Edited(amendment),
            };
            // An edit speaks again: mutes and slow mode hold it.
            let held = matches!(event, ServerEvent::Edited(_)) && !actor.moderator;
            let entry = Entry {
                frame: &encode(&event),
                replace: Some((old, &new)),
                author: held.then_some(Author {
                    marks: actor.marks,
                    id: actor.id,
                }),
                ..Entry::default()
            };
            match self.append(room, entry).await? {
                Appended::New(_) => return Ok(()),
                Appended::Muted { until_ms } => return Err(Denied::muted(until_ms)),
                Appended::Slowed { retry_after_ms } => {
                    let message = "slow mode: wait before changing your message";
                    return Err(Denied {
                        retry_after_ms: Some(retry_after_ms),
                        ..Denied::new(ErrorCode::SlowMode, message)
                    });
                }
                Appended::Repeat(_) | Appended::Gone | Appended::Conflict => {}
            }
        }
        let message = "the message kept changing while this was tried: try again";
        Err(Denied::new(ErrorCode::Unavailable, message))
    }

    pub async fn set_slow_mode(
        &self,
        room: &str,
        seconds: u64,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        self.moderator(actor)?;
        if seconds > MAX_SLOW_MODE_SECS {
            let message = format!("slow mode is at most {MAX_SLOW_MODE_SECS} seconds");
            return Err(Denied::new(ErrorCode::InvalidMessage, message));
        }
        self.broker.slow_mode(room, seconds).await?;
        let mut event = self.system(SystemKind::SlowMode, actor.pseudo.to_owned(), None);
        event.by = Some(actor.pseudo.to_owned());
        event.seconds = Some(seconds);
        self.publish(room, &ServerEvent::System(event)).await?;
        Ok(())
    }
}

/// The backend's messages are the backend's: it deletes them (through the
/// API), nobody else changes them. A moderator deletes any other message;
/// its author (by identity, never by name) edits or deletes it within
/// [`EDIT_WINDOW_SECS`]; nobody else touches it.
fn may_change(message: &ChatMessage, change: &Change, actor: &Actor<'_>) -> Result<(), Denied> {
    if message.server {
        return match (change, actor.trusted) {
            (Change::Delete, true) => Ok(()),
            _ => Err(forbidden(
                "messages from the server are changed by the server only",
            )),
        };
    }
    let author = !message.author_id.is_empty() && message.author_id == actor.id;
    if matches!(change, Change::Delete) && actor.moderator {
        return Ok(());
    }
    if !author {
        return Err(forbidden(match change {
            Change::Delete => "only a moderator or its author may delete a message",
            Change::Edit(_) => "only its author may edit a message",
        }));
    }
    if now_ms().saturating_sub(message.ts) > EDIT_WINDOW_SECS * 1000 {
        let message = format!(
            "a message may be changed by its author for {EDIT_WINDOW_SECS} s after it was sent"
        );
        return Err(forbidden(&message));
    }
    Ok(())
}
