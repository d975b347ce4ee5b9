//! Turning an arena node into a [`Value`] tree.
//!
//! A node used in one place is moved out of the arena (big `bytes` are never copied); a node
//! shared through the memo is copied once per use. Copies are where a hostile pickle could
//! multiply its size (a list `GET` a thousand times inside a list `GET` a thousand times…), so
//! every produced item and byte is charged against the limits, and nesting is capped so that
//! this recursion, and every later recursive walk of the value, stays within the stack.

use super::arena::{Arena, Node, NodeId, ObjectNode};
use super::error::{Limit, PickleError};
use super::value::Value;

/// Limits for one conversion.
pub(crate) struct Budget {
    pub(crate) max_depth: usize,
    pub(crate) max_items: usize,
    /// Total `str`/`bytes` payload allowed in the result.
    pub(crate) max_bytes: usize,
}

struct Converter<'a> {
    arena: &'a mut Arena,
    /// How many places refer to each node; only nodes with exactly one are moved.
    refs: Vec<u32>,
    /// Nodes on the current conversion path: meeting one again means a cycle.
    visiting: Vec<bool>,
    budget: Budget,
    items: usize,
    bytes: usize,
}

/// Converts `root`. `extra_refs` are nodes that must stay in the arena because something other
/// than the tree may still use them (the memo of a [`super::Decoder`] that reads on).
pub(crate) fn to_value(
    arena: &mut Arena,
    root: NodeId,
    extra_refs: impl IntoIterator<Item = NodeId>,
    budget: Budget,
) -> Result<Value, PickleError> {
    let mut refs = vec![0u32; arena.len()];
    let mut add = |id: NodeId| {
        if let Some(r) = refs.get_mut(id) {
            *r = r.saturating_add(1);
        }
    };
    for node in arena.iter() {
        node.for_each_child(&mut add);
    }
    add(root);
    extra_refs.into_iter().for_each(&mut add);
    let visiting = vec![false; arena.len()];
    let mut c = Converter { arena, refs, visiting, budget, items: 0, bytes: 0 };
    c.convert(root, 1, false)
}

impl Converter<'_> {
    fn limit(&self, limit: Limit, max: usize, id: NodeId) -> PickleError {
        PickleError::LimitExceeded { limit, max, offset: self.arena.offset(id) }
    }

    fn charge(&mut self, id: NodeId, payload: usize) -> Result<(), PickleError> {
        self.items += 1;
        if self.items > self.budget.max_items {
            return Err(self.limit(Limit::Items, self.budget.max_items, id));
        }
        self.bytes = self.bytes.saturating_add(payload);
        if self.bytes > self.budget.max_bytes {
            return Err(self.limit(Limit::Bytes, self.budget.max_bytes, id));
        }
        Ok(())
    }

    /// Converts one node. `shared` says an ancestor was copied rather than moved: its
    /// descendants must then stay in the arena too, for the next copy.
    fn convert(&mut self, id: NodeId, depth: usize, shared: bool) -> Result<Value, PickleError> {
        let offset = self.arena.offset(id);
        if depth > self.budget.max_depth {
            return Err(self.limit(Limit::Depth, self.budget.max_depth, id));
        }
        if self.visiting.get(id).copied().unwrap_or(true) {
            return Err(PickleError::Recursive { offset });
        }
        let shared = shared || self.refs.get(id) != Some(&1);
        let node = if shared { self.arena.get(id).clone() } else { self.arena.take(id) };
        if let Some(v) = self.visiting.get_mut(id) {
            *v = true;
        }
        let payload = match &node {
            Node::Bytes(b) => b.len(),
            Node::Str(s) => s.len(),
            _ => 0,
        };
        self.charge(id, payload)?;
        let d = (depth + 1, shared);
        let value = match node {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(b),
            Node::Int(i) => Value::Int(i),
            Node::BigInt(b) => Value::BigInt(b),
            Node::Float(f) => Value::Float(f),
            Node::Bytes(b) => Value::Bytes(b),
            Node::Str(s) => Value::Str(s),
            Node::BadText => return Err(PickleError::InvalidText { offset }),
            Node::Ext(code) => return Err(PickleError::UnregisteredExtension { code, offset }),
            Node::Taken => return Err(PickleError::Recursive { offset }),
            Node::Tuple(items) => Value::Tuple(self.convert_all(&items, d)?),
            Node::List(items) => Value::List(self.convert_all(&items, d)?),
            Node::Set(items) => Value::Set(self.convert_all(&items, d)?),
            Node::FrozenSet(items) => Value::FrozenSet(self.convert_all(&items, d)?),
            Node::Dict(pairs) => Value::Dict(self.convert_pairs(&pairs, d)?),
            Node::Global(g) => {
                let (module, name) = *g;
                Value::Global { module, name }
            }
            Node::Object(o) => {
                let ObjectNode { class, args, state, list_items, dict_items } = *o;
                Value::Object {
                    class: Box::new(self.convert(class, d.0, d.1)?),
                    args: Box::new(self.convert(args, d.0, d.1)?),
                    state: match state {
                        Some(s) => Some(Box::new(self.convert(s, d.0, d.1)?)),
                        None => None,
                    },
                    list_items: self.convert_all(&list_items, d)?,
                    dict_items: self.convert_pairs(&dict_items, d)?,
                }
            }
            Node::PersistentId(pid) => Value::PersistentId(Box::new(self.convert(pid, d.0, d.1)?)),
        };
        if let Some(v) = self.visiting.get_mut(id) {
            *v = false;
        }
        Ok(value)
    }

    fn convert_all(&mut self, ids: &[NodeId], (depth, shared): (usize, bool)) -> Result<Vec<Value>, PickleError> {
        ids.iter().map(|&id| self.convert(id, depth, shared)).collect()
    }

    fn convert_pairs(
        &mut self,
        pairs: &[(NodeId, NodeId)],
        (depth, shared): (usize, bool),
    ) -> Result<Vec<(Value, Value)>, PickleError> {
        pairs.iter().map(|&(k, v)| Ok((self.convert(k, depth, shared)?, self.convert(v, depth, shared)?))).collect()
    }
}
