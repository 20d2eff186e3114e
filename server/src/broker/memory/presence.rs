//! Presence in this process's memory, with the rules of the Redis scripts:
//! entries belong to the instance that wrote them and live until its lease
//! runs out unless it refreshes them; whatever touches a room first removes
//! the entries of instances whose lease ran out.

use crate::broker::{
    Claim, Claimed, Holder, Member, Refreshed, RelayClient, RoomEntry, RoomIndex, Roster, Seat,
};
use crate::fanout::ConnId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Default)]
pub struct Presence {
    rooms: HashMap<String, Room>,
    actions: HashMap<String, Action>,
    index: HashMap<String, RoomEntry>,
}

/// Until when each instance's entries of a room or action live.
type Leases = HashMap<Uuid, Instant>;

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Held>,
    /// Nickname key -> holder.
    pseudos: HashMap<String, ConnId>,
    leases: Leases,
}

struct Held {
    member: Arc<Member>,
    instance: Uuid,
}

#[derive(Default)]
struct Action {
    /// Client id -> (registration, instance).
    clients: HashMap<ConnId, (String, Uuid)>,
    leases: Leases,
}

/// Who is asking, and until when its entries live.
#[derive(Clone, Copy)]
pub struct Caller {
    pub instance: Uuid,
    pub now: Instant,
    pub until: Instant,
}

fn expired(leases: &mut Leases, now: Instant) -> HashSet<Uuid> {
    let gone: HashSet<Uuid> = leases
        .iter()
        .filter(|(_, until)| **until <= now)
        .map(|(id, _)| *id)
        .collect();
    leases.retain(|id, _| !gone.contains(id));
    gone
}

impl Room {
    /// Removes the members of the instances `gone`; returns their nicknames.
    fn prune(&mut self, gone: &HashSet<Uuid>) -> Vec<String> {
        let conns: Vec<ConnId> = self
            .members
            .iter()
            .filter(|(_, held)| gone.contains(&held.instance))
            .map(|(conn, _)| *conn)
            .collect();
        conns
            .into_iter()
            .filter_map(|conn| self.remove(conn))
            .map(|member| member.pseudo.to_string())
            .collect()
    }

    fn remove(&mut self, conn: ConnId) -> Option<Arc<Member>> {
        let held = self.members.remove(&conn)?;
        if self.pseudos.get(&held.member.key) == Some(&conn) {
            self.pseudos.remove(&held.member.key);
        }
        Some(held.member)
    }

    fn prune_expired(&mut self, now: Instant) -> Vec<String> {
        let gone = expired(&mut self.leases, now);
        self.prune(&gone)
    }
}

impl Action {
    fn prune_expired(&mut self, now: Instant) {
        let gone = expired(&mut self.leases, now);
        self.clients.retain(|_, (_, owner)| !gone.contains(owner));
    }
}

impl Presence {
    pub fn claim(&mut self, seat: Seat<'_>, previous_key: Option<&str>, caller: Caller) -> Claimed {
        let Seat { room, conn, member } = seat;
        let entry = self.rooms.entry(room.to_owned()).or_default();
        let departed = entry.prune_expired(caller.now);
        let mut replaced = None;
        if let Some(&holder) = entry.pseudos.get(&member.key) {
            if holder != conn {
                if let Some(held) = entry.members.get(&holder) {
                    if held.member.session != member.session {
                        let claim = Claim::Taken;
                        return Claimed {
                            claim,
                            replaced,
                            departed,
                        };
                    }
                    entry.members.remove(&holder);
                    replaced = Some(holder);
                }
            }
        }
        if let Some(old) = previous_key {
            if entry.pseudos.get(old) == Some(&conn) {
                entry.pseudos.remove(old);
            }
        }
        let opened = entry.members.is_empty();
        entry.pseudos.insert(member.key.clone(), conn);
        let held = Held {
            member: member.clone(),
            instance: caller.instance,
        };
        entry.members.insert(conn, held);
        entry.leases.insert(caller.instance, caller.until);
        let claim = match (replaced, opened) {
            (Some(_), _) => Claim::Reclaimed,
            (None, true) => Claim::Opened,
            (None, false) => Claim::Joined,
        };
        Claimed {
            claim,
            replaced,
            departed,
        }
    }

    pub fn holder(&self, room: &str, key: &str) -> Option<Holder> {
        let room = self.rooms.get(room)?;
        let conn = *room.pseudos.get(key)?;
        let member = &room.members.get(&conn)?.member;
        Some(Holder {
            conn,
            id: member.id.clone(),
            address: member.address.clone(),
        })
    }

    pub fn leave(&mut self, seat: Seat<'_>, last_of: Option<Uuid>) -> bool {
        let Seat { room, conn, member } = seat;
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        let removed = entry.members.remove(&conn).is_some();
        if entry.pseudos.get(&member.key) == Some(&conn) {
            entry.pseudos.remove(&member.key);
        }
        if let Some(instance) = last_of {
            entry.leases.remove(&instance);
        }
        if entry.members.is_empty() {
            self.rooms.remove(room);
        }
        removed
    }

    pub fn roster(&mut self, room: &str, shown: usize, now: Instant) -> Roster {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Roster::default();
        };
        let departed = entry.prune_expired(now);
        let names = entry.members.values().take(shown);
        Roster {
            count: entry.members.len() as u64,
            names: names.map(|held| held.member.pseudo.to_string()).collect(),
            departed,
        }
    }

    pub fn refresh_room(&mut self, room: &str, caller: Caller) -> Refreshed {
        let entry = self.rooms.entry(room.to_owned()).or_default();
        let present = entry
            .leases
            .get(&caller.instance)
            .is_some_and(|until| *until > caller.now);
        entry.leases.remove(&caller.instance);
        let departed = entry.prune_expired(caller.now);
        entry.leases.insert(caller.instance, caller.until);
        Refreshed { present, departed }
    }

    pub fn depart_room(&mut self, room: &str, instance: Uuid) -> Vec<String> {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        entry.leases.remove(&instance);
        let departed = entry.prune(&HashSet::from([instance]));
        if entry.members.is_empty() {
            self.rooms.remove(room);
        }
        departed
    }

    pub fn register(&mut self, action: &str, id: ConnId, registration: &str, caller: Caller) {
        let entry = self.actions.entry(action.to_owned()).or_default();
        entry.prune_expired(caller.now);
        entry
            .clients
            .insert(id, (registration.to_owned(), caller.instance));
        entry.leases.insert(caller.instance, caller.until);
    }

    pub fn unregister(&mut self, action: &str, id: ConnId, last_of: Option<Uuid>) {
        let Some(entry) = self.actions.get_mut(action) else {
            return;
        };
        entry.clients.remove(&id);
        if let Some(instance) = last_of {
            entry.leases.remove(&instance);
        }
        if entry.clients.is_empty() {
            self.actions.remove(action);
        }
    }

    pub fn refresh_action(&mut self, action: &str, caller: Caller) -> Refreshed {
        let entry = self.actions.entry(action.to_owned()).or_default();
        let present = entry
            .leases
            .get(&caller.instance)
            .is_some_and(|until| *until > caller.now);
        entry.leases.remove(&caller.instance);
        entry.prune_expired(caller.now);
        entry.leases.insert(caller.instance, caller.until);
        Refreshed {
            present,
            departed: Vec::new(),
        }
    }

    pub fn depart_action(&mut self, action: &str, instance: Uuid) {
        if let Some(entry) = self.actions.get_mut(action) {
            entry.leases.remove(&instance);
            entry.clients.retain(|_, (_, owner)| *owner != instance);
            if entry.clients.is_empty() {
                self.actions.remove(action);
            }
        }
    }

    /// The registered clients of an action (for tests and the server API).
    pub fn registered(&self, action: &str) -> Vec<RelayClient> {
        let Some(entry) = self.actions.get(action) else {
            return Vec::new();
        };
        let clients = entry.clients.iter();
        clients
            .map(|(id, (registration, instance))| RelayClient {
                id: *id,
                registration: registration.clone(),
                instance: *instance,
            })
            .collect()
    }

    pub fn clients(&self, action: &str) -> Vec<ConnId> {
        self.actions
            .get(action)
            .map_or_else(Vec::new, |entry| entry.clients.keys().copied().collect())
    }

    pub fn index_room(&mut self, room: &str, entry: RoomEntry) {
        if entry.count == 0 {
            self.index.remove(room);
        } else {
            self.index.insert(room.to_owned(), entry);
        }
    }

    pub fn room_index(&mut self, now_ms: u64) -> RoomIndex {
        let mut stale = Vec::new();
        self.index.retain(|room, entry| {
            let fresh = entry.is_fresh(now_ms);
            if !fresh {
                stale.push(room.clone());
            }
            fresh
        });
        let entries = self.index.iter();
        let fresh = entries.map(|(room, entry)| (room.clone(), *entry));
        RoomIndex {
            fresh: fresh.collect(),
            stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::protocol::Pseudo;
    use std::time::Duration;

    fn member(pseudo: &str, session: Uuid) -> Arc<Member> {
        Arc::new(Member::new(Pseudo::parse(pseudo).unwrap(), session))
    }

    fn caller(instance: Uuid, now: Instant, lease: Duration) -> Caller {
        Caller {
            instance,
            now,
            until: now + lease,
        }
    }

    fn seat<'a>(conn: ConnId, member: &'a Arc<Member>) -> Seat<'a> {
        Seat {
            room: "r",
            conn,
            member,
        }
    }

    #[test]
    fn a_dead_instances_members_go_when_its_lease_runs_out_and_are_named_once() {
        let mut presence = Presence::default();
        let (dead, alive) = (Uuid::new_v4(), Uuid::new_v4());
        let (al, bo) = (member("al", Uuid::new_v4()), member("bo", Uuid::new_v4()));
        let start = Instant::now();
        let lease = Duration::from_secs(10);
        let claimed = presence.claim(seat(Uuid::new_v4(), &al), None, caller(dead, start, lease));
        assert_eq!(claimed.claim, Claim::Opened);
        let claimed = presence.claim(seat(Uuid::new_v4(), &bo), None, caller(alive, start, lease));
        assert_eq!(claimed.claim, Claim::Joined);
        assert_eq!(presence.roster("r", 10, start).count, 2);
        // The living instance refreshes; the dead one does not.
        let later = start + Duration::from_secs(8);
        let refreshed = presence.refresh_room("r", caller(alive, later, lease));
        assert!(refreshed.present && refreshed.departed.is_empty());
        let after = start + Duration::from_secs(11);
        let roster = presence.roster("r", 10, after);
        assert_eq!((roster.count, roster.departed), (1, vec!["al".to_owned()]));
        assert!(
            presence.roster("r", 10, after).departed.is_empty(),
            "named once"
        );
        // Its nickname is free again, for anybody.
        let stranger = member("AL", Uuid::new_v4());
        let claimed = presence.claim(
            seat(Uuid::new_v4(), &stranger),
            None,
            caller(alive, after, lease),
        );
        assert_eq!(claimed.claim, Claim::Joined);
        // A refresh after its own lease ran out says it must register again.
        let late = after + Duration::from_secs(30);
        assert!(
            !presence
                .refresh_room("r", caller(alive, late, lease))
                .present
        );
    }

    #[test]
    fn a_session_reclaims_its_nickname_and_a_clean_stop_departs_its_own_only() {
        let mut presence = Presence::default();
        let (here, there) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        let lease = Duration::from_secs(10);
        let session = Uuid::new_v4();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let al = member("al", session);
        presence.claim(seat(old, &al), None, caller(here, now, lease));
        let claimed = presence.claim(seat(new, &al), None, caller(there, now, lease));
        assert_eq!(
            (claimed.claim, claimed.replaced),
            (Claim::Reclaimed, Some(old))
        );
        let other = member("al", Uuid::new_v4());
        let taken = presence.claim(seat(Uuid::new_v4(), &other), None, caller(here, now, lease));
        assert_eq!(taken.claim, Claim::Taken);
        // The replaced connection leaving changes nothing.
        assert!(!presence.leave(seat(old, &al), None));
        let bo = member("bo", Uuid::new_v4());
        presence.claim(seat(Uuid::new_v4(), &bo), None, caller(here, now, lease));
        assert_eq!(presence.depart_room("r", here), vec!["bo".to_owned()]);
        assert_eq!(presence.roster("r", 10, now).names, vec!["al".to_owned()]);
    }

    #[test]
    fn relay_clients_leave_with_their_instance() {
        let mut presence = Presence::default();
        let (dead, alive) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        let lease = Duration::from_secs(10);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        presence.register("x", a, "{}", caller(dead, now, lease));
        presence.register("x", b, "{}", caller(alive, now, lease));
        presence.register("x", c, "{}", caller(alive, now, lease));
        presence.unregister("x", c, None);
        let mut clients = presence.clients("x");
        clients.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(clients, expected);
        // The living instance refreshes; the dead one's lease runs out and
        // the next registration sweeps its clients.
        let refreshed =
            presence.refresh_action("x", caller(alive, now + Duration::from_secs(8), lease));
        assert!(refreshed.present);
        let after = now + Duration::from_secs(11);
        presence.register("x", c, "{}", caller(alive, after, lease));
        let mut clients = presence.clients("x");
        clients.sort();
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(clients, expected);
        presence.depart_action("x", alive);
        assert!(presence.clients("x").is_empty());
    }
}
