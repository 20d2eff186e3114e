//! The embedded broker's room log (memory, or the data file behind it)
//! and the webhook's leases and cursors beside it.

use super::durable::Change;
use super::{Joined, MemoryBroker};
use crate::broker::{
    Appended, BrokerError, Entry, Lease, Page, Position, RoomLog, Sanction, Stored, Webhooks,
};
use crate::fanout::Topic;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use std::time::Duration;

/// The webhook's cursor in the room, as the data file keeps it.
fn cursor(room: &str, epoch: &str, offset: u64) -> Change {
    Change::Cursor {
        room: room.to_owned(),
        epoch: epoch.to_owned(),
        offset,
    }
}

#[async_trait]
impl RoomLog for MemoryBroker {
    async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        let appended = match &self.shared.0.writer {
            None => self.shared.0.streams.append(room, entry),
            Some(writer) => {
                let streams = self.shared.0.streams.clone();
                writer.append(streams, room, entry).await?
            }
        };
        if let Appended::New(frame) = &appended {
            let topic = Topic::Room(room.into());
            let wants = |joined: &Joined| joined.follows(&topic);
            self.shared.each_other(self.me.id, wants, |inbox| {
                inbox.room_event(room, frame.clone())
            });
        }
        Ok(appended)
    }

    /// The writer's queue takes each append at its first poll.
    fn appends_in_order(&self) -> bool {
        true
    }

    async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
        until_ms: Option<u64>,
    ) -> Result<(), BrokerError> {
        let changes = self
            .shared
            .0
            .streams
            .sanction(room, sanction, marks, until_ms);
        self.shared.write(changes).await
    }

    async fn sanctioned(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
    ) -> Result<Option<u64>, BrokerError> {
        Ok(self.shared.0.streams.sanctioned(room, sanction, marks))
    }

    async fn slow_mode(&self, room: &str, seconds: u64) -> Result<(), BrokerError> {
        let change = self.shared.0.streams.slow_mode(room, seconds);
        self.shared.write(vec![change]).await
    }

    async fn find(&self, room: &str, id: uuid::Uuid) -> Result<Option<Utf8Bytes>, BrokerError> {
        Ok(self.shared.0.streams.find(room, id))
    }

    async fn read(&self, room: &str) -> Result<Stored, BrokerError> {
        Ok(self.shared.0.streams.read(room))
    }

    async fn since(
        &self,
        room: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<Utf8Bytes>>, BrokerError> {
        Ok(self.shared.0.streams.since(room, after, upto))
    }

    async fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, BrokerError> {
        Ok(self.shared.0.streams.page(room, before, limit))
    }

    async fn backup(&self) -> Result<Option<std::fs::File>, BrokerError> {
        let Some(store) = self.shared.0.store.clone() else {
            return Ok(None);
        };
        let copied = tokio::task::spawn_blocking(move || store.backup()).await;
        match copied {
            Ok(Ok(file)) => Ok(Some(file)),
            Ok(Err(err)) => Err(BrokerError::Failed(format!("{err:#}"))),
            Err(err) => Err(BrokerError::Failed(format!("the copy stopped: {err}"))),
        }
    }
}

#[async_trait]
impl Webhooks for MemoryBroker {
    async fn hook_mark(&self, room: &str) -> Result<(), BrokerError> {
        if self.hooks().mark(room) {
            // Marked, nothing delivered yet: marked again after a restart.
            self.shared.write(vec![cursor(room, "", 0)]).await?;
        }
        Ok(())
    }

    async fn hook_marked(&self) -> Result<Vec<String>, BrokerError> {
        Ok(self.hooks().marked())
    }

    async fn hook_mark_of(&self, room: &str) -> Result<String, BrokerError> {
        Ok(self.hooks().mark_of(room))
    }

    async fn hook_lease(&self, room: &str, ttl: Duration) -> Result<Lease, BrokerError> {
        let Some(cursor) = self.hooks().lease(room, self.me.id, ttl) else {
            return Ok(Lease::Elsewhere);
        };
        let stored = self.shared.0.streams.stored_after(room, cursor.as_ref());
        Ok(Lease::Held { cursor, stored })
    }

    async fn hook_advance(
        &self,
        room: &str,
        delivered: &Position,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        if !self.hooks().advance(room, self.me.id, delivered, ttl) {
            return Ok(false);
        }
        let moved = cursor(room, &delivered.epoch, delivered.offset);
        self.shared.write(vec![moved]).await?;
        Ok(true)
    }

    async fn hook_release(&self, room: &str) -> Result<(), BrokerError> {
        self.hooks().release(room, self.me.id);
        Ok(())
    }

    async fn hook_settle(&self, room: &str, mark: &str) -> Result<bool, BrokerError> {
        Ok(self.hooks().settle(room, self.me.id, mark))
    }
}
