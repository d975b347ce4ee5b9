//! Interop with the real ZODB (Python FileStorage), both directions:
//! - a Data.fs written by Python opens in zeo-rs with identical observable behaviour (the same
//!   `describe` document, byte-level data, tids, history, iteration, undo log);
//! - a Data.fs written by zeo-rs passes ZODB's fstest and fsrefs, opens in FileStorage, and shows the
//!   same document there;
//! - packing the same file with Python and with zeo-rs keeps the same records.
//!
//! Python is `$ZEORS_PYTHON` (set by `scripts/test`), else `.venv/bin/python` at the repository root.
//! These tests fail, rather than skip, when no Python with ZODB is found.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use zeo_storage::describe::describe;
use zeo_storage::{FileStorage, OpenOptions, Transaction, TxnMeta, VoteOutcome, Z64};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> PathBuf {
    let p = std::env::var_os("ZEORS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(p.exists(), "no Python at {} (run scripts/setup-venv or set ZEORS_PYTHON)", p.display());
    p
}

fn run_py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg(repo().join("tests/python").join(script)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn py_describe(path: &Path) -> Value {
    serde_json::from_str(&run_py("describe.py", &[path.to_str().unwrap()])).unwrap()
}

fn rs_describe(path: &Path) -> Value {
    let fs = FileStorage::open(path, OpenOptions { read_only: true, ..Default::default() }).unwrap();
    describe(&fs).unwrap()
}

/// The first differing JSON path, for a readable failure.
fn first_diff(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_diff(p, q, format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some(format!("{path}.{k}: {p:?} vs {q:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_diff(p, q, format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}: length {} vs {}", x.len(), y.len()))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

fn assert_same(rust: &Value, python: &Value) {
    if let Some(d) = first_diff(rust, python, String::new()) {
        panic!("zeo-rs and ZODB disagree at {d}");
    }
}

#[test]
fn python_written_file_reads_identically() {
    let dir = tempfile::tempdir().unwrap();
    for pack in [false, true] {
        let path = dir.path().join(if pack { "packed.fs" } else { "plain.fs" });
        let mut args = vec![path.to_str().unwrap()];
        if pack {
            args.push("--pack");
        }
        run_py("make_fixture.py", &args);
        let py = py_describe(&path);
        assert!(py["transactions"].as_array().unwrap().len() > 40);
        assert_same(&rs_describe(&path), &py);
    }
}

#[test]
fn zeo_rs_written_file_passes_zodb_checks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("python.fs");
    run_py("make_fixture.py", &[src.to_str().unwrap()]);
    // Copy every transaction through our write path (restore, like zodbconvert), then commit more
    // through store/undo/delete with tids we assign.
    let dst = dir.path().join("ours.fs");
    {
        let from = FileStorage::open(&src, OpenOptions { read_only: true, ..Default::default() }).unwrap();
        let to = FileStorage::open(&dst, OpenOptions { create: true, ..Default::default() }).unwrap();
        for t in from.iterator(None, None).unwrap() {
            let t = t.unwrap();
            let mut meta = TxnMeta::new(t.user.clone(), t.description.clone(), t.extension.clone());
            meta.tid = Some(t.tid);
            meta.status = t.status;
            let mut txn = Transaction::begin(meta).unwrap();
            for r in &t.records {
                txn.restore(r.oid, r.tid, r.data.clone(), r.data_txn).unwrap();
            }
            assert!(matches!(to.vote(&mut txn).unwrap(), VoteOutcome::Voted { .. }));
            to.tpc_finish(&mut txn).unwrap();
        }
        // Same observable content as the source.
        assert_same(&describe(&to).unwrap(), &describe(&from).unwrap());
        // Our own commits: a modification of the root, a new object, an undo, a deletion.
        let root_tid = to.get_tid(&Z64).unwrap();
        let (root, _) = to.load(&Z64).unwrap();
        let new_oid = to.new_oids(1).unwrap()[0];
        let mut txn = Transaction::begin(TxnMeta::new("/ rust", "from zeo-rs", Vec::new())).unwrap();
        txn.store(Z64, root_tid, root.clone()).unwrap();
        txn.store(new_oid, Z64, b"raw bytes from rust".to_vec()).unwrap();
        to.vote(&mut txn).unwrap();
        let t1 = to.tpc_finish(&mut txn).unwrap();
        let mut txn = Transaction::begin(TxnMeta::new("/ rust", "undo", Vec::new())).unwrap();
        txn.undo(t1).unwrap();
        to.vote(&mut txn).unwrap();
        to.tpc_finish(&mut txn).unwrap();
        to.close().unwrap();
    }
    let expect = dir.path().join("expect.json");
    std::fs::write(&expect, serde_json::to_string(&rs_describe(&dst)).unwrap()).unwrap();
    run_py("check_fs.py", &[dst.to_str().unwrap(), "--expect", expect.to_str().unwrap()]);
    // ZODB's maintenance tools work on it: repozo, copyTransactionsFrom (zodbconvert), fsstats...
    let work = dir.path().join("tools");
    run_py("tools_roundtrip.py", &[dst.to_str().unwrap(), work.to_str().unwrap()]);
}

#[test]
fn packing_with_python_and_with_zeo_rs_keeps_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.fs");
    run_py("make_fixture.py", &[src.to_str().unwrap()]);
    // The fixture is deterministic: `--pack` records the tid it packs at, in the same history.
    let with_pack = dir.path().join("with_pack.fs");
    let summary: Value =
        serde_json::from_str(&run_py("make_fixture.py", &[with_pack.to_str().unwrap(), "--pack"])).unwrap();
    let stop_hex = summary["pack_stop_tid"].as_str().unwrap().to_string();
    let stop: [u8; 8] = hex::decode(&stop_hex).unwrap().try_into().unwrap();
    let py_packed = dir.path().join("py.fs");
    run_py("pack_py.py", &[src.to_str().unwrap(), py_packed.to_str().unwrap(), &stop_hex]);
    let rs_packed = dir.path().join("rs.fs");
    std::fs::copy(&src, &rs_packed).unwrap();
    {
        let fs = FileStorage::open(&rs_packed, OpenOptions::default()).unwrap();
        let stats = fs.pack(&stop, true).unwrap();
        assert!(stats.packed && stats.records_removed > 0, "{stats:?}");
        fs.close().unwrap();
    }
    assert_eq!(
        std::fs::read(&rs_packed).unwrap(),
        std::fs::read(&py_packed).unwrap(),
        "packed files differ byte for byte"
    );
    run_py("check_fs.py", &[rs_packed.to_str().unwrap()]);
    assert_same(&rs_describe(&rs_packed), &py_describe(&py_packed));
}
