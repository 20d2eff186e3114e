//! Joins and leaves in big rooms, announced together.
//!
//! One "alice joined" goes to every listener of the room, so a crowd of n
//! arriving at once costs n² frames (5,000 joins: 12.5 million frames, and
//! seconds of a core). From [`CROWD`] listeners on, this instance gathers
//! its room's joins and leaves and appends them as one grouped system event
//! per kind every [`EVERY`], naming the first few and counting the rest:
//! each member then gets O(1) frames per second whatever the crowd. The
//! online list and the count were already coalesced (see `counts`). Small
//! rooms keep one event per person, in order with the messages; in a big
//! room a grouped join may come a moment after the newcomer's first words.

use app::protocol::{SystemKind, ANNOUNCED_NAMES};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// Listeners (here) or participants (everywhere) from which a room's joins
/// and leaves are grouped.
pub const CROWD: u64 = 50;
/// How often gathered joins and leaves are announced.
pub const EVERY: Duration = Duration::from_secs(1);

/// Joins and leaves not yet announced, per room.
#[derive(Default)]
pub struct Crowds {
    rooms: Mutex<HashMap<String, Gathered>>,
}

#[derive(Default)]
struct Gathered {
    joined: Group,
    left: Group,
}

/// People who came (or went) since the last announcement.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub names: Vec<String>,
    /// Beyond [`ANNOUNCED_NAMES`]: counted, not named.
    pub more: u64,
}

impl Group {
    fn add(&mut self, pseudo: &str) {
        if self.names.len() < ANNOUNCED_NAMES {
            self.names.push(pseudo.to_owned());
        } else {
            self.more += 1;
        }
    }

    /// Takes `pseudo` back if it is named here: somebody who joins and
    /// leaves within one announcement is news to nobody, nor is somebody
    /// who leaves and comes back.
    /// The last name stays when others are counted behind it, so that a
    /// group always names somebody.
    fn cancel(&mut self, pseudo: &str) -> bool {
        if self.names.len() == 1 && self.more > 0 {
            return false;
        }
        let found = self.names.iter().position(|n| n == pseudo);
        found.map(|at| self.names.remove(at)).is_some()
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.more == 0
    }
}

impl Crowds {
    /// Gathers one join or leave for the next announcement.
    pub fn add(&self, room: &str, kind: SystemKind, pseudo: &str) {
        let mut rooms = self.rooms.lock();
        let gathered = rooms.entry(room.to_owned()).or_default();
        let (this, other) = match kind {
            SystemKind::Left => (&mut gathered.left, &mut gathered.joined),
            _ => (&mut gathered.joined, &mut gathered.left),
        };
        if !other.cancel(pseudo) {
            this.add(pseudo);
        }
    }

    /// Everything gathered, per room: joins before leaves.
    pub fn take(&self) -> Vec<(String, SystemKind, Group)> {
        let rooms = std::mem::take(&mut *self.rooms.lock());
        let mut groups = Vec::new();
        for (room, gathered) in rooms {
            for (kind, group) in [
                (SystemKind::Joined, gathered.joined),
                (SystemKind::Left, gathered.left),
            ] {
                if !group.is_empty() {
                    groups.push((room.clone(), kind, group));
                }
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_counts_the_rest_and_cancels_comings_and_goings() {
        let crowds = Crowds::default();
        for i in 0..ANNOUNCED_NAMES + 5 {
            crowds.add("r", SystemKind::Joined, &format!("p{i}"));
        }
        crowds.add("r", SystemKind::Left, "p0");
        crowds.add("r", SystemKind::Left, "gone");
        crowds.add("s", SystemKind::Joined, "solo");
        let mut groups = crowds.take();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = (1..ANNOUNCED_NAMES).map(|i| format!("p{i}")).collect();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].1, SystemKind::Joined);
        assert_eq!(groups[0].2, Group { names, more: 5 });
        assert_eq!(groups[1].1, SystemKind::Left);
        assert_eq!(groups[1].2.names, vec!["gone".to_owned()]);
        assert_eq!(groups[2].2.names, vec!["solo".to_owned()]);
        assert!(crowds.take().is_empty());
    }
}
