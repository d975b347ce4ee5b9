//! The read-back of `--verify`: every acknowledged write must be there with its id. Reads that
//! fail for a transient reason (the storage is still recovering) are retried until the verify
//! deadline; what still cannot be read then is "unverified", never counted as lost or present.
//! Failed writes are looked up too: a write that failed but is present is not an error (its
//! acknowledgement was lost, e.g. a 503 after the storage had committed), and is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::stats::Write;
use crate::target::Target;

/// Pause between retries of one read.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Most lost ids listed in the report.
pub const MAX_LISTED: usize = 100;

/// What the read-back found.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Acknowledged writes absent or holding another id.
    pub lost: Vec<u64>,
    /// Acknowledged writes that could not be read before the deadline.
    pub unverified: u64,
    /// Failed writes found present.
    pub unacknowledged_present: u64,
}

/// Reads back `acked` (must be present) and `unacked` (may be), `concurrency` at a time.
pub async fn check(
    target: Arc<Target>,
    acked: Vec<Write>,
    unacked: Vec<Write>,
    concurrency: usize,
    limit: Duration,
) -> Outcome {
    let deadline = Instant::now() + limit;
    // Every acknowledgement happened before this point; make reads see all of them.
    while let Err(kind) = target.sync().await {
        if Instant::now() >= deadline {
            tracing::warn!(error = kind, "cannot reach the target to verify");
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    let writes: Arc<Vec<(Write, bool)>> =
        Arc::new(acked.into_iter().map(|w| (w, true)).chain(unacked.into_iter().map(|w| (w, false))).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let unverified = Arc::new(AtomicU64::new(0));
    let present = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (target, writes, next) = (target.clone(), writes.clone(), next.clone());
        let (unverified, present, lost) = (unverified.clone(), present.clone(), lost.clone());
        tasks.spawn(async move {
            while let Some((w, acked)) = writes.get(next.fetch_add(1, Ordering::Relaxed)) {
                match read_until(&target, w, deadline).await {
                    Some(there) if *acked && !there => {
                        lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(w.id);
                    }
                    Some(there) if !*acked && there => {
                        present.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None if *acked => {
                        unverified.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut lost = std::mem::take(&mut *lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    lost.sort_unstable();
    Outcome {
        lost,
        unverified: unverified.load(Ordering::Relaxed),
        unacknowledged_present: present.load(Ordering::Relaxed),
    }
}

/// Whether `w` is there with its id; `None` if no read succeeded before `deadline`.
async fn read_until(target: &Target, w: &Write, deadline: Instant) -> Option<bool> {
    loop {
        match target.read(&w.item).await {
            Ok(found) => return Some(found == Some(w.id)),
            Err(kind) if Instant::now() >= deadline => {
                tracing::warn!(id = w.id, error = kind, "cannot read back a write");
                return None;
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}
