//! This instance's own view of presence. In embedded mode it is
//! the whole truth; with Redis it mirrors what this instance registered, so
//! that the instance can register it again after Redis restarts, and it
//! decides alone while Redis is unreachable.

use super::{Claim, Member, RoomEntry};
use crate::hub::ConnId;
use crate::nickname;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;

/// (room, connection, member)
pub type MemberEntry = (String, ConnId, Member);
/// (action, client id, registration message)
pub type RelayEntry = (String, ConnId, Utf8Bytes);

#[derive(Default)]
pub struct Local {
    rooms: HashMap<String, Room>,
    /// Action -> client id -> registration message.
    relay: HashMap<String, HashMap<ConnId, Utf8Bytes>>,
    /// The room list, without Redis.
    index: HashMap<String, RoomEntry>,
}

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Lower-cased nickname -> holder.
    pseudos: HashMap<String, ConnId>,
}

impl Local {
    /// Same rule as `claim.lua`: a nickname held by another session is
    /// taken; one held by the same session moves to the new connection.
    pub fn claim(
        &mut self,
        room: &str,
        conn: ConnId,
        member: &Member,
        previous_key: Option<&str>,
    ) -> Claim {
        let room = self.rooms.entry(room.to_owned()).or_default();
        let key = nickname::key(&member.pseudo);
        let mut claim = if room.members.is_empty() {
            Claim::Opened
        } else {
            Claim::Joined
        };
        if let Some(&holder) = room.pseudos.get(&key) {
            if holder != conn {
                if let Some(held) = room.members.get(&holder) {
                    if held.session != member.session {
                        return Claim::Taken;
                    }
                    room.members.remove(&holder);
                    claim = Claim::Reclaimed;
                }
            }
        }
        if let Some(old) = previous_key {
            if room.pseudos.get(old) == Some(&conn) {
                room.pseudos.remove(old);
            }
        }
        room.pseudos.insert(key, conn);
        room.members.insert(conn, member.clone());
        claim
    }

    /// Records a member decided elsewhere (by Redis).
    pub fn mirror(
        &mut self,
        room: &str,
        conn: ConnId,
        member: &Member,
        previous_key: Option<&str>,
    ) {
        let room = self.rooms.entry(room.to_owned()).or_default();
        if let Some(old) = previous_key {
            room.pseudos.remove(old);
        }
        room.pseudos.insert(nickname::key(&member.pseudo), conn);
        room.members.insert(conn, member.clone());
    }

    /// Drops a member that another connection of its session replaced.
    pub fn forget(&mut self, room: &str, conn: ConnId) {
        if let Some(room) = self.rooms.get_mut(room) {
            room.members.remove(&conn);
        }
    }

    /// True if the connection was still a member.
    pub fn leave(&mut self, room_name: &str, conn: ConnId, member: &Member) -> bool {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return false;
        };
        let removed = room.members.remove(&conn).is_some();
        let key = nickname::key(&member.pseudo);
        if room.pseudos.get(&key) == Some(&conn) {
            room.pseudos.remove(&key);
        }
        if room.members.is_empty() {
            self.rooms.remove(room_name);
        }
        removed
    }

    pub fn count(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |r| r.members.len() as u64)
    }

    pub fn online(&self, room: &str, shown: usize) -> (u64, Vec<String>) {
        let Some(room) = self.rooms.get(room) else {
            return (0, Vec::new());
        };
        let names = room.members.values().take(shown);
        let names = names.map(|m| m.pseudo.to_string()).collect();
        (room.members.len() as u64, names)
    }

    pub fn index_room(&mut self, room: &str, entry: RoomEntry) {
        if entry.count == 0 {
            self.index.remove(room);
        } else {
            self.index.insert(room.to_owned(), entry);
        }
    }

    pub fn room_index(&mut self, now_ms: u64) -> Vec<(String, RoomEntry)> {
        self.index.retain(|_, entry| entry.is_fresh(now_ms));
        let entries = self.index.iter();
        entries
            .map(|(room, entry)| (room.clone(), *entry))
            .collect()
    }

    pub fn relay_register(&mut self, action: &str, id: ConnId, registration: Utf8Bytes) {
        self.relay
            .entry(action.to_owned())
            .or_default()
            .insert(id, registration);
    }

    pub fn relay_unregister(&mut self, action: &str, id: ConnId) {
        if let Some(ids) = self.relay.get_mut(action) {
            ids.remove(&id);
            if ids.is_empty() {
                self.relay.remove(action);
            }
        }
    }

    pub fn members(&self) -> Vec<MemberEntry> {
        self.rooms
            .iter()
            .flat_map(|(name, room)| {
                room.members
                    .iter()
                    .map(move |(conn, m)| (name.clone(), *conn, m.clone()))
            })
            .collect()
    }

    pub fn room_members(&self, room: &str) -> Vec<(ConnId, Member)> {
        self.rooms.get(room).map_or_else(Vec::new, |room| {
            room.members
                .iter()
                .map(|(conn, m)| (*conn, m.clone()))
                .collect()
        })
    }

    pub fn action_clients(&self, action: &str) -> Vec<(ConnId, Utf8Bytes)> {
        self.relay.get(action).map_or_else(Vec::new, |clients| {
            clients.iter().map(|(id, reg)| (*id, reg.clone())).collect()
        })
    }

    pub fn relay_clients(&self) -> Vec<RelayEntry> {
        self.relay
            .iter()
            .flat_map(|(action, clients)| {
                clients
                    .iter()
                    .map(move |(id, reg)| (action.clone(), *id, reg.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::protocol::Pseudo;
    use uuid::Uuid;

    fn member(pseudo: &str, session: Uuid) -> Member {
        Member {
            pseudo: Pseudo::parse(pseudo).unwrap(),
            session,
        }
    }

    #[test]
    fn nicknames_are_unique_per_room_but_reclaimable_by_their_session() {
        let mut local = Local::default();
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(local.claim("r", c1, &member("Al", s1), None), Claim::Opened);
        assert_eq!(local.claim("r", c2, &member("al", s2), None), Claim::Taken);
        assert_eq!(
            local.claim("other", c2, &member("al", s2), None),
            Claim::Opened
        );
        assert_eq!(
            local.claim("r", c3, &member("al", s1), None),
            Claim::Reclaimed
        );
        assert_eq!(local.count("r"), 1);
        // The stale connection leaving does not free the reclaimed nickname.
        assert!(!local.leave("r", c1, &member("Al", s1)));
        assert_eq!(local.claim("r", c2, &member("al", s2), None), Claim::Taken);
        // Renaming frees the old nickname.
        assert_eq!(
            local.claim("r", c3, &member("bo", s1), Some("al")),
            Claim::Joined
        );
        assert_eq!(local.claim("r", c2, &member("al", s2), None), Claim::Joined);
        assert_eq!(local.count("r"), 2);
    }
}
