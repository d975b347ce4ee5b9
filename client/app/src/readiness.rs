//! [`Readiness`]: `/readyz` with a grace period, so that a storage failover (a few seconds)
//! does not take every replica out of the app Service at once. While the storage has been
//! unreachable for less than `--ready-grace`, the replica stays ready and its requests that
//! need the storage are answered 503 with `Retry-After: 1` (see `http::error`); past the grace
//! it is not ready, so a replica cut off for good leaves the Service.
//!
//! The grace starts only once the replica has been ready: a replica that never reached its
//! storage is not ready, whatever the grace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The storage serves.
    Ready,
    /// The storage does not serve (`reason`) since `down_for`, within the grace: still ready.
    WithinGrace { reason: &'static str, down_for: Duration },
    /// Not ready, for `reason`.
    NotReady(&'static str),
}

/// The grace and what has been seen of the storage so far.
#[derive(Debug)]
pub struct Readiness {
    grace: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The replica has been ready once: the grace applies from then on.
    ever_ready: bool,
    /// Since when the storage has not served (None while it serves).
    down_since: Option<Instant>,
}

impl Readiness {
    /// A replica that has not been ready yet; `grace` zero: not ready as soon as the storage
    /// does not serve.
    pub fn new(grace: Duration) -> Readiness {
        Readiness { grace, seen: Mutex::new(Seen::default()) }
    }

    /// Records the storage's state at `now` (`why_not`: None when it serves) and answers.
    /// Called by `/readyz` and by a watcher every 100 ms, so the grace counts from when the
    /// trouble began rather than from the next probe.
    pub fn observe(&self, why_not: Option<&'static str>, now: Instant) -> Verdict {
        // The lock is never held across an await, and a poisoned one only means a panic in
        // this short function: the state is still usable.
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(reason) = why_not else {
            seen.ever_ready = true;
            seen.down_since = None;
            return Verdict::Ready;
        };
        if !seen.ever_ready {
            return Verdict::NotReady(reason);
        }
        let since = *seen.down_since.get_or_insert(now);
        let down_for = now.saturating_duration_since(since);
        if down_for < self.grace { Verdict::WithinGrace { reason, down_for } } else { Verdict::NotReady(reason) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Option<&str> = Some("not connected to the storage");

    /// Never ready: the grace does not apply.
    #[test]
    fn not_ready_before_the_first_success() {
        let r = Readiness::new(Duration::from_secs(30));
        assert_eq!(r.observe(DOWN, Instant::now()), Verdict::NotReady("not connected to the storage"));
    }

    /// Ready, then down: ready within the grace, counted from the first sight of the trouble,
    /// not ready past it, ready again once the storage serves; the next outage gets a new grace.
    #[test]
    fn grace_counts_from_the_start_of_each_outage() {
        let r = Readiness::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(r.observe(None, t0), Verdict::Ready);
        let s = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(r.observe(DOWN, s(1)), Verdict::WithinGrace { reason: DOWN.unwrap(), down_for: Duration::ZERO });
        assert_eq!(
            r.observe(DOWN, s(30)),
            Verdict::WithinGrace { reason: DOWN.unwrap(), down_for: Duration::from_secs(29) }
        );
        assert_eq!(r.observe(DOWN, s(31)), Verdict::NotReady(DOWN.unwrap()));
        assert_eq!(r.observe(None, s(40)), Verdict::Ready);
        assert!(matches!(r.observe(DOWN, s(50)), Verdict::WithinGrace { .. }));
    }

    /// Grace zero: not ready at once (the behaviour before the grace existed).
    #[test]
    fn zero_grace_is_not_ready_at_once() {
        let r = Readiness::new(Duration::ZERO);
        let t0 = Instant::now();
        r.observe(None, t0);
        assert_eq!(r.observe(DOWN, t0), Verdict::NotReady(DOWN.unwrap()));
    }
}
