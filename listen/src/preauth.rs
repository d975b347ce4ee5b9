//! A connection's pre-auth phase: from accept until the peer has authenticated (ZEO: `register`;
//! replication: its handshake). Until then it has a deadline, a small frame cap, and may buffer
//! only what its reservation of the shared input budget covers.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{BudgetExhausted, InputBudget, Reservation};
use crate::refusals::Reason;

/// The pre-auth bounds of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// From accept to authenticated, TLS handshake included.
    pub deadline: Duration,
    /// The largest frame payload accepted before authentication.
    pub max_frame: usize,
}

impl Default for PreAuthLimits {
    /// 10 s (a real client registers within milliseconds of connecting) and 64 KiB (a `register`
    /// or a replication hello is a few hundred bytes).
    fn default() -> Self {
        PreAuthLimits { deadline: Duration::from_secs(10), max_frame: 64 << 10 }
    }
}

/// Why a pre-auth connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreAuthError {
    /// `stage` (e.g. "TLS handshake", "register") did not complete before the deadline.
    #[error("no {stage} within {after:?} of connecting")]
    Timeout { stage: &'static str, after: Duration },
    /// A frame before authentication announced more than the pre-auth cap.
    #[error("a frame of {len} bytes before authentication (the limit is {max})")]
    FrameTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Budget(#[from] BudgetExhausted),
}

impl PreAuthError {
    /// How the refusal is counted.
    pub fn reason(&self) -> Reason {
        match self {
            PreAuthError::Timeout { .. } => Reason::AuthTimeout,
            PreAuthError::FrameTooLarge { .. } => Reason::FrameTooLarge,
            PreAuthError::Budget(_) => Reason::InputBudget,
        }
    }
}

/// One connection's pre-auth state. Start it at accept; drop it (or call `authenticated`) once
/// the peer is authenticated, which returns its budget.
#[derive(Debug)]
pub struct PreAuth {
    limits: PreAuthLimits,
    deadline: Instant,
    reservation: Reservation,
}

impl PreAuth {
    pub fn start(limits: PreAuthLimits, budget: &InputBudget) -> PreAuth {
        PreAuth { limits, deadline: Instant::now() + limits.deadline, reservation: budget.reservation() }
    }

    pub fn limits(&self) -> PreAuthLimits {
        self.limits
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Completes when the deadline passes, with the error for `stage`; for a `select!` beside the
    /// connection's reads.
    pub async fn expired(&self, stage: &'static str) -> PreAuthError {
        tokio::time::sleep_until(self.deadline).await;
        PreAuthError::Timeout { stage, after: self.limits.deadline }
    }

    /// Runs `step` (a TLS handshake, a handshake exchange) under the deadline.
    ///
    /// # Errors
    /// `PreAuthError::Timeout` naming `stage` when the deadline passes first.
    pub async fn within<F: Future>(&self, stage: &'static str, step: F) -> Result<F::Output, PreAuthError> {
        tokio::time::timeout_at(self.deadline, step)
            .await
            .map_err(|_| PreAuthError::Timeout { stage, after: self.limits.deadline })
    }

    /// Checks an announced frame length against the pre-auth cap, before its body is buffered.
    ///
    /// # Errors
    /// `PreAuthError::FrameTooLarge`.
    pub fn check_frame(&self, len: usize) -> Result<(), PreAuthError> {
        if len > self.limits.max_frame {
            return Err(PreAuthError::FrameTooLarge { len, max: self.limits.max_frame });
        }
        Ok(())
    }

    /// Makes the connection's reservation cover `bytes` of buffered input; call it before reading
    /// more. Never waits.
    ///
    /// # Errors
    /// `PreAuthError::Budget` when the shared budget cannot cover it.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), PreAuthError> {
        Ok(self.reservation.grow_to(bytes)?)
    }

    /// Bytes this connection holds of the budget.
    pub fn reserved(&self) -> usize {
        self.reservation.bytes()
    }

    /// The peer authenticated: its reservation goes back to the budget.
    pub fn authenticated(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PreAuthLimits {
        PreAuthLimits { deadline: Duration::from_secs(10), max_frame: 1000 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_past_the_deadline_times_out() {
        let pre = PreAuth::start(limits(), &InputBudget::new(1 << 20));
        let quick = pre.within("register", async { 7 }).await;
        assert_eq!(quick, Ok(7));
        let silent = pre.within("register", std::future::pending::<()>()).await;
        let err = silent.unwrap_err();
        assert_eq!(err, PreAuthError::Timeout { stage: "register", after: Duration::from_secs(10) });
        assert_eq!(err.reason(), Reason::AuthTimeout);
        assert_eq!(err.to_string(), "no register within 10s of connecting");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_accept_not_from_each_step() {
        let pre = PreAuth::start(limits(), &InputBudget::new(1 << 20));
        tokio::time::advance(Duration::from_secs(9)).await;
        let slow = pre.within("TLS handshake", tokio::time::sleep(Duration::from_secs(2))).await;
        assert_eq!(slow.unwrap_err().reason(), Reason::AuthTimeout, "9 s + 2 s is past 10 s");
        assert!(matches!(pre.expired("register").await, PreAuthError::Timeout { stage: "register", .. }));
    }

    #[test]
    fn frames_over_the_cap_are_refused() {
        let pre = PreAuth::start(limits(), &InputBudget::new(1 << 20));
        assert_eq!(pre.check_frame(1000), Ok(()));
        let err = pre.check_frame(1001).unwrap_err();
        assert_eq!(err, PreAuthError::FrameTooLarge { len: 1001, max: 1000 });
        assert_eq!(err.reason(), Reason::FrameTooLarge);
    }

    #[test]
    fn buffers_draw_from_the_shared_budget_until_authenticated() {
        let budget = InputBudget::new(1500);
        let mut a = PreAuth::start(limits(), &budget);
        let mut b = PreAuth::start(limits(), &budget);
        a.reserve(1000).unwrap();
        let err = b.reserve(1000).unwrap_err();
        assert_eq!(err.reason(), Reason::InputBudget);
        assert_eq!(a.reserved(), 1000);
        a.authenticated();
        b.reserve(1000).expect("a's bytes came back when it authenticated");
        assert_eq!(budget.available(), 500);
    }
}
