//! The instance's subscription link, owned by one task: it keeps the
//! link's subscriptions equal to what the instance follows, hands what
//! arrives to the inbox, and connects again with backoff when a connection
//! drops, a slot moves or a probe goes unanswered.
//!
//! In a cluster the link is one cluster connection, so one connection per
//! node: the crate sends each `SSUBSCRIBE` to the node of its channels'
//! slot. Channels are subscribed one partition (so one slot) per command.
//! The crate, when it reconnects a node by itself, subscribes all of that
//! node's channels again in one command, which Redis refuses (`CROSSSLOT`)
//! once they span slots; so a lost node connection (the crate's
//! `Disconnection` push) or a moved slot (`sunsubscribe` push) makes this
//! task start a new link and subscribe again, partition by partition,
//! instead of relying on that.

use super::interest::Notice;
use super::keys::{topic_partition, Channel};
use super::link::{Incoming, Link, PUBSUB_TIMEOUT};
use super::pubsub::{Common, SyncRequest};
use crate::broker::{stamp, Envelope};
use crate::fanout::Topic;
use crate::metrics;
use backon::{BackoffBuilder, ExponentialBuilder};
use redis::Msg;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// Keepalive: each subscription connection is probed this often.
const PUBSUB_PING: Duration = Duration::from_secs(5);

/// The task that owns the subscription link.
pub struct Subscriber {
    pub common: Arc<Common>,
    /// Subscription requests, taken by whichever run is live.
    pub requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<SyncRequest>>,
}

/// Channels to subscribe, each with its partition (its slot in a cluster).
type Channels = HashMap<String, u32>;

impl Subscriber {
    pub async fn run(self: Arc<Self>) {
        let mut requests = self.requests.lock().await;
        self.connect_and_serve(&mut requests).await;
    }

    async fn connect_and_serve(&self, requests: &mut mpsc::UnboundedReceiver<SyncRequest>) {
        let common = &self.common;
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
                    tracing::warn!(redis = %address, error = %err, "cannot reach Redis for pub/sub; serving local clients only, retrying with backoff");
                }
                Err(_) => {
                    tracing::warn!(redis = %address, "Redis did not answer in time; serving local clients only, retrying with backoff");
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_millis(800));
            if !self.pause(delay, requests).await {
                return;
            }
        }
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
        let address = &common.address;
        let mut subscribed = Channels::new();
        if let Err(err) = self.reconcile(&mut link, &mut subscribed).await {
            tracing::warn!(redis = %address, error = %err, "Redis subscribe failed; retrying");
            return false;
        }
        let _up = common.status.pubsub_up();
        // Redis answers: commands may go to it again without waiting for
        // the next refresh.
        common.status.set_commands(true);
        // Events published while the subscription was down are read back
        // from the streams.
        for topic in common.wanted().keys() {
            if let Topic::Room(room) = topic {
                common.inbox.missed(room);
            }
        }
        if was_connected {
            metrics::redis_reconnected();
        }
        tracing::info!(redis = %address, channels = subscribed.len(), "Redis pub/sub connected");
        common.inbox.reconnected();
        // Notices may have been missed while the link was down: each
        // action's followers are asked for again, and learn of this one.
        for action in common.interest.forget() {
            let interest = common.interest.clone();
            tokio::spawn(async move { interest.hello(&action).await });
        }
        self.listen(&mut link, &mut subscribed, requests).await;
        if !common.shutdown.is_cancelled() {
            tracing::warn!(redis = %address, "lost a Redis pub/sub connection; local delivery goes on; reconnecting");
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
        subscribed: &mut Channels,
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
                    Incoming::Unsubscribed(channel) if subscribed.contains_key(&channel) => return,
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
                    if !self.probe(link, subscribed).await {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the link answers: on one Redis a PING; in a cluster every
    /// node holding a followed partition, by subscribing again to one
    /// channel per partition (which changes nothing).
    async fn probe(&self, link: &mut Link, subscribed: &Channels) -> bool {
        let keys = &self.common.keys;
        let partitions: HashSet<u32> = subscribed.values().copied().collect();
        let probes: Vec<String> = match link {
            Link::Plain(..) => vec![String::new()],
            Link::Sharded(..) => partitions
                .iter()
                .map(|p| keys.partition_presence(*p))
                .collect(),
        };
        for probe in &probes {
            if !matches!(timeout(PUBSUB_TIMEOUT, link.probe(probe)).await, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }

    /// The channels to follow: each followed topic's, and the presence
    /// channel of each partition of a followed room.
    fn wanted(&self) -> Channels {
        let keys = &self.common.keys;
        let mut channels = Channels::new();
        for topic in self.common.wanted().keys() {
            let partition = topic_partition(topic);
            channels.insert(keys.channel(topic), partition);
            if let Topic::Room(room) = topic {
                channels.insert(keys.presence_channel(room), partition);
            }
        }
        channels
    }

    /// Subscribes to what is needed and unsubscribes from what is not.
    async fn reconcile(
        &self,
        link: &mut Link,
        subscribed: &mut Channels,
    ) -> redis::RedisResult<()> {
        let keys = &self.common.keys;
        let wanted = self.wanted();
        let add = commands(link, by_partition(&wanted, subscribed));
        let remove = commands(link, by_partition(subscribed, &wanted));
        for channels in &add {
            timeout_redis(link.subscribe(channels)).await?;
            // A listener that stopped waiting for this subscription read its
            // room before it took effect: what was published in between is
            // read back from the stream.
            for channel in channels {
                if let Some(Topic::Room(room)) = keys.topic(channel) {
                    self.common.inbox.missed(&room);
                }
            }
        }
        for channels in &remove {
            timeout_redis(link.unsubscribe(channels)).await?;
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
        if let Topic::Action(action) = &topic {
            if let Some(notice) = Notice::decode(message.get_payload_bytes()) {
                let answer = common.interest.heard(action, notice);
                if let Some(answer) = answer {
                    let (interest, action) = (common.interest.clone(), action.clone());
                    tokio::spawn(async move {
                        let _ = interest.send(&action, &answer).await;
                    });
                }
                return;
            }
        }
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

/// The channels of `these` not in `those`, grouped by partition: channels
/// of one slot, as one sharded (un)subscribe command must be.
fn by_partition(these: &Channels, those: &Channels) -> HashMap<u32, Vec<String>> {
    let mut groups: HashMap<u32, Vec<String>> = HashMap::new();
    for (channel, partition) in these {
        if !those.contains_key(channel) {
            groups.entry(*partition).or_default().push(channel.clone());
        }
    }
    groups
}

/// The channels of each (un)subscribe command: one partition per command
/// in a cluster, all of them at once on one Redis.
fn commands(link: &Link, groups: HashMap<u32, Vec<String>>) -> Vec<Vec<String>> {
    match link {
        Link::Plain(..) => {
            let all: Vec<String> = groups.into_values().flatten().collect();
            if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            }
        }
        Link::Sharded(..) => groups.into_values().collect(),
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
