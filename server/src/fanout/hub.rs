//! The connections of this process, grouped by topic (a chat room or a relay
//! action). Delivery never waits on a client: each connection has a bounded
//! queue, and a client whose queue is full is disconnected and counted.

use super::{CloseReason, ConnId, Kind, Peer, Topic};
use crate::identity;
use crate::metrics;
use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;

#[derive(Default)]
pub struct Hub {
    topics: RwLock<HashMap<Topic, HashMap<ConnId, Peer>>>,
}

impl Hub {
    pub fn insert(&self, topic: &Topic, id: ConnId, peer: Peer) {
        let mut topics = self.topics.write();
        topics.entry(topic.clone()).or_default().insert(id, peer);
    }

    /// Queues `first` for a new listener and adds it, under the lock that
    /// deliveries take: every frame delivered to the topic from then on is
    /// queued after `first`, and none before it. Queued first and added
    /// after, a client could read `first` and have a frame sent meanwhile
    /// skip it (the relay's `registered`, read and acted on by the client
    /// before the next line ran on a busy machine).
    pub fn insert_after(&self, first: Utf8Bytes, topic: &Topic, id: ConnId, peer: Peer) {
        let mut topics = self.topics.write();
        peer.send(first);
        topics.entry(topic.clone()).or_default().insert(id, peer);
    }

    /// Removes a listener; true when it was the last of this process.
    pub fn remove(&self, topic: &Topic, id: ConnId) -> bool {
        let mut topics = self.topics.write();
        let Some(listeners) = topics.get_mut(topic) else {
            return false;
        };
        listeners.remove(&id);
        if listeners.is_empty() {
            topics.remove(topic);
            return true;
        }
        false
    }

    /// Queues the same bytes for every local listener but `except`; returns
    /// how many got it.
    pub fn deliver(&self, topic: &Topic, frame: &Utf8Bytes, except: Option<ConnId>) -> usize {
        let topics = self.topics.read();
        let Some(listeners) = topics.get(topic) else {
            return 0;
        };
        let delivered = listeners
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter(|(_, peer)| peer.send(frame.clone()))
            .count();
        metrics::delivered(topic.kind(), delivered, frame.len());
        delivered
    }

    /// Closes every connection of this process whose token has the
    /// subject; returns how many. A rare order: it looks at each.
    pub fn close_subject(&self, sub: &str, why: CloseReason) -> usize {
        let marks = [identity::subject_mark(sub)];
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(HashMap::values)
            .filter(|peer| peer.is_marked(&marks))
            .inspect(|peer| peer.close(why))
            .count()
    }

    /// Sends a last frame to every connection of the topic listed under
    /// any of the marks, and closes it; returns how many.
    pub fn close_marked(
        &self,
        topic: &Topic,
        marks: &[String],
        frame: &Utf8Bytes,
        why: CloseReason,
    ) -> usize {
        let topics = self.topics.read();
        let Some(listeners) = topics.get(topic) else {
            return 0;
        };
        listeners
            .values()
            .filter(|peer| peer.is_marked(marks))
            .inspect(|peer| {
                peer.send(frame.clone());
                peer.close(why);
            })
            .count()
    }

    /// Sends one listener a last frame, then closes it.
    pub fn close_one(&self, topic: &Topic, id: ConnId, frame: Utf8Bytes, why: CloseReason) {
        let topics = self.topics.read();
        if let Some(peer) = topics.get(topic).and_then(|l| l.get(&id)) {
            peer.send(frame);
            peer.close(why);
        }
    }

    pub fn rooms(&self) -> Vec<String> {
        let topics = self.topics.read();
        topics
            .keys()
            .filter_map(|t| match t {
                Topic::Room(room) => Some(room.to_string()),
                Topic::Action(_) => None,
            })
            .collect()
    }

    /// How many connections of this process listen to the topic.
    pub fn listeners(&self, topic: &Topic) -> usize {
        let topics = self.topics.read();
        topics.get(topic).map_or(0, HashMap::len)
    }

    pub fn has_listeners(&self, topic: &Topic) -> bool {
        let topics = self.topics.read();
        topics.contains_key(topic)
    }

    /// Open connections of a kind (each connection listens on one topic).
    pub fn connections(&self, kind: Kind) -> usize {
        let topics = self.topics.read();
        topics
            .iter()
            .filter(|(t, _)| t.kind() == kind)
            .map(|(_, l)| l.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::close;
    use uuid::Uuid;

    #[test]
    fn delivers_to_all_but_the_excluded_and_tracks_the_last_listener() {
        let hub = Hub::default();
        let topic = Topic::Action("a".into());
        let (a, mut ra) = Peer::new(Kind::Relay, 4);
        let (b, mut rb) = Peer::new(Kind::Relay, 4);
        let (ida, idb) = (Uuid::new_v4(), Uuid::new_v4());
        hub.insert(&topic, ida, a);
        hub.insert(&topic, idb, b);
        assert_eq!(hub.deliver(&topic, &"x".into(), Some(ida)), 1);
        assert!(ra.try_recv().is_none());
        assert_eq!(rb.try_recv().unwrap().as_str(), "x");
        assert_eq!(hub.deliver(&Topic::Room("a".into()), &"y".into(), None), 0);
        assert!(!hub.remove(&topic, ida));
        assert!(hub.remove(&topic, idb));
        assert!(!hub.has_listeners(&topic));
    }

    #[test]
    fn a_full_queue_closes_the_slow_peer() {
        let hub = Hub::default();
        let topic = Topic::Room("r".into());
        let (peer, _rx) = Peer::new(Kind::Chat, 2);
        let closer = peer.clone();
        hub.insert(&topic, Uuid::new_v4(), peer);
        assert_eq!(hub.deliver(&topic, &"1".into(), None), 1);
        assert_eq!(hub.deliver(&topic, &"2".into(), None), 1);
        assert!(!closer.is_closed());
        assert_eq!(hub.deliver(&topic, &"3".into(), None), 0);
        assert!(closer.is_closed());
        assert_eq!(closer.close_reason(), close::SLOW_CONSUMER);
    }
}
