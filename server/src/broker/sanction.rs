//! Sanctions as the brokers store them: a ban or mute recorded under each
//! mark of the person it holds (`crate::identity`).

/// What a moderator can hold a participant of a room to, for a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanction {
    /// May not join the room.
    Ban,
    /// May read but not speak.
    Mute,
}

/// A sanction as stored under each of its marks: until when (ms since the
/// Unix epoch), then every mark it was recorded under, so that it can be
/// lifted from any of them; one per line.
pub fn sanction_record(until_ms: u64, marks: &[String]) -> String {
    let mut record = until_ms.to_string();
    for mark in marks {
        record.push('\n');
        record.push_str(mark);
    }
    record
}

/// Until when a stored sanction holds.
pub fn record_until(record: &str) -> Option<u64> {
    record.split('\n').next()?.parse().ok()
}

/// The marks a stored sanction was recorded under.
pub fn record_marks(record: &str) -> impl Iterator<Item = &str> {
    record.split('\n').skip(1)
}
