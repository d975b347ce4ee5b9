//! The decoder's working representation: a flat arena of nodes that refer to each other by
//! index.
//!
//! Python's unpickler shares objects through the memo and mutates them after sharing (`PUT` an
//! empty list, then `APPENDS` into it). An arena gives us the same aliasing cheaply, lets the
//! reference scanner ([`crate::refs`]) walk records without building a [`super::Value`] (so even
//! self-referencing records work), and keeps drops flat: no recursion, whatever the input.

/// Index of a node in the [`Arena`].
pub(crate) type NodeId = usize;

/// One Python object under construction. Containers hold the ids of their items.
///
/// Kept at 32 bytes (the rare big variants are boxed): a hostile record can make one node per
/// input byte, and reference scanning has no item limit.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    /// Text Python accepts but a Rust `String` cannot hold (lone surrogates, bad UTF-8 in
    /// `BINUNICODE`, which zodbpickle reads with `surrogatepass`). An error only if it ends up in
    /// a decoded value, so reference scanning still works on such records.
    BadText,
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    /// Module and name.
    Global(Box<(String, String)>),
    Object(Box<ObjectNode>),
    PersistentId(NodeId),
    /// An `EXT*` code: an error only if it ends up in a decoded value (as for [`Node::BadText`]).
    Ext(i64),
    /// The node's contents were moved into a [`super::Value`] already.
    Taken,
}

impl Node {
    /// Python type name, for [`super::PickleError::WrongType`].
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::BigInt(_) => "int",
            Node::Float(_) => "float",
            Node::Bytes(_) => "bytes",
            Node::Str(_) | Node::BadText => "str",
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::FrozenSet(_) => "frozenset",
            Node::Global(_) => "global",
            Node::Object(_) => "object",
            Node::PersistentId(_) => "persistent id",
            Node::Ext(_) => "extension",
            Node::Taken => "consumed value",
        }
    }

    /// Calls `f` on every node id this node refers to.
    pub(crate) fn for_each_child(&self, mut f: impl FnMut(NodeId)) {
        match self {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => v.iter().copied().for_each(f),
            Node::Dict(pairs) => pairs.iter().for_each(|&(k, v)| {
                f(k);
                f(v);
            }),
            Node::Object(o) => {
                f(o.class);
                f(o.args);
                o.state.iter().copied().for_each(&mut f);
                o.list_items.iter().copied().for_each(&mut f);
                o.dict_items.iter().for_each(|&(k, v)| {
                    f(k);
                    f(v);
                });
            }
            Node::PersistentId(p) => f(*p),
            _ => {}
        }
    }
}

/// The parts of [`crate::pickle::Value::Object`], as node ids.
#[derive(Debug, Clone)]
pub(crate) struct ObjectNode {
    pub(crate) class: NodeId,
    pub(crate) args: NodeId,
    pub(crate) state: Option<NodeId>,
    pub(crate) list_items: Vec<NodeId>,
    pub(crate) dict_items: Vec<(NodeId, NodeId)>,
}

impl Node {
    pub(crate) fn global(module: String, name: String) -> Node {
        Node::Global(Box::new((module, name)))
    }

    /// A freshly built object: no state, no items yet.
    pub(crate) fn object(class: NodeId, args: NodeId, state: Option<NodeId>) -> Node {
        Node::Object(Box::new(ObjectNode { class, args, state, list_items: Vec::new(), dict_items: Vec::new() }))
    }
}

/// All nodes built while decoding, with the input offset of the opcode that built each one (for
/// error messages raised later, during conversion).
#[derive(Debug, Default)]
pub(crate) struct Arena {
    nodes: Vec<Node>,
    offsets: Vec<usize>,
}

impl Arena {
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn alloc(&mut self, node: Node, offset: usize) -> NodeId {
        self.nodes.push(node);
        self.offsets.push(offset);
        self.nodes.len() - 1
    }

    /// The node, or [`Node::Taken`] for an id that does not exist (ids only come from this arena,
    /// so that never happens, but a wrong answer beats a panic).
    pub(crate) fn get(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::Taken)
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id)
    }

    pub(crate) fn offset(&self, id: NodeId) -> usize {
        self.offsets.get(id).copied().unwrap_or(0)
    }

    /// Moves a node's contents out, leaving [`Node::Taken`].
    pub(crate) fn take(&mut self, id: NodeId) -> Node {
        self.nodes.get_mut(id).map_or(Node::Taken, |n| std::mem::replace(n, Node::Taken))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    /// The bytes of a `bytes` node, or of an ASCII `str` node: ZODB's `referencesf` accepts
    /// either as an oid (it encodes a `str` oid as ASCII, and fails on anything else).
    pub(crate) fn bytes_like(&self, id: NodeId) -> Option<&[u8]> {
        match self.get(id) {
            Node::Bytes(b) => Some(b),
            Node::Str(s) if s.is_ascii() => Some(s.as_bytes()),
            _ => None,
        }
    }
}
#[cfg(test)]
mod tests {
    /// One node per input byte is possible, so the node size is the memory amplification.
    #[test]
    fn nodes_stay_small() {
        assert!(std::mem::size_of::<super::Node>() <= 32);
    }
}
