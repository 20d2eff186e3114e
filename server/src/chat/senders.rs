//! Rate limits that follow a person (token subject, or anonymous author
//! identity) across connections and reconnects: a client that reconnects
//! does not start with a full allowance. Each connection keeps its own
//! frame limit too (`ws::Limits`). Keys back to a full allowance are
//! forgotten every few seconds, so the tables hold only the people who
//! sent lately (`bounded_table_entries`).

use super::Limits;
use crate::metrics;
use crate::ws::throttle::KeyedThrottle;

pub struct Senders {
    pub joins: KeyedThrottle,
    pub renames: KeyedThrottle,
    /// Messages, edits, deletions, typing and moderation.
    pub actions: KeyedThrottle,
}

impl Senders {
    pub fn new(limits: &Limits) -> Self {
        Senders {
            joins: KeyedThrottle::new(limits.joins),
            renames: KeyedThrottle::new(limits.renames),
            actions: KeyedThrottle::new(limits.actions),
        }
    }

    pub fn sweep(&self) {
        metrics::table_size("joins", self.joins.sweep());
        metrics::table_size("renames", self.renames.sweep());
        metrics::table_size("actions", self.actions.sweep());
    }
}
