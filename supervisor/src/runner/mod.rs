//! The observe → decide → act loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeo_proto::Tid;

use crate::decide::{
    Action, ActionOutcome, Command, DecideConfig, Decision, Observation, Outcome, PeerView, ServerHealth, State, decide,
};
use crate::grant::{KernelMismatch, boottime_ns, grant_until, same_kernel};
use crate::kill::KillError;
use crate::lease::{LeaseElector, LeaseError};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::mover::{AddressMover, MoveError};
use crate::probe::probe;
use crate::process::{ProcessError, ServerProcess};
use crate::server_admin::{ServerAdmin, ServerAdminError};

/// Re-decide at once after an action that changed the lease or a role, at most this often in a row.
const MAX_IMMEDIATE_TICKS: usize = 4;

/// After an action that changes roles, leases or addresses, look this often for a while: the
/// peer's next step (promotion, rejoin) follows within milliseconds, and a whole tick of waiting
/// for each step would add up to the clients' write pause.
const FAST_TICK: Duration = Duration::from_millis(25);
const FAST_WINDOW: Duration = Duration::from_secs(2);

/// How long a tick waits for the peers' status. A peer that answers later lands in the next
/// tick's view: an unreachable peer (its host cut off) must not slow every step of a takeover.
const PEER_WAIT: Duration = Duration::from_millis(100);

/// At shutdown, how long the successor gets to hold every transaction our server has.
const HANDOFF_CATCH_UP: Duration = Duration::from_secs(2);

/// Exec mode: wait this long before starting an exited server again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// At shutdown, how long the server gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// A peer server, as configured.
pub struct Peer {
    pub identity: String,
    pub replication_addr: String,
    pub admin: ServerAdmin,
}

/// The latest status a peer answered with, filled by requests that may outlive a tick.
#[derive(Default, Clone)]
struct PeerSlot {
    latest: Arc<std::sync::Mutex<Option<(crate::status::ServerStatus, Instant)>>>,
    in_flight: Arc<std::sync::atomic::AtomicBool>,
}

impl PeerSlot {
    /// Starts a status request unless one is still out; it stores what it gets.
    fn poll(&self, admin: &ServerAdmin) -> Option<tokio::task::JoinHandle<()>> {
        if self.in_flight.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        let (admin, slot) = (admin.clone(), self.clone());
        Some(tokio::spawn(async move {
            if let Ok(st) = admin.status().await {
                *slot.latest.lock().expect("peer slot poisoned") = Some((st, Instant::now()));
            }
            slot.in_flight.store(false, std::sync::atomic::Ordering::Release);
        }))
    }

    fn latest(&self) -> Option<(crate::status::ServerStatus, Instant)> {
        self.latest.lock().expect("peer slot poisoned").clone()
    }
}

/// Why an action failed. The loop logs it and stops acting for this tick; the next decision
/// repeats what is still needed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Server(#[from] ServerAdminError),
    #[error(transparent)]
    Address(#[from] MoveError),
    #[error(transparent)]
    Kill(#[from] KillError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("no way to kill the server: run with --exec, --kill-command or --kill-container")]
    NoKiller,
    /// The call did not finish within its budget (the retry period, cut to the renew deadline).
    #[error("{call}: no answer within {after:?}")]
    TimedOut { call: &'static str, after: Duration },
    /// The lease record we hold does not carry these out-of-sync marks: the server may not
    /// degrade past them.
    #[error("out-of-sync marks {0:?} are not in the lease we hold")]
    MarksNotRecorded(Vec<String>),
}

/// An operator command and where to send the decision it led to.
pub type CommandRequest = (Command, oneshot::Sender<String>);

/// Everything the loop works with.
pub struct Supervisor {
    pub cfg: DecideConfig,
    pub tick: Duration,
    pub server: ServerAdmin,
    pub zeo_addr: String,
    pub storage: String,
    pub probe_timeout: Duration,
    pub peers: Vec<Peer>,
    pub elector: LeaseElector,
    pub mover: Box<dyn AddressMover>,
    /// Exec mode: the server we started.
    pub process: Option<ServerProcess>,
    /// Otherwise, how to kill the server, if at all.
    pub killer: Option<crate::kill::ServerKiller>,
    pub metrics: Arc<Metrics>,
}

/// What the loop carries from tick to tick besides [`State`].
#[derive(Default)]
struct Memory {
    misses: u32,
    last_miss: Option<Instant>,
    /// A kill we sent succeeded: the server is down until a probe says otherwise.
    killed: bool,
    peers: Vec<PeerView>,
    last_logged: Option<(&'static str, Vec<Action>)>,
    /// The first tick that saw the lease free: the start of a failover.
    free_since: Option<Instant>,
    exited_at: Option<Instant>,
    /// Until then, tick at [`FAST_TICK`].
    fast_until: Option<Instant>,
    /// One per configured peer, in order.
    peer_slots: Vec<PeerSlot>,
    /// How the last decision's actions went, for the next observation.
    outcomes: Vec<ActionOutcome>,
    /// Our server serves at this epoch (primary, at the lease's epoch, which we hold): the
    /// epoch a write-lease grant names.
    serving_epoch: Option<u64>,
    /// Whether our server can be granted a write lease (`None`: not known yet).
    grantable: Option<Result<(), KernelMismatch>>,
}

impl Supervisor {
    /// Runs until `shutdown`; then stops acting, gives the address and the lease up.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<CommandRequest>,
        ready: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let mut state = State::default();
        let mut mem = Memory {
            peers: self
                .peers
                .iter()
                .map(|p| PeerView {
                    identity: p.identity.clone(),
                    replication_addr: p.replication_addr.clone(),
                    status: None,
                    seen_at: None,
                })
                .collect(),
            peer_slots: vec![PeerSlot::default(); self.peers.len()],
            ..Memory::default()
        };
        let mut pending: Option<CommandRequest> = None;
        self.elector.set_timing(self.cfg.renew_deadline, self.cfg.retry_period);
        self.liveness().set_bound(Liveness::bound_for(self.tick, self.cfg.retry_period, self.max_call()));
        self.liveness().beat();
        loop {
            for _ in 0..MAX_IMMEDIATE_TICKS {
                let command = pending.as_ref().map(|(c, _)| c.clone());
                let obs = self.observe(&mut mem, command).await;
                self.liveness().beat();
                let (decision, next) = decide(&obs, &state, &self.cfg, Instant::now());
                state = next;
                self.log(&mut mem, &obs, &decision);
                if let Some((_, reply)) = pending.take() {
                    let _ = reply.send(decision.reason.to_string());
                }
                ready.cancel();
                if decision.actions.iter().any(|a| *a != Action::RenewLease) {
                    mem.fast_until = Some(Instant::now() + FAST_WINDOW);
                }
                let again = self.act(&decision, &mut mem).await;
                if !again {
                    break;
                }
            }
            self.maybe_restart(&mut mem);
            let fast = mem.fast_until.is_some_and(|t| Instant::now() < t);
            let pause = if fast { FAST_TICK.min(self.tick) } else { self.tick };
            let exit = async {
                match self.process.as_mut() {
                    Some(p) if !p.exited() => p.wait_exit().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = exit => {}
                Some(req) = commands.recv() => pending = Some(req),
            }
        }
        self.stop().await;
    }

    fn liveness(&self) -> &Liveness {
        &self.metrics.liveness
    }

    /// The longest any single call of the loop may take.
    fn max_call(&self) -> Duration {
        self.cfg.retry_period.max(self.probe_timeout)
    }

    /// The budget of one admin, mover or kill call: the retry period, cut to what is left of the
    /// renew deadline while we hold a lease that is not overdue (the fence must not wait on it).
    fn call_budget(&self) -> Duration {
        let now = Instant::now();
        let left = self.elector.view(now).renewed_at.map(|t| self.cfg.renew_deadline.saturating_sub(now - t));
        match left {
            Some(left) if !left.is_zero() => left.min(self.cfg.retry_period),
            _ => self.cfg.retry_period,
        }
    }

    async fn observe(&mut self, mem: &mut Memory, command: Option<Command>) -> Observation {
        let exited = self.process.as_ref().is_some_and(ServerProcess::exited);
        if exited && mem.exited_at.is_none() {
            mem.exited_at = Some(Instant::now());
        }
        let requests: Vec<_> = self.peers.iter().zip(&mem.peer_slots).filter_map(|(p, s)| s.poll(&p.admin)).collect();
        // Brackets our server's reading of its clock, for the same-kernel check.
        let before_ns = boottime_ns();
        let (probed, status, _, lease) = tokio::join!(
            probe(&self.zeo_addr, &self.storage, self.probe_timeout),
            self.server.status(),
            tokio::time::timeout(PEER_WAIT, futures::future::join_all(requests)),
            self.elector.observe(),
        );
        let after_ns = boottime_ns();
        match probed {
            Ok(_) => {
                mem.misses = 0;
                mem.last_miss = None;
                mem.killed = false;
            }
            Err(e) => {
                // Misses count at the configured tick, also while ticking fast: the failure
                // threshold is a time budget, and a blip must not burn it in 75 ms.
                let due = mem.last_miss.is_none_or(|t| t.elapsed() >= self.tick.mul_f64(0.9));
                if due {
                    mem.last_miss = Some(Instant::now());
                    mem.misses = mem.misses.saturating_add(1);
                }
                tracing::debug!(error = %e, misses = mem.misses, "probe failed");
            }
        }
        let now = Instant::now();
        for (view, slot) in mem.peers.iter_mut().zip(&mem.peer_slots) {
            if let Some((st, at)) = slot.latest() {
                view.status = Some(st);
                view.seen_at = Some(at);
            }
        }
        if lease.holder.is_some() && !lease.expired {
            mem.free_since = None;
        } else if mem.free_since.is_none() {
            mem.free_since = Some(now);
        }
        let status = status.ok();
        let held = lease.holder.as_deref() == Some(self.cfg.identity.as_str());
        let serving = status
            .as_ref()
            .filter(|s| held && s.role == crate::status::ServerRole::Primary && s.epoch == lease.transitions);
        mem.serving_epoch = serving.map(|s| s.epoch);
        // What the next lease write records: our serving primary's marks; otherwise the record's.
        self.elector.set_out_of_sync(serving.map(|s| crate::decide::out_of_sync_marks(s, &lease.out_of_sync)));
        if let Some(st) = &status {
            let check = same_kernel(st.boottime_ns, before_ns, after_ns);
            if mem.grantable.as_ref() != Some(&check) {
                match &check {
                    Ok(()) => tracing::info!("server shares our CLOCK_BOOTTIME: write leases are granted"),
                    Err(KernelMismatch::Unknown) => {
                        tracing::warn!("server has no write lease: it stops writing only when told to")
                    }
                    Err(e) => tracing::error!(error = %e, "no write lease granted: the server fences itself"),
                }
            }
            mem.grantable = Some(check);
        }
        self.metrics.set_role(status.as_ref().map_or("unknown", |s| match s.role {
            crate::status::ServerRole::Primary => "primary",
            crate::status::ServerRole::Standby => "standby",
            crate::status::ServerRole::Demoted => "demoted",
        }));
        self.metrics.set_holder(lease.holder.as_deref());
        self.metrics.epoch.set(i64::try_from(lease.transitions).unwrap_or(i64::MAX));
        Observation {
            server: ServerHealth { exited: exited || mem.killed, misses: mem.misses },
            status,
            peers: mem.peers.clone(),
            lease,
            command,
            last_outcomes: std::mem::take(&mut mem.outcomes),
        }
    }

    /// One structured line per decision that acts or changes its reason; the rest at debug.
    fn log(&self, mem: &mut Memory, obs: &Observation, d: &Decision) {
        let key = (d.reason.code(), d.actions.clone());
        let role = obs.status.as_ref().map(|s| format!("{:?}", s.role));
        if !d.actions.is_empty() || mem.last_logged.as_ref().is_none_or(|k| k.0 != key.0) {
            tracing::info!(
                reason = d.reason.code(),
                detail = ?d.reason,
                actions = ?d.actions,
                holder = ?obs.lease.holder,
                epoch = obs.lease.transitions,
                role = ?role,
                misses = obs.server.misses,
                "decision"
            );
        } else {
            tracing::debug!(reason = d.reason.code(), "decision");
        }
        mem.last_logged = Some(key);
    }

    /// Carries out the actions in order; stops at the first that fails. Records how each went
    /// for the next observation, and returns whether the outcome should be looked at again at once.
    async fn act(&mut self, d: &Decision, mem: &mut Memory) -> bool {
        let mut again = false;
        let mut failed = false;
        let mut outcomes = Vec::with_capacity(d.actions.len());
        for action in &d.actions {
            let outcome = if failed {
                Outcome::NotRun
            } else {
                let done = self.carry_out(action, mem).await;
                self.liveness().beat();
                match done {
                    Ok(changed) => {
                        again |= changed;
                        Outcome::Succeeded
                    }
                    Err(error) => {
                        tracing::warn!(?action, %error, "action failed");
                        failed = true;
                        Outcome::Failed
                    }
                }
            };
            outcomes.push(ActionOutcome { action: action.clone(), outcome });
        }
        mem.outcomes = outcomes;
        again && !failed
    }

    /// One action; `Ok(true)` when what it changed should be looked at again at once.
    async fn carry_out(&mut self, action: &Action, mem: &mut Memory) -> Result<bool, ActionError> {
        match action {
            Action::AcquireLease => Ok(self.elector.try_acquire().await?),
            Action::RenewLease => {
                let start = Instant::now();
                let renewed = self.elector.renew().await;
                self.metrics.renew_latency.observe(start.elapsed().as_secs_f64());
                let renewed = renewed?;
                if renewed {
                    self.liveness().beat();
                    self.grant(mem).await;
                }
                // A lost renewal is news: look again now.
                Ok(!renewed)
            }
            Action::ReleaseLease { to } => {
                let released = self.elector.release(to.clone()).await;
                self.release_address().await;
                Ok(released?)
            }
            Action::GiveUpPromotion { epoch } => {
                tracing::warn!(epoch, "our server could not be promoted: giving the lease back");
                let released = self.elector.give_up_promotion().await;
                self.release_address().await;
                Ok(released?)
            }
            Action::ConfirmOutOfSync { epoch, standbys } => {
                let recorded = self.elector.recorded_out_of_sync().unwrap_or_default();
                if !standbys.iter().all(|n| recorded.contains(n)) {
                    return Err(ActionError::MarksNotRecorded(standbys.clone()));
                }
                let budget = self.call_budget();
                bounded("out-of-sync", budget, self.server.out_of_sync(*epoch, standbys)).await?;
                tracing::warn!(epoch, ?standbys, "out-of-sync marks in the lease: the server may degrade past them");
                Ok(true)
            }
            Action::Promote { epoch, force } => {
                let until = self.first_grant(mem);
                let budget = self.call_budget();
                let change = bounded("promote", budget, self.server.promote(*epoch, *force, until)).await?;
                if change.epoch.is_none_or(|e| e == *epoch) && change.role == crate::status::ServerRole::Primary {
                    mem.serving_epoch = Some(*epoch);
                }
                if change.changed {
                    self.metrics.failovers.inc();
                    if let Some(t) = mem.free_since {
                        self.metrics.last_failover_seconds.set(t.elapsed().as_secs_f64());
                    }
                    tracing::info!(epoch, force, "server promoted");
                }
                Ok(true)
            }
            Action::Demote => {
                // No grant for a server we are fencing, even if the demotion's answer is lost.
                mem.serving_epoch = None;
                bounded("demote", self.call_budget(), self.server.demote()).await?;
                Ok(true)
            }
            Action::KillServer => {
                mem.serving_epoch = None;
                self.kill().await?;
                mem.killed = true;
                Ok(true)
            }
            Action::Rejoin { primary } => {
                bounded("rejoin", self.call_budget(), self.server.rejoin(primary)).await?;
                Ok(true)
            }
            Action::MoveAddress { to } => {
                let budget = self.call_budget();
                if *to == self.cfg.identity {
                    bounded("address claim", budget, self.mover.claim()).await?;
                } else {
                    bounded("address release", budget, self.mover.release()).await?;
                }
                Ok(false)
            }
        }
    }

    /// Whoever gave the lease up stops attracting clients at once, so the next holder can take
    /// the address (a local listener cannot be taken over).
    async fn release_address(&self) {
        if let Err(e) = bounded("address release", self.cfg.retry_period, self.mover.release()).await {
            tracing::warn!(error = %e, "releasing the service address failed");
        }
    }

    /// The end of the write lease the lease we hold earns, if our server may be granted one.
    fn grant_end(&self, mem: &Memory) -> Option<u64> {
        if !matches!(mem.grantable, Some(Ok(()))) {
            return None;
        }
        let from = self.elector.written_from_ns()?;
        let until = grant_until(from, self.cfg.renew_deadline, self.cfg.lease_duration);
        (until > boottime_ns()).then_some(until)
    }

    /// The grant a promotion carries: none for a server without write leases (it would refuse
    /// the field) or on another kernel (it then stays read-only).
    fn first_grant(&self, mem: &Memory) -> Option<u64> {
        let until = self.grant_end(mem);
        if until.is_none() && matches!(mem.grantable, Some(Err(KernelMismatch::OtherKernel { .. }))) {
            self.metrics.grant_failures.inc();
        }
        until
    }

    /// After a renewal: extends our serving server's write lease. A grant that fails extends
    /// nothing; the server fences itself when the last one ends.
    async fn grant(&self, mem: &Memory) {
        let Some(epoch) = mem.serving_epoch else {
            return;
        };
        if matches!(mem.grantable, None | Some(Err(KernelMismatch::Unknown))) {
            return;
        }
        let Some(until) = self.grant_end(mem) else {
            self.metrics.grant_failures.inc();
            return;
        };
        let left = Duration::from_nanos(until.saturating_sub(boottime_ns()));
        match bounded("write-lease", left.min(self.cfg.retry_period), self.server.write_lease(epoch, until)).await {
            Ok(granted) => {
                self.metrics.grants.inc();
                tracing::debug!(epoch, until, writable = granted.writable, "write lease granted");
            }
            Err(error) => {
                self.metrics.grant_failures.inc();
                tracing::warn!(epoch, %error, "write-lease grant failed: the server fences itself at the last one's end");
            }
        }
    }

    async fn kill(&mut self) -> Result<(), ActionError> {
        if let Some(p) = &self.process {
            return Ok(p.kill()?);
        }
        match &self.killer {
            Some(killer) => bounded("kill", self.cfg.retry_period, killer.kill()).await,
            None => Err(ActionError::NoKiller),
        }
    }

    fn maybe_restart(&mut self, mem: &mut Memory) {
        let Some(p) = self.process.as_mut() else {
            return;
        };
        if p.exited() && mem.exited_at.is_some_and(|t| t.elapsed() >= RESTART_DELAY) {
            mem.exited_at = None;
            mem.killed = false;
            if let Err(e) = p.restart() {
                tracing::error!(error = %e, "cannot restart the server");
            }
        }
    }

    /// Shutdown order: stop acting, fence our server if it is the primary, move the address
    /// away, hand the lease to the best standby (so it need not wait out the duration, nor the
    /// rate limits of an unplanned failover), stop the child.
    async fn stop(&mut self) {
        let view = self.elector.view(Instant::now());
        if view.holder.as_deref() == Some(self.cfg.identity.as_str()) {
            let budget = self.cfg.retry_period;
            let last_tid = match bounded("demote", budget, self.server.demote()).await {
                Ok(_) => bounded("status", budget, self.server.status()).await.ok().map(|st| st.last_tid),
                Err(e) => {
                    tracing::warn!(error = %e, "demote at shutdown failed");
                    None
                }
            };
            self.release_address().await;
            let successor = self.successor(last_tid).await;
            match self.elector.release(successor.clone()).await {
                Ok(_) => tracing::info!(?successor, "lease released"),
                Err(e) => tracing::warn!(error = %e, "lease release at shutdown failed"),
            }
        }
        if let Some(p) = self.process.as_mut() {
            let _ = p.terminate();
            if tokio::time::timeout(STOP_GRACE, p.wait_exit()).await.is_err() {
                let _ = p.kill();
                p.wait_exit().await;
            }
        }
    }

    /// The standby of our server that is furthest ahead, once it holds `last_tid` (waited for up
    /// to [`HANDOFF_CATCH_UP`]; sync standbys already do). Holding our demoted server's last
    /// transaction is what makes it a safe successor: the demote may already have dropped its
    /// link (so `connected` and `in_sync` may be false by now). Without `last_tid`, only a
    /// connected in-sync standby qualifies.
    async fn successor(&self, last_tid: Option<Tid>) -> Option<String> {
        let deadline = Instant::now() + HANDOFF_CATCH_UP;
        loop {
            let statuses = futures::future::join_all(self.peers.iter().map(|p| p.admin.status())).await;
            let best = self
                .peers
                .iter()
                .zip(statuses)
                .filter_map(|(p, st)| {
                    let st = st.ok()?;
                    let r = st.standby()?;
                    let ours = r.primary == self.cfg.replication_addr && !r.out_of_sync;
                    let live = r.connected && r.in_sync;
                    (ours && (live || last_tid.is_some())).then(|| (r.applied_tid, p.identity.clone()))
                })
                .max();
            match best {
                Some((applied, name)) if last_tid.is_none_or(|t| applied >= t) => return Some(name),
                _ if Instant::now() >= deadline => return None,
                _ => tokio::time::sleep(FAST_TICK).await,
            }
        }
    }
}

/// Runs one call within `budget`.
async fn bounded<T, E>(
    call: &'static str,
    budget: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ActionError>
where
    ActionError: From<E>,
{
    match tokio::time::timeout(budget, fut).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(ActionError::TimedOut { call, after: budget }),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fencing_tests;
