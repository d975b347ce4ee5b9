//! Client counters: plain atomics, read as a [`MetricsSnapshot`].
//!
//! The library does not pick a metrics system; an application exports the snapshot to
//! whatever it uses (the planned app client exports them to Prometheus).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub loads: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    pub read_conflicts: AtomicU64,
    pub retries: AtomicU64,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub disconnects: AtomicU64,
    pub invalidations: AtomicU64,
    pub commit_resolutions: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            loads: get(&self.loads),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            commits: get(&self.commits),
            conflicts: get(&self.conflicts),
            read_conflicts: get(&self.read_conflicts),
            retries: get(&self.retries),
            connects: get(&self.connects),
            reconnects: get(&self.reconnects),
            disconnects: get(&self.disconnects),
            invalidations: get(&self.invalidations),
            commit_resolutions: get(&self.commit_resolutions),
        }
    }
}

/// The client's counters at one moment. All are totals since the client started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Object loads requested through transactions.
    pub loads: u64,
    /// Loads answered from the in-memory cache.
    pub cache_hits: u64,
    /// Loads that went to the server.
    pub cache_misses: u64,
    /// Transactions committed (tpc_finish acknowledged, or resolved as committed).
    pub commits: u64,
    /// Write conflicts reported by the server at vote.
    pub conflicts: u64,
    /// Read conflicts: at vote (`check_current`) or on load (object newer than the snapshot).
    pub read_conflicts: u64,
    /// Transactions run again by [`crate::Client::transact`].
    pub retries: u64,
    /// Successful connections (registered and verified), the first one included.
    pub connects: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Connections lost (or dropped on purpose, e.g. when switching to a writable server).
    pub disconnects: u64,
    /// `invalidateTransaction` messages applied to the cache.
    pub invalidations: u64,
    /// Commits whose connection died during `tpc_finish` and whose outcome had to be looked up.
    pub commit_resolutions: u64,
}
