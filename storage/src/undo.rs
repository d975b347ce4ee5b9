//! Transactional undo and the undo log, with FileStorage's rules (`_transactionalUndoRecord`): an
//! undo writes, for each record of the undone transaction, a backpointer to the revision before it
//! (or "no data" when undoing a creation). It is allowed when that record is still current, or when
//! the current data equals the data being undone. Otherwise FileStorage calls
//! `tryToResolveConflict(oid, current tid, undone tid, revision before, current data)`, and so do we
//! (`resolution`, for the classes `zeo-resolve` handles: BTrees, `Length`): the merged record is
//! written as data. When that refuses, or the storage leaves resolution to clients, the object
//! fails and the undo raises MultipleUndoErrors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::{Result, StorageError};
use super::filestorage::FileStorage;
use super::format::{DATA_HEADER_LEN, status};
use super::records::{load_back, read_any_data_header, read_backpointer, read_data_header, read_txn_meta, txn_find};
use super::resolution::try_to_resolve;
use super::txn::Tid;
use super::vote::{Body, VoteCtx};
use zeo_proto::p64;
use zeo_proto::timestamp::TimeStamp;

/// The opaque undo id ZEO clients see: base64 of the tid without the trailing newline.
pub fn undo_id(tid: &Tid) -> String {
    STANDARD.encode(tid)
}

/// Parses an undo id back into a tid.
pub fn parse_undo_id(id: &[u8]) -> Result<Tid> {
    let raw = STANDARD.decode(id.trim_ascii()).map_err(|_| StorageError::Undo("Invalid transaction id".into()))?;
    raw.try_into().map_err(|_| StorageError::Undo("Invalid transaction id".into()))
}

/// One undo log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoEntry {
    pub id: String,
    pub tid: Tid,
    pub time: f64,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
    /// Length of the transaction record.
    pub size: u64,
}

impl FileStorage {
    /// Undoable transactions, newest first, skipping `first` matches and stopping at `last` (a negative
    /// `last` means `first - last` entries) or at the first packed transaction.
    pub fn undo_log(
        &self,
        first: i64,
        last: i64,
        filter: Option<&dyn Fn(&UndoEntry) -> bool>,
    ) -> Result<Vec<UndoEntry>> {
        let last = if last < 0 { first.saturating_sub(last) } else { last };
        let s = self.shared();
        let mut pos = s.end;
        let mut i: i64 = 0;
        let mut out = Vec::new();
        while i < last && pos > 4 {
            let tpos = super::records::prev_txn_pos(&s.file, pos)?;
            pos = tpos;
            let (th, user, description, extension) = read_txn_meta(&s.file, tpos, s.end)?;
            if th.status == status::PACKED {
                break;
            }
            if th.status != status::COMMITTED {
                continue;
            }
            let tid = p64(th.tid);
            let entry = UndoEntry {
                id: undo_id(&tid),
                tid,
                time: TimeStamp::from_u64(th.tid).time_time(),
                user,
                description,
                extension,
                size: th.tlen,
            };
            if filter.is_none_or(|f| f(&entry)) {
                if i >= first {
                    out.push(entry);
                }
                i += 1;
            }
        }
        Ok(out)
    }
}

/// Appends the undo records for transaction `target` to the vote; returns the oids it changes.
pub(crate) fn undo_records(ctx: &mut VoteCtx<'_>, target: u64) -> Result<Vec<u64>> {
    let tpos = txn_find(ctx.file, ctx.end, target, true)?
        .ok_or_else(|| StorageError::Undo("Invalid transaction id".into()))?;
    let th = super::records::read_txn_header(ctx.file, tpos, ctx.end)?;
    if th.status != status::COMMITTED {
        return Err(StorageError::Undo("non-undoable transaction".into()));
    }
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    let mut failures: Vec<(u64, String)> = Vec::new();
    let mut changed = Vec::new();
    while pos < tend {
        let h = read_any_data_header(ctx.file, pos, ctx.end)?;
        failures.retain(|(o, _)| *o != h.oid);
        match undo_one(ctx, h.oid, pos, h.prev) {
            Err(reason) => failures.push((h.oid, reason)),
            Ok((body, ipos)) => {
                ctx.push(h.oid, ctx.tid, ipos, body);
                changed.push(h.oid);
            }
        }
        pos = super::records::next_record(ctx.file, pos, &h, tend)?;
    }
    if !failures.is_empty() {
        return Err(StorageError::MultipleUndo(failures.into_iter().map(|(o, r)| (p64(o), r)).collect()));
    }
    Ok(changed)
}

/// Decides one record: `Ok((body to write, prev))`, the body being a backpointer or the merged
/// record, or the reason it cannot be undone.
fn undo_one(ctx: &VoteCtx<'_>, oid: u64, pos: u64, pre: u64) -> Result<(Body, u64), String> {
    let ipos = ctx.committed_pos(oid).unwrap_or(0);
    let in_txn = ctx.tindex.get(&oid).map(|&i| &ctx.records[i]);
    let tipos = in_txn.map_or(ipos, |r| r.pos);
    if tipos != pos {
        // Something changed the object after the transaction being undone: allowed only if the data
        // it holds now is the data being undone.
        let (cdataptr, current) = match in_txn {
            Some(r) => match &r.body {
                Body::Data(d) => (r.pos, Some(d.clone())),
                Body::Back(b) => (*b, None),
            },
            None => {
                let h = read_data_header(ctx.file, ipos, ctx.end, oid).map_err(|e| e.to_string())?;
                if h.plen > 0 {
                    (
                        ipos,
                        Some(ctx.file.read_vec_at(ipos + DATA_HEADER_LEN, h.plen, ctx.end).map_err(|e| e.to_string())?),
                    )
                } else {
                    (read_backpointer(ctx.file, ipos).map_err(|e| e.to_string())?, None)
                }
            }
        };
        if cdataptr != pos {
            let undone = data_at(ctx, oid, pos)?;
            let current = match current {
                Some(d) => d,
                None => data_at(ctx, oid, cdataptr)?,
            };
            if undone != current {
                if pre == 0 {
                    return Err("Can't undo an add transaction followed by conflicting transactions.".into());
                }
                // FileStorage's message, its "%s" never filled in.
                let before = data_at(ctx, oid, pre).map_err(|_| "_loadBack() failed for %s".to_owned())?;
                return match try_to_resolve(ctx, oid, &undone, &current, &before) {
                    Some(merged) => Ok((Body::Data(merged), ipos)),
                    None => Err("Some data were modified by a later transaction".into()),
                };
            }
        }
    }
    Ok((Body::Back(pre), ipos))
}

/// The data of the record at `pos` (following backpointers); a failure is an undo failure.
fn data_at(ctx: &VoteCtx<'_>, oid: u64, pos: u64) -> Result<Vec<u8>, String> {
    if pos == 0 {
        return Err("_loadBack() failed".into());
    }
    let h = read_data_header(ctx.file, pos, ctx.end, oid).map_err(|e| e.to_string())?;
    if h.plen > 0 {
        return ctx.file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, ctx.end).map_err(|e| e.to_string());
    }
    let back = read_backpointer(ctx.file, pos).map_err(|e| e.to_string())?;
    match load_back(ctx.file, oid, pos, back, ctx.end).map_err(|e| e.to_string())? {
        Some((d, _, _)) => Ok(d),
        None => Err("_loadBack() failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_ids_round_trip_like_python() {
        // base64.encodebytes(bytes.fromhex('040d2a9043ad2911')).rstrip()
        let tid = [0x04, 0x0d, 0x2a, 0x90, 0x43, 0xad, 0x29, 0x11];
        assert_eq!(undo_id(&tid), "BA0qkEOtKRE=");
        assert_eq!(parse_undo_id(b"BA0qkEOtKRE=\n").unwrap(), tid);
        assert!(parse_undo_id(b"not base64!").is_err());
    }
}
