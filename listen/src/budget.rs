//! `InputBudget`: one bound on the bytes buffered for peers that have not authenticated yet.
//!
//! A per-connection frame cap alone still lets N connections buffer N x cap bytes; the budget caps
//! the sum. Each pre-auth connection holds a `Reservation` covering what it buffers, grows it before
//! reading more, and gives it back when it authenticates or closes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is spent: the connection asking for more is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the pre-auth input budget of {total} bytes is spent (wanted {wanted} more)")]
pub struct BudgetExhausted {
    pub wanted: usize,
    pub total: usize,
}

/// A shared byte budget (a semaphore of bytes). Clones share it.
#[derive(Clone, Debug)]
pub struct InputBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl InputBudget {
    /// A budget of `total` bytes (capped at the semaphore's maximum, far above any memory).
    pub fn new(total: usize) -> InputBudget {
        let total = total.min(Semaphore::MAX_PERMITS);
        InputBudget { bytes: Arc::new(Semaphore::new(total)), total }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved by anyone now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// An empty reservation, to grow as the connection buffers input.
    pub fn reservation(&self) -> Reservation {
        Reservation { budget: self.clone(), held: None, bytes: 0 }
    }
}

/// What one connection holds of the budget; dropping it gives the bytes back.
#[derive(Debug)]
pub struct Reservation {
    budget: InputBudget,
    held: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the reservation cover at least `bytes` (it never shrinks). Never waits: a peer that
    /// cannot be covered now is closed rather than queued, so waiting peers cannot pile up.
    ///
    /// # Errors
    /// `BudgetExhausted` when the budget has not enough left; the reservation is unchanged.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), BudgetExhausted> {
        let Some(wanted) = bytes.checked_sub(self.bytes).filter(|w| *w > 0) else { return Ok(()) };
        let exhausted = BudgetExhausted { wanted, total: self.budget.total };
        let n = u32::try_from(wanted).map_err(|_| exhausted)?;
        let more = self.budget.bytes.clone().try_acquire_many_owned(n).map_err(|_| exhausted)?;
        match &mut self.held {
            Some(held) => held.merge(more),
            None => self.held = Some(more),
        }
        self.bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_total() {
        let budget = InputBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        a.grow_to(60).unwrap();
        assert_eq!(b.grow_to(50), Err(BudgetExhausted { wanted: 50, total: 100 }));
        assert_eq!(b.bytes(), 0, "a failed grow leaves the reservation as it was");
        b.grow_to(40).unwrap();
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60, "dropping a reservation returns its bytes");
        b.grow_to(100).unwrap();
        assert_eq!(budget.available(), 0);
    }

    #[test]
    fn growing_to_less_than_held_is_a_no_op() {
        let budget = InputBudget::new(10);
        let mut r = budget.reservation();
        r.grow_to(8).unwrap();
        r.grow_to(3).unwrap();
        assert_eq!((r.bytes(), budget.available()), (8, 2));
    }

    #[test]
    fn a_request_beyond_u32_is_refused_not_truncated() {
        let budget = InputBudget::new(usize::MAX);
        let mut r = budget.reservation();
        assert!(r.grow_to(u32::MAX as usize + 1).is_err());
        assert_eq!(r.bytes(), 0);
    }
}
