//! What the chat page shows, as signals, and how each server event changes it.
//! Plain logic with no browser API, so the server can render it and native
//! tests can exercise it.

use crate::protocol::{
    Amendment, ChatMessage, ClientMessage, ErrorCode, Position, RoomSummary, ServerEvent,
    SystemMessage, DEFAULT_ROOM,
};
use leptos::prelude::*;
use std::collections::HashMap;
use uuid::Uuid;

/// Entries kept on screen; older ones scroll away for good.
const MAX_ENTRIES: usize = 500;
/// Earlier events asked for at a time when the reader scrolls back.
const PAGE: u32 = 50;
/// Sent messages remembered until the server stores or refuses them.
const MAX_IN_FLIGHT: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Connected,
    Disconnected,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message(ChatMessage),
    System(SystemMessage),
}

impl Entry {
    /// Its place in the room's stream (0 before it has one).
    pub fn offset(&self) -> u64 {
        match self {
            Entry::Message(m) => m.offset,
            Entry::System(s) => s.offset,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            Entry::Message(m) => m.id,
            Entry::System(s) => s.id,
        }
    }

    /// What a list of entries is keyed by: a deleted or edited message is
    /// drawn again.
    pub fn key(&self) -> (Uuid, bool, bool, usize) {
        match self {
            Entry::Message(m) => (m.id, m.deleted, m.edited, m.text.len()),
            Entry::System(s) => (s.id, false, false, 0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ChatState {
    pub status: RwSignal<Status>,
    pub count: RwSignal<u64>,
    pub entries: RwSignal<Vec<Entry>>,
    /// The nickname the server confirmed, once joined.
    pub me: RwSignal<Option<String>>,
    /// Every nickname this page held, so that own messages stay marked
    /// after a rename.
    pub my_names: RwSignal<Vec<String>>,
    pub error: RwSignal<Option<String>>,
    /// Where this page is in the room's stream: a reconnect resumes here.
    pub position: RwSignal<Option<Position>>,
    /// The server said some events could not be recovered (the page was
    /// away longer than the history reaches, or the history was lost).
    pub unrecovered: RwSignal<bool>,
    /// Texts sent (or waiting to be) that the server has not echoed yet:
    /// shown as "sending".
    pub in_flight: RwSignal<Vec<String>>,
    /// A message the server could not store (`unavailable`): the page puts
    /// it back in the composer, so that nothing typed is lost.
    pub returned: RwSignal<Option<String>>,
    /// The room this page is in.
    pub room: RwSignal<String>,
    /// The room's participants by nickname, sorted, and how many more.
    pub online: RwSignal<Vec<String>>,
    pub online_more: RwSignal<u64>,
    /// Who is typing, each with the stamp of their latest typing frame.
    pub typing: RwSignal<Vec<(String, u64)>>,
    /// Typing frames received so far: the next one's stamp. Nothing on
    /// the page shows it, so it is not a signal.
    typing_stamps: StoredValue<u64>,
    /// The busiest rooms, across all instances.
    pub rooms: RwSignal<Vec<RoomSummary>>,
    /// Each listed room's activity when this page last looked at it.
    seen: RwSignal<HashMap<String, u64>>,
    /// Whether the tab is hidden (read only when a message arrives), and
    /// the messages that arrived since.
    hidden: StoredValue<bool>,
    pub unread: RwSignal<u32>,
    /// Moderation is on (the server requires access tokens): authors may
    /// edit and delete their recent messages.
    pub moderation: RwSignal<bool>,
    /// This participant moderates the room.
    pub moderator: RwSignal<bool>,
    /// This page stopped talking to the room (another tab took over, or a
    /// moderator removed this participant; `error` says which): it does not
    /// reconnect until the person asks.
    pub ended: RwSignal<bool>,
    /// Scroll-back reached the room's first retained event.
    pub oldest: RwSignal<bool>,
    /// Pages of earlier events loaded so far (the list keeps what the
    /// reader looks at in place, and a screen reader hears of each).
    pub pages: RwSignal<u32>,
}

impl ChatState {
    pub fn new() -> Self {
        Self {
            status: RwSignal::new(Status::Connecting),
            count: RwSignal::new(0),
            entries: RwSignal::new(Vec::new()),
            me: RwSignal::new(None),
            my_names: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            position: RwSignal::new(None),
            unrecovered: RwSignal::new(false),
            in_flight: RwSignal::new(Vec::new()),
            returned: RwSignal::new(None),
            room: RwSignal::new(DEFAULT_ROOM.to_owned()),
            online: RwSignal::new(Vec::new()),
            online_more: RwSignal::new(0),
            typing: RwSignal::new(Vec::new()),
            typing_stamps: StoredValue::new(0),
            rooms: RwSignal::new(Vec::new()),
            seen: RwSignal::new(HashMap::new()),
            hidden: StoredValue::new(false),
            unread: RwSignal::new(0),
            moderation: RwSignal::new(false),
            moderator: RwSignal::new(false),
            ended: RwSignal::new(false),
            oldest: RwSignal::new(false),
            pages: RwSignal::new(0),
        }
    }

    /// Another room: what was shown belongs to the old one. The nickname
    /// stays (the connection takes it again in the new room).
    pub fn switch_room(&self, room: &str) {
        self.room.set(room.to_owned());
        self.entries.set(Vec::new());
        self.position.set(None);
        self.count.set(0);
        self.online.set(Vec::new());
        self.online_more.set(0);
        self.typing.set(Vec::new());
        self.unrecovered.set(false);
        self.error.set(None);
        self.in_flight.update(Vec::clear);
        self.oldest.set(false);
        self.pages.set(0);
        self.mark_seen();
    }

    /// Whether the server confirmed a nickname (tracked).
    pub fn joined(&self) -> bool {
        self.me.with(Option::is_some)
    }

    /// The tab became visible (or hidden).
    pub fn set_hidden(&self, hidden: bool) {
        self.hidden.set_value(hidden);
        if !hidden {
            self.unread.set(0);
        }
    }

    /// Whether a listed room had messages since this page last looked.
    pub fn has_unread(&self, room: &RoomSummary) -> bool {
        room.name != self.room.get()
            && self
                .seen
                .with(|seen| seen.get(&room.name).is_some_and(|&at| room.activity > at))
    }

    /// The current room is read up to its latest activity.
    fn mark_seen(&self) {
        let room = self.room.get_untracked();
        let activity = self
            .rooms
            .with_untracked(|rooms| rooms.iter().find(|r| r.name == room).map(|r| r.activity));
        if let Some(activity) = activity {
            self.seen.update(|seen| {
                seen.insert(room, activity);
            });
        }
    }

    /// The stamp of `pseudo`'s latest typing frame: their indicator goes
    /// when [`ChatState::typing_expired`] comes with the same stamp.
    pub fn typing_stamp(&self, pseudo: &str) -> Option<u64> {
        self.typing
            .with_untracked(|typing| typing.iter().find(|(p, _)| p == pseudo).map(|(_, s)| *s))
    }

    pub fn typing_expired(&self, pseudo: &str, stamp: u64) {
        self.typing
            .update(|typing| typing.retain(|(p, s)| !(p == pseudo && *s == stamp)));
    }

    fn stop_typing(&self, pseudo: &str) {
        if self.typing_stamp(pseudo).is_some() {
            self.typing
                .update(|typing| typing.retain(|(p, _)| p != pseudo));
        }
    }

    /// A `say` went out with this text.
    pub fn sent(&self, text: &str) {
        self.in_flight.update(|texts| {
            texts.push(text.to_owned());
            if texts.len() > MAX_IN_FLIGHT {
                texts.remove(0);
            }
        });
    }

    /// A new connection: what was in flight on the old one was stored or
    /// not; the catch-up shows which.
    pub fn reconnected(&self) {
        self.in_flight.update(Vec::clear);
    }

    /// The stream position to resume from after a reconnect.
    pub fn since(&self) -> Option<Position> {
        self.position.get_untracked()
    }

    /// Applies one server event. Returns the error code when it is an error.
    pub fn apply(&self, event: ServerEvent) -> Option<ErrorCode> {
        self.apply_event(event, true)
    }

    /// `live`: the event just happened (not replayed history).
    fn apply_event(&self, event: ServerEvent, live: bool) -> Option<ErrorCode> {
        if let Some(position) = event.position().filter(|p| !p.epoch.is_empty()) {
            self.position.set(Some(position));
        }
        match event {
            ServerEvent::History {
                epoch,
                offset,
                recovered,
                events,
                ..
            } => self.on_history(Position { epoch, offset }, recovered, events),
            ServerEvent::Joined {
                pseudo,
                moderation,
                moderator,
                ..
            } => {
                self.moderation.set(moderation);
                self.moderator.set(moderator);
                self.on_joined(pseudo);
            }
            ServerEvent::Deleted(a) | ServerEvent::Edited(a) => self.on_amendment(a),
            ServerEvent::Replaced => {
                self.ended.set(true);
                let why = "This conversation continues in another tab.";
                self.error.set(Some(why.into()));
            }
            ServerEvent::Message(m) => self.on_message(m, live),
            ServerEvent::System(s) => self.push(Entry::System(s)),
            ServerEvent::Count { count } => self.count.set(count),
            ServerEvent::Online { mut names, more } => {
                names.sort();
                names.dedup();
                self.online.set(names);
                self.online_more.set(more);
            }
            ServerEvent::OnlineChanged {
                added,
                removed,
                more,
            } => self.on_online_changed(added, removed, more),
            ServerEvent::Typing { pseudo } => self.on_typing(pseudo),
            ServerEvent::Rooms { rooms } => self.on_rooms(rooms),
            ServerEvent::Page { events, oldest, .. } => self.on_page(events, oldest),
            // The socket task follows acknowledgements (see `client`).
            ServerEvent::Ack { .. } => {}
            // The message says how long a mute, ban or slow mode lasts.
            ServerEvent::Error { code, message, .. } => {
                if matches!(code, ErrorCode::Kicked | ErrorCode::Banned) {
                    self.ended.set(true);
                }
                self.on_error(code, message);
                return Some(code);
            }
        }
        None
    }

    /// A history frame: its events, then the stream position it ends at
    /// (an empty epoch when it has none).
    fn on_history(&self, end: Position, recovered: bool, events: Vec<ServerEvent>) {
        for event in events {
            self.apply_event(event, false);
        }
        if !end.epoch.is_empty() {
            self.position.set(Some(end));
        } else if self.position.with_untracked(Option::is_none) {
            // The room had no event yet: resuming from "before the
            // first event" still tells a reconnect what it missed.
            self.position.set(Some(Position::default()));
        }
        if !recovered {
            self.unrecovered.set(true);
        }
    }

    fn on_joined(&self, pseudo: String) {
        self.error.set(None);
        self.my_names.update(|names| {
            if !names.contains(&pseudo) {
                names.push(pseudo.clone());
            }
        });
        self.me.set(Some(pseudo));
    }

    /// A chat message: one of ours settles what was in flight; another's
    /// counts as unread while the tab is hidden.
    fn on_message(&self, m: ChatMessage, live: bool) {
        let mine = self
            .my_names
            .with_untracked(|names| names.contains(&m.author));
        if mine {
            let sent_here = self.in_flight.try_update(|texts| {
                let i = texts.iter().position(|t| *t == m.text)?;
                Some(texts.remove(i))
            });
            // A message of ours went through: an old error is moot.
            if sent_here.flatten().is_some() {
                self.error.set(None);
            }
        } else if live && self.hidden.get_value() {
            self.unread.update(|n| *n += 1);
        }
        self.stop_typing(&m.author);
        self.push(Entry::Message(m));
    }

    fn on_online_changed(&self, added: Vec<String>, removed: Vec<String>, more: u64) {
        self.online.update(|names| {
            names.retain(|n| !removed.contains(n));
            for name in added {
                if let Err(at) = names.binary_search(&name) {
                    names.insert(at, name);
                }
            }
        });
        self.online_more.set(more);
    }

    /// Somebody else is typing (this page's own typing is not shown).
    fn on_typing(&self, pseudo: String) {
        let mine = self.my_names.with_untracked(|n| n.contains(&pseudo));
        if !mine {
            self.typing_stamps.update_value(|s| *s += 1);
            let stamp = self.typing_stamps.get_value();
            self.typing.update(|typing| {
                typing.retain(|(p, _)| *p != pseudo);
                typing.push((pseudo, stamp));
            });
        }
    }

    fn on_rooms(&self, rooms: Vec<RoomSummary>) {
        self.seen.update(|seen| {
            for room in &rooms {
                seen.entry(room.name.clone()).or_insert(room.activity);
            }
        });
        self.rooms.set(rooms);
        self.mark_seen();
    }

    /// A message was deleted or edited: its entry changes in place.
    fn on_amendment(&self, amendment: Amendment) {
        self.entries.update(|entries| {
            let found = entries.iter_mut().find_map(|entry| match entry {
                Entry::Message(m) if m.id == amendment.target => Some(m),
                _ => None,
            });
            if let Some(message) = found {
                match amendment.text {
                    Some(text) => {
                        message.text = text;
                        message.edited = true;
                    }
                    None => {
                        message.text.clear();
                        message.deleted = true;
                    }
                }
            }
        });
    }

    fn on_error(&self, code: ErrorCode, message: String) {
        if matches!(
            code,
            ErrorCode::Unavailable | ErrorCode::Muted | ErrorCode::SlowMode
        ) {
            // Refusals come back in the order the messages went.
            let oldest = self
                .in_flight
                .try_update(|texts| (!texts.is_empty()).then(|| texts.remove(0)));
            if let Some(text) = oldest.flatten() {
                self.returned.set(Some(text));
            }
        }
        self.error.set(Some(message));
    }

    /// Earlier events the reader asked for, shown above the others (none
    /// twice). Deletions and edits in them are already in the stored
    /// messages.
    fn on_page(&self, events: Vec<ServerEvent>, oldest: bool) {
        let older: Vec<Entry> = events
            .into_iter()
            .filter_map(|event| match event {
                ServerEvent::Message(m) => Some(Entry::Message(m)),
                ServerEvent::System(s) => Some(Entry::System(s)),
                _ => None,
            })
            .collect();
        self.entries.update(|entries| {
            let mut merged: Vec<Entry> = older
                .into_iter()
                .filter(|e| !entries.iter().any(|x| x.id() == e.id()))
                .collect();
            merged.append(entries);
            *entries = merged;
        });
        self.oldest.set(oldest);
        self.pages.update(|n| *n += 1);
    }

    /// The first offset shown (tracked), if any entry is shown.
    fn first_offset(&self) -> Option<u64> {
        self.entries
            .with(|entries| entries.iter().map(Entry::offset).find(|o| *o > 0))
    }

    /// Whether nothing older than what is shown is retained (tracked).
    pub fn at_beginning(&self) -> bool {
        self.oldest.get() || self.first_offset().is_none_or(|first| first <= 1)
    }

    /// The frame asking for the page before what is shown, unless the
    /// beginning is shown.
    pub fn older(&self) -> Option<ClientMessage> {
        if self.oldest.get_untracked() {
            return None;
        }
        let first = self
            .entries
            .with_untracked(|entries| entries.iter().map(Entry::offset).find(|o| *o > 0))?;
        (first > 1).then_some(ClientMessage::Older {
            before: first,
            limit: PAGE,
        })
    }

    /// Adds an entry unless it is already shown: history replayed after a
    /// reconnect may overlap what arrived live.
    fn push(&self, entry: Entry) {
        let id = entry.id();
        if self
            .entries
            .with_untracked(|e| e.iter().rev().any(|x| x.id() == id))
        {
            return;
        }
        self.entries.update(|e| {
            e.push(entry);
            if e.len() > MAX_ENTRIES {
                e.drain(..e.len() - MAX_ENTRIES);
            }
        });
    }
}

impl Default for ChatState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SystemKind;

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::new_v4(),
            author: "a".into(),
            author_id: "1".into(),
            text: text.into(),
            ts: 0,
            deleted: false,
            edited: false,
            server: false,
        }
    }

    fn at(offset: u64, text: &str) -> ServerEvent {
        ServerEvent::Message(ChatMessage {
            epoch: "e".into(),
            offset,
            ..message(text)
        })
    }

    /// Earlier pages go above what is shown, none twice; the page asks for
    /// the one before its first entry until the beginning.
    #[test]
    fn scroll_back_prepends_pages_until_the_beginning() {
        Owner::new().with(scroll_back_prepends_pages_until_the_beginning_in_owner);
    }

    fn scroll_back_prepends_pages_until_the_beginning_in_owner() {
        let state = ChatState::new();
        state.apply(ServerEvent::History {
            epoch: "e".into(),
            offset: 60,
            recovered: true,
            more: false,
            events: vec![at(59, "59"), at(60, "60")],
        });
        assert!(!state.at_beginning());
        assert_eq!(
            state.older(),
            Some(ClientMessage::Older {
                before: 59,
                limit: PAGE
            })
        );
        let shown = state.entries.with_untracked(|e| e[0].clone());
        let again = match &shown {
            Entry::Message(m) => ServerEvent::Message(m.clone()),
            Entry::System(_) => unreachable!(),
        };
        state.apply(ServerEvent::Page {
            epoch: "e".into(),
            events: vec![at(57, "57"), at(58, "58"), again],
            oldest: false,
        });
        let texts: Vec<String> = state.entries.with_untracked(|e| {
            e.iter()
                .map(|entry| match entry {
                    Entry::Message(m) => m.text.clone(),
                    Entry::System(s) => s.text(),
                })
                .collect()
        });
        assert_eq!(texts, ["57", "58", "59", "60"]);
        assert_eq!(state.pages.get_untracked(), 1);
        state.apply(ServerEvent::Page {
            epoch: "e".into(),
            events: vec![at(1, "1")],
            oldest: true,
        });
        assert!(state.at_beginning());
        assert_eq!(state.older(), None);
        state.switch_room("other");
        assert_eq!(state.pages.get_untracked(), 0);
    }

    #[test]
    fn deletions_edits_and_removals_change_the_page() {
        Owner::new().with(deletions_edits_and_removals_change_the_page_in_owner);
    }

    fn deletions_edits_and_removals_change_the_page_in_owner() {
        let state = ChatState::new();
        let (gone, kept) = (message("gone"), message("tpyo"));
        state.apply(ServerEvent::Message(gone.clone()));
        state.apply(ServerEvent::Message(kept.clone()));
        let amendment = |target, text: Option<&str>| Amendment {
            epoch: "e".into(),
            offset: 9,
            id: Uuid::new_v4(),
            target,
            by: "mod".into(),
            text: text.map(str::to_owned),
            ts: 1,
        };
        state.apply(ServerEvent::Deleted(amendment(gone.id, None)));
        state.apply(ServerEvent::Edited(amendment(kept.id, Some("typo"))));
        let shown: Vec<(String, bool, bool)> = state.entries.with_untracked(|entries| {
            entries
                .iter()
                .map(|e| match e {
                    Entry::Message(m) => (m.text.clone(), m.deleted, m.edited),
                    Entry::System(_) => unreachable!(),
                })
                .collect()
        });
        assert_eq!(
            shown,
            [(String::new(), true, false), ("typo".into(), false, true)]
        );
        assert!(!state.ended.get_untracked());
        state.apply(ServerEvent::Replaced);
        assert!(state.ended.get_untracked());
        assert!(state.error.get_untracked().unwrap().contains("another tab"));
        state.ended.set(false);
        let kicked = ServerEvent::Error {
            code: ErrorCode::Kicked,
            message: "you were removed from the room by mod".into(),
            until: None,
            retry_after_ms: None,
        };
        assert_eq!(state.apply(kicked), Some(ErrorCode::Kicked));
        assert!(state.ended.get_untracked());
    }

    #[test]
    fn replayed_events_are_shown_once() {
        Owner::new().with(replayed_events_are_shown_once_in_owner);
    }

    fn replayed_events_are_shown_once_in_owner() {
        let state = ChatState::new();
        let first = message("one");
        state.apply(ServerEvent::Message(first.clone()));
        state.apply(ServerEvent::History {
            epoch: String::new(),
            offset: 0,
            recovered: true,
            more: false,
            events: vec![
                ServerEvent::Message(first.clone()),
                ServerEvent::Message(message("two")),
            ],
        });
        let texts: Vec<String> = state.entries.with_untracked(|e| {
            e.iter()
                .map(|x| match x {
                    Entry::Message(m) => m.text.clone(),
                    Entry::System(_) => String::new(),
                })
                .collect()
        });
        assert_eq!(texts, ["one", "two"]);
    }

    #[test]
    fn joined_records_names_and_errors_are_reported() {
        Owner::new().with(joined_records_names_and_errors_are_reported_in_owner);
    }

    fn joined_records_names_and_errors_are_reported_in_owner() {
        let state = ChatState::new();
        let session = Uuid::new_v4();
        for pseudo in ["al", "bo", "al"] {
            state.apply(ServerEvent::Joined {
                pseudo: pseudo.into(),
                session,
                room: "r".into(),
                moderation: false,
                moderator: false,
            });
        }
        assert_eq!(state.me.get_untracked().as_deref(), Some("al"));
        assert_eq!(state.my_names.get_untracked(), ["al", "bo"]);
        let code = state.apply(ServerEvent::Error {
            code: ErrorCode::PseudoTaken,
            message: "taken".into(),
            until: None,
            retry_after_ms: None,
        });
        assert_eq!(code, Some(ErrorCode::PseudoTaken));
        assert_eq!(state.error.get_untracked().as_deref(), Some("taken"));
        state.apply(ServerEvent::System(SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::new_v4(),
            kind: SystemKind::Joined,
            pseudo: "x".into(),
            previous: None,
            others: Vec::new(),
            more: 0,
            ts: 0,
            by: None,
            until: None,
            seconds: None,
        }));
        state.apply(ServerEvent::Count { count: 3 });
        assert_eq!(state.count.get_untracked(), 3);
        assert_eq!(state.entries.with_untracked(Vec::len), 1);
    }

    #[test]
    fn a_message_the_server_could_not_store_comes_back() {
        Owner::new().with(a_message_the_server_could_not_store_comes_back_in_owner);
    }

    fn a_message_the_server_could_not_store_comes_back_in_owner() {
        let state = ChatState::new();
        state.apply(ServerEvent::Joined {
            pseudo: "a".into(),
            session: Uuid::new_v4(),
            room: "r".into(),
            moderation: false,
            moderator: false,
        });
        state.sent("stored");
        state.sent("refused");
        state.apply(ServerEvent::Message(message("stored")));
        assert_eq!(state.returned.get_untracked(), None);
        let unavailable = || ServerEvent::Error {
            code: ErrorCode::Unavailable,
            message: "not sent".into(),
            until: None,
            retry_after_ms: None,
        };
        state.apply(unavailable());
        assert_eq!(state.returned.get_untracked().as_deref(), Some("refused"));
        // Nothing else in flight: nothing more comes back.
        state.returned.set(None);
        state.apply(unavailable());
        assert_eq!(state.returned.get_untracked(), None);
    }

    #[test]
    fn the_position_follows_events_and_a_lost_gap_is_flagged() {
        Owner::new().with(the_position_follows_events_and_a_lost_gap_is_flagged_in_owner);
    }

    fn the_position_follows_events_and_a_lost_gap_is_flagged_in_owner() {
        let state = ChatState::new();
        assert_eq!(state.since(), None);
        let at = |epoch: &str, offset| {
            Some(Position {
                epoch: epoch.into(),
                offset,
            })
        };
        state.apply(ServerEvent::History {
            epoch: "e1".into(),
            offset: 4,
            recovered: true,
            more: false,
            events: vec![],
        });
        assert_eq!(state.since(), at("e1", 4));
        let mut live = message("five");
        live.epoch = "e1".into();
        live.offset = 5;
        state.apply(ServerEvent::Message(live));
        assert_eq!(state.since(), at("e1", 5));
        assert!(!state.unrecovered.get_untracked());
        // A gap the server could not fill: flagged, the position kept.
        state.apply(ServerEvent::History {
            epoch: String::new(),
            offset: 0,
            recovered: false,
            more: false,
            events: vec![],
        });
        assert!(state.unrecovered.get_untracked());
        assert_eq!(state.since(), at("e1", 5));
    }
}
