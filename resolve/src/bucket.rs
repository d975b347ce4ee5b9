//! Bucket, set and one-bucket tree states, read as `__setstate__` reads them and written as
//! `__getstate__` writes them (`BucketTemplate.c`, `SetTemplate.c`, `BTreeTemplate.c`), around
//! the merge in [`crate::merge`].
//!
//! A bucket's state is `((k1, v1, k2, v2, ...),)`, or `(items, next)` when the bucket is part
//! of a larger tree (`next` is a persistent reference to the following bucket); a set's is the
//! same with keys only; a BTree or TreeSet holding one bucket inlines it as `((state,),)`, and
//! an empty one is `None`. A tree with more than one bucket is never resolved (reason 11), and
//! the three buckets must share their `next` (reason 0: one side split the bucket).

use zeo_proto::pickle::{Graph, Obj, ObjId};

use crate::classes::{Family, Shape};
use crate::family::{key_from, key_object, value_from, value_object};
use crate::merge::{Item, Stop, merge};
use crate::pyobj::{Py, is_modelled};

/// Why a bucket merge gave no state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// BTrees raised `BTreesConflictError`.
    Conflict { positions: [i32; 3], reason: u8 },
    /// Python raised something else while comparing, or an object is of a kind we do not model.
    Unmodelled(String),
    /// A state `__setstate__` (or the tree's state check) rejects.
    Malformed(String),
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Conflict { positions, reason } => Failure::Conflict { positions, reason },
            Stop::Raised(r) => Failure::Unmodelled(r.0.to_owned()),
        }
    }
}

/// A bucket as `__setstate__` leaves it.
struct Bucket {
    items: Vec<Item>,
    next: Option<ObjId>,
}

/// Merges the states of a class of `family` and `shape`, in the order (old, committed, new),
/// and adds the resolved state to the graph.
pub(crate) fn resolve(
    graph: &mut Graph,
    py_prs: &crate::persistent_ref::PrTable,
    family: Family,
    shape: Shape,
    states: [ObjId; 3],
) -> Result<ObjId, Failure> {
    let buckets = {
        let g: &Graph = graph;
        let bucket_states = if shape.is_tree() {
            let mut inner = [None; 3];
            for (slot, &state) in inner.iter_mut().zip(&states) {
                *slot = tree_bucket_state(g, state)?;
            }
            inner
        } else {
            states.map(Some)
        };
        let mut buckets = Vec::with_capacity(3);
        for state in bucket_states {
            buckets.push(read_bucket(g, state, family, shape.is_mapping()).map_err(Failure::Malformed)?);
        }
        buckets
    };
    let [old, committed, new] = &buckets[..] else { return Err(Failure::Malformed("three states".into())) };
    let py = Py::new(graph, py_prs);
    for bucket in [old, committed, new] {
        check_modelled(&py, bucket)?;
    }
    let same = |a: Option<ObjId>, b: Option<ObjId>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => py.is_same(a, b),
        _ => false,
    };
    if !same(old.next, committed.next) || !same(old.next, new.next) {
        return Err(Failure::Conflict { positions: [-1, -1, -1], reason: 0 });
    }
    let merged = merge(&py, &old.items, &committed.items, &new.items, shape.is_mapping())?;
    let next = old.next;
    let mut flat = Vec::with_capacity(merged.len() * 2);
    for item in &merged {
        flat.push(key_object(graph, &item.key));
        if let Some(value) = &item.value {
            flat.push(value_object(graph, value));
        }
    }
    let items = graph.add(Obj::Tuple(flat));
    let mut state = graph.add(Obj::Tuple(std::iter::once(items).chain(next).collect()));
    if shape.is_tree() {
        let inner = graph.add(Obj::Tuple(vec![state]));
        state = graph.add(Obj::Tuple(vec![inner]));
    }
    Ok(state)
}

/// `get_bucket_state`: the inline bucket state of a one-bucket tree, `None` for an empty tree.
fn tree_bucket_state(graph: &Graph, state: ObjId) -> Result<Option<ObjId>, Failure> {
    let tuple = |id: ObjId| match graph.get(id) {
        Some(Obj::Tuple(items)) => Some(items),
        _ => None,
    };
    match graph.get(state) {
        Some(Obj::None) => return Ok(None),
        Some(Obj::Tuple(_)) => {}
        _ => return Err(Failure::Malformed("_p_resolveConflict: expected tuple or None for state".into())),
    }
    let outer = tuple(state).map(Vec::as_slice).unwrap_or_default();
    match outer {
        [_, _] => Err(Failure::Conflict { positions: [-1, -1, -1], reason: 11 }),
        [only] => match tuple(*only).map(Vec::as_slice) {
            Some([bucket]) if tuple(*bucket).is_some() => Ok(Some(*bucket)),
            Some([_]) => Err(Failure::Malformed("_p_resolveConflict: expected tuple for bucket state".into())),
            _ => Err(Failure::Malformed("_p_resolveConflict: expected 1-tuple containing bucket state".into())),
        },
        _ => Err(Failure::Malformed("_p_resolveConflict: expected 1- or 2-tuple for state".into())),
    }
}

/// A bucket or set `__setstate__(state)`; `None` (an empty tree) is an empty bucket.
fn read_bucket(graph: &Graph, state: Option<ObjId>, family: Family, mapping: bool) -> Result<Bucket, String> {
    let Some(state) = state else { return Ok(Bucket { items: Vec::new(), next: None }) };
    let parts = match graph.get(state) {
        // `_bucket__p_resolveConflict` treats a `None` state as an empty bucket.
        Some(Obj::None) => return Ok(Bucket { items: Vec::new(), next: None }),
        Some(Obj::Tuple(parts)) if (1..=2).contains(&parts.len()) => parts,
        _ => return Err("__setstate__ expects a tuple of 1 or 2 items".into()),
    };
    let Some(Obj::Tuple(flat)) = graph.get(parts[0]) else {
        return Err("tuple required for first state element".into());
    };
    let mut items = Vec::new();
    if mapping {
        // An odd trailing item is ignored, as in `_bucket_setstate`.
        for pair in flat.chunks_exact(2) {
            let key = key_from(graph, pair[0], family.key)?;
            let value = value_from(graph, pair[1], family.value)?;
            items.push(Item { key, value: Some(value) });
        }
    } else {
        for &k in flat {
            items.push(Item { key: key_from(graph, k, family.key)?, value: None });
        }
    }
    Ok(Bucket { items, next: parts.get(1).copied() })
}

/// Refuses object keys and values (anything reachable from them) of kinds we do not model:
/// we could not compare them as Python does, nor write them back as its pickler would.
fn check_modelled(py: &Py<'_>, bucket: &Bucket) -> Result<(), Failure> {
    use crate::family::{Key, Value};
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<(ObjId, usize)> = Vec::new();
    for item in &bucket.items {
        if let Key::Object(k) = item.key {
            todo.push((k, 0));
        }
        if let Some(Value::Object(v)) = item.value {
            todo.push((v, 0));
        }
    }
    while let Some((id, depth)) = todo.pop() {
        // Shared objects once each: what the memo shares may be reached along many paths.
        if !seen.insert(id) {
            continue;
        }
        let obj = py.obj(id);
        if !is_modelled(obj) {
            return Err(Failure::Unmodelled(format!("a key or value holds a {}", crate::family::type_name(obj))));
        }
        if depth > crate::pyobj::MAX_DEPTH {
            return Err(Failure::Unmodelled("keys or values nested too deeply".into()));
        }
        if let Obj::Tuple(items) | Obj::List(items) = obj {
            todo.extend(items.iter().map(|&i| (i, depth + 1)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::lookup;
    use crate::persistent_ref::PrTable;

    fn family(module: &str, name: &str) -> (Family, Shape) {
        match lookup(module, name).map(|c| c.kind) {
            Some(crate::classes::Kind::BTrees { family, shape }) => (family, shape),
            other => panic!("{other:?}"),
        }
    }

    /// `((k, v, ...),)` of small ints, with an optional `next`.
    fn int_state(g: &mut Graph, flat: &[i64], next: Option<ObjId>) -> ObjId {
        let items: Vec<_> = flat.iter().map(|&i| g.add(Obj::Int(i))).collect();
        let items = g.add(Obj::Tuple(items));
        g.add(Obj::Tuple(std::iter::once(items).chain(next).collect()))
    }

    fn tree(g: &mut Graph, bucket: ObjId) -> ObjId {
        let inner = g.add(Obj::Tuple(vec![bucket]));
        g.add(Obj::Tuple(vec![inner]))
    }

    fn ints(g: &Graph, id: ObjId) -> Vec<i64> {
        let Some(Obj::Tuple(items)) = g.get(id) else { panic!("a tuple") };
        items.iter().map(|&i| if let Some(Obj::Int(i)) = g.get(i) { *i } else { panic!("an int") }).collect()
    }

    #[test]
    fn one_bucket_trees_merge_and_stay_inline() {
        let (fam, shape) = family("BTrees.IIBTree", "IIBTree");
        let mut g = Graph::new();
        let old = int_state(&mut g, &[1, 10], None);
        let committed = int_state(&mut g, &[1, 10, 2, 20], None);
        let new = int_state(&mut g, &[1, 10, 3, 30], None);
        let states = [old, committed, new].map(|s| tree(&mut g, s));
        let out = resolve(&mut g, &PrTable::default(), fam, shape, states).expect("merges");
        let Some(Obj::Tuple(outer)) = g.get(out).cloned() else { panic!("a tuple") };
        let Some(Obj::Tuple(inner)) = g.get(outer[0]).cloned() else { panic!("a tuple") };
        let Some(Obj::Tuple(bucket)) = g.get(inner[0]).cloned() else { panic!("a tuple") };
        assert_eq!(bucket.len(), 1);
        assert_eq!(ints(&g, bucket[0]), [1, 10, 2, 20, 3, 30]);
    }

    #[test]
    fn empty_trees_and_big_trees() {
        let (fam, shape) = family("BTrees.IIBTree", "IITreeSet");
        let mut g = Graph::new();
        let none = g.add(Obj::None);
        let a = int_state(&mut g, &[1], None);
        let b = int_state(&mut g, &[2], None);
        let (a, b) = (tree(&mut g, a), tree(&mut g, b));
        assert!(resolve(&mut g, &PrTable::default(), fam, shape, [none, a, b]).is_ok());
        assert_eq!(
            resolve(&mut g, &PrTable::default(), fam, shape, [none, none, b]),
            Err(Failure::Conflict { positions: [-1, -1, -1], reason: 12 })
        );
        let child = g.add(Obj::Int(0));
        let two = g.add(Obj::Tuple(vec![child, child]));
        assert_eq!(
            resolve(&mut g, &PrTable::default(), fam, shape, [none, two, b]),
            Err(Failure::Conflict { positions: [-1, -1, -1], reason: 11 })
        );
        assert!(matches!(resolve(&mut g, &PrTable::default(), fam, shape, [child, a, b]), Err(Failure::Malformed(_))));
    }

    #[test]
    fn next_pointers_must_be_the_same_object() {
        let (fam, shape) = family("BTrees.IIBTree", "IIBucket");
        let mut g = Graph::new();
        let next = g.add(Obj::Str("next bucket".into()));
        let other = g.add(Obj::Str("next bucket".into()));
        let old = int_state(&mut g, &[1, 1, 2, 2], Some(next));
        let committed = int_state(&mut g, &[1, 1, 2, 2, 3, 3], Some(next));
        let new = int_state(&mut g, &[1, 1, 2, 2, 4, 4], Some(next));
        let split = int_state(&mut g, &[1, 1, 2, 2, 4, 4], Some(other));
        let prs = PrTable::default();
        let out = resolve(&mut g, &prs, fam, shape, [old, committed, new]).expect("merges");
        let Some(Obj::Tuple(parts)) = g.get(out).cloned() else { panic!("a tuple") };
        assert_eq!(parts[1], next);
        assert_eq!(
            resolve(&mut g, &prs, fam, shape, [old, committed, split]),
            Err(Failure::Conflict { positions: [-1, -1, -1], reason: 0 })
        );
    }

    #[test]
    fn setstate_errors_are_malformed_and_odd_items_ignored() {
        let (fam, shape) = family("BTrees.IIBTree", "IIBucket");
        let mut g = Graph::new();
        let text = g.add(Obj::Str("x".into()));
        let bad_items = g.add(Obj::Tuple(vec![text, text]));
        let bad = g.add(Obj::Tuple(vec![bad_items]));
        let good = int_state(&mut g, &[1, 1, 2], None);
        let more = int_state(&mut g, &[1, 1, 3, 3], None);
        let prs = PrTable::default();
        assert!(matches!(resolve(&mut g, &prs, fam, shape, [good, bad, more]), Err(Failure::Malformed(_))));
        let out = resolve(&mut g, &prs, fam, shape, [good, good, more]).expect("merges");
        let Some(Obj::Tuple(parts)) = g.get(out).cloned() else { panic!("a tuple") };
        assert_eq!(ints(&g, parts[0]), [1, 1, 3, 3]);
    }

    #[test]
    fn unmodelled_object_values_are_refused() {
        let (fam, shape) = family("BTrees.OOBTree", "OOBucket");
        let mut g = Graph::new();
        let k = g.add(Obj::Str("k".into()));
        let dict = g.add(Obj::Dict(vec![]));
        let in_list = g.add(Obj::List(vec![dict]));
        let items = g.add(Obj::Tuple(vec![k, in_list]));
        let state = g.add(Obj::Tuple(vec![items]));
        let failure = resolve(&mut g, &PrTable::default(), fam, shape, [state, state, state]);
        assert!(matches!(failure, Err(Failure::Unmodelled(_))), "{failure:?}");
    }
}
