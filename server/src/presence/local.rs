//! This instance's own view of presence: it mirrors what this instance
//! registered in the broker, so that the instance can register it again
//! after the broker lost it, and it decides alone while the broker is
//! unreachable.

use crate::broker::{Claim, Member, Roster};
use crate::fanout::ConnId;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Local {
    rooms: HashMap<String, Room>,
    /// Action -> client id -> registration message.
    relay: HashMap<String, HashMap<ConnId, Utf8Bytes>>,
}

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Arc<Member>>,
    /// Lower-cased nickname -> holder.
    pseudos: HashMap<String, ConnId>,
}

impl Local {
    /// Same rule as the broker's: a nickname held by another session is
    /// taken; one held by the same session moves to the new connection.
    pub fn claim(
        &mut self,
        room: &str,
        conn: ConnId,
        member: &Arc<Member>,
        previous_key: Option<&str>,
    ) -> (Claim, Option<ConnId>) {
        let room = self.rooms.entry(room.to_owned()).or_default();
        let mut replaced = None;
        let key = member.key.clone();
        let mut claim = if room.members.is_empty() {
            Claim::Opened
        } else {
            Claim::Joined
        };
        if let Some(&holder) = room.pseudos.get(&key) {
            if holder != conn {
                if let Some(held) = room.members.get(&holder) {
                    if held.session != member.session {
                        return (Claim::Taken, None);
                    }
                    room.members.remove(&holder);
                    claim = Claim::Reclaimed;
                    replaced = Some(holder);
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
        (claim, replaced)
    }

    /// Records a member decided elsewhere (by Redis).
    pub fn mirror(
        &mut self,
        room: &str,
        conn: ConnId,
        member: &Arc<Member>,
        previous_key: Option<&str>,
    ) {
        let room = self.rooms.entry(room.to_owned()).or_default();
        if let Some(old) = previous_key {
            room.pseudos.remove(old);
        }
        room.pseudos.insert(member.key.clone(), conn);
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
        if room.pseudos.get(&member.key) == Some(&conn) {
            room.pseudos.remove(&member.key);
        }
        if room.members.is_empty() {
            self.rooms.remove(room_name);
        }
        removed
    }

    pub fn count(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |r| r.members.len() as u64)
    }

    pub fn roster(&self, room: &str, shown: usize) -> Roster {
        let Some(room) = self.rooms.get(room) else {
            return Roster::default();
        };
        let names = room.members.values().take(shown);
        Roster {
            count: room.members.len() as u64,
            names: names.map(|m| m.pseudo.to_string()).collect(),
            departed: Vec::new(),
        }
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

    /// The rooms where this instance has members.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// The actions this instance has clients of.
    pub fn actions(&self) -> Vec<String> {
        self.relay.keys().cloned().collect()
    }

    pub fn room_members(&self, room: &str) -> Vec<(ConnId, Arc<Member>)> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::protocol::Pseudo;
    use uuid::Uuid;

    fn member(pseudo: &str, session: Uuid) -> Arc<Member> {
        Arc::new(Member::new(Pseudo::parse(pseudo).unwrap(), session))
    }

    #[test]
    fn nicknames_are_unique_per_room_but_reclaimable_by_their_session() {
        let mut local = Local::default();
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            local.claim("r", c1, &member("Al", s1), None).0,
            Claim::Opened
        );
        assert_eq!(
            local.claim("r", c2, &member("al", s2), None).0,
            Claim::Taken
        );
        assert_eq!(
            local.claim("other", c2, &member("al", s2), None).0,
            Claim::Opened
        );
        assert_eq!(
            local.claim("r", c3, &member("al", s1), None),
            (Claim::Reclaimed, Some(c1))
        );
        assert_eq!(local.count("r"), 1);
        // The stale connection leaving does not free the reclaimed nickname.
        assert!(!local.leave("r", c1, &member("Al", s1)));
        assert_eq!(
            local.claim("r", c2, &member("al", s2), None).0,
            Claim::Taken
        );
        // Renaming frees the old nickname.
        assert_eq!(
            local.claim("r", c3, &member("bo", s1), Some("al")).0,
            Claim::Joined
        );
        assert_eq!(
            local.claim("r", c2, &member("al", s2), None).0,
            Claim::Joined
        );
        assert_eq!(local.count("r"), 2);
    }
}
