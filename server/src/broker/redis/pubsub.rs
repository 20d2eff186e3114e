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
use super::keys::{topic_partition, Channel, Keys, PARTITIONS};
use super::link::{Incoming, Link, PUBSUB_TIMEOUT};
use crate::broker::{stamp, BrokerError, Envelope, Inbox, LinkStatus};
use crate::fanout::Topic;
use crate::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use parking_lot::{Mutex, MutexGuard};
use redis::Msg;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a new listener waits for its subscription before going on
/// without it (Redis is then down; the supervisor subscribes on reconnect).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Keepalive: each subscription connection is probed this often.
const PUBSUB_PING: Duration = Duration::from_secs(5);

type SyncRequest = Option<oneshot::Sender<()>>;

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
    /// The topics followed, with how many subscriptions each.
    pub wanted: Mutex<HashMap<Topic, usize>>,
}

impl Common {
    fn wanted(&self) -> MutexGuard<'_, HashMap<Topic, usize>> {
        self.wanted.lock()
    }
}

/// The task that owns one shard's subscription connection.
pub struct Subscriber {
    shard: Shard,
    /// Subscription requests, taken by whichever run is live.
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<SyncRequest>>,
}

impl Subscriber {
    pub async fn run(self: Arc<Self>) {
        let mut requests = self.requests.lock().await;
        self.shard.run(&mut requests).await;
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

    /// Follows the topic (once more), and waits (briefly) until its
    /// shard's connection does: every caller waits, not only the first,
    /// since the second to arrive must not go ahead of the first one's
    /// subscription.
    pub async fn subscribe(&self, topic: &Topic) {
        *self.common.wanted().entry(topic.clone()).or_default() += 1;
        let (done, wait) = oneshot::channel();
        if self.shard(topic).send(Some(done)).is_ok() {
            let _ = timeout(SUBSCRIBE_WAIT, wait).await;
        }
    }

    pub fn unsubscribe(&self, topic: &Topic) {
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

/// One subscription connection and what it follows: every partition on a
/// single Redis, one partition in a cluster.
struct Shard {
    common: Arc<Common>,
    partition: Option<u32>,
}

impl Shard {
    async fn run(&self, requests: &mut mpsc::UnboundedReceiver<SyncRequest>) {
        let common = &self.common;
        let shard = self.name();
        let backoff = ExponentialBuilder::default()
            // Capped low: cross-instance delivery must resume within about
            // a second of Redis answering again.
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(800))
            .with_jitter()
            .without_max_times();
        let mut delays = backoff.build();
        let mut was_connected = false;
        loop {
            let connected = tokio::select! {
                _ = common.shutdown.cancelled() => return,
                result = timeout(PUBSUB_TIMEOUT, Link::connect(&common.target)) => result,
            };
            let address = &common.address;
            match connected {
                Ok(Ok(link)) => {
                    if self.serve(link, was_connected, requests).await {
                        delays = backoff.build();
                        was_connected = true;
                    }
                    if common.shutdown.is_cancelled() {
                        return;
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(redis = %address, shard, error = %err, "cannot reach Redis for pub/sub; serving local clients only, retrying with backoff");
                }
                Err(_) => {
                    tracing::warn!(redis = %address, shard, "Redis did not answer in time; serving local clients only, retrying with backoff");
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_millis(800));
            if !self.pause(delay, requests).await {
                return;
            }
        }
    }

    /// `all` on a single Redis, the partition in a cluster, for the logs.
    fn name(&self) -> String {
        self.partition.map_or("all".to_owned(), |p| p.to_string())
    }

    /// Subscribes a new connection and listens on it until it is lost;
    /// false if it could not even subscribe.
    async fn serve(
        &self,
        mut link: Link,
        was_connected: bool,
        requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
    ) -> bool {
        let common = &self.common;
        let (address, shard) = (&common.address, self.name());
        let mut subscribed = HashSet::new();
        if let Err(err) = self.reconcile(&mut link, &mut subscribed).await {
            tracing::warn!(redis = %address, shard, error = %err, "Redis subscribe failed; retrying");
            return false;
        }
        let _up = common.status.pubsub_up();
        // Redis answers: commands may go to it again without waiting for
        // the next refresh.
        common.status.set_commands(true);
        // Events published while the subscription was down are read back
        // from the streams.
        for topic in &self.topics() {
            if let Topic::Room(room) = topic {
                common.inbox.missed(room);
            }
        }
        if was_connected {
            metrics::redis_reconnected();
        }
        tracing::info!(redis = %address, shard, channels = subscribed.len(), "Redis pub/sub connected");
        common.inbox.reconnected();
        self.listen(&mut link, &mut subscribed, requests).await;
        if !common.shutdown.is_cancelled() {
            tracing::warn!(redis = %address, shard, "lost a Redis pub/sub connection; local delivery goes on; reconnecting");
        }
        true
    }

    /// Waits before connecting again; false on shutdown. Listeners that
    /// join meanwhile must not wait for a subscription that cannot happen
    /// now: the next connection subscribes them.
    async fn pause(
        &self,
        delay: Duration,
        requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
    ) -> bool {
        let pause = sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = self.common.shutdown.cancelled() => return false,
                _ = &mut pause => return true,
                Some(request) = requests.recv() => {
                    if let Some(done) = request {
                        let _ = done.send(());
                    }
                }
            }
        }
    }

    /// Delivers what arrives and serves subscription requests until the
    /// connection is lost (or shutdown).
    async fn listen(
        &self,
        link: &mut Link,
        subscribed: &mut HashSet<String>,
        requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
    ) {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PUBSUB_PING, PUBSUB_PING);
        loop {
            tokio::select! {
                _ = self.common.shutdown.cancelled() => return,
                incoming = link.next() => match incoming {
                    Incoming::Message(message) => self.dispatch(&message),
                    Incoming::Lost => return,
                    // A slot moved to another node (or the server dropped
                    // the subscription): follow it there.
                    Incoming::Unsubscribed(channel) if subscribed.contains(&channel) => return,
                    Incoming::Unsubscribed(_) | Incoming::Other => {}
                },
                Some(request) = requests.recv() => {
                    let result = self.reconcile(link, subscribed).await;
                    if let Some(done) = request {
                        let _ = done.send(());
                    }
                    if result.is_err() {
                        return;
                    }
                }
                _ = ping.tick() => {
                    let probe = self.common.keys.partition_presence(self.partition.unwrap_or(0));
                    if !matches!(timeout(PUBSUB_TIMEOUT, link.probe(&probe)).await, Ok(Ok(()))) {
                        return;
                    }
                }
            }
        }
    }

    /// The topics this shard follows: those of its partition.
    fn topics(&self) -> Vec<Topic> {
        let wanted = self.common.wanted();
        let topics = wanted.keys();
        topics
            .filter(|topic| self.partition.is_none_or(|p| topic_partition(topic) == p))
            .cloned()
            .collect()
    }

    /// Subscribes to what is needed and unsubscribes from what is not.
    async fn reconcile(
        &self,
        link: &mut Link,
        subscribed: &mut HashSet<String>,
    ) -> redis::RedisResult<()> {
        let keys = &self.common.keys;
        let mut wanted: HashSet<String> = self.topics().iter().map(|t| keys.channel(t)).collect();
        match self.partition {
            Some(partition) => {
                wanted.insert(keys.partition_presence(partition));
            }
            None => wanted.extend((0..PARTITIONS).map(|p| keys.partition_presence(p))),
        }
        let add: Vec<String> = wanted.difference(subscribed).cloned().collect();
        let remove: Vec<String> = subscribed.difference(&wanted).cloned().collect();
        if !add.is_empty() {
            timeout_redis(link.subscribe(&add)).await?;
            // A listener that stopped waiting for this subscription read its
            // room before it took effect: what was published in between is
            // read back from the stream.
            for channel in &add {
                if let Some(Topic::Room(room)) = keys.topic(channel) {
                    self.common.inbox.missed(&room);
                }
            }
        }
        if !remove.is_empty() {
            timeout_redis(link.unsubscribe(&remove)).await?;
        }
        *subscribed = wanted;
        Ok(())
    }

    fn dispatch(&self, message: &Msg) {
        let common = &self.common;
        let channel = message.get_channel_name();
        let topic = match common.keys.channel_kind(channel) {
            Some(Channel::Topic(topic)) => topic,
            Some(Channel::Presence) => {
                if let Ok(room) = std::str::from_utf8(message.get_payload_bytes()) {
                    common.inbox.presence_changed(room);
                }
                return;
            }
            None => return,
        };
        let Some(envelope) = Envelope::decode(message.get_payload_bytes()) else {
            metrics::error("redis", "bad_envelope");
            tracing::warn!(channel, "dropped a malformed envelope");
            return;
        };
        metrics::delivery_latency(envelope.age());
        match topic {
            // This instance's own appends too: the feed keeps the first copy
            // and puts every instance's events in one order.
            Topic::Room(room) if stamp::position(&envelope.frame).is_some() => {
                common.inbox.room_event(&room, envelope.frame)
            }
            // Unstamped room frames (typing) are not in the stream: passed
            // on as they come, like relay frames.
            _ if envelope.origin == common.instance => {}
            _ => common.inbox.frame(&topic, &envelope),
        }
    }
}

async fn timeout_redis<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    timeout(PUBSUB_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis pub/sub timed out",
        )))
    })
}
