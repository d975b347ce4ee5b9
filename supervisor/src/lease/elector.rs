//! Acquire, renew and release on any [`LeaseStore`], with expiry on the local monotonic clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Versioned, bounded};
use crate::decide::LeaseView;
use crate::grant::boottime_ns;

/// How long a released lease stays visible as "just released" (client-go writes 1 s too).
const RELEASED_DURATION: Duration = Duration::from_secs(1);

/// One supervisor's handle on the lease. Not shared: the loop owns it.
pub struct LeaseElector {
    store: Arc<dyn LeaseStore>,
    identity: String,
    duration: Duration,
    /// A holder fences at this age of its last renewal: no store call may run past it.
    renew_deadline: Duration,
    /// No store call waits longer than this.
    retry_period: Duration,
    /// The last record seen and when (locally) it last changed.
    seen: Option<(Versioned, Instant)>,
    /// The store has been read (absent records included) at least once.
    read_once: bool,
    reachable: bool,
    /// Start of our last successful acquire or renew: the renew deadline counts from here.
    renewed_at: Option<Instant>,
    /// CLOCK_BOOTTIME read before our last successful write was sent: what the write lease
    /// granted to our server counts from. `None` unless we wrote the record we hold.
    written_from_ns: Option<u64>,
    /// What our primary server reports as out-of-sync standbys, for the next write; `None`
    /// keeps the record's list (our server does not serve at the lease's epoch). `Some` also
    /// clears the failed promotions on record: a holder serves again.
    out_of_sync: Option<Vec<String>>,
}

impl LeaseElector {
    /// An elector whose store calls are bounded by client-go's default proportions of `duration`
    /// (renew deadline 2/3, retry period 1/6) until [`LeaseElector::set_timing`] sets the real ones.
    pub fn new(store: Arc<dyn LeaseStore>, identity: impl Into<String>, duration: Duration) -> LeaseElector {
        LeaseElector {
            store,
            identity: identity.into(),
            duration,
            renew_deadline: duration * 2 / 3,
            retry_period: duration / 6,
            written_from_ns: None,
            seen: None,
            read_once: false,
            reachable: false,
            renewed_at: None,
            out_of_sync: None,
        }
    }

    /// The renew deadline and retry period the store calls are bounded by.
    pub fn set_timing(&mut self, renew_deadline: Duration, retry_period: Duration) {
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
    }

    /// The budget of the next write: the retry period, cut to what is left of the renew deadline
    /// while we hold a lease that is not yet overdue.
    fn write_budget(&self, now: Instant) -> Duration {
        let left = self.renewed_at.map(|t| self.renew_deadline.saturating_sub(now.duration_since(t)));
        match left {
            Some(left) if !left.is_zero() => left.min(self.retry_period),
            _ => self.retry_period,
        }
    }

    /// CLOCK_BOOTTIME (ns) read before the write that gave us the lease we hold was sent: the
    /// base of the write lease we may grant. `None` when we hold nothing we wrote ourselves.
    pub fn written_from_ns(&self) -> Option<u64> {
        self.held().and(self.written_from_ns)
    }

    /// The out-of-sync marks in the record we hold, as last written or read: confirmed in the
    /// store. `None` when we do not hold the lease.
    pub fn recorded_out_of_sync(&self) -> Option<&[String]> {
        self.held().map(|r| r.out_of_sync.as_slice())
    }

    /// The out-of-sync standbys our primary server reports, written with the next acquire or
    /// renew (`None`: keep the record's).
    pub fn set_out_of_sync(&mut self, names: Option<Vec<String>>) {
        self.out_of_sync = names.map(|mut n| {
            n.sort();
            n.dedup();
            n
        });
    }

    fn marks(&self, record: &LeaseRecord) -> Vec<String> {
        self.out_of_sync.clone().unwrap_or_else(|| record.out_of_sync.clone())
    }

    fn names_us(&self, holder: Option<&str>) -> bool {
        holder == Some(self.identity.as_str())
    }

    /// The record as last seen, if it names us as the holder: only then may we renew or release.
    fn held(&self) -> Option<&LeaseRecord> {
        self.seen.as_ref().map(|(v, _)| &v.record).filter(|r| self.names_us(r.holder.as_deref()))
    }

    /// Reads the record and returns the view for [`decide`](crate::decide::decide).
    pub async fn observe(&mut self) -> LeaseView {
        let now = Instant::now();
        match bounded("read", self.retry_period, self.store.get()).await {
            Ok(current) => {
                self.reachable = true;
                self.read_once = true;
                self.note(current, now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "lease read failed");
                self.reachable = false;
            }
        }
        self.view(Instant::now())
    }

    /// Takes the lease if it is free or expired in our view. `Ok(false)`: someone else has it.
    ///
    /// # Errors
    /// The store did not answer.
    pub async fn try_acquire(&mut self) -> Result<bool, LeaseError> {
        let (start, start_ns) = (Instant::now(), boottime_ns());
        if !self.read_once {
            self.observe().await;
        }
        let view = self.view(start);
        let mine = self.names_us(view.holder.as_deref());
        if !mine && !view.expired {
            return Ok(false);
        }
        let wall = SystemTime::now();
        let old = self.seen.as_ref().map(|(v, _)| &v.record);
        let record = LeaseRecord {
            holder: Some(self.identity.clone()),
            preferred_holder: None,
            acquire_time: if mine { old.and_then(|r| r.acquire_time) } else { Some(wall) },
            renew_time: Some(wall),
            lease_duration: self.duration,
            transitions: old.map_or(0, |r| r.transitions) + u64::from(!mine),
            // A new holder inherits the marks until its own server reports (as primary).
            out_of_sync: self.out_of_sync.clone().or_else(|| old.map(|r| r.out_of_sync.clone())).unwrap_or_default(),
            promotion_failed: old.map(|r| r.promotion_failed.clone()).unwrap_or_default(),
        };
        self.write(record, start, start_ns).await
    }

    /// Renews a lease we hold. `Ok(false)`: it is no longer ours.
    ///
    /// # Errors
    /// The store did not answer.
    pub async fn renew(&mut self) -> Result<bool, LeaseError> {
        let (start, start_ns) = (Instant::now(), boottime_ns());
        let Some(current) = self.held() else {
            return Ok(false);
        };
        let serving = self.out_of_sync.is_some();
        let record = LeaseRecord {
            renew_time: Some(SystemTime::now()),
            out_of_sync: self.marks(current),
            promotion_failed: if serving { Vec::new() } else { current.promotion_failed.clone() },
            ..current.clone()
        };
        self.write(record, start, start_ns).await
    }

    /// Gives up a lease we hold, naming `to` as the preferred next holder.
    ///
    /// # Errors
    /// The store did not answer.
    pub async fn release(&mut self, to: Option<String>) -> Result<bool, LeaseError> {
        self.release_recording(to, false).await
    }

    /// Gives up a lease we hold because our server could not be promoted: the record names us
    /// among the failed promotions, so the other members pass us over.
    ///
    /// # Errors
    /// The store did not answer.
    pub async fn give_up_promotion(&mut self) -> Result<bool, LeaseError> {
        self.release_recording(None, true).await
    }

    async fn release_recording(&mut self, to: Option<String>, failed: bool) -> Result<bool, LeaseError> {
        let (start, start_ns) = (Instant::now(), boottime_ns());
        let Some(current) = self.held() else {
            return Ok(false);
        };
        let mut promotion_failed = current.promotion_failed.clone();
        if failed && !promotion_failed.contains(&self.identity) {
            promotion_failed.push(self.identity.clone());
            promotion_failed.sort();
        }
        let record = LeaseRecord {
            holder: None,
            preferred_holder: to,
            renew_time: Some(SystemTime::now()),
            lease_duration: RELEASED_DURATION,
            promotion_failed,
            ..current.clone()
        };
        // Even a release that times out must not keep a grant alive.
        self.written_from_ns = None;
        let released = self.write(record, start, start_ns).await?;
        self.renewed_at = None;
        self.written_from_ns = None;
        Ok(released)
    }

    async fn write(&mut self, record: LeaseRecord, start: Instant, start_ns: u64) -> Result<bool, LeaseError> {
        let expected = self.seen.as_ref().map(|(v, _)| v.version.clone());
        let budget = self.write_budget(start);
        let outcome =
            bounded("compare-and-swap", budget, self.store.compare_and_swap(expected.as_ref(), &record)).await;
        self.reachable = outcome.is_ok();
        match outcome? {
            Cas::Written(version) => {
                self.seen = Some((Versioned { record, version }, start));
                self.renewed_at = Some(start);
                self.written_from_ns = Some(start_ns);
                Ok(true)
            }
            Cas::Conflict => {
                // Learn the winner now rather than a tick later.
                self.observe().await;
                Ok(false)
            }
        }
    }

    fn note(&mut self, current: Option<Versioned>, now: Instant) {
        let Some(current) = current else {
            self.seen = None;
            self.renewed_at = None;
            self.written_from_ns = None;
            return;
        };
        let changed = self.seen.as_ref().is_none_or(|(old, _)| old.version != current.version);
        if changed {
            // A record naming us that we did not just write (a restart): count the renew
            // deadline from now, so a renewal is attempted before any fencing.
            let ours = self.names_us(current.record.holder.as_deref());
            if !ours {
                self.renewed_at = None;
                self.written_from_ns = None;
            } else if self.renewed_at.is_none() {
                self.renewed_at = Some(now);
            }
            self.seen = Some((current, now));
        }
    }

    /// The lease as seen at `now`.
    pub fn view(&self, now: Instant) -> LeaseView {
        let Some((current, changed_at)) = &self.seen else {
            return LeaseView { reachable: self.reachable, expired: true, ..LeaseView::default() };
        };
        let r = &current.record;
        let expired = r.holder.is_none() || now.duration_since(*changed_at) >= r.lease_duration;
        let mine = self.names_us(r.holder.as_deref());
        LeaseView {
            reachable: self.reachable,
            holder: r.holder.clone(),
            preferred_holder: r.preferred_holder.clone(),
            transitions: r.transitions,
            out_of_sync: r.out_of_sync.clone(),
            promotion_failed: r.promotion_failed.clone(),
            expired,
            renewed_at: if mine { self.renewed_at } else { None },
            changed_at: Some(*changed_at),
        }
    }
}
