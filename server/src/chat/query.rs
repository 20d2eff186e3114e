//! The chat as the server API sees it: rooms, one room's state and
//! history, and messages posted by the backend.

use super::resume::{self, Resume, Snapshot};
use super::{encode, Chat};
use crate::broker::{owner_marker, Appended, BrokerError, Entry, Once, Page};
use crate::clock::now_ms;
use app::protocol::{
    ChatMessage, MessageText, Position, Pseudo, RoomSummary, ServerEvent, ONLINE_SHOWN,
};
use uuid::Uuid;

/// One room now.
pub struct RoomState {
    /// Participants on every instance.
    pub count: u64,
    /// Up to [`ONLINE_SHOWN`] of their nicknames.
    pub online: Vec<String>,
    /// The stream's epoch and newest offset.
    pub epoch: String,
    pub offset: u64,
}

impl Chat {
    /// The rooms with participants, busiest first.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, BrokerError> {
        self.presence.busiest_rooms(usize::MAX, now_ms()).await
    }

    pub async fn room_state(&self, room: &str) -> Result<RoomState, BrokerError> {
        let stored = self.broker.read(room).await?;
        let roster = self.presence.roster(room, ONLINE_SHOWN).await;
        Ok(RoomState {
            count: roster.count,
            online: roster.names,
            epoch: stored.epoch,
            offset: stored.offset,
        })
    }

    /// The room's stored events after `since` (all it holds without), with
    /// `recovered` as a reconnecting client gets it.
    pub async fn history(
        &self,
        room: &str,
        since: Option<Position>,
    ) -> Result<Snapshot, BrokerError> {
        let stored = self.broker.read(room).await?;
        let from = since.map_or(Resume::Latest, Resume::Since);
        Ok(resume::resume(stored, &from))
    }

    /// Scroll-back: up to `limit` of the room's newest retained events
    /// with an offset below `before`.
    pub async fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, BrokerError> {
        self.broker.page(room, before, limit).await
    }

    /// Appends a message from the backend, under the name it gives; with
    /// an `id`, once (see [`Entry::once`]). Returns the stored event, or
    /// `None` when a participant's message has the id.
    pub async fn post(
        &self,
        room: &str,
        author: &Pseudo,
        text: MessageText,
        id: Option<Uuid>,
    ) -> Result<Option<String>, BrokerError> {
        let message = ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: id.unwrap_or_else(Uuid::new_v4),
            author: author.to_string(),
            author_id: String::new(),
            text: text.into_string(),
            ts: now_ms(),
            deleted: false,
            edited: false,
            server: true,
        };
        let frame = encode(&ServerEvent::Message(message));
        let owner = owner_marker("");
        let entry = Entry {
            frame: &frame,
            once: id.map(|id| Once { id, owner: &owner }),
            ..Entry::default()
        };
        match self.append(room, entry).await? {
            Appended::New(stored) | Appended::Repeat(stored) => Ok(Some(stored.to_string())),
            Appended::Conflict => Ok(None),
            // No author to hold, nothing to overwrite.
            held => Err(BrokerError::Failed(format!("unexpected answer {held:?}"))),
        }
    }
}
