//! What a broker does, by role. A backend implements each role it has;
//! [`super::Broker`] is all of them together. The embedded default builds
//! its room log on the data file (or memory) beside in-memory pub/sub and
//! presence; Redis does all of them with one connection pool.

use super::{
    Appended, BrokerError, Claimed, Entry, Envelope, Holder, InstanceEntry, Lease, LinkStatus,
    Mode, Page, Position, Refreshed, RelayClient, RoomEntry, RoomIndex, Roster, Sanction, Seat,
    Stored,
};
use crate::fanout::{ConnId, Topic};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use std::time::Duration;
use uuid::Uuid;

/// The link to the shared state: what kind it is and whether it answers.
#[async_trait]
pub trait Link: Send + Sync {
    /// How this deployment shares its state, for logs and `/healthz`.
    fn mode(&self) -> Mode;

    /// Whether the broker answers, as its users last found out.
    fn status(&self) -> &LinkStatus;

    /// Whether entries this instance leaves behind outlive it (other
    /// instances share them), so that a clean stop must remove them.
    fn shared(&self) -> bool;

    /// Checks that the broker answers.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Frames between instances: following topics and publishing to them.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Follows the topic once more, from now until as many
    /// [`Broker::unfollow`]. Callers use [`subscribe`], which also waits
    /// for it to be live and undoes it however it ends.
    fn follow(&self, topic: &Topic);

    /// Returns once frames published by other instances on a followed
    /// topic reach this one (or after a bounded wait while the broker is
    /// down; the subscription is made when it answers again, and
    /// [`Inbox::missed`] says so). Every follower waits, not only the
    /// first: the second must not go ahead of the first one's subscription.
    async fn live(&self, topic: &Topic);

    fn unfollow(&self, topic: &Topic);

    /// Hands a frame to the other instances following the topic.
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<(), BrokerError>;

    /// Tells every instance that the participants of a room changed.
    async fn presence_changed(&self, room: &str);
}

/// Each room's log: appending events (with their conditions: sanctions,
/// slow mode, once-only ids, replacements), reading them back (the
/// history, catch-up, scroll-back pages), and the sanctions and slow mode
/// the appends check.
#[async_trait]
pub trait RoomLog: Send + Sync {
    /// Appends an encoded event to the room's stream and publishes it to
    /// every instance, in one step with the entry's conditions (see
    /// [`Entry`]); returns it stamped with its position.
    async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError>;

    /// Whether an append is queued, behind every append queued before it,
    /// in the first poll of its future: a connection may then start its
    /// next message before the last one is answered. Redis gives no such
    /// promise (a script may be sent again after `NOSCRIPT`).
    fn appends_in_order(&self) -> bool {
        false
    }

    /// Holds a participant, by every one of their `marks`
    /// (`crate::identity`), to a sanction in the room until `until_ms` (ms
    /// since the Unix epoch); it expires by itself. `None` lifts it: from
    /// these marks and from every mark recorded with any of them.
    async fn sanction(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
        until_ms: Option<u64>,
    ) -> Result<(), BrokerError>;

    /// Until when the sanction holds somebody with any of these marks in
    /// the room, if it does (the latest end of those found).
    async fn sanctioned(
        &self,
        room: &str,
        sanction: Sanction,
        marks: &[String],
    ) -> Result<Option<u64>, BrokerError>;

    /// One message per `seconds` per author in the room (0 ends it).
    async fn slow_mode(&self, room: &str, seconds: u64) -> Result<(), BrokerError>;

    async fn read(&self, room: &str) -> Result<Stored, BrokerError>;

    /// The retained event with this id, as stored now (a message to edit
    /// or delete). By default from what [`RoomLog::read`] holds.
    async fn find(&self, room: &str, id: Uuid) -> Result<Option<Utf8Bytes>, BrokerError> {
        let marker = super::id_marker(id);
        let stored = self.read(room).await?;
        Ok(stored.events.into_iter().find(|e| e.contains(&marker)))
    }

    /// The room's events after offset `after` up to `upto`, when this
    /// broker keeps more than [`Broker::read`] holds (the embedded
    /// default's data file); `None` otherwise, or when it does not hold
    /// them all.
    async fn since(
        &self,
        _room: &str,
        _after: u64,
        _upto: u64,
    ) -> Result<Option<Vec<Utf8Bytes>>, BrokerError> {
        Ok(None)
    }

    /// Up to `limit` of the room's newest retained events with an offset
    /// below `before`, oldest first (scroll-back). By default from what
    /// [`Broker::read`] holds.
    async fn page(&self, room: &str, before: u64, limit: usize) -> Result<Page, BrokerError> {
        Ok(Page::of(self.read(room).await?, before, limit))
    }

    /// A consistent copy of the rooms' data file, open and already
    /// unlinked; `None` when this broker keeps none (Redis, or memory
    /// alone).
    async fn backup(&self) -> Result<Option<std::fs::File>, BrokerError> {
        Ok(None)
    }
}

/// Who is where: the members and nicknames of rooms, the relay clients of
/// actions, each owned by the instance that wrote them and expiring with
/// it.
#[async_trait]
pub trait Presence: Send + Sync {
    /// Who holds the nickname (by its key) in the room.
    async fn holder(&self, room: &str, key: &str) -> Result<Option<Holder>, BrokerError>;

    /// Takes the member's nickname in the room for the connection;
    /// `previous_key` is the key of the nickname it replaces on a rename.
    async fn claim(
        &self,
        seat: Seat<'_>,
        previous_key: Option<&str>,
    ) -> Result<Claimed, BrokerError>;

    /// True if the connection was still the member (not replaced or swept).
    /// `last_here`: this instance has no other member in the room.
    async fn leave(&self, seat: Seat<'_>, last_here: bool) -> Result<bool, BrokerError>;

    /// The room's participant count and up to `shown` of their nicknames.
    async fn roster(&self, room: &str, shown: usize) -> Result<Roster, BrokerError>;

    async fn refresh_room(&self, room: &str) -> Result<Refreshed, BrokerError>;

    /// Removes every member this instance has in the room; returns their
    /// nicknames.
    async fn depart_room(&self, room: &str) -> Result<Vec<String>, BrokerError>;

    /// Records a relay client under its action, with `data`, its
    /// registration message.
    async fn register(&self, action: &str, id: ConnId, data: &str) -> Result<(), BrokerError>;

    /// `last`: this instance has no other client of the action.
    async fn unregister(&self, action: &str, id: ConnId, last: bool) -> Result<(), BrokerError>;

    async fn refresh_action(&self, action: &str) -> Result<Refreshed, BrokerError>;

    /// The registered clients of the action, on every instance.
    async fn relay_clients(&self, action: &str) -> Result<Vec<RelayClient>, BrokerError>;

    async fn depart_action(&self, action: &str) -> Result<(), BrokerError>;
}

/// The lists every instance reads: the rooms, and the live instances.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Records a room's line in the room list (removes it when empty).
    async fn index_room(&self, room: &str, entry: RoomEntry) -> Result<(), BrokerError>;

    /// The room list's fresh entries; stale ones are dropped and named.
    async fn room_index(&self, now_ms: u64) -> Result<RoomIndex, BrokerError>;

    /// Records this instance's line in the list of live instances.
    async fn announce(&self, entry: &InstanceEntry) -> Result<(), BrokerError>;

    /// The live instances (stale lines are dropped).
    async fn instances(&self, now_ms: u64) -> Result<Vec<InstanceEntry>, BrokerError>;
}

/// Webhook delivery: which rooms have events to deliver, who delivers
/// each (a lease) and up to where (a cursor).
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Marks the room as having events the webhook may not have had yet:
    /// done before each append, so that no appended event goes unmarked.
    /// Each mark is unique (a new one replaces the last).
    async fn hook_mark(&self, room: &str) -> Result<(), BrokerError>;

    /// The marked rooms.
    async fn hook_marked(&self) -> Result<Vec<String>, BrokerError>;

    /// The room's current mark (empty: not marked).
    async fn hook_mark_of(&self, room: &str) -> Result<String, BrokerError>;

    /// Takes the room's delivery lease for this instance, or keeps it, for
    /// `ttl` more, and reads the room's stream in the same step.
    async fn hook_lease(&self, room: &str, ttl: Duration) -> Result<Lease, BrokerError>;

    /// Moves the room's cursor to `delivered` and keeps the lease `ttl`
    /// more; false (nothing done) when this instance no longer holds it.
    async fn hook_advance(
        &self,
        room: &str,
        delivered: &Position,
        ttl: Duration,
    ) -> Result<bool, BrokerError>;

    /// Gives the room's delivery lease back if this instance holds it (it
    /// stops), so that another instance takes the room over at once.
    async fn hook_release(&self, room: &str) -> Result<(), BrokerError>;

    /// Once everything was delivered: removes the room's mark unless it
    /// was marked again since `mark` was read, and then gives the lease
    /// back. False when it was marked again (the lease is kept).
    async fn hook_settle(&self, room: &str, mark: &str) -> Result<bool, BrokerError>;
}
