//! Who is in each room, pushed to clients coalesced: the participant count,
//! the online list (as changes), and the room list.
//!
//! A change only marks its room dirty; a ticker reads each dirty room once
//! per tick and pushes to this instance's clients only what differs from
//! what they were last told. A thousand joins in a burst thus cost each
//! client a few frames, not a thousand. Every few seconds all local rooms
//! are read again, which heals any missed notification and keeps their
//! lines in the room list alive. Each tick also acts on presence events,
//! such as the participants of dead instances that the broker removed
//! (found by any call that touched their room): "X left" comes before the
//! count it explains.

use super::{encode, Chat};
use crate::broker::RoomEntry;
use crate::clock::now_ms;
use crate::fanout::{Hub, Topic};
use crate::presence::Event;
use app::protocol::{RoomSummary, ServerEvent, ONLINE_SHOWN, ROOMS_SHOWN};
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Presence events, taken by whichever run of the counts task is live.
pub type Events = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>>;

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
        let mut dirty = self.dirty.lock();
        if !dirty.contains(room) {
            dirty.insert(room.to_owned());
        }
    }

    /// Every room with listeners here is recounted at the next tick.
    pub fn mark_all(&self, hub: &Hub) {
        for room in hub.rooms() {
            self.mark(&room);
        }
    }

    /// The room's participants as this instance last told its clients
    /// (0 when it has none there).
    pub fn last_count(&self, room: &str) -> u64 {
        self.told().rooms.get(room).map_or(0, |online| online.count)
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.dirty.lock())
    }

    fn told(&self) -> MutexGuard<'_, Told> {
        self.told.lock()
    }

    /// What a client opening a socket to the room starts from: a fresh
    /// read. If the room's other clients here were told something else, the
    /// next tick tells everybody the whole list (changes would be relative
    /// to two different starting points); the others are not sent anything
    /// now, so that a burst of joins stays a few frames. Call after the
    /// client listens to the room, so that it misses no change.
    pub async fn snapshot(&self, chat: &Chat, room: &str) -> (Online, Vec<RoomSummary>) {
        let online = read(chat, room).await;
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

async fn read(chat: &Chat, room: &str) -> Online {
    let roster = chat.presence.roster(room, ONLINE_SHOWN).await;
    Online {
        count: roster.count,
        names: roster.names.into_iter().collect(),
    }
}

pub async fn run(chat: Arc<Chat>, events: Events) {
    let mut events = events.lock().await;
    let mut tick = tokio::time::interval(TICK);
    let mut refresh = tokio::time::interval(FULL_REFRESH);
    let mut room_list = tokio::time::interval(ROOM_LIST_REFRESH);
    loop {
        tokio::select! {
            _ = chat.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = refresh.tick() => {
                chat.counts.mark_all(&chat.hub);
                continue;
            }
            _ = room_list.tick() => {
                push_room_list(&chat).await;
                continue;
            }
        }
        let read_now = read_marked(&chat).await;
        // Before the counts they explain: "X left", then the new count.
        while let Ok(event) = events.try_recv() {
            chat.on_presence(event).await;
        }
        for (topic, room, online) in read_now {
            push(&chat, &topic, room, online);
        }
    }
}

/// Reads the rooms marked since the last tick and records them in the room
/// list; returns those with listeners here, to be told.
async fn read_marked(chat: &Chat) -> Vec<(Topic, String, Online)> {
    let mut read_now = Vec::new();
    for room in chat.counts.take() {
        let online = read(chat, &room).await;
        let activity = chat.feeds.activity(&room);
        let entry = RoomEntry {
            count: online.count,
            activity,
            updated_ms: now_ms(),
        };
        chat.presence.index_room(&room, entry).await;
        let topic = Topic::Room(room.as_str().into());
        let mut told = chat.counts.told();
        if chat.hub.has_listeners(&topic) {
            told.activity.insert(room.clone(), activity);
            read_now.push((topic, room, online));
        } else {
            told.rooms.remove(&room);
            told.mixed.remove(&room);
            told.activity.remove(&room);
        }
    }
    read_now
}

/// Tells a room's listeners here what changed since they were last told.
fn push(chat: &Chat, topic: &Topic, room: String, online: Online) {
    // Under the lock: a client taking its snapshot meanwhile gets these
    // changes after it, never before.
    let mut told = chat.counts.told();
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
        chat.hub.deliver(topic, &encode(&event), None);
    }
    told.rooms.insert(room, online);
}

/// Writes the activity of local rooms that had events, reads the room
/// list, and tells every local chat client when it changed.
async fn push_room_list(chat: &Chat) {
    let moved: Vec<(String, RoomEntry)> = {
        let told = chat.counts.told();
        told.rooms
            .iter()
            .filter_map(|(room, online)| {
                let activity = chat.feeds.activity(room);
                let entry = RoomEntry {
                    count: online.count,
                    activity,
                    updated_ms: now_ms(),
                };
                (told.activity.get(room) != Some(&activity)).then(|| (room.clone(), entry))
            })
            .collect()
    };
    for (room, entry) in moved {
        chat.presence.index_room(&room, entry).await;
        chat.counts.told().activity.insert(room, entry.activity);
    }
    let list = match chat.presence.busiest_rooms(ROOMS_SHOWN, now_ms()).await {
        Ok(list) => list,
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the room list");
            return;
        }
    };
    let mut told = chat.counts.told();
    if told.list == list {
        return;
    }
    let frame = encode(&ServerEvent::Rooms {
        rooms: list.clone(),
    });
    told.list = list;
    for room in chat.hub.rooms() {
        chat.hub.deliver(&Topic::Room(room.into()), &frame, None);
    }
}
