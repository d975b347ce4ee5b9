//! The load itself: `concurrency` workers, each doing one operation at a time until the
//! duration is up, paced to `rate` operations per second over all of them when a rate is set
//! (operation `n` starts no earlier than `n / rate` seconds into the run), and a progress line.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::config::Config;
use crate::stats::{Recorder, Write};
use crate::target::Target;

/// Runs the load until `cfg.duration` is over and every in-flight operation has finished.
pub async fn run(cfg: &Config, target: Arc<Target>, rec: Arc<Recorder>, prefix: Arc<str>) {
    let deadline = rec.start + cfg.duration;
    let slots = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(AtomicU64::new(1));
    let payload: Arc<str> = "x".repeat(cfg.size).into();
    let mut workers = JoinSet::new();
    for _ in 0..cfg.concurrency {
        let w = Worker {
            target: target.clone(),
            rec: rec.clone(),
            prefix: prefix.clone(),
            payload: payload.clone(),
            slots: slots.clone(),
            ids: ids.clone(),
            rate: cfg.rate,
            write_ratio: cfg.write_ratio,
            objects: cfg.objects,
            verify: cfg.verify,
            deadline,
        };
        workers.spawn(w.run());
    }
    let progress = tokio::spawn(progress(rec.clone(), cfg.progress_interval));
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "worker failed");
        }
    }
    progress.abort();
    print_progress(&rec, true);
}

struct Worker {
    target: Arc<Target>,
    rec: Arc<Recorder>,
    prefix: Arc<str>,
    payload: Arc<str>,
    slots: Arc<AtomicU64>,
    ids: Arc<AtomicU64>,
    rate: u32,
    write_ratio: f64,
    objects: usize,
    verify: bool,
    deadline: Instant,
}

impl Worker {
    async fn run(self) {
        loop {
            let n = self.slots.fetch_add(1, Ordering::Relaxed);
            if self.rate > 0 {
                let at = self.rec.start + Duration::from_secs_f64(n as f64 / f64::from(self.rate));
                if at >= self.deadline {
                    return;
                }
                tokio::time::sleep_until(at.into()).await;
            }
            if Instant::now() >= self.deadline {
                return;
            }
            if rand::random::<f64>() < self.write_ratio {
                self.write().await;
            } else {
                self.read().await;
            }
        }
    }

    async fn write(&self) {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let item = if self.verify {
            match self.target.fresh_item(&self.prefix, id).await {
                Ok(item) => item,
                Err(kind) => return self.rec.failed(&kind, None),
            }
        } else {
            self.target.slot_item(&self.prefix, rand::random_range(0..self.objects))
        };
        let t0 = Instant::now();
        let result = self.target.write(&item, id, &self.payload).await;
        let kept = self.verify.then_some(Write { id, item });
        match result {
            Ok(()) => self.rec.write_ok(t0.elapsed(), kept),
            Err(kind) => self.rec.failed(&kind, kept),
        }
    }

    async fn read(&self) {
        let item = if self.verify {
            match self.rec.random_acked() {
                Some(item) => item,
                // Nothing acknowledged yet to read back: write instead.
                None => return self.write().await,
            }
        } else {
            self.target.slot_item(&self.prefix, rand::random_range(0..self.objects))
        };
        let t0 = Instant::now();
        match self.target.read(&item).await {
            Ok(None) if self.verify => self.rec.failed("missing_on_read", None),
            Ok(_) => self.rec.read_ok(t0.elapsed()),
            Err(kind) => self.rec.failed(&kind, None),
        }
    }
}

/// Updates the progress line every `every` until aborted.
async fn progress(rec: Arc<Recorder>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        print_progress(&rec, false);
    }
}

/// `zeo-load  3.0s  ops 1234 (411/s)  failed 3  acked 250  write p99 4.1ms`: rewritten in place
/// on a terminal, one line per update otherwise (logs, tests).
fn print_progress(rec: &Recorder, last: bool) {
    let (ops, failed, acked) = rec.counts();
    let secs = rec.start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { ops as f64 / secs } else { 0.0 };
    let line = format!(
        "zeo-load {secs:6.1}s  ops {ops} ({rate:.0}/s)  failed {failed}  acked {acked}  write p99 {:.1}ms",
        rec.write_p99_ms()
    );
    let mut err = std::io::stderr().lock();
    let _ = if std::io::stderr().is_terminal() {
        write!(err, "\r\x1b[2K{line}{}", if last { "\n" } else { "" })
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}
