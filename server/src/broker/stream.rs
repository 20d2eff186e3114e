//! A room's stream as the brokers store it: what an append carries and
//! the conditions it is made under, what it did, what a read returns.

use super::stamp;
use axum::extract::ws::Utf8Bytes;
use std::time::Duration;
use uuid::Uuid;

/// A room's stream as stored: its epoch (empty while it has none), its
/// newest offset, and the frames it still holds, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub epoch: String,
    pub offset: u64,
    pub events: Vec<Utf8Bytes>,
}

/// A page of a room's stream: events oldest first, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub epoch: String,
    pub events: Vec<Utf8Bytes>,
    /// Nothing older is retained.
    pub oldest: bool,
}

impl Page {
    /// The newest `limit` of the stored events with an offset below
    /// `before`.
    pub fn of(stored: Stored, before: u64, limit: usize) -> Page {
        let below: Vec<Utf8Bytes> = stored
            .events
            .into_iter()
            .filter(|frame| stamp::position(frame).is_some_and(|(_, offset)| offset < before))
            .collect();
        let skip = below.len().saturating_sub(limit);
        Page {
            epoch: stored.epoch,
            oldest: skip == 0,
            events: below.into_iter().skip(skip).collect(),
        }
    }
}

/// An event to append to a room's stream, and the conditions it is
/// appended under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry<'a> {
    /// The encoded event (a JSON object).
    pub frame: &'a str,
    /// When the event must exist once: if an event with its id is still in
    /// the history, nothing is appended.
    pub once: Option<Once<'a>>,
    /// An author held by mutes and slow mode (none for moderators and the
    /// server).
    pub author: Option<Author<'a>>,
    /// A stored event (as stored) to overwrite with another first, in the
    /// same step (deletions and edits); nothing is appended if it is no
    /// longer stored as it was.
    pub replace: Option<(&'a str, &'a str)>,
}

/// An event's id, unique in the history, and who owns it: a stored event
/// with the id is a repeat only if it also holds `owner` (the text that
/// names its author, see [`owner_marker`]); anybody else's is a conflict,
/// so that nobody can take an id somebody else will send.
#[derive(Debug, Clone, Copy)]
pub struct Once<'a> {
    pub id: Uuid,
    pub owner: &'a str,
}

/// Who speaks, as mutes and slow mode hold them.
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    /// Every mark a mute of theirs may be recorded under
    /// (`crate::identity`).
    pub marks: &'a [String],
    /// Their author identity: slow mode's wait is theirs, whatever name
    /// they take.
    pub id: &'a str,
}

/// What [`Broker::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended: the event stamped with its position.
    New(Utf8Bytes),
    /// An event with the same id was still in the history: nothing was
    /// appended; that event.
    Repeat(Utf8Bytes),
    /// The event to overwrite is no longer stored as it was (changed
    /// meanwhile, or gone from the history): nothing was done.
    Gone,
    /// The author is muted until then (ms since the Unix epoch).
    Muted { until_ms: u64 },
    /// Slow mode: the author may send again after this many milliseconds.
    Slowed { retry_after_ms: u64 },
    /// An event with the id, by somebody else, is in the history: nothing
    /// was appended.
    Conflict,
}

/// A position in a room's stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// What a stored event with this id contains, for finding it among the
/// stored frames (a quote inside a text is escaped, so a message cannot
/// forge it).
pub fn id_marker(id: Uuid) -> String {
    format!("\"id\":\"{id}\"")
}

/// A room whose stream nobody appended to for this long is forgotten (a
/// later event starts a new epoch), in Redis and in memory alike.
pub const ROOM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a stored message of this author contains: its `author_id` as
/// JSON writes it (escaped: a text cannot forge it), or for the backend's
/// messages (no author identity) their `server` flag.
pub fn owner_marker(author_id: &str) -> String {
    if author_id.is_empty() {
        return "\"server\":true".to_owned();
    }
    format!("\"author_id\":{}", serde_json::Value::from(author_id))
}
