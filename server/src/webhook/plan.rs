//! What a room's deliverer sends next, from the room's cursor and its
//! stored stream: pure, so that every case is unit-tested.

use crate::broker::{Position, Stored};
use axum::extract::ws::Utf8Bytes;

/// What to send, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Events after the cursor that the stream no longer holds: the
    /// backend is told before the rest (`gap`).
    pub gap: Option<Gap>,
    /// The stored events after the cursor, oldest first.
    pub events: &'a [Utf8Bytes],
    /// The position of the first of `events`.
    pub first: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The last event delivered (none: none was, or the broker lost where).
    pub after: Option<Position>,
    /// The first event still stored; the ones between were lost.
    pub resume: Position,
}

impl Gap {
    /// The position the cursor moves to once the gap was announced: just
    /// before the first stored event.
    pub fn before_resume(&self) -> Position {
        Position {
            epoch: self.resume.epoch.clone(),
            offset: self.resume.offset - 1,
        }
    }
}

/// The events after `cursor` in `stored`, and the gap before them if some
/// are no longer stored (the webhook stayed down past the history's length,
/// or the broker lost the stream and started a new epoch). Without a
/// cursor, `known_epoch` is an epoch of the room this instance saw: if it
/// is not the stream's, the broker lost the room (and its cursor) since.
pub fn plan<'a>(
    cursor: Option<&Position>,
    known_epoch: Option<&str>,
    stored: &'a Stored,
) -> Option<Plan<'a>> {
    if stored.epoch.is_empty() || stored.events.is_empty() {
        return None;
    }
    let oldest = stored.offset + 1 - stored.events.len() as u64;
    let at = |offset| Position {
        epoch: stored.epoch.clone(),
        offset,
    };
    let next = match cursor {
        Some(cursor) if cursor.epoch == stored.epoch => cursor.offset + 1,
        // A stream that starts at 1 under a new cursor lost nothing,
        // unless the room had another epoch before.
        None if oldest == 1 && known_epoch.is_none_or(|known| known == stored.epoch) => 1,
        _ => 0,
    };
    if next > stored.offset {
        return None;
    }
    let gap = (next < oldest).then(|| Gap {
        after: cursor.cloned(),
        resume: at(oldest),
    });
    let from = next.max(oldest);
    Some(Plan {
        gap,
        events: &stored.events[(from - oldest) as usize..],
        first: at(from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(epoch: &str, offsets: std::ops::RangeInclusive<u64>) -> Stored {
        Stored {
            epoch: epoch.into(),
            offset: *offsets.end(),
            events: offsets.map(|o| Utf8Bytes::from(format!("e{o}"))).collect(),
        }
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn texts(plan: &Plan) -> Vec<String> {
        plan.events.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_new_cursor_gets_a_whole_stream_that_starts_at_one() {
        let stream = stored("A", 1..=3);
        let plan = plan(None, None, &stream).unwrap();
        assert_eq!(
            (plan.gap.clone(), texts(&plan)),
            (None, vec!["e1".into(), "e2".into(), "e3".into()])
        );
        assert_eq!(plan.first, at("A", 1));
    }

    #[test]
    fn the_events_after_the_cursor_follow_it() {
        let stream = stored("A", 1..=5);
        let plan = plan(Some(&at("A", 3)), None, &stream).unwrap();
        assert_eq!(texts(&plan), ["e4", "e5"]);
        assert_eq!((plan.gap, plan.first), (None, at("A", 4)));
        assert_eq!(super::plan(Some(&at("A", 5)), None, &stream), None);
        assert_eq!(super::plan(None, None, &Stored::default()), None);
    }

    #[test]
    fn events_gone_from_the_history_are_a_gap() {
        let stream = stored("A", 8..=10);
        let plan = plan(Some(&at("A", 4)), None, &stream).unwrap();
        let gap = plan.gap.clone().unwrap();
        assert_eq!(
            (gap.after.clone(), gap.resume.clone()),
            (Some(at("A", 4)), at("A", 8))
        );
        assert_eq!(gap.before_resume(), at("A", 7));
        assert_eq!(texts(&plan), ["e8", "e9", "e10"]);
        // Just delivered up to the oldest's predecessor: no gap.
        assert_eq!(
            super::plan(Some(&at("A", 7)), None, &stream).unwrap().gap,
            None
        );
    }

    #[test]
    fn a_new_epoch_or_a_lost_cursor_on_a_trimmed_stream_is_a_gap() {
        let stream = stored("B", 1..=2);
        let plan = plan(Some(&at("A", 9)), None, &stream).unwrap();
        assert_eq!(plan.gap.as_ref().unwrap().after, Some(at("A", 9)));
        assert_eq!(texts(&plan), ["e1", "e2"]);
        let trimmed = stored("B", 5..=6);
        let plan = super::plan(None, None, &trimmed).unwrap();
        assert_eq!(
            plan.gap.unwrap(),
            Gap {
                after: None,
                resume: at("B", 5)
            }
        );
    }

    #[test]
    fn a_lost_cursor_of_a_room_seen_in_another_epoch_is_a_gap() {
        let stream = stored("B", 1..=2);
        let plan = plan(None, Some("A"), &stream).unwrap();
        assert_eq!(
            plan.gap.unwrap(),
            Gap {
                after: None,
                resume: at("B", 1)
            }
        );
        assert_eq!(super::plan(None, Some("B"), &stream).unwrap().gap, None);
    }
}
