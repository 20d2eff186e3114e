//! Where a connecting client resumes a room's stream: exactly after its
//! (epoch, offset), or from what the bounded history still holds with a
//! plain `"recovered":false`; and the history frame that carries it.

use crate::broker::{stamp, Stored};
use app::protocol::{Position, MAX_PAGE};
use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

/// Where a connecting client wants to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// A new client: the recent history.
    Latest,
    /// `since=<epoch>:<offset>`: everything after that position.
    Since(Position),
    /// `last_seen=<event id>` (older clients): everything after that event.
    LastSeen(Uuid),
}

/// What a connecting client is sent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub epoch: String,
    pub offset: u64,
    pub events: Vec<Utf8Bytes>,
    /// False when the client's position could not be served: the events it
    /// missed fell out of the bounded history, or the history was lost.
    pub recovered: bool,
}

impl Snapshot {
    /// What a client is sent when the stream cannot be read: no events,
    /// and the warning that some may be missing.
    pub fn unavailable() -> Self {
        Snapshot {
            epoch: String::new(),
            offset: 0,
            events: Vec::new(),
            recovered: false,
        }
    }
}

/// Cuts the stored stream at the client's position.
pub fn resume(stored: Stored, from: &Resume) -> Snapshot {
    let Stored {
        epoch,
        offset,
        events,
    } = stored;
    let position_of = |frame: &Utf8Bytes| stamp::position(frame).map_or(0, |(_, o)| o);
    let first = events.first().map_or(offset + 1, position_of);
    let after: Option<usize> = match from {
        Resume::Latest => Some(0),
        Resume::Since(p)
            if p.epoch == epoch && p.offset.saturating_add(1) >= first && p.offset <= offset =>
        {
            Some(events.partition_point(|e| position_of(e) <= p.offset))
        }
        // Seen before any event: every event is still here if the stream
        // starts at offset 1.
        Resume::Since(p) if p.epoch.is_empty() && p.offset == 0 && first == 1 => Some(0),
        Resume::Since(_) => None,
        Resume::LastSeen(id) => events
            .iter()
            .rposition(|frame| event_id(frame) == Some(*id))
            .map(|i| i + 1),
    };
    match after {
        Some(i) => Snapshot {
            epoch,
            offset,
            events: events[i..].to_vec(),
            recovered: true,
        },
        // Everything still held; the client drops what it already has.
        None => Snapshot {
            epoch,
            offset,
            events,
            recovered: false,
        },
    }
}

/// The `id` of an encoded chat or system event, read without decoding the
/// rest of it.
fn event_id(frame: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<Uuid>,
    }
    serde_json::from_str::<Id>(frame).ok()?.id
}

/// The answer to `older`: `{"type":"page","epoch","oldest","events":[…]}`,
/// the stored frames as they are.
pub fn page_frame(page: &crate::broker::Page) -> Utf8Bytes {
    let events: usize = page.events.iter().map(|e| e.len() + 1).sum();
    let mut frame = String::with_capacity(64 + events);
    frame.push_str(r#"{"type":"page","#);
    if !page.epoch.is_empty() {
        frame.push_str(&format!(r#""epoch":"{}","#, page.epoch));
    }
    frame.push_str(&format!(r#""oldest":{},"events":["#, page.oldest));
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(event);
    }
    frame.push_str("]}");
    frame.into()
}

/// The history frame of a snapshot, built from the stored frames without
/// parsing them again.
pub fn history_frame(snapshot: &Snapshot) -> Utf8Bytes {
    frame(snapshot, snapshot.offset, &snapshot.events, false)
}

/// The history frames of a snapshot: one, or for a long catch-up pages of
/// at most [`MAX_PAGE`] events, each but the last saying `more` (and
/// ending at its last event's offset, where a client cut off in the
/// middle resumes).
pub fn history_frames(snapshot: &Snapshot) -> Vec<Utf8Bytes> {
    let pages: Vec<&[Utf8Bytes]> = snapshot.events.chunks(MAX_PAGE as usize).collect();
    if pages.len() <= 1 {
        return vec![history_frame(snapshot)];
    }
    let last = pages.len() - 1;
    pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let end = match (i == last, page.last().and_then(|e| stamp::position(e))) {
                (false, Some((_, offset))) => offset,
                _ => snapshot.offset,
            };
            frame(snapshot, end, page, i != last)
        })
        .collect()
}

fn frame(snapshot: &Snapshot, offset: u64, events: &[Utf8Bytes], more: bool) -> Utf8Bytes {
    let bytes: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut frame = String::with_capacity(112 + bytes);
    frame.push_str(r#"{"type":"history","#);
    if !snapshot.epoch.is_empty() {
        // Epochs are made of hex digits: nothing to escape.
        frame.push_str(&format!(r#""epoch":"{}","#, snapshot.epoch));
    }
    if more {
        frame.push_str(r#""more":true,"#);
    }
    frame.push_str(&format!(
        r#""offset":{offset},"recovered":{},"events":["#,
        snapshot.recovered
    ));
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(event);
    }
    frame.push_str("]}");
    frame.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::protocol::ServerEvent;

    fn stored(epoch: &str, offsets: std::ops::RangeInclusive<u64>) -> Stored {
        let top = *offsets.end();
        Stored {
            epoch: epoch.into(),
            offset: top,
            events: offsets
                .map(|o| stamp::stamp(&format!(r#"{{"type":"x","n":{o}}}"#), epoch, o))
                .collect(),
        }
    }

    fn since(epoch: &str, offset: u64) -> Resume {
        Resume::Since(Position {
            epoch: epoch.into(),
            offset,
        })
    }

    fn offsets(snapshot: &Snapshot) -> Vec<u64> {
        snapshot
            .events
            .iter()
            .map(|e| stamp::position(e).unwrap().1)
            .collect()
    }

    #[test]
    fn resuming_serves_exactly_what_follows_or_says_it_cannot() {
        let s = stored("e", 5..=9);
        let all = resume(s.clone(), &Resume::Latest);
        assert_eq!((offsets(&all), all.recovered), (vec![5, 6, 7, 8, 9], true));
        for (from, wanted) in [(4, vec![5, 6, 7, 8, 9]), (7, vec![8, 9]), (9, vec![])] {
            let snapshot = resume(s.clone(), &since("e", from));
            assert_eq!(offsets(&snapshot), wanted, "since {from}");
            assert!(snapshot.recovered);
            assert_eq!((snapshot.epoch.as_str(), snapshot.offset), ("e", 9));
        }
        // Fell out of the bounded history, another epoch, or ahead of it.
        for from in [since("e", 3), since("old", 7), since("e", 10), since("", 0)] {
            let snapshot = resume(s.clone(), &from);
            assert!(!snapshot.recovered, "{from:?}");
            assert_eq!(offsets(&snapshot), vec![5, 6, 7, 8, 9]);
        }
        // A client that saw the stream before its first event.
        assert!(resume(stored("e", 1..=3), &since("", 0)).recovered);
        let empty = Stored::default();
        assert!(resume(empty.clone(), &since("", 0)).recovered);
        assert!(!resume(empty, &since("gone", 4)).recovered);
    }

    #[test]
    fn last_seen_ids_still_work() {
        let id = Uuid::new_v4();
        let mut s = stored("e", 1..=3);
        s.events[1] = stamp::stamp(&format!(r#"{{"type":"x","id":"{id}"}}"#), "e", 2);
        let snapshot = resume(s.clone(), &Resume::LastSeen(id));
        assert_eq!((offsets(&snapshot), snapshot.recovered), (vec![3], true));
        let unknown = resume(s, &Resume::LastSeen(Uuid::new_v4()));
        assert_eq!(
            (offsets(&unknown), unknown.recovered),
            (vec![1, 2, 3], false)
        );
    }

    #[test]
    fn the_history_frame_is_the_protocol_history_event() {
        let message = |offset| {
            stamp::stamp(
                &super::super::encode(&ServerEvent::Count { count: offset }),
                "e",
                offset,
            )
        };
        let snapshot = Snapshot {
            epoch: "e".into(),
            offset: 2,
            events: vec![message(1), message(2)],
            recovered: false,
        };
        let parsed: serde_json::Value = serde_json::from_str(&history_frame(&snapshot)).unwrap();
        assert_eq!(parsed["type"], "history");
        assert_eq!(parsed["epoch"], "e");
        assert_eq!(parsed["offset"], 2);
        assert_eq!(parsed["recovered"], false);
        assert_eq!(parsed["events"][1]["offset"], 2);
        let empty = Snapshot {
            epoch: String::new(),
            offset: 0,
            events: vec![],
            recovered: true,
        };
        let parsed: ServerEvent = serde_json::from_str(&history_frame(&empty)).unwrap();
        assert_eq!(
            parsed,
            ServerEvent::History {
                epoch: String::new(),
                offset: 0,
                recovered: true,
                events: vec![],
                more: false,
            }
        );
    }

    /// A long catch-up: pages of at most 200 events, each ending where its
    /// last event is, `more` on all but the last, which ends at the stream.
    #[test]
    fn a_long_catch_up_comes_in_pages() {
        let stored = stored("E", 1..=450);
        let snapshot = resume(stored, &Resume::Latest);
        let frames = history_frames(&snapshot);
        assert_eq!(frames.len(), 3);
        let mut seen = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let page: serde_json::Value = serde_json::from_str(frame).unwrap();
            let events = page["events"].as_array().unwrap();
            assert!(events.len() <= 200);
            assert_eq!(page["more"].as_bool().unwrap_or(false), i < 2);
            let offsets: Vec<u64> = events
                .iter()
                .map(|e| e["offset"].as_u64().unwrap())
                .collect();
            assert_eq!(page["offset"].as_u64(), offsets.last().copied());
            seen.extend(offsets);
        }
        assert_eq!(seen, (1..=450).collect::<Vec<u64>>());
    }
}
