//! Two supervisors, two fake servers, one in-memory lease: the loop end to end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::lease::LeaseStore;
use crate::lease::static_store::StaticLeaseStore;
use crate::mover::NoAddress;
use crate::status::ServerRole;
use crate::testkit::admin_fake::{FakeServer, TOKEN, primary_status, standby_status};

pub(super) fn cfg(identity: &str) -> DecideConfig {
    let mut c = DecideConfig::new(identity, format!("{identity}:9000"));
    c.lease_duration = Duration::from_millis(1500);
    c.renew_deadline = Duration::from_millis(1000);
    c.retry_period = Duration::from_millis(200);
    c.demote_timeout = Duration::from_millis(300);
    c.stable_for = Duration::from_millis(100);
    c.min_failover_interval = Duration::ZERO;
    c.peer_fresh = Duration::from_millis(800);
    c.validate().unwrap();
    c
}

pub(super) fn supervisor(
    identity: &str,
    own: &FakeServer,
    peer: (&str, &FakeServer),
    store: Arc<dyn LeaseStore>,
) -> Supervisor {
    let c = cfg(identity);
    let client = |f: &FakeServer| ServerAdmin::new(f.admin_url.clone(), Some(TOKEN.into()), Duration::from_secs(1));
    Supervisor {
        elector: LeaseElector::new(store, identity, c.lease_duration),
        cfg: c,
        tick: Duration::from_millis(50),
        server: client(own),
        zeo_addr: own.zeo_addr.clone(),
        storage: "1".into(),
        probe_timeout: Duration::from_millis(200),
        peers: vec![Peer {
            identity: peer.0.into(),
            replication_addr: format!("{}:9000", peer.0),
            admin: client(peer.1),
        }],
        mover: Box::new(NoAddress),
        process: None,
        killer: None,
        metrics: Arc::new(Metrics::new()),
    }
}

pub(super) async fn wait_role(fake: &FakeServer, role: ServerRole, epoch: u64) {
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let st = fake.status();
            if st.role == role && st.epoch == epoch {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "never reached {role:?} at epoch {epoch}: {:?}", fake.status());
}

#[tokio::test]
async fn bootstrap_failover_on_a_hung_primary_then_rejoin() {
    let a = FakeServer::start(primary_status(0)).await;
    let b = FakeServer::start(standby_status(1, "a:9000", true, false)).await;
    let store: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::in_memory());
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    for sup in [supervisor("a", &a, ("b", &b), store.clone()), supervisor("b", &b, ("a", &a), store.clone())] {
        let (tx, rx) = mpsc::channel(1);
        senders.push(tx);
        tasks.push(tokio::spawn(sup.run(rx, CancellationToken::new(), stop.clone())));
    }
    // Bootstrap: a's serving primary takes the lease and is promoted to epoch 1; b waits.
    assert_eq!(a.wait_call("promote").await, "promote 1 false");
    wait_role(&a, ServerRole::Primary, 1).await;
    assert!(b.calls().iter().all(|c| !c.starts_with("promote")), "b must not race a serving primary: {:?}", b.calls());

    // a's server hangs (accepts, never answers): a demotes it and releases; b takes over at 2.
    a.set_stalled(true);
    assert_eq!(a.wait_call("demote").await, "demote");
    assert_eq!(b.wait_call("promote").await, "promote 2 false");
    wait_role(&b, ServerRole::Primary, 2).await;
    // The old primary comes back and rejoins the new one as a standby.
    a.set_stalled(false);
    assert_eq!(a.wait_call("rejoin").await, "rejoin b:9000");
    wait_role(&a, ServerRole::Standby, 1).await;

    // Planned switchover back to a through the admin command channel.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut st = a.status();
    st.epoch = 2;
    a.set_status(st);
    senders[1].send((Command::Switchover { to: None }, tx)).await.unwrap();
    let decision = rx.await.unwrap();
    assert!(decision.starts_with("switchover_demoting"), "{decision}");
    assert_eq!(a.wait_call("promote 3").await, "promote 3 false");
    wait_role(&a, ServerRole::Primary, 3).await;
    assert_eq!(b.wait_call("rejoin").await, "rejoin a:9000");

    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_of_the_primary_hands_the_lease_to_its_in_sync_standby() {
    let a = FakeServer::start(primary_status(0)).await;
    let b = FakeServer::start(standby_status(1, "a:9000", true, false)).await;
    let store: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::in_memory());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let mut sup_b = supervisor("b", &b, ("a", &a), store.clone());
    // A failover just happened as far as b knows: only a handoff may skip the interval.
    sup_b.cfg.min_failover_interval = Duration::from_secs(600);
    let task_a = tokio::spawn(supervisor("a", &a, ("b", &b), store.clone()).run(
        mpsc::channel(1).1,
        CancellationToken::new(),
        stop_a.clone(),
    ));
    let task_b = tokio::spawn(sup_b.run(mpsc::channel(1).1, CancellationToken::new(), stop_b.clone()));
    wait_role(&a, ServerRole::Primary, 1).await;

    stop_a.cancel();
    task_a.await.unwrap();
    assert!(a.calls().iter().any(|c| c == "demote"), "{:?}", a.calls());
    let record = store.get().await.unwrap().unwrap().record;
    assert!(record.holder.is_none() || record.holder.as_deref() == Some("b"), "{record:?}");
    assert_eq!(b.wait_call("promote").await, "promote 2 false");
    wait_role(&b, ServerRole::Primary, 2).await;
    stop_b.cancel();
    task_b.await.unwrap();
}

/// A service address that cannot be moved (the API refuses).
struct RefusingMover;

#[async_trait::async_trait]
impl AddressMover for RefusingMover {
    async fn claim(&self) -> Result<(), crate::mover::MoveError> {
        Err(crate::mover::MoveError::Command { command: "claim".into(), stderr: "refused".into() })
    }

    async fn release(&self) -> Result<(), crate::mover::MoveError> {
        Ok(())
    }
}

#[tokio::test]
async fn the_loop_reports_how_each_action_went() {
    let a = FakeServer::start(primary_status(1)).await;
    let b = FakeServer::start(standby_status(1, "a:9000", true, false)).await;
    let mut sup = supervisor("a", &a, ("b", &b), Arc::new(StaticLeaseStore::in_memory()));
    sup.mover = Box::new(RefusingMover);
    let mut mem = Memory::default();
    let claim_then_demote = Decision {
        actions: vec![Action::MoveAddress { to: "a".into() }, Action::Demote],
        reason: crate::decide::Reason::Serving { epoch: 1 },
    };
    assert!(!sup.act(&claim_then_demote, &mut mem).await, "a failed action is not looked at again at once");
    let outcomes: Vec<Outcome> = mem.outcomes.iter().map(|o| o.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::NotRun]);
    assert!(a.calls().is_empty(), "nothing after the failed action was sent: {:?}", a.calls());
    sup.mover = Box::new(NoAddress);
    assert!(sup.act(&claim_then_demote, &mut mem).await, "a demotion is looked at again at once");
    let outcomes: Vec<Outcome> = mem.outcomes.iter().map(|o| o.outcome).collect();
    assert_eq!(outcomes, [Outcome::Succeeded, Outcome::Succeeded]);
    let obs = sup.observe(&mut mem, None).await;
    assert_eq!(obs.last_outcomes.len(), 2, "the next observation carries them");
    assert!(mem.outcomes.is_empty(), "and only that one");
}
