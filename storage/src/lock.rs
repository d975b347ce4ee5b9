//! The writer lock: `Data.fs.lock`, taken with `flock` exactly as zc.lockfile does (and holding
//! " <pid>\n"), so zeo-rs and Python's FileStorage also exclude each other.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};

/// How long a lock that names this process may take to go away (see `acquire`).
const SELF_HELD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Holds the lock until dropped (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock for the storage at `data_path`, or fails naming the holder's pid.
    pub fn acquire(data_path: &Path) -> Result<Self> {
        let path = PathBuf::from(format!("{}.lock", data_path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open lock file", &path, e))?;
        // A lock "held by this very process" right after we released it is the work of a child
        // process forked by another thread: until it execs, it shares our descriptors (close-on-
        // exec or not), and with them the flock. Such a holder goes away within milliseconds.
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut holder));
                    let holder = holder.trim().to_owned();
                    if holder == std::process::id().to_string() && started.elapsed() < SELF_HELD_GRACE {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                    return Err(StorageError::Locked {
                        path: data_path.to_path_buf(),
                        holder: if holder.is_empty() { "unknown".into() } else { holder },
                    });
                }
                Err(TryLockError::Error(e)) => return Err(StorageError::io("lock", &path, e)),
            }
        }
        let content = format!(" {}\n", std::process::id());
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(content.as_bytes()))
            .and_then(|_| file.set_len(content.len() as u64))
            .map_err(|e| StorageError::io("write lock file", &path, e))?;
        Ok(LockFile { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        let first = LockFile::acquire(&data).unwrap();
        let err = LockFile::acquire(&data).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        LockFile::acquire(&data).unwrap();
    }

    /// Reopening right after closing must work even while other threads fork children (which
    /// briefly share the lock's descriptor): the model test once failed this way.
    #[test]
    fn reacquire_while_other_threads_spawn_processes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::process::Command::new("true").status();
                }
            })
        };
        for _ in 0..300 {
            drop(LockFile::acquire(&data).unwrap());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spawner.join().unwrap();
    }
}
