//! A lease in a local file shared by supervisors on one host (the loopback pair of the README):
//! the record plus a version number, replaced by compare-and-swap. Each read-compare-write runs
//! under an exclusive `flock` of `FILE.lock`, and the record is replaced atomically (temporary
//! file, fsync, rename), so a supervisor killed mid-write leaves the previous record. Unlike the
//! static store, several processes may share it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u64,
    record: LeaseRecord,
}

/// The lease file.
#[derive(Debug, Clone)]
pub struct FileLeaseStore {
    path: PathBuf,
}

impl FileLeaseStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileLeaseStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: std::io::Error) -> LeaseError {
        LeaseError::File { path: self.path.clone(), source }
    }

    /// Holds the file's lock for one read-compare-write.
    fn locked(&self) -> Result<File, LeaseError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(|e| self.err(e))?;
        lock.lock().map_err(|e| self.err(e))?;
        Ok(lock)
    }

    fn read(&self) -> Result<Option<Stored>, LeaseError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| LeaseError::Corrupt(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn get_blocking(&self) -> Result<Option<Versioned>, LeaseError> {
        let _lock = self.locked()?;
        Ok(self.read()?.map(|s| Versioned { record: s.record, version: Version(s.version.to_string()) }))
    }

    fn cas_blocking(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let _lock = self.locked()?;
        let current = self.read()?.map(|s| s.version.to_string());
        if current.as_deref() != expected.map(|v| v.0.as_str()) {
            return Ok(Cas::Conflict);
        }
        let version = current.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
        let bytes = serde_json::to_vec_pretty(&Stored { version, record: record.clone() })
            .map_err(|e| LeaseError::Corrupt(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.err(e))?;
        Ok(Cas::Written(Version(version.to_string())))
    }
}

#[async_trait]
impl LeaseStore for FileLeaseStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.get_blocking()).await.map_err(|e| LeaseError::backend("file", e))?
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let (me, expected, record) = (self.clone(), expected.cloned(), record.clone());
        tokio::task::spawn_blocking(move || me.cas_blocking(expected.as_ref(), &record))
            .await
            .map_err(|e| LeaseError::backend("file", e))?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rec(holder: &str, transitions: u64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            preferred_holder: None,
            acquire_time: None,
            renew_time: None,
            lease_duration: Duration::from_secs(6),
            transitions,
            out_of_sync: Vec::new(),
            promotion_failed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn elector_contract_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        crate::lease::tests::elector_contract(std::sync::Arc::new(FileLeaseStore::new(dir.path().join("lease.json"))))
            .await;
    }

    #[tokio::test]
    async fn concurrent_writers_in_separate_handles_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.json");
        let first = FileLeaseStore::new(&path);
        assert!(first.get().await.unwrap().is_none());
        assert!(matches!(first.compare_and_swap(None, &rec("a", 1)).await.unwrap(), Cas::Written(_)));
        assert_eq!(first.compare_and_swap(None, &rec("b", 1)).await.unwrap(), Cas::Conflict);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = FileLeaseStore::new(&path);
            tasks.push(tokio::spawn(async move {
                let mut wins = 0u64;
                for _ in 0..25 {
                    let cur = store.get().await.unwrap().unwrap();
                    if let Cas::Written(_) =
                        store.compare_and_swap(Some(&cur.version), &rec(&format!("t{i}"), 2)).await.unwrap()
                    {
                        wins += 1;
                    }
                }
                wins
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap();
        }
        let now = first.get().await.unwrap().unwrap();
        assert_eq!(now.version.0, (1 + wins).to_string(), "every win bumped the version exactly once");
    }
}
