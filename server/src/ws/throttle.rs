//! Token buckets for frames: one connection's ([`Throttle`]), and each
//! person's across their connections ([`KeyedThrottle`], governor). A frame
//! over the limit is refused with an error; refusals that themselves keep
//! coming faster than the limit mean the client ignores the errors, and the
//! connection is closed.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A connection's limit: 16 bytes of state, the quota being the
/// protocol's, passed to each check. A governor limiter per connection
/// kept its quota and clock beside the state (72 bytes, two per limit, up
/// to three limits on every idle connection).
#[derive(Default)]
pub struct Throttle {
    allowed: Bucket,
    refusals: Bucket,
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
    pub fn check(&mut self, quota: &Quota) -> Verdict {
        self.check_n(quota, 1)
    }

    /// For a quota of units (bytes): takes `n` of them at once.
    pub fn check_n(&mut self, quota: &Quota, n: usize) -> Verdict {
        let now = since_start();
        match self.allowed.take(quota, n, now) {
            Take::Taken => Verdict::Allowed,
            Take::After(wait) if self.refusals.take(quota, n, now) == Take::Taken => {
                Verdict::Refused(wait)
            }
            // More than the burst can never pass: the caller keeps frames
            // smaller than the burst, so this is abuse of another kind.
            Take::After(_) | Take::Never => Verdict::Abuse,
        }
    }
}

/// One bucket, as governor keeps it (GCRA): the theoretical arrival time
/// of the next unit, in nanoseconds since [`since_start`]'s origin; a time
/// in the past is a full bucket.
#[derive(Default)]
struct Bucket {
    arrival: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Take {
    Taken,
    After(Duration),
    Never,
}

impl Bucket {
    fn take(&mut self, quota: &Quota, n: usize, now: u64) -> Take {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let every = nanos(quota.replenish_interval());
        // Units a full bucket holds besides the first.
        let tolerance = every.saturating_mul(u64::from(quota.burst_size().get() - 1));
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 { Take::Taken } else { Take::Never };
        };
        let more = every.saturating_mul(u64::from(n.get() - 1));
        if more > tolerance {
            return Take::Never;
        }
        let earliest = self.arrival.saturating_add(more).saturating_sub(tolerance);
        if now < earliest {
            return Take::After(Duration::from_nanos(earliest - now));
        }
        self.arrival = self.arrival.max(now) + every + more;
        Take::Taken
    }
}

/// Nanoseconds since the first check in this process.
fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
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
        let quota = Quota::per_minute(NonZeroU32::new(2).unwrap());
        let mut throttle = Throttle::default();
        assert_eq!(throttle.check(&quota), Verdict::Allowed);
        assert_eq!(throttle.check(&quota), Verdict::Allowed);
        for _ in 0..2 {
            match throttle.check(&quota) {
                Verdict::Refused(wait) => assert!(wait > Duration::from_secs(20), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(throttle.check(&quota), Verdict::Abuse);
    }

    /// The same verdicts as a governor limiter of the same quota, for
    /// units taken in random amounts at random times (a simulated clock).
    #[test]
    fn buckets_decide_as_governor_does() {
        use governor::clock::FakeRelativeClock;
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..50 {
            let burst = NonZeroU32::new(1 + random(50) as u32).unwrap();
            let quota = Quota::with_period(Duration::from_micros(1 + random(5_000)))
                .unwrap()
                .allow_burst(burst);
            let clock = FakeRelativeClock::default();
            let governor = RateLimiter::direct_with_clock(quota, clock.clone());
            let mut bucket = Bucket::default();
            let mut now = 0;
            for _ in 0..2_000 {
                let step = random(3_000_000);
                clock.advance(Duration::from_nanos(step));
                now += step;
                let n = random(u64::from(burst.get()) + 3) as u32;
                let ours = bucket.take(&quota, n as usize, now);
                let theirs = match NonZeroU32::new(n) {
                    None => Take::Taken,
                    Some(n) => match governor.check_n(n) {
                        Ok(Ok(())) => Take::Taken,
                        Ok(Err(not_until)) => Take::After(not_until.wait_time_from(clock.now())),
                        Err(_) => Take::Never,
                    },
                };
                assert_eq!(ours, theirs, "{quota:?}, {n} at {now}");
            }
        }
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
