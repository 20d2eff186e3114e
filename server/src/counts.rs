//! Participant counts pushed to clients, coalesced.
//!
//! A change only marks its room dirty; a ticker recomputes each dirty room
//! once per tick and pushes the count to this instance's clients only when
//! it differs from the last one pushed. A thousand joins in a burst thus
//! cost each client a few count frames, not a thousand. Every few seconds
//! all local rooms are checked again, which heals any missed notification.
//! Each tick also announces the participants of dead instances that Redis
//! removed (found by any script that touched their room).

use crate::hub::Topic;
use crate::AppState;
use app::protocol::ServerEvent;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TICK: Duration = Duration::from_millis(200);
const FULL_REFRESH: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Counts {
    dirty: Mutex<HashSet<String>>,
}

impl Counts {
    pub fn mark(&self, room: &str) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if !dirty.contains(room) {
            dirty.insert(room.to_owned());
        }
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub async fn run(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(TICK);
    let mut refresh = tokio::time::interval(FULL_REFRESH);
    let mut pushed: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = refresh.tick() => {
                for room in app.bus.hub().rooms() {
                    app.counts.mark(&room);
                }
                continue;
            }
        }
        let mut counted = Vec::new();
        for room in app.counts.take() {
            let topic = Topic::Room(room.clone());
            if !app.bus.hub().has_listeners(&topic) {
                pushed.remove(&room);
                continue;
            }
            let count = app.store.count(&room).await;
            counted.push((topic, room, count));
        }
        // Before the counts they explain: "X left", then the new count.
        for (room, pseudo) in app.store.take_departures() {
            tracing::info!(room, pseudo, "removed a participant of a dead instance");
            crate::chat::announce_departure(&app, &room, &pseudo).await;
        }
        for (topic, room, count) in counted {
            if pushed.get(&room) != Some(&count) {
                pushed.insert(room, count);
                app.bus
                    .hub()
                    .deliver(&topic, &crate::encode(&ServerEvent::Count { count }), None);
            }
        }
    }
}
