//! The loop and the write lease: grants follow renewals, stop when the store stalls (the server
//! then fences itself), promotion carries the first grant, another kernel gets none, and a loop
//! that stops making progress fails `/livez`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tests::{supervisor, wait_role};
use super::*;
use crate::lease::LeaseStore;
use crate::lease::static_store::StaticLeaseStore;
use crate::status::ServerRole;
use crate::testkit::admin_fake::{FakeServer, primary_status, standby_status};
use crate::testkit::stall_store::StallStore;

/// Polls `what` (every 20 ms, up to 30 s) until it holds; panics naming it otherwise.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "never: {what}");
}

fn count(fake: &FakeServer, prefix: &str) -> usize {
    fake.calls().iter().filter(|c| c.starts_with(prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_follow_renewals_and_stop_when_the_store_stalls_so_the_server_fences_itself() {
    let a = FakeServer::start_with_write_lease(primary_status(0)).await;
    let b = FakeServer::start_with_write_lease(standby_status(1, "a:9000", true, false)).await;
    assert!(!a.status().writable, "no grant yet: not writable");
    let stall = Arc::new(StallStore::new(Arc::new(StaticLeaseStore::in_memory())));
    let store: Arc<dyn LeaseStore> = stall.clone();
    let sup_a = supervisor("a", &a, ("b", &b), store.clone());
    let metrics = sup_a.metrics.clone();
    let renew_deadline = sup_a.cfg.renew_deadline;
    let stop = CancellationToken::new();
    let task_a = tokio::spawn(sup_a.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    assert_eq!(a.wait_call("promote").await, "promote 1 false granted", "the promotion carries the first grant");
    wait_role(&a, ServerRole::Primary, 1).await;
    // b joins once a serves: a primary that has no grant yet is not writable, so a standby
    // started beside it at bootstrap may win the first lease instead.
    let sup_b = supervisor("b", &b, ("a", &a), store);
    let task_b = tokio::spawn(sup_b.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    wait_for("a grant after a renewal", || count(&a, "write-lease 1") >= 2).await;
    wait_for("a writable", || a.status().writable).await;

    // The store stops answering: no renewal succeeds, so no grant extends the last one.
    stall.set_stalled(true);
    let stalled_at = crate::grant::boottime_ns();
    let grants = count(&a, "write-lease");
    wait_for("a fenced by its own write lease", || !a.status().writable).await;
    let until = a.granted_until().unwrap();
    let bound = stalled_at + u64::try_from(renew_deadline.as_nanos()).unwrap();
    assert!(until <= bound, "the last grant ends within a renew deadline of the stall: {until} > {bound}");
    assert_eq!(a.status().not_writable_reason.as_deref(), Some("write lease expired"));
    assert!(count(&a, "write-lease") <= grants + 1, "at most a grant in flight at the stall: {:?}", a.calls());
    assert!(metrics.liveness.is_live(), "every store call is bounded: the loop goes on");
    assert!(b.calls().iter().all(|c| !c.starts_with("promote")), "b cannot take a stalled store: {:?}", b.calls());

    // The store answers again: a renews and its server may write again.
    stall.set_stalled(false);
    wait_for("a writable again", || a.status().writable).await;
    stop.cancel();
    task_a.await.unwrap();
    task_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_another_kernel_is_promoted_without_a_grant() {
    let a = FakeServer::start_with_write_lease(primary_status(0)).await;
    let b = FakeServer::start_with_write_lease(standby_status(1, "a:9000", true, false)).await;
    a.set_boottime_offset(Duration::from_secs(3600));
    let sup = supervisor("a", &a, ("b", &b), Arc::new(StaticLeaseStore::in_memory()));
    let metrics = sup.metrics.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sup.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    assert_eq!(a.wait_call("promote").await, "promote 1 false", "no grant on a clock that is not ours");
    wait_role(&a, ServerRole::Primary, 1).await;
    wait_for("a renewal that grants nothing", || metrics.grant_failures.get() >= 2).await;
    assert_eq!(count(&a, "write-lease"), 0, "{:?}", a.calls());
    assert!(!a.status().writable);
    stop.cancel();
    task.await.unwrap();
}

/// A service address whose claim blocks its thread until released: a bug no timeout can cut.
struct WedgingMover {
    entered: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl AddressMover for WedgingMover {
    async fn claim(&self) -> Result<(), crate::mover::MoveError> {
        self.entered.store(true, Ordering::SeqCst);
        while !self.release.load(Ordering::SeqCst) {
            // Blocks the worker thread on purpose: this is the wedge under test.
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    async fn release(&self) -> Result<(), crate::mover::MoveError> {
        Ok(())
    }
}

async fn livez(url: &str) -> u16 {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    c.get(format!("{url}/livez")).send().await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_loop_fails_livez_and_recovers() {
    let a = FakeServer::start(primary_status(0)).await;
    let b = FakeServer::start(standby_status(1, "a:9000", true, false)).await;
    let (entered, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut sup = supervisor("a", &a, ("b", &b), Arc::new(StaticLeaseStore::in_memory()));
    sup.mover = Box::new(WedgingMover { entered: entered.clone(), release: release.clone() });
    let metrics = sup.metrics.clone();
    let app =
        crate::http::router(metrics, mpsc::channel(1).0, CancellationToken::new(), CancellationToken::new(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let stop = CancellationToken::new();
    let task = tokio::spawn(sup.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    assert_eq!(livez(&url).await, 200, "live while starting");
    wait_for("the address claim", || entered.load(Ordering::SeqCst)).await;
    let mut code = 0;
    for _ in 0..1500 {
        code = livez(&url).await;
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 503, "a loop stuck past its bound fails /livez");
    release.store(true, Ordering::SeqCst);
    let mut code = 0;
    for _ in 0..1500 {
        code = livez(&url).await;
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 200, "live again once the loop turns");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_admin_api_costs_a_call_its_budget_not_the_loop() {
    let a = FakeServer::start(primary_status(1)).await;
    let b = FakeServer::start(standby_status(1, "a:9000", true, false)).await;
    let mut sup = supervisor("a", &a, ("b", &b), Arc::new(StaticLeaseStore::in_memory()));
    a.set_admin_stalled(true);
    let mut mem = Memory::default();
    let done = tokio::time::timeout(Duration::from_secs(10), sup.carry_out(&Action::Demote, &mut mem)).await;
    let result = done.expect("the call is bounded by the loop, whatever the HTTP client does");
    assert!(matches!(result, Err(ActionError::TimedOut { call: "demote", .. })), "{result:?}");
    a.set_admin_stalled(false);
    assert!(sup.carry_out(&Action::Demote, &mut mem).await.is_ok(), "answers again");
}

/// The standby's disk is full: it takes the lease, its promotion fails three times, it gives the
/// lease back on record, and the old primary (demoted, with every commit) takes it back at once
/// (no failover interval: no primary was made) and is promoted. The epoch rises by two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promotion_gives_the_lease_back_to_the_old_primary() {
    let a = FakeServer::start_with_write_lease(primary_status(0)).await;
    let b = FakeServer::start_with_write_lease(standby_status(1, "a:9000", true, false)).await;
    let store: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::in_memory());
    let mut sup_a = supervisor("a", &a, ("b", &b), store.clone());
    sup_a.cfg.min_failover_interval = Duration::from_secs(600);
    let stop = CancellationToken::new();
    let task_a = tokio::spawn(sup_a.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    wait_role(&a, ServerRole::Primary, 1).await;
    let task_b = tokio::spawn(supervisor("b", &b, ("a", &a), store.clone()).run(
        mpsc::channel(1).1,
        CancellationToken::new(),
        stop.clone(),
    ));
    b.set_promote_error(Some("No space left on device"));
    // a's server hangs: a fences it (demote) and gives the lease up; b takes it at epoch 2.
    a.set_stalled(true);
    assert_eq!(a.wait_call("demote").await, "demote");
    a.set_stalled(false);
    assert!(b.wait_call("promote 2").await.starts_with("promote 2 false"));
    // Three refusals, then the lease goes back, and a is promoted at 3.
    wait_role(&a, ServerRole::Primary, 3).await;
    assert_eq!(count(&b, "promote 2"), 3, "three tries, then give up: {:?}", b.calls());
    assert!(count(&b, "promote 3") == 0 && count(&b, "promote 4") == 0, "no epoch burnt: {:?}", b.calls());
    let record = store.get().await.unwrap().unwrap().record;
    assert_eq!((record.holder.as_deref(), record.transitions), (Some("a"), 3), "{record:?}");
    wait_for("a writable again", || a.status().writable).await;
    // The next renewal by a serving holder clears the failed promotions.
    let cleared = tokio::time::timeout(Duration::from_secs(30), async {
        while !store.get().await.unwrap().unwrap().record.promotion_failed.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(cleared.is_ok(), "failed promotions still on record: {:?}", store.get().await.unwrap());
    stop.cancel();
    task_a.await.unwrap();
    task_b.await.unwrap();
}

/// The primary asks to degrade past its standby: the supervisor writes the mark into the lease
/// and only then tells the server; with the store stalled it never tells it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_degrades_only_after_the_mark_is_in_the_lease() {
    let a = FakeServer::start_with_write_lease(primary_status(0)).await;
    let b = FakeServer::start_with_write_lease(standby_status(1, "a:9000", true, false)).await;
    let stall = Arc::new(StallStore::new(Arc::new(StaticLeaseStore::in_memory())));
    let store: Arc<dyn LeaseStore> = stall.clone();
    let mut sup = supervisor("a", &a, ("b", &b), store.clone());
    // A renew deadline far beyond the stalled writes below: no fencing muddles the picture.
    sup.cfg.lease_duration = Duration::from_secs(20);
    sup.cfg.renew_deadline = Duration::from_secs(15);
    sup.cfg.validate().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sup.run(mpsc::channel(1).1, CancellationToken::new(), stop.clone()));
    wait_role(&a, ServerRole::Primary, 1).await;
    wait_for("a writable", || a.status().writable).await;
    let ask_to_degrade = |a: &FakeServer| {
        let mut st = a.status();
        if let crate::status::Replication::Primary(p) = &mut st.replication {
            p.standbys = vec![crate::status::StandbyLink {
                name: "b".into(),
                connected: false,
                acked_tid: st.last_tid,
                lag_transactions: 1,
                lag_bytes: None,
                lag_seconds: 0.5,
                in_sync: false,
                out_of_sync: false,
            }];
            p.degrade_requested = vec!["b".into()];
        }
        a.set_status(st);
    };

    // The store does not answer: the mark cannot be written, so the server is never told.
    stall.set_stalled(true);
    ask_to_degrade(&a);
    // Two writes of the mark timed out (the second starts only after the first gave up).
    wait_for("two stalled writes", || stall.stalled_writes() >= 2).await;
    assert_eq!(count(&a, "out-of-sync"), 0, "told without the mark in the lease: {:?}", a.calls());

    // The store answers: mark first, then the server is told.
    stall.set_stalled(false);
    assert_eq!(a.wait_call("out-of-sync").await, "out-of-sync 1 b");
    let record = store.get().await.unwrap().unwrap().record;
    assert_eq!(record.out_of_sync, ["b"], "the mark was in the lease when the server was told");
    let link = a.status().primary().unwrap().standbys[0].clone();
    assert!(link.out_of_sync && a.status().degrade_requested().is_empty(), "the server degraded: {link:?}");
    stop.cancel();
    task.await.unwrap();
}
