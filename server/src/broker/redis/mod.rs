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
mod interest;
pub mod keys;
mod link;
mod log;
mod presence;
mod pubsub;
mod recovery;
mod streams;
mod subscriber;
mod trim;

use super::retention::Retention;
use super::{
    BrokerError, Claimed, Directory, Envelope, Holder, Inbox, InstanceEntry, Link, LinkStatus,
    Mode, Presence, PubSub, Refreshed, RelayClient, RoomEntry, RoomIndex, Roster, Seat,
};
use crate::fanout::{ConnId, Topic};
use crate::supervise::{self, Restarts};
use async_trait::async_trait;
use client::{redact, Target};
use hooks::RedisHooks;
use interest::Interest;
use keys::Keys;
use presence::RedisPresence;
use pubsub::{Common, PubSub as Channels};
use recovery::Recovery;
use redis::RedisError;
use std::sync::Arc;
use std::time::Duration;
use streams::RedisStreams;
use tokio_util::sync::CancellationToken;
use trim::Trimmer;
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
    /// What each room keeps.
    pub retention: Retention,
}

pub struct RedisBroker {
    mode: Mode,
    status: Arc<LinkStatus>,
    pubsub: Channels,
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
            retention,
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
        let trimmer = Trimmer::new(conn.clone(), keys.clone(), retention);
        let streams = RedisStreams::new(
            conn.clone(),
            keys.clone(),
            instance,
            status.clone(),
            retention,
            trimmer.clone(),
        );
        if retention.max_age.is_some() {
            supervise::spawn(
                "redis-trim",
                restarts.clone(),
                shutdown.clone(),
                move || trimmer.clone().run(),
            );
        }
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
        let interest = Interest::new(conn.clone(), keys.clone(), instance);
        let (checker, directory) = (interest.clone(), presence.clone());
        let link = status.clone();
        supervise::spawn(
            "redis-interest",
            restarts.clone(),
            shutdown.clone(),
            move || checker.clone().run(directory.clone(), link.clone()),
        );
        let common = Common {
            interest,
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
        let (pubsub, subscriber) = Channels::start(conn, common);
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
impl Link for RedisBroker {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn status(&self) -> &LinkStatus {
        &self.status
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.presence.ping().await.map_err(broker_error)
    }
}

#[async_trait]
impl PubSub for RedisBroker {
    fn follow(&self, topic: &Topic) {
        self.pubsub.follow(topic);
    }

    async fn live(&self, topic: &Topic) {
        self.pubsub.live(topic).await;
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
}

#[async_trait]
impl Presence for RedisBroker {
    async fn holder(&self, room: &str, key: &str) -> Result<Option<Holder>, BrokerError> {
        self.reachable()?;
        let holder = self.presence.holder(room, key).await;
        holder.map_err(|err| self.failed(err))
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
}

#[async_trait]
impl Directory for RedisBroker {
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
}
