//! The command line, with an environment variable (`ZEO_LOAD_*`) behind every flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

/// Longest run accepted: the tool always stops by itself.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// zeo-load: drives zeo-app over HTTP (`--target`) or a ZEO storage directly (`--storage`)
/// for a bounded time, and reports throughput, latency and errors. With `--verify`, checks at
/// the end that every acknowledged write is there.
#[derive(Debug, Clone, Parser)]
#[command(name = "zeo-load", version, group(ArgGroup::new("against").required(true).args(["target", "storage"])))]
pub struct Config {
    /// Base URL of a zeo-app (`http://host:port`); writes go to its key-value API.
    #[arg(long, env = "ZEO_LOAD_TARGET")]
    pub target: Option<String>,
    /// ZEO server addresses (`host:port`, comma-separated); writes are objects stored directly.
    #[arg(long, env = "ZEO_LOAD_STORAGE", value_delimiter = ',')]
    pub storage: Option<Vec<String>>,
    /// How long to send requests (then in-flight ones finish, and verification runs).
    #[arg(long, env = "ZEO_LOAD_DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Operations per second over all workers; 0 sends as fast as the workers can.
    #[arg(long, env = "ZEO_LOAD_RATE", default_value_t = 0)]
    pub rate: u32,
    /// Operations in flight at once.
    #[arg(long, env = "ZEO_LOAD_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Fraction of operations that are writes (0.0 to 1.0); the rest are reads.
    #[arg(long, env = "ZEO_LOAD_WRITE_RATIO", default_value_t = 0.2)]
    pub write_ratio: f64,
    /// Distinct objects (keys) read and overwritten, without --verify.
    #[arg(long, env = "ZEO_LOAD_OBJECTS", default_value_t = 100)]
    pub objects: usize,
    /// Payload bytes per written object.
    #[arg(long, env = "ZEO_LOAD_SIZE", default_value_t = 128)]
    pub size: usize,
    /// Every write gets a fresh key and a unique id; at the end every acknowledged write is
    /// read back. Exit status 3 if any is lost or cannot be checked.
    #[arg(long, env = "ZEO_LOAD_VERIFY")]
    pub verify: bool,
    /// Deadline of one operation.
    #[arg(long, env = "ZEO_LOAD_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// `--storage`: a connection that brings no bytes for this long is dropped and a new one made
    /// (heartbeat pings every quarter of it). What a client notices a vanished server host by.
    #[arg(long, env = "ZEO_LOAD_DEAD_AFTER", value_parser = humantime::parse_duration, default_value = "4s")]
    pub dead_after: Duration,
    /// How long the final read-back may take, retries included.
    #[arg(long, env = "ZEO_LOAD_VERIFY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub verify_timeout: Duration,
    /// Write the report as JSON to this file too.
    #[arg(long, env = "ZEO_LOAD_JSON")]
    pub json: Option<PathBuf>,
    /// Key prefix (default: random), so that runs do not see each other's keys.
    #[arg(long, env = "ZEO_LOAD_PREFIX")]
    pub prefix: Option<String>,
    /// How often the progress line on stderr is updated.
    #[arg(long, env = "ZEO_LOAD_PROGRESS_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub progress_interval: Duration,
}

impl Config {
    /// Checks the rules clap cannot express.
    ///
    /// # Errors
    ///
    /// A message naming the first rule broken.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.duration.is_zero() && self.duration <= MAX_DURATION, "--duration must be in (0, 24h]");
        anyhow::ensure!((1..=10_000).contains(&self.concurrency), "--concurrency must be 1..=10000");
        anyhow::ensure!((0.0..=1.0).contains(&self.write_ratio), "--write-ratio must be within 0.0..=1.0");
        anyhow::ensure!(self.objects >= 1, "--objects must be >= 1");
        anyhow::ensure!(self.size <= 1 << 20, "--size must be at most 1 MiB");
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout must be > 0");
        anyhow::ensure!(!self.progress_interval.is_zero(), "--progress-interval must be > 0");
        if let Some(t) = &self.target {
            anyhow::ensure!(t.starts_with("http://"), "--target must be an http:// URL");
        }
        if let Some(p) = &self.prefix {
            anyhow::ensure!(
                !p.is_empty() && p.len() <= 64 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "--prefix must be 1 to 64 letters, digits, '-' or '_'"
            );
        }
        Ok(())
    }
}
