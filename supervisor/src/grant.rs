//! The write lease our server is granted: "you may acknowledge commits until T".
//!
//! T is on CLOCK_BOOTTIME, the server's clock as much as ours: the supervisor and its server
//! run on one kernel (one host, or one pod), which [`same_kernel`] checks against the boottime
//! the server reports in `/status`. CLOCK_BOOTTIME counts suspended time, so a paused process or
//! VM resumes past T, fenced.
//!
//! The arithmetic ([`grant_until`]): a lease write that *started* at `t0` (the clock read before
//! the request was sent, never after) earns `t0 + renew_deadline`. Peers count `lease_duration`
//! from when they saw the record change, which is after `t0`; `renew_deadline < lease_duration`
//! (validated at start-up), so the grant ends strictly before any peer may take the lease.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// How far the server's reported boottime may lie outside the interval in which we asked for it.
/// One kernel reads the same clock, so the only error is the server building its answer a little
/// before or after; different kernels differ by their boot times, almost always by far more.
pub const SAME_KERNEL_SLACK: Duration = Duration::from_millis(250);

/// Nanoseconds on CLOCK_BOOTTIME now.
pub fn boottime_ns() -> u64 {
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; without it there is nothing to grant on.
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The end of the grant earned by a lease write that started at `write_started_ns`: never past
/// the renew deadline, and strictly before the lease could expire for anyone.
pub fn grant_until(write_started_ns: u64, renew_deadline: Duration, lease_duration: Duration) -> u64 {
    let bound = renew_deadline.min(lease_duration.saturating_sub(Duration::from_millis(1)));
    write_started_ns.saturating_add(nanos(bound))
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KernelMismatch {
    /// The server reports no boottime: it predates write leases.
    #[error("the server reports no boottime_ns (no write-lease support)")]
    Unknown,
    /// The server's clock is not ours: a grant on our clock would mean nothing to it.
    #[error(
        "the server's CLOCK_BOOTTIME ({server_ns} ns) is outside [{before_ns}, {after_ns}] ns +/- {SAME_KERNEL_SLACK:?} \
         read here: it does not run on this kernel"
    )]
    OtherKernel { server_ns: u64, before_ns: u64, after_ns: u64 },
}

/// Checks that the server's `boottime_ns`, read while we waited from `before_ns` to `after_ns`
/// on our clock, is the same clock.
///
/// # Errors
/// See [`KernelMismatch`].
pub fn same_kernel(server_ns: Option<u64>, before_ns: u64, after_ns: u64) -> Result<(), KernelMismatch> {
    let server_ns = server_ns.ok_or(KernelMismatch::Unknown)?;
    let slack = nanos(SAME_KERNEL_SLACK);
    if server_ns.saturating_add(slack) < before_ns || server_ns > after_ns.saturating_add(slack) {
        return Err(KernelMismatch::OtherKernel { server_ns, before_ns, after_ns });
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEW: Duration = Duration::from_secs(4);
    const LEASE: Duration = Duration::from_secs(6);

    #[test]
    fn the_grant_counts_from_the_clock_read_before_the_write() {
        let before = boottime_ns();
        // The write takes a while; the grant must not count from its end.
        let slow_write_ended = before + 3_000_000_000;
        let until = grant_until(before, RENEW, LEASE);
        assert_eq!(until, before + 4_000_000_000);
        assert!(until < slow_write_ended + nanos(RENEW), "counted from before the write");
    }

    #[test]
    fn never_past_the_renew_deadline_nor_the_lease_expiry() {
        let t0 = 1_000_000_000_000;
        assert!(grant_until(t0, RENEW, LEASE) <= t0 + nanos(RENEW), "renew deadline");
        // A configuration that slipped through: still strictly before any peer's expiry.
        let until = grant_until(t0, LEASE, LEASE);
        assert!(until < t0 + nanos(LEASE), "strictly before expiry: {until}");
        assert!(grant_until(t0, Duration::from_secs(60), LEASE) < t0 + nanos(LEASE));
        assert_eq!(grant_until(u64::MAX - 1, RENEW, LEASE), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn the_same_kernel_check_accepts_our_clock_and_refuses_another() {
        let before = boottime_ns();
        let server = boottime_ns();
        let after = boottime_ns();
        assert_eq!(same_kernel(Some(server), before, after), Ok(()));
        assert_eq!(same_kernel(None, before, after), Err(KernelMismatch::Unknown));
        let hour = 3_600_000_000_000;
        assert!(matches!(same_kernel(Some(server + hour), before, after), Err(KernelMismatch::OtherKernel { .. })));
        assert!(matches!(
            same_kernel(Some(server.saturating_sub(hour)), before + hour, after + hour),
            Err(KernelMismatch::OtherKernel { .. })
        ));
        let slack = nanos(SAME_KERNEL_SLACK);
        assert_eq!(same_kernel(Some(after + slack), before, after), Ok(()), "within the slack");
        assert!(same_kernel(Some(after + slack + 1), before, after).is_err(), "just past it");
    }
}
