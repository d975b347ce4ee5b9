//! ZODB data records: reading the three as `tryToResolveConflict` does, and writing the result
//! as it does (`ZODB/ConflictResolution.py`).
//!
//! A record is two pickles, the class ("meta") and the state, written by one pickler (the state
//! may `BINGET` what the class pickle memoized). Python reads the new record's class, then the
//! new state, then the old record, then the committed one, all through one persistent-reference
//! factory; it resolves with the class of the *new* record (the others' classes are read and
//! ignored), and pickles the new record's class object and the resolved state with a fresh
//! protocol-3 pickler, one `dump` each.

use zeo_proto::pickle::{DecodeOptions, Graph, Obj, ObjId, encode_graph};

use crate::classes::{self, Class};

/// The three records, decoded into one graph.
pub(crate) struct Records {
    pub(crate) graph: Graph,
    /// The new record's class pickle.
    pub(crate) meta: ObjId,
    /// The states, in the order (old, committed, new).
    pub(crate) states: [ObjId; 3],
    /// Every persistent id, in the order Python's factory sees them.
    pub(crate) pids: Vec<ObjId>,
}

/// What the new record's class pickle names.
pub(crate) enum Meta {
    /// A class of the decision table; the node to write it back with is renamed to its public
    /// name.
    Table(Class),
    /// Something we do not resolve, as "module.name" (or a description).
    Other(String),
}

/// Decodes the three records. `Err` says which record does not decode, and why.
pub(crate) fn decode(old: &[u8], committed: &[u8], new: &[u8]) -> Result<Records, String> {
    let opts = DecodeOptions::records();
    let mut graph = Graph::new();
    let mut read = |data: &[u8], which: &str| {
        graph.decode_pickles(data, 2, &opts).map_err(|e| format!("the {which} record does not decode: {e}"))
    };
    let new_roots = read(new, "new")?;
    let old_roots = read(old, "old")?;
    let committed_roots = read(committed, "committed")?;
    let root = |roots: &[ObjId], i: usize| roots.get(i).copied().ok_or_else(|| "a record lacks a pickle".to_owned());
    let meta = root(&new_roots, 0)?;
    let states = [root(&old_roots, 1)?, root(&committed_roots, 1)?, root(&new_roots, 1)?];
    let pids = graph.ids().filter(|&id| matches!(graph.get(id), Some(Obj::PersistentId(_)))).collect();
    Ok(Records { graph, meta, states, pids })
}

/// Reads the class the new record names, as `tryToResolveConflict` does: a class, or a tuple
/// `(class, newargs)` whose class may be spelled `(module, name)`; `newargs` must be empty.
pub(crate) fn meta_class(graph: &mut Graph, meta: ObjId) -> Meta {
    let global = |graph: &Graph, id: ObjId| match graph.get(id) {
        Some(Obj::Global { module, name }) => Some((module.clone(), name.clone(), true)),
        Some(Obj::Tuple(parts)) => match parts[..] {
            [m, n] => match (graph.get(m), graph.get(n)) {
                (Some(Obj::Str(m)), Some(Obj::Str(n))) => Some((m.clone(), n.clone(), false)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let (class_node, spelled) = match graph.get(meta) {
        Some(Obj::Global { .. }) => (meta, global(graph, meta)),
        Some(Obj::Tuple(parts)) => match parts[..] {
            [class, args] => {
                let no_args = match graph.get(args) {
                    Some(Obj::None) => true,
                    Some(Obj::Tuple(a)) => a.is_empty(),
                    _ => false,
                };
                if !no_args {
                    return Meta::Other("a class pickle with constructor arguments".into());
                }
                (class, global(graph, class))
            }
            _ => return Meta::Other("a class pickle of an unexpected shape".into()),
        },
        _ => return Meta::Other("a class pickle of an unexpected shape".into()),
    };
    let Some((module, name, is_global)) = spelled else {
        return Meta::Other("a class pickle of an unexpected shape".into());
    };
    match classes::lookup(&module, &name) {
        Some(class) => {
            if is_global {
                graph.replace(class_node, Obj::Global { module: class.module.clone(), name: class.name.clone() });
            }
            Meta::Table(class)
        }
        None => Meta::Other(format!("{module}.{name}")),
    }
}

/// Whether any Python 2 string or constructed object was unpickled: Python would have decoded
/// the first as ASCII text (failing on anything else) and called the second's class; neither is
/// modelled.
pub(crate) fn unmodelled_objects(graph: &Graph) -> Option<&'static str> {
    graph.ids().find_map(|id| match graph.get(id) {
        Some(Obj::Py2Str(_)) => Some("a Python 2 string"),
        Some(Obj::Object { .. }) => Some("an object built by a call (REDUCE, NEWOBJ, INST, OBJ or BUILD)"),
        _ => None,
    })
}

/// The resolved record: the class pickle and the state pickle, through one pickler.
pub(crate) fn encode(graph: &Graph, meta: ObjId, state: ObjId) -> Result<Vec<u8>, String> {
    encode_graph(graph, &[meta, state]).map_err(|e| format!("the result does not pickle: {e}"))
}
