//! A lease store that stops answering on demand: an etcd or API server behind a partition that
//! still accepts connections, the case a missing timeout turns into a wedged loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::lease::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};

/// Wraps a store; while stalled, every call waits until the stall ends.
pub struct StallStore {
    inner: Arc<dyn LeaseStore>,
    stalled: watch::Sender<bool>,
    /// Compare-and-swaps that arrived while stalled.
    stalled_writes: AtomicUsize,
}

impl StallStore {
    pub fn new(inner: Arc<dyn LeaseStore>) -> StallStore {
        StallStore { inner, stalled: watch::channel(false).0, stalled_writes: AtomicUsize::new(0) }
    }

    /// How many writes arrived while the store was stalled.
    pub fn stalled_writes(&self) -> usize {
        self.stalled_writes.load(Ordering::SeqCst)
    }

    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    async fn pass(&self) {
        let mut rx = self.stalled.subscribe();
        let _ = rx.wait_for(|s| !*s).await;
    }
}

#[async_trait]
impl LeaseStore for StallStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        self.pass().await;
        self.inner.get().await
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        if *self.stalled.borrow() {
            self.stalled_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.pass().await;
        self.inner.compare_and_swap(expected, record).await
    }
}
