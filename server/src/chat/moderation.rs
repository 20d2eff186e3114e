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
//! only then is a nickname somebody's, so that "the author" and "a
//! moderator" (the token's `roles` claim) mean something. The server API
//! moderates either way.

use super::control::Removal;
use super::{encode, Chat};
use crate::broker::{id_marker, stamp, Appended, BrokerError, Entry, Member, Sanction, Seat};
use crate::clock::now_ms;
use crate::fanout::ConnId;
use crate::nickname;
use app::protocol::{
    duration_text, Amendment, ChatMessage, ErrorCode, MessageText, Pseudo, ServerEvent, SystemKind,
    EDIT_WINDOW_SECS, MAX_REDACT_MINUTES, MAX_SANCTION_SECS, MAX_SLOW_MODE_SECS,
};
use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

/// Who acts.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub pseudo: &'a str,
    /// The nickname's key (`nickname::key`).
    pub key: &'a str,
    pub moderator: bool,
    /// The backend, through the server API: it moderates whether or not
    /// chat access tokens are on.
    pub trusted: bool,
}

impl Actor<'static> {
    /// The server API.
    pub const SERVER: Actor<'static> = Actor {
        pseudo: "server",
        key: "",
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

impl From<BrokerError> for Denied {
    fn from(err: BrokerError) -> Self {
        let message = format!("the chat cannot do this right now ({err}): try again in a moment");
        Denied::new(ErrorCode::Unavailable, message)
    }
}

/// What happens to a message.
enum Change {
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

    fn moderator(&self, actor: &Actor<'_>) -> Result<(), Denied> {
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
    async fn change(
        &self,
        room: &str,
        target: Uuid,
        change: Change,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        self.moderation_on(actor)?;
        let marker = id_marker(target);
        let not_found = || {
            Denied::new(
                ErrorCode::NotFound,
                format!("no message {target} in this room's recent history"),
            )
        };
        for _ in 0..ATTEMPTS {
            let stored = self.broker.read(room).await?;
            let old = stored
                .events
                .iter()
                .find(|frame| frame.contains(&marker))
                .ok_or_else(not_found)?;
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
            let entry = Entry {
                frame: &encode(&event),
                replace: Some((old, &new)),
                ..Entry::default()
            };
            if let Appended::New(_) = self.append(room, entry).await? {
                return Ok(());
            }
        }
        let message = "the message kept changing while this was tried: try again";
        Err(Denied::new(ErrorCode::Unavailable, message))
    }

    /// Closes the participant's connection (any instance), and says so in
    /// the stream.
    pub async fn kick(&self, room: &str, raw: &str, actor: &Actor<'_>) -> Result<(), Denied> {
        self.moderator(actor)?;
        let (pseudo, key) = target(raw)?;
        let conn = self.broker.holder(room, &key).await?.ok_or_else(|| {
            Denied::new(
                ErrorCode::NotFound,
                format!("nobody is called {pseudo} in this room"),
            )
        })?;
        self.evict(room, conn, &pseudo).await?;
        self.moderation_event(room, SystemKind::Kicked, &pseudo, actor, None)
            .await?;
        let last = Denied::new(
            ErrorCode::Kicked,
            format!("you were removed from the room by {}", actor.pseudo),
        );
        self.remove(room, conn, Removal::Kicked, last.frame()).await;
        Ok(())
    }

    /// Bans (`Sanction::Ban`: closes the participant's connection and keeps
    /// them out) or mutes for `seconds`, or lifts it (0); a ban may also
    /// delete the participant's messages of the last `redact_minutes`.
    pub async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        raw: &str,
        seconds: u64,
        redact_minutes: u64,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        self.moderator(actor)?;
        let (pseudo, key) = target(raw)?;
        if seconds > MAX_SANCTION_SECS || redact_minutes > MAX_REDACT_MINUTES {
            let message = format!(
                "seconds must be at most {MAX_SANCTION_SECS} and redact_minutes at most {MAX_REDACT_MINUTES}"
            );
            return Err(Denied::new(ErrorCode::InvalidMessage, message));
        }
        let until = (seconds > 0).then(|| now_ms() + seconds * 1000);
        self.broker.sanction(room, sanction, &key, until).await?;
        let kind = match sanction {
            Sanction::Ban => SystemKind::Banned,
            Sanction::Mute => SystemKind::Muted,
        };
        self.moderation_event(room, kind, &pseudo, actor, until)
            .await?;
        if let (Sanction::Ban, Some(until)) = (sanction, until) {
            if let Some(conn) = self.broker.holder(room, &key).await? {
                self.evict(room, conn, &pseudo).await?;
                let last = Denied {
                    until: Some(until),
                    ..Denied::new(
                        ErrorCode::Banned,
                        format!(
                            "you were banned from the room by {} for {}",
                            actor.pseudo,
                            duration_text(seconds)
                        ),
                    )
                };
                self.remove(room, conn, Removal::Banned, last.frame()).await;
            }
            if redact_minutes > 0 {
                self.redact(room, &key, redact_minutes, actor).await?;
            }
        }
        Ok(())
    }

    /// Deletes the participant's messages of the last minutes still in the
    /// history.
    async fn redact(
        &self,
        room: &str,
        key: &str,
        minutes: u64,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        let since = now_ms().saturating_sub(minutes * 60_000);
        let stored = self.broker.read(room).await?;
        let theirs = stored.events.iter().filter_map(|frame| {
            match serde_json::from_str::<ServerEvent>(frame) {
                Ok(ServerEvent::Message(m)) if !m.deleted && m.ts >= since => Some(m),
                _ => None,
            }
        });
        for message in theirs.filter(|m| author_key(m).as_deref() == Some(key)) {
            match self.change(room, message.id, Change::Delete, actor).await {
                Ok(()) => {}
                // Deleted by somebody else meanwhile, or gone from history.
                Err(denied) if denied.code == ErrorCode::NotFound => {}
                Err(denied) => return Err(denied),
            }
        }
        Ok(())
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

    /// Takes the nickname from its connection at once (which closes soon
    /// after, on its instance): the room counts one fewer, the person may
    /// come back at once after a kick, and the closing connection is not
    /// announced as having left: the moderation event says what happened.
    async fn evict(&self, room: &str, conn: ConnId, pseudo: &Pseudo) -> Result<(), Denied> {
        let member = Member::new(pseudo.clone(), Uuid::nil());
        let seat = Seat {
            room,
            conn,
            member: &member,
        };
        self.broker.leave(seat, false).await?;
        self.presence_changed(room).await;
        Ok(())
    }

    async fn moderation_event(
        &self,
        room: &str,
        kind: SystemKind,
        pseudo: &Pseudo,
        actor: &Actor<'_>,
        until: Option<u64>,
    ) -> Result<(), Denied> {
        let mut event = self.system(kind, pseudo.to_string(), None);
        event.by = Some(actor.pseudo.to_owned());
        event.until = until;
        self.publish(room, &ServerEvent::System(event)).await?;
        Ok(())
    }
}

/// The nickname an action names, and its key.
fn target(raw: &str) -> Result<(Pseudo, String), Denied> {
    let pseudo =
        Pseudo::parse(raw).map_err(|err| Denied::new(ErrorCode::InvalidPseudo, err.to_string()))?;
    let key = nickname::key(&pseudo);
    Ok((pseudo, key))
}

fn author_key(message: &ChatMessage) -> Option<String> {
    Pseudo::parse(&message.author)
        .ok()
        .map(|pseudo| nickname::key(&pseudo))
}

/// A moderator deletes any message; its author edits or deletes it within
/// [`EDIT_WINDOW_SECS`]; nobody else touches it.
fn may_change(message: &ChatMessage, change: &Change, actor: &Actor<'_>) -> Result<(), Denied> {
    let author = author_key(message).as_deref() == Some(actor.key);
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
