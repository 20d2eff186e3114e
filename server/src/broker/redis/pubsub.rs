//! Redis pub/sub between instances.
//!
//! Publishing goes through the shared command connection: PUBLISH on one
//! Redis, SPUBLISH (sharded pub/sub, handled by the channel's shard alone)
//! in a Redis Cluster. Receiving uses one subscription link: a connection
//! on one Redis, a connection per node in a cluster (see [`subscriber`]
//! for how it keeps clear of the crate's cross-slot resubscription).
//!
//! The link is owned by one task, which keeps its subscriptions equal to
//! "the topics this instance follows, plus the presence channels of their
//! partitions" (it reconciles rather than
//! replaying subscribe/unsubscribe calls, so races cannot leave a stale
//! subscription). When the connection drops, a slot moves, or a probe goes
//! unanswered, it connects again with backoff, subscribes again, and has
//! the inbox read back from the streams what was published meanwhile.

use super::client::{publish_command, Commands, Target};
use super::interest::Interest;
use super::keys::Keys;
use super::subscriber::Subscriber;
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

/// Asks the subscriber to bring its subscriptions up to date, and to say when.
pub type SyncRequest = Option<oneshot::Sender<()>>;

pub struct PubSub {
    conn: Commands,
    common: Arc<Common>,
    /// Subscription requests, for the subscriber.
    requests: mpsc::UnboundedSender<SyncRequest>,
}

/// What the subscriber needs.
pub struct Common {
    pub target: Target,
    /// REDIS_URL without its password, for the logs.
    pub address: String,
    pub keys: Keys,
    pub instance: Uuid,
    pub inbox: Arc<dyn Inbox>,
    pub status: Arc<LinkStatus>,
    pub shutdown: CancellationToken,
    /// Woken when Redis answers again: the subscriber stops waiting to
    /// reconnect.
    pub back: Arc<tokio::sync::Notify>,
    /// The topics followed, with how many subscriptions each (an action
    /// at 0 is being let go of: subscribed until its `bye` is out).
    pub wanted: Mutex<HashMap<Topic, usize>>,
    /// Who else follows the actions followed here.
    pub interest: Arc<Interest>,
}

impl Common {
    pub fn wanted(&self) -> MutexGuard<'_, HashMap<Topic, usize>> {
        self.wanted.lock()
    }
}

impl PubSub {
    /// Returns the pub/sub and its subscriber, for the caller to run
    /// (supervised: [`Subscriber::run`] can be run again if it ends).
    pub fn start(conn: Commands, common: Common) -> (Self, Arc<Subscriber>) {
        let common = Arc::new(common);
        let (requests, received) = mpsc::unbounded_channel();
        let subscriber = Arc::new(Subscriber {
            common: common.clone(),
            requests: tokio::sync::Mutex::new(received),
        });
        let pubsub = PubSub {
            conn,
            common,
            requests,
        };
        (pubsub, subscriber)
    }

    /// Follows the topic (once more); the subscriber subscribes when asked.
    pub fn follow(&self, topic: &Topic) {
        let mut wanted = self.common.wanted();
        let count = wanted.entry(topic.clone()).or_default();
        *count += 1;
        if let (Topic::Action(action), 1) = (topic, *count) {
            self.common.interest.follow(action);
        }
    }

    /// Waits (briefly) until the subscriber follows what it is asked to,
    /// and, for an action, until every other instance that follows it is
    /// known here and knows of this one.
    pub async fn live(&self, topic: &Topic) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(Some(done)).is_ok() {
            let _ = timeout(SUBSCRIBE_WAIT, wait).await;
        }
        let interest = &self.common.interest;
        if let Topic::Action(action) = topic {
            let known = interest.others(action).is_some_and(|(_, known)| known);
            if !known && self.common.status.is_up() {
                interest.hello(action).await;
            }
        }
    }

    pub fn unfollow(&self, topic: &Topic) {
        let mut wanted = self.common.wanted();
        let Some(count) = wanted.get_mut(topic) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let Topic::Action(action) = topic else {
            wanted.remove(topic);
            drop(wanted);
            let _ = self.requests.send(None);
            return;
        };
        // The other instances stop publishing to this one before it stops
        // listening: a frame is never counted as missed for leaving.
        let bye = self.common.interest.unfollow(action);
        drop(wanted);
        let (common, requests) = (self.common.clone(), self.requests.clone());
        let (topic, action) = (topic.clone(), action.clone());
        tokio::spawn(async move {
            if common.status.commands_up() {
                common.interest.bye(&action, bye).await;
            }
            let mut wanted = common.wanted();
            if wanted.get(&topic) == Some(&0) {
                wanted.remove(&topic);
                drop(wanted);
                let _ = requests.send(None);
            }
        });
    }

    /// Publishes a frame, unless no other instance follows its action.
    /// Fails when fewer instances received it than are known to follow it
    /// (one lost its link to Redis and is getting it back).
    pub async fn publish(&self, topic: &Topic, envelope: &Envelope) -> Result<(), BrokerError> {
        let others = match topic {
            Topic::Action(action) => self.common.interest.others(action),
            Topic::Room(_) => None,
        };
        if others == Some((0, true)) {
            return Ok(());
        }
        let channel = self.common.keys.channel(topic);
        let received = self.send(channel, envelope.encode()).await?;
        let Some((others, _)) = others else {
            return Ok(());
        };
        // This instance follows the action: it is a subscriber too (or its
        // link is recovering, and then it cannot tell who got the frame).
        let expected = others + 1;
        if received < expected {
            metrics::error("redis", "missed");
            return Err(BrokerError::Missed(expected - received));
        }
        Ok(())
    }

    pub async fn publish_presence(&self, room: &str) {
        let channel = self.common.keys.presence_channel(room);
        // Counts heal with the next full refresh if this one is lost.
        let _ = self.send(channel, room.as_bytes().to_vec()).await;
    }

    /// Publishes unless Redis is known to be down (then other instances
    /// miss it: local delivery already happened).
    async fn send(&self, channel: String, payload: Vec<u8>) -> Result<usize, BrokerError> {
        let status = &self.common.status;
        if !status.commands_up() {
            metrics::error("redis", "publish");
            return Err(BrokerError::Unreachable);
        }
        let result: redis::RedisResult<usize> = redis::cmd(publish_command(&self.conn))
            .arg(&channel)
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await;
        result.map_err(|err| {
            // One line per frame would flood the log during an outage: the
            // subscriber reports the outage, the counter counts the losses.
            metrics::error("redis", "publish");
            tracing::debug!(channel, error = %err, "publish failed; delivered locally only");
            status.set_commands(false);
            super::broker_error(err)
        })
    }
}
