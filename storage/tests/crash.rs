//! Crash test: a child process commits in a loop and is killed with SIGKILL at random moments, 60
//! times. After each kill the file must verify, reopen, and hold a prefix of the attempted commits
//! that includes every transaction whose finish had returned (the child prints a tid only after
//! `tpc_finish`, or after the `sync` of a group commit, returns).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use zeo_storage::{self as storage, FileStorage, OpenOptions, Transaction, TxnMeta, VoteOutcome};

const KILLS: usize = 60;
const CHILD_ENV: &str = "ZEORS_CRASH_CHILD_FILE";

/// Re-runs this test binary as the child test `name`, with `env` naming the data file; returns the
/// child and its stdout lines.
fn spawn_child(
    name: &str,
    env: &str,
    path: &Path,
) -> (std::process::Child, impl Iterator<Item = String> + Send + 'static) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, BufReader::new(stdout).lines().map_while(Result::ok))
}

/// Transaction `seq` stores oid `seq % 7` with data naming `seq`; the description names it too.
fn payload(seq: u64) -> Vec<u8> {
    format!("seq={seq};").repeat(1 + (seq % 13) as usize).into_bytes()
}

fn seq_of(description: &[u8]) -> u64 {
    std::str::from_utf8(description).unwrap().strip_prefix("seq ").unwrap().parse().unwrap()
}

/// The child: commits forever (until killed), printing each acknowledged tid.
#[test]
#[ignore = "run only as the child of sigkill_at_random_moments_loses_nothing_acknowledged"]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let fs = FileStorage::open(&path, OpenOptions { create: true, ..Default::default() }).unwrap();
    let mut seq = match fs.iterator(None, None).unwrap().last() {
        Some(t) => seq_of(&t.unwrap().description) + 1,
        None => 0,
    };
    let mut out = std::io::stdout().lock();
    loop {
        // Every third round is a group of three commits made durable by one sync.
        let group = if seq % 3 == 0 { 3 } else { 1 };
        let mut committed = Vec::new();
        for _ in 0..group {
            let oid = (seq % 7).to_be_bytes();
            let serial = fs.get_tid(&oid).unwrap_or([0; 8]);
            let mut t = Transaction::begin(TxnMeta::new("/ crash", format!("seq {seq}"), Vec::new())).unwrap();
            t.store(oid, serial, payload(seq)).unwrap();
            match fs.vote(&mut t).unwrap() {
                VoteOutcome::Voted { .. } => {}
                VoteOutcome::Conflicts(c) => panic!("unexpected conflict {c:?}"),
            }
            // Widen the vote-to-finish window now and then, so kills also land on a voted,
            // unfinished transaction (a 'c' tail that recovery must cut).
            if seq % 5 == 4 {
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            committed.push(fs.finish_nosync(&mut t).unwrap());
            // Three consecutive seqs touch three different oids, so no store in a group depends
            // on a commit of the same group that is not yet durable.
            seq += 1;
        }
        fs.sync().unwrap();
        for c in committed {
            fs.wait_durable(c.seq).unwrap();
            use std::io::Write;
            writeln!(out, "{}", hex::encode(c.tid)).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut rng = rand::rng();
    let mut cut_tails = 0;
    for round in 0..KILLS {
        let (mut child, lines) = spawn_child("crash_child", CHILD_ENV, &path);
        let reader = std::thread::spawn(move || lines.filter(|l| l.len() == 16).collect::<Vec<String>>());
        // Wait until the child commits, then kill it a random moment later.
        let wait = Duration::from_millis(rng.random_range(20..150));
        let start = Instant::now();
        while start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        acknowledged.extend(reader.join().unwrap());
        check_prefix(&path, &acknowledged, round);
        cut_tails = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tr"))
            .count();
    }
    assert!(acknowledged.len() > KILLS, "the child committed too little to test anything: {}", acknowledged.len());
    assert!(cut_tails > 0, "no kill landed between vote and finish; recovery was not exercised");
    eprintln!(
        "{KILLS} kills, {} acknowledged commits, all present; {cut_tails} torn or unfinished tails cut",
        acknowledged.len()
    );
}

/// The file verifies, its transactions are seq 0..n in order with the right data, and every
/// acknowledged tid is among them.
fn check_prefix(path: &Path, acknowledged: &[String], round: usize) {
    // Opening recovers (cuts an unfinished tail); then the whole file must verify.
    let fs = FileStorage::open(path, OpenOptions { create: true, ..Default::default() }).unwrap();
    drop(fs);
    let report = storage::verify(path).unwrap();
    assert!(report.errors.is_empty(), "round {round}: {:?}", report.errors);
    let fs = FileStorage::open(path, OpenOptions { read_only: true, ..Default::default() }).unwrap();
    let mut tids = std::collections::HashSet::new();
    for (i, t) in fs.iterator(None, None).unwrap().enumerate() {
        let t = t.unwrap();
        assert_eq!(seq_of(&t.description), i as u64, "round {round}: not a prefix");
        assert_eq!(t.records.len(), 1);
        assert_eq!(
            t.records[0].data.as_deref(),
            Some(payload(i as u64).as_slice()),
            "round {round}: wrong data in seq {i}"
        );
        tids.insert(hex::encode(t.tid));
    }
    for a in acknowledged {
        assert!(tids.contains(a), "round {round}: acknowledged tid {a} was lost");
    }
}

const PACK_CHILD_ENV: &str = "ZEORS_PACK_CHILD_FILE";
const PACK_KILLS: usize = 25;

/// A root (oid 0) referring to oids 1..=7, as a ZODB PersistentMapping pickle.
fn root_record() -> Vec<u8> {
    use zeo_proto::pickle::{Value, encode_memo};
    let class = Value::Tuple(vec![Value::global("persistent.mapping", "PersistentMapping"), Value::None]);
    let items = (1u64..=7)
        .map(|o| {
            let r =
                Value::PersistentId(Box::new(Value::Tuple(vec![Value::Bytes(o.to_be_bytes().to_vec()), Value::None])));
            (Value::Str(format!("o{o}")), r)
        })
        .collect();
    let mut out = encode_memo(&class);
    out.extend(encode_memo(&Value::Dict(vec![(Value::Str("data".into()), Value::Dict(items))])));
    out
}

/// The child: commits to oids 1..=7 and packs every 15 commits, until killed. Prints `oid seq` for
/// each acknowledged commit.
#[test]
#[ignore = "run only as the child of sigkill_during_pack_leaves_a_valid_database"]
fn pack_child() {
    let Some(path) = std::env::var_os(PACK_CHILD_ENV) else { return };
    let fs = FileStorage::open(&path, OpenOptions { create: true, ..Default::default() }).unwrap();
    if fs.get_tid(&[0; 8]).is_err() {
        let mut t = Transaction::begin(TxnMeta::new("", "root", Vec::new())).unwrap();
        t.store([0; 8], [0; 8], root_record()).unwrap();
        fs.vote(&mut t).unwrap();
        fs.tpc_finish(&mut t).unwrap();
    }
    // Microseconds since the epoch: increasing across the child's restarts.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let seq = start + n;
        let o = 1 + n % 7;
        let oid = o.to_be_bytes();
        let serial = fs.get_tid(&oid).unwrap_or([0; 8]);
        let mut t = Transaction::begin(TxnMeta::new("", "", Vec::new())).unwrap();
        t.store(oid, serial, format!("{seq}").into_bytes()).unwrap();
        fs.vote(&mut t).unwrap();
        fs.tpc_finish(&mut t).unwrap();
        use std::io::Write;
        writeln!(out, "{o} {seq}").unwrap();
        out.flush().unwrap();
        if n % 15 == 14 {
            fs.pack(&fs.last_transaction(), true).unwrap();
        }
    }
}

#[test]
fn sigkill_during_pack_leaves_a_valid_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let mut latest = std::collections::HashMap::<u64, u64>::new();
    let mut rng = rand::rng();
    for round in 0..PACK_KILLS {
        let (mut child, lines) = spawn_child("pack_child", PACK_CHILD_ENV, &path);
        let reader = std::thread::spawn(move || {
            lines
                .filter_map(|l| {
                    let (o, s) = l.split_once(' ')?;
                    Some((o.parse::<u64>().ok()?, s.parse::<u64>().ok()?))
                })
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(30..200)));
        child.kill().unwrap();
        child.wait().unwrap();
        for (o, s) in reader.join().unwrap() {
            latest.insert(o, s);
        }
        let fs = FileStorage::open(&path, OpenOptions { create: true, ..Default::default() }).unwrap();
        drop(fs);
        let report = storage::verify(&path).unwrap();
        assert!(report.errors.is_empty(), "round {round}: {:?}", report.errors);
        let fs = FileStorage::open(&path, OpenOptions { read_only: true, ..Default::default() }).unwrap();
        for (o, acked) in &latest {
            let (data, _) = fs.load(&o.to_be_bytes()).unwrap();
            let current: u64 = String::from_utf8(data).unwrap().parse().unwrap();
            assert!(current >= *acked, "round {round}: oid {o} went back from {acked} to {current}");
        }
    }
    assert!(latest.len() == 7, "the child committed too little: {latest:?}");
}
