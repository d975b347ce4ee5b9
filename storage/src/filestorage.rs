//! `FileStorage`: open, state, and the read side.
//!
//! Concurrency: readers take `shared` (read lock) only for the duration of one call and read the file
//! with `pread`. The commit path holds `writer` from vote to the end of the call; lock order is always
//! `writer` then `shared`. Readers see a transaction only after the fsync that made it durable
//! (`sync` publishes it), so nobody ever reads data a crash could take back.

use std::collections::HashMap;
use std::fs::OpenOptions as FsOpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Result, StorageError};
use super::file::{DataFile, Faults, sync_dir};
use super::format::{DataHeader, MAGIC};
use super::index::{self, Index, Snapshot};
use super::lock::LockFile;
use super::oids::OidAllocator;
use super::records::{check_backwards, live_tid_at, read_data_header, read_record, read_txn_meta, record_data};
use super::recovery;
use super::txn::{Oid, Tid};
use zeo_proto::timestamp::TimeStamp;
use zeo_proto::{p64, u64_of};

/// How to open a storage.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Open without the writer lock and refuse every write.
    pub read_only: bool,
    /// Create the file when it does not exist.
    pub create: bool,
    /// Failure injection (tests only).
    pub faults: Option<Arc<Faults>>,
    /// Memory for the record cache (`None`: the default, 16 MiB; 0 disables).
    pub cache_bytes: Option<usize>,
    /// Whether votes and undos merge conflicts of the classes `zeo-resolve` handles.
    pub conflict_resolution: super::resolution::ConflictResolution,
}

/// Default size of the record cache (memory, overhead included).
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// State readers see: only durable, published transactions.
#[derive(Debug)]
pub(crate) struct Shared {
    pub file: Arc<DataFile>,
    pub index: Index,
    /// End of the last durable transaction.
    pub end: u64,
    pub last_tid: u64,
    /// Highest commit sequence number made durable.
    pub durable_seq: u64,
    /// Records of `file`, by position (replaced with the file at a pack).
    pub cache: Arc<super::cache::RecordCache>,
    /// Commit sequence numbers rolled back after a failed fsync (rare; never durable).
    pub lost_seqs: std::collections::BTreeSet<u64>,
}

/// A transaction written with status 'c', waiting for finish or abort.
#[derive(Debug)]
pub(crate) struct VotedTxn {
    pub ticket: u64,
    pub tpos: u64,
    pub tlen: u64,
    pub tid: u64,
    pub status: u8,
    pub records: Vec<(u64, u64)>,
}

/// A finished transaction whose fsync has not happened yet.
#[derive(Debug)]
pub(crate) struct PendingTxn {
    pub seq: u64,
    pub end: u64,
    pub tid: u64,
    pub records: Vec<(u64, u64)>,
}

/// State of the commit path.
#[derive(Debug)]
pub(crate) struct Writer {
    /// End of everything written (durable, pending and voted excluded: `voted` lies at `pos`).
    pub pos: u64,
    /// Tid of the last finished transaction (pending included).
    pub last_tid: u64,
    /// Index entries of pending transactions, consulted by the commit path before `Shared::index`.
    pub overlay: HashMap<u64, u64>,
    pub voted: Option<VotedTxn>,
    pub pending: Vec<PendingTxn>,
    pub next_ticket: u64,
    /// Set when an fsync failed and the tail could not be cut back: writes are refused.
    pub poisoned: bool,
}

/// A FileStorage (FS30) opened by zeo-rs.
#[derive(Debug)]
pub struct FileStorage {
    pub(crate) path: PathBuf,
    pub(crate) read_only: bool,
    pub(crate) shared: RwLock<Shared>,
    pub(crate) writer: Mutex<Writer>,
    /// Serializes fsyncs so that publication happens in commit order.
    pub(crate) sync_lock: Mutex<()>,
    pub(crate) oids: Mutex<OidAllocator>,
    pub(crate) packing: AtomicBool,
    pub(crate) faults: Option<Arc<Faults>>,
    pub(crate) sync_observer: std::sync::OnceLock<SyncObserver>,
    pub(crate) conflict_resolution: super::resolution::ConflictResolution,
    _lock: Option<LockFile>,
}

/// Called after every successful fsync of the commit path with its duration in seconds and the number
/// of transactions it made durable (metrics: fsync latency, group-commit batch size).
pub struct SyncObserver(pub Box<dyn Fn(f64, u64) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

/// `load_before`'s answer: the revision, when it became current, and when it stopped being current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBefore {
    pub data: Vec<u8>,
    pub start: Tid,
    pub end: Option<Tid>,
}

/// One `history` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub tid: Tid,
    pub time: f64,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The transaction's extension pickle (the caller merges its keys into the dict, as FileStorage does).
    pub extension: Vec<u8>,
    /// Length of this record's own data (0 for backpointers and deletions).
    pub size: u64,
}

/// One `record_iternext` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterNext {
    pub oid: Oid,
    pub tid: Tid,
    pub data: Vec<u8>,
    pub next: Option<Oid>,
}

impl Shared {
    /// The record at `pos` (an index entry of `oid`): its header, and its data when inline, from the
    /// cache or with one read (which then fills the cache).
    fn current_record(&self, pos: u64, oid: u64) -> Result<(DataHeader, Option<Arc<[u8]>>)> {
        if let Some(hit) = self.cache.get(pos) {
            return Ok((hit.0, Some(hit.1)));
        }
        let (h, inline) = read_record(&self.file, pos, self.end, oid)?;
        let inline: Option<Arc<[u8]>> = inline.map(Arc::from);
        if let Some(d) = &inline {
            self.cache.insert(pos, h, d.clone());
        }
        Ok((h, inline))
    }

    /// The data of the record at `pos`: `inline` when `current_record` had it, else read (following
    /// backpointers); `PosKey` for "no data".
    fn data_of(&self, pos: u64, h: &DataHeader, inline: Option<Arc<[u8]>>, oid: &Oid) -> Result<Vec<u8>> {
        match inline {
            Some(d) => Ok(d.to_vec()),
            None => record_data(&self.file, pos, h, self.end)?.ok_or(StorageError::PosKey { oid: *oid }),
        }
    }
}

impl FileStorage {
    /// Opens (and, with `create`, creates) the storage at `path`: takes the writer lock, loads the index
    /// snapshot, scans and recovers the tail.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock = if opts.read_only { None } else { Some(LockFile::acquire(&path)?) };
        let exists = path.exists();
        if !exists && (opts.read_only || !opts.create) {
            return Err(StorageError::io("open", &path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let file = FsOpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .create(!opts.read_only && opts.create)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let file = DataFile::new(file, &path, opts.faults.clone());
        let mut len = file.len()?;
        if len == 0 && !opts.read_only {
            file.write_all_at(MAGIC, 0)?;
            file.sync_data()?;
            sync_dir(&super::file::parent_dir(&path))?;
            len = 4;
        }
        let mut magic = [0u8; 4];
        if len < 4 || file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
            let got = file.read_vec_at(0, len.min(4), len).unwrap_or_default();
            return Err(StorageError::BadMagic { path, magic: got });
        }
        if len >= index::MAX_POS {
            return Err(StorageError::FileTooLarge { path, limit: index::MAX_POS });
        }
        let snapshot = index::load(&path, &file, len);
        let from_snapshot = snapshot.is_some();
        let Snapshot { pos, last_tid, mut index } =
            snapshot.unwrap_or(Snapshot { pos: 4, last_tid: 0, index: Index::new() });
        let scanned_from = pos;
        let end = recovery::scan(&file, &path, pos, last_tid, &mut index, opts.read_only)?;
        if end.truncated.is_some() {
            // A Python Data.fs.index may describe the bytes that were cut.
            index::remove_if_exists(&PathBuf::from(format!("{}.index", path.display())))?;
        }
        if end.last_tid != 0 && TimeStamp::from_u64(end.last_tid).time_time() > now_secs() + 60.0 {
            tracing::warn!(path = %path.display(), "the last transaction id lies in the future; new tids will follow it, not the clock");
        }
        let cache_bytes = opts.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
        let max_oid = index.last_oid();
        let oids = OidAllocator::open(&path, max_oid)?;
        tracing::info!(path = %path.display(), objects = index.len(), end = end.end, from_snapshot,
            scanned_bytes = end.end - scanned_from, read_only = opts.read_only, "opened storage");
        let storage = FileStorage {
            read_only: opts.read_only,
            shared: RwLock::new(Shared {
                file: Arc::new(file),
                index,
                end: end.end,
                last_tid: end.last_tid,
                durable_seq: 0,
                lost_seqs: Default::default(),
                cache: Arc::new(super::cache::RecordCache::new(cache_bytes)),
            }),
            writer: Mutex::new(Writer {
                pos: end.end,
                last_tid: end.last_tid,
                overlay: HashMap::new(),
                voted: None,
                pending: Vec::new(),
                next_ticket: 1,
                poisoned: false,
            }),
            sync_lock: Mutex::new(()),
            oids: Mutex::new(oids),
            packing: AtomicBool::new(false),
            faults: opts.faults,
            sync_observer: std::sync::OnceLock::new(),
            conflict_resolution: opts.conflict_resolution,
            _lock: lock,
            path,
        };
        // A long scan is worth a fresh snapshot, so the next open is fast.
        if !storage.read_only && end.end - scanned_from > SNAPSHOT_AFTER_SCANNING {
            storage.save_index()?;
        }
        Ok(storage)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Installs the fsync observer (once).
    pub fn set_sync_observer(&self, f: impl Fn(f64, u64) + Send + Sync + 'static) {
        let _ = self.sync_observer.set(SyncObserver(Box::new(f)));
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn shared(&self) -> std::sync::RwLockReadGuard<'_, Shared> {
        // A poisoned lock means a panic while publishing; the process aborts on panic in release builds.
        self.shared.read().expect("storage state lock poisoned")
    }

    pub(crate) fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().expect("storage writer lock poisoned")
    }

    /// Writes the index snapshot covering everything durable now.
    pub fn save_index(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        // Written under the read lock straight from the index (no copy of it; commits wait only
        // to publish, for the time of a write into the page cache); the fsync comes after.
        let mut w = index::begin_save(&self.path)?;
        {
            let s = self.shared();
            index::write_into(&mut w, s.end, s.last_tid, &s.index)?;
        }
        w.commit()
    }

    /// Flushes pending commits and saves the index snapshot. Dropping without `close` is crash-safe
    /// too; it only makes the next open scan more.
    pub fn close(self) -> Result<()> {
        if !self.read_only {
            self.sync()?;
            self.save_index()?;
        }
        Ok(())
    }

    /// Tid of the last durable transaction (z64 when empty).
    pub fn last_transaction(&self) -> Tid {
        p64(self.shared().last_tid)
    }

    /// Number of objects in the index (deleted ones included, as FileStorage counts).
    pub fn len(&self) -> usize {
        self.shared().index.len()
    }

    /// Heap bytes the object index holds (for benchmarks: compare with the process's RSS).
    pub fn index_heap_bytes(&self) -> usize {
        self.shared().index.heap_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the durable part of the file, in bytes.
    pub fn size(&self) -> u64 {
        self.shared().end
    }

    /// The newest revision with start tid `< tid`: `Ok(None)` if the object was created at or after
    /// `tid`; `PosKey` if it never existed or that revision is a deletion.
    pub fn load_before(&self, oid: &Oid, tid: &Tid) -> Result<Option<LoadBefore>> {
        let s = self.shared();
        let (oid_n, tid_n) = (u64_of(*oid), u64_of(*tid));
        let mut pos = s.index.get(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
        // The current revision (the common case) comes from the cache, or with its data in one read;
        // older ones are found by walking the prev chain, header by header.
        let (mut h, mut inline) = s.current_record(pos, oid_n)?;
        let mut end = None;
        while h.tid >= tid_n {
            end = Some(p64(h.tid));
            if h.prev == 0 {
                return Ok(None);
            }
            pos = check_backwards(&s.file, pos, h.prev)?;
            h = read_data_header(&s.file, pos, s.end, oid_n)?;
            inline = None;
        }
        let data = s.data_of(pos, &h, inline, oid)?;
        Ok(Some(LoadBefore { data, start: p64(h.tid), end }))
    }

    /// The current revision's data and tid.
    pub fn load(&self, oid: &Oid) -> Result<(Vec<u8>, Tid)> {
        let s = self.shared();
        let oid_n = u64_of(*oid);
        let pos = s.index.get(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
        let (h, inline) = s.current_record(pos, oid_n)?;
        Ok((s.data_of(pos, &h, inline, oid)?, p64(h.tid)))
    }

    /// The data of the exact revision `serial`.
    pub fn load_serial(&self, oid: &Oid, serial: &Tid) -> Result<Vec<u8>> {
        let s = self.shared();
        let (oid_n, serial_n) = (u64_of(*oid), u64_of(*serial));
        let mut pos = s.index.get(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
        loop {
            let h = read_data_header(&s.file, pos, s.end, oid_n)?;
            if h.tid == serial_n {
                return record_data(&s.file, pos, &h, s.end)?.ok_or(StorageError::PosKey { oid: *oid });
            }
            if h.tid < serial_n || h.prev == 0 {
                return Err(StorageError::PosKey { oid: *oid });
            }
            pos = check_backwards(&s.file, pos, h.prev)?;
        }
    }

    /// Tid of the current revision; `PosKey` for missing objects and undone creations.
    pub fn get_tid(&self, oid: &Oid) -> Result<Tid> {
        let s = self.shared();
        let oid_n = u64_of(*oid);
        let pos = s.index.get(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
        live_tid_at(&s.file, pos, s.end, oid_n)?.map(p64).ok_or(StorageError::PosKey { oid: *oid })
    }

    /// Up to `size` revisions, newest first.
    pub fn history(&self, oid: &Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let s = self.shared();
        let oid_n = u64_of(*oid);
        let mut pos = s.index.get(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
        let mut out = Vec::new();
        while out.len() < size {
            let h = read_data_header(&s.file, pos, s.end, oid_n)?;
            let (_, user, description, extension) = read_txn_meta(&s.file, h.tloc, s.end)?;
            out.push(HistoryEntry {
                tid: p64(h.tid),
                time: TimeStamp::from_u64(h.tid).time_time(),
                user,
                description,
                extension,
                size: h.plen,
            });
            if h.prev == 0 {
                break;
            }
            pos = check_backwards(&s.file, pos, h.prev)?;
        }
        Ok(out)
    }

    /// The current record of the first oid `>= next` (or the smallest), and the oid after it.
    /// Errors like FileStorage's: `PosKey` when that object's current revision has no data.
    pub fn record_iternext(&self, next: Option<&Oid>) -> Result<Option<IterNext>> {
        let (oid_n, following) = {
            let s = self.shared();
            let from = next.copied().map_or(0, u64_of);
            let mut from_here = s.index.range_from(from);
            let Some((oid_n, _)) = from_here.next() else { return Ok(None) };
            let following = from_here.next().map(|(o, _)| p64(o));
            (oid_n, following)
        };
        let oid = p64(oid_n);
        let (data, tid) = self.load(&oid)?;
        Ok(Some(IterNext { oid, tid, data, next: following }))
    }

    /// Hands out `n` new oids (never handed out before, across restarts).
    pub fn new_oids(&self, n: u64) -> Result<Vec<Oid>> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let mut a = self.oids.lock().expect("oid allocator lock poisoned");
        Ok(a.allocate(n)?.into_iter().map(p64).collect())
    }
}

/// Scanning more than this at open is followed by a snapshot save.
const SNAPSHOT_AFTER_SCANNING: u64 = 16 << 20;

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
