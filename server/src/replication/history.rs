//! The history digest: a hash chain over every transaction, kept beside the data in
//! `Data.fs.rschain` as fixed 40-byte entries `(tid, chain digest)` in tid order.
//!
//! `chain(n) = sha256(chain(n-1) || digest(txn n))`, with `chain(0)` all zeros. Two servers hold
//! the same history up to tid T exactly when their entries for T are equal, which makes the
//! replication handshake a prefix check (zc.zrs had none) and finding the last common transaction
//! a binary search. A transaction's digest covers its logical content (tid, user, description,
//! extension, each record's oid and data, backpointers resolved), not its status or file
//! positions, so a restored copy and a packed file digest the same.
//!
//! The file is written without fsync: it is derived from Data.fs, and `open` repairs it (cuts
//! entries past the data, recomputes missing ones), so it never needs to be durable on its own.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::storage::{FileStorage, StorageError, Tid, TransactionRecord};

/// A chain value.
pub type Digest = [u8; 32];

const MAGIC: &[u8; 8] = b"ZRSCHN01";
const HEADER: u64 = 8;
const ENTRY: u64 = 40;

/// The digest of one transaction's content.
pub fn txn_digest(t: &TransactionRecord) -> Digest {
    let mut h = Sha256::new();
    h.update(b"zeo-rs txn v1");
    h.update(t.tid);
    for part in [&t.user, &t.description, &t.extension] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update((t.records.len() as u64).to_be_bytes());
    for r in &t.records {
        h.update(r.oid);
        h.update(r.tid);
        match &r.data {
            Some(d) => {
                h.update([1]);
                h.update((d.len() as u64).to_be_bytes());
                h.update(d);
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

/// The chain value after `prev` for a transaction with digest `txn`.
pub fn chain_next(prev: &Digest, txn: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(txn);
    h.finalize().into()
}

/// The open chain file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    file: File,
    count: u64,
    last: (Tid, Digest),
}

type Result<T> = std::result::Result<T, StorageError>;

impl History {
    /// `Data.fs.rschain` beside `data_path`.
    pub fn path_for(data_path: &Path) -> PathBuf {
        PathBuf::from(format!("{}.rschain", data_path.display()))
    }

    /// Opens (or creates) the chain of `fs` and brings it in line with the data: entries past the
    /// last transaction are cut, missing ones computed from the file. A chain whose last entry is not
    /// a transaction of this file (the file was replaced) is rebuilt from scratch.
    pub fn open(fs: &FileStorage) -> Result<History> {
        let path = Self::path_for(fs.path());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let len = file.metadata().map_err(|e| StorageError::io("stat", &path, e))?.len();
        let mut h = History { path, file, count: 0, last: ([0; 8], [0; 32]) };
        let mut magic = [0u8; 8];
        let valid = len >= HEADER && h.file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC;
        if !valid {
            h.reset()?;
        } else {
            h.count = (len - HEADER) / ENTRY;
            h.cut_to(h.count)?;
        }
        let last_tid = fs.last_transaction();
        // Entries for transactions the file no longer has (a cut tail, a rewind done elsewhere).
        if h.count > 0 && h.last.0 > last_tid {
            let keep = h.position_after(&last_tid)?;
            h.cut_to(keep)?;
        }
        if h.count > 0 && !fs.has_transaction(&h.last.0)? {
            tracing::warn!(path = %h.path.display(), "history digests do not match the data file; recomputing them");
            h.reset()?;
        }
        let start = (h.count > 0).then_some(h.last.0);
        let mut added = 0u64;
        for t in fs.iterator(start.as_ref(), None)? {
            let t = t?;
            if start.is_some_and(|s| t.tid <= s) {
                continue;
            }
            let d = chain_next(&h.last.1, &txn_digest(&t));
            h.append(t.tid, d)?;
            added += 1;
        }
        if added > 0 {
            tracing::info!(path = %h.path.display(), added, "history digests brought up to date");
        }
        Ok(h)
    }

    fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(|e| StorageError::io("truncate", &self.path, e))?;
        self.file.write_all_at(MAGIC, 0).map_err(|e| StorageError::io("write", &self.path, e))?;
        self.count = 0;
        self.last = ([0; 8], [0; 32]);
        Ok(())
    }

    /// Keeps the first `n` entries.
    fn cut_to(&mut self, n: u64) -> Result<()> {
        self.file.set_len(HEADER + n * ENTRY).map_err(|e| StorageError::io("truncate", &self.path, e))?;
        self.count = n;
        self.last = if n == 0 { ([0; 8], [0; 32]) } else { self.entry(n - 1)? };
        Ok(())
    }

    fn entry(&self, i: u64) -> Result<(Tid, Digest)> {
        let mut b = [0u8; ENTRY as usize];
        self.file.read_exact_at(&mut b, HEADER + i * ENTRY).map_err(|e| StorageError::io("read", &self.path, e))?;
        let mut tid = [0u8; 8];
        tid.copy_from_slice(&b[..8]);
        let mut d = [0u8; 32];
        d.copy_from_slice(&b[8..]);
        Ok((tid, d))
    }

    /// Number of entries whose tid is `<= tid`.
    fn position_after(&self, tid: &Tid) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 <= *tid {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Appends the entry of a newly committed (or applied) transaction.
    pub fn append(&mut self, tid: Tid, digest: Digest) -> Result<()> {
        if self.count > 0 && tid <= self.last.0 {
            return Err(StorageError::TidNotIncreasing { given: tid, last: self.last.0 });
        }
        let mut b = [0u8; ENTRY as usize];
        b[..8].copy_from_slice(&tid);
        b[8..].copy_from_slice(&digest);
        self.file
            .write_all_at(&b, HEADER + self.count * ENTRY)
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        self.count += 1;
        self.last = (tid, digest);
        Ok(())
    }

    /// The last entry (`(z64, zeros)` when empty).
    pub fn last(&self) -> (Tid, Digest) {
        self.last
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The chain value at `tid`, if `tid` is one of our transactions (z64: the empty history).
    pub fn digest_at(&self, tid: &Tid) -> Result<Option<Digest>> {
        if *tid == [0; 8] {
            return Ok(Some([0; 32]));
        }
        let n = self.position_after(tid)?;
        if n == 0 {
            return Ok(None);
        }
        let (t, d) = self.entry(n - 1)?;
        Ok((t == *tid).then_some(d))
    }

    /// Number of transactions after `tid`.
    pub fn count_after(&self, tid: &Tid) -> Result<u64> {
        Ok(self.count - self.position_after(tid)?)
    }

    /// The `i`-th entry (0-based), for the binary search of a common point.
    pub fn get(&self, i: u64) -> Result<(Tid, Digest)> {
        self.entry(i)
    }

    /// Drops the entries after `tid` (after the data file was cut there).
    pub fn truncate_after(&mut self, tid: &Tid) -> Result<()> {
        let keep = self.position_after(tid)?;
        self.cut_to(keep)
    }

    /// The raw file, up to the entry of `tid` included, for seeding a standby.
    pub fn raw_through(&self, tid: &Tid) -> Result<Vec<u8>> {
        let n = self.position_after(tid)?;
        let mut b = vec![0u8; usize::try_from(HEADER + n * ENTRY).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut b, 0).map_err(|e| StorageError::io("read", &self.path, e))?;
        Ok(b)
    }

    /// Replaces the chain by `raw` (from `raw_through` on the primary), after a re-seed.
    pub fn replace(&mut self, raw: &[u8]) -> Result<()> {
        if raw.len() < HEADER as usize || &raw[..8] != MAGIC || !(raw.len() as u64 - HEADER).is_multiple_of(ENTRY) {
            return Err(StorageError::corrupted(&self.path, 0, "bad history digests from the primary"));
        }
        self.file.set_len(0).map_err(|e| StorageError::io("truncate", &self.path, e))?;
        self.file.write_all_at(raw, 0).map_err(|e| StorageError::io("write", &self.path, e))?;
        self.count = (raw.len() as u64 - HEADER) / ENTRY;
        self.cut_to(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{OpenOptions as FsOpen, Transaction, TxnMeta};

    fn commit(fs: &FileStorage, oid: u8, data: &[u8]) -> Tid {
        let mut t = Transaction::begin(TxnMeta::new("u", "d", "")).unwrap();
        let o = [0, 0, 0, 0, 0, 0, 0, oid];
        let serial = fs.load(&o).map(|(_, s)| s).unwrap_or([0; 8]);
        t.store(o, serial, data.to_vec()).unwrap();
        fs.vote(&mut t).unwrap();
        fs.tpc_finish(&mut t).unwrap()
    }

    #[test]
    fn chain_follows_the_file_and_repairs_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let fs = FileStorage::open(&path, FsOpen { create: true, ..Default::default() }).unwrap();
        let tids: Vec<Tid> = (0..5u8).map(|i| commit(&fs, i % 2, &[i; 10])).collect();
        let h = History::open(&fs).unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(h.last().0, tids[4]);
        let d2 = h.digest_at(&tids[2]).unwrap().unwrap();
        assert_eq!(h.digest_at(&[0, 0, 0, 0, 0, 0, 0, 1]).unwrap(), None);
        drop(h);

        // Missing entries are computed; the earlier ones are unchanged.
        let t5 = commit(&fs, 3, b"x");
        let mut h = History::open(&fs).unwrap();
        assert_eq!((h.len(), h.last().0), (6, t5));
        assert_eq!(h.digest_at(&tids[2]).unwrap(), Some(d2));

        // Cutting the data cuts the chain at the next open; the digests of the prefix stay.
        let cut = fs.truncate_after(&tids[2]).unwrap();
        assert_eq!(cut.removed, vec![tids[3], tids[4], t5]);
        h.truncate_after(&tids[2]).unwrap();
        assert_eq!(h.last(), (tids[2], d2));
        drop(h);
        let h = History::open(&fs).unwrap();
        assert_eq!(h.last(), (tids[2], d2));
    }

    #[test]
    fn same_content_same_chain_different_content_differs() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStorage::open(dir.path().join("a.fs"), FsOpen { create: true, ..Default::default() }).unwrap();
        let b = FileStorage::open(dir.path().join("b.fs"), FsOpen { create: true, ..Default::default() }).unwrap();
        // Copy a's transactions into b with the same tids (what a standby does).
        commit(&a, 1, b"one");
        commit(&a, 1, b"two");
        for t in a.iterator(None, None).unwrap() {
            let t = t.unwrap();
            let mut meta = TxnMeta::new(t.user.clone(), t.description.clone(), t.extension.clone());
            meta.tid = Some(t.tid);
            let mut txn = Transaction::begin(meta).unwrap();
            for r in &t.records {
                txn.restore(r.oid, r.tid, r.data.clone(), r.data_txn).unwrap();
            }
            b.vote(&mut txn).unwrap();
            b.tpc_finish(&mut txn).unwrap();
        }
        let (ha, hb) = (History::open(&a).unwrap(), History::open(&b).unwrap());
        assert_eq!(ha.last(), hb.last());
        commit(&a, 1, b"three-a");
        commit(&b, 1, b"three-b");
        let (ha, hb) = (History::open(&a).unwrap(), History::open(&b).unwrap());
        assert_ne!(ha.last().1, hb.last().1);
    }
}
