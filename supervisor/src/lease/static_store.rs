//! A lease kept by the supervisor itself: for a pair where one supervisor decides alone (no
//! etcd, no Kubernetes), and for tests. With a file, the transition count (the epoch) survives
//! restarts; the file is replaced atomically (write, fsync, rename).

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};

/// An in-process compare-and-swap register, optionally persisted.
pub struct StaticLeaseStore {
    path: Option<PathBuf>,
    /// (version counter, record). A std mutex: never held across an await.
    slot: Mutex<(u64, Option<LeaseRecord>)>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u64,
    record: LeaseRecord,
}

impl StaticLeaseStore {
    /// A store that lives as long as the process.
    pub fn in_memory() -> StaticLeaseStore {
        StaticLeaseStore { path: None, slot: Mutex::new((0, None)) }
    }

    /// A store persisted at `path`, loaded from it when it exists.
    ///
    /// # Errors
    /// The file exists but cannot be read or decoded.
    pub fn with_file(path: impl Into<PathBuf>) -> Result<StaticLeaseStore, LeaseError> {
        let path = path.into();
        let slot = match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| LeaseError::Corrupt(e.to_string()))?;
                (disk.version, Some(disk.record))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, None),
            Err(source) => return Err(LeaseError::File { path, source }),
        };
        Ok(StaticLeaseStore { path: Some(path), slot: Mutex::new(slot) })
    }

    fn persist(&self, version: u64, record: &LeaseRecord) -> Result<(), LeaseError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file_err = |source| LeaseError::File { path: path.clone(), source };
        let bytes = serde_json::to_vec(&OnDisk { version, record: record.clone() })
            .map_err(|e| LeaseError::Corrupt(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
            f.write_all(&bytes).map_err(file_err)?;
            f.sync_all().map_err(file_err)?;
        }
        std::fs::rename(&tmp, path).map_err(file_err)
    }
}

#[async_trait]
impl LeaseStore for StaticLeaseStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        // The lock is only poisoned if a holder panicked; the record itself is still whole.
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slot.1.clone().map(|record| Versioned { record, version: Version(slot.0.to_string()) }))
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let current = slot.1.as_ref().map(|_| Version(slot.0.to_string()));
        if current.as_ref() != expected {
            return Ok(Cas::Conflict);
        }
        let version = slot.0 + 1;
        self.persist(version, record)?;
        *slot = (version, Some(record.clone()));
        Ok(Cas::Written(Version(version.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::lease::LeaseElector;
    use crate::lease::tests::elector_contract;

    #[tokio::test(start_paused = true)]
    async fn elector_contract_in_memory() {
        let store: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::in_memory());
        elector_contract(store).await;
    }

    #[tokio::test]
    async fn epoch_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.json");
        let store: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::with_file(&path).unwrap());
        let mut a = LeaseElector::new(store, "a", Duration::from_secs(6));
        assert!(a.try_acquire().await.unwrap());
        assert!(a.release(None).await.unwrap());
        assert!(a.try_acquire().await.unwrap());
        let reopened: Arc<dyn LeaseStore> = Arc::new(StaticLeaseStore::with_file(&path).unwrap());
        let mut b = LeaseElector::new(reopened, "b", Duration::from_secs(6));
        let view = b.observe().await;
        assert_eq!((view.holder.as_deref(), view.transitions), (Some("a"), 2));
    }
}
