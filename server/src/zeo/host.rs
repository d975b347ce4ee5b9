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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Instant;

use crate::storage::{FileStorage, Oid, Tid};
use zeo_proto::message::Message;
use zeo_proto::pickle::Value;

use super::args::bytes_list;
use super::blobs::BlobDir;
use super::outbox::Outbox;
use crate::replication::write_lease::WriteLease;

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
    /// The committer's connection, its outbox and its `tpc_finish` msgid: its `info` and reply are
    /// queued in the same ordered step as everyone else's invalidations, so no client ever sees a
    /// later tid before its own commit's. `None` for transactions applied by replication.
    committer: Option<(ConnId, Outbox, Value)>,
    /// Committed by a client of this server (not applied from a primary): published only while
    /// the write lease allows acknowledging.
    local: bool,
    queued_at: Instant,
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
    /// Clients may not write (configured, or a standby, or demoted). Changes at promotion/demotion.
    read_only: AtomicBool,
    pub blobs: Option<BlobDir>,
    /// The storage-wide commit lock: taken at vote, released at finish or abort. tokio's mutex is
    /// fair (FIFO), and a waiter that goes away (disconnect) simply leaves the queue.
    pub commit_lock: Arc<tokio::sync::Mutex<()>>,
    pubstate: RwLock<PubState>,
    pending: Mutex<BTreeMap<u64, PendingPublication>>,
    /// Sync replication: publish (answer committers, invalidate) only transactions with a tid at or
    /// below this watermark, i.e. acknowledged by enough standbys. `None`: publish once durable.
    gate: Mutex<Option<Tid>>,
    /// The server's write lease, checked at the moment a local commit would be acknowledged.
    write_lease: OnceLock<Arc<WriteLease>>,
    /// The last durable tid, for the replication streamers (they ship before publication).
    durable: tokio::sync::watch::Sender<Tid>,
    /// The pack time of the last completed pack, for the replication streamers (standbys pack too).
    packed: tokio::sync::watch::Sender<Option<Tid>>,
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
            read_only: AtomicBool::new(read_only || fs.is_read_only()),
            durable: tokio::sync::watch::channel(last_tid).0,
            packed: tokio::sync::watch::channel(None).0,
            gate: Mutex::new(None),
            write_lease: OnceLock::new(),
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

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    /// Makes the storage read-only or writable for clients (promotion, demotion). Connections keep
    /// the mode they registered with; demotion closes them (`close_all`).
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only || self.fs.is_read_only(), Ordering::SeqCst);
    }

    /// Closes every client connection (demotion: nobody may go on writing here, and clients must
    /// reconnect to find the new primary). Their open transactions are aborted as they close.
    pub fn close_all(&self) -> usize {
        let st = self.read();
        for out in st.clients.values() {
            out.close.cancel();
        }
        st.clients.len()
    }

    /// Re-reads the invalidation queue and last tid after the file changed under the host (a
    /// replication rewind or re-seed). Clients must have been disconnected first.
    pub fn reload_history(&self) {
        let mut invq = VecDeque::new();
        match self.fs.last_transactions(self.invq_size) {
            Ok(txns) => {
                for t in txns {
                    invq.push_back((t.tid, t.records.iter().map(|r| r.oid).collect()));
                }
            }
            Err(e) => tracing::warn!(storage = %self.name, error = %e, "cannot re-read the invalidation queue"),
        }
        let last = self.fs.last_transaction();
        let mut st = self.write();
        st.invq = invq;
        st.last_tid = last;
        self.durable.send_replace(last);
    }

    /// Packs (GC) to `pack_tid`, removes the blob files of dropped revisions, tells clients the new
    /// size, and announces the pack to replication. Blocking: call on a blocking thread.
    pub fn pack(&self, pack_tid: &Tid) -> Result<crate::storage::PackStats, crate::storage::StorageError> {
        tracing::info!(storage = %self.name, pack_tid = %hex::encode(pack_tid), "pack started");
        let stats = self.fs.pack(pack_tid, true).inspect_err(|e| {
            tracing::error!(storage = %self.name, error = %e, "pack failed");
        })?;
        if let Some(dir) = &self.blobs {
            for (oid, tid) in &stats.removed_blob_revisions {
                dir.remove(oid, tid);
            }
        }
        tracing::info!(storage = %self.name, removed = stats.records_removed, new_size = stats.new_size, "pack complete");
        self.broadcast_info();
        self.packed.send_replace(Some(*pack_tid));
        Ok(stats)
    }

    /// Follows completed packs (their pack times).
    pub fn subscribe_packs(&self) -> tokio::sync::watch::Receiver<Option<Tid>> {
        self.packed.subscribe()
    }

    /// Follows the last durable tid (replication ships from it).
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<Tid> {
        self.durable.subscribe()
    }

    /// Drops the publications of transactions after `tid`: a rewind cut them off, so nobody may
    /// ever see them (their committers were disconnected at the demotion).
    pub fn discard_pending_after(&self, tid: &Tid) -> usize {
        let mut pending = self.pending.lock().expect("pending lock poisoned");
        let before = pending.len();
        pending.retain(|_, p| p.tid <= *tid);
        before - pending.len()
    }

    /// Sets the sync-replication watermark (`None`: no gate) and publishes what it lets through.
    pub fn set_gate(&self, watermark: Option<Tid>) {
        *self.gate.lock().expect("gate lock poisoned") = watermark;
        self.publish_durable();
    }

    /// Makes local commits wait for `lease` before they are acknowledged (set once, at startup).
    pub fn set_write_lease(&self, lease: Arc<WriteLease>) {
        if self.write_lease.set(lease).is_err() {
            tracing::error!(storage = %self.name, "the write lease was already set; keeping the first");
        }
    }

    /// Whether the write lease lets this server acknowledge a commit now (true without a lease).
    pub fn lease_allows_ack(&self) -> bool {
        self.write_lease.get().is_none_or(|l| l.allows_ack_now())
    }

    /// Why the write lease refuses acknowledgements now (for error messages).
    pub fn lease_refusal(&self) -> &'static str {
        let now = crate::replication::write_lease::boottime_ns();
        self.write_lease.get().and_then(|l| l.reason_at(now)).unwrap_or(crate::replication::write_lease::REASON_EXPIRED)
    }

    /// Answers every committer whose durable transaction is held back with an error saying why
    /// (`reason`: the write lease expired) instead of its tid: it is not acknowledged. The
    /// transactions stay queued, to be published only after a new grant (a promotion) or dropped
    /// by a rewind. Returns how many.
    pub fn refuse_held_committers(&self, reason: &str) -> usize {
        let reply = super::errors::unacknowledged(reason);
        let mut pending = self.pending.lock().expect("pending lock poisoned");
        let mut n = 0;
        for p in pending.values_mut() {
            if let Some((_, out, msgid)) = p.committer.take() {
                out.reply(msgid, Err(reply.clone()));
                self.server_metrics.commits_refused_not_writable.inc();
                n += 1;
            }
        }
        n
    }

    /// How long the oldest durable transaction has been held back by the gate, if one is.
    pub fn blocked_for(&self) -> Option<std::time::Duration> {
        let gate = (*self.gate.lock().expect("gate lock poisoned"))?;
        let durable = self.fs.durable_seq();
        let pending = self.pending.lock().expect("pending lock poisoned");
        let (seq, p) = pending.iter().next()?;
        (*seq <= durable && p.tid > gate).then(|| p.queued_at.elapsed())
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
        // A tid in the window that is not one of ours comes from another history (a client of a
        // primary that was failed over and whose last transactions were lost): none of its cache
        // can be vouched for.
        if !st.invq.iter().any(|(t, _)| t == tid) {
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
    pub fn queue_publication(&self, seq: u64, tid: Tid, oids: Vec<Oid>, committer: Option<(ConnId, Outbox, Value)>) {
        self.pending.lock().expect("pending lock poisoned").insert(
            seq,
            PendingPublication { tid, oids, local: committer.is_some(), committer, queued_at: Instant::now() },
        );
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
        self.durable.send_if_modified(|t| {
            let last = self.fs.last_transaction();
            let changed = *t != last;
            *t = last;
            changed
        });
        let gate = *self.gate.lock().expect("gate lock poisoned");
        let mut pending = self.pending.lock().expect("pending lock poisoned");
        // The write lease is read here, after the fsync and before anything is queued: past its
        // deadline no local commit is answered or shown to anyone.
        let lease_ok = self.lease_allows_ack();
        // In commit order, stopping at the first the gate or the lease holds back.
        let ready: Vec<u64> = pending
            .range(..=durable)
            .take_while(|(_, p)| gate.is_none_or(|g| p.tid <= g) && (lease_ok || !p.local))
            .map(|(s, _)| *s)
            .collect();
        if !lease_ok && pending.range(..=durable).nth(ready.len()).is_some_and(|(_, p)| p.local) {
            // Held by the lease: the expiry timer fences the server now rather than at its next tick.
            if let Some(l) = self.write_lease.get() {
                l.poke();
            }
        }
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
                args: vec![Value::Bytes(p.tid.to_vec()), bytes_list(p.oids.iter().copied())],
            };
            let committer = p.committer.as_ref().map(|c| c.0);
            for (id, out) in &st.clients {
                if Some(*id) != committer {
                    out.send(&msg);
                    self.stats.invalidations_sent.fetch_add(1, Ordering::Relaxed);
                    self.server_metrics.invalidations_sent.inc();
                }
            }
            if let Some((_, out, msgid)) = p.committer {
                out.send(&self.info_message());
                out.send(&Message::Reply { msgid, value: Value::Bytes(p.tid.to_vec()) });
            }
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
