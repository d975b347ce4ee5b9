//! Fuzzing the file reader: mutated Data.fs files (bit flips, overwritten runs, truncations,
//! insertions, duplicated tails) must never make the engine panic, loop or allocate without bound:
//! opening, verifying, iterating and loading either work or fail with an error.
//!
//! The number of cases is `ZEO_FUZZ_ITERS` (default 400, a few seconds); the run prints how many it
//! executed.

use rand::{Rng, SeedableRng};
use zeo_storage::{self as storage, FileStorage, MAXTID, OpenOptions, Transaction, TxnMeta, Z64};

fn seed_file(path: &std::path::Path) {
    let fs = FileStorage::open(path, OpenOptions { create: true, ..Default::default() }).unwrap();
    let mut serials = std::collections::HashMap::new();
    for i in 0u64..40 {
        let oid = (i % 6).to_be_bytes();
        let serial = serials.get(&oid).copied().unwrap_or(Z64);
        let mut t = Transaction::begin(TxnMeta::new(
            format!("user{i}"),
            "desc",
            if i % 5 == 0 { vec![0x80, 3, b'}', b'.'] } else { vec![] },
        ))
        .unwrap();
        t.store(oid, serial, format!("data-{i}").repeat((i % 4 + 1) as usize).into_bytes()).unwrap();
        fs.vote(&mut t).unwrap();
        let tid = fs.tpc_finish(&mut t).unwrap();
        serials.insert(oid, tid);
        if i % 9 == 8 {
            let mut u = Transaction::begin(TxnMeta::new("", "undo", vec![])).unwrap();
            u.undo(tid).unwrap();
            if fs.vote(&mut u).is_ok() {
                let utid = fs.tpc_finish(&mut u).unwrap();
                serials.insert(oid, utid);
            } else {
                fs.abort(&mut u).unwrap();
            }
        }
    }
    fs.close().unwrap();
}

fn mutate(rng: &mut impl Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        let len = bytes.len();
        match rng.random_range(0..6) {
            0 => {
                let i = rng.random_range(0..len);
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..16).min(len - i);
                for b in &mut bytes[i..i + n] {
                    *b = rng.random();
                }
            }
            2 => bytes.truncate(rng.random_range(0..len)),
            3 => {
                let i = rng.random_range(0..len);
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                bytes.splice(i..i, extra);
            }
            4 => {
                let i = rng.random_range(0..len);
                let tail = bytes[i..].to_vec();
                bytes.extend_from_slice(&tail[..tail.len().min(200)]);
            }
            _ => {
                // An 8-byte field set to an extreme value.
                let i = rng.random_range(0..len.saturating_sub(8).max(1));
                let v: u64 = if rng.random() { u64::MAX } else { rng.random_range(0..len as u64 * 2) };
                let end = (i + 8).min(len);
                bytes[i..end].copy_from_slice(&v.to_be_bytes()[..end - i]);
            }
        }
        if bytes.is_empty() {
            break;
        }
    }
}

fn exercise(path: &std::path::Path) {
    let _ = storage::verify(path);
    for read_only in [true, false] {
        let Ok(fs) = FileStorage::open(path, OpenOptions { read_only, ..Default::default() }) else { continue };
        if let Ok(it) = fs.iterator(None, None) {
            for t in it.take(1000) {
                if t.is_err() {
                    break;
                }
            }
        }
        for o in 0u64..7 {
            let oid = o.to_be_bytes();
            let _ = fs.load_before(&oid, &MAXTID);
            let _ = fs.history(&oid, 100);
            let _ = fs.load_serial(&oid, &Z64);
        }
        let _ = fs.undo_log(0, -50, None);
        let _ = fs.record_iternext(None);
        if !read_only {
            let mut t = Transaction::begin(TxnMeta::new("", "", vec![])).unwrap();
            let _ = t.store(1u64.to_be_bytes(), Z64, b"x".to_vec());
            if fs.vote(&mut t).is_ok() {
                let _ = fs.tpc_finish(&mut t);
            }
        }
    }
}

#[test]
fn mutated_files_never_panic() {
    let iters: usize = std::env::var("ZEO_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.fs");
    seed_file(&seed);
    let original = std::fs::read(&seed).unwrap();
    let snapshot = std::fs::read(format!("{}.rsindex", seed.display())).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let path = dir.path().join("case.fs");
    let mut executed = 0;
    for i in 0..iters {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        // Half the cases open with the (now stale) index snapshot, half with a mutated one.
        let mut snap = snapshot.clone();
        if i % 2 == 1 {
            mutate(&mut rng, &mut snap);
        }
        std::fs::write(format!("{}.rsindex", path.display()), &snap).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.to_string_lossy().contains("case.fs.tr") {
                std::fs::remove_file(p).unwrap();
            }
        }
        exercise(&path);
        executed += 1;
    }
    eprintln!("fuzz: {executed} mutated files executed without a panic");
    assert_eq!(executed, iters);
}
