//! Conflicts merged at vote and at undo, on real records of the classes `zeo-resolve` handles,
//! and the same histories with resolution left to clients.

use zeo_proto::pickle::{Graph, Obj, ObjId, encode_graph};

use crate::{ConflictResolution, FileStorage, OpenOptions, StorageError, Tid, Transaction, TxnMeta, VoteOutcome, Z64};

const OID: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 7];

fn record(module: &str, name: &str, state: impl FnOnce(&mut Graph) -> ObjId) -> Vec<u8> {
    let mut g = Graph::new();
    let meta = g.add(Obj::global(module, name));
    let state = state(&mut g);
    encode_graph(&g, &[meta, state]).expect("encodes")
}

fn length(n: i64) -> Vec<u8> {
    record("BTrees.Length", "Length", |g| g.add(Obj::Int(n)))
}

/// An `IIBucket` of `(key, value)` pairs, flattened as its state is.
fn iibucket(flat: &[i64]) -> Vec<u8> {
    record("BTrees.IIBTree", "IIBucket", |g| {
        let items = flat.iter().map(|&i| g.add(Obj::Int(i))).collect();
        let items = g.add(Obj::Tuple(items));
        g.add(Obj::Tuple(vec![items]))
    })
}

fn open(dir: &tempfile::TempDir, resolution: ConflictResolution) -> FileStorage {
    let opts = OpenOptions { create: true, conflict_resolution: resolution, ..Default::default() };
    FileStorage::open(dir.path().join("Data.fs"), opts).unwrap()
}

fn begin() -> Transaction {
    Transaction::begin(TxnMeta::new("/ alice", "test", Vec::new())).unwrap()
}

/// Stores `data` based on `serial` and votes.
fn vote_store(fs: &FileStorage, serial: Tid, data: Vec<u8>) -> (Transaction, VoteOutcome) {
    let mut t = begin();
    t.store(OID, serial, data).unwrap();
    let outcome = fs.vote(&mut t).unwrap();
    (t, outcome)
}

fn commit(fs: &FileStorage, serial: Tid, data: Vec<u8>) -> Tid {
    let (mut t, outcome) = vote_store(fs, serial, data);
    assert!(matches!(outcome, VoteOutcome::Voted { .. }), "{outcome:?}");
    fs.tpc_finish(&mut t).unwrap()
}

fn undo(fs: &FileStorage, tid: Tid) -> crate::Result<VoteOutcome> {
    let mut t = begin();
    t.undo(tid).unwrap();
    let outcome = fs.vote(&mut t);
    if outcome.is_ok() {
        fs.tpc_finish(&mut t).unwrap();
    }
    outcome
}

#[test]
fn a_store_conflict_on_a_length_is_merged_at_vote() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir, ConflictResolution::Server);
    let t1 = commit(&fs, Z64, length(10));
    commit(&fs, t1, length(12));
    // Based on t1 as well: +5 on top of the other writer's +2.
    let (mut t, outcome) = vote_store(&fs, t1, length(15));
    let VoteOutcome::Voted { resolved, undone, .. } = outcome else { panic!("not merged: {outcome:?}") };
    assert_eq!((resolved, undone), (vec![OID], vec![]));
    let t3 = fs.tpc_finish(&mut t).unwrap();
    assert_eq!(fs.load(&OID).unwrap(), (length(17), t3));
}

#[test]
fn store_conflicts_go_back_when_resolution_is_refused_or_left_to_clients() {
    for (resolution, old, committed, new) in [
        // BTrees refuses: both sides change the value of key 1.
        (ConflictResolution::Server, iibucket(&[1, 1]), iibucket(&[1, 2]), iibucket(&[1, 3])),
        // A class zeo-resolve does not handle.
        (ConflictResolution::Server, b"x".to_vec(), b"y".to_vec(), b"z".to_vec()),
        // Resolvable, but the clients resolve.
        (ConflictResolution::Client, length(10), length(12), length(15)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(&dir, resolution);
        let t1 = commit(&fs, Z64, old);
        let t2 = commit(&fs, t1, committed.clone());
        let (mut t, outcome) = vote_store(&fs, t1, new.clone());
        let VoteOutcome::Conflicts(c) = outcome else { panic!("merged: {outcome:?}") };
        assert_eq!((c.len(), c[0].oid, c[0].committed, c[0].expected, &c[0].data), (1, OID, t2, t1, &new));
        fs.abort(&mut t).unwrap();
        assert_eq!(fs.load(&OID).unwrap(), (committed, t2));
    }
}

#[test]
fn a_store_based_on_no_revision_is_not_merged() {
    // Two writers create the same object: there is no old state to merge from (loadSerial(z64)
    // fails in Python too).
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir, ConflictResolution::Server);
    commit(&fs, Z64, length(1));
    let (_t, outcome) = vote_store(&fs, Z64, length(2));
    assert!(matches!(outcome, VoteOutcome::Conflicts(_)), "{outcome:?}");
}

#[test]
fn undo_of_an_add_after_later_adds_in_the_same_bucket_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir, ConflictResolution::Server);
    let t1 = commit(&fs, Z64, iibucket(&[1, 1]));
    let t2 = commit(&fs, t1, iibucket(&[1, 1, 2, 2]));
    let t3 = commit(&fs, t2, iibucket(&[1, 1, 2, 2, 3, 3]));
    // old = what t2 wrote, committed = current, new = what was before t2: key 2 goes, 3 stays.
    let VoteOutcome::Voted { undone, .. } = undo(&fs, t2).unwrap() else { panic!("conflicts") };
    assert_eq!(undone, vec![OID]);
    let (data, tid) = fs.load(&OID).unwrap();
    assert!(tid > t3);
    assert_eq!(data, iibucket(&[1, 1, 3, 3]));
}

#[test]
fn undo_fails_as_before_when_btrees_refuses_or_clients_resolve() {
    for (resolution, later) in [
        // t3 changes the value t2 added, so undoing the add conflicts (delete and change).
        (ConflictResolution::Server, iibucket(&[1, 1, 2, 5])),
        // Mergeable, but this storage leaves resolution to clients.
        (ConflictResolution::Client, iibucket(&[1, 1, 2, 2, 3, 3])),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(&dir, resolution);
        let t1 = commit(&fs, Z64, iibucket(&[1, 1]));
        let t2 = commit(&fs, t1, iibucket(&[1, 1, 2, 2]));
        let t3 = commit(&fs, t2, later.clone());
        let err = undo(&fs, t2).unwrap_err();
        let StorageError::MultipleUndo(failures) = err else { panic!("{err:?}") };
        assert_eq!(failures, vec![(OID, "Some data were modified by a later transaction".to_owned())]);
        assert_eq!(fs.load(&OID).unwrap(), (later, t3));
    }
}
