//! The deployment's directories in Redis: the room list (each room's
//! count and activity) and the live instances' lines. Instances write their
//! own entries; readers drop the stale ones (instances that died).

use super::RedisPresence;
use crate::broker::{InstanceEntry, RoomEntry, RoomIndex};
use redis::{AsyncCommands, RedisResult};

impl RedisPresence {
    /// Records a room's count and activity in the room list (removes it
    /// when it has nobody).
    pub async fn index_room(&self, room: &str, entry: &RoomEntry) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let key = self.keys.room_index();
        if entry.count == 0 {
            conn.hdel(key, room).await
        } else {
            conn.hset(key, room, format_entry(entry)).await
        }
    }

    /// The room list's entries; stale ones (rooms nobody refreshes any
    /// more) are dropped.
    pub async fn room_index(&self, now_ms: u64) -> RedisResult<RoomIndex> {
        let mut conn = self.conn.clone();
        let key = self.keys.room_index();
        let all: Vec<(String, String)> = conn.hgetall(&key).await?;
        let (fresh, stale): (Vec<_>, Vec<_>) = all
            .into_iter()
            .map(|(room, value)| (room, parse_entry(&value)))
            .partition(|(_, entry)| entry.is_some_and(|e| e.is_fresh(now_ms)));
        let stale: Vec<String> = stale.into_iter().map(|(room, _)| room).collect();
        if !stale.is_empty() {
            conn.hdel::<_, _, ()>(&key, &stale).await?;
        }
        let fresh = fresh.into_iter();
        Ok(RoomIndex {
            fresh: fresh
                .filter_map(|(room, entry)| Some((room, entry?)))
                .collect(),
            stale,
        })
    }

    pub async fn announce(&self, entry: &InstanceEntry) -> RedisResult<()> {
        let line = serde_json::to_string(entry).expect("an instance line serializes");
        let mut conn = self.conn.clone();
        conn.hset(self.keys.instances(), entry.id.to_string(), line)
            .await
    }

    /// The live instances; stale lines (instances that died) are dropped.
    pub async fn instances(&self, now_ms: u64) -> RedisResult<Vec<InstanceEntry>> {
        let mut conn = self.conn.clone();
        let key = self.keys.instances();
        let all: Vec<(String, String)> = conn.hgetall(&key).await?;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (id, line) in all {
            match serde_json::from_str::<InstanceEntry>(&line) {
                Ok(entry) if entry.is_fresh(now_ms) => live.push(entry),
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            conn.hdel::<_, _, ()>(&key, stale).await?;
        }
        Ok(live)
    }
}

/// A room list entry as stored: `<count> <activity> <updated ms>`.
fn format_entry(entry: &RoomEntry) -> String {
    format!("{} {} {}", entry.count, entry.activity, entry.updated_ms)
}

fn parse_entry(value: &str) -> Option<RoomEntry> {
    let mut numbers = value.split(' ').map(str::parse::<u64>);
    Some(RoomEntry {
        count: numbers.next()?.ok()?,
        activity: numbers.next()?.ok()?,
        updated_ms: numbers.next()?.ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_entries_read_back_as_written() {
        let entry = RoomEntry {
            count: 3,
            activity: 17,
            updated_ms: 1_700_000_000_000,
        };
        assert_eq!(parse_entry(&format_entry(&entry)), Some(entry));
        assert_eq!(parse_entry("3 x 1"), None);
        assert_eq!(parse_entry("3 4"), None);
    }
}
