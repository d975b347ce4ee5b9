//! zeoctl: inspect and maintain a FileStorage (Data.fs) with the zeo-rs engine.
//!
//! `verify` (like ZODB's fstest), `dump` (like fsdump), `info`, and `pack`. `verify`, `dump` and
//! `info` open the file read-only and take no lock, so they are safe on a live server's file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use zeo_proto::timestamp::TimeStamp;
use zeo_server::storage::{self, FileStorage, OpenOptions};

#[derive(Parser)]
#[command(name = "zeoctl", version, about = "Inspect and maintain a ZODB FileStorage (Data.fs)")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "ZEO_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every transaction, record, prev pointer and backpointer; exit 1 on damage.
    Verify { file: PathBuf },
    /// Print every transaction and data record.
    Dump {
        file: PathBuf,
        /// One JSON object per transaction instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Size, objects, transactions and the last tid.
    Info { file: PathBuf },
    /// Pack: drop revisions older than N days that are not current, and unreachable objects.
    Pack {
        file: PathBuf,
        /// Keep full history for this many days.
        #[arg(long, default_value_t = 0.0)]
        days: f64,
        /// Keep unreachable objects (no garbage collection).
        #[arg(long)]
        no_gc: bool,
    },
    /// GET an http:// URL (e.g. a /readyz endpoint); exit 0 on a 2xx answer. For container
    /// health checks in images that have no curl.
    Health {
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// Ask again (every 200 ms) until a 2xx answer or this many seconds have passed; for a
        /// Kubernetes preStop hook waiting on a supervisor's /handover.
        #[arg(long)]
        wait: Option<f64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    zeo_server::telemetry::init(&cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zeoctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Health { url, timeout, wait } => {
            let timeout = Duration::from_secs_f64(timeout);
            let ok = match wait {
                None => health(&url, timeout)?,
                Some(wait) => health_until_ok(&url, timeout, Duration::from_secs_f64(wait)),
            };
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Verify { file } => {
            let r = storage::verify(&file).with_context(|| format!("verifying {}", file.display()))?;
            println!(
                "{}: {} bytes, {} transactions ({} packed), {} data records ({} backpointers), {} objects, last tid {}",
                file.display(),
                r.size,
                r.transactions,
                r.packed_transactions,
                r.records,
                r.backpointers,
                r.objects,
                hex::encode(r.last_tid)
            );
            if r.errors.is_empty() {
                println!("OK");
                Ok(ExitCode::SUCCESS)
            } else {
                for (offset, msg) in &r.errors {
                    println!("DAMAGE at byte offset {offset}: {msg}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Dump { file, json } => {
            let fs = open_read_only(&file)?;
            for (i, t) in fs.iterator(None, None)?.enumerate() {
                let t = t?;
                if json {
                    println!("{}", zeo_server::describe::transaction_json(&t));
                    continue;
                }
                println!(
                    "Trans #{i:05} tid={} time={} offset={}",
                    hex::encode(t.tid),
                    TimeStamp::from_raw(t.tid),
                    t.pos
                );
                println!(
                    "    status={:?} user={:?} description={:?}{}",
                    t.status as char,
                    String::from_utf8_lossy(&t.user),
                    String::from_utf8_lossy(&t.description),
                    if t.extension.is_empty() {
                        String::new()
                    } else {
                        format!(" extension={} bytes", t.extension.len())
                    }
                );
                for (j, r) in t.records.iter().enumerate() {
                    let what = match (&r.data, &r.data_txn) {
                        (None, _) => "no data (deleted or creation undone)".to_string(),
                        (Some(d), txn) => {
                            let class = zeo_server::describe::class_name(d).unwrap_or_else(|| "?".into());
                            match txn {
                                Some(bt) => format!("size={} class={class} bp={}", d.len(), hex::encode(bt)),
                                None => format!("size={} class={class}", d.len()),
                            }
                        }
                    };
                    println!("  data #{j:05} oid={} {what}", hex::encode(r.oid));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { file } => {
            let fs = open_read_only(&file)?;
            let transactions = fs.iterator(None, None)?.count();
            let last = fs.last_transaction();
            println!("file:         {}", file.display());
            println!("size:         {} bytes", fs.size());
            println!("objects:      {}", fs.len());
            println!("transactions: {transactions}");
            println!("last tid:     {} ({} UTC)", hex::encode(last), TimeStamp::from_raw(last));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack { file, days, no_gc } => {
            anyhow::ensure!(days >= 0.0 && days.is_finite(), "--days must be a non-negative number");
            let fs = FileStorage::open(&file, OpenOptions::default())
                .with_context(|| format!("opening {}", file.display()))?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
            let pack_tid = TimeStamp::from_unix(now - days * 86_400.0).context("pack time")?.raw();
            let stats = fs.pack(&pack_tid, !no_gc).context("packing")?;
            if stats.packed {
                println!(
                    "packed to {} UTC: {} -> {} bytes, {} records removed",
                    TimeStamp::from_raw(pack_tid),
                    stats.old_size,
                    stats.new_size,
                    stats.records_removed
                );
            } else {
                println!("nothing to pack");
            }
            fs.close()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_read_only(file: &PathBuf) -> Result<FileStorage> {
    FileStorage::open(file, OpenOptions { read_only: true, ..Default::default() })
        .with_context(|| format!("opening {}", file.display()))
}

/// A minimal HTTP/1.0 GET: enough for a health check, with no TLS and no redirects.
/// `health` again and again until it succeeds or `wait` has passed: each try is bounded by
/// `timeout`, and never reaches past the end of `wait`.
fn health_until_ok(url: &str, timeout: Duration, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = health(url, timeout.min(left).max(Duration::from_millis(100)));
        if matches!(outcome, Ok(true)) {
            return true;
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            if let Err(e) = &outcome {
                eprintln!("zeoctl: {e:#}");
            }
            eprintln!("zeoctl: no 2xx answer from {url} within {:.1}s", wait.as_secs_f64());
            return false;
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Between two tries of `health --wait`.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// One GET of `url`: whether the answer is a 2xx (its status code is printed).
fn health(url: &str, timeout: Duration) -> Result<bool> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    stream.take(4096).read_to_end(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    let code: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("not an HTTP answer")?;
    println!("{code}");
    Ok((200..300).contains(&code))
}
