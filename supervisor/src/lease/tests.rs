//! The behaviour every backend must show, run against each of them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Cas, LeaseElector, LeaseRecord, LeaseStore};

/// Whole seconds (the Kubernetes Lease field is in seconds); under paused time it costs nothing.
pub(crate) const DURATION: Duration = Duration::from_secs(1);

/// An elector whose store calls may take up to the whole duration: the contract is about the
/// algorithm, not about how fast a loaded test machine syncs a file.
fn elector(store: &Arc<dyn LeaseStore>, identity: &str) -> LeaseElector {
    let mut e = LeaseElector::new(store.clone(), identity, DURATION);
    e.set_timing(DURATION, DURATION);
    e
}

pub(crate) async fn elector_contract(store: Arc<dyn LeaseStore>) {
    let mut a = elector(&store, "a");
    let mut b = elector(&store, "b");
    let v = a.observe().await;
    assert!(v.reachable && v.expired && v.holder.is_none() && v.transitions == 0, "absent lease: {v:?}");

    assert!(a.try_acquire().await.unwrap(), "a takes a lease that never existed");
    let v = a.view(tokio::time::Instant::now());
    assert_eq!((v.holder.as_deref(), v.transitions), (Some("a"), 1));
    assert!(v.renewed_at.is_some());

    let v = b.observe().await;
    assert!(!v.expired && v.renewed_at.is_none(), "b sees a's fresh lease: {v:?}");
    assert!(!b.try_acquire().await.unwrap(), "b may not take a live lease");

    // Expiry counts from when b last saw the record change, not from the record's times.
    tokio::time::sleep(DURATION / 2).await;
    assert!(a.renew().await.unwrap());
    b.observe().await;
    tokio::time::sleep(DURATION / 2 + DURATION / 4).await;
    assert!(!b.observe().await.expired, "renewed within the duration as seen by b");
    tokio::time::sleep(DURATION).await;
    let v = b.observe().await;
    assert!(v.expired, "nobody renewed for a full duration: {v:?}");
    assert!(b.try_acquire().await.unwrap());
    assert_eq!(b.view(tokio::time::Instant::now()).transitions, 2, "a new holder raises the epoch");

    assert!(!a.renew().await.unwrap(), "a lost it: the CAS fails");
    assert_eq!(a.view(tokio::time::Instant::now()).holder.as_deref(), Some("b"), "and a learned the winner");

    // A planned release names the next holder; two candidates race, exactly one wins.
    assert!(b.release(Some("a".into())).await.unwrap());
    let mut c = elector(&store, "c");
    let (va, vc) = (a.observe().await, c.observe().await);
    assert!(va.expired && vc.expired && va.holder.is_none());
    assert_eq!(va.preferred_holder.as_deref(), Some("a"));
    let (wa, wc) = tokio::join!(a.try_acquire(), c.try_acquire());
    assert!(wa.unwrap() ^ wc.unwrap(), "exactly one candidate wins the CAS");
    let winner = if a.view(tokio::time::Instant::now()).holder.as_deref() == Some("a") { &mut a } else { &mut c };
    assert_eq!(winner.observe().await.transitions, 3);

    // Out-of-sync marks travel with the lease, and a new holder inherits them.
    winner.set_out_of_sync(Some(vec!["x".into(), "b".into(), "x".into()]));
    assert!(winner.renew().await.unwrap());
    assert_eq!(b.observe().await.out_of_sync, ["b", "x"], "every observer reads the marks");
    winner.set_out_of_sync(None);
    assert!(winner.release(None).await.unwrap());
    b.observe().await;
    assert!(b.try_acquire().await.unwrap());
    assert_eq!(b.view(tokio::time::Instant::now()).out_of_sync, ["b", "x"], "kept across a transition");
    b.set_out_of_sync(Some(Vec::new()));
    assert!(b.renew().await.unwrap());
    assert!(a.observe().await.out_of_sync.is_empty(), "cleared when the primary reports none");

    // Wall-clock times in the record are ignored: an ancient renewTime is still a fresh change.
    let current = store.get().await.unwrap().unwrap();
    let skewed = LeaseRecord {
        holder: Some("z".into()),
        renew_time: Some(UNIX_EPOCH + Duration::from_secs(10)),
        acquire_time: Some(SystemTime::now() + Duration::from_secs(86_400)),
        ..current.record.clone()
    };
    assert!(matches!(store.compare_and_swap(Some(&current.version), &skewed).await.unwrap(), Cas::Written(_)));
    assert!(
        matches!(store.compare_and_swap(Some(&current.version), &skewed).await.unwrap(), Cas::Conflict),
        "a stale version is refused"
    );
    let mut d = elector(&store, "d");
    let v = d.observe().await;
    assert!(!v.expired && v.holder.as_deref() == Some("z"), "clock skew does not expire a lease: {v:?}");
}

/// A store that accepts and never answers costs a call no more than its budget, and the elector
/// reports it unreachable instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn a_stalled_store_costs_at_most_the_budget() {
    use crate::testkit::stall_store::StallStore;
    let stall = Arc::new(StallStore::new(Arc::new(super::static_store::StaticLeaseStore::in_memory())));
    let store: Arc<dyn LeaseStore> = stall.clone();
    let mut a = LeaseElector::new(store, "a", Duration::from_secs(6));
    a.set_timing(Duration::from_secs(4), Duration::from_secs(1));
    assert!(a.try_acquire().await.unwrap());
    assert!(a.written_from_ns().is_some(), "a write we made is a grant base");
    stall.set_stalled(true);
    let start = tokio::time::Instant::now();
    assert!(!a.observe().await.reachable);
    assert!(start.elapsed() <= Duration::from_secs(1), "a read waits at most the retry period");
    // 3.5 s into the lease: half a second is left before the renew deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let start = tokio::time::Instant::now();
    let renewed = a.renew().await;
    assert!(matches!(renewed, Err(super::LeaseError::TimedOut { call: "compare-and-swap", .. })), "{renewed:?}");
    let took = start.elapsed();
    assert!(took <= Duration::from_millis(500), "never past the renew deadline: {took:?}");
    stall.set_stalled(false);
    assert!(a.renew().await.unwrap(), "answers again");
}

/// The grant base is the clock read before the write was sent: a write the store holds for a
/// while earns a grant counted from before it, never from when it returned.
#[tokio::test]
async fn the_grant_base_is_read_before_the_write_is_sent() {
    use crate::testkit::stall_store::StallStore;
    let stall = Arc::new(StallStore::new(Arc::new(super::static_store::StaticLeaseStore::in_memory())));
    let store: Arc<dyn LeaseStore> = stall.clone();
    let mut a = LeaseElector::new(store, "a", Duration::from_secs(60));
    a.set_timing(Duration::from_secs(40), Duration::from_secs(10));
    assert!(a.try_acquire().await.unwrap());
    stall.set_stalled(true);
    let releaser = {
        let stall = stall.clone();
        tokio::spawn(async move {
            while stall.stalled_writes() == 0 {
                tokio::task::yield_now().await;
            }
            let released_at = crate::grant::boottime_ns();
            stall.set_stalled(false);
            released_at
        })
    };
    assert!(a.renew().await.unwrap());
    let released_at = releaser.await.unwrap();
    let base = a.written_from_ns().unwrap();
    assert!(base < released_at, "grant base {base} read after the write was held until {released_at}");
}
