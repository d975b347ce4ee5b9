//! The three-way merge of bucket items: BTrees' `bucket_merge` (`MergeTemplate.c`), step for
//! step, so that the same inputs give the same result or the same error, with the same
//! positions, even for inputs that break a bucket's invariants (unsorted keys: `__setstate__`
//! does not check, and neither does the merge).
//!
//! The rules, as the C code's comment puts it: a transaction may delete a key the other leaves
//! alone, insert a key the other does not insert, or change a value the other leaves alone (or
//! changes to the same value); not both delete everything, not start from or produce an empty
//! bucket, and not delete a bucket's first key (that changes the parent node). Each refusal
//! has a reason code, 1 to 13 ([`crate::reason_message`]).

use crate::family::{Key, Value, compare_keys, values_equal};
use crate::pyobj::{Py, Raise};

/// One item: a key and, for mapping buckets, its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Item {
    pub(crate) key: Key,
    pub(crate) value: Option<Value>,
}

/// Why the merge stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `BTreesConflictError(p1, p2, p3, reason)`.
    Conflict { positions: [i32; 3], reason: u8 },
    /// A comparison raised.
    Raised(Raise),
}

impl From<Raise> for Stop {
    fn from(r: Raise) -> Self {
        Stop::Raised(r)
    }
}

/// `SetIteration` over one bucket: `position` is 1 + the index of the current item, or -1
/// once exhausted (0 before the first `next`, which never shows here).
struct Cursor<'a> {
    items: &'a [Item],
    position: i32,
}

impl<'a> Cursor<'a> {
    /// A cursor on the first item, as after `initSetIteration` and one `next`.
    fn new(items: &'a [Item]) -> Self {
        let mut c = Cursor { items, position: 0 };
        c.next();
        c
    }

    fn next(&mut self) {
        if self.position < 0 {
            return;
        }
        let index = usize::try_from(self.position).unwrap_or(usize::MAX);
        self.position = if index < self.items.len() { self.position.saturating_add(1) } else { -1 };
    }

    fn live(&self) -> bool {
        self.position >= 0
    }

    /// The current item (only called while [`Self::live`]).
    fn item(&self) -> Item {
        let index = usize::try_from(self.position - 1).unwrap_or(usize::MAX);
        self.items.get(index).copied().unwrap_or(Item { key: Key::Signed(0), value: None })
    }
}

/// Merges `old` (s1), `committed` (s2) and `new` (s3). `mapping` is false for sets, whose
/// items have no values (every value test then passes, as `set || ...` in the C code).
pub(crate) fn merge(
    py: &Py<'_>,
    old: &[Item],
    committed: &[Item],
    new: &[Item],
    mapping: bool,
) -> Result<Vec<Item>, Stop> {
    let conflict = |c1: &Cursor, c2: &Cursor, c3: &Cursor, reason: u8| Stop::Conflict {
        positions: [c1.position, c2.position, c3.position],
        reason,
    };
    if committed.is_empty() || new.is_empty() {
        return Err(Stop::Conflict { positions: [-1, -1, -1], reason: 12 });
    }
    // `TEST_VALUE(a, b) == 0`. Its errors are not checked: the values count as different, and
    // the exception stays pending.
    let unchanged = |a: &Item, b: &Item| -> Result<bool, Raise> {
        match (mapping, a.value, b.value) {
            (true, Some(x), Some(y)) => match values_equal(py, &x, &y) {
                Err(_) if matches!(x, Value::Object(_)) => {
                    py.poison();
                    Ok(false)
                }
                other => other,
            },
            _ => Ok(true),
        }
    };
    // `TEST_KEY_SET_OR`: for object keys, fails on any pending exception (`PyErr_Occurred`);
    // C-typed keys compare without looking.
    let keys = |a: &Item, b: &Item| {
        let order = compare_keys(py, &a.key, &b.key)?;
        if py.poisoned() && matches!(a.key, Key::Object(_)) {
            return Err(Raise("a value comparison raised"));
        }
        Ok(order)
    };
    let (mut i1, mut i2, mut i3) = (Cursor::new(old), Cursor::new(committed), Cursor::new(new));
    let mut out = Vec::new();

    while i1.live() && i2.live() && i3.live() {
        let (a, b, c) = (i1.item(), i2.item(), i3.item());
        let cmp12 = keys(&a, &b)?;
        let cmp13 = keys(&a, &c)?;
        if cmp12 == 0 {
            if cmp13 == 0 {
                if unchanged(&a, &b)? {
                    out.push(c); // a change in new, or none at all
                } else if unchanged(&a, &c)? {
                    out.push(b); // a change in committed
                } else {
                    return Err(conflict(&i1, &i2, &i3, 1));
                }
                i1.next();
                i2.next();
                i3.next();
            } else if cmp13 > 0 {
                out.push(c); // inserted in new
                i3.next();
            } else if unchanged(&a, &b)? {
                // deleted in new
                if i3.position == 1 {
                    return Err(conflict(&i1, &i2, &i3, 13));
                }
                i1.next();
                i2.next();
            } else {
                return Err(conflict(&i1, &i2, &i3, 2));
            }
        } else if cmp13 == 0 {
            if cmp12 > 0 {
                out.push(b); // inserted in committed
                i2.next();
            } else if unchanged(&a, &c)? {
                // deleted in committed
                if i2.position == 1 {
                    return Err(conflict(&i1, &i2, &i3, 13));
                }
                i1.next();
                i3.next();
            } else {
                return Err(conflict(&i1, &i2, &i3, 3));
            }
        } else {
            let cmp23 = keys(&b, &c)?;
            if cmp23 == 0 {
                return Err(conflict(&i1, &i2, &i3, 4));
            }
            if cmp12 > 0 {
                if cmp23 > 0 {
                    out.push(c);
                    i3.next();
                } else {
                    out.push(b);
                    i2.next();
                }
            } else if cmp13 > 0 {
                out.push(c);
                i3.next();
            } else {
                return Err(conflict(&i1, &i2, &i3, 5));
            }
        }
    }

    while i2.live() && i3.live() {
        let (b, c) = (i2.item(), i3.item());
        let cmp23 = keys(&b, &c)?;
        if cmp23 == 0 {
            return Err(conflict(&i1, &i2, &i3, 6));
        }
        if cmp23 > 0 {
            out.push(c);
            i3.next();
        } else {
            out.push(b);
            i2.next();
        }
    }

    while i1.live() && i2.live() {
        let (a, b) = (i1.item(), i2.item());
        let cmp12 = keys(&a, &b)?;
        if cmp12 > 0 {
            out.push(b);
            i2.next();
        } else if cmp12 == 0 && unchanged(&a, &b)? {
            i1.next();
            i2.next();
        } else {
            return Err(conflict(&i1, &i2, &i3, 7));
        }
    }

    while i1.live() && i3.live() {
        let (a, c) = (i1.item(), i3.item());
        let cmp13 = keys(&a, &c)?;
        if cmp13 > 0 {
            out.push(c);
            i3.next();
        } else if cmp13 == 0 && unchanged(&a, &c)? {
            i1.next();
            i3.next();
        } else {
            return Err(conflict(&i1, &i2, &i3, 8));
        }
    }

    if i1.live() {
        return Err(conflict(&i1, &i2, &i3, 9));
    }
    while i2.live() {
        out.push(i2.item());
        i2.next();
    }
    while i3.live() {
        out.push(i3.item());
        i3.next();
    }
    if out.is_empty() {
        return Err(Stop::Conflict { positions: [-1, -1, -1], reason: 10 });
    }
    if py.poisoned() {
        // The state is returned with the exception set: CPython raises `SystemError`.
        return Err(Stop::Raised(Raise("a value comparison raised")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use zeo_proto::pickle::Graph;

    use super::*;
    use crate::persistent_ref::PrTable;

    /// Items of an int mapping bucket: (key, value).
    fn items(pairs: &[(i64, i64)]) -> Vec<Item> {
        pairs.iter().map(|&(k, v)| Item { key: Key::Signed(k), value: Some(Value::Signed(v)) }).collect()
    }

    fn keys_only(keys: &[i64]) -> Vec<Item> {
        keys.iter().map(|&k| Item { key: Key::Signed(k), value: None }).collect()
    }

    fn run(old: &[(i64, i64)], committed: &[(i64, i64)], new: &[(i64, i64)]) -> Result<Vec<(i64, i64)>, Stop> {
        let (graph, prs) = (Graph::new(), PrTable::default());
        let py = Py::new(&graph, &prs);
        let out = merge(&py, &items(old), &items(committed), &items(new), true)?;
        Ok(out
            .iter()
            .map(|i| match (i.key, i.value) {
                (Key::Signed(k), Some(Value::Signed(v))) => (k, v),
                _ => panic!("int items"),
            })
            .collect())
    }

    fn conflict(positions: [i32; 3], reason: u8) -> Result<Vec<(i64, i64)>, Stop> {
        Err(Stop::Conflict { positions, reason })
    }

    #[test]
    fn independent_changes_merge() {
        let old = [(1, 1), (2, 2), (3, 3)];
        // Inserts on both sides, in key order.
        assert_eq!(
            run(&old, &[(1, 1), (2, 2), (3, 3), (5, 5)], &[(1, 1), (2, 2), (3, 3), (4, 4)]),
            Ok(vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)])
        );
        // A change on one side, a delete (not of the first key) on the other.
        assert_eq!(run(&old, &[(1, 1), (2, 20), (3, 3)], &[(1, 1), (2, 2)]), Ok(vec![(1, 1), (2, 20)]));
        // Starting from an empty bucket.
        assert_eq!(run(&[], &[(1, 1)], &[(2, 2)]), Ok(vec![(1, 1), (2, 2)]));
        // Deletes at the end, one side each.
        assert_eq!(run(&old, &[(1, 1), (2, 2)], &[(1, 1), (3, 3)]), Ok(vec![(1, 1)]));
    }

    /// Each case's expected result is what BTrees 6.5's `IIBucket._p_resolveConflict` gives.
    /// Reason 10 (an empty result) has no case: the first-key rule (13) stops every history
    /// that would get there, and a search of 200,000 random small histories, sorted or not,
    /// found none.
    #[test]
    fn each_refusal_has_its_reason() {
        let old = [(1, 1), (2, 2), (3, 3)];
        assert_eq!(run(&old, &[(1, 1), (2, 8), (3, 3)], &[(1, 1), (2, 9), (3, 3)]), conflict([2, 2, 2], 1));
        // Even the same new value on both sides (the C code's comment says otherwise; its code
        // refuses, and so do we).
        assert_eq!(run(&old, &[(1, 1), (2, 9), (3, 3)], &[(1, 1), (2, 9), (3, 3)]), conflict([2, 2, 2], 1));
        assert_eq!(run(&old, &[(1, 1), (2, 8), (3, 3)], &[(1, 1), (3, 3)]), conflict([2, 2, 2], 2));
        assert_eq!(run(&old, &[(1, 1), (3, 3)], &[(1, 1), (2, 8), (3, 3)]), conflict([2, 2, 2], 3));
        assert_eq!(
            run(&old, &[(1, 1), (2, 2), (3, 3), (4, 4)], &[(1, 1), (2, 2), (3, 3), (4, 5)]),
            conflict([-1, 4, 4], 6)
        );
        assert_eq!(run(&old, &[(1, 1), (3, 3)], &[(1, 1), (3, 3)]), conflict([2, 2, 2], 4));
        assert_eq!(run(&old, &[(1, 1), (3, 3)], &[(1, 1), (4, 4)]), conflict([2, 2, 2], 5));
        assert_eq!(run(&old, &[(1, 1), (2, 2), (4, 4)], &[(1, 1), (2, 2), (4, 5)]), conflict([3, 3, 3], 4));
        assert_eq!(run(&old, &[(1, 1), (2, 2)], &[(1, 1), (2, 2)]), conflict([3, -1, -1], 9));
        assert_eq!(run(&old, &[(1, 1), (2, 2), (3, 9)], &[(1, 1), (2, 2)]), conflict([3, 3, -1], 7));
        assert_eq!(run(&old, &[(1, 1), (2, 2)], &[(1, 1), (2, 2), (3, 9)]), conflict([3, -1, 3], 8));
        assert_eq!(run(&[(1, 1), (2, 2)], &[(2, 2)], &[(1, 1)]), conflict([1, 1, 1], 13));
        assert_eq!(run(&old, &[], &[(1, 1)]), conflict([-1, -1, -1], 12));
        assert_eq!(run(&old, &[(2, 2), (3, 3)], &old), conflict([1, 1, 1], 13));
        assert_eq!(run(&old, &old, &[(2, 2), (3, 3)]), conflict([1, 1, 1], 13));
    }

    #[test]
    fn sets_ignore_values() {
        let (graph, prs) = (Graph::new(), PrTable::default());
        let py = Py::new(&graph, &prs);
        let out = merge(&py, &keys_only(&[1, 2]), &keys_only(&[1, 2, 3]), &keys_only(&[1]), false).expect("merges");
        assert_eq!(out, keys_only(&[1, 3]));
        let dueling = merge(&py, &keys_only(&[1]), &keys_only(&[1, 2]), &keys_only(&[1, 2]), false);
        assert_eq!(dueling, Err(Stop::Conflict { positions: [-1, 2, 2], reason: 6 }));
    }
}
