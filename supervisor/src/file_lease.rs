//! A lease in a local file, for supervisors that share one host (the loopback HA pair): the same
//! record a Kubernetes Lease holds, replaced by compare-and-swap on a version number. Every
//! read-compare-write happens under an exclusive `flock` of `FILE.lock`, and the record is
//! replaced atomically (temporary file, fsync, rename), so a supervisor killed mid-write leaves
//! the previous record. Expiry is not decided here: observers judge it on their own monotonic
//! clocks from when they saw the record change, as with every other backend.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lease record (the fields of `coordination.k8s.io/v1` Lease, plus the planned successor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLeaseRecord {
    pub holder: Option<String>,
    /// Named by a holder that released the lease for a planned switchover.
    #[serde(default)]
    pub preferred_holder: Option<String>,
    pub lease_duration_ms: u64,
    /// Wall-clock times, for operators only: nobody's expiry depends on them.
    pub acquire_time_unix_ms: u64,
    pub renew_time_unix_ms: u64,
    /// Holder changes: the epoch a new holder promotes its server at.
    pub transitions: u64,
    /// Bumped by every successful write: the compare-and-swap token.
    pub version: u64,
}

/// Why an operation on the lease file failed.
#[derive(Debug, thiserror::Error)]
pub enum FileLeaseError {
    #[error("lease file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease file {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

/// The lease file.
#[derive(Debug, Clone)]
pub struct FileLease {
    path: PathBuf,
}

impl FileLease {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileLease { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> FileLeaseError {
        FileLeaseError::Io { path: self.path.clone(), source }
    }

    /// Holds the file's lock for one read-compare-write.
    fn locked(&self) -> Result<File, FileLeaseError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        Ok(lock)
    }

    fn read_unlocked(&self) -> Result<Option<FileLeaseRecord>, FileLeaseError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| FileLeaseError::Damaged { path: self.path.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The current record (`None`: nobody ever took the lease).
    ///
    /// # Errors
    /// I/O errors, or a record that does not parse.
    pub fn get(&self) -> Result<Option<FileLeaseRecord>, FileLeaseError> {
        let _lock = self.locked()?;
        self.read_unlocked()
    }

    /// Replaces the record if its version is still `expected` (`None`: there is no record yet).
    /// Returns the record written (version bumped), or `None` when someone else wrote first.
    ///
    /// # Errors
    /// I/O errors, or a record that does not parse.
    pub fn compare_and_swap(
        &self,
        expected: Option<u64>,
        mut next: FileLeaseRecord,
    ) -> Result<Option<FileLeaseRecord>, FileLeaseError> {
        let _lock = self.locked()?;
        let current = self.read_unlocked()?;
        if current.as_ref().map(|r| r.version) != expected {
            return Ok(None);
        }
        next.version = expected.unwrap_or(0) + 1;
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&next).expect("the record serializes");
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
        write().map_err(|e| self.io(e))?;
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_admits_one_writer_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let lease = FileLease::new(dir.path().join("lease.json"));
        assert_eq!(lease.get().unwrap(), None);
        let mine = FileLeaseRecord { holder: Some("a".into()), lease_duration_ms: 6000, ..Default::default() };
        let written = lease.compare_and_swap(None, mine.clone()).unwrap().unwrap();
        assert_eq!(written.version, 1);
        assert!(lease.compare_and_swap(None, mine.clone()).unwrap().is_none(), "a record exists now");
        // Two contenders read version 1; only the first swap wins.
        let theirs = FileLeaseRecord { holder: Some("b".into()), transitions: 1, ..mine.clone() };
        assert!(lease.compare_and_swap(Some(1), theirs.clone()).unwrap().is_some());
        assert!(lease.compare_and_swap(Some(1), mine).unwrap().is_none());
        let now = lease.get().unwrap().unwrap();
        assert_eq!((now.holder.as_deref(), now.transitions, now.version), (Some("b"), 1, 2));
    }

    #[test]
    fn concurrent_contenders_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.json");
        FileLease::new(&path).compare_and_swap(None, FileLeaseRecord::default()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let lease = FileLease::new(&path);
                std::thread::spawn(move || {
                    let mut wins = 0;
                    for _ in 0..50 {
                        let cur = lease.get().unwrap().unwrap();
                        let next = FileLeaseRecord { holder: Some(format!("t{i}")), ..cur.clone() };
                        if lease.compare_and_swap(Some(cur.version), next).unwrap().is_some() {
                            wins += 1;
                        }
                    }
                    wins
                })
            })
            .collect();
        let wins: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // Every successful swap bumped the version exactly once.
        assert_eq!(FileLease::new(&path).get().unwrap().unwrap().version, 1 + wins);
    }
}
