//! The inputs, memory and outputs of [`decide`](super::decide).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::status::ServerStatus;

/// The rules' knobs. Built from the binary's configuration; checked by [`DecideConfig::validate`].
#[derive(Debug, Clone)]
pub struct DecideConfig {
    /// This supervisor's name in the lease (`holderIdentity`).
    pub identity: String,
    /// `host:port` of our own server's replication listener (what a standby of ours reports).
    pub replication_addr: String,
    /// Consecutive failed ZEO probes that make our server "unresponsive".
    pub failure_threshold: u32,
    /// How long a lease nobody renews stays valid, on each observer's own clock.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long fences its server.
    pub renew_deadline: Duration,
    /// How often the holder renews (and candidates retry).
    pub retry_period: Duration,
    /// How long a demotion may take to show in `/status` before the server is killed.
    pub demote_timeout: Duration,
    /// Lag bounds for promoting a standby that is not in sync, when the primary ran async.
    /// `None`: only in-sync standbys are promoted.
    pub async_max_lag: Option<LagBound>,
    /// Minimum time between a lease transition and an automatic takeover.
    pub min_failover_interval: Duration,
    /// At most this many transitions per `transition_window` before automatic takeovers stop.
    pub max_transitions: usize,
    pub transition_window: Duration,
    /// Hysteresis: our server must have been healthy this long before it may take the lease.
    pub stable_for: Duration,
    /// A peer's status at most this old counts as current (failsafe witness, ranking).
    pub peer_fresh: Duration,
    /// Keep serving while the store is unreachable if a fresh peer still follows us.
    pub failsafe: bool,
    /// A promotion that has not shown in `/status` after this long gives the lease up.
    pub promote_timeout: Duration,
    /// A planned switchover waits this long for the target to catch up after the demotion.
    pub switchover_timeout: Duration,
    /// Failed promote calls (refused, error reply, timeout) at one epoch before the lease is given
    /// back.
    pub promote_attempts: u32,
    /// After giving the lease back, we are not a candidate for this long.
    pub promotion_backoff: Duration,
}

/// The most a standby may be behind to be promoted in async mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagBound {
    pub transactions: u64,
    pub seconds: f64,
}

impl DecideConfig {
    /// Defaults for `identity` on a pair with the HA plan's timers (lease 6 s, renew 4 s, retry 1 s).
    pub fn new(identity: impl Into<String>, replication_addr: impl Into<String>) -> DecideConfig {
        DecideConfig {
            identity: identity.into(),
            replication_addr: replication_addr.into(),
            failure_threshold: 3,
            lease_duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_secs(1),
            demote_timeout: Duration::from_secs(1),
            async_max_lag: None,
            min_failover_interval: Duration::from_secs(30),
            max_transitions: 6,
            transition_window: Duration::from_secs(3600),
            stable_for: Duration::from_secs(2),
            peer_fresh: Duration::from_secs(3),
            failsafe: true,
            promote_timeout: Duration::from_secs(10),
            switchover_timeout: Duration::from_secs(10),
            promote_attempts: 3,
            promotion_backoff: Duration::from_secs(60),
        }
    }

    /// Checks the timing invariants the safety argument rests on.
    ///
    /// # Errors
    /// The first rule that does not hold.
    pub fn validate(&self) -> Result<(), DecideConfigError> {
        if self.identity.is_empty() {
            return Err(DecideConfigError::EmptyIdentity);
        }
        // The write lease granted to our server ends at the renew deadline: it must end before
        // any peer may take the lease.
        if self.renew_deadline >= self.lease_duration {
            return Err(DecideConfigError::RenewDeadlinePastLease {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        // client-go's rule: a holder must be able to retry a renewal before it gives up.
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(DecideConfigError::RenewDeadlineWithinRetry {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        // The fence (demote, then kill) must finish before anyone else may take the lease.
        if self.renew_deadline + self.demote_timeout >= self.lease_duration {
            return Err(DecideConfigError::FenceOutlastsLease {
                renew_deadline: self.renew_deadline,
                demote_timeout: self.demote_timeout,
                lease_duration: self.lease_duration,
            });
        }
        if self.failure_threshold == 0 {
            return Err(DecideConfigError::NoFailureThreshold);
        }
        if self.max_transitions == 0 {
            return Err(DecideConfigError::NoTransitions);
        }
        Ok(())
    }
}

/// The rule of [`DecideConfig::validate`] that does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideConfigError {
    #[error("identity must not be empty")]
    EmptyIdentity,
    #[error("renew_deadline ({renew_deadline:?}) must be < lease_duration ({lease_duration:?})")]
    RenewDeadlinePastLease { renew_deadline: Duration, lease_duration: Duration },
    #[error("renew_deadline ({renew_deadline:?}) must be > 1.2 x retry_period ({retry_period:?})")]
    RenewDeadlineWithinRetry { renew_deadline: Duration, retry_period: Duration },
    #[error(
        "renew_deadline + demote_timeout ({renew_deadline:?} + {demote_timeout:?}) must be < lease_duration \
         ({lease_duration:?})"
    )]
    FenceOutlastsLease { renew_deadline: Duration, demote_timeout: Duration, lease_duration: Duration },
    #[error("failure_threshold must be at least 1")]
    NoFailureThreshold,
    #[error("max_transitions must be at least 1")]
    NoTransitions,
}

/// Everything observed in one tick.
#[derive(Debug, Clone)]
pub struct Observation {
    pub server: ServerHealth,
    /// Our server's `/status`; `None` when its admin API did not answer this tick.
    pub status: Option<ServerStatus>,
    /// The other supervisors' servers, as last seen.
    pub peers: Vec<PeerView>,
    pub lease: LeaseView,
    /// An operator command received since the last tick.
    pub command: Option<Command>,
    /// The actions of the previous decision and how each went (empty before the first).
    pub last_outcomes: Vec<ActionOutcome>,
}

/// One action of the previous decision and how the loop's attempt at it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    pub action: Action,
    pub outcome: Outcome,
}

/// How an action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// An earlier action of the same decision failed, and the loop stopped there.
    NotRun,
}

/// Liveness of our own server process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerHealth {
    /// The process we started has exited (exec mode sees this within milliseconds).
    pub exited: bool,
    /// Consecutive ZEO round-trip probes that failed (0 after a success).
    pub misses: u32,
}

/// Another server of the group, by its supervisor's identity.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub identity: String,
    /// Where its replication listener is: the `primary` a rejoin names.
    pub replication_addr: String,
    /// Its last `/status` and when we got it (`None`: never).
    pub status: Option<ServerStatus>,
    pub seen_at: Option<Instant>,
}

/// The lease as this observer sees it. Expiry is judged on the local monotonic clock (client-go).
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    /// The store answered this tick; otherwise the fields are the last known ones.
    pub reachable: bool,
    pub holder: Option<String>,
    /// Set by a planned release: the only candidate that may take the lease at once.
    pub preferred_holder: Option<String>,
    /// Holder changes so far: the epoch a new holder promotes at.
    pub transitions: u64,
    /// Standbys the holder's server degraded past, as recorded in the lease.
    pub out_of_sync: Vec<String>,
    /// Members whose server could not be promoted when they held the lease (cleared once a
    /// holder serves): passed over as candidates.
    pub promotion_failed: Vec<String>,
    /// Nobody renewed it for `lease_duration` as seen locally, or it was released or never existed.
    pub expired: bool,
    /// When we started our last successful acquire or renew, while we hold it.
    pub renewed_at: Option<Instant>,
    /// When this observer last saw the record change.
    pub changed_at: Option<Instant>,
}

/// Operator commands (the supervisor's admin API, `zeo-supervisor switchover`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Planned handover from the primary to `to` (or the only peer).
    Switchover { to: Option<String> },
    /// Take the lease and promote even a standby that is not eligible.
    ForcePromote,
}

/// One step for the loop to carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AcquireLease,
    RenewLease,
    /// Give the lease up; `to` is named as the preferred next holder (planned switchover).
    ReleaseLease {
        to: Option<String>,
    },
    Promote {
        epoch: u64,
        force: bool,
    },
    Demote,
    KillServer,
    Rejoin {
        primary: String,
    },
    /// Point the service address at the server of supervisor `to`.
    MoveAddress {
        to: String,
    },
    /// Tell our primary server that these standbys' out-of-sync marks are in the lease (the loop
    /// checks the record it holds names them first), so it may degrade past them.
    ConfirmOutOfSync {
        epoch: u64,
        standbys: Vec<String>,
    },
    /// Our server could not be promoted at `epoch`: give the lease back, named as a failed
    /// promotion so the others pass us over.
    GiveUpPromotion {
        epoch: u64,
    },
}

/// The loop's output for one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub reason: Reason,
}

/// Why a server may not take the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Ineligible {
    NoStatus,
    OutOfSync,
    /// Our server's storage failed a write: it may lack what it reported applied.
    StorageError(String),
    /// We gave the lease back after a failed promotion, a while ago.
    PromotionBackoff {
        left: Duration,
    },
    NotInSync {
        lag_transactions: u64,
        lag_seconds: f64,
    },
    StaleEpoch {
        epoch: u64,
        transitions: u64,
    },
    PeerMoreEligible {
        peer: String,
    },
}

/// Why the actions were chosen; `code()` is the stable label for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Serving { epoch: u64 },
    Following { primary: String },
    Promoting { epoch: u64, force: bool },
    PromoteTimedOut { epoch: u64 },
    PromoteFailed { epoch: u64, attempts: u32 },
    Degrading { epoch: u64, standbys: Vec<String> },
    RenewOverdue { since_renew: Duration },
    FailsafeWitness { peer: String },
    ServerExited,
    ServerUnresponsive { misses: u32 },
    WritableWithoutLease,
    HolderServerDemoted,
    EpochAheadOfLease { epoch: u64, transitions: u64 },
    Rejoining { primary: String },
    AwaitingNewPrimary { holder: String },
    UnknownHolder { holder: String },
    StoreUnreachable,
    NotHealthy,
    NotStable,
    Yielding,
    HandoffToOther { to: String },
    Ineligible(Ineligible),
    PrimaryStillVisible { peer: String },
    RateLimited { transitions_in_window: usize },
    TooSoon { since_transition: Duration },
    Candidate { transitions: u64, forced: bool, handoff: bool },
    SwitchoverRefused { why: &'static str },
    SwitchoverDemoting { to: String },
    SwitchoverCatchingUp { to: String },
    SwitchoverHandoff { to: String },
    SwitchoverAborted,
}

impl Reason {
    /// A stable snake_case label for the decision.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Serving { .. } => "serving",
            Reason::Following { .. } => "following",
            Reason::Promoting { .. } => "promoting",
            Reason::PromoteTimedOut { .. } => "promote_timed_out",
            Reason::PromoteFailed { .. } => "promote_failed",
            Reason::Degrading { .. } => "degrading",
            Reason::RenewOverdue { .. } => "renew_overdue",
            Reason::FailsafeWitness { .. } => "failsafe_witness",
            Reason::ServerExited => "server_exited",
            Reason::ServerUnresponsive { .. } => "server_unresponsive",
            Reason::WritableWithoutLease => "writable_without_lease",
            Reason::HolderServerDemoted => "holder_server_demoted",
            Reason::EpochAheadOfLease { .. } => "epoch_ahead_of_lease",
            Reason::Rejoining { .. } => "rejoining",
            Reason::AwaitingNewPrimary { .. } => "awaiting_new_primary",
            Reason::UnknownHolder { .. } => "unknown_holder",
            Reason::StoreUnreachable => "store_unreachable",
            Reason::NotHealthy => "not_healthy",
            Reason::NotStable => "not_stable",
            Reason::Yielding => "yielding",
            Reason::HandoffToOther { .. } => "handoff_to_other",
            Reason::Ineligible(_) => "ineligible",
            Reason::PrimaryStillVisible { .. } => "primary_still_visible",
            Reason::RateLimited { .. } => "rate_limited",
            Reason::TooSoon { .. } => "too_soon",
            Reason::Candidate { .. } => "candidate",
            Reason::SwitchoverRefused { .. } => "switchover_refused",
            Reason::SwitchoverDemoting { .. } => "switchover_demoting",
            Reason::SwitchoverCatchingUp { .. } => "switchover_catching_up",
            Reason::SwitchoverHandoff { .. } => "switchover_handoff",
            Reason::SwitchoverAborted => "switchover_aborted",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {self:?}", self.code())
    }
}

/// What the supervisor remembers between ticks. Only [`decide`](super::decide) changes it; the
/// loop reports how the actions went in the next [`Observation::last_outcomes`].
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Our server has passed every probe since then (hysteresis before candidacy).
    pub healthy_since: Option<Instant>,
    /// A fence in progress: demote sent, maybe kill sent.
    pub fencing: Option<Fencing>,
    /// The promotion we asked for, and since when.
    pub promoting: Option<(u64, Instant)>,
    /// Promote calls that failed at the epoch of `promoting`.
    pub promote_failures: u32,
    /// Not a candidate before then: our server could not be promoted.
    pub promotion_backoff_until: Option<Instant>,
    /// The (epoch, holder) the service address was last pointed for.
    pub address: Option<(u64, String)>,
    /// The (epoch, primary address) we last asked our server to rejoin.
    pub rejoin: Option<(u64, String, Instant)>,
    pub switchover: Option<Switchover>,
    /// Do not take the lease before then (after handing it over).
    pub yield_until: Option<Instant>,
    /// When transitions were seen, within the rate-limit window.
    pub transitions_seen: VecDeque<Instant>,
    /// The transition count seen last tick.
    pub last_transitions: Option<u64>,
    /// An operator forced the next promotion.
    pub force: bool,
}

/// A demotion we are waiting to see confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fencing {
    pub since: Instant,
    pub killed: bool,
}

/// A planned handover in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    pub to: String,
    pub since: Instant,
}
