//! The one seam between instances: everything that must be shared by the
//! instances of one deployment goes through a [`Broker`], which is one
//! trait per role ([`roles`]):
//!
//! - [`PubSub`]: [`subscribe`] (acknowledged once frames published
//!   elsewhere reach this instance), [`PubSub::publish`];
//! - [`RoomLog`]: [`RoomLog::append`] gives an event its room's next
//!   offset, stores it and publishes it in one step; reads, pages,
//!   retention ([`retention`]), sanctions and slow mode;
//! - [`Presence`]: members and nicknames of rooms, relay registrations,
//!   each owned by the instance that wrote them and expiring with it;
//! - [`Directory`]: the room list and the live instances;
//! - [`Webhooks`]: which rooms have events to deliver, who delivers each
//!   (a lease) and up to where (a cursor);
//! - [`Link`]: the mode and whether it answers;
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
pub mod retention;
pub mod roles;
mod sanction;
pub mod stamp;
mod status;
mod stream;

use crate::fanout::{ConnId, Hub, Topic};
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use uuid::Uuid;

pub use envelope::Envelope;
pub use members::{
    Claim, Claimed, Holder, InstanceEntry, Member, Refreshed, RelayClient, RoomEntry, RoomIndex,
    Roster, Seat,
};
pub use roles::{Directory, Link, Presence, PubSub, RoomLog, Webhooks};
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
    /// Published, but fewer instances received it than follow the topic.
    #[error(
        "{0} other server(s) following it may have missed it while their link to Redis recovers"
    )]
    Missed(usize),
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

/// Everything instances share, by role ([`roles`]): what the rest of the
/// server holds (`Arc<dyn Broker>`), whichever backend implements the roles.
pub trait Broker: Link + PubSub + RoomLog + Presence + Directory + Webhooks {}

impl<T: Link + PubSub + RoomLog + Presence + Directory + Webhooks> Broker for T {}

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
