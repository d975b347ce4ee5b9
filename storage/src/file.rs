//! The I/O seam: every read, write, truncate and fsync of the data file goes through `DataFile`, so
//! tests can inject the failures a real disk produces (ENOSPC, EIO, a failed fsync) at exact points.
//!
//! Reads use positional I/O (`pread`), so many reader threads share one descriptor without seeking.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::error::{Result, StorageError};

/// Failure injection for tests: each counter counts down on every call of its kind and, when it goes
/// from 1 to 0, that call fails with the configured errno. Negative means disarmed.
#[derive(Debug)]
pub struct Faults {
    write_countdown: AtomicI64,
    sync_countdown: AtomicI64,
    errno: AtomicI64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { write_countdown: AtomicI64::new(-1), sync_countdown: AtomicI64::new(-1), errno: AtomicI64::new(5) }
    }
}

impl Faults {
    /// Fails the `n`-th next write (1 = the very next one) with `errno` (e.g. 28 ENOSPC, 5 EIO).
    pub fn fail_write(&self, n: i64, errno: i32) {
        self.errno.store(i64::from(errno), Ordering::SeqCst);
        self.write_countdown.store(n, Ordering::SeqCst);
    }

    /// Fails the `n`-th next fsync with `errno`.
    pub fn fail_sync(&self, n: i64, errno: i32) {
        self.errno.store(i64::from(errno), Ordering::SeqCst);
        self.sync_countdown.store(n, Ordering::SeqCst);
    }

    fn check(&self, counter: &AtomicI64) -> io::Result<()> {
        if counter.load(Ordering::SeqCst) < 0 {
            return Ok(());
        }
        if counter.fetch_sub(1, Ordering::SeqCst) == 1 {
            let errno = i32::try_from(self.errno.load(Ordering::SeqCst)).unwrap_or(5);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }
}

/// An open data file.
#[derive(Debug)]
pub struct DataFile {
    file: File,
    path: PathBuf,
    faults: Option<Arc<Faults>>,
}

impl DataFile {
    pub fn new(file: File, path: &Path, faults: Option<Arc<Faults>>) -> Self {
        DataFile { file, path: path.to_path_buf(), faults }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current length of the file on disk.
    pub fn len(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| StorageError::io("stat", &self.path, e))
    }

    /// Reads exactly `buf.len()` bytes at `pos`. A short read is `UnexpectedEof`.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.file.read_exact_at(buf, pos).map_err(|e| StorageError::io("read", &self.path, e))
    }

    /// Reads `len` bytes at `pos` into a new vector, refusing lengths beyond the end of the file so a
    /// corrupt length can never cause a huge allocation.
    pub fn read_vec_at(&self, pos: u64, len: u64, file_end: u64) -> Result<Vec<u8>> {
        if pos.checked_add(len).is_none_or(|end| end > file_end) {
            return Err(StorageError::corrupted(
                &self.path,
                pos,
                format!("a {len}-byte read runs past the end ({file_end})"),
            ));
        }
        let mut buf =
            vec![0u8; usize::try_from(len).map_err(|_| StorageError::corrupted(&self.path, pos, "length overflow"))?];
        self.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// Writes all of `buf` at `pos`.
    pub fn write_all_at(&self, buf: &[u8], pos: u64) -> Result<()> {
        if let Some(f) = &self.faults {
            f.check(&f.write_countdown).map_err(|e| StorageError::io("write", &self.path, e))?;
        }
        self.file.write_all_at(buf, pos).map_err(|e| StorageError::io("write", &self.path, e))
    }

    /// Truncates (or extends) the file to `len`.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| StorageError::io("truncate", &self.path, e))
    }

    /// fdatasync: data and the metadata needed to read it back (the file size) reach stable storage.
    pub fn sync_data(&self) -> Result<()> {
        if let Some(f) = &self.faults {
            f.check(&f.sync_countdown).map_err(|e| StorageError::io("fsync", &self.path, e))?;
        }
        self.file.sync_data().map_err(|e| StorageError::io("fsync", &self.path, e))
    }
}

/// fsyncs a directory, so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| StorageError::io("open directory", dir, e))?;
    d.sync_all().map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = AtomicWrite::create(path)?;
    w.write_all(bytes)?;
    w.commit()
}

/// A file written in pieces and then made to replace `path` atomically, for contents too large to
/// assemble in memory first (the index snapshot). Dropped without `commit`, it removes its
/// temporary file and leaves `path` alone.
pub struct AtomicWrite {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicWrite {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
        let file = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        Ok(AtomicWrite { file: Some(file), tmp, path: path.to_path_buf() })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let f = self.file.as_mut().expect("written after commit");
        f.write_all(bytes).map_err(|e| StorageError::io("write", &self.tmp, e))
    }

    /// fsync, rename over `path`, fsync of the directory.
    pub fn commit(mut self) -> Result<()> {
        let f = self.file.take().expect("committed once");
        f.sync_all().map_err(|e| StorageError::io("fsync", &self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| StorageError::io("rename", &self.path, e))?;
        sync_dir(&parent_dir(&self.path))
    }
}

impl Drop for AtomicWrite {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_once_at_the_chosen_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let faults = Arc::new(Faults::default());
        let f = DataFile::new(File::create(&path).unwrap(), &path, Some(faults.clone()));
        faults.fail_write(2, 28);
        f.write_all_at(b"a", 0).unwrap();
        let err = f.write_all_at(b"b", 1).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        f.write_all_at(b"c", 1).unwrap();
        faults.fail_sync(1, 5);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }

    #[test]
    fn read_vec_refuses_lengths_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcd").unwrap();
        let f = DataFile::new(File::open(&path).unwrap(), &path, None);
        assert_eq!(f.read_vec_at(1, 2, 4).unwrap(), b"bc");
        assert!(f.read_vec_at(1, u64::MAX, 4).is_err());
    }
}
