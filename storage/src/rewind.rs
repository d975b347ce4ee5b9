//! Changing the file under a running storage, for replication: cut the history back to a common
//! transaction (an old primary rejoining after a failover), or replace the whole file by a copy of
//! the primary's (a re-seed). Both end by re-reading the file as `open` does and swapping the state
//! readers see, the way pack swaps its packed file in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Result, StorageError};
use super::file::{DataFile, parent_dir, sync_dir};
use super::filestorage::{FileStorage, Shared};
use super::format::{MAGIC, status};
use super::index::{self, Index, Snapshot};
use super::records::{prev_txn_pos, read_txn_header};
use super::recovery;
use super::txn::Tid;
use zeo_proto::{p64, u64_of};

/// What `truncate_after` cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// Transactions removed (tid order).
    pub removed: Vec<Tid>,
    /// New end of the file.
    pub end: u64,
}

/// The durable part of the file as it is now, readable even if a pack or re-seed replaces the
/// file meanwhile (it keeps the old one open). For copying the file to a new standby.
#[derive(Debug)]
pub struct DurableCopy {
    file: Arc<DataFile>,
    pub end: u64,
    pub last_tid: Tid,
}

impl DurableCopy {
    /// `len` bytes at `pos` (within `end`).
    pub fn read_at(&self, pos: u64, len: u64) -> Result<Vec<u8>> {
        self.file.read_vec_at(pos, len.min(self.end.saturating_sub(pos)), self.end)
    }
}

impl FileStorage {
    /// A consistent view of everything durable now.
    pub fn durable_copy(&self) -> DurableCopy {
        let s = self.shared();
        DurableCopy { file: s.file.clone(), end: s.end, last_tid: p64(s.last_tid) }
    }

    /// Position just after the last transaction with tid `<= tid` (4 when there is none), and the
    /// transactions after it, newest first. A walk backwards from the end: cheap when `tid` is recent.
    pub fn position_after(&self, tid: &Tid) -> Result<(u64, Vec<(Tid, u8)>)> {
        let (file, end) = {
            let s = self.shared();
            (s.file.clone(), s.end)
        };
        let tid = u64_of(*tid);
        let mut later = Vec::new();
        let mut pos = end;
        while pos > 4 {
            let tpos = prev_txn_pos(&file, pos)?;
            let th = read_txn_header(&file, tpos, end)?;
            if th.tid <= tid {
                break;
            }
            later.push((p64(th.tid), th.status));
            pos = tpos;
        }
        Ok((pos, later))
    }

    /// Whether a transaction with exactly this tid is in the file.
    pub fn has_transaction(&self, tid: &Tid) -> Result<bool> {
        let (pos, _) = self.position_after(tid)?;
        if pos <= 4 {
            return Ok(false);
        }
        let (file, end) = {
            let s = self.shared();
            (s.file.clone(), s.end)
        };
        let tpos = prev_txn_pos(&file, pos)?;
        Ok(read_txn_header(&file, tpos, end)?.tid == u64_of(*tid))
    }

    /// Cuts every transaction after `tid` off the file, durably, and re-reads it. The caller has
    /// saved what it needs of them first (replication writes them to a side file). Refused while a
    /// transaction is in flight, and when a pack reached past `tid` (the records before it that the
    /// removed transactions superseded may be gone: only a re-seed can repair that).
    pub fn truncate_after(&self, tid: &Tid) -> Result<Truncated> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.sync()?;
        let mut w = self.writer();
        if w.voted.is_some() || !w.pending.is_empty() {
            return Err(StorageError::Transaction("cannot cut the history while a transaction is in flight".into()));
        }
        drop(w);
        let (cut, later) = self.position_after(tid)?;
        if later.iter().any(|(_, st)| *st == status::PACKED) {
            return Err(StorageError::Pack(format!(
                "a pack reached past {}: the history before it is no longer complete",
                hex::encode(tid)
            )));
        }
        w = self.writer();
        if later.is_empty() {
            return Ok(Truncated { removed: Vec::new(), end: cut });
        }
        let file = self.shared().file.clone();
        // Index snapshots may describe what is cut; without them the reload scans the whole file.
        index::remove(&self.path)?;
        index::remove_if_exists(&PathBuf::from(format!("{}.index", self.path.display())))?;
        file.set_len(cut)?;
        file.sync_data()?;
        self.reload_locked(&mut w)?;
        drop(w);
        self.save_index()?;
        let mut removed: Vec<Tid> = later.into_iter().map(|(t, _)| t).collect();
        removed.reverse();
        tracing::warn!(path = %self.path.display(), after = %hex::encode(tid), removed = removed.len(), end = cut,
            "cut transactions off the history");
        Ok(Truncated { removed, end: cut })
    }

    /// Replaces the file by `new_file` (a complete FS30 file, e.g. a copy of the primary's), durably,
    /// and re-reads it. The old file is kept as `Data.fs.before-reseed`.
    pub fn replace_with(&self, new_file: &Path) -> Result<()> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.sync()?;
        let mut w = self.writer();
        if w.voted.is_some() || !w.pending.is_empty() {
            return Err(StorageError::Transaction("cannot replace the file while a transaction is in flight".into()));
        }
        index::remove(&self.path)?;
        index::remove_if_exists(&PathBuf::from(format!("{}.index", self.path.display())))?;
        let old = PathBuf::from(format!("{}.before-reseed", self.path.display()));
        index::remove_if_exists(&old)?;
        std::fs::hard_link(&self.path, &old).map_err(|e| StorageError::io("link", &old, e))?;
        std::fs::rename(new_file, &self.path).map_err(|e| StorageError::io("rename", new_file, e))?;
        sync_dir(&parent_dir(&self.path))?;
        self.reload_locked(&mut w)?;
        drop(w);
        self.save_index()
    }

    /// Re-reads the file as `open` does (index snapshot, scan, crash-tail recovery) and swaps the
    /// state readers see. The writer lock is held by the caller, and nothing is in flight.
    fn reload_locked(&self, w: &mut super::filestorage::Writer) -> Result<()> {
        let raw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StorageError::io("reopen", &self.path, e))?;
        let file = DataFile::new(raw, &self.path, self.faults.clone());
        let len = file.len()?;
        let mut magic = [0u8; 4];
        if len < 4 || file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
            let got = file.read_vec_at(0, len.min(4), len).unwrap_or_default();
            return Err(StorageError::BadMagic { path: self.path.clone(), magic: got });
        }
        let Snapshot { pos, last_tid, mut index } =
            index::load(&self.path, &file, len).unwrap_or(Snapshot { pos: 4, last_tid: 0, index: Index::new() });
        let end = recovery::scan(&file, &self.path, pos, last_tid, &mut index, false)?;
        if let Some(max) = index.last_oid() {
            self.oids.lock().expect("oid allocator lock poisoned").saw(max);
        }
        let mut s = self.shared.write().expect("storage state lock poisoned");
        let capacity = s.cache.capacity();
        *s = Shared {
            file: Arc::new(file),
            index,
            end: end.end,
            last_tid: end.last_tid,
            durable_seq: s.durable_seq,
            cache: Arc::new(super::cache::RecordCache::new(capacity)),
            lost_seqs: std::mem::take(&mut s.lost_seqs),
        };
        w.pos = end.end;
        w.last_tid = end.last_tid;
        w.overlay.clear();
        Ok(())
    }
}
