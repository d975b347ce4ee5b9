//! The write path: vote (assign the tid, check conflicts, write the record with status 'c'), finish
//! (flip the status byte), sync (one fdatasync for every finished transaction, then publish), abort.
//!
//! Group commit: `finish_nosync` releases the commit slot as soon as the status byte is written, so the
//! next transaction can vote while an fsync is in flight; `sync` then makes every finished transaction
//! durable with one fsync. `tpc_finish` = `finish_nosync` + wait until durable: when it returns, the
//! transaction survives a crash, exactly as with one fsync per commit.

use super::error::{Result, StorageError};
use super::filestorage::{FileStorage, PendingTxn, VotedTxn};
use super::format::{RecordBody, TXN_HEADER_LEN, TxnWriter, status};
use super::records::{data_find, live_tid_at, read_data_header, txn_find};
use super::resolution::resolve_store;
use super::txn::{Op, Tid, Transaction, TxnState, WriteConflict};
use super::vote::{Body, VoteCtx};
use zeo_proto::timestamp::TimeStamp;
use zeo_proto::{p64, u64_of};

/// What a vote produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Written; `finish` or `abort` next. `undone` lists the oids an undo changed (they must be
    /// invalidated like stored ones); `resolved` the stored oids whose conflict the storage merged
    /// (what was written is not what the caller stored: FileStorage's `tpc_vote` result).
    Voted { tid: Tid, undone: Vec<[u8; 8]>, resolved: Vec<[u8; 8]> },
    /// Nothing was written: these stores conflict. They were dropped from the transaction; the caller
    /// may store resolved data (based on `committed`) and vote again, or abort.
    Conflicts(Vec<WriteConflict>),
}

/// What became of a finished transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Durable,
    /// Rolled back: an fsync failed before it was durable.
    Lost,
    Pending,
}

/// A finished transaction and its place in the durability order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub tid: Tid,
    /// Durable once `FileStorage::durable_seq()` reaches it.
    pub seq: u64,
}

impl FileStorage {
    /// Votes: assigns the tid (strictly increasing, TimeStamp rules), applies the buffered operations
    /// against the committed state, and writes the transaction with status 'c'. Read conflicts,
    /// deletion conflicts, missing objects and undo failures are errors (the transaction stays open and
    /// should be aborted). A write conflict is merged when the storage resolves conflicts and the class
    /// is one `zeo-resolve` handles (`resolution`); any other is returned as a value.
    pub fn vote(&self, txn: &mut Transaction) -> Result<VoteOutcome> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        if txn.state != TxnState::Open {
            return Err(StorageError::Transaction("vote on a transaction that is not open".into()));
        }
        let mut w = self.writer();
        if w.poisoned {
            return Err(StorageError::Poisoned);
        }
        if w.voted.is_some() {
            return Err(StorageError::Transaction("another transaction is voted and not yet finished".into()));
        }
        let tid = match txn.meta.tid {
            Some(t) if u64_of(t) > w.last_tid => u64_of(t),
            Some(t) => return Err(StorageError::TidNotIncreasing { given: t, last: p64(w.last_tid) }),
            None => TimeStamp::now().later_than(&TimeStamp::from_u64(w.last_tid)).as_u64(),
        };
        let s = self.shared();
        let header_len =
            TXN_HEADER_LEN + (txn.meta.user.len() + txn.meta.description.len() + txn.meta.extension.len()) as u64;
        let mut ctx =
            VoteCtx::new(&s.file, &s.index, &w.overlay, w.pos, tid, w.pos + header_len, self.conflict_resolution);
        let mut conflicts = Vec::new();
        let mut undone = Vec::new();
        let mut resolved = Vec::new();
        let mut oids_seen = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Store { oid, serial, data } => {
                    let oid_n = u64_of(*oid);
                    let prev = ctx.committed_pos(oid_n);
                    let mut record = data.clone();
                    if let Some(p) = prev {
                        let h = read_data_header(ctx.file, p, ctx.end, oid_n)?;
                        if h.tid != u64_of(*serial) {
                            match resolve_store(&ctx, oid_n, p, u64_of(*serial), data) {
                                Some(merged) => {
                                    record = merged;
                                    resolved.retain(|o| o != oid);
                                    resolved.push(*oid);
                                }
                                None => {
                                    conflicts.push(WriteConflict {
                                        oid: *oid,
                                        committed: p64(h.tid),
                                        expected: *serial,
                                        data: data.clone(),
                                    });
                                    continue;
                                }
                            }
                        }
                    }
                    oids_seen.push(oid_n);
                    ctx.push(oid_n, tid, prev.unwrap_or(0), Body::Data(record));
                }
                Op::CheckCurrent { oid, serial } => {
                    let oid_n = u64_of(*oid);
                    let pos = ctx.committed_pos(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
                    let committed =
                        live_tid_at(ctx.file, pos, ctx.end, oid_n)?.ok_or(StorageError::PosKey { oid: *oid })?;
                    if committed != u64_of(*serial) {
                        return Err(StorageError::ReadConflict {
                            oid: *oid,
                            committed: p64(committed),
                            expected: *serial,
                        });
                    }
                }
                Op::Delete { oid, serial } => {
                    let oid_n = u64_of(*oid);
                    let p = ctx.committed_pos(oid_n).ok_or(StorageError::PosKey { oid: *oid })?;
                    let h = read_data_header(ctx.file, p, ctx.end, oid_n)?;
                    if h.tid != u64_of(*serial) {
                        return Err(StorageError::Conflict { oid: *oid, committed: p64(h.tid), expected: *serial });
                    }
                    ctx.push(oid_n, tid, p, Body::Back(0));
                }
                Op::Restore { oid, serial, data, prev_txn } => {
                    let oid_n = u64_of(*oid);
                    oids_seen.push(oid_n);
                    let back = match prev_txn {
                        Some(pt) => match txn_find(ctx.file, ctx.end, u64_of(*pt), false)? {
                            Some(tpos) => data_find(ctx.file, ctx.end, tpos, oid_n, data.as_deref())?,
                            None => 0,
                        },
                        None => 0,
                    };
                    let prev = ctx.committed_pos(oid_n).unwrap_or(0);
                    let body = match (back, data) {
                        (b, _) if b != 0 => Body::Back(b),
                        (_, Some(d)) => Body::Data(d.clone()),
                        (_, None) => Body::Back(0),
                    };
                    ctx.push(oid_n, u64_of(*serial), prev, body);
                }
                Op::Undo { tid: target } => {
                    undone.extend(super::undo::undo_records(&mut ctx, u64_of(*target))?.into_iter().map(p64));
                }
            }
        }
        if !conflicts.is_empty() {
            let oids: Vec<_> = conflicts.iter().map(|c| c.oid).collect();
            drop(s);
            drop(w);
            txn.drop_stores(&oids);
            return Ok(VoteOutcome::Conflicts(conflicts));
        }
        let tpos = w.pos;
        let mut buf = Vec::with_capacity(usize::try_from(ctx.next_pos() - tpos + 8).unwrap_or(0));
        let mut tw = TxnWriter::begin(
            &mut buf,
            tpos,
            tid,
            status::CHECKPOINT,
            &txn.meta.user,
            &txn.meta.description,
            &txn.meta.extension,
        );
        for r in &ctx.records {
            let body = match &r.body {
                Body::Data(d) => RecordBody::Data(d),
                Body::Back(b) => RecordBody::Back(*b),
            };
            let at = tw.data_record(r.oid, r.tid, r.prev, body);
            debug_assert_eq!(at, r.pos);
        }
        let tlen = tw.finish();
        if tpos + tlen + 8 >= super::index::MAX_POS {
            return Err(StorageError::FileTooLarge { path: self.path.clone(), limit: super::index::MAX_POS });
        }
        let records: Vec<(u64, u64)> = ctx.records.iter().map(|r| (r.oid, r.pos)).collect();
        let file = s.file.clone();
        drop(s);
        if let Err(e) = file.write_all_at(&buf, tpos) {
            // Leave no partial record behind (ENOSPC, EIO); if even that fails, the 'c' tail is cut at
            // the next open and the next vote overwrites it.
            if let Err(te) = file.set_len(tpos) {
                tracing::error!(error = %te, "could not cut a failed vote's partial record");
            }
            return Err(e);
        }
        {
            let mut oids = self.oids.lock().expect("oid allocator lock poisoned");
            for oid in oids_seen {
                oids.saw(oid);
            }
        }
        let ticket = w.next_ticket;
        w.next_ticket += 1;
        w.voted = Some(VotedTxn { ticket, tpos, tlen, tid, status: txn.meta.status, records });
        txn.state = TxnState::Voted { ticket };
        Ok(VoteOutcome::Voted { tid: p64(tid), undone, resolved })
    }

    /// Finishes and waits until the transaction is durable.
    pub fn tpc_finish(&self, txn: &mut Transaction) -> Result<Tid> {
        let c = self.finish_nosync(txn)?;
        self.wait_durable(c.seq)?;
        Ok(c.tid)
    }

    /// Flips the status byte and frees the commit slot; the transaction is durable (and visible to
    /// readers) only after a `sync` covering its `seq`. Never report success to a client before that.
    pub fn finish_nosync(&self, txn: &mut Transaction) -> Result<Committed> {
        let TxnState::Voted { ticket } = txn.state else {
            return Err(StorageError::Transaction("finish on a transaction that was not voted".into()));
        };
        let mut w = self.writer();
        let Some(v) = w.voted.take_if(|v| v.ticket == ticket) else {
            txn.state = TxnState::Done;
            return Err(StorageError::Transaction("the voted transaction was rolled back after an I/O error".into()));
        };
        let file = self.shared().file.clone();
        if let Err(e) = file.write_all_at(&[v.status], v.tpos + 16) {
            let _ = file.set_len(v.tpos);
            txn.state = TxnState::Done;
            return Err(e);
        }
        for &(oid, pos) in &v.records {
            w.overlay.insert(oid, pos);
        }
        let end = v.tpos + v.tlen + 8;
        w.pos = end;
        w.last_tid = v.tid;
        w.pending.push(PendingTxn { seq: v.ticket, end, tid: v.tid, records: v.records });
        txn.state = TxnState::Done;
        Ok(Committed { tid: p64(v.tid), seq: v.ticket })
    }

    /// Abandons a transaction; a voted one is cut from the file. Aborting twice, or an open
    /// transaction, is a no-op (ZEO's tpc_abort after a failed vote).
    pub fn abort(&self, txn: &mut Transaction) -> Result<()> {
        if let TxnState::Voted { ticket } = txn.state {
            let mut w = self.writer();
            if let Some(v) = w.voted.take_if(|v| v.ticket == ticket) {
                let file = self.shared().file.clone();
                if let Err(e) = file.set_len(v.tpos) {
                    // The next vote overwrites the record; a crash before that leaves a 'c' tail that
                    // open cuts off. Nothing committed is at risk.
                    tracing::warn!(error = %e, "could not cut an aborted transaction");
                }
            }
        }
        txn.state = TxnState::Done;
        Ok(())
    }

    /// Highest commit sequence number that is durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared().durable_seq
    }

    /// One fdatasync for every finished transaction, then publishes them to readers. On failure every
    /// non-durable transaction is rolled back (cut from the file) and reported lost; if even that
    /// cannot be made durable, the storage refuses writes until reopened.
    pub fn sync(&self) -> Result<u64> {
        let serial = self.sync_lock.lock().expect("sync lock poisoned");
        self.sync_locked(serial)
    }

    /// `sync` with the sync lock already held (it is released on return).
    fn sync_locked(&self, _serial: std::sync::MutexGuard<'_, ()>) -> Result<u64> {
        let (batch_end, file) = {
            let w = self.writer();
            if w.poisoned {
                return Err(StorageError::Poisoned);
            }
            match w.pending.last() {
                None => return Ok(self.durable_seq()),
                Some(p) => (p.seq, self.shared().file.clone()),
            }
        };
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        let took = started.elapsed().as_secs_f64();
        let mut w = self.writer();
        match synced {
            Ok(()) => {
                let batch: Vec<PendingTxn> = {
                    let n = w.pending.iter().take_while(|p| p.seq <= batch_end).count();
                    w.pending.drain(..n).collect()
                };
                if let Some(obs) = self.sync_observer.get() {
                    (obs.0)(took, batch.len() as u64);
                }
                let mut s = self.shared.write().expect("storage state lock poisoned");
                for p in &batch {
                    for &(oid, pos) in &p.records {
                        s.index.insert(oid, pos);
                        if w.overlay.get(&oid) == Some(&pos) {
                            w.overlay.remove(&oid);
                        }
                    }
                    s.end = p.end;
                    s.last_tid = p.tid;
                    s.durable_seq = p.seq;
                }
                Ok(s.durable_seq)
            }
            Err(e) => {
                let (end, last_tid) = {
                    let s = self.shared();
                    (s.end, s.last_tid)
                };
                tracing::error!(error = %e, durable_end = end, lost = w.pending.len(), "fsync failed; rolling back every non-durable transaction");
                {
                    let mut s = self.shared.write().expect("storage state lock poisoned");
                    s.lost_seqs.extend(w.pending.iter().map(|p| p.seq));
                }
                w.pending.clear();
                w.overlay.clear();
                w.voted = None;
                w.pos = end;
                w.last_tid = last_tid;
                if let Err(e2) = file.set_len(end).and_then(|_| file.sync_data()) {
                    tracing::error!(error = %e2, "cannot restore the file after a failed fsync; refusing writes until reopened");
                    w.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Whether the commit `seq` is durable, lost (rolled back after a failed fsync), or not yet known.
    pub fn commit_outcome(&self, seq: u64) -> CommitOutcome {
        let s = self.shared();
        if s.lost_seqs.contains(&seq) {
            CommitOutcome::Lost
        } else if seq <= s.durable_seq {
            CommitOutcome::Durable
        } else {
            CommitOutcome::Pending
        }
    }

    /// Returns once `seq` is durable, syncing if nobody else has.
    ///
    /// Group commit: a caller that finds an fsync in flight waits for it, then checks again before
    /// syncing itself, so transactions finished during one fsync share the next one.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let lost = || Err(StorageError::Transaction("the transaction was rolled back: an fsync failed".into()));
        match self.commit_outcome(seq) {
            CommitOutcome::Durable => return Ok(()),
            CommitOutcome::Lost => return lost(),
            CommitOutcome::Pending => {}
        }
        let serial = self.sync_lock.lock().expect("sync lock poisoned");
        match self.commit_outcome(seq) {
            CommitOutcome::Durable => return Ok(()),
            CommitOutcome::Lost => return lost(),
            CommitOutcome::Pending => {}
        }
        self.sync_locked(serial)?;
        match self.commit_outcome(seq) {
            CommitOutcome::Durable => Ok(()),
            _ => lost(),
        }
    }
}
