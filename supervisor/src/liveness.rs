//! Is the loop still turning? `/livez` answers 503 once it has not made progress (finished an
//! observation or an action) within its bound, so the kubelet (or systemd) restarts a wedged
//! supervisor. Every call the loop makes is bounded, so a loop that stops beating is stuck on
//! something that ignores its deadline (a blocked thread, a bug), not on a slow peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Before the loop sets its bound: generous, so a slow start is not a restart.
const STARTUP_BOUND: Duration = Duration::from_secs(60);

/// The loop's heartbeat, shared with the admin port.
pub struct Liveness {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat.
    last_beat_ms: AtomicU64,
    bound_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            bound_ms: AtomicU64::new(millis(STARTUP_BOUND)),
        }
    }

    /// The longest a healthy loop goes between beats: two ticks or retry periods (whichever is
    /// longer: the pause between ticks, plus slack for a step that needs two calls) plus the
    /// longest single call.
    pub fn bound_for(tick: Duration, retry_period: Duration, max_call: Duration) -> Duration {
        2 * tick.max(retry_period) + max_call
    }

    pub fn set_bound(&self, bound: Duration) {
        self.bound_ms.store(millis(bound), Ordering::Relaxed);
    }

    /// The loop made progress.
    pub fn beat(&self) {
        self.last_beat_ms.store(millis(self.origin.elapsed()), Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn since_beat(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// The loop beat within its bound.
    pub fn is_live(&self) -> bool {
        self.since_beat() <= Duration::from_millis(self.bound_ms.load(Ordering::Relaxed))
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_while_beating_within_the_bound_dead_after() {
        let l = Liveness::new();
        assert!(l.is_live(), "starting up");
        l.set_bound(Duration::from_millis(30));
        l.beat();
        assert!(l.is_live());
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(80) {
            std::hint::spin_loop();
        }
        assert!(!l.is_live(), "no beat for longer than the bound: {:?}", l.since_beat());
        l.beat();
        assert!(l.is_live(), "a beat brings it back");
    }

    #[test]
    fn the_bound_covers_two_ticks_and_the_longest_call() {
        let s = Duration::from_secs;
        assert_eq!(Liveness::bound_for(Duration::from_millis(200), s(1), s(1)), s(3));
        assert_eq!(Liveness::bound_for(s(2), s(1), s(1)), s(5), "a tick longer than the retry period");
    }
}
