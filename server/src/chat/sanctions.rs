//! Sanctions kept in the room's stream: kicking, banning (with optional
//! redaction) and muting a participant. A sanction names a nickname; it
//! holds the person behind it, by every mark the room knows of them
//! (`crate::identity`): with access tokens their subject, without their
//! nickname (and look-alikes), their anonymous identity and their address.

use super::control::Removal;
use super::moderation::{Actor, Change, Denied};
use super::Chat;
use crate::broker::{Member, Sanction, Seat};
use crate::clock::now_ms;
use crate::fanout::ConnId;
use crate::identity;
use crate::nickname;
use app::protocol::{
    duration_text, ChatMessage, ErrorCode, Pseudo, ServerEvent, SystemKind, MAX_REDACT_MINUTES,
    MAX_SANCTION_SECS,
};
use std::sync::Arc;
use uuid::Uuid;

/// Who a sanction names, as far as the room knows them.
struct Held {
    /// The name, and the connection holding it if somebody does.
    name: Option<Pseudo>,
    conn: Option<ConnId>,
    /// Their author identity, if known.
    id: Option<String>,
    marks: Vec<String>,
}

/// Whom a ban or mute names.
#[derive(Debug, Clone, Copy)]
pub enum Named<'a> {
    /// A nickname in the room (or in its recent history).
    Pseudo(&'a str),
    /// A token subject (the server API, with chat tokens on), whether or
    /// not it was ever here.
    Subject(&'a str),
}

impl Chat {
    /// Closes the participant's connection (any instance), and says so in
    /// the stream.
    pub async fn kick(&self, room: &str, raw: &str, actor: &Actor<'_>) -> Result<(), Denied> {
        self.moderator(actor)?;
        let (pseudo, key) = target(raw)?;
        let holder = self.broker.holder(room, &key).await?.ok_or_else(|| {
            Denied::new(
                ErrorCode::NotFound,
                format!("nobody is called {pseudo} in this room"),
            )
        })?;
        let conn = holder.conn;
        self.evict(room, conn, &pseudo).await?;
        self.moderation_event(room, SystemKind::Kicked, pseudo.as_str(), actor, None)
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
        named: Named<'_>,
        seconds: u64,
        redact_minutes: u64,
        actor: &Actor<'_>,
    ) -> Result<(), Denied> {
        self.moderator(actor)?;
        if seconds > MAX_SANCTION_SECS || redact_minutes > MAX_REDACT_MINUTES {
            let message = format!(
                "seconds must be at most {MAX_SANCTION_SECS} and redact_minutes at most {MAX_REDACT_MINUTES}"
            );
            return Err(Denied::new(ErrorCode::InvalidMessage, message));
        }
        let (pseudo, held) = match named {
            Named::Pseudo(raw) => {
                let (pseudo, key) = target(raw)?;
                let held = self.held(room, &pseudo, &key).await?;
                (pseudo.to_string(), held)
            }
            Named::Subject(sub) if self.moderation() && !sub.is_empty() => {
                let held = Held {
                    name: None,
                    conn: None,
                    id: Some(sub.to_owned()),
                    marks: vec![identity::subject_mark(sub)],
                };
                (sub.to_owned(), held)
            }
            Named::Subject(_) => {
                let message =
                    "a subject names somebody only with chat access tokens (CHAT_AUTH=required)";
                return Err(Denied::new(ErrorCode::InvalidMessage, message));
            }
        };
        let until = (seconds > 0).then(|| now_ms() + seconds * 1000);
        if until.is_some() && self.moderation() && held.id.is_none() {
            // With tokens a sanction holds a subject, not a name.
            let message = format!(
                "nobody called {pseudo} is in this room or its recent history: name their subject instead (server API)"
            );
            return Err(Denied::new(ErrorCode::NotFound, message));
        }
        self.broker
            .sanction(room, sanction, &held.marks, until)
            .await?;
        let kind = match sanction {
            Sanction::Ban => SystemKind::Banned,
            Sanction::Mute => SystemKind::Muted,
        };
        self.moderation_event(room, kind, &pseudo, actor, until)
            .await?;
        if let (Sanction::Ban, Some(until)) = (sanction, until) {
            if let (Some(conn), Some(name)) = (held.conn, &held.name) {
                self.evict(room, conn, name).await?;
            }
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
            // Every connection of theirs in the room, reading or not.
            self.expel(room, held.marks.clone(), last.frame());
            if let (true, Some(id)) = (redact_minutes > 0, &held.id) {
                self.redact(room, id, redact_minutes, actor).await?;
            }
        }
        Ok(())
    }

    /// Who the nickname is: its holder if somebody holds it, else the
    /// author of its latest message in the history; and the marks a
    /// sanction of them is recorded under.
    async fn held(&self, room: &str, pseudo: &Pseudo, key: &str) -> Result<Held, Denied> {
        let (conn, id, address) = match self.broker.holder(room, key).await? {
            Some(holder) => (Some(holder.conn), Some(holder.id), Some(holder.address)),
            None => (None, self.last_author(room, pseudo).await?, None),
        };
        let id = id.filter(|id| !id.is_empty());
        let subjects = self.moderation();
        let marks = identity::target_marks(key, id.as_deref(), address.as_deref(), subjects);
        let name = Some(pseudo.clone());
        Ok(Held {
            name,
            conn,
            id,
            marks,
        })
    }

    /// The author identity of the latest message in the room's history
    /// sent under a name that reads as `pseudo`.
    async fn last_author(&self, room: &str, pseudo: &Pseudo) -> Result<Option<String>, Denied> {
        let key = nickname::key(pseudo);
        let stored = self.broker.read(room).await?;
        let latest = stored.events.iter().rev().find_map(|frame| {
            match serde_json::from_str::<ServerEvent>(frame) {
                Ok(ServerEvent::Message(m))
                    if !m.server && author_key(&m).as_deref() == Some(&key) =>
                {
                    Some(m.author_id)
                }
                _ => None,
            }
        });
        Ok(latest)
    }

    /// Deletes the participant's messages of the last minutes still in the
    /// history.
    async fn redact(
        &self,
        room: &str,
        author_id: &str,
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
        for message in theirs.filter(|m| m.author_id == author_id) {
            match self.change(room, message.id, Change::Delete, actor).await {
                Ok(()) => {}
                // Deleted by somebody else meanwhile, or gone from history.
                Err(denied) if denied.code == ErrorCode::NotFound => {}
                Err(denied) => return Err(denied),
            }
        }
        Ok(())
    }

    /// Takes the nickname from its connection at once (which closes soon
    /// after, on its instance): the room counts one fewer, the person may
    /// come back at once after a kick, and the closing connection is not
    /// announced as having left: the moderation event says what happened.
    async fn evict(&self, room: &str, conn: ConnId, pseudo: &Pseudo) -> Result<(), Denied> {
        let member = Arc::new(Member::new(pseudo.clone(), Uuid::nil()));
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
        pseudo: &str,
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
