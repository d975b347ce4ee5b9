//! The server's write lease: "you may acknowledge commits until T", granted by the supervisor on
//! every successful renewal of its lease (docs/FAILOVER.md, "The write lease").
//!
//! T is a reading of this machine's `CLOCK_BOOTTIME`, which keeps counting while the process is
//! stopped or the machine suspended, so a server that resumes after its deadline is fenced at once.
//! The deadline only moves forward (a late, stale grant cannot shorten or revive anything), is capped
//! at `now + max_grant` whatever the supervisor asks, and is over exactly at T. Once a granted
//! deadline has passed, the lease is *expired* and stays so: the server demotes itself, and only a
//! promotion (a new epoch, with its own first grant) starts a new lease.
//!
//! The check (`allows_ack_now`) runs where a commit would be acknowledged, in
//! `StorageHost::publish_durable`, after the transaction's fsync and before its answer and
//! invalidations are queued.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Nanoseconds of `CLOCK_BOOTTIME` now: monotonic, and counting suspended time.
pub fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is available on every Linux since 2.6.39");
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The deadline a grant asking for `requested` yields at `now`: never past `now + max_grant`.
pub fn capped(requested: u64, now: u64, max_grant: Duration) -> u64 {
    let max = u64::try_from(max_grant.as_nanos()).unwrap_or(u64::MAX);
    requested.min(now.saturating_add(max))
}

/// Whether a deadline `until` (0: none) lets a commit be acknowledged at `now`. Over exactly at T.
pub fn allows(until: u64, now: u64) -> bool {
    now < until
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The deadline already passed: the server is fencing itself; only a promotion starts anew.
    #[error("the write lease expired {ago_ms} ms ago: this server is demoting itself; promote it again to write")]
    Expired { ago_ms: u64 },
    /// The grant ends before now (or now): nothing would be writable.
    #[error("until_boottime_ns {until} is not after the server's boottime now ({now})")]
    InThePast { until: u64, now: u64 },
}

/// Why the server would not acknowledge a commit now, as `/status` says it.
pub const REASON_EXPIRED: &str = "write lease expired";
pub const REASON_NOT_GRANTED: &str = "no write lease granted yet";

/// The lease state, shared by the admin routes, the expiry timer and every storage host.
#[derive(Debug)]
pub struct WriteLease {
    required: bool,
    max_grant: Duration,
    /// Deadline in boottime nanoseconds; 0 when none was granted (since the last promotion).
    until: AtomicU64,
    /// Commits made here wait for a live grant before they are answered or published. Cleared
    /// when the server follows a primary (what it holds then is in that primary's history too).
    hold: AtomicBool,
    /// Wakes the expiry timer: a new deadline, or a publication held back by an expired one.
    changed: Notify,
}

impl WriteLease {
    pub fn new(required: bool, max_grant: Duration) -> Self {
        WriteLease {
            required,
            max_grant,
            until: AtomicU64::new(0),
            hold: AtomicBool::new(required),
            changed: Notify::new(),
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn max_grant(&self) -> Duration {
        self.max_grant
    }

    /// The current deadline (0: none).
    pub fn until(&self) -> u64 {
        self.until.load(Ordering::SeqCst)
    }

    /// Whether a commit made here may be acknowledged at this instant.
    pub fn allows_ack_now(&self) -> bool {
        !self.required || !self.hold.load(Ordering::SeqCst) || allows(self.until(), boottime_ns())
    }

    /// Whether the deadline granted since the last promotion has passed.
    pub fn expired_at(&self, now: u64) -> bool {
        let until = self.until();
        self.required && until != 0 && !allows(until, now)
    }

    /// Why a commit would not be acknowledged now for lease reasons (`None`: the lease allows it).
    pub fn reason_at(&self, now: u64) -> Option<&'static str> {
        if !self.required || !self.hold.load(Ordering::SeqCst) {
            return None;
        }
        match self.until() {
            0 => Some(REASON_NOT_GRANTED),
            until if !allows(until, now) => Some(REASON_EXPIRED),
            _ => None,
        }
    }

    /// Milliseconds left (`None`: no deadline granted).
    pub fn remaining_ms_at(&self, now: u64) -> Option<u64> {
        match self.until() {
            0 => None,
            until => Some(until.saturating_sub(now) / 1_000_000),
        }
    }

    /// Extends the deadline to `min(requested, now + max_grant)`; never moves it back. Returns the
    /// deadline kept.
    pub fn grant(&self, requested: u64, now: u64) -> Result<u64, GrantError> {
        let wanted = capped(requested, now, self.max_grant);
        let mut current = self.until();
        loop {
            if self.required && current != 0 && !allows(current, now) {
                return Err(GrantError::Expired { ago_ms: now.saturating_sub(current) / 1_000_000 });
            }
            if !allows(wanted, now) {
                return Err(GrantError::InThePast { until: requested, now });
            }
            if wanted <= current {
                return Ok(current);
            }
            match self.until.compare_exchange(current, wanted, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.changed.notify_one();
                    return Ok(wanted);
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// A promotion's first grant: a new lease (a new epoch), whatever the old one was; commits made
    /// here are held for a live grant again. Returns the deadline kept. A deadline already past is
    /// kept too, so that the expiry timer fences the server (callers refuse such a grant up front).
    pub fn start(&self, requested: u64, now: u64) -> u64 {
        let wanted = capped(requested, now, self.max_grant);
        self.until.store(wanted, Ordering::SeqCst);
        self.hold.store(self.required, Ordering::SeqCst);
        self.changed.notify_one();
        wanted
    }

    /// Ends the lease (demotion): nothing here may be acknowledged until a promotion.
    pub fn end(&self) {
        self.until.store(0, Ordering::SeqCst);
        self.hold.store(self.required, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Following a primary: the commits still held here are in its history (or were cut by the
    /// rewind), so they no longer wait for a grant of ours.
    pub fn release_hold(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }

    /// Wakes the expiry timer (a publication was held back: the deadline may have passed).
    pub fn poke(&self) {
        self.changed.notify_one();
    }

    /// Resolves at the next grant, start, end or poke.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn lease() -> WriteLease {
        WriteLease::new(true, Duration::from_secs(30))
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a, "{a} then {b}");
    }

    #[test]
    fn capped_by_max_grant() {
        assert_eq!(capped(100 * S, 10 * S, Duration::from_secs(30)), 40 * S);
        assert_eq!(capped(20 * S, 10 * S, Duration::from_secs(30)), 20 * S);
        assert_eq!(capped(u64::MAX, u64::MAX - 1, Duration::from_secs(30)), u64::MAX);
        let l = lease();
        assert_eq!(l.start(1_000 * S, 10 * S), 40 * S);
        assert_eq!(l.grant(1_000 * S, 11 * S), Ok(41 * S));
    }

    #[test]
    fn expired_exactly_at_the_deadline() {
        assert!(allows(10, 9));
        assert!(!allows(10, 10));
        assert!(!allows(0, 0), "no deadline allows nothing");
        let l = lease();
        l.start(20 * S, 10 * S);
        assert_eq!(l.reason_at(20 * S - 1), None);
        assert!(!l.expired_at(20 * S - 1));
        assert_eq!(l.reason_at(20 * S), Some(REASON_EXPIRED));
        assert!(l.expired_at(20 * S));
        assert_eq!(l.remaining_ms_at(19 * S), Some(1_000));
        assert_eq!(l.remaining_ms_at(21 * S), Some(0));
    }

    #[test]
    fn never_moves_back() {
        let l = lease();
        l.start(20 * S, 10 * S);
        assert_eq!(l.grant(15 * S, 11 * S), Ok(20 * S), "an older grant keeps the later deadline");
        assert_eq!(l.until(), 20 * S);
        assert_eq!(l.grant(25 * S, 12 * S), Ok(25 * S));
    }

    #[test]
    fn an_expired_lease_is_not_revived() {
        let l = lease();
        l.start(20 * S, 10 * S);
        assert_eq!(l.grant(40 * S, 21 * S), Err(GrantError::Expired { ago_ms: 1_000 }));
        assert_eq!(l.until(), 20 * S);
        assert!(matches!(l.grant(40 * S, 20 * S), Err(GrantError::Expired { .. })), "expired at T exactly");
        assert_eq!(l.start(40 * S, 21 * S), 40 * S, "a promotion starts a new lease");
    }

    #[test]
    fn a_grant_in_the_past_is_refused() {
        let l = lease();
        assert_eq!(l.grant(10 * S, 10 * S), Err(GrantError::InThePast { until: 10 * S, now: 10 * S }));
        assert_eq!(l.until(), 0, "nothing was granted");
        assert_eq!(l.start(5 * S, 10 * S), 5 * S, "a late first grant is kept, so that it expires");
        assert!(l.expired_at(10 * S));
    }

    #[test]
    fn reasons() {
        let l = lease();
        assert_eq!(l.reason_at(S), Some(REASON_NOT_GRANTED));
        assert_eq!(l.remaining_ms_at(S), None);
        l.start(20 * S, 10 * S);
        assert_eq!(l.reason_at(11 * S), None);
        l.end();
        assert_eq!(l.reason_at(11 * S), Some(REASON_NOT_GRANTED));
        l.release_hold();
        assert_eq!(l.reason_at(11 * S), None, "a follower holds nothing back");
    }

    #[test]
    fn not_required_allows_everything() {
        let l = WriteLease::new(false, Duration::from_secs(30));
        assert!(l.allows_ack_now());
        assert_eq!(l.reason_at(S), None);
        assert!(!l.expired_at(S));
        l.start(20 * S, 10 * S);
        assert!(!l.expired_at(30 * S), "nothing expires when no lease is required");
        assert_eq!(l.grant(50 * S, 30 * S), Ok(50 * S), "nor is a lapsed grant a fence");
    }

    #[test]
    fn a_live_lease_allows_acknowledgements_now() {
        let l = lease();
        assert!(!l.allows_ack_now());
        let now = boottime_ns();
        l.start(now + 30 * S, now);
        assert!(l.allows_ack_now());
        l.end();
        assert!(!l.allows_ack_now());
    }
}
