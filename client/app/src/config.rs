//! The command line, with an environment variable (`ZEO_APP_*`) behind every flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use zeo_client::{ClientOptions, RetryPolicy};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Plain,
}

/// zeo-app: a wiki, counters and a key-value API whose whole state lives in a ZEO storage.
/// Run several replicas against one storage; each sees the others' writes on its next request.
#[derive(Debug, Clone, Parser)]
#[command(name = "zeo-app", version)]
pub struct Config {
    /// HTTP address to listen on (port 0 picks a free port; see --ready-file).
    #[arg(long, env = "ZEO_APP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// ZEO server addresses (`host:port`, comma-separated); a writable one is preferred.
    #[arg(long, env = "ZEO_APP_STORAGE", value_delimiter = ',', required = true)]
    pub storage: Vec<String>,
    /// The storage name to register for.
    #[arg(long, env = "ZEO_APP_STORAGE_NAME", default_value = "1")]
    pub storage_name: String,
    /// Once listening, write `{"listen": "host:port"}` to this file (written atomically).
    #[arg(long, env = "ZEO_APP_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "ZEO_APP_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Budget of the client's object cache, in MiB.
    #[arg(long, env = "ZEO_APP_CACHE_MB", default_value_t = 64)]
    pub cache_mb: usize,
    /// Longest time a request may take; past it the answer is 503 (a write may still commit).
    #[arg(long, env = "ZEO_APP_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Deadline of each call to the storage server (including waiting for a reconnection).
    #[arg(long, env = "ZEO_APP_STORAGE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub storage_timeout: Duration,
    /// Attempts per request transaction: conflicts (the hot counter) and disconnections are
    /// retried with jittered exponential backoff.
    #[arg(long, env = "ZEO_APP_RETRY_ATTEMPTS", default_value_t = 10)]
    pub retry_attempts: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ZEO_APP_MAX_BODY", default_value_t = 256 * 1024)]
    pub max_body: usize,
    /// While the storage is unreachable (or read-only) for less than this, `/readyz` stays 200
    /// and requests needing the storage get 503 with `Retry-After: 1`; past it `/readyz` fails.
    /// It rides out a failover without taking every replica out of the Service; 0s: not ready
    /// at once.
    #[arg(long, env = "ZEO_APP_READY_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub ready_grace: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "ZEO_APP_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "5s")]
    pub shutdown_grace: Duration,
}

impl Config {
    /// Checks the rules clap cannot express.
    ///
    /// # Errors
    ///
    /// A message naming the first rule broken.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.storage.iter().any(String::is_empty), "--storage addresses must not be empty");
        anyhow::ensure!(!self.request_timeout.is_zero(), "--request-timeout must be > 0");
        anyhow::ensure!(!self.storage_timeout.is_zero(), "--storage-timeout must be > 0");
        anyhow::ensure!(self.retry_attempts >= 1, "--retry-attempts must be >= 1");
        anyhow::ensure!(self.max_body >= 1024, "--max-body must be at least 1024 bytes");
        self.client_options().validate()?;
        Ok(())
    }

    /// The storage client's options.
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.storage.clone());
        o.storage = self.storage_name.clone();
        o.call_timeout = self.storage_timeout;
        o.wait_timeout = self.storage_timeout;
        o.connect_timeout = self.storage_timeout.min(Duration::from_secs(5));
        o.reconnect_max = Duration::from_secs(2);
        o.heartbeat_interval = Duration::from_secs(2);
        o.heartbeat_timeout = Duration::from_secs(5);
        o.cache_bytes = self.cache_mb << 20;
        o.retry = RetryPolicy {
            attempts: self.retry_attempts,
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
        };
        o
    }
}
