//! [`Recorder`]: what the workers observed, shared between them, the progress line and the
//! report. Latencies go into HdrHistograms (microseconds, 3 significant digits).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::target::Item;

/// Largest latency recorded exactly; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 600_000_000;

/// A write that was acknowledged, or that failed (with `--verify`).
#[derive(Debug, Clone)]
pub struct Write {
    /// The write's unique id.
    pub id: u64,
    /// Where it went.
    pub item: Item,
}

/// Shared by every worker.
pub struct Recorder {
    /// When the run started: ack times are measured from here.
    pub start: Instant,
    ops: AtomicU64,
    failed: AtomicU64,
    reads: Mutex<Histogram<u64>>,
    writes: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Milliseconds since `start` of every acknowledged write, in completion order.
    ack_times: Mutex<Vec<f64>>,
    /// Acknowledged writes (with `--verify`).
    acked: Mutex<Vec<Write>>,
    /// Writes that failed, whose outcome the verifier looks up (with `--verify`).
    unacked: Mutex<Vec<Write>>,
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 10 min at 3 significant digits: constant bounds, cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked while holding a lock leaves data that is still consistent
    // (every update is a single push or increment).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder; the clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            reads: Mutex::new(histogram()),
            writes: Mutex::new(histogram()),
            errors: Mutex::new(BTreeMap::new()),
            ack_times: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
            unacked: Mutex::new(Vec::new()),
        }
    }

    fn latency(h: &Mutex<Histogram<u64>>, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(MAX_LATENCY_US).clamp(1, MAX_LATENCY_US);
        lock(h).saturating_record(us);
    }

    /// A successful read.
    pub fn read_ok(&self, took: Duration) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        Recorder::latency(&self.reads, took);
    }

    /// An acknowledged write; `verified` keeps it for the final read-back.
    pub fn write_ok(&self, took: Duration, write: Option<Write>) {
        let at = self.start.elapsed().as_secs_f64() * 1000.0;
        self.ops.fetch_add(1, Ordering::Relaxed);
        Recorder::latency(&self.writes, took);
        lock(&self.ack_times).push(at);
        if let Some(w) = write {
            lock(&self.acked).push(w);
        }
    }

    /// A failed operation; `write` is the failed write to look up at the end (`--verify`).
    pub fn failed(&self, kind: &str, write: Option<Write>) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        *lock(&self.errors).entry(kind.to_owned()).or_default() += 1;
        if let Some(w) = write {
            lock(&self.unacked).push(w);
        }
    }

    /// `(operations, failed, acknowledged writes)` so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let acked = lock(&self.ack_times).len() as u64;
        (self.ops.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), acked)
    }

    /// An acknowledged write to read, picked at random (for reads with `--verify`).
    pub fn random_acked(&self) -> Option<Item> {
        let acked = lock(&self.acked);
        if acked.is_empty() {
            return None;
        }
        Some(acked[rand::random_range(0..acked.len())].item.clone())
    }

    /// The 99th percentile write latency so far, in ms (for the progress line).
    pub fn write_p99_ms(&self) -> f64 {
        lock(&self.writes).value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Everything recorded, for the report; the write lists are moved out.
    pub fn finish(&self) -> Snapshot {
        let summary = |h: &Mutex<Histogram<u64>>| Latency::of(&lock(h));
        Snapshot {
            ops: self.ops.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            reads: summary(&self.reads),
            writes: summary(&self.writes),
            errors: lock(&self.errors).clone(),
            ack_times: std::mem::take(&mut *lock(&self.ack_times)),
            acked: std::mem::take(&mut *lock(&self.acked)),
            unacked: std::mem::take(&mut *lock(&self.unacked)),
        }
    }
}

/// Latency summary of one operation kind, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Successful operations measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What [`Recorder::finish`] returns.
pub struct Snapshot {
    /// Operations completed (successful or not).
    pub ops: u64,
    /// Of which failed.
    pub failed: u64,
    /// Successful reads.
    pub reads: Latency,
    /// Acknowledged writes.
    pub writes: Latency,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Ack times, ms since start.
    pub ack_times: Vec<f64>,
    /// Acknowledged writes (with `--verify`).
    pub acked: Vec<Write>,
    /// Failed writes (with `--verify`).
    pub unacked: Vec<Write>,
}

/// The longest time without an acknowledged write, between two acknowledged writes:
/// `(gap_ms, starting_at_ms)`. Zero with fewer than two.
pub fn max_gap(ack_times: &[f64]) -> (f64, f64) {
    let mut times = ack_times.to_vec();
    times.sort_by(f64::total_cmp);
    times.windows(2).map(|w| (w[1] - w[0], w[0])).fold((0.0, 0.0), |best, g| if g.0 > best.0 { g } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_the_longest_silence_between_acks() {
        assert_eq!(max_gap(&[]), (0.0, 0.0));
        assert_eq!(max_gap(&[5.0]), (0.0, 0.0));
        // Out of order on purpose: workers finish in any order.
        assert_eq!(max_gap(&[10.0, 1.0, 2.0, 3.5, 3.0]), (6.5, 3.5));
    }

    #[test]
    fn latency_summary() {
        let r = Recorder::new();
        for ms in 1..=1000 {
            r.read_ok(Duration::from_millis(ms));
        }
        r.failed("http_503", None);
        let s = r.finish();
        assert_eq!((s.ops, s.failed, s.reads.count), (1001, 1, 1000));
        assert!((s.reads.p50_ms - 500.0).abs() < 1.0, "{}", s.reads.p50_ms);
        assert!((s.reads.p999_ms - 999.0).abs() < 1.0, "{}", s.reads.p999_ms);
        assert_eq!(s.errors["http_503"], 1);
    }
}
