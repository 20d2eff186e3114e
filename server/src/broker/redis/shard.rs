//! One shard's subscription connection, owned by one task: it keeps the
//! connection's subscriptions equal to what the instance follows in its
//! shard, hands what arrives to the inbox, and connects again with backoff
//! when the connection drops, a slot moves or a probe goes unanswered.

use super::keys::{topic_partition, Channel, PARTITIONS};
use super::link::{Incoming, Link, PUBSUB_TIMEOUT};
use super::pubsub::{Common, SyncRequest};
use crate::broker::{stamp, Envelope};
use crate::fanout::Topic;
use crate::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use redis::Msg;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// Keepalive: each subscription connection is probed this often.
const PUBSUB_PING: Duration = Duration::from_secs(5);

/// The task that owns one shard's subscription connection.
pub struct Subscriber {
    pub shard: Shard,
    /// Subscription requests, taken by whichever run is live.
    pub requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<SyncRequest>>,
}

impl Subscriber {
    pub async fn run(self: Arc<Self>) {
        let mut requests = self.requests.lock().await;
        self.shard.run(&mut requests).await;
    }
}

/// One subscription connection and what it follows: every partition on a
/// single Redis, one partition in a cluster.
pub struct Shard {
    pub common: Arc<Common>,
    pub partition: Option<u32>,
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

    /// Waits before connecting again, or until Redis is found answering;
    /// false on shutdown. Listeners that join meanwhile must not wait for a
    /// subscription that cannot happen now: the next connection subscribes
    /// them.
    async fn pause(
        &self,
        delay: Duration,
        requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
    ) -> bool {
        let pause = sleep(delay);
        tokio::pin!(pause);
        let back = self.common.back.notified();
        tokio::pin!(back);
        loop {
            tokio::select! {
                _ = self.common.shutdown.cancelled() => return false,
                _ = &mut pause => return true,
                _ = &mut back => return true,
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
