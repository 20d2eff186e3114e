//! Delivery of a topic's frames to its listeners on every instance.
//!
//! Relay actions: [`Bus::broadcast`] hands the frame to this process's
//! listeners directly (so local delivery never depends on Redis) and
//! publishes it once for the other instances, which deliver it to theirs.
//! The frame is encoded once by the caller; instances forward its bytes
//! without parsing them.
//!
//! Chat rooms are streams (`crate::stream`): the append publishes, and
//! each instance's [`Feeds`] put what arrives in offset order. The bus
//! keeps the room subscriptions and hands pub/sub frames to the feeds.

pub mod memory;
pub mod redis;

use crate::envelope::Envelope;
use crate::hub::{ConnId, Hub, Peer, Topic};
use crate::stream::feed::Feeds;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use uuid::Uuid;

pub struct Bus {
    instance: Uuid,
    feeds: Arc<Feeds>,
    backend: Backend,
}

pub enum Backend {
    /// In-process: instances sharing one [`memory::MemoryBus`] (one, in the
    /// embedded mode) see each other's frames.
    Memory(memory::MemoryBus),
    /// Redis pub/sub, for instances in separate processes or machines.
    Redis(redis::RedisBus),
}

impl Bus {
    pub fn new(instance: Uuid, feeds: Arc<Feeds>, backend: Backend) -> Self {
        Bus {
            instance,
            feeds,
            backend,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        self.feeds.hub()
    }

    pub fn feeds(&self) -> &Arc<Feeds> {
        &self.feeds
    }

    /// Adds a listener to a room and waits (briefly) until frames from
    /// other instances flow to it, so that a history read afterwards leaves
    /// no gap. Every listener waits, not only the first: the second one to
    /// arrive must not go ahead of the first one's subscription.
    pub async fn subscribe(&self, room: &str, id: ConnId, peer: Peer) {
        self.feeds.listen(room, id, peer);
        if let Backend::Redis(redis) = &self.backend {
            redis
                .sync_subscriptions(&Topic::Room(room.to_owned()))
                .await;
        }
    }

    /// For a relay client: waits until frames of the action from other
    /// instances reach this one, then queues `reply` to the client and adds
    /// it as a listener, with no frame in between. So "registered" means
    /// "you get every later frame", and comes before any of them.
    pub async fn subscribe_after(&self, topic: &Topic, id: ConnId, peer: Peer, reply: Utf8Bytes) {
        if let Backend::Redis(redis) = &self.backend {
            redis.hold(topic);
            redis.sync_subscriptions(topic).await;
        }
        peer.send(reply);
        self.hub().insert(topic, id, peer);
        if let Backend::Redis(redis) = &self.backend {
            // The listener keeps the subscription from here on.
            redis.release(topic);
        }
    }

    pub fn unsubscribe(&self, topic: &Topic, id: ConnId) {
        let last = match topic {
            Topic::Room(room) => self.feeds.unlisten(room, id),
            Topic::Action(_) => self.hub().remove(topic, id),
        };
        if last {
            if let Backend::Redis(redis) = &self.backend {
                redis.request_sync(topic);
            }
        }
    }

    /// Delivers to every listener of the topic on every instance, except the
    /// connection `except` (a relay sender does not get its own frames).
    pub async fn broadcast(&self, topic: &Topic, frame: Utf8Bytes, except: Option<ConnId>) {
        self.hub().deliver(topic, &frame, except);
        let envelope = Envelope::new(self.instance, except, frame);
        match &self.backend {
            Backend::Memory(memory) => memory.publish(topic.clone(), envelope),
            Backend::Redis(redis) => redis.publish(topic, &envelope).await,
        }
    }

    /// Tells every instance that the participants of a room changed, so
    /// that each pushes the new count to its clients.
    pub async fn presence_changed(&self, room: &str) {
        if let Backend::Redis(redis) = &self.backend {
            redis.publish_presence(room).await;
        }
    }
}
