//! Orders to one connection wherever it is: "you were replaced", "you
//! were kicked", "you are banned". An order travels on its room's pub/sub
//! channel (sharded like the room's other channels, followed by every
//! instance with a listener in the room, and re-subscribed with them after
//! a reconnect) as a frame no client can send: clients' frames on a room
//! channel are typing frames the server encodes itself.

use super::Chat;
use crate::broker::Envelope;
use crate::fanout::{close, CloseReason, ConnId, Hub, Topic};
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

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

/// An order as it travels: the connection, why, and the last frame it is
/// sent before its socket closes.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    control: Removal,
    conn: ConnId,
    frame: String,
}

/// How an order starts on the wire (the `control` field comes first).
const PREFIX: &str = "{\"control\":";

/// How long an order is tried again while the broker does not answer.
const RETRIES: u32 = 50;
const RETRY_EVERY: Duration = Duration::from_millis(200);

impl Chat {
    /// Sends the room's connection `conn` a last frame and closes it, on
    /// whichever instance it is.
    pub(super) async fn remove(&self, room: &str, conn: ConnId, removal: Removal, last: Utf8Bytes) {
        let topic = Topic::Room(room.to_owned());
        self.hub
            .close_one(&topic, conn, last.clone(), removal.close());
        let order = Order {
            control: removal,
            conn,
            frame: last.to_string(),
        };
        // Plain strings and a uuid: it serializes.
        let frame: Utf8Bytes = serde_json::to_string(&order)
            .expect("orders serialize")
            .into();
        let broker = self.broker.clone();
        let instance = self.instance;
        // The other instance must hear it even if the broker is away for a
        // moment; the order is harmless if it arrives twice.
        tokio::spawn(async move {
            for _ in 0..RETRIES {
                let envelope = Envelope::new(instance, None, frame.clone());
                match broker.publish(&topic, envelope).await {
                    Ok(()) => return,
                    Err(err) => tracing::debug!(%conn, error = %err, "order not sent yet"),
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            tracing::warn!(%conn, ?removal, "an order could not reach the other instances");
        });
    }
}

/// Carries out an order that came from another instance; false for any
/// other frame.
pub fn carry_out(hub: &Hub, topic: &Topic, frame: &str) -> bool {
    if !(matches!(topic, Topic::Room(_)) && frame.starts_with(PREFIX)) {
        return false;
    }
    match serde_json::from_str::<Order>(frame) {
        Ok(order) => {
            let last = Utf8Bytes::from(order.frame);
            hub.close_one(topic, order.conn, last, order.control.close());
        }
        Err(err) => tracing::warn!(error = %err, "an order from another instance does not read"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_start_with_their_prefix_and_typing_frames_do_not() {
        let order = Order {
            control: Removal::Kicked,
            conn: ConnId::nil(),
            frame: "{}".into(),
        };
        assert!(serde_json::to_string(&order).unwrap().starts_with(PREFIX));
        let hub = Hub::default();
        let room = Topic::Room("r".into());
        assert!(!carry_out(&hub, &room, r#"{"type":"typing","pseudo":"a"}"#));
        let json = serde_json::to_string(&order).unwrap();
        assert!(carry_out(&hub, &room, &json));
        assert!(!carry_out(&hub, &Topic::Action("r".into()), &json));
    }
}
