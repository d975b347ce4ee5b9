//! Conflict resolution without Python: the results ZODB's `tryToResolveConflict` gives for
//! BTrees buckets and sets of every family, one-bucket BTrees and TreeSets, and
//! `BTrees.Length.Length`, byte for byte.
//!
//! A storage meets a conflict when a transaction stores (or an undo restores) an object whose
//! current revision is not the one the change was based on. Python's FileStorage and ZEO server
//! then ask the object's class to merge the three states: `old` (what the change started
//! from), `committed` (the current revision) and `new` (the change). [`resolve`] does that for
//! the classes in [`classes`], from the three data records as stored (class pickle, then state
//! pickle), and returns the record Python would store, or why there is none ([`Refusal`]).
//!
//! Where the rules come from: `MergeTemplate.c` (`bucket_merge`), `BucketTemplate.c` and
//! `SetTemplate.c` (`__setstate__`, `__getstate__`, `_p_resolveConflict`), `BTreeTemplate.c`
//! (the one-bucket tree case), the key and value macros of each family, `BTrees/Length.py`,
//! and `ZODB/ConflictResolution.py` (persistent references, the repickling). See the README
//! beside this crate for the rules in prose, what is refused, and the test against Python.
//!
//! The caller reports any refusal exactly as today: Python's server, whatever the cause,
//! raises `ConflictError(oid=oid, serials=(committed_tid, old_tid), data=new_record)`
//! ("database conflict error", with the class from the new record) for a store, and FileStorage's
//! undo turns that into `UndoError("Some data were modified by a later transaction", oid)`.

mod bucket;
pub mod classes;
mod family;
mod length;
mod merge;
mod persistent_ref;
mod pyobj;
mod record;
mod server_classes;

pub use server_classes::AppClasses;

use classes::Kind;
use persistent_ref::PrTable;
use record::Meta;

/// Why there is no resolved record. Each variant carries `class`, the new record's class as
/// "module.name" (what `ConflictError.class_name` shows), or "n/a" when that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// We do not resolve this: a class outside the decision table, or objects inside the
    /// states whose behaviour we do not model (an object key with its own ordering, a
    /// comparison Python raises on, a Python 2 string, ...). Python may or may not have
    /// resolved it; the caller goes on as it does without resolution.
    #[error("no conflict resolution for {class}: {detail}")]
    NotResolvable {
        /// The class.
        class: String,
        /// What stopped us, for logs.
        detail: String,
    },
    /// BTrees refuses the merge: Python raises `BTrees.Interfaces.BTreesConflictError(p1, p2,
    /// p3, reason)` (a `ZODB.POSException.ConflictError`), which ZODB turns into the
    /// `ConflictError` above.
    #[error("BTrees conflict error at {}/{}/{} in {class}: {message}", positions[0], positions[1], positions[2])]
    Conflict {
        /// The class.
        class: String,
        /// BTrees' reason code, 0 to 13.
        reason_code: u8,
        /// Its text (`BTreesConflictError.msgs`).
        message: &'static str,
        /// `(p1, p2, p3)`: where the merge stopped in each of old, committed and new (1-based,
        /// -1 when exhausted or not applicable).
        positions: [i32; 3],
    },
    /// A record does not decode, or a state is not one the class's `__setstate__` accepts:
    /// Python fails too (and raises the same `ConflictError`).
    #[error("record of {class} does not decode as its state: {detail}")]
    Malformed {
        /// The class.
        class: String,
        /// What is wrong, for logs.
        detail: String,
    },
}

/// `BTreesConflictError.msgs`: the text of each reason code.
pub fn reason_message(code: u8) -> &'static str {
    match code {
        0 => "Conflicting bucket split",
        1 => "Conflicting changes",
        2 | 3 => "Conflicting delete and change",
        4 => "Conflicting inserts or deletes",
        5 | 9 => "Conflicting deletes",
        6 => "Conflicting inserts",
        7 | 8 => "Conflicting deletes, or delete and change",
        10 => "Empty bucket from deleting all keys",
        11 => "Conflicting changes in an internal BTree node",
        12 => "Empty bucket in a transaction",
        13 => "Delete of first key",
        _ => "Unknown reason",
    }
}

/// Resolves a conflict as a plain Python ZEO server does ([`AppClasses::Missing`]).
///
/// `old` is the record the conflicting change was based on, `committed` the current one, `new`
/// the change; each is a whole data record. See [`Resolver::resolve`].
///
/// # Errors
///
/// A [`Refusal`] when there is no resolved record.
pub fn resolve(old: &[u8], committed: &[u8], new: &[u8]) -> Result<Vec<u8>, Refusal> {
    Resolver::default().resolve(old, committed, new)
}

/// The class of a record, as "module.name", when it is one [`resolve`] handles: lets a caller
/// skip loading the old and committed records for every other class.
pub fn resolvable_class(record: &[u8]) -> Option<String> {
    let mut graph = zeo_proto::pickle::Graph::new();
    let roots = graph.decode_pickles(record, 1, &zeo_proto::pickle::DecodeOptions::records()).ok()?;
    match record::meta_class(&mut graph, *roots.first()?) {
        Meta::Table(class) => Some(format!("{}.{}", class.module, class.name)),
        Meta::Other(_) => None,
    }
}

/// Conflict resolution with a chosen model of the Python server's environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolver {
    app_classes: AppClasses,
}

impl Resolver {
    /// A resolver that writes persistent references as a server that can import what
    /// `app_classes` says would.
    pub fn new(app_classes: AppClasses) -> Self {
        Resolver { app_classes }
    }

    /// The record `tryToResolveConflict(oid, committed_tid, old_tid, new, committed)` returns
    /// for these records, or why it raises.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] when there is no resolved record.
    pub fn resolve(&self, old: &[u8], committed: &[u8], new: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mut records = match record::decode(old, committed, new) {
            Ok(records) => records,
            Err(detail) => {
                let class = resolvable_class(new).unwrap_or_else(|| "n/a".to_owned());
                return Err(Refusal::Malformed { class, detail });
            }
        };
        let class = match record::meta_class(&mut records.graph, records.meta) {
            Meta::Table(class) => class,
            Meta::Other(class) => {
                return Err(Refusal::NotResolvable { class, detail: "not a class we resolve".into() });
            }
        };
        let class_name = format!("{}.{}", class.module, class.name);
        let not_resolvable = |detail: &str| Refusal::NotResolvable { class: class_name.clone(), detail: detail.into() };
        if let Some(what) = record::unmodelled_objects(&records.graph) {
            return Err(not_resolvable(&format!("the records hold {what}")));
        }
        let prs = PrTable::build(&mut records.graph, &records.pids, self.app_classes).map_err(not_resolvable)?;
        let state = match class.kind {
            Kind::Length => length::resolve(&mut records.graph, records.states).map_err(|f| match f {
                length::LengthFailure::NotANumber(kind) => {
                    Refusal::Malformed { class: class_name.clone(), detail: format!("a Length state that is a {kind}") }
                }
                length::LengthFailure::TooLarge => Refusal::Malformed {
                    class: class_name.clone(),
                    detail: "a Length state too large to add to a float".into(),
                },
            })?,
            Kind::BTrees { family, shape } => bucket::resolve(&mut records.graph, &prs, family, shape, records.states)
                .map_err(|f| match f {
                    bucket::Failure::Conflict { positions, reason } => Refusal::Conflict {
                        class: class_name.clone(),
                        reason_code: reason,
                        message: reason_message(reason),
                        positions,
                    },
                    bucket::Failure::Unmodelled(detail) => not_resolvable(&detail),
                    bucket::Failure::Malformed(detail) => Refusal::Malformed { class: class_name.clone(), detail },
                })?,
        };
        prs.rewrite(&mut records.graph);
        record::encode(&records.graph, records.meta, state).map_err(|e| not_resolvable(&e))
    }
}

#[cfg(test)]
mod tests;
