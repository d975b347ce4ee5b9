//! Python's `is`, `==` and `<` on decoded objects, for the object kinds BTrees keys and values
//! are made of here: `None`, bool, int (any size), float, str, bytes, tuple, list and persistent
//! references. Where Python would raise (`'<' not supported between 'str' and 'int'`, a
//! `PersistentReference` compared with anything but an equal one), we return [`Raise`]: the
//! merge then stops, as Python's does.
//!
//! The rules follow CPython 3.11: `PyObject_RichCompareBool` returns true for `a == a` without
//! calling `__eq__` (so a NaN equals itself, and a weak reference equals itself); tuples and
//! lists compare item by item with `==` and then the first differing items with the operator;
//! lists of different lengths are unequal without looking at items; ints and floats compare
//! exactly; objects of unrelated kinds are unequal and unordered.

use std::cell::Cell;
use std::cmp::Ordering;

use num_bigint::BigInt;
use num_traits::FromPrimitive;
use zeo_proto::pickle::{Graph, Obj, ObjId};

use crate::persistent_ref::PrTable;

/// Python raised during a comparison (or the objects nest deeper than we follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raise(pub(crate) &'static str);

/// How deep tuples and lists are followed (Python's own limit is its recursion limit, 1000).
pub(crate) const MAX_DEPTH: usize = 100;

/// The comparison context: the objects, and which persistent ids are the same reference.
pub(crate) struct Py<'g> {
    pub(crate) graph: &'g Graph,
    pub(crate) prs: &'g PrTable,
    /// Whether an exception is pending (see [`Py::poison`]).
    pending: Cell<bool>,
    /// Comparisons left before we give up (see [`Py::new`]).
    budget: Cell<u64>,
}

/// An int or float, as Python compares them.
enum Num {
    Int(BigInt),
    Small(i64),
    Float(f64),
}

impl<'g> Py<'g> {
    /// Comparisons are budgeted: 16 per object of the graph, plus a constant. A merge compares
    /// each item a few times, and each comparison visits the objects of the two items, so real
    /// states stay far below; but objects shared through the memo make a small record hold
    /// tuples whose item-by-item comparison takes exponential time (in Python too), and a
    /// record from a client must not keep the server busy.
    pub(crate) fn new(graph: &'g Graph, prs: &'g PrTable) -> Self {
        let budget = (graph.len() as u64).saturating_mul(16).saturating_add(100_000);
        Py { graph, prs, pending: Cell::new(false), budget: Cell::new(budget) }
    }

    fn spend(&self) -> Result<(), Raise> {
        let left = self.budget.get();
        if left == 0 {
            return Err(Raise("comparisons too costly"));
        }
        self.budget.set(left - 1);
        Ok(())
    }

    /// Records that a comparison raised and nothing cleared the exception: `bucket_merge`
    /// does not check value comparisons for errors, so it goes on with the exception set.
    /// From then on every comparison that calls Python code (`PersistentReference.__lt__`,
    /// `__eq__`) fails, since CPython turns a result returned with an exception set into a
    /// `SystemError`; comparisons CPython does in C (ints, strs, tuples of them) still work.
    pub(crate) fn poison(&self) {
        self.pending.set(true);
    }

    /// Whether [`Py::poison`] was called.
    pub(crate) fn poisoned(&self) -> bool {
        self.pending.get()
    }

    pub(crate) fn obj(&self, id: ObjId) -> &'g Obj {
        self.graph.get(id).unwrap_or(&Obj::None)
    }

    /// Python's `a is b`. Besides the same object: the singletons CPython's unpickler hands
    /// out (`None`, the bools, small ints, the empty tuple, one-character strs below U+0100,
    /// bytes of length 0 or 1), and persistent ids that ZODB's reference factory maps to one
    /// `PersistentReference`.
    pub(crate) fn is_same(&self, a: ObjId, b: ObjId) -> bool {
        if a == b {
            return true;
        }
        match (self.obj(a), self.obj(b)) {
            (Obj::None, Obj::None) => true,
            (Obj::Bool(x), Obj::Bool(y)) => x == y,
            (Obj::Int(x), Obj::Int(y)) => x == y && (-5..=256).contains(x),
            (Obj::Tuple(x), Obj::Tuple(y)) => x.is_empty() && y.is_empty(),
            (Obj::Str(x), Obj::Str(y)) => x == y && is_shared_str(x),
            (Obj::Bytes(x), Obj::Bytes(y)) => x == y && x.len() <= 1,
            (Obj::PersistentId(_), Obj::PersistentId(_)) => {
                self.prs.reference(a).is_some_and(|r| Some(r) == self.prs.reference(b))
            }
            _ => false,
        }
    }

    /// BTrees' `COMPARE` macro (object keys and values): `None` sorts first, otherwise `<`
    /// then `==`: -1, 0 or 1.
    pub(crate) fn compare(&self, a: ObjId, b: ObjId) -> Result<i8, Raise> {
        match (self.obj(a), self.obj(b)) {
            (Obj::None, Obj::None) => return Ok(0),
            (Obj::None, _) => return Ok(-1),
            (_, Obj::None) => return Ok(1),
            _ => {}
        }
        if self.lt(a, b, 0)? {
            Ok(-1)
        } else if self.eq(a, b, 0)? {
            Ok(0)
        } else {
            Ok(1)
        }
    }

    /// `PyObject_RichCompareBool(a, b, Py_EQ)`.
    pub(crate) fn eq(&self, a: ObjId, b: ObjId, depth: usize) -> Result<bool, Raise> {
        if self.is_same(a, b) {
            return Ok(true);
        }
        self.spend()?;
        if depth > MAX_DEPTH {
            return Err(Raise("objects nested too deeply"));
        }
        let (x, y) = (self.obj(a), self.obj(b));
        modelled(x)?;
        modelled(y)?;
        if matches!(x, Obj::PersistentId(_)) || matches!(y, Obj::PersistentId(_)) {
            return self.references_equal(a, b).map(|()| true);
        }
        if let (Some(m), Some(n)) = (num(x), num(y)) {
            return Ok(num_cmp(&m, &n) == Some(Ordering::Equal));
        }
        match (x, y) {
            (Obj::Str(s), Obj::Str(t)) => Ok(s == t),
            (Obj::Bytes(s), Obj::Bytes(t)) => Ok(s == t),
            (Obj::List(s), Obj::List(t)) if s.len() != t.len() => Ok(false),
            (Obj::Tuple(s), Obj::Tuple(t)) | (Obj::List(s), Obj::List(t)) => {
                Ok(self.first_difference(s, t, depth)?.is_none() && s.len() == t.len())
            }
            _ => Ok(false),
        }
    }

    /// `PyObject_RichCompareBool(a, b, Py_LT)`.
    pub(crate) fn lt(&self, a: ObjId, b: ObjId, depth: usize) -> Result<bool, Raise> {
        self.spend()?;
        if depth > MAX_DEPTH {
            return Err(Raise("objects nested too deeply"));
        }
        let (x, y) = (self.obj(a), self.obj(b));
        modelled(x)?;
        modelled(y)?;
        if matches!(x, Obj::PersistentId(_)) || matches!(y, Obj::PersistentId(_)) {
            // An equal reference is not less; any other comparison raises.
            return self.references_equal(a, b).map(|()| false);
        }
        if let (Some(m), Some(n)) = (num(x), num(y)) {
            return Ok(num_cmp(&m, &n) == Some(Ordering::Less));
        }
        match (x, y) {
            (Obj::Str(s), Obj::Str(t)) => Ok(s < t),
            (Obj::Bytes(s), Obj::Bytes(t)) => Ok(s < t),
            (Obj::Tuple(s), Obj::Tuple(t)) | (Obj::List(s), Obj::List(t)) => {
                match self.first_difference(s, t, depth)? {
                    Some(i) => match (s.get(i), t.get(i)) {
                        (Some(&p), Some(&q)) => self.lt(p, q, depth + 1),
                        _ => Ok(false),
                    },
                    None => Ok(s.len() < t.len()),
                }
            }
            _ => Err(Raise("'<' not supported between these types")),
        }
    }

    /// The first index below both lengths whose items are not `==`.
    fn first_difference(&self, s: &[ObjId], t: &[ObjId], depth: usize) -> Result<Option<usize>, Raise> {
        for (i, (&p, &q)) in s.iter().zip(t).enumerate() {
            if !self.eq(p, q, depth + 1)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// `PersistentReference.__cmp__`: two references to the same oid in the same database,
    /// neither weak, are equal; the same reference object is equal to itself; anything else
    /// raises `ValueError`.
    fn references_equal(&self, a: ObjId, b: ObjId) -> Result<(), Raise> {
        if self.poisoned() {
            return Err(Raise("PersistentReference compared while an exception is pending"));
        }
        let refusal = Raise("can't reliably compare against different PersistentReferences");
        let (Some(p), Some(q)) = (self.prs.reference(a), self.prs.reference(b)) else {
            return Err(refusal);
        };
        if p == q {
            return Ok(());
        }
        let (p, q) = (self.prs.info(p), self.prs.info(q));
        if p.oid == q.oid && p.database == q.database && !p.weak && !q.weak { Ok(()) } else { Err(refusal) }
    }
}

/// Whether `obj` is of a kind whose comparisons we model (see the module doc).
pub(crate) fn is_modelled(obj: &Obj) -> bool {
    matches!(
        obj,
        Obj::None
            | Obj::Bool(_)
            | Obj::Int(_)
            | Obj::BigInt(_)
            | Obj::Float(_)
            | Obj::Str(_)
            | Obj::Bytes(_)
            | Obj::Tuple(_)
            | Obj::List(_)
            | Obj::PersistentId(_)
    )
}

fn modelled(obj: &Obj) -> Result<(), Raise> {
    if is_modelled(obj) { Ok(()) } else { Err(Raise("comparison of objects we do not model")) }
}

/// A str CPython's unpickler shares: empty, or one character below U+0100.
pub(crate) fn is_shared_str(s: &str) -> bool {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (None, _) => true,
        (Some(c), None) => u32::from(c) < 0x100,
        _ => false,
    }
}

fn num(obj: &Obj) -> Option<Num> {
    match obj {
        Obj::Bool(b) => Some(Num::Small(i64::from(*b))),
        Obj::Int(i) => Some(Num::Small(*i)),
        Obj::BigInt(bytes) => Some(Num::Int(BigInt::from_signed_bytes_le(bytes))),
        Obj::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// Python's exact int/float ordering; `None` when a NaN makes them unordered.
fn num_cmp(a: &Num, b: &Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Small(x), Num::Small(y)) => Some(x.cmp(y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(y),
        (Num::Float(x), _) => int_float_cmp(&to_big(b), *x).map(Ordering::reverse),
        (_, Num::Float(y)) => int_float_cmp(&to_big(a), *y),
        _ => Some(to_big(a).cmp(&to_big(b))),
    }
}

fn to_big(n: &Num) -> BigInt {
    match n {
        Num::Small(i) => BigInt::from(*i),
        Num::Int(b) => b.clone(),
        // Callers pass ints only.
        Num::Float(_) => BigInt::default(),
    }
}

/// How the int `i` orders against the float `f`, exactly (as CPython's `float_richcompare`).
fn int_float_cmp(i: &BigInt, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() {
        return Some(if f > 0.0 { Ordering::Less } else { Ordering::Greater });
    }
    let whole = f.trunc();
    // A finite float's integral part converts exactly.
    let whole_int = BigInt::from_f64(whole)?;
    match i.cmp(&whole_int) {
        Ordering::Equal if f > whole => Some(Ordering::Less),
        Ordering::Equal if f < whole => Some(Ordering::Greater),
        order => Some(order),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Objs {
        graph: Graph,
        prs: PrTable,
    }

    impl Objs {
        fn new() -> Self {
            Objs { graph: Graph::new(), prs: PrTable::default() }
        }
        fn add(&mut self, obj: Obj) -> ObjId {
            self.graph.add(obj)
        }
        fn py(&self) -> Py<'_> {
            Py::new(&self.graph, &self.prs)
        }
    }

    #[test]
    fn numbers_compare_exactly_across_int_and_float() {
        let mut o = Objs::new();
        let big = o.add(Obj::Int((1 << 53) + 1));
        let float = o.add(Obj::Float(9_007_199_254_740_992.0));
        let one = o.add(Obj::Int(1));
        let yes = o.add(Obj::Bool(true));
        let one_f = o.add(Obj::Float(1.0));
        let half = o.add(Obj::Float(0.5));
        let nan = o.add(Obj::Float(f64::NAN));
        let nan2 = o.add(Obj::Float(f64::NAN));
        let huge = o.add(Obj::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]));
        let inf = o.add(Obj::Float(f64::INFINITY));
        let py = o.py();
        assert_eq!(py.compare(float, big), Ok(-1));
        assert_eq!(py.compare(big, float), Ok(1));
        assert_eq!(py.compare(one, yes), Ok(0));
        assert_eq!(py.compare(one, one_f), Ok(0));
        assert_eq!(py.compare(half, one), Ok(-1));
        assert_eq!(py.compare(one, half), Ok(1));
        assert_eq!(py.compare(huge, inf), Ok(-1));
        assert_eq!(py.compare(huge, big), Ok(1));
        // NaN: not less, not equal (so "greater"), except to itself.
        assert_eq!(py.compare(nan, nan2), Ok(1));
        assert_eq!(py.compare(nan, nan), Ok(0));
        assert_eq!(py.compare(nan, one), Ok(1));
    }

    #[test]
    fn none_sorts_first_only_at_the_top() {
        let mut o = Objs::new();
        let none = o.add(Obj::None);
        let none2 = o.add(Obj::None);
        let one = o.add(Obj::Int(1));
        let t_none = o.add(Obj::Tuple(vec![none]));
        let t_one = o.add(Obj::Tuple(vec![one]));
        let t_none2 = o.add(Obj::Tuple(vec![none2, one]));
        let py = o.py();
        assert_eq!(py.compare(none, one), Ok(-1));
        assert_eq!(py.compare(one, none2), Ok(1));
        assert_eq!(py.compare(none, none2), Ok(0));
        assert!(py.compare(t_none, t_one).is_err());
        assert_eq!(py.compare(t_none, t_none2), Ok(-1));
    }

    #[test]
    fn sequences_compare_item_by_item() {
        let mut o = Objs::new();
        let a = o.add(Obj::Str("a".into()));
        let b = o.add(Obj::Str("b".into()));
        let x = o.add(Obj::Int(1));
        let ab = o.add(Obj::Tuple(vec![a, b]));
        let a_only = o.add(Obj::Tuple(vec![a]));
        let ax = o.add(Obj::Tuple(vec![a, x]));
        let list_ax = o.add(Obj::List(vec![a, x]));
        let list_a = o.add(Obj::List(vec![a]));
        let list_b_x = o.add(Obj::List(vec![b, x, x]));
        let py = o.py();
        assert_eq!(py.compare(a_only, ab), Ok(-1));
        assert!(py.compare(ab, ax).is_err(), "'b' < 1 raises");
        assert_eq!(py.eq(ab, ax, 0), Ok(false));
        // A tuple and a list are unequal and unordered.
        assert_eq!(py.eq(ax, list_ax, 0), Ok(false));
        assert!(py.lt(ax, list_ax, 0).is_err());
        // Lists of different lengths are unequal before any item is compared.
        assert_eq!(py.eq(list_a, list_b_x, 0), Ok(false));
        assert_eq!(py.compare(list_a, list_b_x), Ok(-1));
    }

    #[test]
    fn unrelated_kinds_are_unequal_and_unordered() {
        let mut o = Objs::new();
        let s = o.add(Obj::Str("1".into()));
        let b = o.add(Obj::Bytes(b"1".to_vec()));
        let i = o.add(Obj::Int(1));
        let py = o.py();
        for (p, q) in [(s, b), (s, i), (b, i)] {
            assert_eq!(py.eq(p, q, 0), Ok(false));
            assert!(py.compare(p, q).is_err());
        }
    }

    #[test]
    fn singletons_are_the_same_object() {
        let mut o = Objs::new();
        let pairs = [
            (Obj::Str("x".into()), true),
            (Obj::Str("\u{e9}".into()), true),
            (Obj::Str("\u{20ac}".into()), false),
            (Obj::Str("xy".into()), false),
            (Obj::Bytes(vec![7]), true),
            (Obj::Bytes(vec![7, 7]), false),
            (Obj::Tuple(vec![]), true),
            (Obj::Int(256), true),
            (Obj::Int(257), false),
            (Obj::Float(1.0), false),
        ];
        let ids: Vec<_> = pairs.iter().map(|(obj, shared)| (o.add(obj.clone()), o.add(obj.clone()), *shared)).collect();
        let py = o.py();
        for (a, b, shared) in ids {
            assert_eq!(py.is_same(a, b), shared, "{:?}", py.obj(a));
        }
    }

    #[test]
    fn exponential_comparisons_are_cut_short() {
        // Two equal 60-level towers of (t, t) pairs, each level one object shared twice: few
        // objects, 2^60 item comparisons.
        let mut o = Objs::new();
        let mut a = o.add(Obj::Str("leaf".into()));
        let mut b = o.add(Obj::Str("leaf".into()));
        for _ in 0..60 {
            a = o.add(Obj::Tuple(vec![a, a]));
            b = o.add(Obj::Tuple(vec![b, b]));
        }
        assert_eq!(o.py().compare(a, b), Err(Raise("comparisons too costly")));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut o = Objs::new();
        let mut a = o.add(Obj::Int(1));
        let mut b = o.add(Obj::Int(1));
        for _ in 0..2 * MAX_DEPTH {
            a = o.add(Obj::Tuple(vec![a]));
            b = o.add(Obj::Tuple(vec![b]));
        }
        assert!(o.py().compare(a, b).is_err());
    }
}
