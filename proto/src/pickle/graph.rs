//! [`Graph`]: decoded pickles as the objects Python's unpickler builds, identity included.
//!
//! A [`super::Value`] is a tree: an object shared through the memo becomes one copy per use.
//! That is the right model for messages, but not for code that must write back exactly what
//! Python's pickler writes for objects it unpickled: the pickler memoizes by object identity, so
//! an object used twice is written once and then fetched with `BINGET`. A [`Graph`] keeps one
//! [`Obj`] per object the unpickler creates, and containers refer to their items by [`ObjId`];
//! [`encode_graph`](super::encode_graph) writes them back with Python's memo.
//!
//! Several records can be decoded into one graph, so that objects from different records can
//! be combined into a new one without copying. Nothing is ever constructed: classes stay
//! [`Obj::Global`] and calls stay [`Obj::Object`], as in a [`super::Value`]. Unlike a
//! [`super::Value`], a graph may contain cycles (a list that contains itself) and may be as
//! deep as the input allows: code that walks it must bound its recursion.

use super::arena::{Arena, Node, NodeId, ObjectNode};
use super::decode::DecodeOptions;
use super::error::PickleError;
use super::machine::Machine;

/// Identifies one object of a [`Graph`]: two places hold the same Python object exactly when
/// they hold the same id (apart from the objects CPython always shares, such as one-character
/// strings; see [`encode_graph`](super::encode_graph)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(usize);

impl ObjId {
    /// The position of the object in its graph (ids are handed out in increasing order).
    pub fn index(self) -> usize {
        self.0
    }
}

/// One Python object. The variants are those of [`super::Value`], with items as [`ObjId`]s,
/// plus [`Obj::Py2Str`].
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An int that fits in an i64.
    Int(i64),
    /// A larger int, as minimal two's-complement little-endian bytes (see
    /// [`super::Value::BigInt`]).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// `bytes` (`BINBYTES` and friends, protocol 5's `BYTEARRAY8`, and protocol 0's text
    /// persistent ids).
    Bytes(Vec<u8>),
    /// A Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`). Python 3 reads it as `str`
    /// or `bytes` depending on the unpickler's `encoding`, so the graph keeps it apart; the
    /// tree decoder turns it into `bytes`.
    Py2Str(Vec<u8>),
    /// `str`.
    Str(String),
    /// A tuple.
    Tuple(Vec<ObjId>),
    /// A list.
    List(Vec<ObjId>),
    /// A dict's items in insertion order (duplicates kept, as in [`super::Value::Dict`]).
    Dict(Vec<(ObjId, ObjId)>),
    /// A set.
    Set(Vec<ObjId>),
    /// A frozenset.
    FrozenSet(Vec<ObjId>),
    /// A class or function named by `GLOBAL`/`STACK_GLOBAL`/`INST`.
    Global {
        /// The module, as written.
        module: String,
        /// The attribute name.
        name: String,
    },
    /// An object Python would build by a call (see [`super::Value::Object`]).
    Object {
        /// The callable.
        class: ObjId,
        /// Its argument tuple.
        args: ObjId,
        /// The `BUILD` state, if any.
        state: Option<ObjId>,
        /// Items added by `APPEND(S)`.
        list_items: Vec<ObjId>,
        /// Items added by `SETITEM(S)`.
        dict_items: Vec<(ObjId, ObjId)>,
    },
    /// A persistent reference: the persistent id object.
    PersistentId(ObjId),
}

impl Obj {
    /// An [`Obj::Global`].
    pub fn global(module: &str, name: &str) -> Obj {
        Obj::Global { module: module.to_owned(), name: name.to_owned() }
    }
}

/// Objects decoded from pickles, and any added by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    objs: Vec<Obj>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// Whether the graph holds no object.
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }

    /// The ids of all objects, in the order they were added (for decoded objects: the order
    /// the unpickler created them).
    pub fn ids(&self) -> impl Iterator<Item = ObjId> + use<> {
        (0..self.objs.len()).map(ObjId)
    }

    /// The object `id` names, or `None` for an id from another graph.
    pub fn get(&self, id: ObjId) -> Option<&Obj> {
        self.objs.get(id.0)
    }

    /// Adds an object; its items must already be in this graph.
    pub fn add(&mut self, obj: Obj) -> ObjId {
        self.objs.push(obj);
        ObjId(self.objs.len() - 1)
    }

    /// Replaces the object `id` names, keeping its identity (every place that holds `id` now
    /// holds the new object). Returns false, changing nothing, for an id from another graph.
    pub fn replace(&mut self, id: ObjId, obj: Obj) -> bool {
        match self.objs.get_mut(id.0) {
            Some(slot) => {
                *slot = obj;
                true
            }
            None => false,
        }
    }

    /// Decodes `count` pickles written one after the other by one pickler, sharing the memo
    /// (as a ZODB data record holds the class pickle and then the state pickle), and returns
    /// their roots. Bytes after the last `STOP` are not looked at.
    ///
    /// # Errors
    ///
    /// As [`super::decode`]: malformed input, a forbidden global, an exceeded limit (only
    /// `max_items` and `max_memo` apply: a graph copies nothing). Text or `EXT` codes that a
    /// Rust string cannot hold are an error only if reachable from a root. On error the graph
    /// is unchanged.
    pub fn decode_pickles(
        &mut self,
        data: &[u8],
        count: usize,
        opts: &DecodeOptions,
    ) -> Result<Vec<ObjId>, PickleError> {
        let mut machine = Machine::new(data, opts);
        let mut roots = Vec::with_capacity(count);
        for _ in 0..count {
            roots.push(machine.run(None)?);
        }
        check_reachable(&machine.arena, &roots)?;
        let base = self.objs.len();
        let py2 = std::mem::take(&mut machine.py2_strings);
        let mut arena = machine.arena;
        let at = |id: NodeId| ObjId(base + id);
        for id in 0..arena.len() {
            let obj = match arena.take(id) {
                Node::None | Node::Taken | Node::BadText | Node::Ext(_) => Obj::None,
                Node::Bool(b) => Obj::Bool(b),
                Node::Int(i) => Obj::Int(i),
                Node::BigInt(b) => Obj::BigInt(b),
                Node::Float(f) => Obj::Float(f),
                Node::Bytes(b) if py2.binary_search(&id).is_ok() => Obj::Py2Str(b),
                Node::Bytes(b) => Obj::Bytes(b),
                Node::Str(s) => Obj::Str(s),
                Node::Tuple(v) => Obj::Tuple(v.into_iter().map(at).collect()),
                Node::List(v) => Obj::List(v.into_iter().map(at).collect()),
                Node::Set(v) => Obj::Set(v.into_iter().map(at).collect()),
                Node::FrozenSet(v) => Obj::FrozenSet(v.into_iter().map(at).collect()),
                Node::Dict(v) => Obj::Dict(v.into_iter().map(|(k, v)| (at(k), at(v))).collect()),
                Node::Global(g) => {
                    let (module, name) = *g;
                    Obj::Global { module, name }
                }
                Node::Object(o) => {
                    let ObjectNode { class, args, state, list_items, dict_items } = *o;
                    Obj::Object {
                        class: at(class),
                        args: at(args),
                        state: state.map(at),
                        list_items: list_items.into_iter().map(at).collect(),
                        dict_items: dict_items.into_iter().map(|(k, v)| (at(k), at(v))).collect(),
                    }
                }
                Node::PersistentId(p) => Obj::PersistentId(at(p)),
            };
            self.objs.push(obj);
        }
        Ok(roots.into_iter().map(at).collect())
    }
}

/// Fails if a node that cannot become an [`Obj`] (text a `String` cannot hold, an `EXT` code)
/// is reachable from the roots. Iterative: the arena may be as deep as the input is long.
fn check_reachable(arena: &Arena, roots: &[NodeId]) -> Result<(), PickleError> {
    let mut seen = vec![false; arena.len()];
    let mut todo: Vec<NodeId> = roots.to_vec();
    while let Some(id) = todo.pop() {
        match seen.get_mut(id) {
            Some(s) if !*s => *s = true,
            _ => continue,
        }
        let offset = arena.offset(id);
        match arena.get(id) {
            Node::BadText => return Err(PickleError::InvalidText { offset }),
            Node::Ext(code) => return Err(PickleError::UnregisteredExtension { code: *code, offset }),
            node => node.for_each_child(|c| todo.push(c)),
        }
    }
    Ok(())
}
