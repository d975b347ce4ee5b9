//! The rules behind [`decide`]; the module doc of `decide` lists them in order.

use tokio::time::Instant;

use super::types::{
    Action, Command, DecideConfig, Decision, Fencing, Ineligible, Observation, Outcome, PeerView, Reason, State,
    Switchover,
};
use crate::status::{ServerRole, ServerStatus, SyncState};

/// Decides this tick's actions. Pure: the same inputs give the same outputs.
pub fn decide(obs: &Observation, state: &State, cfg: &DecideConfig, now: Instant) -> (Decision, State) {
    let mut s = state.clone();
    learn(obs, &mut s);
    track(obs, &mut s, cfg, now);
    if obs.command == Some(Command::ForcePromote) {
        s.force = true;
    }
    let decision = if obs.lease.holder.as_deref() == Some(cfg.identity.as_str()) {
        as_holder(obs, &mut s, cfg, now)
    } else {
        s.promoting = None;
        s.promote_failures = 0;
        s.switchover = None;
        as_follower(obs, &mut s, cfg, now)
    };
    (decision, s)
}

/// Forgets what the previous decision's actions did not bring about, so the rules ask again: an
/// address move or a rejoin that failed. Releasing the lease gave the address up too (the loop
/// does both, whatever the store answered).
fn learn(obs: &Observation, s: &mut State) {
    for done in &obs.last_outcomes {
        match (&done.action, done.outcome) {
            (Action::ReleaseLease { .. }, Outcome::Succeeded | Outcome::Failed) => s.address = None,
            (Action::MoveAddress { .. }, Outcome::Failed) => s.address = None,
            (Action::Rejoin { .. }, Outcome::Failed) => s.rejoin = None,
            // A refusal, an error reply and a timeout all count: the server did not say yes.
            (Action::Promote { epoch, .. }, Outcome::Failed) if s.promoting.is_some_and(|(e, _)| e == *epoch) => {
                s.promote_failures = s.promote_failures.saturating_add(1);
            }
            _ => {}
        }
    }
}

/// Updates the health hysteresis and the transition history.
fn track(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant) {
    if healthy(obs) {
        s.healthy_since.get_or_insert(now);
    } else {
        s.healthy_since = None;
    }
    let seen = obs.lease.transitions;
    if s.last_transitions.is_some_and(|last| seen > last) {
        s.transitions_seen.push_back(now);
    }
    s.last_transitions = Some(s.last_transitions.map_or(seen, |last| last.max(seen)));
    while s.transitions_seen.front().is_some_and(|t| now.duration_since(*t) > cfg.transition_window) {
        s.transitions_seen.pop_front();
    }
}

fn decision(actions: Vec<Action>, reason: Reason) -> Decision {
    Decision { actions, reason }
}

/// Probes pass and the admin API answers. A demoted server closes client connections, so its
/// failed ZEO probes are expected and do not count against it.
fn healthy(obs: &Observation) -> bool {
    match &obs.status {
        Some(st) => !obs.server.exited && (obs.server.misses == 0 || st.role == ServerRole::Demoted),
        None => false,
    }
}

fn down(obs: &Observation, cfg: &DecideConfig) -> bool {
    let demoted = obs.status.as_ref().is_some_and(|st| st.role == ServerRole::Demoted);
    obs.server.exited || (!demoted && obs.server.misses >= cfg.failure_threshold)
}

/// Our server provably accepts no commits.
fn fenced(obs: &Observation) -> bool {
    obs.server.exited || obs.status.as_ref().is_some_and(|st| st.role != ServerRole::Primary && !st.writable)
}

fn writable(obs: &Observation) -> bool {
    obs.status.as_ref().is_some_and(|st| st.role == ServerRole::Primary || st.writable)
}

fn fresh<'a>(p: &'a PeerView, cfg: &DecideConfig, now: Instant) -> Option<&'a ServerStatus> {
    let seen = p.seen_at?;
    (now.duration_since(seen) <= cfg.peer_fresh).then_some(p.status.as_ref()).flatten()
}

/// Demote, then kill once the demotion has not shown within `demote_timeout`. Empty once fenced.
fn fence(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant) -> Vec<Action> {
    if fenced(obs) {
        s.fencing = None;
        return Vec::new();
    }
    match s.fencing {
        None => {
            s.fencing = Some(Fencing { since: now, killed: false });
            vec![Action::Demote]
        }
        Some(f) if !f.killed && now.duration_since(f.since) >= cfg.demote_timeout => {
            s.fencing = Some(Fencing { killed: true, ..f });
            vec![Action::KillServer]
        }
        // Demotion or kill sent: repeating them is harmless and covers a lost request.
        Some(f) if f.killed => vec![Action::KillServer],
        Some(_) => vec![Action::Demote],
    }
}

fn renew_if_due(obs: &Observation, cfg: &DecideConfig, now: Instant, actions: &mut Vec<Action>) {
    if obs.lease.renewed_at.is_none_or(|t| now.duration_since(t) >= cfg.retry_period) {
        actions.push(Action::RenewLease);
    }
}

fn point_address(s: &mut State, epoch: u64, holder: &str, actions: &mut Vec<Action>) {
    if s.address.as_ref().is_none_or(|(e, h)| *e != epoch || h != holder) {
        s.address = Some((epoch, holder.to_string()));
        actions.push(Action::MoveAddress { to: holder.to_string() });
    }
}

fn as_holder(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant) -> Decision {
    let lease = &obs.lease;
    let epoch = lease.transitions;
    let since_renew = lease.renewed_at.map(|t| now.duration_since(t));
    if since_renew.is_none_or(|d| d >= cfg.renew_deadline) {
        let since_renew = since_renew.unwrap_or(cfg.renew_deadline);
        // Failsafe only for an unreachable store: a store that answers and refuses us means the
        // lease is gone, and the view would no longer name us.
        if cfg.failsafe
            && !lease.reachable
            && writable(obs)
            && !down(obs, cfg)
            && let Some(peer) = witness(obs, cfg, now)
        {
            return decision(vec![Action::RenewLease], Reason::FailsafeWitness { peer });
        }
        let mut actions = fence(obs, s, cfg, now);
        actions.push(Action::RenewLease);
        return decision(actions, Reason::RenewOverdue { since_renew });
    }
    if obs.server.exited {
        s.fencing = None;
        s.promoting = None;
        return decision(vec![Action::ReleaseLease { to: None }], Reason::ServerExited);
    }
    if down(obs, cfg) {
        let reason = Reason::ServerUnresponsive { misses: obs.server.misses };
        let mut actions = fence(obs, s, cfg, now);
        if actions.is_empty() {
            s.promoting = None;
            return decision(vec![Action::ReleaseLease { to: None }], reason);
        }
        // Keep the lease until the server is fenced, so nobody promotes beside it.
        renew_if_due(obs, cfg, now, &mut actions);
        return decision(actions, reason);
    }
    let Some(status) = &obs.status else {
        let mut actions = Vec::new();
        renew_if_due(obs, cfg, now, &mut actions);
        return decision(actions, Reason::NotHealthy);
    };
    if let Some(Command::Switchover { to }) = &obs.command {
        return start_switchover(obs, s, cfg, now, status, to.as_deref());
    }
    if let Some(sw) = s.switchover.clone() {
        return continue_switchover(obs, s, cfg, now, status, sw);
    }
    match status.role {
        ServerRole::Primary if status.epoch == epoch => {
            s.promoting = None;
            s.promote_failures = 0;
            s.force = false;
            s.fencing = None;
            let mut actions = Vec::new();
            let marks = out_of_sync_marks(status, &lease.out_of_sync);
            if marks != lease.out_of_sync {
                // Standbys degraded past must be on record before anyone may take over.
                actions.push(Action::RenewLease);
            } else {
                renew_if_due(obs, cfg, now, &mut actions);
            }
            // The server degrades past a standby only once its mark is in the lease: after the
            // write above (the loop stops at a failed one), or as already recorded.
            let requested = status.degrade_requested();
            if !requested.is_empty() && requested.iter().all(|n| marks.contains(n)) {
                actions.push(Action::ConfirmOutOfSync { epoch, standbys: requested.clone() });
            }
            point_address(s, epoch, &cfg.identity, &mut actions);
            if requested.is_empty() {
                decision(actions, Reason::Serving { epoch })
            } else {
                decision(actions, Reason::Degrading { epoch, standbys: requested })
            }
        }
        ServerRole::Primary if status.epoch > epoch => {
            let mut actions = Vec::new();
            renew_if_due(obs, cfg, now, &mut actions);
            decision(actions, Reason::EpochAheadOfLease { epoch: status.epoch, transitions: epoch })
        }
        ServerRole::Primary => promote(obs, s, cfg, now, epoch),
        ServerRole::Demoted if status.epoch >= epoch => {
            // Promoting at the same epoch is refused; a fresh acquisition raises it.
            decision(vec![Action::ReleaseLease { to: None }], Reason::HolderServerDemoted)
        }
        ServerRole::Demoted => promote(obs, s, cfg, now, epoch),
        ServerRole::Standby => match eligible(obs, status, cfg, now, epoch) {
            Ok(()) => promote(obs, s, cfg, now, epoch),
            Err(_) if s.force => promote(obs, s, cfg, now, epoch),
            Err(why) => {
                s.promoting = None;
                decision(vec![Action::ReleaseLease { to: None }], Reason::Ineligible(why))
            }
        },
    }
}

fn promote(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant, epoch: u64) -> Decision {
    let this_epoch = s.promoting.filter(|(e, _)| *e == epoch);
    let timed_out = this_epoch.is_some_and(|(_, since)| now.duration_since(since) >= cfg.promote_timeout);
    let attempts = if this_epoch.is_some() { s.promote_failures } else { 0 };
    if timed_out || attempts >= cfg.promote_attempts {
        // Give the lease back rather than burn epochs: whoever has the data takes it, and we stay
        // out of the running for a while.
        s.promoting = None;
        s.promote_failures = 0;
        s.force = false;
        s.promotion_backoff_until = Some(now + cfg.promotion_backoff);
        let reason =
            if timed_out { Reason::PromoteTimedOut { epoch } } else { Reason::PromoteFailed { epoch, attempts } };
        return decision(vec![Action::GiveUpPromotion { epoch }], reason);
    }
    if this_epoch.is_none() {
        s.promoting = Some((epoch, now));
        s.promote_failures = 0;
    }
    let mut actions = vec![Action::Promote { epoch, force: s.force }];
    renew_if_due(obs, cfg, now, &mut actions);
    decision(actions, Reason::Promoting { epoch, force: s.force })
}

/// The out-of-sync marks the lease should hold, given what it `recorded` and what our primary
/// server reports: every standby it reports out of sync or asks to degrade past is added; a mark
/// is cleared only when that standby is back in sync (connected, caught up, not out of sync). A
/// standby the server no longer lists keeps its mark. Sorted, without repeats.
pub fn out_of_sync_marks(status: &ServerStatus, recorded: &[String]) -> Vec<String> {
    let requested = status.degrade_requested();
    let links = status.primary().map(|p| p.standbys.as_slice()).unwrap_or_default();
    let back_in_sync = |name: &String| {
        !requested.contains(name) && links.iter().any(|l| &l.name == name && l.in_sync && !l.out_of_sync)
    };
    let mut marks: Vec<String> = recorded.iter().filter(|n| !back_in_sync(n)).cloned().collect();
    marks.extend(links.iter().filter(|l| l.out_of_sync).map(|l| l.name.clone()));
    marks.extend(requested.iter().cloned());
    marks.sort();
    marks.dedup();
    marks
}

/// A fresh peer whose server follows ours: proof our server is still the one serving.
fn witness(obs: &Observation, cfg: &DecideConfig, now: Instant) -> Option<String> {
    obs.peers
        .iter()
        .find(|p| {
            fresh(p, cfg, now)
                .and_then(ServerStatus::standby)
                .is_some_and(|r| r.connected && r.primary == cfg.replication_addr)
        })
        .map(|p| p.identity.clone())
}

fn start_switchover(
    obs: &Observation,
    s: &mut State,
    cfg: &DecideConfig,
    now: Instant,
    status: &ServerStatus,
    to: Option<&str>,
) -> Decision {
    let mut actions = Vec::new();
    renew_if_due(obs, cfg, now, &mut actions);
    let refuse = |actions, why| decision(actions, Reason::SwitchoverRefused { why });
    if status.role != ServerRole::Primary || status.epoch != obs.lease.transitions {
        return refuse(actions, "our server is not the serving primary");
    }
    let target = match to {
        Some(name) => obs.peers.iter().find(|p| p.identity == name),
        None if obs.peers.len() == 1 => obs.peers.first(),
        None => return refuse(actions, "several peers: name the target"),
    };
    let Some(target) = target else {
        return refuse(actions, "unknown target");
    };
    let Some(r) = fresh(target, cfg, now).and_then(ServerStatus::standby) else {
        return refuse(actions, "target is not a standby seen recently");
    };
    if r.out_of_sync || !r.in_sync || !r.connected {
        return refuse(actions, "target standby is not connected and in sync");
    }
    s.switchover = Some(Switchover { to: target.identity.clone(), since: now });
    actions.insert(0, Action::Demote);
    // Off the address with the demotion: a client reconnecting in the handover window should find
    // nothing, not a read-only server (Python ZEO waits 9 s after such a refusal).
    s.address = Some((obs.lease.transitions, target.identity.clone()));
    actions.push(Action::MoveAddress { to: target.identity.clone() });
    decision(actions, Reason::SwitchoverDemoting { to: target.identity.clone() })
}

fn continue_switchover(
    obs: &Observation,
    s: &mut State,
    cfg: &DecideConfig,
    now: Instant,
    status: &ServerStatus,
    sw: Switchover,
) -> Decision {
    let mut actions = Vec::new();
    let elapsed = now.duration_since(sw.since);
    if !fenced(obs) {
        if elapsed >= cfg.demote_timeout {
            // The demotion did not happen: the server still serves, nothing was handed over.
            s.switchover = None;
            renew_if_due(obs, cfg, now, &mut actions);
            return decision(actions, Reason::SwitchoverAborted);
        }
        renew_if_due(obs, cfg, now, &mut actions);
        return decision(actions, Reason::SwitchoverDemoting { to: sw.to });
    }
    let target = obs.peers.iter().find(|p| p.identity == sw.to);
    let standby = target.and_then(|p| fresh(p, cfg, now)).and_then(|st| st.standby().map(|r| (st, r)));
    let caught_up = standby.is_some_and(|(st, _)| st.position() >= status.last_tid);
    let in_sync = standby.is_some_and(|(_, r)| r.in_sync && !r.out_of_sync);
    // In sync, the target holds every acknowledged commit; what it lacks of our last tid was never
    // acknowledged (held at the sync gate) and cannot reach it any more (the demotion ended the
    // stream), so waiting for it would only stall the switchover. Our server rewinds it on rejoin.
    let async_caught_up = caught_up && standby.is_some_and(|(_, r)| !r.out_of_sync);
    if in_sync || async_caught_up {
        s.switchover = None;
        s.yield_until = Some(now + cfg.lease_duration);
        return decision(
            vec![Action::ReleaseLease { to: Some(sw.to.clone()) }],
            Reason::SwitchoverHandoff { to: sw.to },
        );
    }
    if elapsed >= cfg.switchover_timeout {
        // The target fell out of sync: take the lease back under a new epoch instead.
        s.switchover = None;
        return decision(vec![Action::ReleaseLease { to: None }], Reason::SwitchoverAborted);
    }
    renew_if_due(obs, cfg, now, &mut actions);
    decision(actions, Reason::SwitchoverCatchingUp { to: sw.to })
}

fn as_follower(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant) -> Decision {
    let lease = &obs.lease;
    let free = lease.holder.is_none() || lease.expired;
    if writable(obs) {
        let may_keep = free && obs.status.as_ref().is_some_and(|st| st.epoch >= lease.transitions);
        if !may_keep {
            let actions = fence(obs, s, cfg, now);
            return decision(actions, Reason::WritableWithoutLease);
        }
    } else if fenced(obs) {
        s.fencing = None;
    }
    match &lease.holder {
        Some(holder) if !lease.expired => follow(obs, s, cfg, now, holder),
        _ => candidacy(obs, s, cfg, now),
    }
}

fn follow(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant, holder: &str) -> Decision {
    let epoch = obs.lease.transitions;
    let Some(peer) = obs.peers.iter().find(|p| p.identity == holder) else {
        return decision(Vec::new(), Reason::UnknownHolder { holder: holder.to_string() });
    };
    let Some(status) = &obs.status else {
        return decision(Vec::new(), Reason::NotHealthy);
    };
    let mut actions = Vec::new();
    let following = status.standby().is_some_and(|r| r.primary == peer.replication_addr);
    if following {
        s.rejoin = None;
        point_address(s, epoch, holder, &mut actions);
        return decision(actions, Reason::Following { primary: peer.replication_addr.clone() });
    }
    let serving = fresh(peer, cfg, now).is_some_and(|st| st.role == ServerRole::Primary && st.epoch == epoch);
    if !serving {
        return decision(actions, Reason::AwaitingNewPrimary { holder: holder.to_string() });
    }
    let target = peer.replication_addr.clone();
    let resend = match &s.rejoin {
        Some((e, addr, at)) => *e != epoch || *addr != target || now.duration_since(*at) >= cfg.promote_timeout,
        None => true,
    };
    if resend {
        s.rejoin = Some((epoch, target.clone(), now));
        actions.push(Action::Rejoin { primary: target.clone() });
    }
    point_address(s, epoch, holder, &mut actions);
    decision(actions, Reason::Rejoining { primary: target })
}

fn candidacy(obs: &Observation, s: &mut State, cfg: &DecideConfig, now: Instant) -> Decision {
    let lease = &obs.lease;
    let wait = |reason| decision(Vec::new(), reason);
    if !lease.reachable {
        return wait(Reason::StoreUnreachable);
    }
    let forced = s.force;
    let Some(status) = obs.status.as_ref().filter(|_| !down(obs, cfg)) else {
        return wait(Reason::NotHealthy);
    };
    let stable = s.healthy_since.is_some_and(|t| now.duration_since(t) >= cfg.stable_for);
    if !forced && !stable {
        return wait(Reason::NotStable);
    }
    let me = cfg.identity.as_str();
    let handoff = lease.holder.is_none() && lease.preferred_holder.as_deref() == Some(me);
    // Our own earlier handoff keeps us from grabbing the lease back, not from taking one handed to
    // us: in a switchover back and forth the yield window would otherwise stall the next one.
    if !forced && !handoff && s.yield_until.is_some_and(|t| now < t) {
        return wait(Reason::Yielding);
    }
    if let Some(until) = s.promotion_backoff_until.filter(|t| !forced && now < *t) {
        return wait(Reason::Ineligible(Ineligible::PromotionBackoff { left: until.duration_since(now) }));
    }
    if let Some(to) = lease.preferred_holder.as_deref().filter(|to| *to != me && lease.holder.is_none()) {
        let recent = lease.changed_at.is_some_and(|t| now.duration_since(t) < cfg.lease_duration);
        if recent && !forced {
            return wait(Reason::HandoffToOther { to: to.to_string() });
        }
    }
    if !forced {
        if let Err(why) = eligible(obs, status, cfg, now, lease.transitions) {
            return wait(Reason::Ineligible(why));
        }
        // Also with a free lease: at bootstrap the standby must not race the serving primary.
        if let Some(peer) = primary_still_visible(obs, status, cfg, now) {
            return wait(Reason::PrimaryStillVisible { peer });
        }
    }
    // A holder that gave the lease back after a failed promotion made no primary: the interval
    // between failovers does not count that transition (the old primary must come back fast).
    let recovering = lease.holder.is_none() && !lease.promotion_failed.is_empty();
    if !forced && !handoff {
        if s.transitions_seen.len() >= cfg.max_transitions {
            return wait(Reason::RateLimited { transitions_in_window: s.transitions_seen.len() });
        }
        if let Some(last) = s.transitions_seen.back().filter(|_| !recovering) {
            let since_transition = now.duration_since(*last);
            if since_transition < cfg.min_failover_interval {
                return wait(Reason::TooSoon { since_transition });
            }
        }
    }
    decision(vec![Action::AcquireLease], Reason::Candidate { transitions: lease.transitions, forced, handoff })
}

/// Our standby still streams from a primary that a fresh peer status shows serving: the holder's
/// supervisor is gone, not its server, and a takeover would only make two primaries.
fn primary_still_visible(obs: &Observation, status: &ServerStatus, cfg: &DecideConfig, now: Instant) -> Option<String> {
    let r = status.standby().filter(|r| r.connected)?;
    obs.peers
        .iter()
        .find(|p| {
            p.replication_addr == r.primary
                && fresh(p, cfg, now).is_some_and(|st| st.role == ServerRole::Primary && st.writable)
        })
        .map(|p| p.identity.clone())
}

/// May this server be promoted at the lease's next epoch?
fn eligible(
    obs: &Observation,
    status: &ServerStatus,
    cfg: &DecideConfig,
    now: Instant,
    transitions: u64,
) -> Result<(), Ineligible> {
    match status.role {
        // Promoted servers keep their right only while nobody was promoted after them.
        ServerRole::Primary | ServerRole::Demoted if status.epoch < transitions => {
            if nobody_promoted_since(obs, status, cfg, now) {
                ranked_first(obs, status, cfg, now)
            } else {
                Err(Ineligible::StaleEpoch { epoch: status.epoch, transitions })
            }
        }
        ServerRole::Primary => Ok(()),
        ServerRole::Demoted => ranked_first(obs, status, cfg, now),
        ServerRole::Standby => {
            // The holder recorded that its server degraded past us: we may lack acknowledged
            // commits, even if our server was never told (a partition).
            if obs.lease.out_of_sync.contains(&cfg.identity) {
                return Err(Ineligible::OutOfSync);
            }
            if let Some(newer) = obs.peers.iter().filter_map(|p| p.status.as_ref()).map(|st| st.epoch).max()
                && newer > status.epoch
            {
                return Err(Ineligible::StaleEpoch { epoch: status.epoch, transitions: newer });
            }
            standby_promotable(obs, status, cfg)?;
            ranked_first(obs, status, cfg, now)
        }
    }
}

/// The epochs after our server's were taken by holders that gave the lease back, their
/// promotions failed (on record), and every peer's fresh status shows no epoch above ours: no
/// server was promoted after ours, so ours still has every acknowledged commit.
fn nobody_promoted_since(obs: &Observation, status: &ServerStatus, cfg: &DecideConfig, now: Instant) -> bool {
    !obs.lease.promotion_failed.is_empty()
        && obs.peers.iter().all(|p| fresh(p, cfg, now).is_some_and(|st| st.epoch <= status.epoch))
}

fn standby_promotable(obs: &Observation, status: &ServerStatus, cfg: &DecideConfig) -> Result<(), Ineligible> {
    let r = status.standby().ok_or(Ineligible::NoStatus)?;
    if let Some(e) = status.storage_error() {
        return Err(Ineligible::StorageError(e.to_string()));
    }
    if r.out_of_sync {
        return Err(Ineligible::OutOfSync);
    }
    if r.in_sync {
        return Ok(());
    }
    let not_in_sync = Ineligible::NotInSync { lag_transactions: r.lag_transactions, lag_seconds: r.lag_seconds };
    let Some(bound) = cfg.async_max_lag else {
        return Err(not_in_sync);
    };
    // Lag is only an acceptable loss when the primary never promised sync acknowledgements.
    let primary_async = obs
        .peers
        .iter()
        .filter_map(|p| p.status.as_ref())
        .filter_map(ServerStatus::primary)
        .any(|p| p.sync_state == SyncState::Async || p.sync_standbys == 0);
    if primary_async && r.lag_transactions <= bound.transactions && r.lag_seconds <= bound.seconds {
        Ok(())
    } else {
        Err(not_in_sync)
    }
}

/// No fresh promotable peer standby is further ahead (ties go to the smaller identity).
fn ranked_first(obs: &Observation, status: &ServerStatus, cfg: &DecideConfig, now: Instant) -> Result<(), Ineligible> {
    let mine = status.position();
    for p in &obs.peers {
        let Some(st) = fresh(p, cfg, now).filter(|st| st.role == ServerRole::Standby) else {
            continue;
        };
        let passed_over =
            obs.lease.out_of_sync.contains(&p.identity) || obs.lease.promotion_failed.contains(&p.identity);
        if standby_promotable(obs, st, cfg).is_err() || passed_over {
            continue;
        }
        let theirs = st.position();
        if theirs > mine || (theirs == mine && p.identity < cfg.identity) {
            return Err(Ineligible::PeerMoreEligible { peer: p.identity.clone() });
        }
    }
    Ok(())
}
