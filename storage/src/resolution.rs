//! Where a vote and an undo meet conflict resolution: the storage's seam to `zeo-resolve`.
//!
//! Python's FileStorage calls `tryToResolveConflict` in two places, and so do we: `store`, when
//! the revision a store was based on is no longer current (old = that revision, committed = the
//! current one, new = the store), and `_transactionalUndoRecord`, when a later transaction
//! changed an object the undone transaction wrote (old = the undone revision, committed = the
//! current one, new = the revision before the undone one). Only the classes `zeo-resolve`
//! handles are resolved; a refusal leaves the caller where it was without resolution.

use zeo_resolve::Resolver;

use super::records::{check_backwards, read_data_header, record_data};
use super::vote::VoteCtx;

/// Whether the storage resolves write conflicts itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConflictResolution {
    /// As Python's FileStorage (and a ZEO server without `client-conflict-resolution`): a store
    /// or an undo that conflicts is merged at vote when the class is one `zeo-resolve` handles;
    /// every other conflict is reported as before.
    #[default]
    Server,
    /// Never merge (ZEO's `client-conflict-resolution`, where the server replaces
    /// `tryToResolveConflict` with one that always refuses): store conflicts go back to the
    /// caller and undo of a changed object fails.
    Client,
}

/// `tryToResolveConflict`: the merged record, or `None` when there is none (the refusal is
/// logged, as ZODB logs it, at debug level).
pub(crate) fn try_to_resolve(ctx: &VoteCtx<'_>, oid: u64, old: &[u8], committed: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    if ctx.resolution != ConflictResolution::Server {
        return None;
    }
    match Resolver::default().resolve(old, committed, new) {
        Ok(record) => Some(record),
        Err(refusal) => {
            tracing::debug!(oid = %hex::encode(oid.to_be_bytes()), %refusal, "conflict resolution failed");
            None
        }
    }
}

/// A store of `new` based on revision `serial` of `oid`, whose current record (at `current`)
/// has another tid: the record to write instead, when the conflict resolves.
pub(crate) fn resolve_store(ctx: &VoteCtx<'_>, oid: u64, current: u64, serial: u64, new: &[u8]) -> Option<Vec<u8>> {
    // The class decides before anything is read: most conflicting classes are not resolvable.
    if ctx.resolution != ConflictResolution::Server || zeo_resolve::resolvable_class(new).is_none() {
        return None;
    }
    // loadSerial(oid, serial) and loadSerial(oid, committed): a missing revision (z64 for an
    // object created meanwhile, a packed one, a deletion) is a POSKeyError in Python, which
    // tryToResolveConflict turns into the ConflictError the caller reports anyway.
    let old = serial_data(ctx, oid, current, serial)?;
    let h = read_data_header(ctx.file, current, ctx.end, oid).ok()?;
    let committed = record_data(ctx.file, current, &h, ctx.end).ok()??;
    try_to_resolve(ctx, oid, &old, &committed, new)
}

/// The data of revision `serial` of `oid`, searched back from its record at `pos` (following
/// backpointers): FileStorage's `loadSerial` over everything written so far, pending
/// transactions included.
fn serial_data(ctx: &VoteCtx<'_>, oid: u64, mut pos: u64, serial: u64) -> Option<Vec<u8>> {
    loop {
        let h = read_data_header(ctx.file, pos, ctx.end, oid).ok()?;
        if h.tid == serial {
            return record_data(ctx.file, pos, &h, ctx.end).ok()?;
        }
        if h.tid < serial || h.prev == 0 {
            return None;
        }
        pos = check_backwards(ctx.file, pos, h.prev).ok()?;
    }
}

#[cfg(test)]
mod tests;
