//! A token bucket for one kind of frame on one connection (governor). A
//! frame over the limit is refused with an error; refusals that themselves
//! keep coming faster than the limit mean the client ignores the errors,
//! and the connection is closed.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

pub struct Throttle {
    allowed: DefaultDirectRateLimiter,
    refusals: DefaultDirectRateLimiter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the next frame of this kind is allowed after this long.
    Refused(Duration),
    /// Refused once too often: close the connection.
    Abuse,
}

impl Throttle {
    pub fn new(quota: Quota) -> Self {
        Throttle {
            allowed: RateLimiter::direct(quota),
            refusals: RateLimiter::direct(quota),
        }
    }

    pub fn check(&self) -> Verdict {
        self.check_n(1)
    }

    /// For a quota of units (bytes): takes `n` of them at once.
    pub fn check_n(&self, n: usize) -> Verdict {
        // More than the burst can never pass: the caller keeps frames
        // smaller than the burst, so this is abuse of another kind.
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 {
                Verdict::Allowed
            } else {
                Verdict::Abuse
            };
        };
        match self.allowed.check_n(n) {
            Ok(Ok(())) => Verdict::Allowed,
            Ok(Err(_)) if !matches!(self.refusals.check_n(n), Ok(Ok(()))) => Verdict::Abuse,
            Ok(Err(not_until)) => {
                Verdict::Refused(not_until.wait_time_from(DefaultClock::default().now()))
            }
            Err(_) => Verdict::Abuse,
        }
    }
}

/// A [`Throttle`] per key: the allowance of whoever the key names (a
/// person, across their connections), kept while it is not full again.
pub struct KeyedThrottle {
    allowed: DefaultKeyedRateLimiter<String>,
    refusals: DefaultKeyedRateLimiter<String>,
}

impl KeyedThrottle {
    pub fn new(quota: Quota) -> Self {
        KeyedThrottle {
            allowed: RateLimiter::keyed(quota),
            refusals: RateLimiter::keyed(quota),
        }
    }

    pub fn check(&self, key: &String) -> Verdict {
        match self.allowed.check_key(key) {
            Ok(()) => Verdict::Allowed,
            Err(_) if self.refusals.check_key(key).is_err() => Verdict::Abuse,
            Err(not_until) => {
                Verdict::Refused(not_until.wait_time_from(DefaultClock::default().now()))
            }
        }
    }

    /// Forgets the keys back to a full allowance (they would be allowed
    /// as if new); returns how many are left.
    pub fn sweep(&self) -> usize {
        for limiter in [&self.allowed, &self.refusals] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.allowed.len().max(self.refusals.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_quota_then_calls_it_abuse() {
        let throttle = Throttle::new(Quota::per_minute(NonZeroU32::new(2).unwrap()));
        assert_eq!(throttle.check(), Verdict::Allowed);
        assert_eq!(throttle.check(), Verdict::Allowed);
        for _ in 0..2 {
            match throttle.check() {
                Verdict::Refused(wait) => assert!(wait > Duration::from_secs(20), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(throttle.check(), Verdict::Abuse);
    }

    #[test]
    fn a_key_keeps_its_allowance_and_others_have_theirs() {
        let throttle = KeyedThrottle::new(Quota::per_minute(NonZeroU32::new(1).unwrap()));
        let (ann, bob) = ("ann".to_owned(), "bob".to_owned());
        assert_eq!(throttle.check(&ann), Verdict::Allowed);
        assert!(matches!(throttle.check(&ann), Verdict::Refused(_)));
        assert_eq!(throttle.check(&bob), Verdict::Allowed);
        // Not full again: kept by the sweep (and refused once too often).
        assert_eq!(throttle.sweep(), 2);
        assert_eq!(throttle.check(&ann), Verdict::Abuse);
    }
}
