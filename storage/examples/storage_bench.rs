//! Storage engine workloads: the zeo-rs side of the storage benchmark (`bench/storage.sh`).
//!
//! The same workloads, parameters and JSON keys as `bench/storage_py.py` (Python's FileStorage), so
//! the runner can put the two results side by side; see `bench/README.md`. Everything runs in-process
//! on `FileStorage` (no server, no network). One JSON document goes to stdout, progress to stderr.
//!
//! ```text
//! cargo run --release -p zeo-server --example storage_bench -- --quick
//! cargo run --release -p zeo-server --example storage_bench -- --only tiny,fsync --tiny-seconds 10
//! ```
//!
//! Workloads (each on a fresh storage in a temporary directory under `--dir`):
//! - `tiny`: one 300 B object per transaction (begin/store/vote/`tpc_finish`, which fdatasyncs),
//!   overwriting objects from a pool of 1000, for `--tiny-seconds` (or `--tiny-n` transactions).
//!   Slices of it alternate with equal slices of raw append 300 B + fdatasync on a side file in the
//!   same directory: `fraction_of_raw` compares the two under the same disk conditions.
//! - `tiny_group`: the same with `--group-threads` committer threads; each votes and finishes under
//!   a commit lock (like the ZEO server's) with `finish_nosync`, then calls `sync` outside it, so one
//!   fdatasync covers every transaction finished meanwhile (group commit). Python has no equivalent.
//! - `bulk`: one transaction of `--bulk-objects` new objects, `--bulk-reps` times; median seconds.
//! - `load`: `--load-objects` objects in 1000-object transactions, then `--load-n` random
//!   `load_before(oid, MAXTID)` calls on one thread.
//! - `open`: read-only open of the big file the Python side built (`--open-file`, by default the one
//!   `storage_py.py` caches for `--open-mb`/`--open-oids`), with and without `Data.fs.rsindex`
//!   (median of `--open-reps`, page cache warm). The file is never copied: a symlink in a temporary
//!   directory stands for it, so the snapshot and lock files land there. One read-write open + close
//!   of that symlink writes the snapshot first (it does not write to the data file, which is checked).
//! - `fsync`: raw disk, append 300 B + fdatasync (`File::sync_data`) in a loop for `--fsync-seconds`,
//!   alternating op by op with append + fsync (`File::sync_all`, what Python's `os.fsync` does) on a
//!   second file; the fsync figures are under `fsync`.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use zeo_storage::{FileStorage, MAXTID, OpenOptions, Tid, Transaction, TxnMeta, VoteOutcome, Z64};

const OBJ_SIZE: usize = 300;
const BENCHES: [&str; 6] = ["tiny", "tiny_group", "bulk", "load", "open", "fsync"];

#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(about = "zeo-rs storage engine workloads (the Rust side of bench/storage.sh)")]
struct Args {
    /// Tiny sizes for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Comma-separated subset of: tiny,tiny_group,bulk,load,open,fsync.
    #[arg(long, default_value = "tiny,tiny_group,bulk,load,open,fsync")]
    #[serde(skip)]
    only: String,
    /// Where temporary storages go (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where storage_py.py caches the big open-benchmark file (env ZEORS_BENCH_CACHE).
    #[arg(long, env = "ZEORS_BENCH_CACHE")]
    cache_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 5.0)]
    tiny_seconds: f64,
    /// Fixed count instead of seconds (for tiny_group: the total over all threads).
    #[arg(long, default_value_t = 0)]
    tiny_n: u64,
    /// Committer threads of tiny_group.
    #[arg(long, default_value_t = 4)]
    group_threads: usize,
    #[arg(long, default_value_t = 1000)]
    bulk_objects: usize,
    #[arg(long, default_value_t = 20)]
    bulk_reps: usize,
    #[arg(long, default_value_t = 100_000)]
    load_objects: usize,
    #[arg(long, default_value_t = 200_000)]
    load_n: usize,
    /// The big file to open (default: storage_py.py's cached file for --open-mb/--open-oids).
    #[arg(long)]
    open_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    open_mb: u64,
    #[arg(long, default_value_t = 1_000_000)]
    open_oids: u64,
    #[arg(long, default_value_t = 3)]
    open_reps: usize,
    #[arg(long, default_value_t = 3.0)]
    fsync_seconds: f64,
    /// Internal: open this file read-only in this (fresh) process, print its RSS figures as JSON, exit.
    #[arg(long, hide = true)]
    #[serde(skip)]
    rss_open: Option<PathBuf>,
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The child side of `rss_of_open`: RSS before and after one read-only open, in a process that did
/// nothing else (an allocator that served earlier workloads would blur the figure).
fn rss_open(path: &Path) -> Result<()> {
    let before = status_kb("VmRSS");
    let t0 = Instant::now();
    let fs = FileStorage::open(path, OpenOptions { read_only: true, ..Default::default() })?;
    let seconds = t0.elapsed().as_secs_f64();
    let after = status_kb("VmRSS");
    let doc = json!({"objects": fs.len(), "seconds": seconds, "rss_before_kb": before, "rss_after_kb": after,
                     "hwm_kb": status_kb("VmHWM"), "index_heap_bytes": fs.index_heap_bytes()});
    println!("{doc}");
    Ok(())
}

/// Opens `path` read-only in a fresh child process; its RSS growth over the open, per object, is
/// what the index costs (the record cache is empty after an open).
fn rss_of_open(path: &Path) -> Result<Value> {
    let out = std::process::Command::new(std::env::current_exe()?).arg("--rss-open").arg(path).output()?;
    if !out.status.success() {
        bail!("rss child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout)?;
    let per = |k: &str| {
        (v[k].as_f64().unwrap_or(0.0) - v["rss_before_kb"].as_f64().unwrap_or(0.0)) * 1024.0
            / v["objects"].as_f64().unwrap_or(1.0).max(1.0)
    };
    let (rss, hwm) = (per("rss_after_kb"), per("hwm_kb"));
    v["rss_bytes_per_object"] = json!(rss);
    v["peak_bytes_per_object"] = json!(hwm);
    Ok(v)
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[storage_bench] {}", msg.as_ref());
}

/// SplitMix64: deterministic pseudo-random bytes and indices (seed 42, like the Python side; the
/// streams differ, the sizes and distributions do not).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn payloads(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| self.bytes(OBJ_SIZE)).collect()
    }
}

/// Filesystem type of the mount holding `path` (from /proc/mounts).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path = path.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let (mut best, mut typ) = (String::new(), "unknown".to_string());
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mnt = f[1];
        let under = path == mnt || path.starts_with(&format!("{}/", mnt.trim_end_matches('/')));
        if under && mnt.len() > best.len() {
            best = mnt.to_string();
            typ = f[2].to_string();
        }
    }
    typ
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// `p50_ms`, `p99_ms`, `max_ms` of latencies in seconds.
fn lat_summary(samples: &mut [f64]) -> Value {
    if samples.is_empty() {
        return json!({"p50_ms": null, "p99_ms": null, "max_ms": null});
    }
    samples.sort_by(f64::total_cmp);
    json!({"p50_ms": pct(samples, 0.50) * 1e3, "p99_ms": pct(samples, 0.99) * 1e3,
           "max_ms": samples[samples.len() - 1] * 1e3})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// A fresh storage in a temporary directory (removed on drop).
struct TempStorage {
    fs: Option<FileStorage>,
    _dir: tempfile::TempDir,
}

impl TempStorage {
    fn new(base: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("zeors-bench-").tempdir_in(base)?;
        let fs = FileStorage::open(dir.path().join("Data.fs"), OpenOptions { create: true, ..Default::default() })?;
        Ok(TempStorage { fs: Some(fs), _dir: dir })
    }

    fn fs(&self) -> &FileStorage {
        self.fs.as_ref().expect("open")
    }

    fn close(mut self) -> Result<()> {
        self.fs.take().expect("open").close()?;
        Ok(())
    }
}

/// Begins a transaction and buffers `stores` (oid, serial, data); returns it ready to vote.
fn prepare(stores: Vec<([u8; 8], Tid, Vec<u8>)>) -> Result<Transaction> {
    let mut t = Transaction::begin(TxnMeta::new(Vec::new(), Vec::new(), Vec::new()))?;
    for (oid, serial, data) in stores {
        t.store(oid, serial, data)?;
    }
    Ok(t)
}

fn vote(fs: &FileStorage, t: &mut Transaction) -> Result<()> {
    match fs.vote(t)? {
        VoteOutcome::Voted { .. } => Ok(()),
        VoteOutcome::Conflicts(c) => bail!("unexpected write conflicts: {c:?}"),
    }
}

/// One durable transaction (vote + `tpc_finish`); returns its tid.
fn commit(fs: &FileStorage, stores: Vec<([u8; 8], Tid, Vec<u8>)>) -> Result<Tid> {
    let mut t = prepare(stores)?;
    vote(fs, &mut t)?;
    Ok(fs.tpc_finish(&mut t)?)
}

/// Creates one object per payload in `batch`-object transactions; returns (oid, tid) pairs.
fn bulk_create(fs: &FileStorage, data: Vec<Vec<u8>>, batch: usize) -> Result<Vec<([u8; 8], Tid)>> {
    let mut out = Vec::with_capacity(data.len());
    let mut data = data.into_iter().peekable();
    while data.peek().is_some() {
        let chunk: Vec<Vec<u8>> = data.by_ref().take(batch).collect();
        let oids = fs.new_oids(chunk.len() as u64)?;
        let tid = commit(fs, oids.iter().zip(chunk).map(|(o, d)| (*o, Z64, d)).collect())?;
        out.extend(oids.into_iter().map(|o| (o, tid)));
    }
    Ok(out)
}

/// Whether a run that started at `start` with `n` transactions done should stop.
fn done(a: &Args, start: Instant, n: u64) -> bool {
    if a.tiny_n > 0 { n >= a.tiny_n } else { start.elapsed().as_secs_f64() >= a.tiny_seconds }
}

/// Appends 300 B + fdatasync to a side file: the raw rate a tiny commit is measured against.
struct RawAppender {
    file: File,
    rec: Vec<u8>,
    ops: u64,
    seconds: f64,
}

impl RawAppender {
    fn new(path: &Path, rec: Vec<u8>) -> Result<Self> {
        let file = FsOpenOptions::new().create(true).append(true).open(path)?;
        Ok(RawAppender { file, rec, ops: 0, seconds: 0.0 })
    }

    /// Runs for `seconds`, or `count` operations when given.
    fn run(&mut self, seconds: f64, count: Option<u64>) -> Result<()> {
        let start = Instant::now();
        let mut n = 0;
        while count.map_or(start.elapsed().as_secs_f64() < seconds, |c| n < c) {
            self.file.write_all(&self.rec)?;
            self.file.sync_data()?;
            n += 1;
        }
        self.ops += n;
        self.seconds += start.elapsed().as_secs_f64();
        Ok(())
    }
}

/// Tiny commits, in slices alternating with slices of raw append + fdatasync in the same directory,
/// so that the "fraction of the raw rate" compares numbers measured under the same disk conditions.
fn bench_tiny(a: &Args, base: &Path, rng: &mut Rng) -> Result<Value> {
    let st = TempStorage::new(base)?;
    let fs = st.fs();
    let pool = rng.payloads(64);
    let mut objs = bulk_create(fs, rng.payloads(1000), 1000)?;
    let dir = fs.path().parent().context("storage path has no directory")?;
    let mut raw = RawAppender::new(&dir.join("raw-append.log"), rng.bytes(OBJ_SIZE))?;
    // Slices: 1/10 of the count, or min(0.25 s, 1/10 of the time).
    let slice_n = (a.tiny_n > 0).then(|| a.tiny_n.div_ceil(10));
    let slice_s = (a.tiny_seconds / 10.0).min(0.25);
    let mut lat = Vec::new();
    let mut n = 0u64;
    let mut tiny_s = 0.0;
    loop {
        let total_done = match slice_n {
            Some(_) => n >= a.tiny_n,
            None => tiny_s >= a.tiny_seconds,
        };
        if total_done {
            break;
        }
        let start = Instant::now();
        let first = n;
        while match slice_n {
            Some(c) => n - first < c && n < a.tiny_n,
            None => start.elapsed().as_secs_f64() < slice_s,
        } {
            let i = (n % objs.len() as u64) as usize;
            let (oid, serial) = objs[i];
            let t0 = Instant::now();
            objs[i].1 = commit(fs, vec![(oid, serial, pool[(n % pool.len() as u64) as usize].clone())])?;
            lat.push(t0.elapsed().as_secs_f64());
            n += 1;
        }
        let el = start.elapsed().as_secs_f64();
        tiny_s += el;
        raw.run(el, slice_n.map(|_| n - first))?;
    }
    st.close()?;
    let tx_per_s = n as f64 / tiny_s;
    let raw_per_s = raw.ops as f64 / raw.seconds;
    Ok(merge(
        json!({"transactions": n, "seconds": tiny_s, "tx_per_s": tx_per_s,
               "raw_fdatasync_ops": raw.ops, "raw_fdatasync_per_s": raw_per_s, "fraction_of_raw": tx_per_s / raw_per_s}),
        lat_summary(&mut lat),
    ))
}

fn bench_tiny_group(a: &Args, base: &Path, rng: &mut Rng) -> Result<Value> {
    let threads = a.group_threads.max(1);
    let st = TempStorage::new(base)?;
    let fs = st.fs();
    let pool = rng.payloads(64);
    let objs = bulk_create(fs, rng.payloads(1000), 1000)?;
    // The ZEO server's commit lock: one transaction between vote and finish at a time.
    let commit_lock = Mutex::new(());
    // Every fdatasync publishes a new durable sequence number, and the thread that issued it gets it
    // back from `sync`; threads whose transactions someone else's fsync covered get an old one back.
    // So the distinct values returned by `sync` count the fsyncs.
    let synced = Mutex::new(std::collections::BTreeSet::new());
    let total = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    let per_thread: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let mut mine: Vec<([u8; 8], Tid)> = objs.iter().skip(k).step_by(threads).copied().collect();
                let (pool, commit_lock, synced, total) = (&pool, &commit_lock, &synced, &total);
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut lat = Vec::new();
                    let mut n = 0usize;
                    while !done(a, start, total.load(std::sync::atomic::Ordering::Relaxed)) {
                        let i = n % mine.len();
                        let (oid, serial) = mine[i];
                        let t0 = Instant::now();
                        let mut t = prepare(vec![(oid, serial, pool[(n + k) % pool.len()].clone())])?;
                        let c = {
                            let _g = commit_lock.lock().expect("commit lock");
                            vote(fs, &mut t)?;
                            fs.finish_nosync(&mut t)?
                        };
                        if fs.durable_seq() < c.seq {
                            let d = fs.sync()?;
                            synced.lock().expect("synced").insert(d);
                        }
                        if fs.durable_seq() < c.seq {
                            bail!("transaction {} not durable after sync", c.seq);
                        }
                        lat.push(t0.elapsed().as_secs_f64());
                        mine[i].1 = c.tid;
                        n += 1;
                        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("committer thread panicked")).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in per_thread {
        lat.extend(r?);
    }
    st.close()?;
    let n = lat.len() as f64;
    let fsyncs = synced.into_inner().expect("synced").len();
    Ok(merge(
        json!({"threads": threads, "transactions": lat.len(), "seconds": elapsed, "tx_per_s": n / elapsed,
               "fsyncs": fsyncs, "tx_per_fsync": n / fsyncs.max(1) as f64}),
        lat_summary(&mut lat),
    ))
}

fn bench_bulk(a: &Args, base: &Path, rng: &mut Rng) -> Result<Value> {
    let st = TempStorage::new(base)?;
    let fs = st.fs();
    let mut times = Vec::new();
    for _ in 0..a.bulk_reps {
        let data = rng.payloads(a.bulk_objects);
        let oids = fs.new_oids(a.bulk_objects as u64)?;
        let stores = oids.into_iter().zip(data).map(|(o, d)| (o, Z64, d)).collect();
        let t0 = Instant::now();
        commit(fs, stores)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    st.close()?;
    let med = median(&times);
    Ok(json!({"objects_per_tx": a.bulk_objects, "reps": a.bulk_reps, "median_s": med,
              "min_s": times.iter().copied().fold(f64::INFINITY, f64::min),
              "max_s": times.iter().copied().fold(0.0, f64::max),
              "objects_per_s": a.bulk_objects as f64 / med}))
}

fn bench_load(a: &Args, base: &Path, rng: &mut Rng) -> Result<Value> {
    let st = TempStorage::new(base)?;
    let fs = st.fs();
    let t0 = Instant::now();
    let objs = bulk_create(fs, rng.payloads(a.load_objects), 1000)?;
    let create_s = t0.elapsed().as_secs_f64();
    let probe: Vec<[u8; 8]> = (0..a.load_n).map(|_| objs[rng.below(objs.len())].0).collect();
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for oid in &probe {
        let r = fs.load_before(oid, &MAXTID)?.context("load_before found no revision")?;
        bytes += std::hint::black_box(r).data.len();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    st.close()?;
    if bytes != a.load_n * OBJ_SIZE {
        bail!("loaded {bytes} bytes, expected {}", a.load_n * OBJ_SIZE);
    }
    Ok(json!({"objects": a.load_objects, "create_s": create_s, "loads": a.load_n, "seconds": elapsed,
              "loads_per_s": a.load_n as f64 / elapsed, "us_per_load": elapsed / a.load_n as f64 * 1e6}))
}

/// The big file: `--open-file`, else storage_py.py's cached build for these parameters.
fn open_file(a: &Args) -> Result<PathBuf> {
    if let Some(f) = &a.open_file {
        return Ok(f.clone());
    }
    let cache = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("bench").join("out").join("cache"));
    let f = cache.join(format!("open-{}mb-{}oids.fs", a.open_mb, a.open_oids));
    if !Path::new(&format!("{}.done", f.display())).exists() {
        bail!("{} is not built: run `bench/storage_py.py --only open` first, or pass --open-file", f.display());
    }
    Ok(f)
}

fn bench_open(a: &Args, base: &Path, _rng: &mut Rng) -> Result<Value> {
    let file = std::fs::canonicalize(open_file(a)?)?;
    let before = std::fs::metadata(&file)?;
    let timed_open = |p: &Path| -> Result<(f64, usize)> {
        let t0 = Instant::now();
        let fs = FileStorage::open(p, OpenOptions { read_only: true, ..Default::default() })?;
        let n = fs.len();
        let el = t0.elapsed().as_secs_f64();
        fs.close()?;
        Ok((el, n))
    };
    // With the snapshot: a symlink beside which one read-write open + close writes Data.fs.rsindex.
    let with_dir = tempfile::Builder::new().prefix("zeors-bench-open-").tempdir_in(base)?;
    let link = with_dir.path().join("Data.fs");
    std::os::unix::fs::symlink(&file, &link)?;
    let t0 = Instant::now();
    let fs = FileStorage::open(&link, OpenOptions::default())?;
    let first_open_s = t0.elapsed().as_secs_f64();
    fs.close()?;
    let index_bytes = std::fs::metadata(with_dir.path().join("Data.fs.rsindex"))
        .context("the read-write open + close wrote no Data.fs.rsindex")?
        .len();
    let with_idx = (0..a.open_reps).map(|_| timed_open(&link)).collect::<Result<Vec<_>>>()?;
    // Without: a symlink in a directory with no snapshot forces the full scan.
    let without_dir = tempfile::Builder::new().prefix("zeors-bench-open-").tempdir_in(base)?;
    let link = without_dir.path().join("Data.fs");
    std::os::unix::fs::symlink(&file, &link)?;
    let without = (0..a.open_reps).map(|_| timed_open(&link)).collect::<Result<Vec<_>>>()?;
    let rss_without = rss_of_open(&link)?;
    let rss_with = rss_of_open(&with_dir.path().join("Data.fs"))?;
    let after = std::fs::metadata(&file)?;
    if after.len() != before.len() || after.modified()? != before.modified()? {
        bail!("{} changed while benchmarking open", file.display());
    }
    let times = |v: &[(f64, usize)]| v.iter().map(|(t, _)| *t).collect::<Vec<_>>();
    Ok(json!({"file": file, "file_mb": before.len() as f64 / 1048576.0, "index_mb": index_bytes as f64 / 1048576.0,
              "objects": with_idx[0].1, "objects_without_index": without[0].1,
              "first_open_rw_s": first_open_s,
              "with_index_s": median(&times(&with_idx)), "without_index_s": median(&times(&without)),
              "with_index_all_s": times(&with_idx), "without_index_all_s": times(&without),
              "reps": a.open_reps, "page_cache": "warm",
              "rss_with_index": rss_with, "rss_without_index": rss_without}))
}

/// Raw disk: append 300 B + fdatasync in a loop, alternating op by op with append 300 B + fsync on a
/// second file (what Python's `os.fsync` does), so both see the same disk conditions.
fn bench_fsync(a: &Args, base: &Path, rng: &mut Rng) -> Result<Value> {
    let rec = rng.bytes(OBJ_SIZE);
    let dir = tempfile::Builder::new().prefix("zeors-bench-").tempdir_in(base)?;
    let open = |name: &str| FsOpenOptions::new().create(true).append(true).open(dir.path().join(name));
    let (mut fd, mut ff) = (open("append-fdatasync.log")?, open("append-fsync.log")?);
    let (mut lat_d, mut lat_f) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.fsync_seconds);
    while start.elapsed() < limit {
        let t0 = Instant::now();
        fd.write_all(&rec)?;
        fd.sync_data()?;
        let t1 = Instant::now();
        ff.write_all(&rec)?;
        ff.sync_all()?;
        lat_d.push((t1 - t0).as_secs_f64());
        lat_f.push(t1.elapsed().as_secs_f64());
    }
    let summary = |lat: &mut Vec<f64>| {
        let s: f64 = lat.iter().sum();
        let ops = lat.len();
        merge(json!({"ops": ops, "seconds": s, "ops_per_s": ops as f64 / s}), lat_summary(lat))
    };
    let fsync = summary(&mut lat_f);
    Ok(merge(json!({"bytes_per_op": OBJ_SIZE, "call": "fdatasync", "fsync": fsync}), summary(&mut lat_d)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn main() -> Result<()> {
    let mut a = Args::parse();
    if let Some(p) = &a.rss_open {
        return rss_open(p);
    }
    if a.quick {
        (a.tiny_seconds, a.bulk_reps) = (0.5, 3);
        (a.load_objects, a.load_n) = (5000, 10000);
        (a.open_mb, a.open_oids, a.open_reps) = (8, 10000, 1);
        a.fsync_seconds = 0.3;
    }
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let only: Vec<&str> = a.only.split(',').filter(|s| !s.is_empty()).collect();
    if let Some(u) = only.iter().find(|b| !BENCHES.contains(b)) {
        bail!("unknown benchmark {u:?}; choose from {}", BENCHES.join(","));
    }
    let mut results = serde_json::Map::new();
    for name in only {
        log(format!("running {name}"));
        let mut rng = Rng(42);
        let r = match name {
            "tiny" => bench_tiny(&a, &base, &mut rng),
            "tiny_group" => bench_tiny_group(&a, &base, &mut rng),
            "bulk" => bench_bulk(&a, &base, &mut rng),
            "load" => bench_load(&a, &base, &mut rng),
            "open" => bench_open(&a, &base, &mut rng),
            "fsync" => bench_fsync(&a, &base, &mut rng),
            _ => unreachable!(),
        }
        .with_context(|| format!("workload {name}"))?;
        log(format!("{name}: {r}"));
        results.insert(name.to_string(), r);
    }
    let doc = json!({
        "impl": "zeo-rs", "version": env!("CARGO_PKG_VERSION"),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "host": hostname(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "dir_fs_type": fs_type(&base), "dir": base,
        "params": a, "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
