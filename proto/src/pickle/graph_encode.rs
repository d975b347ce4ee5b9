//! [`encode_graph`]: objects of a [`Graph`] written back as Python's pickler writes them.

use super::encode::{Encoder, Memo, SharedKey};
use super::error::{Limit, PickleError};
use super::graph::{Graph, Obj, ObjId};
use super::opcodes::*;

/// Writes each root as `pickle.Pickler(f, 3).dump(root)` would, one pickle after the other
/// through the same pickler (so later pickles `BINGET` objects the earlier ones memoized): how
/// ZODB writes a data record, class pickle then state pickle.
///
/// The memo follows object identity: an [`ObjId`] reached a second time is a `BINGET`. Objects
/// CPython always shares are shared by value, as in [`super::encode_memo`]: a str that is empty
/// or one character below U+0100, a bytes of length 0 or 1, a global. The empty tuple, ints,
/// floats, `None` and bools are never memoized, as in CPython. [`Obj::Py2Str`] is written as
/// `bytes`, [`Obj::Set`]/[`Obj::FrozenSet`] as `builtins.set([...])`, [`Obj::Object`] as
/// `REDUCE` (see [`super::encode_wire`]). A persistent id object is written before its
/// `BINPERSID`; the persistent object itself is never memoized.
///
/// # Errors
///
/// [`PickleError::Recursive`] if an object contains itself (Python can pickle some such
/// graphs; we do not write them), [`PickleError::LimitExceeded`] ([`Limit::Depth`]) for
/// nesting deeper than [`super::DEFAULT_MAX_DEPTH`], [`PickleError::Truncated`] for an id that
/// is not in `graph` (offset 0).
pub fn encode_graph(graph: &Graph, roots: &[ObjId]) -> Result<Vec<u8>, PickleError> {
    check_depth(graph, roots, super::DEFAULT_MAX_DEPTH)?;
    let mut e = Encoder::new(Some(Memo::default()));
    for (i, &root) in roots.iter().enumerate() {
        if i > 0 {
            e.out.extend([PROTO, 3]);
        }
        save(graph, &mut e, root);
        e.op(STOP);
    }
    Ok(e.out)
}

/// Writes `id`; [`check_depth`] has made sure that it exists and that what it reaches is
/// acyclic and shallow.
fn save<'g>(graph: &'g Graph, e: &mut Encoder<'g>, id: ObjId) {
    let Some(obj) = graph.get(id) else { return };
    let me = || Some(SharedKey::Obj(id.index()));
    let by_identity = match obj {
        Obj::Bytes(b) | Obj::Py2Str(b) => b.len() > 1,
        Obj::Str(_) => !is_shared_str(obj),
        Obj::Tuple(items) => !items.is_empty(),
        Obj::List(_) | Obj::Dict(_) | Obj::Set(_) | Obj::FrozenSet(_) | Obj::Object { .. } => true,
        _ => false,
    };
    if by_identity && e.memo_get(&SharedKey::Obj(id.index())) {
        return;
    }
    let item = |e: &mut Encoder<'g>, &item: &'g ObjId| save(graph, e, item);
    let pair = |e: &mut Encoder<'g>, &(k, v): &'g (ObjId, ObjId)| {
        save(graph, e, k);
        save(graph, e, v);
    };
    match obj {
        Obj::None => e.op(NONE),
        Obj::Bool(b) => e.op(if *b { NEWTRUE } else { NEWFALSE }),
        Obj::Int(i) => e.save_int(*i),
        Obj::BigInt(b) => e.save_big_int(b),
        Obj::Float(f) => {
            e.op(BINFLOAT);
            e.out.extend(f.to_be_bytes());
        }
        Obj::Bytes(b) | Obj::Py2Str(b) => e.save_bytes(b, me()),
        Obj::Str(s) => e.save_str(s, me()),
        // CPython saves a tuple's items first and memoizes the tuple after them.
        Obj::Tuple(items) => e.save_tuple(items, me(), item),
        Obj::List(items) => {
            e.op(EMPTY_LIST);
            e.memoize(me());
            e.batch_list_exact(items, item);
        }
        Obj::Dict(pairs) => {
            e.op(EMPTY_DICT);
            e.memoize(me());
            e.batch_dict_exact(pairs, pair);
        }
        Obj::Set(items) => e.save_set("set", items, me(), item),
        Obj::FrozenSet(items) => e.save_set("frozenset", items, me(), item),
        Obj::Global { module, name } => e.save_global(module, name),
        Obj::Object { class, args, state, list_items, dict_items } => {
            save(graph, e, *class);
            save(graph, e, *args);
            e.op(REDUCE);
            e.memoize(me());
            e.batch_list_generic(list_items, item);
            e.batch_dict_generic(dict_items, pair);
            if let Some(state) = state {
                save(graph, e, *state);
                e.op(BUILD);
            }
        }
        Obj::PersistentId(pid) => {
            save(graph, e, *pid);
            e.op(BINPERSID);
        }
    }
}

/// A str CPython shares by value: empty, or one character below U+0100.
fn is_shared_str(obj: &Obj) -> bool {
    let Obj::Str(s) = obj else { return false };
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (None, _) => true,
        (Some(c), None) => u32::from(c) < 0x100,
        _ => false,
    }
}

/// The items `obj` holds, in no particular order.
fn children(obj: &Obj) -> Vec<ObjId> {
    match obj {
        Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) | Obj::FrozenSet(v) => v.clone(),
        Obj::Dict(pairs) => pairs.iter().flat_map(|&(k, v)| [k, v]).collect(),
        Obj::Object { class, args, state, list_items, dict_items } => {
            let mut out = vec![*class, *args];
            out.extend(state.iter().copied());
            out.extend(list_items.iter().copied());
            out.extend(dict_items.iter().flat_map(|&(k, v)| [k, v]));
            out
        }
        Obj::PersistentId(p) => vec![*p],
        _ => Vec::new(),
    }
}

/// Checks, without recursion, that every object reachable from `roots` exists, that none
/// contains itself and that no path is longer than `max_depth` objects. Each object is
/// explored once (a shared object's depth is remembered), so this is linear in the graph.
fn check_depth(graph: &Graph, roots: &[ObjId], max_depth: usize) -> Result<(), PickleError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        /// Explored: the longest path down from here, in objects.
        Done(usize),
    }
    let mut marks = vec![Mark::New; graph.len()];
    for &root in roots {
        // Frames: (object, its children, index of the next child to visit, deepest child).
        let mut stack: Vec<(ObjId, Vec<ObjId>, usize, usize)> = Vec::new();
        let enter = |id: ObjId, stack: &mut Vec<_>, marks: &mut Vec<Mark>| -> Result<(), PickleError> {
            let obj = graph.get(id).ok_or(PickleError::Truncated { offset: 0 })?;
            match marks.get(id.index()) {
                Some(Mark::New) => {}
                Some(Mark::Open) => return Err(PickleError::Recursive { offset: 0 }),
                _ => return Ok(()),
            }
            if stack.len() >= max_depth {
                return Err(PickleError::LimitExceeded { limit: Limit::Depth, max: max_depth, offset: 0 });
            }
            if let Some(m) = marks.get_mut(id.index()) {
                *m = Mark::Open;
            }
            stack.push((id, children(obj), 0, 0));
            Ok(())
        };
        enter(root, &mut stack, &mut marks)?;
        while let Some((id, kids, next, deepest)) = stack.last_mut() {
            if let Some(&child) = kids.get(*next) {
                *next += 1;
                if let Some(Mark::Done(d)) = marks.get(child.index()) {
                    *deepest = (*deepest).max(*d);
                    if stack.len() + *d > max_depth {
                        return Err(PickleError::LimitExceeded { limit: Limit::Depth, max: max_depth, offset: 0 });
                    }
                    continue;
                }
                enter(child, &mut stack, &mut marks)?;
                continue;
            }
            let (id, depth) = (*id, *deepest + 1);
            stack.pop();
            if let Some(m) = marks.get_mut(id.index()) {
                *m = Mark::Done(depth);
            }
            if let Some((_, _, _, parent_deepest)) = stack.last_mut() {
                *parent_deepest = (*parent_deepest).max(depth);
            }
        }
    }
    Ok(())
}
