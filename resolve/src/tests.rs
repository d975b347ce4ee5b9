//! The decision table on whole records: each outcome of [`crate::resolve`]. The merge rules
//! one by one are in `merge.rs`; equality with Python's bytes is the property test's
//! (`tests/against_python.rs`).

use zeo_proto::pickle::{Graph, Obj, ObjId, encode_graph};

use super::*;

/// A record of `class` whose state `state` builds, written as ZODB writes one.
fn record(module: &str, name: &str, state: impl FnOnce(&mut Graph) -> ObjId) -> Vec<u8> {
    let mut g = Graph::new();
    let meta = g.add(Obj::global(module, name));
    let state = state(&mut g);
    encode_graph(&g, &[meta, state]).expect("encodes")
}

fn int_bucket(flat: &[i64]) -> impl FnOnce(&mut Graph) -> ObjId + '_ {
    move |g| {
        let items = flat.iter().map(|&i| g.add(Obj::Int(i))).collect();
        let items = g.add(Obj::Tuple(items));
        g.add(Obj::Tuple(vec![items]))
    }
}

fn iibucket(flat: &[i64]) -> Vec<u8> {
    record("BTrees.IIBTree", "IIBucket", int_bucket(flat))
}

fn length(n: i64) -> Vec<u8> {
    record("BTrees.Length", "Length", |g| g.add(Obj::Int(n)))
}

/// An `OOBucket` mapping str ids to references to objects of `class`, as a folder holds them.
fn folder(ids: &[(&str, u8)], class: (&str, &str)) -> Vec<u8> {
    record("BTrees.OOBTree", "OOBucket", |g| {
        let class = g.add(Obj::global(class.0, class.1));
        let mut flat = Vec::new();
        for &(id, oid) in ids {
            flat.push(g.add(Obj::Str(id.into())));
            let oid = g.add(Obj::Bytes(vec![0, 0, 0, 0, 0, 0, 0, oid]));
            let pid = g.add(Obj::Tuple(vec![oid, class]));
            flat.push(g.add(Obj::PersistentId(pid)));
        }
        let items = g.add(Obj::Tuple(flat));
        g.add(Obj::Tuple(vec![items]))
    })
}

#[test]
fn length_adds_both_changes() {
    assert_eq!(resolve(&length(10), &length(12), &length(9)), Ok(length(11)));
}

#[test]
fn independent_bucket_changes_merge() {
    let merged = resolve(&iibucket(&[1, 1, 2, 2]), &iibucket(&[1, 1, 2, 2, 3, 3]), &iibucket(&[1, 1, 2, 5]));
    assert_eq!(merged, Ok(iibucket(&[1, 1, 2, 5, 3, 3])));
}

#[test]
fn btrees_refusals_carry_reason_and_positions() {
    let refusal = resolve(&iibucket(&[1, 1, 2, 2]), &iibucket(&[1, 1, 2, 3]), &iibucket(&[1, 1, 2, 4]));
    assert_eq!(
        refusal,
        Err(Refusal::Conflict {
            class: "BTrees.IIBTree.IIBucket".into(),
            reason_code: 1,
            message: "Conflicting changes",
            positions: [2, 2, 2],
        })
    );
    let text = refusal.expect_err("refused").to_string();
    assert_eq!(text, "BTrees conflict error at 2/2/2 in BTrees.IIBTree.IIBucket: Conflicting changes");
    let emptied = resolve(&iibucket(&[1, 1]), &iibucket(&[]), &iibucket(&[1, 1, 2, 2]));
    assert!(matches!(emptied, Err(Refusal::Conflict { reason_code: 12, .. })), "{emptied:?}");
    for code in 0..=13 {
        assert_ne!(reason_message(code), "Unknown reason");
    }
}

#[test]
fn folder_references_to_missing_classes_are_spelled_out() {
    let class = ("plone.app.contenttypes.content", "Document");
    let old = folder(&[("a", 1)], class);
    let committed = folder(&[("a", 1), ("b", 2)], class);
    let new = folder(&[("a", 1), ("c", 3)], class);
    let merged = resolve(&old, &committed, &new).expect("resolves");
    // What runzeo writes: each reference's class as (module, name), one tuple per class
    // object its unpickling made: "a" and "c" come from the new record, which named the class
    // once, "b" from the committed one.
    let expected = record("BTrees.OOBTree", "OOBucket", |g| {
        let mut spelled = || {
            let module = g.add(Obj::Str(class.0.into()));
            let name = g.add(Obj::Str(class.1.into()));
            g.add(Obj::Tuple(vec![module, name]))
        };
        let (in_new, in_committed) = (spelled(), spelled());
        let mut flat = Vec::new();
        for (id, oid, spelled) in [("a", 1, in_new), ("b", 2, in_committed), ("c", 3, in_new)] {
            flat.push(g.add(Obj::Str(id.into())));
            let oid = g.add(Obj::Bytes(vec![0, 0, 0, 0, 0, 0, 0, oid]));
            let pid = g.add(Obj::Tuple(vec![oid, spelled]));
            flat.push(g.add(Obj::PersistentId(pid)));
        }
        let items = g.add(Obj::Tuple(flat));
        g.add(Obj::Tuple(vec![items]))
    });
    assert_eq!(merged, expected);
    // A server with the application installed keeps them as they were written.
    let importable = Resolver::new(AppClasses::Importable).resolve(&old, &committed, &new);
    assert_eq!(importable, Ok(folder(&[("a", 1), ("b", 2), ("c", 3)], class)));
}

#[test]
fn rebinding_a_reference_conflicts_as_in_python() {
    let class = ("persistent.mapping", "PersistentMapping");
    let old = folder(&[("a", 1), ("b", 2)], class);
    // One side rebinds "a" to another object: comparing the two references raises, the merge
    // takes the values as changed and goes on with the exception pending, so the next
    // reference comparison fails too, and BTrees reports conflicting changes (as BTrees 6.5
    // does for these states).
    let refusal = resolve(&old, &folder(&[("a", 9), ("b", 2)], class), &folder(&[("a", 1), ("b", 2), ("c", 3)], class));
    assert!(matches!(refusal, Err(Refusal::Conflict { reason_code: 1, positions: [1, 1, 1], .. })), "{refusal:?}");
    // When the merge carries on without another reference comparison, the pending exception
    // surfaces at the next key comparison: "a" was 1 and stays 1 in the new record, the
    // committed one made it a reference.
    let ints = |items: &[(&str, i64)]| {
        record("BTrees.OOBTree", "OOBucket", |g| {
            let mut flat = Vec::new();
            for &(k, v) in items {
                flat.push(g.add(Obj::Str(k.into())));
                flat.push(g.add(Obj::Int(v)));
            }
            let items = g.add(Obj::Tuple(flat));
            g.add(Obj::Tuple(vec![items]))
        })
    };
    let old = ints(&[("a", 1), ("b", 2)]);
    let refusal = resolve(&old, &folder(&[("a", 9), ("b", 2)], class), &old);
    assert!(matches!(refusal, Err(Refusal::NotResolvable { .. })), "{refusal:?}");
}

#[test]
fn classes_outside_the_table_are_not_resolvable() {
    let mapping = record("persistent.mapping", "PersistentMapping", |g| g.add(Obj::Dict(vec![])));
    assert_eq!(
        resolve(&mapping, &mapping, &mapping),
        Err(Refusal::NotResolvable {
            class: "persistent.mapping.PersistentMapping".into(),
            detail: "not a class we resolve".into()
        })
    );
    assert_eq!(resolvable_class(&mapping), None);
    assert_eq!(resolvable_class(&iibucket(&[])).as_deref(), Some("BTrees.IIBTree.IIBucket"));
    let c_module = record("BTrees._IIBTree", "IIBucket", int_bucket(&[1, 1]));
    assert_eq!(resolvable_class(&c_module).as_deref(), Some("BTrees.IIBTree.IIBucket"));
    // The result names the public module, as Python's pickler does.
    let merged = resolve(&c_module, &c_module, &c_module);
    assert_eq!(merged, Ok(iibucket(&[1, 1])));
}

#[test]
fn broken_records_and_states_are_malformed() {
    let good = iibucket(&[1, 1]);
    let truncated = &good[..good.len() - 3];
    assert!(matches!(resolve(&good, truncated, &good), Err(Refusal::Malformed { .. })));
    let text_key = record("BTrees.IIBTree", "IIBucket", |g| {
        let k = g.add(Obj::Str("one".into()));
        let v = g.add(Obj::Int(1));
        let items = g.add(Obj::Tuple(vec![k, v]));
        g.add(Obj::Tuple(vec![items]))
    });
    let refusal = resolve(&good, &text_key, &good);
    assert!(
        matches!(&refusal, Err(Refusal::Malformed { class, .. }) if class == "BTrees.IIBTree.IIBucket"),
        "{refusal:?}"
    );
    let not_a_number = record("BTrees.Length", "Length", |g| g.add(Obj::None));
    assert!(matches!(resolve(&length(1), &not_a_number, &length(2)), Err(Refusal::Malformed { .. })));
}

#[test]
fn python2_strings_are_not_resolvable() {
    // An OOBucket {'a': 1} written by Python 2 (SHORT_BINSTRING key).
    let mut py2 = b"\x80\x02cBTrees.OOBTree\nOOBucket\nq\x00.".to_vec();
    py2.extend_from_slice(b"\x80\x02U\x01aK\x01\x86\x85.");
    let refusal = resolve(&py2, &py2, &py2);
    assert!(matches!(refusal, Err(Refusal::NotResolvable { .. })), "{refusal:?}");
}
