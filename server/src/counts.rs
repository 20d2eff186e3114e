//! Who is in each room, pushed to clients coalesced: the participant count,
//! the online list (as changes), and the room list.
//!
//! A change only marks its room dirty; a ticker reads each dirty room once
//! per tick and pushes to this instance's clients only what differs from
//! what they were last told. A thousand joins in a burst thus cost each
//! client a few frames, not a thousand. Every few seconds all local rooms
//! are read again, which heals any missed notification and keeps their
//! lines in the room list alive. Each tick also announces the participants
//! of dead instances that Redis removed (found by any script that touched
//! their room).

use crate::hub::Topic;
use crate::AppState;
use app::protocol::{RoomSummary, ServerEvent, ONLINE_SHOWN, ROOMS_SHOWN};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const TICK: Duration = Duration::from_millis(200);
const FULL_REFRESH: Duration = Duration::from_secs(5);
const ROOM_LIST_REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Counts {
    dirty: Mutex<HashSet<String>>,
    told: Mutex<Told>,
}

/// What this instance's clients were last told.
#[derive(Default)]
struct Told {
    rooms: HashMap<String, Online>,
    /// Rooms where a client that opened since the last tick started from a
    /// fresher read than the others: the next tick sends everybody the
    /// whole list, which is right whatever each started from.
    mixed: HashSet<String>,
    list: Vec<RoomSummary>,
    /// Each local room's activity as last written to the room list.
    activity: HashMap<String, u64>,
}

/// A room's participants: the count and the nicknames shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Online {
    pub count: u64,
    pub names: BTreeSet<String>,
}

impl Online {
    /// The `online` frame a new client starts from.
    pub fn event(&self) -> ServerEvent {
        ServerEvent::Online {
            names: self.names.iter().cloned().collect(),
            more: self.more(),
        }
    }

    fn more(&self) -> u64 {
        self.count.saturating_sub(self.names.len() as u64)
    }

    /// The frames that take a client from `self` to `now`.
    fn changes(&self, now: &Online) -> Vec<ServerEvent> {
        let mut events = Vec::new();
        if self.count != now.count {
            events.push(ServerEvent::Count { count: now.count });
        }
        if self.names != now.names || self.more() != now.more() {
            events.push(ServerEvent::OnlineChanged {
                added: now.names.difference(&self.names).cloned().collect(),
                removed: self.names.difference(&now.names).cloned().collect(),
                more: now.more(),
            });
        }
        events
    }
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

    fn told(&self) -> MutexGuard<'_, Told> {
        self.told.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a client opening a socket to the room starts from: a fresh
    /// read. If the room's other clients here were told something else, the
    /// next tick tells everybody the whole list (changes would be relative
    /// to two different starting points); the others are not sent anything
    /// now, so that a burst of joins stays a few frames. Call after the
    /// client listens to the room, so that it misses no change.
    pub async fn snapshot(&self, app: &AppState, room: &str) -> (Online, Vec<RoomSummary>) {
        let online = read(app, room).await;
        let mut told = self.told();
        match told.rooms.get(room) {
            None => {
                told.rooms.insert(room.to_owned(), online.clone());
            }
            Some(known) if *known != online => {
                told.mixed.insert(room.to_owned());
                self.mark(room);
            }
            Some(_) => {}
        }
        (online, told.list.clone())
    }
}

async fn read(app: &AppState, room: &str) -> Online {
    let (count, names) = app.store.online(room, ONLINE_SHOWN).await;
    Online {
        count,
        names: names.into_iter().collect(),
    }
}

pub async fn run(app: Arc<AppState>) {
    let mut tick = tokio::time::interval(TICK);
    let mut refresh = tokio::time::interval(FULL_REFRESH);
    let mut room_list = tokio::time::interval(ROOM_LIST_REFRESH);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = refresh.tick() => {
                for room in app.bus.hub().rooms() {
                    app.counts.mark(&room);
                }
                app.new_rooms.retain_recent();
                continue;
            }
            _ = room_list.tick() => {
                push_room_list(&app).await;
                continue;
            }
        }
        let mut read_now = Vec::new();
        for room in app.counts.take() {
            let online = read(&app, &room).await;
            let activity = app.bus.feeds().activity(&room);
            app.store.index_room(&room, online.count, activity).await;
            let topic = Topic::Room(room.clone());
            let mut told = app.counts.told();
            if app.bus.hub().has_listeners(&topic) {
                told.activity.insert(room.clone(), activity);
                read_now.push((topic, room, online));
            } else {
                told.rooms.remove(&room);
                told.mixed.remove(&room);
                told.activity.remove(&room);
            }
        }
        // Before the counts they explain: "X left", then the new count.
        for (room, pseudo) in app.store.take_departures() {
            tracing::info!(room, pseudo, "removed a participant of a dead instance");
            crate::chat::announce_departure(&app, &room, &pseudo).await;
        }
        for (topic, room, online) in read_now {
            // Under the lock: a client taking its snapshot meanwhile gets
            // these changes after it, never before.
            let mut told = app.counts.told();
            let events = if told.mixed.remove(&room) {
                let count = ServerEvent::Count {
                    count: online.count,
                };
                vec![count, online.event()]
            } else {
                let before = told.rooms.get(&room).cloned().unwrap_or_default();
                before.changes(&online)
            };
            for event in events {
                app.bus.hub().deliver(&topic, &crate::encode(&event), None);
            }
            told.rooms.insert(room, online);
        }
    }
}

/// Writes the activity of local rooms that had events, reads the room
/// list, and tells every local chat client when it changed.
async fn push_room_list(app: &AppState) {
    let moved: Vec<(String, u64, u64)> = {
        let told = app.counts.told();
        told.rooms
            .iter()
            .filter_map(|(room, online)| {
                let now = app.bus.feeds().activity(room);
                (told.activity.get(room) != Some(&now)).then(|| (room.clone(), online.count, now))
            })
            .collect()
    };
    for (room, count, activity) in moved {
        app.store.index_room(&room, count, activity).await;
        app.counts.told().activity.insert(room, activity);
    }
    let list = match app.store.busiest_rooms(ROOMS_SHOWN).await {
        Ok(list) => list,
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the room list");
            return;
        }
    };
    let mut told = app.counts.told();
    if told.list == list {
        return;
    }
    let frame = crate::encode(&ServerEvent::Rooms {
        rooms: list.clone(),
    });
    told.list = list;
    for room in app.bus.hub().rooms() {
        app.bus.hub().deliver(&Topic::Room(room), &frame, None);
    }
}
