//! Presence (members and nicknames of rooms, relay registrations) as the
//! chat and relay use it, whichever broker runs.
//!
//! The broker decides (nicknames are unique across instances, counts are
//! totals) and [`local::Local`] mirrors this instance's part. When a
//! broker call fails, the instance goes on alone with its local view and
//! says so in the logs; [`membership`] registers the local view again once
//! the broker answers. What the chat must act on (members of dead instances
//! to announce as gone, nicknames lost to another instance) comes out as
//! [`Event`]s on a channel, not as calls into the chat.

mod local;
pub mod membership;

use crate::broker::{Broker, BrokerError, Claim, RoomEntry, RoomIndex, Roster, Seat};
use crate::fanout::{ConnId, Topic};
use crate::metrics;
use app::protocol::RoomSummary;
use axum::extract::ws::Utf8Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use local::Local;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the chat is told by presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member of a dead instance was removed: to be announced as gone.
    Departed { room: String, pseudo: String },
    /// A member here took a nickname while the broker was away that a
    /// member of another instance held: that one keeps it.
    Lost {
        room: String,
        conn: ConnId,
        pseudo: String,
    },
    /// The room's participants were registered again: counts may differ.
    Changed { room: String },
}

pub struct Presence {
    broker: Arc<dyn Broker>,
    local: Mutex<Local>,
    events: mpsc::UnboundedSender<Event>,
    /// Rooms and actions changed here while the broker did not answer: it
    /// must be told their state again.
    stale: Mutex<HashSet<Topic>>,
}

/// How many rooms and actions a refresh sends to the broker at once.
const REFRESH_CONCURRENCY: usize = 32;

impl Presence {
    pub fn new(broker: Arc<dyn Broker>, events: mpsc::UnboundedSender<Event>) -> Self {
        Presence {
            broker,
            local: Mutex::default(),
            events,
            stale: Mutex::default(),
        }
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock()
    }

    fn tell(&self, event: Event) {
        // The receiver lives as long as the instance.
        let _ = self.events.send(event);
    }

    fn departed(&self, room: &str, pseudos: Vec<String>) {
        for pseudo in pseudos {
            let room = room.to_owned();
            self.tell(Event::Departed { room, pseudo });
        }
    }

    /// A broker call failed: the change stays local, and the topic is told
    /// to the broker again once it answers.
    fn failed(&self, operation: &'static str, topic: Topic, err: &BrokerError) {
        self.stale.lock().insert(topic);
        if matches!(err, BrokerError::Unreachable) {
            return;
        }
        metrics::error("redis", operation);
        tracing::warn!(operation, error = %err, "broker call failed; using this instance's local state until it answers again");
    }

    /// Takes the member's nickname in the room for the connection;
    /// `previous_key` is the key of the nickname it replaces on a rename.
    /// On a reclaim, also the connection that gave way.
    pub async fn claim(
        &self,
        seat: Seat<'_>,
        previous_key: Option<&str>,
    ) -> (Claim, Option<ConnId>) {
        let Seat { room, conn, member } = seat;
        match self.broker.claim(seat, previous_key).await {
            Ok(claimed) => {
                self.departed(room, claimed.departed);
                if claimed.claim != Claim::Taken {
                    let mut local = self.local();
                    if let Some(replaced) = claimed.replaced {
                        local.forget(room, replaced);
                    }
                    local.mirror(room, conn, member, previous_key);
                }
                (claimed.claim, claimed.replaced)
            }
            Err(err) => {
                self.failed("claim", Topic::Room(room.into()), &err);
                self.local().claim(room, conn, member, previous_key)
            }
        }
    }

    /// True if the connection was still the member (not replaced by a newer
    /// connection of the same session, nor swept).
    pub async fn leave(&self, seat: Seat<'_>) -> bool {
        let Seat { room, conn, member } = seat;
        let (local, last_here) = {
            let mut local = self.local();
            (local.leave(room, conn, member), local.count(room) == 0)
        };
        match self.broker.leave(seat, last_here).await {
            Ok(removed) => removed,
            Err(err) => {
                self.failed("leave", Topic::Room(room.into()), &err);
                local
            }
        }
    }

    /// Participants of the room on every instance (this one's alone while
    /// the broker does not answer), and the nicknames of up to `shown`.
    pub async fn roster(&self, room: &str, shown: usize) -> Roster {
        match self.broker.roster(room, shown).await {
            Ok(mut roster) => {
                self.departed(room, std::mem::take(&mut roster.departed));
                roster
            }
            Err(err) => {
                self.failed("count", Topic::Room(room.into()), &err);
                self.local().roster(room, shown)
            }
        }
    }

    /// Records a room's count and activity in the room list; while the
    /// broker is down the list waits rather than the counts.
    pub async fn index_room(&self, room: &str, entry: RoomEntry) {
        if let Err(err) = self.broker.index_room(room, entry).await {
            tracing::debug!(room, error = %err, "cannot update the room list");
        }
    }

    /// The busiest rooms with participants, at most `shown`.
    pub async fn busiest_rooms(
        &self,
        shown: usize,
        now_ms: u64,
    ) -> Result<Vec<RoomSummary>, BrokerError> {
        let RoomIndex {
            fresh: mut rooms,
            stale,
        } = self.broker.room_index(now_ms).await?;
        // A room no instance keeps fresh may hold members of dead
        // instances that nobody else sweeps: they leave now.
        for room in stale {
            self.roster(&room, 0).await;
        }
        rooms.sort_by(|(a, x), (b, y)| y.count.cmp(&x.count).then_with(|| a.cmp(b)));
        let busiest = rooms.into_iter().take(shown);
        Ok(busiest
            .map(|(name, entry)| RoomSummary {
                name,
                count: entry.count,
                activity: entry.activity,
            })
            .collect())
    }

    /// Records a relay client under its action, with its registration
    /// message (the first JSON it sent).
    pub async fn register(&self, action: &str, id: ConnId, registration: &Utf8Bytes) {
        self.local()
            .relay_register(action, id, registration.clone());
        if let Err(err) = self.broker.register(action, id, registration).await {
            self.failed("relay_register", Topic::Action(action.into()), &err);
        }
    }

    pub async fn unregister(&self, action: &str, id: ConnId) {
        let last_here = {
            let mut local = self.local();
            local.relay_unregister(action, id);
            local.action_clients(action).is_empty()
        };
        if let Err(err) = self.broker.unregister(action, id, last_here).await {
            self.failed("relay_unregister", Topic::Action(action.into()), &err);
        }
    }

    /// Keeps this instance's entries alive in the broker, room by room and
    /// action by action, and makes the broker hold exactly the local view
    /// again wherever it lost part of it (restart, expiry) or missed changes
    /// made while it did not answer; with `everything`, in every room and
    /// action (after a failed refresh).
    pub async fn refresh(&self, everything: bool) -> Result<(), BrokerError> {
        let stale = std::mem::take(&mut *self.stale.lock());
        let mut topics: HashSet<Topic> = {
            let local = self.local();
            let rooms = local
                .rooms()
                .into_iter()
                .map(|room| Topic::Room(room.into()));
            rooms
                .chain(
                    local
                        .actions()
                        .into_iter()
                        .map(|action| Topic::Action(action.into())),
                )
                .collect()
        };
        topics.extend(stale.iter().cloned());
        let result = stream::iter(topics)
            .map(|topic| {
                let resync = everything || stale.contains(&topic);
                async move { self.refresh_topic(&topic, resync).await }
            })
            .buffer_unordered(REFRESH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        if result.is_err() {
            // Told again next time, in full.
            self.stale.lock().extend(stale);
        }
        result.map(drop)
    }

    async fn refresh_topic(&self, topic: &Topic, resync: bool) -> Result<(), BrokerError> {
        let refreshed = match topic {
            Topic::Room(room) => {
                let mut refreshed = self.broker.refresh_room(room).await?;
                self.departed(room, std::mem::take(&mut refreshed.departed));
                refreshed
            }
            Topic::Action(action) => self.broker.refresh_action(action).await?,
        };
        if refreshed.present && !resync {
            return Ok(());
        }
        match topic {
            Topic::Room(room) => {
                self.resync_room(room).await?;
                self.tell(Event::Changed {
                    room: room.to_string(),
                });
            }
            Topic::Action(action) => self.resync_action(action).await?,
        }
        Ok(())
    }

    /// Replaces this instance's entries of a room in the broker with its
    /// local view. Whoever the broker still had but who left meanwhile is
    /// announced as gone; whoever lost a nickname to another instance's
    /// holder is told.
    async fn resync_room(&self, room: &str) -> Result<(), BrokerError> {
        let stale = self.broker.depart_room(room).await?;
        let members = self.local().room_members(room);
        for (conn, member) in &members {
            let seat = Seat {
                room,
                conn: *conn,
                member,
            };
            let claimed = self.broker.claim(seat, None).await?;
            self.departed(room, claimed.departed);
            if claimed.claim == Claim::Taken {
                // Taken here while the broker was away, and held there by
                // somebody else: they keep it, this connection gives it up.
                tracing::warn!(%conn, room, pseudo = %member.pseudo, "nickname taken on another instance while the broker was away; it stays with them");
                self.local().leave(room, *conn, member);
                self.tell(Event::Lost {
                    room: room.to_owned(),
                    conn: *conn,
                    pseudo: member.pseudo.to_string(),
                });
            }
        }
        // Whoever left while the entries above were written was removed
        // from the broker before being written back: remove them again.
        let now = self.local().room_members(room);
        for (conn, member) in &members {
            if !now.iter().any(|(c, _)| c == conn) {
                self.broker
                    .leave(
                        Seat {
                            room,
                            conn: *conn,
                            member,
                        },
                        now.is_empty(),
                    )
                    .await?;
            }
        }
        let gone = stale
            .into_iter()
            .filter(|pseudo| !now.iter().any(|(_, m)| m.pseudo.as_str() == pseudo))
            .collect();
        self.departed(room, gone);
        Ok(())
    }

    async fn resync_action(&self, action: &str) -> Result<(), BrokerError> {
        self.broker.depart_action(action).await?;
        let clients = self.local().action_clients(action);
        for (id, registration) in &clients {
            self.broker.register(action, *id, registration).await?;
        }
        let now = self.local().action_clients(action);
        for (id, _) in &clients {
            if !now.iter().any(|(i, _)| i == id) {
                self.broker.unregister(action, *id, now.is_empty()).await?;
            }
        }
        Ok(())
    }

    /// Removes all of this instance's entries from the broker (clean
    /// shutdown). Returns the participants removed (those who did not
    /// reconnect elsewhere meanwhile), as departures.
    pub async fn depart(&self) -> Result<Vec<Event>, BrokerError> {
        let (rooms, actions) = {
            let local = self.local();
            (local.rooms(), local.actions())
        };
        let mut departures = Vec::new();
        for room in rooms {
            let departed = self.broker.depart_room(&room).await?;
            departures.extend(departed.into_iter().map(|pseudo| Event::Departed {
                room: room.clone(),
                pseudo,
            }));
        }
        for action in actions {
            self.broker.depart_action(&action).await?;
        }
        Ok(departures)
    }
}
