//! The zeo-rs side of `bench/scale.sh`: a large Data.fs made fast with the engine's own commit path,
//! then one measurement per process (so each RSS figure starts from a process that did nothing else).
//!
//! ```text
//! scale_bench generate --out FILE --objects N --updates M   # N objects 0..N, then M new revisions
//! scale_bench phase --file FILE --phase open                # open read-only: time, RSS, peak RSS
//! scale_bench phase --file FILE --phase reads --reads 100000  # open, then random first loads
//! scale_bench phase --file FILE --phase pack                # pack (no GC) to the last transaction
//! scale_bench phase --file FILE --phase index               # read-write open + close: a fresh snapshot
//! ```
//! Each phase prints one JSON object on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use zeo_storage::{FileStorage, MAXTID, OpenOptions, Transaction, TxnMeta, VoteOutcome, Z64};

#[derive(Parser)]
#[command(about = "zeo-rs side of bench/scale.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a new Data.fs (and its index snapshot) through the commit path, in big transactions.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        objects: u64,
        /// New revisions of pseudo-random objects after the creations (old revisions for pack).
        #[arg(long, default_value_t = 1_000_000)]
        updates: u64,
        #[arg(long, default_value_t = 100_000)]
        batch: u64,
        /// Bytes of data per record.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// One measurement in this process.
    Phase {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, value_enum)]
        phase: Phase,
        #[arg(long, default_value_t = 100_000)]
        reads: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Phase {
    Open,
    Reads,
    Pack,
    Index,
}

/// SplitMix64, seed 42 (the Python side draws its own oids from the same range).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

fn commit(fs: &FileStorage, stores: impl Iterator<Item = ([u8; 8], [u8; 8], Vec<u8>)>) -> Result<[u8; 8]> {
    let mut t = Transaction::begin(TxnMeta::new(Vec::new(), Vec::new(), Vec::new()))?;
    for (oid, serial, data) in stores {
        t.store(oid, serial, data)?;
    }
    match fs.vote(&mut t)? {
        VoteOutcome::Voted { .. } => {}
        VoteOutcome::Conflicts(c) => bail!("unexpected conflicts: {} objects", c.len()),
    }
    Ok(fs.tpc_finish(&mut t)?)
}

fn payload(oid: u64, rev: u64, size: usize) -> Vec<u8> {
    let seed = (oid ^ rev.rotate_left(32)).to_be_bytes();
    seed.iter().copied().cycle().take(size).collect()
}

fn generate(out: &Path, objects: u64, updates: u64, batch: u64, size: usize) -> Result<()> {
    if out.exists() {
        bail!("{} exists; remove it first", out.display());
    }
    let t0 = Instant::now();
    let fs = FileStorage::open(out, OpenOptions { create: true, ..Default::default() })?;
    // Serials per object: u32 transaction numbers map to tids through `tids`.
    let mut serial_of: Vec<u32> = vec![0; objects as usize];
    let mut tids: Vec<[u8; 8]> = Vec::new();
    let mut next = 0u64;
    while next < objects {
        let end = (next + batch).min(objects);
        let tid = commit(&fs, (next..end).map(|o| (o.to_be_bytes(), Z64, payload(o, 0, size))))?;
        tids.push(tid);
        serial_of[next as usize..end as usize].fill(tids.len() as u32);
        next = end;
        if tids.len().is_multiple_of(10) {
            eprintln!("[scale_bench] {next} objects, {:.0} s", t0.elapsed().as_secs_f64());
        }
    }
    let mut rng = Rng(42);
    let mut done = 0u64;
    while done < updates {
        let n = batch.min(updates - done);
        // Each oid at most once per transaction (a second store would leave two records).
        let mut oids: Vec<u64> = (0..n).map(|_| rng.below(objects)).collect();
        oids.sort_unstable();
        oids.dedup();
        let stores: Vec<_> = oids
            .iter()
            .map(|&o| (o.to_be_bytes(), tids[serial_of[o as usize] as usize - 1], payload(o, done + 1, size)))
            .collect();
        let tid = commit(&fs, stores.into_iter())?;
        tids.push(tid);
        for &o in &oids {
            serial_of[o as usize] = tids.len() as u32;
        }
        done += n;
    }
    fs.close()?;
    let json = json!({"generate_s": t0.elapsed().as_secs_f64(), "objects": objects, "updates": updates,
                      "transactions": tids.len(), "file_bytes": std::fs::metadata(out)?.len()});
    println!("{json}");
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn phase(file: &Path, phase: Phase, reads: usize) -> Result<()> {
    let before = status_kb("VmRSS");
    let read_only = !matches!(phase, Phase::Pack | Phase::Index);
    let t0 = Instant::now();
    let fs = FileStorage::open(file, OpenOptions { read_only, ..Default::default() })?;
    let open_s = t0.elapsed().as_secs_f64();
    let objects = fs.len();
    let mut doc = json!({"open_s": open_s, "objects": objects, "rss_before_kb": before,
                         "rss_after_open_kb": status_kb("VmRSS"), "index_heap_bytes": fs.index_heap_bytes()});
    match phase {
        Phase::Open => {}
        Phase::Index => {
            // Always rewrite the snapshot, so it has this build's layout.
            fs.save_index()?;
            fs.close()?;
        }
        Phase::Reads => {
            let mut rng = Rng(7);
            let mut lat = Vec::with_capacity(reads);
            let t0 = Instant::now();
            for _ in 0..reads {
                let oid = rng.below(objects as u64).to_be_bytes();
                let t = Instant::now();
                fs.load_before(&oid, &MAXTID)?.context("no revision")?;
                lat.push(t.elapsed().as_secs_f64());
            }
            let total = t0.elapsed().as_secs_f64();
            lat.sort_by(f64::total_cmp);
            doc["reads"] = json!(reads);
            doc["reads_s"] = json!(total);
            doc["load_p50_us"] = json!(percentile(&lat, 0.5) * 1e6);
            doc["load_p99_us"] = json!(percentile(&lat, 0.99) * 1e6);
            doc["rss_after_reads_kb"] = json!(status_kb("VmRSS"));
        }
        Phase::Pack => {
            let last = fs.last_transaction();
            let t0 = Instant::now();
            let stats = fs.pack(&last, false)?;
            doc["pack_s"] = json!(t0.elapsed().as_secs_f64());
            doc["old_size"] = json!(stats.old_size);
            doc["new_size"] = json!(stats.new_size);
            fs.close()?;
            doc["hwm_kb"] = json!(status_kb("VmHWM"));
            println!("{doc}");
            return Ok(());
        }
    }
    doc["hwm_kb"] = json!(status_kb("VmHWM"));
    println!("{doc}");
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Generate { out, objects, updates, batch, size } => generate(&out, objects, updates, batch, size),
        Cmd::Phase { file, phase: p, reads } => phase(&file, p, reads),
    }
}
