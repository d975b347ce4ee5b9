//! One table row per situation of the HA test plan (ha-anchors.md 9.2), seen by supervisor `a`
//! (replication listener `a:9000`) whose peer is `b` (`b:9000`), plus `c` where a third server
//! matters. Rows name the scenario number they belong to.

use std::time::Duration;

use tokio::time::Instant;
use zeo_proto::Tid;

use super::types::LagBound;
use super::*;
use crate::status::{
    PrimaryReplication, Replication, ServerRole, ServerStatus, StandbyLink, StandbyReplication, SyncState,
};
use crate::testkit::admin_fake::no_extras;

mod fencing_rows;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn tid(n: u64) -> Tid {
    zeo_proto::p64(n)
}

fn primary(epoch: u64, sync_state: SyncState, standbys: Vec<StandbyLink>) -> ServerStatus {
    ServerStatus {
        role: ServerRole::Primary,
        epoch,
        writable: true,
        last_tid: tid(100),
        replication: Replication::Primary(PrimaryReplication {
            sync_standbys: u64::from(sync_state != SyncState::Async),
            sync_timeout_ms: None,
            sync_state,
            standbys,
            degrade_requested: Vec::new(),
        }),
        ..no_extras()
    }
}

fn link(name: &str, in_sync: bool, out_of_sync: bool) -> StandbyLink {
    StandbyLink {
        name: name.into(),
        connected: true,
        acked_tid: tid(100),
        lag_transactions: 0,
        lag_bytes: Some(0),
        lag_seconds: 0.0,
        in_sync,
        out_of_sync,
    }
}

/// A standby of `following` at `epoch`, `lag` transactions behind tid 100.
fn standby(epoch: u64, following: &str, connected: bool, in_sync: bool, out_of_sync: bool, lag: u64) -> ServerStatus {
    ServerStatus {
        role: ServerRole::Standby,
        epoch,
        writable: false,
        last_tid: tid(100 - lag),
        replication: Replication::Standby(StandbyReplication {
            primary: following.into(),
            connected,
            applied_tid: tid(100 - lag),
            lag_transactions: lag,
            lag_seconds: lag as f64 * 0.1,
            in_sync,
            out_of_sync,
            storage_error: None,
        }),
        ..no_extras()
    }
}

fn demoted(epoch: u64) -> ServerStatus {
    ServerStatus {
        role: ServerRole::Demoted,
        epoch,
        writable: false,
        last_tid: tid(100),
        replication: Replication::default(),
        ..no_extras()
    }
}

fn peer(id: &str, status: Option<ServerStatus>, seen_at: Option<Instant>) -> PeerView {
    PeerView { identity: id.into(), replication_addr: format!("{id}:9000"), status, seen_at }
}

fn lease(holder: Option<&str>, transitions: u64, expired: bool, renewed_at: Option<Instant>) -> LeaseView {
    LeaseView {
        reachable: true,
        holder: holder.map(String::from),
        preferred_holder: None,
        transitions,
        out_of_sync: Vec::new(),
        promotion_failed: Vec::new(),
        expired,
        renewed_at,
        changed_at: None,
    }
}

fn obs(status: Option<ServerStatus>, peers: Vec<PeerView>, lease: LeaseView) -> Observation {
    Observation { server: ServerHealth::default(), status, peers, lease, command: None, last_outcomes: Vec::new() }
}

/// The loop's report of an action that failed.
fn failed(action: Action) -> ActionOutcome {
    ActionOutcome { action, outcome: Outcome::Failed }
}

/// Healthy for a minute, no recent transitions, address already pointed for `epoch`/`holder`.
fn settled(now: Instant, epoch: u64, holder: &str) -> State {
    State {
        healthy_since: Some(now - secs(60.0)),
        address: Some((epoch, holder.into())),
        last_transitions: Some(epoch),
        ..State::default()
    }
}

fn cfg() -> DecideConfig {
    DecideConfig::new("a", "a:9000")
}

struct Row {
    scenario: u8,
    name: &'static str,
    obs: Observation,
    state: State,
    cfg: DecideConfig,
    expect: Vec<Action>,
    reason: &'static str,
}

fn row(
    scenario: u8,
    name: &'static str,
    obs: Observation,
    state: State,
    expect: Vec<Action>,
    reason: &'static str,
) -> Row {
    Row { scenario, name, obs, state, cfg: cfg(), expect, reason }
}

fn rows(now: Instant) -> Vec<Row> {
    let fresh = Some(now - secs(0.5));
    let stale = Some(now - secs(30.0));
    let just_renewed = Some(now - secs(0.2));
    let b_primary = |epoch| peer("b", Some(primary(epoch, SyncState::Sync, vec![link("a", true, false)])), fresh);
    let b_dead_primary = |epoch| peer("b", Some(primary(epoch, SyncState::Sync, vec![link("a", true, false)])), stale);
    let a_primary = |epoch| primary(epoch, SyncState::Sync, vec![link("b", true, false)]);
    let b_standby_of_a = |epoch, in_sync| peer("b", Some(standby(epoch, "a:9000", true, in_sync, false, 0)), fresh);
    let mut out = Vec::new();

    // 1. kill -9 of the primary server process, and of a supervisor.
    let mut o = obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    o.server.exited = true;
    out.push(row(
        1,
        "own primary exits: release the lease at once",
        o,
        settled(now, 3, "a"),
        vec![Action::ReleaseLease { to: None }],
        "server_exited",
    ));
    out.push(row(
        1,
        "standby takes a released lease without waiting out the TTL",
        obs(Some(standby(3, "b:9000", false, true, false, 0)), vec![b_dead_primary(3)], lease(None, 3, true, None)),
        settled(now, 3, "b"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    out.push(row(
        1,
        "new holder promotes at epoch = transitions",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("a"), 4, false, just_renewed),
        ),
        settled(now, 3, "b"),
        vec![Action::Promote { epoch: 4, force: false }],
        "promoting",
    ));
    out.push(row(
        1,
        "promoted: move the service address here",
        obs(Some(a_primary(4)), vec![b_dead_primary(3)], lease(Some("a"), 4, false, just_renewed)),
        settled(now, 3, "b"),
        vec![Action::MoveAddress { to: "a".into() }],
        "serving",
    ));
    out.push(row(
        1,
        "peer supervisor killed, its server still streams to us: no takeover",
        obs(Some(standby(3, "b:9000", true, true, false, 0)), vec![b_primary(3)], lease(Some("b"), 3, true, None)),
        settled(now, 3, "b"),
        vec![],
        "primary_still_visible",
    ));
    let mut o = obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    o.server.misses = 3;
    out.push(row(
        1,
        "own primary hung (probes fail, process alive): demote first",
        o.clone(),
        settled(now, 3, "a"),
        vec![Action::Demote],
        "server_unresponsive",
    ));
    let mut st = settled(now, 3, "a");
    st.fencing = Some(Fencing { since: now - secs(1.5), killed: false });
    out.push(row(
        1,
        "hung primary not demoted within demote_timeout: kill it",
        o.clone(),
        st,
        vec![Action::KillServer],
        "server_unresponsive",
    ));
    o.status = Some(demoted(3));
    out.push(row(
        1,
        "hung primary confirmed demoted: release for the standby",
        o,
        settled(now, 3, "a"),
        vec![Action::ReleaseLease { to: None }],
        "holder_server_demoted",
    ));

    // 2. Graceful pod deletion / drain: planned switchover.
    let mut o = obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    o.command = Some(Command::Switchover { to: None });
    out.push(row(
        2,
        "switchover to an in-sync standby: demote (stop commits) and leave the address first",
        o.clone(),
        settled(now, 3, "a"),
        vec![Action::Demote, Action::MoveAddress { to: "b".into() }],
        "switchover_demoting",
    ));
    o.peers = vec![b_standby_of_a(3, false)];
    out.push(row(
        2,
        "switchover refused when the standby is not in sync",
        o,
        settled(now, 3, "a"),
        vec![],
        "switchover_refused",
    ));
    let mut st = settled(now, 3, "a");
    st.switchover = Some(Switchover { to: "b".into(), since: now - secs(0.3) });
    let o = obs(Some(demoted(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    out.push(row(
        2,
        "demoted and the target caught up: hand the lease to it",
        o,
        st.clone(),
        vec![Action::ReleaseLease { to: Some("b".into()) }],
        "switchover_handoff",
    ));
    let behind = peer("b", Some(standby(3, "a:9000", true, true, false, 2)), fresh);
    let o = obs(Some(demoted(3)), vec![behind], lease(Some("a"), 3, false, just_renewed));
    out.push(row(
        2,
        "demoted, in-sync target lacks only unacknowledged commits: hand over at once, no wait",
        o,
        st.clone(),
        vec![Action::ReleaseLease { to: Some("b".into()) }],
        "switchover_handoff",
    ));
    let behind_async = peer("b", Some(standby(3, "a:9000", true, false, false, 2)), fresh);
    let o = obs(Some(demoted(3)), vec![behind_async], lease(Some("a"), 3, false, just_renewed));
    out.push(row(
        2,
        "demoted, async target still applying the last commits: wait",
        o,
        st,
        vec![],
        "switchover_catching_up",
    ));
    let mut l = lease(None, 3, true, None);
    l.preferred_holder = Some("a".into());
    l.changed_at = Some(now - secs(0.1));
    let mut st = settled(now, 3, "b");
    st.transitions_seen.push_back(now - secs(1.0));
    out.push(row(
        2,
        "handed a released lease: take it at once, rate limits do not apply",
        obs(Some(standby(3, "b:9000", true, true, false, 0)), vec![peer("b", Some(demoted(3)), fresh)], l.clone()),
        st,
        vec![Action::AcquireLease],
        "candidate",
    ));
    let mut st = settled(now, 3, "b");
    st.yield_until = Some(now + secs(5.0));
    out.push(row(
        2,
        "handed a lease back soon after handing it over: the own yield window does not apply",
        obs(Some(standby(3, "b:9000", true, true, false, 0)), vec![peer("b", Some(demoted(3)), fresh)], l.clone()),
        st,
        vec![Action::AcquireLease],
        "candidate",
    ));
    let mut l_other = l.clone();
    l_other.preferred_holder = Some("b".into());
    out.push(row(
        2,
        "lease handed to another: stand aside",
        obs(Some(standby(3, "c:9000", true, true, false, 0)), vec![peer("c", Some(demoted(3)), fresh)], l_other),
        settled(now, 3, "c"),
        vec![],
        "handoff_to_other",
    ));
    let mut st = settled(now, 3, "a");
    st.yield_until = Some(now + secs(5.0));
    out.push(row(
        2,
        "old primary after the handoff does not grab the lease back",
        obs(Some(demoted(3)), vec![b_standby_of_a(3, true)], lease(None, 3, true, None)),
        st,
        vec![],
        "yielding",
    ));
    out.push(row(
        2,
        "old primary rejoins the new one as a standby",
        obs(Some(demoted(3)), vec![b_primary(4)], lease(Some("b"), 4, false, None)),
        settled(now, 3, "a"),
        vec![Action::Rejoin { primary: "b:9000".into() }, Action::MoveAddress { to: "b".into() }],
        "rejoining",
    ));
    let mut o = obs(Some(demoted(3)), vec![b_primary(4)], lease(Some("b"), 4, false, None));
    let mut st = settled(now, 4, "b");
    st.rejoin = Some((4, "b:9000".into(), now - secs(0.2)));
    out.push(row(
        2,
        "rejoin asked for a moment ago: not repeated while it takes effect",
        o.clone(),
        st.clone(),
        vec![],
        "rejoining",
    ));
    o.last_outcomes = vec![failed(Action::Rejoin { primary: "b:9000".into() })];
    out.push(row(
        2,
        "the rejoin failed: sent again at once",
        o,
        st,
        vec![Action::Rejoin { primary: "b:9000".into() }],
        "rejoining",
    ));

    // 3. Sudden loss of the primary's node; the zombie returns.
    out.push(row(
        3,
        "lease unchanged for a full duration, primary gone: take over",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        settled(now, 3, "b"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    out.push(row(
        3,
        "lease still valid: keep following",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, false, None),
        ),
        settled(now, 3, "b"),
        vec![],
        "following",
    ));
    let zombie = obs(Some(a_primary(3)), vec![b_primary(4)], lease(Some("b"), 4, false, None));
    out.push(row(
        3,
        "zombie primary returns after a takeover: demote it",
        zombie.clone(),
        settled(now, 3, "a"),
        vec![Action::Demote],
        "writable_without_lease",
    ));
    let mut st = settled(now, 3, "a");
    st.fencing = Some(Fencing { since: now - secs(1.0), killed: false });
    out.push(row(
        3,
        "zombie refuses to demote: kill it",
        zombie,
        st,
        vec![Action::KillServer],
        "writable_without_lease",
    ));

    // 4. Primary cut off from the API server and the standby.
    let mut l = lease(Some("a"), 3, false, Some(now - secs(4.2)));
    l.reachable = false;
    let cut = obs(Some(a_primary(3)), vec![peer("b", Some(standby(3, "a:9000", true, true, false, 0)), stale)], l);
    out.push(row(
        4,
        "renew deadline passed, no witness: demote before the lease can expire",
        cut.clone(),
        settled(now, 3, "a"),
        vec![Action::Demote, Action::RenewLease],
        "renew_overdue",
    ));
    let mut st = settled(now, 3, "a");
    st.fencing = Some(Fencing { since: now - secs(1.0), killed: false });
    out.push(row(
        4,
        "demotion unconfirmed: kill (still inside the lease duration)",
        cut,
        st,
        vec![Action::KillServer, Action::RenewLease],
        "renew_overdue",
    ));
    out.push(row(
        4,
        "standby no longer streams from the still-visible old primary: take over",
        obs(Some(standby(3, "b:9000", false, true, false, 0)), vec![b_primary(3)], lease(Some("b"), 3, true, None)),
        settled(now, 3, "b"),
        vec![Action::AcquireLease],
        "candidate",
    ));

    // 5. Replication link cut; the standby was degraded past.
    out.push(row(
        5,
        "out-of-sync standby is never promoted automatically",
        obs(
            Some(standby(3, "b:9000", false, false, true, 4)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));
    let mut o = obs(
        Some(standby(3, "b:9000", false, false, true, 4)),
        vec![b_dead_primary(3)],
        lease(Some("b"), 3, true, None),
    );
    o.command = Some(Command::ForcePromote);
    out.push(row(
        5,
        "operator forces it: take the lease",
        o,
        settled(now, 3, "b"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    let mut st = settled(now, 3, "b");
    st.force = true;
    out.push(row(
        5,
        "forced holder promotes with force",
        obs(
            Some(standby(3, "b:9000", false, false, true, 4)),
            vec![b_dead_primary(3)],
            lease(Some("a"), 4, false, just_renewed),
        ),
        st,
        vec![Action::Promote { epoch: 4, force: true }],
        "promoting",
    ));
    let degraded = primary(3, SyncState::Degraded, vec![link("b", false, true)]);
    out.push(row(
        5,
        "degraded primary keeps serving and renewing",
        obs(
            Some(degraded),
            vec![peer("b", Some(standby(3, "a:9000", false, false, true, 9)), fresh)],
            lease(Some("a"), 3, false, Some(now - secs(1.1))),
        ),
        settled(now, 3, "a"),
        vec![Action::RenewLease],
        "serving",
    ));
    let degraded = primary(3, SyncState::Degraded, vec![link("b", false, true)]);
    out.push(row(
        5,
        "primary degraded past a standby: the mark goes into the lease at once, not at the next renewal",
        obs(Some(degraded.clone()), vec![], lease(Some("a"), 3, false, Some(now - secs(0.1)))),
        settled(now, 3, "a"),
        vec![Action::RenewLease],
        "serving",
    ));
    let mut recorded = lease(Some("a"), 3, false, Some(now - secs(0.1)));
    recorded.out_of_sync = vec!["b".into()];
    out.push(row(
        5,
        "mark already in the lease: renew only when due",
        obs(Some(degraded), vec![], recorded),
        settled(now, 3, "a"),
        vec![],
        "serving",
    ));

    // 6. Control-plane trouble.
    let mut l = lease(Some("a"), 3, false, Some(now - secs(4.5)));
    l.reachable = false;
    out.push(row(
        6,
        "API down but the standby still follows us: no demotion (failsafe)",
        obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], l),
        settled(now, 3, "a"),
        vec![Action::RenewLease],
        "failsafe_witness",
    ));
    let mut l = lease(Some("a"), 3, false, Some(now - secs(2.0)));
    l.reachable = false;
    out.push(row(
        6,
        "one failed renewal is not a reason to demote",
        obs(Some(a_primary(3)), vec![], l),
        settled(now, 3, "a"),
        vec![Action::RenewLease],
        "serving",
    ));
    let mut l = lease(Some("b"), 3, true, None);
    l.reachable = false;
    out.push(row(
        6,
        "store unreachable: no election",
        obs(Some(standby(3, "b:9000", false, true, false, 0)), vec![b_dead_primary(3)], l),
        settled(now, 3, "b"),
        vec![],
        "store_unreachable",
    ));
    out.push(row(
        6,
        "a CAS conflict left another holder: follow it",
        obs(
            Some(standby(4, "c:9000", true, true, false, 0)),
            vec![peer("c", Some(primary(4, SyncState::Sync, vec![])), fresh)],
            lease(Some("c"), 4, false, None),
        ),
        settled(now, 4, "c"),
        vec![],
        "following",
    ));
    let mut o = obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    o.last_outcomes = vec![failed(Action::MoveAddress { to: "a".into() })];
    out.push(row(
        6,
        "moving the service address failed (API refused): moved again next tick",
        o,
        settled(now, 3, "a"),
        vec![Action::MoveAddress { to: "a".into() }],
        "serving",
    ));

    // 7. Standby lag.
    out.push(row(
        7,
        "lagging standby of a sync primary is not promoted",
        obs(
            Some(standby(3, "b:9000", false, false, false, 3)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));
    let async_b = peer("b", Some(primary(3, SyncState::Async, vec![link("a", false, false)])), stale);
    let mut r = row(
        7,
        "async primary: standby within max lag is promoted",
        obs(Some(standby(3, "b:9000", false, false, false, 3)), vec![async_b.clone()], lease(Some("b"), 3, true, None)),
        settled(now, 3, "b"),
        vec![Action::AcquireLease],
        "candidate",
    );
    r.cfg.async_max_lag = Some(LagBound { transactions: 5, seconds: 1.0 });
    out.push(r);
    let mut r = row(
        7,
        "async primary: standby beyond max lag is not promoted",
        obs(Some(standby(3, "b:9000", false, false, false, 30)), vec![async_b], lease(Some("b"), 3, true, None)),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    );
    r.cfg.async_max_lag = Some(LagBound { transactions: 5, seconds: 1.0 });
    out.push(r);
    out.push(row(
        7,
        "several standbys: the most advanced one is promoted, not us",
        obs(
            Some(standby(3, "b:9000", false, true, false, 2)),
            vec![b_dead_primary(3), peer("c", Some(standby(3, "b:9000", false, true, false, 0)), fresh)],
            lease(Some("b"), 3, true, None),
        ),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));
    let mut marked = lease(Some("b"), 3, true, None);
    marked.out_of_sync = vec!["a".into()];
    out.push(row(
        7,
        "recorded out of sync in the lease: not promoted, though a partition kept our server from being told",
        obs(Some(standby(3, "b:9000", false, true, false, 0)), vec![b_dead_primary(3)], marked),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));

    // 8. Double and sequential failures.
    out.push(row(
        8,
        "old primary restarts first after a later promotion: stays demoted",
        obs(Some(demoted(3)), vec![peer("b", None, None)], lease(Some("b"), 4, true, None)),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));
    out.push(row(
        8,
        "old primary restarts writable after a later promotion: fenced",
        obs(Some(a_primary(3)), vec![peer("b", None, None)], lease(Some("b"), 4, true, None)),
        settled(now, 3, "b"),
        vec![Action::Demote],
        "writable_without_lease",
    ));
    out.push(row(
        8,
        "both restarted, we were the last primary: take the lease back",
        obs(
            Some(a_primary(4)),
            vec![peer("b", Some(standby(3, "a:9000", false, false, false, 5)), fresh)],
            lease(None, 4, true, None),
        ),
        settled(now, 4, "a"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    let mut st = settled(now, 3, "b");
    st.promoting = Some((4, now - secs(11.0)));
    out.push(row(
        8,
        "promotion never showed: give the lease up",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("a"), 4, false, just_renewed),
        ),
        st,
        vec![Action::GiveUpPromotion { epoch: 4 }],
        "promote_timed_out",
    ));
    out.push(row(
        8,
        "bootstrap: the primary takes a lease that never existed",
        obs(Some(a_primary(0)), vec![b_standby_of_a(0, true)], lease(None, 0, true, None)),
        settled(now, 0, "a"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    out.push(row(
        8,
        "bootstrap: a streaming standby does not race the primary",
        obs(Some(standby(0, "b:9000", true, true, false, 0)), vec![b_primary(0)], lease(None, 0, true, None)),
        settled(now, 0, "b"),
        vec![],
        "primary_still_visible",
    ));

    // 9. Flapping and pauses.
    let mut o = obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed));
    o.server.misses = 2;
    out.push(row(9, "probe misses below the threshold: nothing happens", o, settled(now, 3, "a"), vec![], "serving"));
    let mut st = settled(now, 3, "b");
    st.healthy_since = Some(now - secs(0.5));
    out.push(row(
        9,
        "own server healthy too briefly: no takeover yet",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        st,
        vec![],
        "not_stable",
    ));
    let mut st = settled(now, 3, "b");
    st.transitions_seen.push_back(now - secs(10.0));
    out.push(row(
        9,
        "a transition 10 s ago: too soon for another automatic takeover",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        st,
        vec![],
        "too_soon",
    ));
    let mut st = settled(now, 3, "b");
    for m in [3000.0, 2500.0, 2000.0, 1500.0, 1000.0, 500.0] {
        st.transitions_seen.push_back(now - secs(m));
    }
    out.push(row(
        9,
        "six transitions this hour: automatic takeovers stop",
        obs(
            Some(standby(3, "b:9000", false, true, false, 0)),
            vec![b_dead_primary(3)],
            lease(Some("b"), 3, true, None),
        ),
        st,
        vec![],
        "rate_limited",
    ));
    out.push(row(
        9,
        "supervisor resumes after SIGSTOP longer than the lease: fence before anything else",
        obs(Some(a_primary(3)), vec![b_primary(4)], lease(Some("a"), 3, false, Some(now - secs(20.0)))),
        settled(now, 3, "a"),
        vec![Action::Demote, Action::RenewLease],
        "renew_overdue",
    ));

    // 10. Storage faults: a primary whose disk is full still answers probes; no failover storm.
    out.push(row(
        10,
        "disk full on the primary: probes answer, keep serving",
        obs(Some(a_primary(3)), vec![b_standby_of_a(3, true)], lease(Some("a"), 3, false, just_renewed)),
        settled(now, 3, "a"),
        vec![],
        "serving",
    ));
    out.extend(fencing_rows::rows(now));
    out
}

#[test]
fn scenario_table() {
    let now = Instant::now() + secs(7200.0);
    let mut failures = Vec::new();
    let rows = rows(now);
    for r in &rows {
        r.cfg.validate().unwrap();
        let (d, _) = decide(&r.obs, &r.state, &r.cfg, now);
        if d.actions != r.expect || d.reason.code() != r.reason {
            failures.push(format!(
                "scenario {} '{}': got {:?} ({}), want {:?} ({})",
                r.scenario, r.name, d.actions, d.reason, r.expect, r.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    for s in 1..=12 {
        assert!(rows.iter().any(|r| r.scenario == s), "no row for scenario {s}");
    }
}

/// Whole failover, both supervisors driven tick by tick against one shared lease model.
#[test]
fn kill_then_takeover_then_rejoin_sequence() {
    let now = Instant::now() + secs(7200.0);
    let cfg_b = DecideConfig::new("b", "b:9000");
    let peer_a = |st: Option<ServerStatus>, seen| PeerView {
        identity: "a".into(),
        replication_addr: "a:9000".into(),
        status: st,
        seen_at: seen,
    };
    // b's view: a held epoch 3 and released it after its server exited.
    let st = State { healthy_since: Some(now - secs(60.0)), last_transitions: Some(3), ..State::default() };
    let o =
        obs(Some(standby(3, "a:9000", false, true, false, 0)), vec![peer_a(None, None)], lease(None, 3, true, None));
    let (d, st) = decide(&o, &st, &cfg_b, now);
    assert_eq!(d.actions, vec![Action::AcquireLease]);
    let o = obs(o.status.clone(), o.peers.clone(), lease(Some("b"), 4, false, Some(now)));
    let (d, st) = decide(&o, &st, &cfg_b, now + secs(0.1));
    assert_eq!(d.actions, vec![Action::Promote { epoch: 4, force: false }]);
    let o = obs(Some(primary(4, SyncState::Sync, vec![])), o.peers.clone(), lease(Some("b"), 4, false, Some(now)));
    let (d, st) = decide(&o, &st, &cfg_b, now + secs(0.2));
    assert_eq!(d.actions, vec![Action::MoveAddress { to: "b".into() }]);
    assert_eq!(st.transitions_seen.len(), 1, "the takeover counts against the flapping budget");
    let (d, _) = decide(&o, &st, &cfg_b, now + secs(1.3));
    assert_eq!(d.actions, vec![Action::RenewLease]);
    // a's server restarted as the old primary: fenced, then rejoins b.
    let cfg_a = cfg();
    let o = obs(
        Some(primary(3, SyncState::Sync, vec![])),
        vec![peer("b", Some(primary(4, SyncState::Sync, vec![])), Some(now))],
        lease(Some("b"), 4, false, None),
    );
    let (d, sa) = decide(&o, &State::default(), &cfg_a, now);
    assert_eq!(d.actions, vec![Action::Demote]);
    let o = obs(Some(demoted(3)), o.peers.clone(), o.lease.clone());
    let (d, sa) = decide(&o, &sa, &cfg_a, now + secs(0.1));
    assert_eq!(d.actions, vec![Action::Rejoin { primary: "b:9000".into() }, Action::MoveAddress { to: "b".into() }]);
    assert!(sa.fencing.is_none());
    let o = obs(Some(standby(4, "b:9000", true, true, false, 0)), o.peers.clone(), o.lease.clone());
    let (d, _) = decide(&o, &sa, &cfg_a, now + secs(0.2));
    assert_eq!((d.actions, d.reason.code()), (vec![], "following"));
}

#[test]
fn config_rules() {
    let mut c = cfg();
    assert!(c.validate().is_ok());
    c.demote_timeout = secs(2.0);
    let err = c.validate().unwrap_err();
    assert!(matches!(err, DecideConfigError::FenceOutlastsLease { .. }) && err.to_string().contains("lease_duration"));
    let mut c = cfg();
    c.retry_period = secs(3.5);
    let err = c.validate().unwrap_err();
    assert!(
        matches!(err, DecideConfigError::RenewDeadlineWithinRetry { .. }) && err.to_string().contains("retry_period")
    ); // The write lease granted to the server ends at the renew deadline: before any expiry.
    let mut c = cfg();
    c.renew_deadline = c.lease_duration;
    let err = c.validate().unwrap_err();
    assert!(matches!(err, DecideConfigError::RenewDeadlinePastLease { .. }), "{err}");
}
