//! Table rows for issue 12's rules: 11, degrade only with the mark in the lease; 12, a failed
//! promotion gives the lease back to whoever has the data, and storage errors are not promotable.

use super::*;

fn degrading(epoch: u64, links: Vec<StandbyLink>, requested: &[&str]) -> ServerStatus {
    let mut st = primary(epoch, SyncState::Sync, links);
    if let Replication::Primary(p) = &mut st.replication {
        p.degrade_requested = requested.iter().map(|n| n.to_string()).collect();
    }
    st
}

fn with_marks(mut l: LeaseView, marks: &[&str]) -> LeaseView {
    l.out_of_sync = marks.iter().map(|n| n.to_string()).collect();
    l
}

fn with_failed(mut l: LeaseView, failed: &[&str]) -> LeaseView {
    l.promotion_failed = failed.iter().map(|n| n.to_string()).collect();
    l
}

fn storage_error(mut st: ServerStatus) -> ServerStatus {
    if let Replication::Standby(r) = &mut st.replication {
        r.storage_error = Some("No space left on device".into());
    }
    st
}

fn disconnected_link(name: &str) -> StandbyLink {
    StandbyLink { connected: false, ..link(name, false, false) }
}

pub(super) fn rows(now: Instant) -> Vec<Row> {
    let fresh = Some(now - secs(0.5));
    let stale = Some(now - secs(30.0));
    let just_renewed = Some(now - secs(0.2));
    let held = |marks: &[&str]| with_marks(lease(Some("a"), 3, false, just_renewed), marks);
    let mut out = Vec::new();
    let b_standby_of_a = || peer("b", Some(standby(3, "a:9000", false, true, false, 0)), fresh);

    // 11. Degrade only with the mark in the lease.
    out.push(row(
        11,
        "primary asks to degrade past b: write the mark, then tell the server",
        obs(Some(degrading(3, vec![disconnected_link("b")], &["b"])), vec![b_standby_of_a()], held(&[])),
        settled(now, 3, "a"),
        vec![Action::RenewLease, Action::ConfirmOutOfSync { epoch: 3, standbys: vec!["b".into()] }],
        "degrading",
    ));
    out.push(row(
        11,
        "the mark is already in the lease: confirm without another write",
        obs(Some(degrading(3, vec![disconnected_link("b")], &["b"])), vec![b_standby_of_a()], held(&["b"])),
        settled(now, 3, "a"),
        vec![Action::ConfirmOutOfSync { epoch: 3, standbys: vec!["b".into()] }],
        "degrading",
    ));
    out.push(row(
        11,
        "a degraded standby keeps its mark while out of sync",
        obs(Some(primary(3, SyncState::Degraded, vec![link("b", false, true)])), vec![b_standby_of_a()], held(&["b"])),
        settled(now, 3, "a"),
        vec![],
        "serving",
    ));
    out.push(row(
        11,
        "a standby back in sync: its mark is cleared",
        obs(Some(primary(3, SyncState::Sync, vec![link("b", true, false)])), vec![b_standby_of_a()], held(&["b"])),
        settled(now, 3, "a"),
        vec![Action::RenewLease],
        "serving",
    ));
    out.push(row(
        11,
        "a standby the primary no longer lists keeps its mark",
        obs(Some(primary(3, SyncState::Degraded, vec![])), vec![], held(&["b"])),
        settled(now, 3, "a"),
        vec![],
        "serving",
    ));
    out.push(row(
        11,
        "connected but not caught up is not back in sync: the mark stays",
        obs(Some(primary(3, SyncState::Degraded, vec![link("b", false, false)])), vec![b_standby_of_a()], held(&["b"])),
        settled(now, 3, "a"),
        vec![],
        "serving",
    ));
    out.push(row(
        11,
        "a primary behind the lease's epoch confirms nothing: it is promoted first",
        obs(
            Some(degrading(3, vec![disconnected_link("b")], &["b"])),
            vec![b_standby_of_a()],
            with_marks(lease(Some("a"), 4, false, just_renewed), &[]),
        ),
        settled(now, 3, "a"),
        vec![Action::Promote { epoch: 4, force: false }],
        "promoting",
    ));

    // 12. A failed promotion gives the lease back.
    let in_sync_standby = || standby(3, "b:9000", false, true, false, 0);
    let promoting =
        |failures| State { promoting: Some((4, now - secs(1.0))), promote_failures: failures, ..settled(now, 3, "b") };
    let mut o = obs(Some(in_sync_standby()), vec![], lease(Some("a"), 4, false, just_renewed));
    o.last_outcomes = vec![failed(Action::Promote { epoch: 4, force: false })];
    out.push(row(
        12,
        "second refusal: try again",
        o.clone(),
        promoting(1),
        vec![Action::Promote { epoch: 4, force: false }],
        "promoting",
    ));
    out.push(row(
        12,
        "third refusal: give the lease back",
        o,
        promoting(2),
        vec![Action::GiveUpPromotion { epoch: 4 }],
        "promote_failed",
    ));
    let backing_off = State { promotion_backoff_until: Some(now + secs(30.0)), ..settled(now, 4, "a") };
    out.push(row(
        12,
        "backing off after a failed promotion: not a candidate",
        obs(Some(in_sync_standby()), vec![], with_failed(lease(None, 4, true, None), &["a"])),
        backing_off,
        vec![],
        "ineligible",
    ));
    // a was the primary at 3; b took epoch 4 and failed. a's server is demoted, with every commit.
    let recent_transition = State { transitions_seen: [now - secs(1.0)].into(), ..settled(now, 4, "b") };
    let b_failed = || peer("b", Some(storage_error(standby(3, "a:9000", false, false, false, 0))), fresh);
    out.push(row(
        12,
        "the demoted old primary takes the lease back at once after a failed promotion",
        obs(Some(demoted(3)), vec![b_failed()], with_failed(lease(None, 4, true, None), &["b"])),
        recent_transition.clone(),
        vec![Action::AcquireLease],
        "candidate",
    ));
    out.push(row(
        12,
        "no failed promotion on record: a stale demoted server stays out",
        obs(Some(demoted(3)), vec![b_failed()], lease(None, 4, true, None)),
        recent_transition.clone(),
        vec![],
        "ineligible",
    ));
    out.push(row(
        12,
        "a peer at a later epoch: it was promoted after us, stay out",
        obs(
            Some(demoted(3)),
            vec![peer("b", Some(demoted(4)), fresh)],
            with_failed(lease(None, 4, true, None), &["b"]),
        ),
        recent_transition.clone(),
        vec![],
        "ineligible",
    ));
    out.push(row(
        12,
        "a peer not seen lately: nothing proves nobody was promoted, stay out",
        obs(
            Some(demoted(3)),
            vec![peer("b", Some(demoted(3)), stale)],
            with_failed(lease(None, 4, true, None), &["b"]),
        ),
        recent_transition,
        vec![],
        "ineligible",
    ));
    out.push(row(
        12,
        "holding the lease, promoted at the next epoch after the failed one",
        obs(Some(demoted(3)), vec![b_failed()], with_failed(lease(Some("a"), 5, false, just_renewed), &["b"])),
        settled(now, 4, "b"),
        vec![Action::Promote { epoch: 5, force: false }],
        "promoting",
    ));
    out.push(row(
        12,
        "a standby with a storage error is not a candidate, in sync or not",
        obs(Some(storage_error(in_sync_standby())), vec![], lease(None, 3, true, None)),
        settled(now, 3, "b"),
        vec![],
        "ineligible",
    ));
    out.push(row(
        12,
        "a holder whose standby reports a storage error gives the lease back unpromoted",
        obs(Some(storage_error(in_sync_standby())), vec![], lease(Some("a"), 4, false, just_renewed)),
        settled(now, 3, "b"),
        vec![Action::ReleaseLease { to: None }],
        "ineligible",
    ));
    let b_ahead = peer("b", Some(standby(3, "c:9000", false, true, false, 0)), fresh);
    let a_behind = standby(3, "c:9000", false, true, false, 1);
    out.push(row(
        12,
        "a peer further ahead is passed over once its promotion failed",
        obs(Some(a_behind.clone()), vec![b_ahead.clone()], with_failed(lease(None, 4, true, None), &["b"])),
        settled(now, 4, "c"),
        vec![Action::AcquireLease],
        "candidate",
    ));
    out.push(row(
        12,
        "without that record the peer further ahead goes first",
        obs(Some(a_behind), vec![b_ahead], lease(None, 4, true, None)),
        settled(now, 4, "c"),
        vec![],
        "ineligible",
    ));
    out
}
