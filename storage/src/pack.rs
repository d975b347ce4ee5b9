//! Pack with garbage collection, with FileStorage's semantics (ZODB's `fspack`):
//!
//! - keep every revision current at the pack time and reachable from the root (z64), every revision
//!   after the pack time, and the revisions those later backpointers need (and what *they* reach);
//! - transactions before the pack time keep only those records, with data copied inline (no
//!   backpointers, no prev chain) and status 'p'; transactions left empty disappear;
//! - transactions after the pack time are copied whole, backpointers rewritten to the new positions.
//!
//! Commits continue while the bulk is copied from a snapshot of the file; they pause only while the
//! transactions committed meanwhile are copied and the files are swapped. The swap is crash-safe: the
//! new file is fsynced, the index snapshots are removed, the current file is hard-linked to
//! `Data.fs.old` (kept, as FileStorage keeps it), and `Data.fs.pack` is renamed over `Data.fs`. At
//! every instant `Data.fs` is either the old or the new, complete file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::error::{Result, StorageError};
use super::file::{DataFile, parent_dir, sync_dir};
use super::filestorage::FileStorage;
use super::format::{DATA_HEADER_LEN, DataHeader, MAGIC, RecordBody, TxnWriter, status};
use super::index::{self, Index};
use super::records::{
    data_find, next_record, read_any_data_header, read_backpointer, read_txn_header, read_txn_meta, record_data,
};
use super::txn::{Oid, Tid};
use zeo_proto::p64;

/// What a pack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// False when there was nothing to do (empty, already packed, or nothing to free).
    pub packed: bool,
    pub old_size: u64,
    pub new_size: u64,
    /// Data records dropped.
    pub records_removed: u64,
    /// Dropped revisions whose data is a blob record (their blob files can be removed).
    pub removed_blob_revisions: Vec<(Oid, Tid)>,
}

/// oid-keyed maps are `Index`es (8 bytes per object, not a `HashMap`'s ~30 with its growth
/// spikes): at 10M objects the maps were most of a pack's peak memory.
struct Gc {
    packpos: u64,
    reachable: Index,
    reach_ex: HashMap<u64, Vec<u64>>,
}

impl Gc {
    fn is_reachable(&self, oid: u64, pos: u64) -> bool {
        match self.reachable.get(oid) {
            None => false,
            Some(p) if p == pos => true,
            Some(_) => self.reach_ex.get(&oid).is_some_and(|l| l.contains(&pos)),
        }
    }
}

/// The file being written.
struct Out {
    file: DataFile,
    pos: u64,
    index: Index,
    /// tid → position of each copied transaction (tids rise, so this only appends).
    txn_pos: Index,
}

impl FileStorage {
    /// Packs to `pack_tid` (records current at that tid are kept), with or without GC.
    pub fn pack(&self, pack_tid: &Tid, gc: bool) -> Result<PackStats> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let packtime = u64::from_be_bytes(*pack_tid);
        if packtime == 0 {
            return Err(StorageError::Pack("Invalid pack time".into()));
        }
        if self.packing.swap(true, Ordering::SeqCst) {
            return Err(StorageError::Pack("Already packing".into()));
        }
        let result = self.pack_inner(packtime, gc);
        self.packing.store(false, Ordering::SeqCst);
        result
    }

    fn pack_inner(&self, packtime: u64, gc: bool) -> Result<PackStats> {
        let (file, snap_end, empty) = {
            let s = self.shared();
            (s.file.clone(), s.end, s.index.is_empty())
        };
        let mut stats = PackStats { old_size: snap_end, new_size: snap_end, ..Default::default() };
        if empty {
            return Ok(stats);
        }
        let Some(gcs) = find_reachable(&file, snap_end, packtime, gc)? else {
            tracing::info!(path = %self.path.display(), "already packed to a later time, or nothing changed since");
            return Ok(stats);
        };
        let pack_path = PathBuf::from(format!("{}.pack", self.path.display()));
        let raw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&pack_path)
            .map_err(|e| StorageError::io("create", &pack_path, e))?;
        let mut out = Out {
            file: DataFile::new(raw, &pack_path, self.faults.clone()),
            pos: 4,
            index: Index::new(),
            txn_pos: Index::new(),
        };
        let copied = (|| -> Result<bool> {
            out.file.write_all_at(MAGIC, 0)?;
            copy_to_packtime(&file, &gcs, &mut out, &mut stats)?;
            if out.pos == gcs.packpos {
                return Ok(false);
            }
            copy_rest(&file, gcs.packpos, snap_end, &mut out)?;
            Ok(true)
        })();
        // The reachability maps are as large as the index; free them before the swap and the
        // snapshot write, which are the pack's peak.
        drop(gcs);
        match copied {
            Ok(true) => {}
            other => {
                let _ = std::fs::remove_file(&pack_path);
                other?;
                tracing::info!(path = %self.path.display(), "pack would free nothing; file left as it is");
                stats.removed_blob_revisions.clear();
                stats.records_removed = 0;
                return Ok(stats);
            }
        }
        // Final phase: no commit in flight, copy what was committed meanwhile, swap.
        let mut w = loop {
            self.sync()?;
            let w = self.writer();
            if w.voted.is_none() && w.pending.is_empty() {
                break w;
            }
            drop(w);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if w.poisoned {
            let _ = std::fs::remove_file(&pack_path);
            return Err(StorageError::Poisoned);
        }
        let swap = (|| -> Result<()> {
            copy_rest(&file, snap_end, w.pos, &mut out)?;
            out.file.sync_data()?;
            index::remove(&self.path)?;
            index::remove_if_exists(&PathBuf::from(format!("{}.index", self.path.display())))?;
            let old = PathBuf::from(format!("{}.old", self.path.display()));
            index::remove_if_exists(&old)?;
            std::fs::hard_link(&self.path, &old).map_err(|e| StorageError::io("link", &old, e))?;
            std::fs::rename(&pack_path, &self.path).map_err(|e| StorageError::io("rename", &pack_path, e))?;
            sync_dir(&parent_dir(&self.path))
        })();
        if let Err(e) = swap {
            let _ = std::fs::remove_file(&pack_path);
            return Err(e);
        }
        let new_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StorageError::io("reopen", &self.path, e))?;
        {
            let mut s = self.shared.write().expect("storage state lock poisoned");
            s.file = Arc::new(DataFile::new(new_file, &self.path, self.faults.clone()));
            s.cache = Arc::new(super::cache::RecordCache::new(s.cache.capacity()));
            s.index = std::mem::take(&mut out.index);
            s.end = out.pos;
            w.pos = out.pos;
            w.overlay.clear();
        }
        drop(w);
        stats.packed = true;
        stats.new_size = out.pos;
        self.save_index()?;
        tracing::info!(path = %self.path.display(), old_size = stats.old_size, new_size = stats.new_size,
            records_removed = stats.records_removed, "packed");
        Ok(stats)
    }
}

/// GC: which revisions survive. `None` for a redundant pack.
fn find_reachable(file: &DataFile, eof: u64, packtime: u64, gc: bool) -> Result<Option<Gc>> {
    let mut oid2curpos = Index::new();
    let mut pos = 4;
    let mut unpacked = false;
    let mut ltid = 0;
    while pos < eof {
        let th = read_txn_header(file, pos, eof)?;
        if th.tid > packtime {
            break;
        }
        check_txn(file, pos, th.tid, th.status, &mut ltid)?;
        if th.status != status::PACKED {
            unpacked = true;
        }
        for_each_record(file, pos, th.header_len(), th.tlen, eof, |rpos, h, back| {
            if h.plen > 0 || back != 0 {
                oid2curpos.insert(h.oid, rpos);
            } else {
                oid2curpos.remove(h.oid);
            }
        })?;
        pos += th.tlen + 8;
    }
    let packpos = pos;
    if !unpacked && packpos < eof && read_txn_header(file, packpos, eof)?.status == status::PACKED {
        return Ok(None);
    }
    if !gc {
        return Ok(Some(Gc { packpos, reachable: oid2curpos, reach_ex: HashMap::new() }));
    }
    let mut g = Gc { packpos, reachable: Index::new(), reach_ex: HashMap::new() };
    mark(file, eof, &oid2curpos, &mut g.reachable, vec![0])?;
    // Backpointers after the pack time to revisions before it keep those revisions (and what they
    // reference) alive.
    let mut extra_roots = Vec::new();
    let mut pos = packpos;
    while pos < eof {
        let th = read_txn_header(file, pos, eof)?;
        check_txn(file, pos, th.tid, th.status, &mut ltid)?;
        let mut backs = Vec::new();
        for_each_record(file, pos, th.header_len(), th.tlen, eof, |_, h, back| {
            if back != 0 && back < packpos {
                backs.push((h.oid, back));
            }
        })?;
        for (oid, back) in backs {
            if g.reachable.get(oid).is_some() {
                let l = g.reach_ex.entry(oid).or_default();
                if !l.contains(&back) {
                    l.push(back);
                    extra_roots.push(back);
                }
            } else {
                g.reachable.insert(oid, back);
            }
        }
        pos += th.tlen + 8;
    }
    for rpos in extra_roots {
        let refs = find_refs(file, eof, rpos)?;
        mark(file, eof, &oid2curpos, &mut g.reachable, refs)?;
    }
    Ok(Some(g))
}

fn check_txn(file: &DataFile, pos: u64, tid: u64, st: u8, ltid: &mut u64) -> Result<()> {
    if tid <= *ltid {
        return Err(StorageError::corrupted(file.path(), pos, "time-stamp reduction; refusing to pack"));
    }
    if st == status::CHECKPOINT {
        return Err(StorageError::corrupted(file.path(), pos, "transaction with checkpoint flag set"));
    }
    *ltid = tid;
    Ok(())
}

fn mark(file: &DataFile, eof: u64, oid2curpos: &Index, reachable: &mut Index, roots: Vec<u64>) -> Result<()> {
    let mut todo = roots;
    while let Some(oid) = todo.pop() {
        if reachable.get(oid).is_some() {
            continue;
        }
        let Some(pos) = oid2curpos.get(oid) else {
            if oid == 0 && oid2curpos.is_empty() {
                continue; // packing to before the root existed
            }
            return Err(StorageError::PackMissingObject { oid: oid.to_be_bytes() });
        };
        reachable.insert(oid, pos);
        for r in find_refs(file, eof, pos)? {
            if reachable.get(r).is_none() {
                todo.push(r);
            }
        }
    }
    Ok(())
}

/// Oids referenced by the revision at `pos` (through backpointers). Data that is not a ZODB pickle
/// references nothing.
fn find_refs(file: &DataFile, eof: u64, mut pos: u64) -> Result<Vec<u64>> {
    loop {
        let h = read_any_data_header(file, pos, eof)?;
        if h.plen > 0 {
            let data = file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, eof)?;
            // Best effort: a record damaged halfway still keeps alive what it visibly refers to.
            return Ok(zeo_proto::refs::references_best_effort(&data)
                .oids
                .into_iter()
                .map(u64::from_be_bytes)
                .collect());
        }
        let back = read_backpointer(file, pos)?;
        if back == 0 || back >= pos {
            return Ok(Vec::new());
        }
        pos = back;
    }
}

/// Calls `f(pos, header, backpointer)` for each record of the transaction at `tpos`.
fn for_each_record(
    file: &DataFile,
    tpos: u64,
    header_len: u64,
    tlen: u64,
    eof: u64,
    mut f: impl FnMut(u64, &DataHeader, u64),
) -> Result<()> {
    let tend = tpos + tlen;
    let mut pos = tpos + header_len;
    while pos < tend {
        let h = read_any_data_header(file, pos, eof)?;
        let next = next_record(file, pos, &h, tend)?;
        if h.tloc != tpos {
            return Err(StorageError::corrupted(file.path(), pos, "data record points to another transaction"));
        }
        let back = if h.plen == 0 { read_backpointer(file, pos)? } else { 0 };
        f(pos, &h, back);
        pos = next;
    }
    Ok(())
}

fn is_blob_record(data: &[u8]) -> bool {
    data.windows(9).any(|w| w == b"ZODB.blob")
}

fn copy_to_packtime(file: &DataFile, g: &Gc, out: &mut Out, stats: &mut PackStats) -> Result<()> {
    let mut pos = 4;
    while pos < g.packpos {
        let th = read_txn_header(file, pos, g.packpos)?;
        let (_, user, desc, ext) = read_txn_meta(file, pos, g.packpos)?;
        let mut kept: Vec<(u64, DataHeader)> = Vec::new();
        let mut dropped = Vec::new();
        for_each_record(file, pos, th.header_len(), th.tlen, g.packpos, |rpos, h, _| {
            if g.is_reachable(h.oid, rpos) {
                kept.push((rpos, *h));
            } else {
                dropped.push((rpos, *h));
            }
        })?;
        stats.records_removed += dropped.len() as u64;
        for (rpos, h) in dropped {
            if record_data(file, rpos, &h, g.packpos)?.is_some_and(|d| is_blob_record(&d)) {
                stats.removed_blob_revisions.push((p64(h.oid), p64(h.tid)));
            }
        }
        if !kept.is_empty() {
            let tpos = out.pos;
            let mut buf = Vec::new();
            let mut tw = TxnWriter::begin(&mut buf, tpos, th.tid, status::PACKED, &user, &desc, &ext);
            for (rpos, h) in &kept {
                let data = record_data(file, *rpos, h, g.packpos)?.unwrap_or_default();
                let at = tw.data_record(h.oid, h.tid, 0, RecordBody::from_data(&data));
                out.index.insert(h.oid, at);
            }
            tw.finish();
            out.file.write_all_at(&buf, tpos)?;
            out.pos += buf.len() as u64;
            out.txn_pos.insert(th.tid, tpos);
        }
        pos += th.tlen + 8;
    }
    Ok(())
}

/// Copies the transactions in `[from, to)` whole, re-pointing backpointers into the new file.
fn copy_rest(file: &DataFile, from: u64, to: u64, out: &mut Out) -> Result<()> {
    let mut pos = from;
    while pos < to {
        let th = read_txn_header(file, pos, to)?;
        let (_, user, desc, ext) = read_txn_meta(file, pos, to)?;
        let tpos = out.pos;
        let mut recs = Vec::new();
        for_each_record(file, pos, th.header_len(), th.tlen, to, |rpos, h, back| recs.push((rpos, *h, back)))?;
        let mut buf = Vec::new();
        let mut tw = TxnWriter::begin(&mut buf, tpos, th.tid, th.status, &user, &desc, &ext);
        let mut tindex = Vec::new();
        for (rpos, h, back) in recs {
            let oid = h.oid;
            let data = record_data(file, rpos, &h, to)?;
            let new_back = if back != 0 {
                let data_tid = read_any_data_header(file, back, to)?.tid;
                match out.txn_pos.get(data_tid) {
                    Some(ntpos) => data_find(&out.file, out.pos, ntpos, oid, data.as_deref())?,
                    None => 0,
                }
            } else {
                0
            };
            let prev = out.index.get(oid).unwrap_or(0);
            let body = match (&data, new_back) {
                (_, b) if b != 0 => RecordBody::Back(b),
                (Some(d), _) => RecordBody::from_data(d),
                (None, _) => RecordBody::Back(0),
            };
            let at = tw.data_record(oid, h.tid, prev, body);
            tindex.push((oid, at));
        }
        tw.finish();
        out.file.write_all_at(&buf, tpos)?;
        out.pos += buf.len() as u64;
        out.txn_pos.insert(th.tid, tpos);
        out.index.extend(tindex);
        pos += th.tlen + 8;
    }
    Ok(())
}
