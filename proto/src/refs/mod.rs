//! Persistent references inside ZODB data records, for pack's garbage collection.
//!
//! A data record is two pickles written back to back by one pickler (the memo carries over): the
//! class metadata, then the object state. Each reference to another persistent object is a
//! persistent id (`BINPERSID`) of one of these forms (ZODB `serialize.py`):
//!
//! | persistent id | meaning | followed |
//! |---|---|---|
//! | `oid` | plain reference | yes |
//! | `(oid, class_meta)` | reference with the class, to make ghosts without a load | yes |
//! | `['w', (oid,)]`, `['w', (oid, db)]` | weak reference | no |
//! | `['n', (db, oid)]`, `['m', (db, oid, class)]` | cross-database reference | no |
//! | `[oid]` | old-style weak reference | no |
//!
//! This mirrors `ZODB.serialize.referencesf`, which runs the unpickler in "noload" mode: no class
//! is imported and no object built. We decode into the arena and never build anything either.

use crate::Oid;
use crate::pickle::arena::{Arena, Node, NodeId};
use crate::pickle::machine::Machine;
use crate::pickle::{DecodeOptions, GlobalPolicy, PickleError};

/// The result of [`references_best_effort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceScan {
    /// Oids referenced, in order of appearance, possibly with repeats.
    pub oids: Vec<Oid>,
    /// Why scanning stopped early, if it did. `oids` then holds what was found before that.
    pub error: Option<PickleError>,
}

/// The oids a data record refers to, in order of appearance (repeats are kept, as
/// `referencesf` keeps them).
///
/// Persistent ids that are `bytes` (or an ASCII `str`, from Python 2 records) of a length other
/// than 8 are skipped: `referencesf` would return them, but they cannot be oids of this storage.
///
/// # Errors
///
/// A [`PickleError`] if either pickle is malformed or missing (`referencesf` raises then too).
/// Records that are not pickles at all, e.g. `b""` or `b"x"`, are errors, never panics.
pub fn references(record: &[u8]) -> Result<Vec<Oid>, PickleError> {
    let scan = references_best_effort(record);
    match scan.error {
        Some(e) => Err(e),
        None => Ok(scan.oids),
    }
}

/// Like [`references`], but keeps the references found before an error.
///
/// Garbage collection errs on the safe side with this: a record that is damaged halfway still
/// keeps alive what it visibly refers to, instead of losing everything.
pub fn references_best_effort(record: &[u8]) -> ReferenceScan {
    // The arena only grows with the input (every opcode consumes a byte), so no limit is needed
    // to protect memory, and a limit could only make us miss references in a huge record.
    let opts = DecodeOptions {
        globals: GlobalPolicy::Any,
        max_depth: usize::MAX,
        max_memo: usize::MAX,
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
    let mut oids = Vec::new();
    let mut machine = Machine::new(record, &opts);
    let mut hook = |arena: &Arena, pid: NodeId| {
        if let Some(oid) = reference_oid(arena, pid) {
            oids.push(oid);
        }
    };
    let mut error = None;
    for _ in 0..2 {
        if let Err(e) = machine.run(Some(&mut hook)) {
            error = Some(e);
            break;
        }
    }
    ReferenceScan { oids, error }
}

/// The oid of a plain or `(oid, class)` reference; `None` for the list forms (weak and
/// cross-database references) and anything unexpected.
fn reference_oid(arena: &Arena, pid: NodeId) -> Option<Oid> {
    let oid = match arena.get(pid) {
        Node::Tuple(items) => *items.first()?,
        Node::Bytes(_) | Node::Str(_) => pid,
        _ => return None,
    };
    crate::id_from_slice(arena.bytes_like(oid)?)
}
