//! One served storage: the engine, its commit lock, the registry of connections that receive its
//! invalidations, the invalidation queue for reconnecting clients, and its blob directory.
//!
//! Ordering (ZEO's `docs/ordering.rst`, issues #155/#166), kept by `pubstate`:
//! - invalidations reach every connection in tid order, none missing: finished transactions wait in
//!   `pending` (keyed by commit sequence) and are published strictly in that order, once durable;
//! - a load reply is computed and queued while holding `pubstate` for reading, and invalidations are
//!   queued while holding it for writing, so a reply computed before commit T is always queued before
//!   `invalidateTransaction(T)` on that connection;
//! - registering a connection and reading the last tid it is told happen under the write lock, so
//!   the connection gets every invalidation after that tid and none before.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::storage::{FileStorage, Oid, Tid};
use zeo_proto::message::Message;
use zeo_proto::pickle::Value;

use super::blobs::BlobDir;
use super::outbox::Outbox;

/// Identifies a connection.
pub type ConnId = u64;

/// Counters for `server_status` and the metrics.
#[derive(Debug, Default)]
pub struct HostStats {
    pub loads: AtomicU64,
    pub stores: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    pub conflicts: AtomicU64,
    pub read_conflicts: AtomicU64,
    pub active_txns: AtomicU64,
    pub waiting: AtomicU64,
    pub invalidations_sent: AtomicU64,
    /// Total nanoseconds spent waiting for the commit lock.
    pub lock_wait_ns: AtomicU64,
}

#[derive(Debug)]
struct PendingPublication {
    tid: Tid,
    oids: Vec<Oid>,
    committer: ConnId,
    /// The committer's outbox and its `tpc_finish` msgid: its `info` and reply are queued in the
    /// same ordered step as everyone else's invalidations, so no client ever sees a later tid
    /// before its own commit's.
    reply: (Outbox, Value),
}

#[derive(Debug)]
pub struct PubState {
    clients: HashMap<ConnId, Outbox>,
    /// Newest last; at most `invq_size` entries.
    invq: VecDeque<(Tid, Vec<Oid>)>,
    /// Tid of the last transaction whose invalidations were sent.
    pub last_tid: Tid,
}

/// A storage as the server serves it.
#[derive(Debug)]
pub struct StorageHost {
    pub name: String,
    pub fs: Arc<FileStorage>,
    pub read_only: bool,
    pub blobs: Option<BlobDir>,
    /// The storage-wide commit lock: taken at vote, released at finish or abort. tokio's mutex is
    /// fair (FIFO), and a waiter that goes away (disconnect) simply leaves the queue.
    pub commit_lock: Arc<tokio::sync::Mutex<()>>,
    pubstate: RwLock<PubState>,
    pending: Mutex<BTreeMap<u64, PendingPublication>>,
    invq_size: usize,
    pub stats: HostStats,
    pub metrics: crate::metrics::StorageMetrics,
    server_metrics: Arc<crate::metrics::Metrics>,
    pub started: std::time::SystemTime,
}

impl StorageHost {
    /// Wraps an opened storage; seeds the invalidation queue from the end of its history, as ZEO does.
    pub fn new(
        name: String,
        fs: Arc<FileStorage>,
        read_only: bool,
        blobs: Option<BlobDir>,
        invq_size: usize,
        server_metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let mut invq = VecDeque::new();
        match fs.last_transactions(invq_size) {
            Ok(txns) => {
                for t in txns {
                    invq.push_back((t.tid, t.records.iter().map(|r| r.oid).collect()));
                }
            }
            Err(e) => {
                tracing::warn!(storage = %name, error = %e, "cannot seed the invalidation queue; reconnecting clients will revalidate fully")
            }
        }
        let last_tid = fs.last_transaction();
        StorageHost {
            metrics: server_metrics.storage(&name),
            server_metrics,
            name,
            read_only: read_only || fs.is_read_only(),
            fs,
            blobs,
            commit_lock: Arc::new(tokio::sync::Mutex::new(())),
            pubstate: RwLock::new(PubState { clients: HashMap::new(), invq, last_tid }),
            pending: Mutex::new(BTreeMap::new()),
            invq_size,
            stats: HostStats::default(),
            started: std::time::SystemTime::now(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PubState> {
        self.pubstate.write().expect("publication lock poisoned")
    }

    /// Held while computing and queueing a load reply (see the module doc).
    pub fn read(&self) -> RwLockReadGuard<'_, PubState> {
        self.pubstate.read().expect("publication lock poisoned")
    }

    /// Adds a connection to the invalidation fan-out; returns the tid it is current as of.
    pub fn register(&self, id: ConnId, outbox: Outbox) -> Tid {
        let mut st = self.write();
        st.clients.insert(id, outbox);
        st.last_tid
    }

    pub fn unregister(&self, id: ConnId) {
        self.write().clients.remove(&id);
    }

    pub fn connections(&self) -> usize {
        self.read().clients.len()
    }

    pub fn last_tid(&self) -> Tid {
        self.read().last_tid
    }

    /// `getInvalidations(tid)`: `(newest tid, oids changed after tid)`, or `None` when the queue
    /// does not reach back to `tid` (the client then drops its cache: always safe).
    pub fn get_invalidations(&self, tid: &Tid) -> Option<(Tid, Vec<Oid>)> {
        let st = self.read();
        if *tid >= st.last_tid {
            return Some((st.last_tid, Vec::new()));
        }
        let oldest = st.invq.front()?;
        if oldest.0 > *tid {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        let mut oids = Vec::new();
        for (_, changed) in st.invq.iter().filter(|(t, _)| t > tid) {
            for o in changed {
                if seen.insert(*o) {
                    oids.push(*o);
                }
            }
        }
        Some((st.last_tid, oids))
    }

    /// Records a finished (not yet durable) transaction for publication in commit order.
    pub fn queue_publication(&self, seq: u64, tid: Tid, oids: Vec<Oid>, committer: ConnId, reply: (Outbox, Value)) {
        self.pending
            .lock()
            .expect("pending lock poisoned")
            .insert(seq, PendingPublication { tid, oids, committer, reply });
    }

    /// Withdraws a publication that will not happen (its transaction failed to become durable).
    /// False when it was already published (the committer was answered).
    pub fn cancel_publication(&self, seq: u64) -> bool {
        self.pending.lock().expect("pending lock poisoned").remove(&seq).is_some()
    }

    /// Publishes, in order, every queued transaction that is now durable: invalidations to every
    /// other connection, the invalidation queue, the last tid. Transactions lost to a failed fsync
    /// are dropped.
    pub fn publish_durable(&self) {
        let durable = self.fs.durable_seq();
        let mut pending = self.pending.lock().expect("pending lock poisoned");
        let ready: Vec<u64> = pending.range(..=durable).map(|(s, _)| *s).collect();
        if ready.is_empty() {
            return;
        }
        let mut st = self.write();
        for seq in ready {
            let Some(p) = pending.remove(&seq) else { continue };
            if self.fs.commit_outcome(seq) == crate::storage::CommitOutcome::Lost {
                continue;
            }
            let msg = Message::Call {
                msgid: Value::Int(0),
                is_async: true,
                method: "invalidateTransaction".into(),
                args: vec![
                    Value::Bytes(p.tid.to_vec()),
                    Value::List(p.oids.iter().map(|o| Value::Bytes(o.to_vec())).collect()),
                ],
            };
            for (id, out) in &st.clients {
                if *id != p.committer {
                    out.send(&msg);
                    self.stats.invalidations_sent.fetch_add(1, Ordering::Relaxed);
                    self.server_metrics.invalidations_sent.inc();
                }
            }
            let (out, msgid) = p.reply;
            out.send(&self.info_message());
            out.send(&Message::Reply { msgid, value: Value::Bytes(p.tid.to_vec()) });
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.metrics.commits.inc();
            st.invq.push_back((p.tid, p.oids));
            while st.invq.len() > self.invq_size {
                st.invq.pop_front();
            }
            st.last_tid = p.tid;
        }
    }

    /// `info({'length', 'size'})` to every connection (after a pack).
    pub fn broadcast_info(&self) {
        let msg = self.info_message();
        for out in self.read().clients.values() {
            out.send(&msg);
        }
    }

    /// The `info` message with the current size.
    pub fn info_message(&self) -> Message {
        Message::Call {
            msgid: Value::Int(0),
            is_async: true,
            method: "info".into(),
            args: vec![Value::Dict(vec![
                (Value::Str("length".into()), Value::Int(i64::try_from(self.fs.len()).unwrap_or(i64::MAX))),
                (Value::Str("size".into()), Value::Int(i64::try_from(self.fs.size()).unwrap_or(i64::MAX))),
            ])],
        }
    }
}
