//! One subscription connection, whichever kind of Redis: plain pub/sub on
//! one Redis, sharded pub/sub through the cluster client (which follows its
//! slot to whichever node holds it) in a Redis Cluster.

use super::client::Target;
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound on every pub/sub round trip, so a silent Redis is noticed.
pub const PUBSUB_TIMEOUT: Duration = Duration::from_secs(3);

/// A subscription connection: plain pub/sub on one Redis, sharded pub/sub
/// through the cluster client (which follows its slot to whichever node
/// holds it) in a Redis Cluster.
pub enum Link {
    Plain(PubSubSink, PubSubStream),
    Sharded(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>),
}

pub enum Incoming {
    Message(Msg),
    /// The server ended the subscription to this channel.
    Unsubscribed(String),
    Lost,
    Other,
}

impl Link {
    pub async fn connect(target: &Target) -> redis::RedisResult<Link> {
        match target {
            Target::Single(client) => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(Link::Plain(sink, stream))
            }
            Target::Cluster { pubsub, .. } => {
                let (pushes, received) = mpsc::unbounded_channel();
                let config = ClusterConfig::new()
                    .set_connection_timeout(PUBSUB_TIMEOUT)
                    .set_response_timeout(PUBSUB_TIMEOUT)
                    .set_push_sender(pushes);
                let conn = pubsub.get_async_connection_with_config(config).await?;
                Ok(Link::Sharded(conn, received))
            }
        }
    }

    pub async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Link::Plain(sink, _) => sink.subscribe(channels).await,
            Link::Sharded(conn, _) => conn.ssubscribe(channels).await,
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Link::Plain(sink, _) => sink.unsubscribe(channels).await,
            Link::Sharded(conn, _) => conn.sunsubscribe(channels).await,
        }
    }

    /// Checks that the connection answers; in a cluster, that the node
    /// holding the shard's slot does (subscribing again to a channel
    /// already followed changes nothing).
    pub async fn probe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            // In subscribed mode the reply is an array, not "PONG".
            Link::Plain(sink, _) => sink.ping::<redis::Value>().await.map(drop),
            Link::Sharded(conn, _) => conn.ssubscribe(channel).await,
        }
    }

    pub async fn next(&mut self) -> Incoming {
        match self {
            Link::Plain(_, stream) => stream
                .next()
                .await
                .map_or(Incoming::Lost, Incoming::Message),
            Link::Sharded(_, pushes) => {
                let Some(push) = pushes.recv().await else {
                    return Incoming::Lost;
                };
                match push.kind {
                    PushKind::Disconnection => Incoming::Lost,
                    PushKind::SUnsubscribe => match push.data.first() {
                        Some(redis::Value::BulkString(channel)) => {
                            Incoming::Unsubscribed(String::from_utf8_lossy(channel).into_owned())
                        }
                        _ => Incoming::Other,
                    },
                    _ => Msg::from_push_info(push).map_or(Incoming::Other, Incoming::Message),
                }
            }
        }
    }
}
