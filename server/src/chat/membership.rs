//! Joining a room under a nickname and changing it: one live owner per
//! nickname, bans checked on every mark of the person, no rename while
//! muted (a new name is no new voice).

use super::super::control::Removal;
use super::super::encode;
use super::super::moderation::Denied;
use super::ChatSession;
use crate::broker::{Claim, Member, Sanction};
use crate::fanout::{CloseReason, ConnId};
use app::protocol::{ErrorCode, Pseudo, ServerEvent, SystemKind, DEFAULT_ROOM};
use std::sync::Arc;
use uuid::Uuid;

impl ChatSession {
    fn confirm(&self, member: &Member) {
        self.peer.send(encode(&ServerEvent::Joined {
            pseudo: member.pseudo.to_string(),
            session: member.session,
            room: self.room().to_owned(),
            moderation: self.chat.moderation(),
            moderator: self.moderator && self.chat.moderation(),
        }));
    }

    /// The connection that gave way to this one (same session, same
    /// nickname) is told and closed, wherever it is: one live owner per
    /// nickname.
    async fn replaced(&self, replaced: Option<ConnId>) {
        if let Some(conn) = replaced {
            let last = encode(&ServerEvent::Replaced);
            self.chat
                .remove(self.room(), conn, Removal::Replaced, last)
                .await;
        }
    }

    /// The member as this connection's person makes it.
    fn member(&self, pseudo: Pseudo, session: Uuid) -> Arc<Member> {
        let id = self.person.author_id(session);
        let address = self.person.address().unwrap_or_default();
        Arc::new(Member::new(pseudo, session).by(id, address))
    }

    /// Lists this connection under the member's marks too (an anonymous
    /// member's nickname and identity), so that a ban of them closes it.
    fn list(&mut self, member: &Member) {
        let marks = self.member_marks(member);
        self.peer.mark(marks);
    }

    pub(super) async fn join(&mut self, raw: &str, session: Uuid) -> Option<CloseReason> {
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
            (Some(name), _) => Pseudo::clone(name),
            (None, Ok(pseudo)) => pseudo,
            (None, Err(err)) => {
                self.refuse(ErrorCode::InvalidPseudo, err.to_string());
                return None;
            }
        };
        let member = self.member(pseudo, session);
        if let Some(denied) = self
            .chat
            .refusal(self.room(), &self.member_marks(&member))
            .await
        {
            self.deny(&denied);
            return Some(crate::fanout::close::BANNED);
        }
        // Recorded before any await, so that a connection cut short from
        // here on still releases the nickname when it closes (releasing one
        // it never got is harmless).
        self.member = Some(member.clone());
        let chat = self.chat.clone();
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
            && self.room() != DEFAULT_ROOM
            && chat.new_rooms.check_key(&self.address).is_err()
        {
            self.member = None;
            chat.presence.leave(self.seat(&member)).await;
            chat.presence_changed(self.room()).await;
            let message = "too many new rooms from your address: try again in a minute";
            self.refuse(ErrorCode::TooManyRooms, message.into());
            return None;
        }
        self.list(&member);
        self.confirm(&member);
        self.replaced(replaced).await;
        tracing::info!(conn = %self.id, room = self.room(), pseudo = %member.pseudo, ?claim, "joined");
        // A reclaim is the same person back on a new connection: not news.
        if matches!(claim, Claim::Joined | Claim::Opened) {
            let pseudo = member.pseudo.as_str();
            chat.arrival(self.room(), SystemKind::Joined, pseudo).await;
        }
        chat.presence_changed(self.room()).await;
        None
    }

    /// Until when the member is muted in the room, if they are. While the
    /// broker does not answer, they are not held (the append that stores
    /// a message checks again).
    pub(super) async fn muted(&self, member: &Member) -> Option<Denied> {
        let marks = self.member_marks(member);
        let until = match self
            .chat
            .broker
            .sanctioned(self.room(), Sanction::Mute, &marks)
            .await
        {
            Ok(until) => until?,
            Err(err) => {
                tracing::debug!(room = self.room(), error = %err, "cannot check mutes");
                return None;
            }
        };
        Some(Denied::muted(until))
    }

    pub(super) async fn rename(&mut self, raw: &str) {
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
        if let Some(denied) = self.muted(&current).await {
            return self.deny(&denied);
        }
        let member = self.member(pseudo, current.session);
        // A name banned here is not taken by renaming either.
        if let Some(denied) = self
            .chat
            .refusal(self.room(), &self.member_marks(&member))
            .await
        {
            return self.deny(&denied);
        }
        let chat = self.chat.clone();
        let previous = Some(current.key.as_str());
        let (claim, replaced) = chat.presence.claim(self.seat(&member), previous).await;
        if claim == Claim::Taken {
            let message = format!("the nickname {} is taken in this room", member.pseudo);
            return self.refuse(ErrorCode::PseudoTaken, message);
        }
        self.member = Some(member.clone());
        self.list(&member);
        self.confirm(&member);
        self.replaced(replaced).await;
        let previous = Some(current.pseudo.to_string());
        let renamed = chat.system(SystemKind::Renamed, member.pseudo.to_string(), previous);
        chat.announce(self.room(), &ServerEvent::System(renamed))
            .await;
    }
}
