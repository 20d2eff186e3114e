//! The embedded bus: instances in one process share a broadcast channel.
//! The server runs one instance, so in practice local delivery is all there
//! is; tests run several on one bus to check the `Bus` contract without Redis.

use crate::envelope::Envelope;
use crate::hub::{Hub, Topic};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Frames in flight between in-process instances; a lagging instance loses
/// the oldest ones and says so.
const CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct MemoryBus {
    tx: broadcast::Sender<Arc<(Topic, Envelope)>>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl MemoryBus {
    pub fn publish(&self, topic: Topic, envelope: Envelope) {
        // The embedded server is the only instance on its bus: its own pump
        // would only drop the frame, so it is not sent at all.
        if self.tx.receiver_count() > 1 {
            let _ = self.tx.send(Arc::new((topic, envelope)));
        }
    }

    /// Delivers other instances' frames to this instance's hub until the bus
    /// is dropped.
    pub async fn pump(self, instance: Uuid, hub: Arc<Hub>) {
        let mut rx = self.tx.subscribe();
        drop(self);
        loop {
            match rx.recv().await {
                Ok(message) => {
                    let (topic, envelope) = &*message;
                    if envelope.origin != instance {
                        hub.deliver(topic, &envelope.frame, envelope.except);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "in-process bus lagged; frames lost");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Backend, Bus};
    use crate::hub::{Kind, Peer};
    use crate::stream::{feed::Feeds, Streams};

    #[tokio::test]
    async fn instances_on_one_bus_deliver_to_each_other_once() {
        let shared = MemoryBus::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (hub_a, hub_b) = (Arc::new(Hub::default()), Arc::new(Hub::default()));
        let feeds_a = Feeds::new(hub_a.clone(), Arc::new(Streams::memory()));
        let bus_a = Bus::new(a, feeds_a, Backend::Memory(shared.clone()));
        tokio::spawn(shared.clone().pump(a, hub_a.clone()));
        tokio::spawn(shared.clone().pump(b, hub_b.clone()));
        tokio::task::yield_now().await;
        let topic = Topic::Action("a".into());
        let (peer_a, mut rx_a) = Peer::new(Kind::Relay, 8);
        let (peer_b, mut rx_b) = Peer::new(Kind::Relay, 8);
        hub_a.insert(&topic, Uuid::new_v4(), peer_a);
        hub_b.insert(&topic, Uuid::new_v4(), peer_b);
        bus_a.broadcast(&topic, "hi".into(), None).await;
        assert_eq!(rx_a.recv().await.unwrap().as_str(), "hi");
        assert_eq!(rx_b.recv().await.unwrap().as_str(), "hi");
        tokio::task::yield_now().await;
        assert!(
            rx_a.try_recv().is_none(),
            "the origin must not get its frame twice"
        );
    }
}
