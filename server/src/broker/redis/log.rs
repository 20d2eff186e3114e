//! The Redis broker's room log and webhook leases.

use super::{broker_error, RedisBroker};
use crate::broker::retention::CATCH_UP;
use crate::broker::{
    Appended, BrokerError, Entry, Lease, Page, Position, RoomLog, Sanction, Stored, Webhooks,
};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use std::time::Duration;

#[async_trait]
impl RoomLog for RedisBroker {
    async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError> {
        self.streams.append(room, entry).await
    }

    async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
        until_ms: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.streams.sanction(room, sanction, marks, until_ms).await
    }

    async fn sanctioned(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
    ) -> Result<Option<u64>, BrokerError> {
        self.streams.sanctioned(room, sanction, marks).await
    }

    async fn slow_mode(&self, room: &str, seconds: u64) -> Result<(), BrokerError> {
        self.streams.slow_mode(room, seconds).await
    }

    async fn find(&self, room: &str, id: uuid::Uuid) -> Result<Option<Utf8Bytes>, BrokerError> {
        self.streams.find(room, id).await
    }

    async fn read(&self, room: &str) -> Result<Stored, BrokerError> {
        self.streams.read(room).await
    }

    async fn since(
        &self,
        room: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<Utf8Bytes>>, BrokerError> {
        if upto.saturating_sub(after) > CATCH_UP {
            return Ok(None);
        }
        self.streams.since(room, after, upto).await
    }

    async fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, BrokerError> {
        self.streams.page(room, before, limit).await
    }
}

#[async_trait]
impl Webhooks for RedisBroker {
    async fn hook_mark(&self, room: &str) -> Result<(), BrokerError> {
        self.reachable()?;
        self.hooks.mark(room).await.map_err(|err| self.failed(err))
    }

    // The webhook deliverer's calls: it retries by itself.
    async fn hook_marked(&self) -> Result<Vec<String>, BrokerError> {
        self.reachable()?;
        self.hooks.marked().await.map_err(broker_error)
    }

    async fn hook_mark_of(&self, room: &str) -> Result<String, BrokerError> {
        self.reachable()?;
        self.hooks.mark_of(room).await.map_err(broker_error)
    }

    async fn hook_lease(&self, room: &str, ttl: Duration) -> Result<Lease, BrokerError> {
        self.reachable()?;
        self.hooks.lease(room, ttl).await.map_err(broker_error)
    }

    async fn hook_advance(
        &self,
        room: &str,
        delivered: &Position,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.reachable()?;
        let advanced = self.hooks.advance(room, delivered, ttl).await;
        advanced.map_err(broker_error)
    }

    // Tried even while Redis looks down: it is sent once, as the instance
    // stops (when its links are being closed).
    async fn hook_release(&self, room: &str) -> Result<(), BrokerError> {
        self.hooks.release(room).await.map_err(broker_error)
    }

    async fn hook_settle(&self, room: &str, mark: &str) -> Result<bool, BrokerError> {
        self.reachable()?;
        self.hooks.settle(room, mark).await.map_err(broker_error)
    }
}
