//! Engine tests: behaviour of each call, crash recovery and fault injection, and a model test that
//! compares the storage with a map of revisions across random commits, aborts and crashes.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn oid(n: u64) -> Oid {
    n.to_be_bytes()
}

fn open(path: &std::path::Path) -> FileStorage {
    FileStorage::open(path, OpenOptions { create: true, ..Default::default() }).unwrap()
}

/// Commits `stores` (oid, serial, data) in one transaction and returns its tid.
fn commit(fs: &FileStorage, stores: &[(u64, Tid, &[u8])]) -> Tid {
    let mut t = Transaction::begin(TxnMeta::new("/ alice", "test", Vec::new())).unwrap();
    for (o, s, d) in stores {
        t.store(oid(*o), *s, d.to_vec()).unwrap();
    }
    match fs.vote(&mut t).unwrap() {
        VoteOutcome::Voted { .. } => fs.tpc_finish(&mut t).unwrap(),
        VoteOutcome::Conflicts(c) => panic!("unexpected conflicts {c:?}"),
    }
}

#[test]
fn store_load_and_load_before_edges() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    assert_eq!(fs.last_transaction(), Z64);
    let t1 = commit(&fs, &[(0, Z64, b"root1")]);
    let t2 = commit(&fs, &[(0, t1, b"root2"), (1, Z64, b"one")]);
    assert!(t2 > t1);
    assert_eq!(fs.load(&oid(0)).unwrap(), (b"root2".to_vec(), t2));
    assert_eq!(fs.load_serial(&oid(0), &t1).unwrap(), b"root1");
    assert!(matches!(fs.load_serial(&oid(0), &Z64), Err(StorageError::PosKey { .. })));
    let lb = fs.load_before(&oid(0), &t2).unwrap().unwrap();
    assert_eq!((lb.data.as_slice(), lb.start, lb.end), (&b"root1"[..], t1, Some(t2)));
    let lb = fs.load_before(&oid(0), &MAXTID).unwrap().unwrap();
    assert_eq!((lb.start, lb.end), (t2, None));
    // Created at t2: nothing before it.
    assert_eq!(fs.load_before(&oid(1), &t2).unwrap(), None);
    assert!(matches!(fs.load_before(&oid(9), &MAXTID), Err(StorageError::PosKey { .. })));
    assert_eq!(fs.len(), 2);
    let h = fs.history(&oid(0), 10).unwrap();
    assert_eq!(h.iter().map(|e| e.tid).collect::<Vec<_>>(), vec![t2, t1]);
    assert_eq!(h[0].user, b"/ alice");
    assert_eq!(h[0].size, 5);
    assert_eq!(fs.history(&oid(0), 1).unwrap().len(), 1);
}

#[test]
fn write_conflicts_are_values_and_can_be_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let t1 = commit(&fs, &[(1, Z64, b"a")]);
    let t2 = commit(&fs, &[(1, t1, b"b")]);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.store(oid(1), t1, b"stale".to_vec()).unwrap();
    t.store(oid(2), Z64, b"new".to_vec()).unwrap();
    let VoteOutcome::Conflicts(c) = fs.vote(&mut t).unwrap() else { panic!("expected a conflict") };
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].oid, c[0].committed, c[0].expected, c[0].data.as_slice()), (oid(1), t2, t1, &b"stale"[..]));
    assert_eq!(fs.size(), fs.size(), "nothing written");
    t.store(oid(1), t2, b"resolved".to_vec()).unwrap();
    assert!(matches!(fs.vote(&mut t).unwrap(), VoteOutcome::Voted { .. }));
    let t3 = fs.tpc_finish(&mut t).unwrap();
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"resolved".to_vec(), t3));
    assert_eq!(fs.load(&oid(2)).unwrap().0, b"new");
}

#[test]
fn read_conflicts_deletes_and_missing_objects() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let t1 = commit(&fs, &[(1, Z64, b"a"), (2, Z64, b"b")]);
    let t2 = commit(&fs, &[(1, t1, b"a2")]);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.check_current_serial(oid(1), t1).unwrap();
    let e = fs.vote(&mut t).unwrap_err();
    assert!(
        matches!(e, StorageError::ReadConflict { committed, expected, .. } if committed == t2 && expected == t1),
        "{e}"
    );
    assert_eq!(e.zodb_name(), "ZODB.POSException.ReadConflictError");
    fs.abort(&mut t).unwrap();
    fs.abort(&mut t).unwrap();

    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.delete_object(oid(2), t2).unwrap();
    assert!(matches!(fs.vote(&mut t), Err(StorageError::Conflict { .. })));
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.delete_object(oid(7), t1).unwrap();
    assert!(matches!(fs.vote(&mut t), Err(StorageError::PosKey { .. })));
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.delete_object(oid(2), t1).unwrap();
    fs.vote(&mut t).unwrap();
    let t3 = fs.tpc_finish(&mut t).unwrap();
    assert!(matches!(fs.load(&oid(2)), Err(StorageError::PosKey { .. })));
    assert!(matches!(fs.get_tid(&oid(2)), Err(StorageError::PosKey { .. })));
    assert!(matches!(fs.load_before(&oid(2), &MAXTID), Err(StorageError::PosKey { .. })));
    assert_eq!(fs.load_before(&oid(2), &t3).unwrap().unwrap().data, b"b");
}

#[test]
fn undo_of_a_change_and_of_a_creation() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let t1 = commit(&fs, &[(1, Z64, b"v1")]);
    let t2 = commit(&fs, &[(1, t1, b"v2"), (2, Z64, b"created")]);
    let log = fs.undo_log(0, -20, None).unwrap();
    assert_eq!(log.iter().map(|e| e.tid).collect::<Vec<_>>(), vec![t2, t1]);
    assert_eq!(parse_undo_id(log[0].id.as_bytes()).unwrap(), t2);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.undo(t2).unwrap();
    let VoteOutcome::Voted { undone, .. } = fs.vote(&mut t).unwrap() else { panic!() };
    assert_eq!(undone, vec![oid(1), oid(2)]);
    let t3 = fs.tpc_finish(&mut t).unwrap();
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"v1".to_vec(), t3));
    assert!(matches!(fs.load(&oid(2)), Err(StorageError::PosKey { .. })));
    // loadBefore across the undo: the backpointer's own tid starts the revision.
    let lb = fs.load_before(&oid(1), &MAXTID).unwrap().unwrap();
    assert_eq!((lb.data.as_slice(), lb.start), (&b"v1"[..], t3));
    // Undoing t1 now conflicts: its record is not current and the data differs.
    let t4 = commit(&fs, &[(1, t3, b"v4")]);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.undo(t1).unwrap();
    let e = fs.vote(&mut t).unwrap_err();
    assert!(matches!(&e, StorageError::MultipleUndo(v) if v[0].0 == oid(1)), "{e}");
    fs.abort(&mut t).unwrap();
    assert_eq!(fs.last_transaction(), t4);
    let it: Vec<_> = fs.iterator(Some(&t3), Some(&t3)).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(it.len(), 1);
    assert_eq!(it[0].records[0].data.as_deref(), Some(&b"v1"[..]));
    assert_eq!(it[0].records[0].data_txn, Some(t1));
    assert_eq!(it[0].records[1].data, None);
}

#[test]
fn restore_keeps_tids_and_uses_backpointers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let a = [0x03, 0, 0, 0, 0, 0, 0, 1];
    let b = [0x03, 0, 0, 0, 0, 0, 0, 2];
    let mut t = Transaction::begin(TxnMeta { tid: Some(a), ..TxnMeta::default_committed() }).unwrap();
    t.restore(oid(1), a, Some(b"data".to_vec()), None).unwrap();
    fs.vote(&mut t).unwrap();
    assert_eq!(fs.tpc_finish(&mut t).unwrap(), a);
    let mut t = Transaction::begin(TxnMeta { tid: Some(b), ..TxnMeta::default_committed() }).unwrap();
    t.restore(oid(1), b, Some(b"data".to_vec()), Some(a)).unwrap();
    fs.vote(&mut t).unwrap();
    fs.tpc_finish(&mut t).unwrap();
    let recs: Vec<_> = fs.iterator(None, None).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(recs[1].records[0].data_txn, Some(a), "restored as a backpointer");
    // A caller-supplied tid must increase.
    let mut t = Transaction::begin(TxnMeta { tid: Some(a), ..TxnMeta::default_committed() }).unwrap();
    assert!(matches!(fs.vote(&mut t), Err(StorageError::TidNotIncreasing { .. })));
}

#[test]
fn metadata_over_65535_bytes_is_refused_before_writing() {
    let big = vec![b'x'; 65_536];
    for meta in [
        TxnMeta::new(big.clone(), "", Vec::new()),
        TxnMeta::new("", big.clone(), Vec::new()),
        TxnMeta::new("", "", big.clone()),
    ] {
        assert!(matches!(Transaction::begin(meta), Err(StorageError::MetadataTooLong { .. })));
    }
}

#[test]
fn iteration_bounds_are_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&dir.path().join("Data.fs"));
    let tids: Vec<Tid> = (0..10).map(|i| commit(&fs, &[(i, Z64, b"x")])).collect();
    let range =
        |a: Option<&Tid>, b: Option<&Tid>| fs.iterator(a, b).unwrap().map(|r| r.unwrap().tid).collect::<Vec<_>>();
    assert_eq!(range(None, None), tids);
    assert_eq!(range(Some(&tids[3]), Some(&tids[7])), tids[3..=7].to_vec());
    let after = (u64::from_be_bytes(tids[3]) + 1).to_be_bytes();
    assert_eq!(range(Some(&after), None), tids[4..].to_vec());
    assert_eq!(range(Some(&tids[9]), None), vec![tids[9]]);
    assert_eq!(range(None, Some(&tids[0])), vec![tids[0]]);
    assert!(range(Some(&tids[7]), Some(&tids[3])).is_empty());
    let mut next = None;
    let mut seen = Vec::new();
    while let Some(step) = fs.record_iternext(next.as_ref()).unwrap() {
        seen.push(step.oid);
        match step.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (0..10).map(oid).collect::<Vec<_>>());
}

#[test]
fn second_writer_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let _fs = open(&path);
    let e = FileStorage::open(&path, OpenOptions { create: true, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains(&std::process::id().to_string()), "{e}");
    // Readers do not need the lock.
    FileStorage::open(&path, OpenOptions { read_only: true, ..Default::default() }).unwrap();
}

#[test]
fn bad_magic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    std::fs::write(&path, b"FS21rest").unwrap();
    let e = FileStorage::open(&path, OpenOptions::default()).unwrap_err();
    assert!(matches!(e, StorageError::BadMagic { .. }), "{e}");
}

#[test]
fn reopen_uses_the_snapshot_and_agrees_with_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let mut last = Z64;
    for i in 0..50 {
        let serial = if i < 5 { Z64 } else { fs.get_tid(&oid(i % 5)).unwrap() };
        last = commit(&fs, &[(i % 5, serial, format!("rev{i}").as_bytes())]);
    }
    fs.close().unwrap();
    assert!(index::snapshot_path(&path).exists());
    let fs = open(&path);
    commit(&fs, &[(9, Z64, b"after snapshot")]);
    drop(fs); // no close: the snapshot is stale by one transaction
    let a = open(&path);
    let a_state: Vec<_> = (0..10).map(|o| a.load(&oid(o)).ok()).collect();
    drop(a);
    std::fs::remove_file(index::snapshot_path(&path)).unwrap();
    let b = open(&path);
    let b_state: Vec<_> = (0..10).map(|o| b.load(&oid(o)).ok()).collect();
    assert_eq!(a_state, b_state);
    assert!(b.last_transaction() > last);
}

#[test]
fn unfinished_and_torn_tails_are_cut_and_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(&fs, &[(1, Z64, b"kept")]);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.store(oid(2), Z64, b"voted only".to_vec()).unwrap();
    fs.vote(&mut t).unwrap();
    let size_with_c = std::fs::metadata(&path).unwrap().len();
    drop(fs); // crash between vote and finish
    let fs = open(&path);
    assert_eq!(fs.last_transaction(), t1);
    assert!(matches!(fs.load(&oid(2)), Err(StorageError::PosKey { .. })));
    assert!(std::path::PathBuf::from(format!("{}.tr0", path.display())).exists());
    assert!(fs.size() < size_with_c);
    // Torn: half a transaction appended.
    let t2 = commit(&fs, &[(3, Z64, b"also kept")]);
    drop(fs);
    let mut bytes = std::fs::read(&path).unwrap();
    let good = bytes.len();
    let head = bytes[4..40].to_vec();
    bytes.extend_from_slice(&head);
    std::fs::write(&path, &bytes).unwrap();
    let fs = open(&path);
    assert_eq!(fs.last_transaction(), t2);
    assert_eq!(fs.size(), good as u64);
    // Zero-filled tail (delayed allocation after a crash).
    drop(fs);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&path, &bytes).unwrap();
    let fs = open(&path);
    assert_eq!(fs.size(), good as u64);
}

#[test]
fn damage_before_the_tail_is_a_hard_error_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    commit(&fs, &[(1, Z64, b"first")]);
    let second_pos = fs.size();
    let t2 = commit(&fs, &[(2, Z64, b"second")]);
    commit(&fs, &[(3, Z64, b"third")]);
    let _ = t2;
    drop(fs);
    let _ = std::fs::remove_file(index::snapshot_path(&path));
    let mut bytes = std::fs::read(&path).unwrap();
    // Corrupt the second transaction's length: it now runs past the end of the file.
    let p = usize::try_from(second_pos).unwrap() + 8;
    bytes[p..p + 8].copy_from_slice(&u64::MAX.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = FileStorage::open(&path, OpenOptions::default()).unwrap_err();
    assert!(matches!(&e, StorageError::Corrupted { offset, .. } if *offset == second_pos), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn enospc_during_vote_fails_that_transaction_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let faults = Arc::new(Faults::default());
    let fs = FileStorage::open(&path, OpenOptions { create: true, faults: Some(faults.clone()), ..Default::default() })
        .unwrap();
    let t1 = commit(&fs, &[(1, Z64, b"before")]);
    let size = fs.size();
    faults.fail_write(1, 28);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.store(oid(1), t1, b"lost".to_vec()).unwrap();
    let e = fs.vote(&mut t).unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    fs.abort(&mut t).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let t2 = commit(&fs, &[(1, t1, b"after")]);
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"after".to_vec(), t2));
    drop(fs);
    let fs = open(&path);
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"after".to_vec(), t2));
}

#[test]
fn failed_fsync_rolls_back_and_later_commits_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let faults = Arc::new(Faults::default());
    let fs = FileStorage::open(&path, OpenOptions { create: true, faults: Some(faults.clone()), ..Default::default() })
        .unwrap();
    let t1 = commit(&fs, &[(1, Z64, b"durable")]);
    faults.fail_sync(1, 5);
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.store(oid(1), t1, b"not durable".to_vec()).unwrap();
    fs.vote(&mut t).unwrap();
    let e = fs.tpc_finish(&mut t).unwrap_err();
    assert!(e.to_string().contains("Input/output error"), "{e}");
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"durable".to_vec(), t1), "readers never saw it");
    let t3 = commit(&fs, &[(1, t1, b"later")]);
    drop(fs);
    let fs = open(&path);
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"later".to_vec(), t3));
    assert_eq!(fs.history(&oid(1), 10).unwrap().len(), 2);
}

#[test]
fn group_commit_makes_several_finishes_durable_with_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
        t.store(oid(i), Z64, b"g".to_vec()).unwrap();
        fs.vote(&mut t).unwrap();
        seqs.push(fs.finish_nosync(&mut t).unwrap());
    }
    // Not yet durable, so not yet visible.
    assert_eq!(fs.last_transaction(), Z64);
    assert!(matches!(fs.load(&oid(0)), Err(StorageError::PosKey { .. })));
    let durable = fs.sync().unwrap();
    assert_eq!(durable, seqs.last().unwrap().seq);
    assert_eq!(fs.last_transaction(), seqs.last().unwrap().tid);
    for c in &seqs {
        fs.wait_durable(c.seq).unwrap();
    }
    assert_eq!(fs.len(), 5);
}

#[test]
fn oids_are_never_handed_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let a = fs.new_oids(100).unwrap();
    assert_eq!(a[0], oid(1));
    drop(fs);
    let fs = open(&path);
    let b = fs.new_oids(1).unwrap();
    assert!(b[0] > a[99]);
    commit(&fs, &[(1 << 40, Z64, b"invented")]);
    assert!(fs.new_oids(1).unwrap()[0] > oid(1 << 40));
}

#[test]
fn read_only_storage_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    commit(&open(&path), &[(1, Z64, b"x")]);
    let fs = FileStorage::open(&path, OpenOptions { read_only: true, ..Default::default() }).unwrap();
    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
    t.store(oid(1), Z64, b"y".to_vec()).unwrap();
    assert!(matches!(fs.vote(&mut t), Err(StorageError::ReadOnly)));
    assert!(matches!(fs.new_oids(1), Err(StorageError::ReadOnly)));
    assert_eq!(fs.load(&oid(1)).unwrap().0, b"x");
}

impl TxnMeta {
    fn default_committed() -> Self {
        TxnMeta::new("", "", Vec::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Model test: the storage must behave like a map of revisions, even across crashes.

#[derive(Debug, Clone)]
enum Step {
    /// Commit stores (oid, data) and deletes.
    Commit {
        stores: Vec<(u64, u8)>,
        deletes: Vec<u64>,
    },
    /// Vote, then abort.
    VoteAbort {
        stores: Vec<(u64, u8)>,
    },
    /// Vote, then crash before finish.
    CrashAfterVote {
        stores: Vec<(u64, u8)>,
    },
    /// Finish without fsync, then crash: the model may or may not have it (it was never acknowledged).
    Reopen,
    Undo {
        back: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let stores = prop::collection::vec((0u64..6, any::<u8>()), 1..4);
    prop_oneof![
        6 => (stores.clone(), prop::collection::vec(0u64..6, 0..2)).prop_map(|(stores, deletes)| Step::Commit { stores, deletes }),
        1 => stores.clone().prop_map(|stores| Step::VoteAbort { stores }),
        1 => stores.prop_map(|stores| Step::CrashAfterVote { stores }),
        1 => Just(Step::Reopen),
        1 => (0usize..5).prop_map(|back| Step::Undo { back }),
    ]
}

/// One revision in the model, with what FileStorage's undo rules look at: the record's own identity
/// and, for a record without inline data, the record its backpointer names (0: none).
#[derive(Debug, Clone, PartialEq)]
struct Rev {
    tid: Tid,
    data: Option<Vec<u8>>,
    id: u64,
    back: Option<u64>,
}

impl Rev {
    /// Python's `cdataptr`: the record holding the data (itself, or its backpointer's target).
    fn data_ptr(&self) -> u64 {
        self.back.unwrap_or(self.id)
    }
}

/// oid → revisions, oldest first.
type Model = BTreeMap<u64, Vec<Rev>>;

fn check(fs: &FileStorage, model: &Model, tids: &[Tid]) {
    for o in 0..6u64 {
        let revs = model.get(&o);
        let mut probes: Vec<Tid> = tids.to_vec();
        probes.push(MAXTID);
        for probe in probes {
            let got = fs.load_before(&oid(o), &probe);
            match revs {
                None => assert!(matches!(got, Err(StorageError::PosKey { .. })), "oid {o}: {got:?}"),
                Some(revs) => match revs.iter().rposition(|r| r.tid < probe) {
                    None => assert_eq!(got.unwrap(), None, "oid {o} before {probe:?}"),
                    Some(i) => {
                        let end = revs.get(i + 1).map(|r| r.tid);
                        match &revs[i].data {
                            None => assert!(matches!(got, Err(StorageError::PosKey { .. })), "deleted {o}: {got:?}"),
                            Some(d) => {
                                assert_eq!(
                                    got.unwrap().unwrap(),
                                    LoadBefore { data: d.clone(), start: revs[i].tid, end }
                                )
                            }
                        }
                    }
                },
            }
        }
    }
}

fn current_serial(model: &Model, o: u64) -> Tid {
    model.get(&o).and_then(|r| r.last()).map_or(Z64, |r| r.tid)
}

fn exists(model: &Model, o: u64) -> bool {
    model.get(&o).and_then(|r| r.last()).is_some_and(|r| r.data.is_some())
}

/// FileStorage's rule for undoing revision `i` of an object: allowed if it is current, if the current
/// record's data pointer is that revision, or if both have data and it is equal.
fn undoable(revs: &[Rev], i: usize) -> bool {
    let (undone, current) = (&revs[i], revs.last().unwrap());
    current.id == undone.id
        || current.data_ptr() == undone.id
        || (undone.data.is_some() && current.data.is_some() && undone.data == current.data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn behaves_like_a_map_of_revisions_across_crashes(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs");
        let mut fs = open(&path);
        let mut model: Model = BTreeMap::new();
        let mut tids: Vec<Tid> = Vec::new();
        // Per committed tid: what it changed (for undo): oid → (data after, data before, was current).
        let mut history: Vec<(Tid, Vec<u64>)> = Vec::new();
        let mut next_id = 0u64;
        for s in steps {
            match s {
                Step::Commit { stores, deletes } => {
                    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
                    let mut touched = BTreeMap::new();
                    for (o, b) in &stores {
                        // ZODB stores an object at most once per transaction (FileStorage, like
                        // zeo-rs, cannot undo a transaction that stored one twice).
                        if touched.contains_key(o) {
                            continue;
                        }
                        t.store(oid(*o), current_serial(&model, *o), vec![*b; 1 + (*b as usize % 7)]).unwrap();
                        touched.insert(*o, Some(vec![*b; 1 + (*b as usize % 7)]));
                    }
                    let deletable: Vec<u64> = deletes.iter().copied().filter(|o| exists(&model, *o) && !touched.contains_key(o)).collect();
                    for o in deletable.iter() {
                        t.delete_object(oid(*o), current_serial(&model, *o)).unwrap();
                        touched.insert(*o, None);
                    }
                    let VoteOutcome::Voted { tid, .. } = fs.vote(&mut t).unwrap() else { panic!("no conflicts expected") };
                    prop_assert_eq!(fs.tpc_finish(&mut t).unwrap(), tid);
                    for (o, d) in &touched {
                        next_id += 1;
                        let back = if d.is_none() { Some(0) } else { None };
                        model.entry(*o).or_default().push(Rev { tid, data: d.clone(), id: next_id, back });
                    }
                    history.push((tid, touched.keys().copied().collect()));
                    tids.push(tid);
                }
                Step::VoteAbort { stores } => {
                    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
                    for (o, b) in &stores {
                        t.store(oid(*o), current_serial(&model, *o), vec![*b]).unwrap();
                    }
                    fs.vote(&mut t).unwrap();
                    fs.abort(&mut t).unwrap();
                }
                Step::CrashAfterVote { stores } => {
                    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
                    for (o, b) in &stores {
                        t.store(oid(*o), current_serial(&model, *o), vec![*b]).unwrap();
                    }
                    fs.vote(&mut t).unwrap();
                    drop(fs);
                    fs = open(&path);
                }
                Step::Reopen => {
                    drop(fs);
                    fs = open(&path);
                }
                Step::Undo { back } => {
                    if history.is_empty() { continue; }
                    let (target, oids) = history[history.len() - 1 - back.min(history.len() - 1)].clone();
                    let mut t = Transaction::begin(TxnMeta::default_committed()).unwrap();
                    t.undo(target).unwrap();
                    let expect_ok = oids.iter().all(|o| {
                        let revs = &model[o];
                        undoable(revs, revs.iter().position(|r| r.tid == target).unwrap())
                    });
                    match fs.vote(&mut t) {
                        Ok(VoteOutcome::Voted { tid, .. }) => {
                            prop_assert!(expect_ok, "undo should have failed");
                            fs.tpc_finish(&mut t).unwrap();
                            for o in &oids {
                                let revs = model.get_mut(o).unwrap();
                                let i = revs.iter().position(|r| r.tid == target).unwrap();
                                // The undo record points at the revision before the undone one.
                                let (data, back) = if i == 0 { (None, 0) } else { (revs[i - 1].data.clone(), revs[i - 1].id) };
                                next_id += 1;
                                revs.push(Rev { tid, data, id: next_id, back: Some(back) });
                            }
                            history.push((tid, oids.clone()));
                            tids.push(tid);
                        }
                        Ok(other) => prop_assert!(false, "unexpected {:?}", other),
                        Err(e) => {
                            prop_assert!(!expect_ok, "undo failed unexpectedly: {}", e);
                            fs.abort(&mut t).unwrap();
                        }
                    }
                }
            }
            check(&fs, &model, &tids);
        }
        drop(fs);
        let fs = open(&path);
        check(&fs, &model, &tids);
    }
}

// ---------------------------------------------------------------------------------------------
// Pack.

/// A record that is a ZODB pickle of a PersistentMapping-like state referring to `refs`.
fn record_with_refs(refs: &[u64], tag: &str) -> Vec<u8> {
    use zeo_proto::pickle::{Value, encode_memo};
    let class = Value::Tuple(vec![Value::global("persistent.mapping", "PersistentMapping"), Value::None]);
    let items: Vec<(Value, Value)> = refs
        .iter()
        .map(|r| {
            (
                Value::Str(format!("k{r}")),
                Value::PersistentId(Box::new(Value::Tuple(vec![Value::Bytes(oid(*r).to_vec()), Value::None]))),
            )
        })
        .chain(std::iter::once((Value::Str("tag".into()), Value::Str(tag.into()))))
        .collect();
    let state = Value::Dict(vec![(Value::Str("data".into()), Value::Dict(items))]);
    let mut out = encode_memo(&class);
    out.extend(encode_memo(&state));
    out
}

#[test]
fn pack_removes_unreachable_and_old_revisions_and_keeps_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = open(&path);
    let t1 = commit(&fs, &[(0, Z64, &record_with_refs(&[1, 2], "r1")), (1, Z64, b"one"), (2, Z64, b"two")]);
    let t2 = commit(&fs, &[(0, t1, &record_with_refs(&[1], "r2")), (1, t1, b"one v2")]);
    let t3 = commit(&fs, &[(1, t2, b"one v3")]);
    // Python's Data.fs.index would describe the old file: pack must remove it.
    std::fs::write(format!("{}.index", path.display()), b"stale").unwrap();
    let stats = fs.pack(&t2, true).unwrap();
    assert!(stats.packed);
    assert!(!std::path::Path::new(&format!("{}.index", path.display())).exists());
    assert!(
        std::path::Path::new(&format!("{}.old", path.display())).exists(),
        "the old file is kept, as FileStorage keeps it"
    );
    // oid 2 was unreachable at t2: gone. oid 1's revision at t1 was not current at t2: gone.
    assert!(matches!(fs.load(&oid(2)), Err(StorageError::PosKey { .. })));
    assert!(matches!(fs.load_serial(&oid(1), &t1), Err(StorageError::PosKey { .. })));
    assert_eq!(fs.load_serial(&oid(1), &t2).unwrap(), b"one v2");
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"one v3".to_vec(), t3));
    let txns: Vec<_> = fs.iterator(None, None).unwrap().map(|t| t.unwrap()).collect();
    assert_eq!(txns.iter().map(|t| (t.tid, t.status)).collect::<Vec<_>>(), vec![(t2, b'p'), (t3, b' ')]);
    assert_eq!(fs.undo_log(0, -10, None).unwrap().len(), 1, "undo stops at the packed transaction");
    // Packing again to the same time is redundant.
    assert!(!fs.pack(&t2, true).unwrap().packed);
    // The packed file reopens, with and without its snapshot, and verifies.
    drop(fs);
    assert!(verify(&path).unwrap().errors.is_empty());
    std::fs::remove_file(index::snapshot_path(&path)).unwrap();
    let fs = open(&path);
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"one v3".to_vec(), t3));
}

#[test]
fn commits_continue_during_pack_and_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = Arc::new(open(&path));
    let mut serials = std::collections::HashMap::new();
    let mut t = commit(&fs, &[(0, Z64, &record_with_refs(&(1..50).collect::<Vec<_>>(), "root"))]);
    serials.insert(0, t);
    for round in 0..20 {
        for o in 1..50u64 {
            let s = serials.get(&o).copied().unwrap_or(Z64);
            t = commit(&fs, &[(o, s, format!("{o}@{round}").as_bytes())]);
            serials.insert(o, t);
        }
    }
    let pack_at = t;
    let writer = {
        let fs = fs.clone();
        let mut serials = serials.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            for round in 0..200 {
                let o = 1 + round % 49;
                let s = serials[&o];
                let tid = commit(&fs, &[(o, s, format!("{o}@late{round}").as_bytes())]);
                serials.insert(o, tid);
                n += 1;
            }
            (n, serials)
        })
    };
    let stats = fs.pack(&pack_at, true).unwrap();
    let (n, serials) = writer.join().unwrap();
    assert!(stats.packed && stats.records_removed > 0);
    assert_eq!(n, 200);
    for (o, s) in &serials {
        assert_eq!(fs.get_tid(&oid(*o)).unwrap(), *s, "oid {o} lost a commit made during the pack");
    }
    let fs = Arc::into_inner(fs).unwrap();
    fs.close().unwrap();
    assert!(verify(&path).unwrap().errors.is_empty());
    let fs = open(&path);
    for (o, s) in &serials {
        assert_eq!(fs.get_tid(&oid(*o)).unwrap(), *s);
    }
}

#[test]
fn a_pack_that_fails_midway_leaves_the_storage_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let faults = Arc::new(Faults::default());
    let fs = FileStorage::open(&path, OpenOptions { create: true, faults: Some(faults.clone()), ..Default::default() })
        .unwrap();
    let mut s1 = commit(&fs, &[(0, Z64, &record_with_refs(&[1], "root")), (1, Z64, b"a")]);
    for i in 0..10 {
        s1 = commit(&fs, &[(1, s1, format!("a{i}").as_bytes())]);
    }
    let before: Vec<_> = fs.iterator(None, None).unwrap().map(|t| t.unwrap()).collect();
    // Fail each write of the pack in turn (the pack writes once per kept transaction).
    for n in 1..4 {
        faults.fail_write(n, 28);
        assert!(fs.pack(&s1, true).is_err(), "write {n} should have failed the pack");
        let after: Vec<_> = fs.iterator(None, None).unwrap().map(|t| t.unwrap()).collect();
        assert_eq!(after, before);
        assert!(!std::path::Path::new(&format!("{}.pack", path.display())).exists());
    }
    faults.fail_write(-1, 5);
    let s2 = commit(&fs, &[(1, s1, b"after")]);
    assert!(fs.pack(&s1, true).unwrap().packed);
    assert_eq!(fs.load(&oid(1)).unwrap(), (b"after".to_vec(), s2));
}
