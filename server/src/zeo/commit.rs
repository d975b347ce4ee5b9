//! A connection's transaction on the server, from `tpc_begin` to `tpc_finish`/`tpc_abort`, and the
//! two tasks that may wait: vote (for the commit lock) and finish (for durability). Both run beside
//! the connection's read loop, so the connection keeps being served while they wait. The methods
//! that drive it (`tpc_begin`, the stores, `vote`, `tpc_finish`, `tpc_abort`) are `methods/txn.rs`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use zeo_proto::pickle::Value;

use super::args::bytes_list;
use super::errors::{not_writable, read_only, storage_error, transaction_error};
use super::host::{ConnId, StorageHost};
use super::outbox::Outbox;
use crate::storage::{Oid, StorageError, Transaction, VoteOutcome};

/// Where the transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// A vote task owns the engine transaction.
    Voting,
    /// Voted and holding the commit lock.
    Voted,
}

/// The transaction state a connection holds.
#[derive(Debug)]
pub struct ServerTxn {
    /// The client's transaction id (`id(txn)`), compared by equality.
    pub id: Value,
    pub host: Arc<StorageHost>,
    pub engine: Option<Transaction>,
    pub phase: Phase,
    /// An error found while buffering (e.g. metadata too long, bad undo id), reported at vote.
    pub deferred: Option<StorageError>,
    /// Staged blob uploads: (oid, staging file).
    pub blobs: Vec<(Oid, PathBuf)>,
    /// Oids to invalidate in other clients, in order.
    pub invalidate: Vec<Oid>,
    /// Bumped at every vote, so a transaction timer only fires for the vote it was set for.
    pub vote_round: u64,
    /// Held from a successful vote to finish/abort. Declared last: dropped after `Drop::drop` ran.
    pub lock: Option<OwnedMutexGuard<()>>,
}

impl ServerTxn {
    pub fn new(id: Value, host: Arc<StorageHost>, engine: Result<Transaction, StorageError>) -> Self {
        host.stats.active_txns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (engine, deferred) = match engine {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        };
        ServerTxn {
            id,
            host,
            engine,
            phase: Phase::Open,
            deferred,
            blobs: Vec::new(),
            invalidate: Vec::new(),
            vote_round: 0,
            lock: None,
        }
    }
}

impl Drop for ServerTxn {
    /// Abandoning a transaction (abort, vote failure, disconnect, timeout) cuts a voted record from the
    /// file and removes staged blobs; then the commit lock is released.
    fn drop(&mut self) {
        if let Some(t) = self.engine.as_mut()
            && let Err(e) = self.host.fs.abort(t)
        {
            tracing::error!(error = %e, "aborting a transaction failed");
        }
        for (_, path) in self.blobs.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        self.host.stats.active_txns.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Votes of transactions up to this many bytes of data run on the connection's task.
const INLINE_WRITE_BYTES: usize = 256 << 10;

/// The slot a connection keeps its transaction in, shared with its vote and finish tasks.
pub type TxnSlot = Arc<Mutex<Option<ServerTxn>>>;

/// What the vote and finish tasks need of their connection.
#[derive(Clone)]
pub struct TaskCtx {
    pub conn: ConnId,
    pub outbox: Outbox,
    pub slot: TxnSlot,
    pub host: Arc<StorageHost>,
    pub close: CancellationToken,
    pub transaction_timeout: Option<Duration>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

fn lock_slot(slot: &TxnSlot) -> std::sync::MutexGuard<'_, Option<ServerTxn>> {
    slot.lock().expect("transaction slot poisoned")
}

/// `vote`: wait for the commit lock (FIFO), then vote in the engine on a blocking thread.
pub async fn vote(ctx: TaskCtx, msgid: Value, round: u64) {
    // A re-vote after a conflict round still holds the lock (see the Conflicts arm below).
    let held = lock_slot(&ctx.slot).as_mut().and_then(|t| t.lock.take());
    let guard = match held {
        Some(g) => g,
        None => {
            let stats = &ctx.host.stats;
            stats.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let waited = Instant::now();
            let guard = tokio::select! {
                g = ctx.host.commit_lock.clone().lock_owned() => Some(g),
                _ = ctx.close.cancelled() => None,
            };
            stats.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let Some(guard) = guard else { return };
            let wait = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
            stats.lock_wait_ns.fetch_add(wait, std::sync::atomic::Ordering::Relaxed);
            ctx.metrics.commit_lock_wait_seconds.observe(waited.elapsed().as_secs_f64());
            guard
        }
    };

    let engine = {
        let mut st = lock_slot(&ctx.slot);
        match st.as_mut() {
            Some(t) if t.vote_round == round && t.phase == Phase::Voting => t.engine.take(),
            _ => None,
        }
    };
    let Some(mut engine) = engine else {
        ctx.outbox.reply(msgid, Err(transaction_error("the transaction was aborted while voting")));
        return;
    };
    if ctx.host.is_read_only() {
        // Demoted while this transaction waited for the lock: nothing may be written any more.
        let _ = ctx.host.fs.abort(&mut engine);
        *lock_slot(&ctx.slot) = None;
        ctx.outbox.reply(msgid, Err(read_only()));
        return;
    }
    if !ctx.host.lease_allows_ack() {
        // This commit could not be acknowledged anyway: refuse it before anything is written.
        let _ = ctx.host.fs.abort(&mut engine);
        *lock_slot(&ctx.slot) = None;
        ctx.metrics.commits_refused_not_writable.inc();
        ctx.outbox.reply(msgid, Err(not_writable(ctx.host.lease_refusal())));
        return;
    }
    let fs = ctx.host.fs.clone();
    // A small vote is one pwrite into the page cache: cheaper inline than a thread hand-off (which
    // costs more than the write on these machines). Large ones go to a blocking thread.
    let voted = if engine.buffered_bytes() <= INLINE_WRITE_BYTES {
        let outcome = fs.vote(&mut engine);
        Ok((engine, outcome))
    } else {
        tokio::task::spawn_blocking(move || {
            let outcome = fs.vote(&mut engine);
            (engine, outcome)
        })
        .await
    };
    let (engine, outcome) = match voted {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "vote task failed");
            *lock_slot(&ctx.slot) = None;
            ctx.outbox.reply(msgid, Err(transaction_error("internal error while voting")));
            return;
        }
    };
    // A conflict names the committed tid, and the client loads that revision next (loadSerial) to
    // resolve it. With group commit that transaction may be finished but not yet durable, hence
    // invisible to readers: make it durable (and publish it) before answering.
    let conflicted = matches!(
        outcome,
        Ok(VoteOutcome::Conflicts(_)) | Err(StorageError::Conflict { .. } | StorageError::ReadConflict { .. })
    );
    if conflicted {
        let fs = ctx.host.fs.clone();
        match tokio::task::spawn_blocking(move || fs.sync()).await {
            Ok(Ok(_)) => ctx.host.publish_durable(),
            Ok(Err(e)) => tracing::error!(error = %e, "sync before reporting a conflict failed"),
            Err(e) => tracing::error!(error = %e, "sync task failed"),
        }
    }
    let mut st = lock_slot(&ctx.slot);
    let Some(t) = st.as_mut().filter(|t| t.vote_round == round) else {
        // Aborted or disconnected meanwhile: undo the vote.
        let mut engine = engine;
        let _ = ctx.host.fs.abort(&mut engine);
        drop(st);
        ctx.outbox.reply(msgid, Err(transaction_error("the transaction was aborted while voting")));
        return;
    };
    t.engine = Some(engine);
    match outcome {
        Ok(VoteOutcome::Voted { undone, .. }) => {
            t.phase = Phase::Voted;
            t.lock = Some(guard);
            t.invalidate.extend(undone.iter().copied());
            drop(st);
            ctx.outbox.reply(msgid, Ok(bytes_list(undone.iter().copied())));
            if let Some(timeout) = ctx.transaction_timeout {
                tokio::spawn(transaction_timer(ctx.clone(), round, timeout));
            }
        }
        Ok(VoteOutcome::Conflicts(conflicts)) => {
            // Client-side conflict resolution: keep the buffer and report. The commit lock stays
            // held until the re-vote (or abort, disconnect, timeout): released in between, other
            // commits could invalidate each resolution again, and the ZEO client gives up after 9
            // rounds. Holding it is what resolving on the server under the lock achieves in ZEO.
            t.phase = Phase::Open;
            t.lock = Some(guard);
            drop(st);
            if let Some(timeout) = ctx.transaction_timeout {
                tokio::spawn(transaction_timer(ctx.clone(), round, timeout));
            }
            ctx.host.stats.conflicts.fetch_add(conflicts.len() as u64, std::sync::atomic::Ordering::Relaxed);
            ctx.host.metrics.write_conflicts.inc_by(conflicts.len() as u64);
            let list = conflicts
                .iter()
                .map(|c| {
                    Value::Dict(vec![
                        (Value::Str("oid".into()), Value::Bytes(c.oid.to_vec())),
                        (
                            Value::Str("serials".into()),
                            Value::Tuple(vec![Value::Bytes(c.committed.to_vec()), Value::Bytes(c.expected.to_vec())]),
                        ),
                        (Value::Str("data".into()), Value::Bytes(c.data.clone())),
                    ])
                })
                .collect();
            ctx.outbox.reply(msgid, Ok(Value::List(list)));
        }
        Err(e) => {
            // The server aborts and forgets the transaction; the client's tpc_abort is then a no-op.
            if matches!(e, StorageError::ReadConflict { .. }) {
                ctx.host.stats.read_conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.host.metrics.read_conflicts.inc();
            } else if matches!(e, StorageError::Conflict { .. }) {
                ctx.host.stats.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.host.metrics.write_conflicts.inc();
            }
            let abandoned = st.take();
            drop(st);
            drop(abandoned);
            drop(guard);
            ctx.outbox.reply(msgid, Err(storage_error(&e)));
        }
    }
}

/// ZEO's transaction timeout: a client holding the commit lock past it is disconnected (its
/// transaction aborted), so it cannot stall every other writer.
async fn transaction_timer(ctx: TaskCtx, round: u64, timeout: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(timeout) => {}
        _ = ctx.close.cancelled() => return,
    }
    let still_holding = lock_slot(&ctx.slot).as_ref().is_some_and(|t| t.vote_round == round && t.lock.is_some());
    if still_holding {
        tracing::error!(peer = %ctx.outbox.peer, storage = %ctx.host.name, "Transaction timeout after {} seconds", timeout.as_secs_f64());
        *lock_slot(&ctx.slot) = None;
        ctx.close.cancel();
    }
}

/// `tpc_finish`: flip the status (freeing the commit lock for the next voter), put blobs in place,
/// wait until durable (group commit), publish invalidations in commit order, then answer.
pub async fn finish(ctx: TaskCtx, msgid: Value, mut txn: ServerTxn) {
    let Some(mut engine) = txn.engine.take() else {
        ctx.outbox.reply(msgid, Err(transaction_error("no voted transaction")));
        return;
    };
    if ctx.host.is_read_only() {
        // Demoted since the vote: the voted record is cut, nothing is committed.
        let _ = ctx.host.fs.abort(&mut engine);
        drop(txn);
        ctx.outbox.reply(msgid, Err(read_only()));
        return;
    }
    if !ctx.host.lease_allows_ack() {
        // The write lease ran out since the vote: cut the voted record, nothing is committed. (A
        // lease running out after this point is caught where the commit would be answered.)
        let _ = ctx.host.fs.abort(&mut engine);
        drop(txn);
        ctx.metrics.commits_refused_not_writable.inc();
        ctx.outbox.reply(msgid, Err(not_writable(ctx.host.lease_refusal())));
        return;
    }
    let fs = ctx.host.fs.clone();
    let blobs = std::mem::take(&mut txn.blobs);
    let no_blobs = blobs.is_empty();
    let blob_dir = ctx.host.blobs.clone();
    let mut finish = move || {
        let committed = fs.finish_nosync(&mut engine)?;
        if let Some(dir) = &blob_dir {
            for (oid, path) in &blobs {
                // The record is already written; a blob that cannot be placed is logged loudly and the
                // commit still reported (ZEO behaves the same way: the blob is moved after the data).
                if let Err(e) = dir.commit(path, oid, &committed.tid) {
                    tracing::error!(oid = %hex::encode(oid), error = %e, "cannot move a committed blob into place");
                }
            }
        }
        Ok::<_, StorageError>(committed)
    };
    // Without blobs, finishing is one 1-byte pwrite (the fsync comes after, on a blocking thread).
    let finished = if no_blobs { Ok(finish()) } else { tokio::task::spawn_blocking(finish).await };
    let committed = match finished {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            drop(txn);
            ctx.outbox.reply(msgid, Err(storage_error(&e)));
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "finish task failed");
            drop(txn);
            ctx.outbox.reply(msgid, Err(transaction_error("internal error while finishing")));
            return;
        }
    };
    let oids = std::mem::take(&mut txn.invalidate);
    ctx.host.queue_publication(committed.seq, committed.tid, oids, Some((ctx.conn, ctx.outbox.clone(), msgid.clone())));
    // Free the commit lock now: the next transaction votes while this one's fsync runs.
    drop(txn);
    let fs = ctx.host.fs.clone();
    let durable = tokio::task::spawn_blocking(move || fs.wait_durable(committed.seq)).await;
    // Publishing answers this committer too (in commit order with every invalidation).
    ctx.host.publish_durable();
    let failure = match durable {
        Ok(Ok(())) => return,
        Ok(Err(e)) => storage_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "durability task failed");
            transaction_error("internal error while finishing")
        }
    };
    if ctx.host.cancel_publication(committed.seq) {
        ctx.outbox.reply(msgid, Err(failure));
    }
}
