//! Putting events in front of a room: stream events (messages, system
//! messages) go through the room's stream, so every instance hands them
//! out in one order; typing frames and counts go straight to listeners.
//! Presence events (members of dead instances, nicknames lost to another
//! instance) are acted on here.

use super::crowd::{self, Group};
use super::{encode, Chat};
use crate::broker::{self, Appended, BrokerError, Entry};
use crate::clock::now_ms;
use crate::fanout::{close, ConnId, Topic};
use crate::presence::Event;
use app::protocol::{ErrorCode, ServerEvent, SystemKind, SystemMessage};
use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

impl Chat {
    /// Encodes once and appends to the room's stream, which gives the event
    /// its position and publishes it to every instance; this instance's
    /// connections get it through the room's feed, in order.
    pub(super) async fn publish(&self, room: &str, event: &ServerEvent) -> Result<(), BrokerError> {
        let frame = encode(event);
        let entry = Entry {
            frame: &frame,
            ..Entry::default()
        };
        self.append(room, entry).await.map(drop)
    }

    /// Appends under the entry's conditions (see [`Entry`]); a new event is
    /// handed out to this instance's listeners (a repeat is not: its
    /// readers have it).
    pub(super) async fn append(
        &self,
        room: &str,
        entry: Entry<'_>,
    ) -> Result<Appended, BrokerError> {
        let appended = match &self.outbox {
            Some(outbox) => outbox.append(room, entry).await?,
            None => self.broker.append(room, entry).await?,
        };
        if let Appended::New(frame) = &appended {
            self.feeds.offer(room, frame.clone());
        }
        Ok(appended)
    }

    pub(super) fn system(
        &self,
        kind: SystemKind,
        pseudo: String,
        previous: Option<String>,
    ) -> SystemMessage {
        SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::new_v4(),
            kind,
            pseudo,
            previous,
            others: Vec::new(),
            more: 0,
            ts: now_ms(),
            by: None,
            until: None,
            seconds: None,
        }
    }

    /// A system event nobody waits for: while the stream is unavailable it
    /// is not recorded (the count still tells the room who is there).
    pub(super) async fn announce(&self, room: &str, event: &ServerEvent) {
        if let Err(err) = self.publish(room, event).await {
            tracing::warn!(room, error = %err, "system message not recorded");
        }
    }

    /// The participants of a room changed: recount here and everywhere.
    pub(super) async fn presence_changed(&self, room: &str) {
        self.counts.mark(room);
        self.broker.presence_changed(room).await;
    }

    /// Tells the room that somebody left and that its count changed.
    pub async fn departed(&self, room: &str, pseudo: &str) {
        self.arrival(room, SystemKind::Left, pseudo).await;
        self.presence_changed(room).await;
    }

    /// Announces that somebody joined or left: at once in a small room,
    /// with others a moment later in a crowded one (see [`crowd`]).
    pub(super) async fn arrival(&self, room: &str, kind: SystemKind, pseudo: &str) {
        let topic = Topic::Room(room.into());
        let size = self
            .counts
            .last_count(room)
            .max(self.hub.listeners(&topic) as u64);
        if size >= crowd::CROWD {
            return self.crowds.add(room, kind, pseudo);
        }
        let event = self.system(kind, pseudo.to_owned(), None);
        self.announce(room, &ServerEvent::System(event)).await;
    }

    /// Appends the joins and leaves gathered in crowded rooms, one event
    /// per room and kind.
    pub async fn announce_crowds(&self) {
        for (room, kind, Group { names, more }) in self.crowds.take() {
            let mut names = names.into_iter();
            let Some(first) = names.next() else { continue };
            let mut event = self.system(kind, first, None);
            event.others = names.collect();
            event.more = more;
            self.announce(&room, &ServerEvent::System(event)).await;
        }
    }

    /// A frame that is not part of the room's stream (typing), for every
    /// listener of the topic on every instance but the sender.
    pub(super) async fn broadcast(&self, topic: &Topic, frame: Utf8Bytes, sender: ConnId) {
        let broker = self.broker.as_ref();
        let sent = broker::broadcast(broker, &self.hub, self.instance, topic, frame, sender);
        // Other instances miss it while the broker is down: it is a hint.
        let _ = sent.await;
    }

    /// Acts on what presence found.
    pub async fn on_presence(&self, event: Event) {
        match event {
            Event::Departed { room, pseudo } => {
                tracing::info!(room, pseudo, "removed a participant of a dead instance");
                self.departed(&room, &pseudo).await;
            }
            Event::Lost { room, conn, pseudo } => self.lost_nickname(&room, conn, &pseudo),
            Event::Changed { room } => self.presence_changed(&room).await,
        }
    }

    /// A member took a nickname while the broker was away that a member of
    /// another instance held: that one keeps it. This one is told why, then
    /// closed; its client reconnects and must choose another nickname, so
    /// two people never speak under one name.
    fn lost_nickname(&self, room: &str, conn: ConnId, pseudo: &str) {
        let message = format!(
            "the nickname {pseudo} was also taken on another server while the chat was partly offline; it stays with them: choose another one"
        );
        let error = encode(&ServerEvent::Error {
            code: ErrorCode::PseudoTaken,
            message,
            until: None,
            retry_after_ms: None,
        });
        let topic = Topic::Room(room.into());
        self.hub
            .close_one(&topic, conn, error, close::NICKNAME_LOST);
    }
}
