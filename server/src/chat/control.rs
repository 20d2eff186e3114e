//! Orders to connections wherever they are: "you were replaced", "you
//! were kicked", "you are banned" to one connection of a room, "you are
//! banned" to every connection in a room of the person banned (those that
//! only read too), and "disconnect" to every connection (chat and relay)
//! of a token's subject.
//! A room's orders travel on the room's pub/sub channel (sharded like the
//! room's other channels, followed by every instance with a listener in the
//! room, and re-subscribed with them after a reconnect); subject orders on
//! one channel every instance follows for its life ([`ORDERS`]). Either is
//! a frame no client can send: clients' frames on a room channel are typing
//! frames the server encodes itself.

use super::Chat;
use crate::broker::{self, Envelope};
use crate::fanout::{close, CloseReason, ConnId, Hub, Topic};
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The channel of orders to token subjects: named as no room can be
/// (room names are letters, digits, `-` and `_`).
pub const ORDERS: &str = "!orders";

/// Why a connection is removed from its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// Its session took the nickname on a newer connection.
    Replaced,
    Kicked,
    Banned,
}

impl Removal {
    fn close(self) -> CloseReason {
        match self {
            Removal::Replaced => close::REPLACED,
            Removal::Kicked => close::KICKED,
            Removal::Banned => close::BANNED,
        }
    }
}

/// An order as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
enum Order {
    /// Closes one connection of the room, after a last frame.
    Remove {
        conn: ConnId,
        removal: Removal,
        frame: String,
    },
    /// Closes every connection of the room held by somebody with any of
    /// these marks (`crate::identity`), after a last frame.
    Expel { marks: Vec<String>, frame: String },
    /// Closes every connection whose access token has this subject.
    Disconnect { sub: String },
}

/// How an order starts on the wire (the tag comes first).
const PREFIX: &str = "{\"control\":";

/// How long an order is tried again while the broker does not answer.
const RETRIES: u32 = 50;
const RETRY_EVERY: Duration = Duration::from_millis(200);

impl Chat {
    /// Sends the room's connection `conn` a last frame and closes it, on
    /// whichever instance it is.
    pub(super) async fn remove(&self, room: &str, conn: ConnId, removal: Removal, last: Utf8Bytes) {
        let topic = Topic::Room(room.into());
        self.hub
            .close_one(&topic, conn, last.clone(), removal.close());
        let frame = last.to_string();
        self.order(
            topic,
            Order::Remove {
                conn,
                removal,
                frame,
            },
        );
    }

    /// Sends every connection of the room held by somebody with any of the
    /// marks a last frame and closes it as banned, on every instance.
    pub(super) fn expel(&self, room: &str, marks: Vec<String>, last: Utf8Bytes) {
        let topic = Topic::Room(room.into());
        self.hub.close_marked(&topic, &marks, &last, close::BANNED);
        let frame = last.to_string();
        self.order(topic, Order::Expel { marks, frame });
    }

    /// Closes every connection, on every instance, whose access token has
    /// the subject `sub`; returns how many were on this one.
    pub fn disconnect(&self, sub: &str) -> usize {
        let here = self.hub.close_subject(sub, close::DISCONNECTED);
        let sub = sub.to_owned();
        self.order(Topic::Room(ORDERS.into()), Order::Disconnect { sub });
        here
    }

    /// Publishes an order to the other instances. They must hear it even
    /// if the broker is away for a moment; an order is harmless if it
    /// arrives twice.
    fn order(&self, topic: Topic, order: Order) {
        // Strings and a uuid: it serializes.
        let frame: Utf8Bytes = serde_json::to_string(&order)
            .expect("orders serialize")
            .into();
        let broker = self.broker.clone();
        let instance = self.instance;
        tokio::spawn(async move {
            for _ in 0..RETRIES {
                let envelope = Envelope::new(instance, None, frame.clone());
                match broker.publish(&topic, envelope).await {
                    Ok(()) => return,
                    Err(err) => tracing::debug!(?order, error = %err, "order not sent yet"),
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            tracing::warn!(?order, "an order could not reach the other instances");
        });
    }

    /// Follows the subject orders' channel until shutdown.
    pub(super) async fn follow_orders(&self) {
        let topic = Topic::Room(ORDERS.into());
        let _orders = broker::subscribe(&self.broker, topic).await;
        self.shutdown.cancelled().await;
    }
}

/// Carries out an order that came from another instance; false for any
/// other frame.
pub fn carry_out(hub: &Hub, topic: &Topic, frame: &str) -> bool {
    if !(matches!(topic, Topic::Room(_)) && frame.starts_with(PREFIX)) {
        return false;
    }
    match serde_json::from_str::<Order>(frame) {
        Ok(Order::Remove {
            conn,
            removal,
            frame,
        }) => hub.close_one(topic, conn, frame.into(), removal.close()),
        Ok(Order::Expel { marks, frame }) => {
            hub.close_marked(topic, &marks, &frame.into(), close::BANNED);
        }
        Ok(Order::Disconnect { sub }) => {
            hub.close_subject(&sub, close::DISCONNECTED);
        }
        Err(err) => tracing::warn!(error = %err, "an order from another instance does not read"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{Kind, Peer};
    use std::sync::Arc;

    #[test]
    fn orders_start_with_their_prefix_and_typing_frames_do_not() {
        let order = Order::Remove {
            conn: ConnId::nil(),
            removal: Removal::Kicked,
            frame: "{}".into(),
        };
        let json = serde_json::to_string(&order).unwrap();
        assert!(json.starts_with(PREFIX), "{json}");
        let hub = Hub::default();
        let room = Topic::Room("r".into());
        assert!(!carry_out(&hub, &room, r#"{"type":"typing","pseudo":"a"}"#));
        assert!(carry_out(&hub, &room, &json));
        assert!(!carry_out(&hub, &Topic::Action("r".into()), &json));
    }

    #[test]
    fn a_subject_order_closes_that_subject_only() {
        let hub = Arc::new(Hub::default());
        let (room, action) = (Topic::Room("r".into()), Topic::Action("a".into()));
        let mut held = Vec::new();
        let mut peers = Vec::new();
        for (sub, topic) in [("ann", &room), ("ann", &action), ("bob", &room)] {
            let (peer, queue) = Peer::new(Kind::Chat, 8);
            let id = ConnId::new_v4();
            peer.mark([crate::identity::subject_mark(sub)]);
            hub.insert(topic, id, peer.clone());
            held.push((id, topic, queue));
            peers.push(peer);
        }
        let order = serde_json::to_string(&Order::Disconnect { sub: "ann".into() }).unwrap();
        assert!(carry_out(&hub, &Topic::Room(ORDERS.into()), &order));
        let closed: Vec<bool> = peers.iter().map(|p| p.is_closed()).collect();
        assert_eq!(closed, [true, true, false]);
        // A connection gone is no longer listed.
        let (id, topic, _) = held.pop().unwrap();
        hub.remove(topic, id);
        assert_eq!(hub.close_subject("bob", close::DISCONNECTED), 0);
    }
}
