//! Redis pub/sub between instances.
//!
//! Publishing goes through the shared command connection: PUBLISH on one
//! Redis, SPUBLISH (sharded pub/sub, handled by the channel's shard alone)
//! in a Redis Cluster. Receiving uses dedicated connections, one per shard:
//! a single one on one Redis; in a cluster one per partition, following only
//! channels of its partition's slot, so that after a node restart or a
//! failover the client can subscribe them again in one command (channels of
//! different slots would be refused with CROSSSLOT).
//!
//! Each connection is owned by one task, which keeps its subscriptions
//! equal to "the topics of its shard this instance follows, plus the
//! presence channels" (it reconciles rather than
//! replaying subscribe/unsubscribe calls, so races cannot leave a stale
//! subscription). When the connection drops, a slot moves, or a probe goes
//! unanswered, it connects again with backoff, subscribes again, and has
//! the inbox read back from the streams what was published meanwhile.

use super::client::{publish_command, Commands, Target};
use super::keys::{topic_partition, Keys, PARTITIONS};
use super::shard::{Shard, Subscriber};
use crate::broker::{BrokerError, Envelope, Inbox, LinkStatus};
use crate::fanout::Topic;
use crate::metrics;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a new listener waits for its subscription before going on
/// without it (Redis is then down; the supervisor subscribes on reconnect).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Asks a shard to bring its subscriptions up to date, and to say when.
pub type SyncRequest = Option<oneshot::Sender<()>>;

pub struct PubSub {
    conn: Commands,
    common: Arc<Common>,
    /// Subscription requests, one sender per shard.
    shards: Vec<mpsc::UnboundedSender<SyncRequest>>,
}

/// What every shard's task needs.
pub struct Common {
    pub target: Target,
    /// REDIS_URL without its password, for the logs.
    pub address: String,
    pub keys: Keys,
    pub instance: Uuid,
    pub inbox: Arc<dyn Inbox>,
    pub status: Arc<LinkStatus>,
    pub shutdown: CancellationToken,
    /// Woken when Redis answers again: a shard waiting to reconnect stops
    /// waiting.
    pub back: Arc<tokio::sync::Notify>,
    /// The topics followed, with how many subscriptions each.
    pub wanted: Mutex<HashMap<Topic, usize>>,
}

impl Common {
    pub fn wanted(&self) -> MutexGuard<'_, HashMap<Topic, usize>> {
        self.wanted.lock()
    }
}

/// How many subscription connections a target needs.
pub fn shard_count(target: &Target) -> usize {
    match target {
        Target::Single(_) => 1,
        Target::Cluster { .. } => PARTITIONS as usize,
    }
}

impl PubSub {
    /// Returns the pub/sub and its subscribers, for the caller to run
    /// (supervised: [`Subscriber::run`] can be run again if it ends).
    pub fn start(conn: Commands, common: Common) -> (Self, Vec<Arc<Subscriber>>) {
        let count = shard_count(&common.target);
        let common = Arc::new(common);
        let mut shards = Vec::new();
        let mut subscribers = Vec::new();
        for index in 0..count {
            let (sync, requests) = mpsc::unbounded_channel();
            shards.push(sync);
            let partition = (count > 1).then_some(index as u32);
            subscribers.push(Arc::new(Subscriber {
                shard: Shard {
                    common: common.clone(),
                    partition,
                },
                requests: tokio::sync::Mutex::new(requests),
            }));
        }
        let pubsub = PubSub {
            conn,
            common,
            shards,
        };
        (pubsub, subscribers)
    }

    fn shard(&self, topic: &Topic) -> &mpsc::UnboundedSender<SyncRequest> {
        let index = topic_partition(topic) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Follows the topic (once more); its shard subscribes when asked.
    pub fn follow(&self, topic: &Topic) {
        *self.common.wanted().entry(topic.clone()).or_default() += 1;
    }

    /// Waits (briefly) until the topic's shard follows what it is asked to.
    pub async fn live(&self, topic: &Topic) {
        let (done, wait) = oneshot::channel();
        if self.shard(topic).send(Some(done)).is_ok() {
            let _ = timeout(SUBSCRIBE_WAIT, wait).await;
        }
    }

    pub fn unfollow(&self, topic: &Topic) {
        let mut wanted = self.common.wanted();
        let Some(count) = wanted.get_mut(topic) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            wanted.remove(topic);
            drop(wanted);
            let _ = self.shard(topic).send(None);
        }
    }

    pub async fn publish(&self, topic: &Topic, envelope: &Envelope) -> Result<(), BrokerError> {
        let channel = self.common.keys.channel(topic);
        self.send(channel, envelope.encode()).await
    }

    pub async fn publish_presence(&self, room: &str) {
        let channel = self.common.keys.presence_channel(room);
        // Counts heal with the next full refresh if this one is lost.
        let _ = self.send(channel, room.as_bytes().to_vec()).await;
    }

    /// Publishes unless Redis is known to be down (then other instances
    /// miss it: local delivery already happened).
    async fn send(&self, channel: String, payload: Vec<u8>) -> Result<(), BrokerError> {
        let status = &self.common.status;
        if !status.commands_up() {
            metrics::error("redis", "publish");
            return Err(BrokerError::Unreachable);
        }
        let result: redis::RedisResult<()> = redis::cmd(publish_command(&self.conn))
            .arg(&channel)
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await;
        result.map_err(|err| {
            // One line per frame would flood the log during an outage: the
            // shard's task reports the outage, the counter counts the losses.
            metrics::error("redis", "publish");
            tracing::debug!(channel, error = %err, "publish failed; delivered locally only");
            status.set_commands(false);
            super::broker_error(err)
        })
    }
}
