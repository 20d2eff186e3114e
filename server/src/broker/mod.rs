//! The one seam between instances: everything that must be shared by the
//! instances of one deployment goes through a [`Broker`].
//!
//! - pub/sub: [`Broker::subscribe`] (acknowledged once frames published
//!   elsewhere reach this instance), [`Broker::publish`];
//! - room streams: [`Broker::append`] gives an event its room's next
//!   offset, stores it and publishes it in one step; [`Broker::read`];
//! - presence: members and nicknames of rooms, relay registrations, each
//!   owned by the instance that wrote them and expiring with it;
//! - webhook delivery: which rooms have events to deliver, who delivers
//!   each (a lease) and up to where (a cursor);
//! - what arrives from the other instances is handed to an [`Inbox`].
//!
//! Two implementations: [`memory`] (one process; several instances may
//! share one, which is how multi-instance behaviour is tested in
//! milliseconds) and [`redis`] (one Redis or a Redis Cluster). Nothing
//! outside `broker::redis` knows Redis exists.

pub mod envelope;
mod members;
pub mod memory;
pub mod redis;
mod sanction;
pub mod stamp;
mod status;
mod stream;

use crate::fanout::{ConnId, Hub, Topic};
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub use envelope::Envelope;
pub use members::{
    Claim, Claimed, Holder, InstanceEntry, Member, Refreshed, RelayClient, RoomEntry, RoomIndex,
    Roster, Seat,
};
pub use sanction::{record_marks, record_until, sanction_record, Sanction};
pub use status::LinkStatus;
pub use stream::{
    id_marker, owner_marker, Appended, Author, Entry, Once, Page, Position, Stored, ROOM_TTL,
};

/// Why a broker call failed. Callers decide what to do without it (serve
/// their local clients, refuse a write, retry later).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Known to be unreachable: the call was not even tried.
    #[error("the broker is unreachable")]
    Unreachable,
    /// No answer in time: the call may or may not have taken effect.
    #[error("the broker did not answer in time: {0}")]
    TimedOut(String),
    #[error("the broker failed: {0}")]
    Failed(String),
}

impl BrokerError {
    /// Whether the call may have taken effect although it failed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BrokerError::TimedOut(_))
    }
}

/// Who delivers a room's events to the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This instance, from after the room's cursor (none: nothing was
    /// delivered yet, or the broker lost it); the room's stream as stored
    /// (an implementation may leave out the events up to the cursor).
    Held {
        cursor: Option<Position>,
        stored: Stored,
    },
    /// Another instance.
    Elsewhere,
}

/// Delivers a sender's frame to every listener of the topic on every
/// instance but the sender: this instance's at once (local delivery never
/// waits for the broker), the others' through the broker. The bytes are
/// encoded once by the caller and forwarded unparsed.
pub async fn broadcast(
    broker: &dyn Broker,
    hub: &Hub,
    instance: Uuid,
    topic: &Topic,
    frame: Utf8Bytes,
    sender: ConnId,
) -> Result<(), BrokerError> {
    hub.deliver(topic, &frame, Some(sender));
    let envelope = Envelope::new(instance, Some(sender), frame);
    broker.publish(topic, envelope).await
}

/// This instance following a topic for one listener, as long as the value
/// lives.
pub struct Subscription {
    broker: Arc<dyn Broker>,
    topic: Topic,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unfollow(&self.topic);
    }
}

/// Follows `topic` and returns once frames of other instances reach this
/// one. Dropped, even while it waits (a connection closed meanwhile), it is
/// undone: every follow is matched by one unfollow.
pub async fn subscribe(broker: &Arc<dyn Broker>, topic: Topic) -> Subscription {
    broker.follow(&topic);
    let subscription = Subscription {
        broker: broker.clone(),
        topic,
    };
    subscription.broker.live(&subscription.topic).await;
    subscription
}

/// What arrives from the other instances, handed over as it comes (on the
/// broker's task: implementations must not block).
pub trait Inbox: Send + Sync {
    /// An event of a room's stream (stamped with its position), from any
    /// instance's append; possibly this instance's own again.
    fn room_event(&self, room: &str, frame: Utf8Bytes);
    /// A frame another instance published (relay frames, typing).
    fn frame(&self, topic: &Topic, envelope: &Envelope);
    /// The participants of a room changed somewhere.
    fn presence_changed(&self, room: &str);
    /// Events of the room may have been published while this instance did
    /// not follow it: they must be read back from its stream.
    fn missed(&self, room: &str);
    /// The link to the other instances came back: counts may have changed.
    fn reconnected(&self);
}

#[async_trait]
pub trait Broker: Send + Sync {
    /// How this deployment shares its state, for logs and `/healthz`.
    fn mode(&self) -> Mode;

    /// Whether the broker answers, as its users last found out.
    fn status(&self) -> &LinkStatus;

    /// Whether entries this instance leaves behind outlive it (other
    /// instances share them), so that a clean stop must remove them.
    fn shared(&self) -> bool;

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

    /// Appends an encoded event to the room's stream and publishes it to
    /// every instance, in one step with the entry's conditions (see
    /// [`Entry`]); returns it stamped with its position.
    async fn append(&self, room: &str, entry: Entry<'_>) -> Result<Appended, BrokerError>;

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

    /// Who holds the nickname (by its key) in the room.
    async fn holder(&self, room: &str, key: &str) -> Result<Option<Holder>, BrokerError>;

    async fn read(&self, room: &str) -> Result<Stored, BrokerError>;

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

    /// Records a room's line in the room list (removes it when empty).
    async fn index_room(&self, room: &str, entry: RoomEntry) -> Result<(), BrokerError>;

    /// The room list's fresh entries; stale ones are dropped and named.
    async fn room_index(&self, now_ms: u64) -> Result<RoomIndex, BrokerError>;

    /// Records this instance's line in the list of live instances.
    async fn announce(&self, entry: &InstanceEntry) -> Result<(), BrokerError>;

    /// The live instances (stale lines are dropped).
    async fn instances(&self, now_ms: u64) -> Result<Vec<InstanceEntry>, BrokerError>;

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

    /// Checks that the broker answers.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// How the instances of a deployment share their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In this process's memory (the embedded default).
    Memory,
    /// One Redis.
    Redis,
    /// A Redis Cluster (sharded pub/sub).
    Cluster,
}
