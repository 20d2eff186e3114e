//! Names of every Redis key and channel, all under one prefix (REDIS_PREFIX).
//! docs/scaling.md ("Redis keys") lists the same layout.
//!
//! Every room and every relay action belongs to one of [`PARTITIONS`]
//! partitions, and all its keys and its channel carry the partition's hash
//! tag (`{p<n>}`): in a Redis Cluster they live in one slot, so each script
//! touches one slot and a room's channels are subscribed in one command.
//! There are as many partitions as cluster slots, so rooms spread over the
//! slots (and so over the masters) about as evenly as their names hash.
//! Key names are only ever built here; scripts receive them through `KEYS`.

use crate::broker::Sanction;
use crate::fanout::Topic;

/// Fixed: changing it moves every room to other keys (as going from 16 to
/// 16384 did: a room's history from before is left behind).
pub const PARTITIONS: u32 = 16_384;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The partition of a room or action name: FNV-1a, stable across
/// instances, versions and platforms (unlike the std hasher).
pub fn partition(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % PARTITIONS
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn room(&self, room: &str, what: &str) -> String {
        format!(
            "{}:{{p{}}}:room:{room}:{what}",
            self.prefix,
            partition(room)
        )
    }

    fn action(&self, action: &str, what: &str) -> String {
        format!(
            "{}:{{p{}}}:relay:{action}:{what}",
            self.prefix,
            partition(action)
        )
    }

    /// HASH of a room's stream: `epoch`, `offset` (the newest) and `run`
    /// (the Redis run id the epoch belongs to).
    pub fn stream_meta(&self, room: &str) -> String {
        self.room(room, "meta")
    }

    /// LIST of the room stream's last events, stamped frames, oldest first.
    pub fn stream_events(&self, room: &str) -> String {
        self.room(room, "events")
    }

    /// STRING `<until ms>` and the sanction's other marks, one per line:
    /// somebody with this mark (`crate::identity`) is banned from the room
    /// or muted in it; it expires then.
    pub fn sanction(&self, room: &str, sanction: Sanction, mark: &str) -> String {
        let kind = match sanction {
            Sanction::Ban => "ban",
            Sanction::Mute => "mute",
        };
        self.room(room, &format!("{kind}:{mark}"))
    }

    /// STRING the room's slow mode interval in seconds (absent: off).
    pub fn slow_mode(&self, room: &str) -> String {
        self.room(room, "slow")
    }

    /// STRING present while the author (by author identity) must wait, in
    /// slow mode.
    pub fn slow_wait(&self, room: &str, key: &str) -> String {
        self.room(room, &format!("wait:{key}"))
    }

    /// HASH connection id -> member JSON; its length is the participant count.
    pub fn members(&self, room: &str) -> String {
        self.room(room, "members")
    }

    /// HASH room -> `<count> <activity> <updated ms>`: the rooms with
    /// participants, for the room list. One key for all rooms: the list is
    /// read whole.
    pub fn room_index(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// HASH room -> a unique mark: the rooms with events the webhook may not
    /// have had yet (each append marks its room first).
    pub fn hook_marks(&self) -> String {
        format!("{}:hooks", self.prefix)
    }

    /// STRING the id of the instance delivering the room to the webhook,
    /// expiring unless renewed.
    pub fn hook_lease(&self, room: &str) -> String {
        self.room(room, "hook:lease")
    }

    /// HASH `epoch`, `offset`: the room's last event the webhook acknowledged.
    pub fn hook_cursor(&self, room: &str) -> String {
        self.room(room, "hook")
    }

    /// HASH instance id -> its line (JSON) in the list of live instances.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// HASH canonical nickname -> connection id holding it.
    pub fn pseudos(&self, room: &str) -> String {
        self.room(room, "pseudos")
    }

    /// ZSET instance id -> until when (ms) its entries in the room live
    /// unless it refreshes them.
    pub fn room_instances(&self, room: &str) -> String {
        self.room(room, "instances")
    }

    /// HASH relay client id -> its registration message (its first JSON).
    pub fn relay_clients(&self, action: &str) -> String {
        self.action(action, "clients")
    }

    /// HASH relay client id -> id of the instance it is connected to.
    pub fn relay_owners(&self, action: &str) -> String {
        self.action(action, "owners")
    }

    /// ZSET instance id -> until when (ms) its clients of the action live.
    pub fn relay_instances(&self, action: &str) -> String {
        self.action(action, "instances")
    }

    /// Pub/sub channel of a topic.
    pub fn channel(&self, topic: &Topic) -> String {
        let (kind, name) = match topic {
            Topic::Room(room) => ("room", room),
            Topic::Action(action) => ("relay", action),
        };
        format!("{}:ch:{{p{}}}:{kind}:{name}", self.prefix, partition(name))
    }

    /// Pub/sub channel announcing "the participants of this room changed"
    /// (the message is the room's name), one per partition.
    pub fn presence_channel(&self, room: &str) -> String {
        self.partition_presence(partition(room))
    }

    pub fn partition_presence(&self, partition: u32) -> String {
        format!("{}:ch:{{p{partition}}}:presence", self.prefix)
    }

    /// What a pub/sub channel name carries, if it is one of ours.
    pub fn channel_kind(&self, channel: &str) -> Option<Channel> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":ch:{p")?;
        let (partition, rest) = rest.split_once("}:")?;
        partition.parse::<u32>().ok()?;
        if rest == "presence" {
            return Some(Channel::Presence);
        }
        if let Some(room) = rest.strip_prefix("room:") {
            return Some(Channel::Topic(Topic::Room(room.into())));
        }
        rest.strip_prefix("relay:")
            .map(|action| Channel::Topic(Topic::Action(action.into())))
    }

    /// The topic of a pub/sub channel name, if it is one of ours.
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        match self.channel_kind(channel)? {
            Channel::Topic(topic) => Some(topic),
            Channel::Presence => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Channel {
    Topic(Topic),
    Presence,
}

/// The partition a topic's keys and channel belong to.
pub fn topic_partition(topic: &Topic) -> u32 {
    partition(topic.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_back_to_topics() {
        let keys = Keys::new("p");
        for topic in [Topic::Room("r".into()), Topic::Action("a:b c}".into())] {
            assert_eq!(keys.topic(&keys.channel(&topic)), Some(topic));
        }
        assert_eq!(keys.topic("other:ch:{p1}:room:r"), None);
        assert_eq!(
            keys.channel_kind(&keys.presence_channel("r")),
            Some(Channel::Presence)
        );
    }

    #[test]
    fn a_rooms_keys_and_channel_share_one_hash_tag() {
        let keys = Keys::new("chat");
        let room = "général {x}";
        let tag = format!("{{p{}}}", partition(room));
        for key in [
            keys.stream_meta(room),
            keys.stream_events(room),
            keys.members(room),
            keys.pseudos(room),
            keys.room_instances(room),
            keys.hook_lease(room),
            keys.hook_cursor(room),
            keys.channel(&Topic::Room(room.into())),
            keys.presence_channel(room),
        ] {
            // The first `{...}` of a key is its Redis Cluster hash tag.
            let first = &key[key.find('{').unwrap()..=key.find('}').unwrap()];
            assert_eq!(first, tag, "{key}");
        }
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned: a different value would move every room to other keys.
        assert_eq!(partition("general"), 8_555);
        let used: std::collections::HashSet<u32> =
            (0..300).map(|i| partition(&format!("room-{i}"))).collect();
        assert!(used.len() >= 290, "300 rooms in {} partitions", used.len());
    }
}
