//! `zeo-load`: load generator and acknowledged-write verifier for zeo-app or a ZEO storage.
//!
//! # Layout
//!
//! - `config`: the command line; `target`: HTTP or storage operations;
//! - `drive`: workers, pacing, progress line; `stats`: histograms and counters;
//! - `verify`: the final read-back; `report`: the JSON and text reports.

mod config;
mod drive;
mod report;
mod stats;
mod target;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use crate::config::Config;
use crate::report::{Report, SCHEMA, Settings};
use crate::stats::{Recorder, max_gap};
use crate::target::Target;

/// `EX_USAGE`: the configuration is invalid.
const EXIT_USAGE: u8 = 64;
/// `--verify` found lost or unverifiable writes.
const EXIT_VERIFY_FAILED: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = cfg.validate() {
        eprintln!("zeo-load: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(&cfg).await {
        Ok(report) => {
            print!("{}", report.text());
            if report.verified == Some(false) { ExitCode::from(EXIT_VERIFY_FAILED) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("zeo-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: &Config) -> anyhow::Result<Report> {
    let prefix: Arc<str> = cfg.prefix.clone().unwrap_or_else(|| format!("load-{:08x}", rand::random::<u32>())).into();
    let (mode, name, target) = match (&cfg.target, &cfg.storage) {
        (Some(url), _) => ("http", url.clone(), Target::http(url, cfg.timeout)),
        (None, Some(addrs)) => {
            let t = Target::storage(addrs, cfg.timeout, cfg.dead_after, cfg.verify, cfg.objects)
                .await
                .context("connecting to the storage")?;
            ("storage", addrs.join(","), t)
        }
        (None, None) => anyhow::bail!("--target or --storage is required"),
    };
    let target = Arc::new(target);
    let rec = Arc::new(Recorder::new());
    drive::run(cfg, target.clone(), rec.clone(), prefix.clone()).await;
    let elapsed_s = rec.start.elapsed().as_secs_f64();
    let snap = rec.finish();
    let (max_gap_ms, max_gap_at_ms) = max_gap(&snap.ack_times);
    let acknowledged = snap.ack_times.len() as u64;
    let outcome = if cfg.verify {
        eprintln!("zeo-load: verifying {acknowledged} acknowledged writes");
        Some(verify::check(target, snap.acked, snap.unacked, cfg.concurrency, cfg.verify_timeout).await)
    } else {
        None
    };
    let ok = snap.ops - snap.failed;
    let report = Report {
        schema: SCHEMA,
        mode,
        target: name,
        prefix: prefix.to_string(),
        verify: cfg.verify,
        settings: Settings {
            duration_s: cfg.duration.as_secs_f64(),
            rate: cfg.rate,
            concurrency: cfg.concurrency,
            write_ratio: cfg.write_ratio,
            objects: cfg.objects,
            size: cfg.size,
        },
        elapsed_s,
        ops: snap.ops,
        ok,
        failed: snap.failed,
        throughput_ops_s: if elapsed_s > 0.0 { ok as f64 / elapsed_s } else { 0.0 },
        reads: snap.reads,
        writes: snap.writes,
        errors: snap.errors,
        acknowledged,
        max_gap_ms,
        max_gap_at_ms,
        lost: outcome.as_ref().map(|o| o.lost.len() as u64),
        lost_ids: outcome.as_ref().map(|o| o.lost.iter().take(verify::MAX_LISTED).copied().collect()),
        unverified: outcome.as_ref().map(|o| o.unverified),
        unacknowledged_present: outcome.as_ref().map(|o| o.unacknowledged_present),
        verified: outcome.as_ref().map(|o| o.lost.is_empty() && o.unverified == 0),
    };
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
