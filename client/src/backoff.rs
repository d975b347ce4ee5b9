//! Waiting between attempts: [`Backoff`] (doubling, jittered) between failed connection
//! attempts, and [`jitter`], which the retries of `Client::transact` also use, so that clients
//! that failed together do not all come back at the same moment.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter between failed connection attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The delay before the next attempt: the current step scaled by a random factor in
    /// [0.5, 1.0] (so that clients that lost the same server spread out, yet none waits longer
    /// than the step), after which the step doubles up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(step)
    }

    /// Back to `min`, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `base` scaled by a random factor in [0.5, 1.0].
pub(crate) fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(750));
        let steps = [100u64, 200, 400, 750, 750];
        for step in steps {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step), "{d:?} for {step}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads() {
        let samples: Vec<Duration> = (0..200).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter should vary");
    }
}
