//! The broker on Redis: one standalone Redis, or a Redis Cluster (sharded
//! pub/sub, every key and channel of a room or action under one hash tag).
//!
//! - [`client`]: the connection from `REDIS_URL` (TLS, credentials, cluster
//!   detection) and its printable form;
//! - [`keys`]: every key and channel name;
//! - [`pubsub`]: publishing, and the subscription link ([`subscriber`]),
//!   kept equal to what the instance follows through reconnects and
//!   failovers;
//! - [`streams`]: room streams (the append script assigns the offset,
//!   stores and publishes in one step);
//! - [`presence`]: members, nicknames, relay registrations and the room
//!   list, as Lua scripts on one room's or action's keys;
//! - [`hooks`]: webhook delivery state (marked rooms, leases, cursors);
//! - [`recovery`]: notices at once that Redis answers again.

pub mod client;
mod hooks;
pub mod keys;
mod link;
mod presence;
mod pubsub;
mod recovery;
mod streams;
mod subscriber;

use super::{
    Appended, Broker, BrokerError, Claimed, Entry, Envelope, Holder, Inbox, InstanceEntry, Lease,
    LinkStatus, Mode, Position, Refreshed, RelayClient, RoomEntry, RoomIndex, Roster, Sanction,
    Seat, Stored,
};
use crate::fanout::{ConnId, Topic};
use crate::supervise::{self, Restarts};
use async_trait::async_trait;
use client::{redact, Target};
use hooks::RedisHooks;
use keys::Keys;
use presence::RedisPresence;
use pubsub::{Common, PubSub};
use recovery::Recovery;
use redis::RedisError;
use std::sync::Arc;
use std::time::Duration;
use streams::RedisStreams;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the Redis broker is built from.
pub struct Settings<'a> {
    pub url: &'a str,
    pub ca_cert: &'a str,
    /// REDIS_PREFIX: every key and channel starts with it.
    pub prefix: &'a str,
    pub instance: Uuid,
    /// How long this instance's entries live without a refresh.
    pub ttl: Duration,
}

pub struct RedisBroker {
    mode: Mode,
    status: Arc<LinkStatus>,
    pubsub: PubSub,
    streams: RedisStreams,
    presence: RedisPresence,
    hooks: RedisHooks,
}

impl RedisBroker {
    /// Connects (lazily: an unreachable Redis does not stop the start) and
    /// runs the subscription tasks, supervised, until `shutdown`.
    pub async fn start(
        settings: Settings<'_>,
        inbox: Arc<dyn Inbox>,
        restarts: Arc<Restarts>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let Settings {
            url,
            ca_cert,
            prefix,
            instance,
            ttl,
        } = settings;
        let target = Target::from_url(url, ca_cert).await?;
        let mode = match target {
            Target::Single(_) => {
                tracing::info!(redis = %redact(url), "using one Redis");
                Mode::Redis
            }
            Target::Cluster { .. } => {
                tracing::info!(redis = %redact(url), "using a Redis Cluster (sharded pub/sub)");
                Mode::Cluster
            }
        };
        let keys = Keys::new(prefix);
        let status = Arc::new(LinkStatus::new(1));
        let conn = target.commands()?;
        let presence =
            RedisPresence::new(conn.clone(), keys.clone(), instance, ttl, status.clone());
        let streams = RedisStreams::new(conn.clone(), keys.clone(), instance, status.clone());
        let hooks = RedisHooks::new(conn.clone(), keys.clone(), instance);
        let back = Arc::new(tokio::sync::Notify::new());
        let recovery = Arc::new(Recovery {
            conn: conn.clone(),
            status: status.clone(),
            back: back.clone(),
            shutdown: shutdown.clone(),
        });
        supervise::spawn(
            "redis-recovery",
            restarts.clone(),
            shutdown.clone(),
            move || recovery.clone().run(),
        );
        let common = Common {
            back,
            target,
            address: redact(url),
            keys,
            instance,
            inbox,
            status: status.clone(),
            shutdown: shutdown.clone(),
            wanted: Default::default(),
        };
        let (pubsub, subscriber) = PubSub::start(conn, common);
        supervise::spawn(
            "redis-pubsub",
            restarts.clone(),
            shutdown.clone(),
            move || subscriber.clone().run(),
        );
        Ok(RedisBroker {
            mode,
            status,
            pubsub,
            streams,
            presence,
            hooks,
        })
    }

    /// Fails at once while Redis is known to be down, rather than making
    /// every caller wait for a timeout.
    fn reachable(&self) -> Result<(), BrokerError> {
        if self.status.commands_up() {
            Ok(())
        } else {
            Err(BrokerError::Unreachable)
        }
    }

    /// A presence call's error; a lost link marks Redis down until the
    /// membership task finds it answering again.
    fn failed(&self, err: RedisError) -> BrokerError {
        self.status.set_commands(false);
        broker_error(err)
    }
}

fn broker_error(err: RedisError) -> BrokerError {
    if err.is_timeout() {
        BrokerError::TimedOut(err.to_string())
    } else {
        BrokerError::Failed(err.to_string())
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn status(&self) -> &LinkStatus {
        &self.status
    }

    fn shared(&self) -> bool {
        true
    }

    fn follow(&self, topic: &Topic) {
        self.pubsub.follow(topic);
    }

    async fn live(&self, _topic: &Topic) {
        // One link follows every topic.
        self.pubsub.live().await;
    }

    fn unfollow(&self, topic: &Topic) {
        self.pubsub.unfollow(topic);
    }

    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<(), BrokerError> {
        self.pubsub.publish(topic, &envelope).await
    }

    async fn presence_changed(&self, room: &str) {
        self.pubsub.publish_presence(room).await;
    }

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

    async fn holder(&self, room: &str, key: &str) -> Result<Option<Holder>, BrokerError> {
        self.reachable()?;
        let holder = self.presence.holder(room, key).await;
        holder.map_err(|err| self.failed(err))
    }

    async fn read(&self, room: &str) -> Result<Stored, BrokerError> {
        self.streams.read(room).await
    }

    async fn claim(
        &self,
        seat: Seat<'_>,
        previous_key: Option<&str>,
    ) -> Result<Claimed, BrokerError> {
        self.reachable()?;
        let claimed = self.presence.claim(seat, previous_key).await;
        claimed.map_err(|err| self.failed(err))
    }

    async fn leave(&self, seat: Seat<'_>, last_here: bool) -> Result<bool, BrokerError> {
        self.reachable()?;
        let left = self.presence.leave(seat, last_here).await;
        left.map_err(|err| self.failed(err))
    }

    async fn roster(&self, room: &str, shown: usize) -> Result<Roster, BrokerError> {
        self.reachable()?;
        let roster = self.presence.roster(room, shown).await;
        roster.map_err(|err| self.failed(err))
    }

    // The membership task's calls: it probes Redis and marks it down itself.
    async fn refresh_room(&self, room: &str) -> Result<Refreshed, BrokerError> {
        let refreshed = self.presence.refresh_room(room).await;
        refreshed.map_err(broker_error)
    }

    async fn depart_room(&self, room: &str) -> Result<Vec<String>, BrokerError> {
        let departed = self.presence.depart_room(room).await;
        departed.map_err(broker_error)
    }

    async fn register(&self, action: &str, id: ConnId, data: &str) -> Result<(), BrokerError> {
        self.reachable()?;
        let registered = self.presence.relay_register(action, id, data).await;
        registered.map_err(|err| self.failed(err))
    }

    async fn unregister(&self, action: &str, id: ConnId, last: bool) -> Result<(), BrokerError> {
        self.reachable()?;
        let unregistered = self.presence.relay_unregister(action, id, last).await;
        unregistered.map_err(|err| self.failed(err))
    }

    async fn refresh_action(&self, action: &str) -> Result<Refreshed, BrokerError> {
        let refreshed = self.presence.refresh_action(action).await;
        refreshed.map_err(broker_error)
    }

    async fn relay_clients(&self, action: &str) -> Result<Vec<RelayClient>, BrokerError> {
        self.reachable()?;
        let clients = self.presence.relay_clients(action).await;
        clients.map_err(|err| self.failed(err))
    }

    async fn depart_action(&self, action: &str) -> Result<(), BrokerError> {
        let departed = self.presence.depart_action(action).await;
        departed.map_err(broker_error)
    }

    async fn index_room(&self, room: &str, entry: RoomEntry) -> Result<(), BrokerError> {
        self.reachable()?;
        // The room list is not worth marking Redis down for.
        let indexed = self.presence.index_room(room, &entry).await;
        indexed.map_err(broker_error)
    }

    async fn room_index(&self, now_ms: u64) -> Result<RoomIndex, BrokerError> {
        self.reachable()?;
        let index = self.presence.room_index(now_ms).await;
        index.map_err(broker_error)
    }

    async fn announce(&self, entry: &InstanceEntry) -> Result<(), BrokerError> {
        self.reachable()?;
        let announced = self.presence.announce(entry).await;
        announced.map_err(broker_error)
    }

    async fn instances(&self, now_ms: u64) -> Result<Vec<InstanceEntry>, BrokerError> {
        self.reachable()?;
        let instances = self.presence.instances(now_ms).await;
        instances.map_err(broker_error)
    }

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

    async fn ping(&self) -> Result<(), BrokerError> {
        self.presence.ping().await.map_err(broker_error)
    }
}
