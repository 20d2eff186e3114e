//! Reads server frames in the browser without serde.
//!
//! serde's derived decoders for the internally tagged [`ServerEvent`] (and
//! the error messages they can produce, float formatting included) are a
//! large share of the WASM. The browser already has a JSON parser: the
//! page parses a frame with `JSON.parse` and this module picks the fields
//! out of the result. It reads exactly what serde writes; the tests check
//! that against serde for every kind of event.

use crate::protocol::{
    Amendment, ChatMessage, ErrorCode, RoomSummary, ServerEvent, SystemKind, SystemMessage,
};
use uuid::Uuid;

/// A parsed JSON value whose parts can be looked at: the browser's
/// `JSON.parse` result in the page, `serde_json::Value` in the tests.
pub trait Json: Sized {
    /// The member `key` of an object; `None` for other values, or when the
    /// member is missing or null.
    fn member(&self, key: &str) -> Option<Self>;
    fn string(&self) -> Option<String>;
    fn number(&self) -> Option<f64>;
    fn boolean(&self) -> Option<bool>;
    fn items(&self) -> Option<Vec<Self>>;
}

/// The event a frame carries, or `None` when it is not a server event this
/// page knows (the page then ignores it, as it did with serde).
pub fn read_event<J: Json>(frame: &J) -> Option<ServerEvent> {
    Some(match text(frame, "type")?.as_str() {
        "history" => read_history(frame)?,
        "page" => ServerEvent::Page {
            epoch: text(frame, "epoch").unwrap_or_default(),
            events: events(frame)?,
            oldest: flag(frame, "oldest")?,
        },
        "joined" => ServerEvent::Joined {
            pseudo: text(frame, "pseudo")?,
            session: uuid(frame.member("session")?)?,
            room: text(frame, "room")?,
            moderation: flag(frame, "moderation")?,
            moderator: flag(frame, "moderator")?,
        },
        "deleted" => ServerEvent::Deleted(read_amendment(frame)?),
        "edited" => ServerEvent::Edited(read_amendment(frame)?),
        "replaced" => ServerEvent::Replaced,
        "message" => ServerEvent::Message(read_message(frame)?),
        "system" => ServerEvent::System(read_system(frame)?),
        "count" => ServerEvent::Count {
            count: count(frame, "count")?,
        },
        "error" => ServerEvent::Error {
            code: ErrorCode::from_wire(&text(frame, "code")?)?,
            message: text(frame, "message")?,
            until: optional_count(frame, "until")?,
            retry_after_ms: optional_count(frame, "retry_after_ms")?,
        },
        "online" => ServerEvent::Online {
            names: names(frame, "names")?,
            more: count(frame, "more")?,
        },
        "online_changed" => ServerEvent::OnlineChanged {
            added: names(frame, "added")?,
            removed: names(frame, "removed")?,
            more: count(frame, "more")?,
        },
        "typing" => ServerEvent::Typing {
            pseudo: text(frame, "pseudo")?,
        },
        "ack" => ServerEvent::Ack {
            id: uuid(frame.member("id")?)?,
            epoch: text(frame, "epoch")?,
            offset: count(frame, "offset")?,
        },
        "rooms" => ServerEvent::Rooms {
            rooms: frame
                .member("rooms")?
                .items()?
                .iter()
                .map(read_room)
                .collect::<Option<_>>()?,
        },
        _ => return None,
    })
}

fn read_history<J: Json>(frame: &J) -> Option<ServerEvent> {
    Some(ServerEvent::History {
        epoch: text(frame, "epoch").unwrap_or_default(),
        offset: count(frame, "offset").unwrap_or_default(),
        recovered: frame
            .member("recovered")
            .map_or(Some(true), |b| b.boolean())?,
        events: events(frame)?,
        more: flag(frame, "more")?,
    })
}

/// The stream events a history or a page holds.
fn events<J: Json>(frame: &J) -> Option<Vec<ServerEvent>> {
    frame
        .member("events")?
        .items()?
        .iter()
        .map(read_event)
        .collect()
}

fn read_message<J: Json>(frame: &J) -> Option<ChatMessage> {
    Some(ChatMessage {
        epoch: text(frame, "epoch").unwrap_or_default(),
        offset: count(frame, "offset").unwrap_or_default(),
        id: uuid(frame.member("id")?)?,
        author: text(frame, "author")?,
        author_id: text(frame, "author_id").unwrap_or_default(),
        text: text(frame, "text")?,
        ts: count(frame, "ts")?,
        deleted: flag(frame, "deleted")?,
        edited: flag(frame, "edited")?,
        server: flag(frame, "server")?,
    })
}

fn read_amendment<J: Json>(frame: &J) -> Option<Amendment> {
    Some(Amendment {
        epoch: text(frame, "epoch").unwrap_or_default(),
        offset: count(frame, "offset").unwrap_or_default(),
        id: uuid(frame.member("id")?)?,
        target: uuid(frame.member("target")?)?,
        by: text(frame, "by")?,
        text: match frame.member("text") {
            Some(text) => Some(text.string()?),
            None => None,
        },
        ts: count(frame, "ts")?,
    })
}

fn read_system<J: Json>(frame: &J) -> Option<SystemMessage> {
    Some(SystemMessage {
        epoch: text(frame, "epoch").unwrap_or_default(),
        offset: count(frame, "offset").unwrap_or_default(),
        id: uuid(frame.member("id")?)?,
        kind: match text(frame, "kind")?.as_str() {
            "joined" => SystemKind::Joined,
            "renamed" => SystemKind::Renamed,
            "left" => SystemKind::Left,
            "kicked" => SystemKind::Kicked,
            "banned" => SystemKind::Banned,
            "muted" => SystemKind::Muted,
            "slow_mode" => SystemKind::SlowMode,
            _ => return None,
        },
        pseudo: text(frame, "pseudo")?,
        previous: text(frame, "previous"),
        others: frame
            .member("others")
            .map_or(Some(Vec::new()), |_| names(frame, "others"))?,
        more: count(frame, "more").unwrap_or_default(),
        ts: count(frame, "ts")?,
        by: match frame.member("by") {
            Some(by) => Some(by.string()?),
            None => None,
        },
        until: optional_count(frame, "until")?,
        seconds: optional_count(frame, "seconds")?,
    })
}

fn read_room<J: Json>(room: &J) -> Option<RoomSummary> {
    Some(RoomSummary {
        name: text(room, "name")?,
        count: count(room, "count")?,
        activity: count(room, "activity")?,
    })
}

/// The string member `key` of an object.
fn text<J: Json>(object: &J, key: &str) -> Option<String> {
    object.member(key)?.string()
}

/// The count member `key` of an object (see [`whole`]).
fn count<J: Json>(object: &J, key: &str) -> Option<u64> {
    whole(object.member(key)?.number()?)
}

/// An optional count: `Some(None)` when absent, `None` when malformed.
fn optional_count<J: Json>(object: &J, key: &str) -> Option<Option<u64>> {
    match object.member(key) {
        Some(value) => Some(Some(whole(value.number()?)?)),
        None => Some(None),
    }
}

/// An optional boolean, false when absent; `None` when malformed.
fn flag<J: Json>(object: &J, key: &str) -> Option<bool> {
    object.member(key).map_or(Some(false), |b| b.boolean())
}

/// The member `key` of an object, as a list of strings.
fn names<J: Json>(object: &J, key: &str) -> Option<Vec<String>> {
    object.member(key)?.items()?.iter().map(J::string).collect()
}

/// A JSON number as a count: whole, not negative, and exact (JavaScript
/// numbers are exact up to 2^53, far beyond any count or time here).
fn whole(n: f64) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    ((0.0..=EXACT).contains(&n) && n.fract() == 0.0).then_some(n as u64)
}

fn uuid<J: Json>(value: J) -> Option<Uuid> {
    crate::protocol::parse_uuid(&value.string()?)
}

/// The browser's parse of a frame.
#[cfg(feature = "hydrate")]
impl Json for wasm_bindgen::JsValue {
    fn member(&self, key: &str) -> Option<Self> {
        if !self.is_object() {
            return None;
        }
        let value = js_sys::Reflect::get(self, &key.into()).ok()?;
        (!value.is_undefined() && !value.is_null()).then_some(value)
    }

    fn string(&self) -> Option<String> {
        self.as_string()
    }

    fn number(&self) -> Option<f64> {
        self.as_f64()
    }

    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }

    fn items(&self) -> Option<Vec<Self>> {
        js_sys::Array::is_array(self).then(|| js_sys::Array::from(self).iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    impl Json for Value {
        fn member(&self, key: &str) -> Option<Self> {
            self.get(key).filter(|v| !v.is_null()).cloned()
        }
        fn string(&self) -> Option<String> {
            self.as_str().map(str::to_owned)
        }
        fn number(&self) -> Option<f64> {
            self.as_f64()
        }
        fn boolean(&self) -> Option<bool> {
            self.as_bool()
        }
        fn items(&self) -> Option<Vec<Self>> {
            self.as_array().cloned()
        }
    }

    /// One event of every kind, with every optional field both ways. The
    /// match makes a new kind of event fail to compile here until it has a
    /// sample, so the reader cannot silently miss it.
    fn samples() -> Vec<ServerEvent> {
        let message = ChatMessage {
            epoch: "1700000000000-0".into(),
            offset: 7,
            id: Uuid::new_v4(),
            author: "alice".into(),
            author_id: "user \"42\"".into(),
            text: "hi \"there\" \n é 🦀".into(),
            ts: 1_764_000_000_123,
            deleted: false,
            edited: false,
            server: false,
        };
        let system = SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::new_v4(),
            kind: SystemKind::Renamed,
            pseudo: "bob".into(),
            previous: Some("al".into()),
            others: Vec::new(),
            more: 0,
            ts: 5,
            by: None,
            until: None,
            seconds: None,
        };
        let mut events = vec![
            ServerEvent::Message(message.clone()),
            ServerEvent::Message(ChatMessage {
                epoch: String::new(),
                offset: 0,
                ..message.clone()
            }),
            ServerEvent::System(system.clone()),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Joined,
                previous: None,
                others: Vec::new(),
                more: 0,
                ..system.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Left,
                ..system.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Joined,
                previous: None,
                others: vec!["c".into(), "d".into()],
                more: 40,
                ..system.clone()
            }),
            ServerEvent::Joined {
                pseudo: "alice".into(),
                session: Uuid::new_v4(),
                room: "general".into(),
                moderation: false,
                moderator: false,
            },
            ServerEvent::Joined {
                pseudo: "mod".into(),
                session: Uuid::new_v4(),
                room: "general".into(),
                moderation: true,
                moderator: true,
            },
            ServerEvent::Message(ChatMessage {
                text: String::new(),
                deleted: true,
                ..message.clone()
            }),
            ServerEvent::Message(ChatMessage {
                edited: true,
                ..message.clone()
            }),
            ServerEvent::Message(ChatMessage {
                server: true,
                author_id: String::new(),
                ..message.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Banned,
                by: Some("mod".into()),
                until: Some(1_800_000_000_000),
                ..system.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Muted,
                by: Some("mod".into()),
                ..system.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::Kicked,
                by: Some("mod".into()),
                ..system.clone()
            }),
            ServerEvent::System(SystemMessage {
                kind: SystemKind::SlowMode,
                by: Some("mod".into()),
                seconds: Some(10),
                ..system.clone()
            }),
            ServerEvent::Deleted(Amendment {
                epoch: "e".into(),
                offset: 4,
                id: Uuid::new_v4(),
                target: message.id,
                by: "mod".into(),
                text: None,
                ts: 9,
            }),
            ServerEvent::Edited(Amendment {
                epoch: "e".into(),
                offset: 5,
                id: Uuid::new_v4(),
                target: message.id,
                by: "alice".into(),
                text: Some("better".into()),
                ts: 10,
            }),
            ServerEvent::Replaced,
            ServerEvent::Count { count: 3 },
            ServerEvent::Online {
                names: vec!["a".into(), "b".into()],
                more: 98,
            },
            ServerEvent::OnlineChanged {
                added: vec!["c".into()],
                removed: vec![],
                more: 0,
            },
            ServerEvent::Typing {
                pseudo: "bob".into(),
            },
            ServerEvent::Rooms {
                rooms: vec![RoomSummary {
                    name: "rust".into(),
                    count: 2,
                    activity: 41,
                }],
            },
            ServerEvent::History {
                epoch: String::new(),
                offset: 0,
                recovered: true,
                more: false,
                events: vec![],
            },
            ServerEvent::Ack {
                id: Uuid::new_v4(),
                epoch: "e".into(),
                offset: 3,
            },
        ];
        events.extend(ErrorCode::ALL.iter().map(|&code| ServerEvent::Error {
            code,
            message: "why".into(),
            until: None,
            retry_after_ms: None,
        }));
        events.push(ServerEvent::Error {
            code: ErrorCode::Muted,
            message: "m".into(),
            until: Some(1_800_000_000_000),
            retry_after_ms: Some(1500),
        });
        let stream: Vec<ServerEvent> = events.clone();
        events.push(ServerEvent::History {
            epoch: "e".into(),
            offset: 9,
            recovered: false,
            more: false,
            events: stream.clone(),
        });
        events.push(ServerEvent::Page {
            epoch: "e".into(),
            events: stream,
            oldest: true,
        });
        events.push(ServerEvent::Page {
            epoch: String::new(),
            events: Vec::new(),
            oldest: false,
        });
        for event in &events {
            match event {
                ServerEvent::History { .. }
                | ServerEvent::Page { .. }
                | ServerEvent::Joined { .. }
                | ServerEvent::Message(_)
                | ServerEvent::System(_)
                | ServerEvent::Count { .. }
                | ServerEvent::Error { .. }
                | ServerEvent::Online { .. }
                | ServerEvent::OnlineChanged { .. }
                | ServerEvent::Typing { .. }
                | ServerEvent::Rooms { .. }
                | ServerEvent::Ack { .. }
                | ServerEvent::Deleted(_)
                | ServerEvent::Edited(_)
                | ServerEvent::Replaced => {}
            }
        }
        events
    }

    #[test]
    fn reads_what_serde_writes() {
        for event in samples() {
            let frame = serde_json::to_value(&event).unwrap();
            assert_eq!(read_event(&frame).as_ref(), Some(&event), "{frame}");
        }
    }

    #[test]
    fn applies_the_same_defaults_as_serde() {
        for frame in [
            json!({"type": "history", "events": []}),
            json!({"type": "system", "id": Uuid::nil(), "kind": "left", "pseudo": "a", "ts": 1}),
            json!({"type": "system", "id": Uuid::nil(), "kind": "left", "pseudo": "a", "ts": 1, "previous": null}),
        ] {
            let by_serde: ServerEvent = serde_json::from_value(frame.clone()).unwrap();
            assert_eq!(read_event(&frame), Some(by_serde), "{frame}");
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        for frame in [
            json!({"type": "nope"}),
            json!({"count": 1}),
            json!({"type": "count"}),
            json!({"type": "count", "count": -1}),
            json!({"type": "count", "count": 1.5}),
            json!({"type": "count", "count": "1"}),
            json!({"type": "error", "code": "no_such_code", "message": "m"}),
            json!({"type": "typing", "pseudo": null}),
            json!({"type": "online", "names": ["a", 1], "more": 0}),
            json!({"type": "history", "events": [{"type": "nope"}]}),
            json!({"type": "history", "recovered": "yes", "events": []}),
            json!({"type": "joined", "pseudo": "a", "session": "not-a-uuid", "room": "r"}),
            json!("count"),
        ] {
            assert!(serde_json::from_value::<ServerEvent>(frame.clone()).is_err());
            assert_eq!(read_event(&frame), None, "{frame}");
        }
        // serde would take an array starting with the tag; frames are
        // objects.
        assert_eq!(read_event(&json!(["count", 1])), None);
    }
}
