//! The final report: [`Report`] is the JSON document written by `--json` (its fields are a
//! stable interface, documented in `client/app/README.md`; new fields may be added, none renamed or
//! removed without bumping [`SCHEMA`]), and [`Report::text`] is the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Latency;

/// Version of the JSON report's format.
pub const SCHEMA: u32 = 1;

/// The run's settings, as given.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--duration` in seconds.
    pub duration_s: f64,
    /// `--rate` (0: unlimited).
    pub rate: u32,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--write-ratio`.
    pub write_ratio: f64,
    /// `--objects`.
    pub objects: usize,
    /// `--size`.
    pub size: usize,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `"http"` or `"storage"`.
    pub mode: &'static str,
    /// The URL or the storage addresses.
    pub target: String,
    /// Key prefix of this run.
    pub prefix: String,
    /// Whether `--verify` was on.
    pub verify: bool,
    /// The settings.
    pub settings: Settings,
    /// Seconds from the first operation to the last one finishing (verification excluded).
    pub elapsed_s: f64,
    /// Operations completed, successful or not.
    pub ops: u64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations (sum of `errors`).
    pub failed: u64,
    /// Successful operations per second.
    pub throughput_ops_s: f64,
    /// Latency of successful reads.
    pub reads: Latency,
    /// Latency of acknowledged writes.
    pub writes: Latency,
    /// Failures by kind: `http_<status>`, `timeout`, `connect`, `transport`,
    /// `missing_on_read`, or a zeo-client error kind (`disconnected`, `conflict`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Writes whose commit was acknowledged.
    pub acknowledged: u64,
    /// The longest time between two consecutive acknowledged writes, in ms: the outage as
    /// this client saw it. 0 with fewer than two.
    pub max_gap_ms: f64,
    /// When that gap started, ms after the run started.
    pub max_gap_at_ms: f64,
    /// Acknowledged writes missing at the end (`--verify`; null otherwise).
    pub lost: Option<u64>,
    /// Their ids, at most 100 (`--verify`; null otherwise).
    pub lost_ids: Option<Vec<u64>>,
    /// Acknowledged writes that could not be read back in time (`--verify`; null otherwise).
    pub unverified: Option<u64>,
    /// Failed writes that turned out committed (`--verify`; null otherwise).
    pub unacknowledged_present: Option<u64>,
    /// `lost == 0 && unverified == 0` (`--verify`; null otherwise).
    pub verified: Option<bool>,
}

impl Report {
    /// The human summary printed at the end.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "zeo-load: {} {} for {:.1}s", self.mode, self.target, self.elapsed_s);
        let _ = writeln!(
            s,
            "  ops {}  ok {}  failed {}  throughput {:.1} ops/s",
            self.ops, self.ok, self.failed, self.throughput_ops_s
        );
        for (name, l) in [("reads ", &self.reads), ("writes", &self.writes)] {
            let _ = writeln!(
                s,
                "  {name} {:>8}  p50 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
                l.count, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        let _ = writeln!(
            s,
            "  acknowledged {}  longest gap between commits {:.0}ms (at {:.0}ms)",
            self.acknowledged, self.max_gap_ms, self.max_gap_at_ms
        );
        for (kind, n) in &self.errors {
            let _ = writeln!(s, "  error {kind}: {n}");
        }
        if let (Some(lost), Some(unverified), Some(present)) = (self.lost, self.unverified, self.unacknowledged_present)
        {
            let verdict = if self.verified == Some(true) { "OK" } else { "FAILED" };
            let _ =
                writeln!(s, "  verify {verdict}: lost {lost}  unverified {unverified}  failed-but-committed {present}");
        }
        s
    }
}
