//! What to do next: a pure function of what this supervisor observed and what it remembers.
//!
//! [`decide`] does no I/O and reads no clock: the loop passes the monotonic `now`, so every rule
//! can be table-tested (see `tests.rs`, one row per scenario of the HA test plan). The loop runs
//! the returned [`Action`]s in order, logs the [`Reason`] as one structured line, and reports how
//! each action went in the next [`Observation`]: an address move or a rejoin that failed is asked
//! for again.
//!
//! Safety rules, in the order [`decide`] applies them:
//! - A lease holder that has not renewed within `renew_deadline` fences its server (demote, then
//!   kill if the demotion is not confirmed within `demote_timeout`) before the lease can expire
//!   anywhere else (`renew_deadline + demote_timeout < lease_duration`), unless a fresh peer
//!   witnesses that it still follows us (failsafe, as Patroni's `failsafe_mode` with N=2).
//! - A server that is writable without the lease is fenced, or, if the lease is free and nobody
//!   was promoted since its epoch, takes the lease back.
//! - Only an eligible server is promoted: a standby that is in sync (or, when the primary ran
//!   async, within the configured lag) and was never degraded past (`out_of_sync`), at the
//!   lease's epoch, with no fresher eligible peer; an operator's force lifts these checks.
//! - A server whose epoch is behind the lease's rejoins the holder as a standby, never primary.
//! - No flapping: a server must be healthy for `stable_for` first; automatic takeovers keep
//!   `min_failover_interval` from the last transition and at most `max_transitions` per
//!   `transition_window`; a planned handover (a released lease naming us) is exempt.

mod logic;
mod types;

#[cfg(test)]
mod tests;

pub use logic::{decide, out_of_sync_marks};
pub use types::{
    Action, ActionOutcome, Command, DecideConfig, DecideConfigError, Decision, Fencing, Ineligible, LagBound,
    LeaseView, Observation, Outcome, PeerView, Reason, ServerHealth, State, Switchover,
};
