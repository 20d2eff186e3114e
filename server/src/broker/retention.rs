//! How long a room keeps its events: `HISTORY_MAX_AGE` and
//! `HISTORY_MAX_EVENTS`. Whatever is retained is what catch-up, scroll-back
//! and the webhooks read; older events are trimmed in the background.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Events older than this are trimmed (none: kept whatever their age).
    pub max_age: Option<Duration>,
    /// A room keeps at most this many of its newest events (none: no
    /// count limit).
    pub max_events: Option<u64>,
}

/// The most events a reconnecting client is caught up with from the
/// retained history (further behind, it is told some could not be
/// recovered and reads back with `older`).
pub const CATCH_UP: u64 = 20_000;

/// The longest pause between two background passes.
const MOST_EVERY: Duration = Duration::from_secs(60);

impl Retention {
    /// Events stamped before this (ms since the Unix epoch) are past the
    /// age limit.
    pub fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        let age = self.max_age?;
        Some(now_ms.saturating_sub(age.as_millis() as u64))
    }

    /// The oldest offset a room whose newest is `newest` keeps by count.
    pub fn first_kept(&self, newest: u64) -> u64 {
        self.max_events
            .map_or(1, |max| newest.saturating_sub(max) + 1)
    }

    /// Whether the event (a stored frame) is past the age limit.
    pub fn too_old(&self, frame: &str, now_ms: u64) -> bool {
        match self.cutoff_ms(now_ms) {
            Some(cutoff) => event_ms(frame).is_some_and(|at| at < cutoff),
            None => false,
        }
    }

    /// How often the background pass runs: a tenth of the age limit, so
    /// that nothing outlives it by more than 10%, between 1 s and a minute.
    pub fn every(&self) -> Duration {
        self.max_age
            .map_or(MOST_EVERY, |age| age / 10)
            .clamp(Duration::from_secs(1), MOST_EVERY)
    }

    /// Whether anything is ever trimmed.
    pub fn trims(&self) -> bool {
        self.max_age.is_some() || self.max_events.is_some()
    }
}

/// When a stored event was sent (its `ts`, ms since the Unix epoch).
pub fn event_ms(frame: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Sent {
        ts: u64,
    }
    serde_json::from_str::<Sent>(frame).ok().map(|sent| sent.ts)
}

/// `HISTORY_MAX_AGE`: events older than this are trimmed (none: kept
/// whatever their age).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub Option<Duration>);

/// Reads `HISTORY_MAX_AGE`: a duration such as `30d`, `12h` or `90s`, or
/// `forever`.
pub fn parse_age(value: &str) -> Result<MaxAge, String> {
    age(value).map(MaxAge)
}

fn age(value: &str) -> Result<Option<Duration>, String> {
    if value == "forever" {
        return Ok(None);
    }
    let age = humantime::parse_duration(value)
        .map_err(|err| format!("{err}: give a duration such as 30d, 12h or 90s, or forever"))?;
    if age < Duration::from_secs(1) {
        return Err("at least 1s (or forever)".into());
    }
    Ok(Some(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_durations_or_forever() {
        assert_eq!(
            parse_age("30d"),
            Ok(MaxAge(Some(Duration::from_secs(30 * 86_400))))
        );
        assert_eq!(parse_age("forever"), Ok(MaxAge(None)));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("thirty").is_err());
    }

    #[test]
    fn count_and_age_limits() {
        let retention = Retention {
            max_age: Some(Duration::from_secs(10)),
            max_events: Some(300),
        };
        assert_eq!(retention.first_kept(1000), 701);
        assert_eq!(retention.first_kept(200), 1);
        let old = r#"{"epoch":"e","offset":1,"type":"message","text":"\"ts\":99999999","ts":1000}"#;
        assert!(retention.too_old(old, 20_000));
        assert!(!retention.too_old(old, 5_000));
        assert_eq!(retention.every(), Duration::from_secs(1));
        assert_eq!(Retention::default().every(), MOST_EVERY);
        assert!(!Retention::default().trims());
    }
}
