//! Redis pub/sub between instances.
//!
//! Publishing goes through the shared multiplexed command connection.
//! Receiving uses a dedicated pub/sub connection owned by one supervisor
//! task, which keeps the subscriptions equal to "the topics this instance
//! has listeners on, plus the presence channel" (it reconciles rather than
//! replaying subscribe/unsubscribe calls, so races cannot leave a stale
//! subscription), and which reconnects with backoff and resubscribes when
//! the connection drops.

use crate::counts::Counts;
use crate::envelope::Envelope;
use crate::hub::Topic;
use crate::metrics;
use crate::redis_client::RedisStatus;
use crate::store::keys::Keys;
use crate::stream::feed::Feeds;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};
use redis::AsyncCommands;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a new listener waits for its subscription before going on
/// without it (Redis is then down; the supervisor subscribes on reconnect).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Bound on every pub/sub round trip, so a silent Redis is noticed.
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(3);
/// Pub/sub keepalive: a PING on the subscription connection this often.
const PUBSUB_PING: Duration = Duration::from_secs(5);

type SyncRequest = Option<oneshot::Sender<()>>;

pub struct RedisBus {
    conn: ConnectionManager,
    keys: Keys,
    sync: mpsc::UnboundedSender<SyncRequest>,
    status: Arc<RedisStatus>,
}

/// The task that owns the pub/sub connection.
pub struct Subscriber {
    supervisor: Supervisor,
    /// Subscription requests, taken by whichever run is live.
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<SyncRequest>>,
}

impl Subscriber {
    pub async fn run(self: Arc<Self>) {
        let mut requests = self.requests.lock().await;
        self.supervisor.run(&mut requests).await;
    }
}

/// What the supervisor task needs.
pub struct Supervisor {
    pub client: redis::Client,
    pub keys: Keys,
    pub instance: Uuid,
    pub feeds: Arc<Feeds>,
    pub counts: Arc<Counts>,
    pub status: Arc<RedisStatus>,
    pub shutdown: CancellationToken,
}

impl RedisBus {
    /// Returns the bus and its subscriber, for the caller to run
    /// (supervised: [`Subscriber::run`] can be run again if it ends).
    pub fn start(conn: ConnectionManager, supervisor: Supervisor) -> (Self, Arc<Subscriber>) {
        let (sync, requests) = mpsc::unbounded_channel();
        let bus = RedisBus {
            conn,
            keys: supervisor.keys.clone(),
            sync,
            status: supervisor.status.clone(),
        };
        let subscriber = Subscriber {
            supervisor,
            requests: tokio::sync::Mutex::new(requests),
        };
        (bus, Arc::new(subscriber))
    }

    pub async fn sync_subscriptions(&self) {
        let (done, wait) = oneshot::channel();
        if self.sync.send(Some(done)).is_ok() {
            let _ = timeout(SUBSCRIBE_WAIT, wait).await;
        }
    }

    pub fn request_sync(&self) {
        let _ = self.sync.send(None);
    }

    pub async fn publish(&self, topic: &Topic, envelope: &Envelope) {
        self.send(self.keys.channel(topic), envelope.encode()).await;
    }

    pub async fn publish_presence(&self, room: &str) {
        self.send(self.keys.presence_channel(), room.as_bytes().to_vec())
            .await;
    }

    /// Publishes unless Redis is known to be down (then other instances
    /// miss it: local delivery already happened).
    async fn send(&self, channel: String, payload: Vec<u8>) {
        if !self.status.commands_up() {
            metrics::error("redis", "publish");
            return;
        }
        let result: redis::RedisResult<()> = self.conn.clone().publish(&channel, payload).await;
        if let Err(err) = result {
            // One line per frame would flood the log during an outage: the
            // supervisor reports the outage, the counter counts the losses.
            metrics::error("redis", "publish");
            tracing::debug!(channel, error = %err, "publish failed; delivered locally only");
            self.status.set_commands(false);
        }
    }
}

impl Supervisor {
    async fn run(&self, requests: &mut mpsc::UnboundedReceiver<SyncRequest>) {
        let address = self.client.get_connection_info().addr().to_string();
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
                _ = self.shutdown.cancelled() => return,
                result = timeout(PUBSUB_TIMEOUT, self.client.get_async_pubsub()) => result,
            };
            match connected {
                Ok(Ok(pubsub)) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let mut subscribed = HashSet::new();
                    match self.reconcile(&mut sink, &mut subscribed).await {
                        Ok(()) => {
                            self.status.set_pubsub(true);
                            // Redis answers: commands may go to it again
                            // without waiting for the next heartbeat.
                            self.status.set_commands(true);
                            // Events published while the subscription was
                            // down are read back from the streams.
                            self.feeds.repair_all();
                            delays = backoff.build();
                            if was_connected {
                                metrics::redis_reconnected();
                            }
                            tracing::info!(redis = %address, channels = subscribed.len(), "Redis pub/sub connected");
                            was_connected = true;
                            // Counts may have changed while we were away.
                            for room in self.feeds.hub().rooms() {
                                self.counts.mark(&room);
                            }
                            let mut ping = tokio::time::interval_at(
                                tokio::time::Instant::now() + PUBSUB_PING,
                                PUBSUB_PING,
                            );
                            loop {
                                tokio::select! {
                                    _ = self.shutdown.cancelled() => return,
                                    message = stream.next() => match message {
                                        Some(message) => self.dispatch(&message),
                                        None => break,
                                    },
                                    Some(request) = requests.recv() => {
                                        let result = self.reconcile(&mut sink, &mut subscribed).await;
                                        if let Some(done) = request {
                                            let _ = done.send(());
                                        }
                                        if result.is_err() {
                                            break;
                                        }
                                    }
                                    _ = ping.tick() => {
                                        // In subscribed mode the reply is an array, not "PONG".
                                        let pong = timeout(PUBSUB_TIMEOUT, sink.ping::<redis::Value>()).await;
                                        if !matches!(pong, Ok(Ok(_))) {
                                            break;
                                        }
                                    }
                                }
                            }
                            tracing::warn!(redis = %address, "lost the Redis pub/sub connection; local delivery goes on; reconnecting");
                        }
                        Err(err) => {
                            tracing::warn!(redis = %address, error = %err, "Redis subscribe failed; retrying");
                        }
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(redis = %address, error = %err, "cannot reach Redis; serving local clients only, retrying with backoff");
                }
                Err(_) => {
                    tracing::warn!(redis = %address, "Redis did not answer in time; serving local clients only, retrying with backoff");
                }
            }
            self.status.set_pubsub(false);
            let delay = delays.next().unwrap_or(Duration::from_millis(800));
            // Listeners that join meanwhile must not wait for a subscription
            // that cannot happen now; the next connection subscribes them.
            let pause = sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = &mut pause => break,
                    Some(request) = requests.recv() => {
                        if let Some(done) = request {
                            let _ = done.send(());
                        }
                    }
                }
            }
        }
    }

    /// Subscribes to what is needed and unsubscribes from what is not.
    async fn reconcile(
        &self,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<String>,
    ) -> redis::RedisResult<()> {
        let mut wanted: HashSet<String> = self
            .feeds
            .hub()
            .topics()
            .iter()
            .map(|t| self.keys.channel(t))
            .collect();
        wanted.insert(self.keys.presence_channel());
        let add: Vec<String> = wanted.difference(subscribed).cloned().collect();
        let remove: Vec<String> = subscribed.difference(&wanted).cloned().collect();
        if !add.is_empty() {
            timeout_redis(sink.subscribe(&add)).await?;
            // A listener that stopped waiting for this subscription read its
            // room before it took effect: what was published in between is
            // read back from the stream.
            for channel in &add {
                if let Some(Topic::Room(room)) = self.keys.topic(channel) {
                    self.feeds.repair(&room);
                }
            }
        }
        if !remove.is_empty() {
            timeout_redis(sink.unsubscribe(&remove)).await?;
        }
        *subscribed = wanted;
        Ok(())
    }

    fn dispatch(&self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        if channel == self.keys.presence_channel() {
            if let Ok(room) = std::str::from_utf8(message.get_payload_bytes()) {
                self.counts.mark(room);
            }
            return;
        }
        let Some(topic) = self.keys.topic(channel) else {
            return;
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
            Topic::Room(room) => self.feeds.offer(&room, envelope.frame),
            Topic::Action(_) if envelope.origin == self.instance => {}
            Topic::Action(_) => {
                self.feeds
                    .hub()
                    .deliver(&topic, &envelope.frame, envelope.except);
            }
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
