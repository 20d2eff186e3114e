//! Names of every Redis key and channel, all under one prefix (REDIS_PREFIX).
//! The README's "Redis keys" section lists the same layout.

use crate::hub::Topic;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SET of the ids of instances that registered anything.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// STRING with a TTL, refreshed while the instance lives.
    pub fn alive(&self, instance: Uuid) -> String {
        format!("{}:instance:{instance}:alive", self.prefix)
    }

    /// HASH chat connection id -> room, of one instance (for sweeping).
    pub fn instance_chat(&self, instance: Uuid) -> String {
        format!("{}:instance:{instance}:chat", self.prefix)
    }

    /// HASH relay client id -> action, of one instance (for sweeping).
    pub fn instance_relay(&self, instance: Uuid) -> String {
        format!("{}:instance:{instance}:relay", self.prefix)
    }

    /// HASH connection id -> member JSON; its length is the participant count.
    pub fn members(&self, room: &str) -> String {
        format!("{}:room:{room}:members", self.prefix)
    }

    /// HASH lower-cased nickname -> connection id holding it.
    pub fn pseudos(&self, room: &str) -> String {
        format!("{}:room:{room}:pseudos", self.prefix)
    }

    /// HASH of a room's stream: `epoch` and `offset` (the newest). Its keys
    /// and channel share the hash tag `{room:<name>}`: one Redis Cluster slot.
    pub fn stream_meta(&self, room: &str) -> String {
        format!("{}:{{room:{room}}}:meta", self.prefix)
    }

    /// LIST of the room stream's last events, stamped frames, oldest first.
    pub fn stream_events(&self, room: &str) -> String {
        format!("{}:{{room:{room}}}:events", self.prefix)
    }

    /// SET of the ids of the relay clients registered under an action.
    pub fn relay_action(&self, action: &str) -> String {
        format!("{}:relay:action:{action}", self.prefix)
    }

    /// STRING: a relay client's registration message (its first JSON).
    pub fn relay_client(&self, id: Uuid) -> String {
        format!("{}:relay:client:{id}", self.prefix)
    }

    /// Pub/sub channel of a topic.
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => format!("{}:ch:{{room:{room}}}", self.prefix),
            Topic::Action(action) => format!("{}:ch:relay:{action}", self.prefix),
        }
    }

    /// Pub/sub channel announcing "the participants of this room changed".
    pub fn presence_channel(&self) -> String {
        format!("{}:ch:presence", self.prefix)
    }

    /// The topic of a pub/sub channel name, if it is one of ours.
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":ch:")?;
        if let Some(room) = rest.strip_prefix("{room:") {
            return room.strip_suffix('}').map(|r| Topic::Room(r.to_owned()));
        }
        rest.strip_prefix("relay:")
            .map(|action| Topic::Action(action.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_back_to_topics() {
        let keys = Keys::new("p");
        for topic in [Topic::Room("r".into()), Topic::Action("a:b c".into())] {
            assert_eq!(keys.topic(&keys.channel(&topic)), Some(topic));
        }
        assert_eq!(keys.topic("other:ch:room:r"), None);
        assert_eq!(keys.topic(&keys.presence_channel()), None);
    }
}
