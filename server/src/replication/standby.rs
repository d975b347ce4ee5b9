//! The standby's side: follow a primary, from where this storage stopped.
//!
//! Each (re)connection says hello with our last tid and its history digest. An empty standby gets a
//! copy of the file first. A standby whose history is not a prefix of the primary's (an old primary
//! that committed what the new one never received) finds the last common transaction by binary
//! search over its digests, writes its extra transactions to a side file for the operator, cuts
//! them off, and says hello again: two histories are never merged. Then transactions are applied
//! in batches (one fsync per batch, as group commit), each checked against the primary's chain
//! digest, published to read-only clients as invalidations, and acknowledged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::error::LinkError;
use super::history::{self, Digest};
use super::wire::{self, Hello, Msg, RefuseCode, ShippedTxn};
use super::{Replication, StorageRepl, tid_after};
use crate::storage::{
    DataRecord, FileStorage, OpenOptions, StorageError, Tid, Transaction, TransactionRecord, TxnMeta, status,
};

/// A primary that sends nothing (not even a status) for this long is considered gone.
const SILENCE: Duration = Duration::from_secs(5);
/// Transactions applied with one fsync, at most.
const APPLY_BATCH: usize = 256;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Follows `primary` for storage `s` until `token` is cancelled (role change, shutdown).
pub(super) async fn follow(repl: Arc<Replication>, s: Arc<StorageRepl>, primary: String, token: CancellationToken) {
    let mut delay = RETRY_MIN;
    loop {
        let outcome = tokio::select! {
            r = follow_once(&repl, &s, &primary, &token) => r,
            _ = token.cancelled() => Err(LinkError::Stopped),
        };
        {
            let mut f = s.follow.lock().expect("follow lock poisoned");
            f.connected = false;
            if let Err(e) = &outcome {
                f.last_error = Some(e.to_string());
            }
        }
        match outcome {
            Err(LinkError::Stopped) => return,
            Err(LinkError::Reseed(why)) => {
                tracing::error!(storage = %s.name, %primary, reason = %why,
                    "this standby cannot follow without a full re-seed: POST /rejoin with \"reseed\": true");
                if let Err(e) = repl.state().update(|st| st.needs_reseed = Some(why.clone())) {
                    tracing::error!(error = %e, "cannot record that a re-seed is needed");
                }
                return;
            }
            Ok(()) => delay = RETRY_MIN,
            Err(e) => {
                tracing::warn!(storage = %s.name, %primary, error = %e, "replication stream lost; reconnecting");
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = token.cancelled() => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, msg: &Msg, epoch: u64) -> Result<(), LinkError> {
    wr.write_all(&wire::encode(msg, epoch)).await?;
    Ok(())
}

/// Reads a frame from the primary, refusing a stale epoch.
async fn recv<R: AsyncRead + Unpin>(repl: &Replication, rd: &mut R) -> Result<(u64, Msg), LinkError> {
    let (epoch, msg) = tokio::time::timeout(SILENCE, wire::read(rd))
        .await
        .map_err(|_| LinkError::Protocol(format!("the primary sent nothing for {SILENCE:?}")))??;
    let ours = repl.epoch();
    if epoch < ours {
        return Err(LinkError::RefusedByPrimary(format!(
            "the primary's epoch {epoch} is below ours ({ours}): it is stale, not following it"
        )));
    }
    Ok((epoch, msg))
}

async fn follow_once(
    repl: &Arc<Replication>,
    s: &Arc<StorageRepl>,
    primary: &str,
    token: &CancellationToken,
) -> Result<(), LinkError> {
    let stream = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(primary))
        .await
        .map_err(|_| LinkError::Protocol(format!("connecting to {primary} timed out")))??;
    let _ = stream.set_nodelay(true);
    // dial -> authenticate the primary (TLS: chain to the CA, a listed identity) -> follow. Nothing
    // from a primary that fails this is read: no copy, no rewind, no epoch.
    match &repl.opts.link {
        super::LinkSecurity::Tls(tls) => {
            let (stream, identity) = tls.connect(stream).await.inspect_err(|e| {
                repl.count_refusal(e.reason().label());
                tracing::warn!(storage = %s.name, %primary, error = %e, "the primary was not authenticated: not following it");
            })?;
            tracing::debug!(storage = %s.name, %primary, %identity, "primary authenticated");
            follow_stream(repl, s, primary, stream, token).await
        }
        super::LinkSecurity::Insecure => follow_stream(repl, s, primary, stream, token).await,
    }
}

/// Follows the primary over a connected and authenticated stream.
async fn follow_stream<S>(
    repl: &Arc<Replication>,
    s: &Arc<StorageRepl>,
    primary: &str,
    stream: S,
    token: &CancellationToken,
) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut blobs: HashMap<(Tid, Tid), PathBuf> = HashMap::new();
    // Handshake: hello, then maybe a snapshot, maybe probing and a rewind, until welcomed.
    let welcome = loop {
        // A demoted primary's last durable transaction may be missing from its history: the
        // keeper stops with the primary role, and a demotion can land between the fsync and the
        // keeper's turn. Recorded now, the primary sees it and we rewind it if it never got it;
        // announced without it, we would keep a transaction the primary does not have.
        s.advance_history()?;
        let (last, digest) = s.history().last();
        let hello = Hello {
            version: wire::VERSION,
            name: repl.opts.name.clone(),
            storage: s.name.clone(),
            last_tid: hex::encode(last),
            digest: hex::encode(digest),
            want_snapshot: last == [0; 8] && s.host.fs.last_transaction() == [0; 8],
        };
        send(&mut wr, &Msg::Hello(hello), repl.epoch()).await?;
        let (epoch, msg) = recv(repl, &mut rd).await?;
        match msg {
            Msg::Welcome(w) => break (epoch, w),
            Msg::SnapshotBegin { size, last_tid } => {
                receive_snapshot(repl, s, &mut rd, size, last_tid).await?;
                let (epoch, msg) = recv(repl, &mut rd).await?;
                match msg {
                    Msg::Welcome(w) => break (epoch, w),
                    other => {
                        return Err(LinkError::Protocol(format!("expected welcome after the copy, got {other:?}")));
                    }
                }
            }
            Msg::Refuse(r) if r.code == RefuseCode::Diverged => {
                tracing::warn!(storage = %s.name, reason = %r.reason, "our history diverged from the primary's; finding the common point");
                let common = find_common(repl, s, &mut rd, &mut wr).await?;
                rewind(s, &common, repl.epoch())?;
            }
            Msg::Refuse(r) if r.code == RefuseCode::Reseed => return Err(LinkError::Reseed(r.reason)),
            Msg::Refuse(r) => return Err(LinkError::RefusedByPrimary(r.reason)),
            other => return Err(LinkError::Protocol(format!("unexpected {other:?} in the handshake"))),
        }
    };
    let (epoch, w) = welcome;
    // Welcomed: our file is a prefix of the primary's history. A former primary may still hold
    // publications its gate kept back; those a rewind cut off are dropped, the rest (the primary
    // has them too) go out, and from here on what we apply is published as applied.
    let dropped = s.host.discard_pending_after(&s.host.fs.last_transaction());
    if dropped > 0 {
        tracing::warn!(storage = %s.name, dropped, "unacknowledged transactions of our time as primary were never published");
    }
    repl.write_lease.release_hold();
    s.host.set_gate(None);
    repl.adopt_epoch(epoch)?;
    set_out_of_sync(repl, w.out_of_sync)?;
    if !w.sync {
        set_synced(repl, false)?;
    } else if !w.out_of_sync && s.host.fs.last_transaction() >= wire::parse_tid(&w.primary_last_tid)? {
        // Already holding everything the primary has.
        set_synced(repl, true)?;
    }
    {
        let mut f = s.follow.lock().expect("follow lock poisoned");
        f.connected = true;
        f.last_error = None;
        f.applied = s.host.fs.last_transaction();
        f.primary_last_tid = wire::parse_tid(&w.primary_last_tid)?;
    }
    tracing::info!(storage = %s.name, %primary, epoch, out_of_sync = w.out_of_sync, sync = w.sync, "following the primary");
    // Acknowledge what we hold already (a copy just received, or transactions applied before a
    // reconnection): a sync primary may be waiting for exactly those.
    send(&mut wr, &Msg::Ack { tid: s.host.fs.last_transaction() }, repl.epoch()).await?;

    // A reader task keeps frames coming while a batch is applied; the applier drains what has
    // arrived, applies it with one fsync, and acknowledges the last transaction.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(APPLY_BATCH);
    let reader = {
        let repl = repl.clone();
        tokio::spawn(async move {
            loop {
                match recv(&repl, &mut rd).await {
                    Ok((_, m)) => {
                        if tx.send(m).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    let applied = repl.metrics.repl_applied_transactions.get_or_create(&crate::metrics::storage_label(&s.name)).clone();
    let result = async {
        loop {
            let Some(first) = rx.recv().await else { break };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Txn(t) => batch.push(*t),
                    Msg::Blob { oid, tid, last, data } => receive_blob_chunk(s, &mut blobs, oid, tid, last, &data)?,
                    Msg::Status(st) => {
                        set_out_of_sync(repl, st.out_of_sync)?;
                        s.follow.lock().expect("follow lock poisoned").primary_last_tid =
                            wire::parse_tid(&st.primary_last_tid)?;
                        // A mark cleared while no commits flow: no batch will come to say we are
                        // in sync, so the status that cleared it must.
                        synced_if_caught_up(repl, s, st.sync)?;
                    }
                    Msg::Pack { pack_tid } => {
                        // Earlier transactions first, then pack beside the stream, as the primary did.
                        if !batch.is_empty() {
                            let last = apply_batch(s, std::mem::take(&mut batch), &mut blobs).await?;
                            applied.inc_by(last.1);
                            s.follow.lock().expect("follow lock poisoned").applied = last.0;
                            send(&mut wr, &Msg::Ack { tid: last.0 }, repl.epoch()).await?;
                        }
                        let host = s.host.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = host.pack(&pack_tid) {
                                tracing::error!(error = %e, "the pack the primary asked for failed; this standby keeps its full history");
                            }
                        });
                    }
                    Msg::Refuse(r) if r.code == RefuseCode::Reseed => return Err(LinkError::Reseed(r.reason)),
                    Msg::Refuse(r) => return Err(LinkError::RefusedByPrimary(r.reason)),
                    other => return Err(LinkError::Protocol(format!("unexpected {other:?} in the stream"))),
                }
                if batch.len() < APPLY_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if batch.is_empty() {
                continue;
            }
            if token.is_cancelled() {
                return Err(LinkError::Stopped);
            }
            let last = apply_batch(s, batch, &mut blobs).await?;
            applied.inc_by(last.1);
            {
                let mut f = s.follow.lock().expect("follow lock poisoned");
                f.applied = last.0;
                f.primary_last_tid = f.primary_last_tid.max(last.0);
            }
            send(&mut wr, &Msg::Ack { tid: last.0 }, repl.epoch()).await?;
            synced_if_caught_up(repl, s, w.sync)?;
        }
        Ok(())
    }
    .await;
    reader.abort();
    match reader.await {
        Ok(Err(e)) if result.is_ok() => Err(e),
        _ => result,
    }
}

/// Marks this standby synced once it has applied everything its sync-mode primary has, unless
/// that primary has it marked out of sync.
fn synced_if_caught_up(repl: &Replication, s: &StorageRepl, primary_sync: bool) -> Result<(), LinkError> {
    let caught_up = {
        let f = s.follow.lock().expect("follow lock poisoned");
        f.applied >= f.primary_last_tid
    };
    if caught_up && primary_sync && !repl.state().get().out_of_sync {
        set_synced(repl, true)?;
    }
    Ok(())
}

/// Persists whether this standby holds every commit its sync-mode primary acknowledged.
fn set_synced(repl: &Replication, synced: bool) -> Result<(), LinkError> {
    let mut st = repl.state();
    if st.get().synced != synced {
        st.update(|s| s.synced = synced)?;
        tracing::info!(synced, "standby sync status changed");
    }
    Ok(())
}

/// Persists the primary's word on whether we are out of sync.
fn set_out_of_sync(repl: &Replication, out_of_sync: bool) -> Result<(), LinkError> {
    let mut st = repl.state();
    if st.get().out_of_sync != out_of_sync {
        st.update(|s| {
            s.out_of_sync = out_of_sync;
            if out_of_sync {
                s.synced = false;
            }
        })?;
        if out_of_sync {
            tracing::warn!(
                "the primary marks this standby out of sync: it will not be promoted automatically until caught up"
            );
        } else {
            tracing::info!("this standby is in sync again");
        }
    }
    Ok(())
}

fn receive_blob_chunk(
    s: &StorageRepl,
    blobs: &mut HashMap<(Tid, Tid), PathBuf>,
    oid: Tid,
    tid: Tid,
    last: bool,
    data: &[u8],
) -> Result<(), LinkError> {
    use std::io::Write;
    let Some(dir) = &s.host.blobs else {
        return Err(LinkError::Protocol("the primary sends blobs but this storage has no blob directory".into()));
    };
    let path = match blobs.get(&(oid, tid)) {
        Some(p) => p.clone(),
        None => {
            let (p, _) = dir.temp_file()?;
            blobs.insert((oid, tid), p.clone());
            p
        }
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
    f.write_all(data)?;
    if last {
        // Complete: staged until its transaction is applied (then moved into place).
        f.sync_all()?;
    }
    Ok(())
}

/// The transaction as iteration would show it, for the digest check.
fn as_record(t: &ShippedTxn) -> TransactionRecord {
    TransactionRecord {
        tid: t.tid,
        status: t.status,
        user: t.user.clone(),
        description: t.description.clone(),
        extension: t.extension.clone(),
        records: t
            .records
            .iter()
            .map(|r| DataRecord { oid: r.oid, tid: r.tid, data: r.data.clone(), data_txn: r.data_txn, pos: 0 })
            .collect(),
        pos: 0,
        tlen: 0,
    }
}

/// One applied transaction: commit sequence, tid, oids, chain digest.
type Applied = (u64, Tid, Vec<Tid>, Digest);

/// Applies transactions (each checked against the chain), one fsync for all, then records their
/// digests and publishes their invalidations. Returns the last tid and the count.
async fn apply_batch(
    s: &Arc<StorageRepl>,
    batch: Vec<ShippedTxn>,
    blobs: &mut HashMap<(Tid, Tid), PathBuf>,
) -> Result<(Tid, u64), LinkError> {
    let mut chain = s.history().last().1;
    for t in &batch {
        let expected = history::chain_next(&chain, &history::txn_digest(&as_record(t)));
        if expected != t.chain {
            return Err(LinkError::Protocol(format!(
                "transaction {} does not match the primary's history digest (damaged in transit, or the histories differ)",
                hex::encode(t.tid)
            )));
        }
        chain = expected;
    }
    let mut staged = Vec::new();
    for t in &batch {
        for r in t.records.iter().filter(|r| r.blob) {
            let path = blobs
                .remove(&(r.oid, r.tid))
                .ok_or_else(|| LinkError::Protocol(format!("blob of {} missing", hex::encode(r.oid))))?;
            staged.push((r.oid, r.tid, path));
        }
    }
    // No client commits on a standby, but promotion must not interleave with an apply.
    let _lock = s.host.commit_lock.clone().lock_owned().await;
    let host = s.host.clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<Vec<Applied>, LinkError> {
        if let Some(dir) = &host.blobs {
            for (oid, tid, path) in &staged {
                dir.commit(path, oid, tid)?;
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for t in batch {
            let meta = TxnMeta {
                tid: Some(t.tid),
                status: if t.status == status::PACKED { status::PACKED } else { status::COMMITTED },
                ..TxnMeta::new(t.user, t.description, t.extension)
            };
            let mut txn = Transaction::begin(meta)?;
            let mut oids = Vec::with_capacity(t.records.len());
            for r in t.records {
                oids.push(r.oid);
                txn.restore(r.oid, r.tid, r.data, r.data_txn)?;
            }
            if let Err(e) = host.fs.vote(&mut txn) {
                let _ = host.fs.abort(&mut txn);
                return Err(e.into());
            }
            let committed = host.fs.finish_nosync(&mut txn)?;
            out.push((committed.seq, t.tid, oids, t.chain));
        }
        if let Some((seq, ..)) = out.last() {
            host.fs.wait_durable(*seq)?;
        }
        Ok(out)
    })
    .await
    .map_err(|e| LinkError::Protocol(format!("apply task failed: {e}")))?
    .inspect_err(|e| storage_failed(s, e))?;
    let n = applied.len() as u64;
    let mut last = [0; 8];
    {
        let mut h = s.history();
        for (_, tid, _, digest) in &applied {
            h.append(*tid, *digest).inspect_err(|e| storage_failed(s, e))?;
        }
    }
    if let Some(was) = s.follow.lock().expect("follow lock poisoned").storage_error.take() {
        tracing::info!(storage = %s.name, previous_error = %was, "writing the storage works again");
    }
    for (seq, tid, oids, _) in applied {
        s.host.queue_publication(seq, tid, oids, None);
        last = tid;
    }
    s.host.publish_durable();
    Ok((last, n))
}

/// This standby could not write what it was sent (ENOSPC, EIO, ...): it reports itself not in
/// sync, with the error, until an apply succeeds again, so that no supervisor promotes it.
fn storage_failed(s: &StorageRepl, e: &dyn std::fmt::Display) {
    tracing::error!(storage = %s.name, error = %e, "cannot write the replicated transactions: this standby is not in sync until it can");
    s.follow.lock().expect("follow lock poisoned").storage_error = Some(e.to_string());
}

/// Binary search over our history for the last transaction the primary also has.
async fn find_common<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    repl: &Replication,
    s: &StorageRepl,
    rd: &mut R,
    wr: &mut W,
) -> Result<Tid, LinkError> {
    let n = s.history().len();
    // Entry `lo` matches (-1: the empty history), entry `hi` does not (the last one was refused).
    let (mut lo, mut hi) = (-1i64, n as i64 - 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let (tid, digest) = s.history().get(mid as u64)?;
        send(wr, &Msg::Probe { tid, digest }, repl.epoch()).await?;
        match recv(repl, rd).await?.1 {
            Msg::ProbeReply { matches: true } => lo = mid,
            Msg::ProbeReply { matches: false } => hi = mid,
            other => return Err(LinkError::Protocol(format!("expected a probe reply, got {other:?}"))),
        }
    }
    Ok(if lo < 0 { [0; 8] } else { s.history().get(lo as u64)?.0 })
}

/// Saves the transactions after `common` to a side file, then cuts them off.
fn rewind(s: &StorageRepl, common: &Tid, epoch: u64) -> Result<(), LinkError> {
    let fs = &s.host.fs;
    let (_, later) = fs.position_after(common)?;
    if later.iter().any(|(_, st)| *st == status::PACKED) {
        return Err(LinkError::Reseed(format!(
            "this server packed past the last transaction it shares with the primary ({})",
            hex::encode(common)
        )));
    }
    let side = PathBuf::from(format!("{}.diverged-e{epoch}-{}.fs", fs.path().display(), hex::encode(common)));
    let copied = save_side_file(fs, common, &side)?;
    // Clients may hold what is about to disappear: they reconnect and revalidate.
    s.host.close_all();
    let cut = fs.truncate_after(common).map_err(|e| match e {
        StorageError::Pack(why) => LinkError::Reseed(why),
        e => e.into(),
    })?;
    s.history().truncate_after(common)?;
    s.host.reload_history();
    tracing::warn!(storage = %s.name, common = %hex::encode(common), removed = cut.removed.len(), copied,
        side_file = %side.display(), "rewound to the last transaction shared with the primary; the removed transactions are in the side file");
    Ok(())
}

/// Writes the transactions after `common` to a new FileStorage (data inline, no backpointers), which
/// Python's tools can read.
fn save_side_file(fs: &FileStorage, common: &Tid, side: &std::path::Path) -> Result<usize, LinkError> {
    let out = FileStorage::open(side, OpenOptions { create: true, ..Default::default() })?;
    let next = tid_after(common);
    let mut n = 0;
    for t in fs.iterator(Some(&next), None)? {
        let t = t?;
        let meta = TxnMeta { tid: Some(t.tid), ..TxnMeta::new(t.user, t.description, t.extension) };
        let mut txn = Transaction::begin(meta)?;
        for r in t.records {
            txn.restore(r.oid, r.tid, r.data, None)?;
        }
        out.vote(&mut txn)?;
        out.tpc_finish(&mut txn)?;
        n += 1;
    }
    out.close()?;
    Ok(n)
}

/// Receives a copy of the primary's file (and blobs, and history digests) and puts it in place.
async fn receive_snapshot<R: AsyncRead + Unpin>(
    repl: &Replication,
    s: &Arc<StorageRepl>,
    rd: &mut R,
    size: u64,
    last_tid: Tid,
) -> Result<(), LinkError> {
    use std::io::Write;
    tracing::info!(storage = %s.name, bytes = size, through = %hex::encode(last_tid), "receiving a copy of the primary's file");
    let seed = PathBuf::from(format!("{}.seed", s.host.fs.path().display()));
    let mut file = std::fs::File::create(&seed)?;
    let mut received = 0u64;
    let mut blobs = HashMap::new();
    let chain = loop {
        match recv(repl, rd).await?.1 {
            Msg::SnapshotData(d) => {
                received += d.len() as u64;
                if received > size {
                    return Err(LinkError::Protocol("the copy is longer than announced".into()));
                }
                file.write_all(&d)?;
            }
            Msg::Blob { oid, tid, last, data } => {
                receive_blob_chunk(s, &mut blobs, oid, tid, last, &data)?;
                if last && let (Some(dir), Some(path)) = (&s.host.blobs, blobs.remove(&(oid, tid))) {
                    dir.commit(&path, &oid, &tid)?;
                }
            }
            Msg::SnapshotEnd { chain } => break chain,
            other => return Err(LinkError::Protocol(format!("unexpected {other:?} in a copy"))),
        }
    };
    if received != size {
        return Err(LinkError::Protocol(format!("the copy has {received} bytes, {size} announced")));
    }
    file.sync_all()?;
    drop(file);
    let host = s.host.clone();
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || -> Result<(), LinkError> {
        host.close_all();
        host.fs.replace_with(&seed)?;
        s2.history().replace(&chain)?;
        if s2.history().last().0 != last_tid || host.fs.last_transaction() != last_tid {
            return Err(LinkError::Protocol("the copy does not end where the primary said".into()));
        }
        host.reload_history();
        Ok(())
    })
    .await
    .map_err(|e| LinkError::Protocol(format!("seeding task failed: {e}")))??;
    tracing::info!(storage = %s.name, through = %hex::encode(last_tid), "copy of the primary's file in place");
    Ok(())
}
