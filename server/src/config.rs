//! The zeo-server configuration, resolved from four layers: flags > environment > YAML file > defaults.
//!
//! Every layer goes through the same value parsers (`values`), so a setting means the same thing
//! wherever it is written. Environment variables are read through an injected lookup function rather
//! than by clap, so tests never need `std::env::set_var`. List settings (`--storage`, `--allow`,
//! `--identity`, ...) are replaced whole by a higher layer, never merged item by item.
//!
//! The YAML file uses the flag names as keys, with lists for the repeatable ones:
//!
//! ```yaml
//! listen: 0.0.0.0:8100
//! path: /data/Data.fs
//! blob-dir: /data/blobs
//! storages:                       # more storages, besides "1" from `path`
//!   - {name: archive, path: /data/archive.fs, blob-dir: /data/archive-blobs, read-only: true}
//! transaction-timeout: 30s        # or a number of seconds, or `off`
//! max-frame-bytes: 64MiB
//! admin: 0.0.0.0:8101
//! tls-cert: /tls/server.pem
//! tls-key: /tls/server-key.pem
//! tls-client-ca: /tls/clients-ca.pem
//! allow: [10.0.0.0/8, 192.168.1.7]
//! identities: {app1: rw, reporting: ro}
//! ```
//!
//! `Config::validate` runs before anything binds, so a bad config fails with exit code 64 and a
//! message that names the flag, not later with a socket or TLS error.

mod layers;
mod link;
mod values;
mod zeoconf;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

use layers::{Cli, Layer};
pub use link::LinkTlsFiles;
pub use values::{AccessMode, HostPort};
use values::{ByteSize, Setting};

/// Environment variable naming the YAML config file.
pub const ENV_CONFIG: &str = "ZEO_CONFIG";
/// Environment variable naming runzeo's ZConfig file (`--zeo-conf`, `-C`).
pub const ENV_ZEO_CONF: &str = "ZEO_ZEO_CONF";
pub const ENV_PID_FILE: &str = "ZEO_PID_FILE";
pub const ENV_LOG_FILE: &str = "ZEO_LOG_FILE";
pub const ENV_LOG_LEVEL: &str = "ZEO_LOG_LEVEL";
pub const ENV_LISTEN: &str = "ZEO_LISTEN";
pub const ENV_PATH: &str = "ZEO_PATH";
/// Comma-separated `NAME=FILE` pairs.
pub const ENV_STORAGES: &str = "ZEO_STORAGES";
pub const ENV_BLOB_DIR: &str = "ZEO_BLOB_DIR";
/// Comma-separated `NAME=DIR` pairs.
pub const ENV_STORAGE_BLOB_DIRS: &str = "ZEO_STORAGE_BLOB_DIRS";
pub const ENV_READ_ONLY: &str = "ZEO_READ_ONLY";
/// Comma-separated storage names.
pub const ENV_READ_ONLY_STORAGES: &str = "ZEO_READ_ONLY_STORAGES";
pub const ENV_MSGPACK: &str = "ZEO_MSGPACK";
pub const ENV_CLIENT_CONFLICT_RESOLUTION: &str = "ZEO_CLIENT_CONFLICT_RESOLUTION";
pub const ENV_INVALIDATION_QUEUE_SIZE: &str = "ZEO_INVALIDATION_QUEUE_SIZE";
pub const ENV_TRANSACTION_TIMEOUT: &str = "ZEO_TRANSACTION_TIMEOUT";
pub const ENV_MAX_CONNECTIONS: &str = "ZEO_MAX_CONNECTIONS";
pub const ENV_MAX_FRAME_BYTES: &str = "ZEO_MAX_FRAME_BYTES";
pub const ENV_OUTPUT_BUFFER_BYTES: &str = "ZEO_OUTPUT_BUFFER_BYTES";
// Listener bounds (issue 13 part 4).
pub const ENV_REGISTER_TIMEOUT: &str = "ZEO_REGISTER_TIMEOUT";
pub const ENV_PREAUTH_FRAME_BYTES: &str = "ZEO_PREAUTH_FRAME_BYTES";
pub const ENV_PREAUTH_INPUT_BYTES: &str = "ZEO_PREAUTH_INPUT_BYTES";
/// Comma-separated CIDRs.
pub const ENV_ADMIN_ALLOW: &str = "ZEO_ADMIN_ALLOW";
pub const ENV_REPLICATION_ALLOW: &str = "ZEO_REPLICATION_ALLOW";
pub const ENV_ADMIN_MAX_CONNECTIONS: &str = "ZEO_ADMIN_MAX_CONNECTIONS";
pub const ENV_ADMIN_HEAD_TIMEOUT: &str = "ZEO_ADMIN_HEAD_TIMEOUT";
pub const ENV_ADMIN: &str = "ZEO_ADMIN";
pub const ENV_TLS_CERT: &str = "ZEO_TLS_CERT";
pub const ENV_TLS_KEY: &str = "ZEO_TLS_KEY";
pub const ENV_TLS_CLIENT_CA: &str = "ZEO_TLS_CLIENT_CA";
/// Comma-separated CIDRs.
pub const ENV_ALLOW: &str = "ZEO_ALLOW";
/// Comma-separated `NAME=rw|ro` pairs.
pub const ENV_IDENTITIES: &str = "ZEO_IDENTITIES";
pub const ENV_LOG_FORMAT: &str = "ZEO_LOG_FORMAT";
pub const ENV_SHUTDOWN_GRACE: &str = "ZEO_SHUTDOWN_GRACE";
pub const ENV_READY_FILE: &str = "ZEO_READY_FILE";
pub const ENV_REPLICATION_LISTEN: &str = "ZEO_REPLICATION_LISTEN";
pub const ENV_STANDBY_OF: &str = "ZEO_STANDBY_OF";
pub const ENV_STANDBY_NAME: &str = "ZEO_STANDBY_NAME";
pub const ENV_SYNC_STANDBYS: &str = "ZEO_SYNC_STANDBYS";
pub const ENV_SYNC_TIMEOUT: &str = "ZEO_SYNC_TIMEOUT";
// The replication link's security (issue 13).
pub const ENV_REPLICATION_TLS_CERT: &str = "ZEO_REPLICATION_TLS_CERT";
pub const ENV_REPLICATION_TLS_KEY: &str = "ZEO_REPLICATION_TLS_KEY";
pub const ENV_REPLICATION_TLS_CA: &str = "ZEO_REPLICATION_TLS_CA";
/// Comma-separated identities.
pub const ENV_REPLICATION_PEERS: &str = "ZEO_REPLICATION_PEERS";
pub const ENV_REPLICATION_INSECURE: &str = "ZEO_REPLICATION_INSECURE";
pub const ENV_ADMIN_TOKEN_FILE: &str = "ZEO_ADMIN_TOKEN_FILE";
pub const ENV_WAIT_FOR_SUPERVISOR: &str = "ZEO_WAIT_FOR_SUPERVISOR";
pub const ENV_REQUIRE_WRITE_LEASE: &str = "ZEO_REQUIRE_WRITE_LEASE";
pub const ENV_MAX_WRITE_GRANT: &str = "ZEO_MAX_WRITE_GRANT";

/// The default `--max-write-grant`.
pub const DEFAULT_MAX_WRITE_GRANT: Duration = crate::replication::DEFAULT_MAX_WRITE_GRANT;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8100";
pub const DEFAULT_INVALIDATION_QUEUE_SIZE: usize = 100;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;
pub const DEFAULT_OUTPUT_BUFFER_BYTES: usize = 16 << 20;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
// Listener bounds (issue 13 part 4). A real ClientStorage registers within milliseconds, and its
// `register` is a few hundred bytes; the budget is what 1000 silent-but-buffering peers may hold.
pub const DEFAULT_REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_PREAUTH_FRAME_BYTES: usize = 64 << 10;
pub const DEFAULT_PREAUTH_INPUT_BYTES: usize = 32 << 20;
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 128;
pub const DEFAULT_ADMIN_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer pre-auth or head deadlines would leave silent peers holding slots for nothing.
pub const MAX_PREAUTH_TIMEOUT: Duration = Duration::from_secs(600);
/// Frames smaller than this could not carry ordinary ZEO calls; a smaller limit is a typo.
pub const MIN_FRAME_BYTES: usize = 1 << 10;
/// A longer transaction timeout is almost certainly a unit mistake (milliseconds given as seconds).
pub const MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A longer grace period would outlive any orchestrator's kill timeout.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
/// The longest `--max-write-grant`: a grant is a promise not to be fenced for that long.
pub const MAX_WRITE_GRANT: Duration = Duration::from_secs(600);

/// Why the configuration could not be loaded. The binary exits with `exit_code()` (64, `EX_USAGE`,
/// except for `--help`/`--version`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line did not parse, or asked for `--help`/`--version` (the message is the text).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// An environment variable holds a value that does not parse.
    #[error("{var}={value:?}: {reason}")]
    Env { var: &'static str, value: String, reason: String },
    /// The YAML config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML config file is malformed, has an unknown key or a bad value.
    #[error("config file {}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// A file the server must read at startup (TLS material) cannot be opened.
    #[error("{setting} {}: {source}", path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The settings parse but break a rule; the message names the flag and the rule.
    #[error("{0}")]
    Invalid(String),
    /// The zeo.conf file (`--zeo-conf`) is malformed or asks for something zeo-server does not do;
    /// `location` is `FILE:LINE`.
    #[error("{location}: {message}")]
    ZeoConf { location: String, message: String },
}

impl ConfigError {
    /// 0 for `--help`/`--version` (clap reports them as errors), else 64 (`EX_USAGE`).
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(e) if !e.use_stderr() => 0,
            _ => 64,
        }
    }
}

/// Log output format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogFormat {
    /// The name `telemetry::init` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }
}

/// The default log level (`--log-level`); `RUST_LOG`, when set, overrides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The name an `EnvFilter` directive takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// One served storage: the name clients register with and its FileStorage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    pub name: String,
    pub path: PathBuf,
    pub blob_dir: Option<PathBuf>,
    /// Serve this storage read-only (set for every storage by the server-wide `--read-only`).
    pub read_only: bool,
}

/// PEM files for TLS. All three or none: a ZEO TLS server always requires client certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server certificate's private key (unencrypted PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to: one PEM file (several certificates
    /// allowed) or a directory of PEM files.
    pub client_ca: PathBuf,
}

/// The resolved configuration of a zeo-server process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The YAML file the settings were read from, if any.
    pub config_file: Option<PathBuf>,
    /// The runzeo ZConfig file the settings were read from, if any (`--zeo-conf`).
    pub zeo_conf: Option<PathBuf>,
    /// What the zeo.conf file asked for that changes nothing (`<runner>`, log line formats), to log
    /// at INFO once logging is up.
    pub notes: Vec<String>,
    /// Write the server's pid here once it serves; removed on a clean exit.
    pub pid_file: Option<PathBuf>,
    /// Log to this file (appending) instead of stderr.
    pub log_file: Option<PathBuf>,
    /// The log level when `RUST_LOG` is unset [default: info].
    pub log_level: LogLevel,
    pub listen: HostPort,
    /// Storage "1" (from `--path`) first, then the others in the order given.
    pub storages: Vec<StorageConfig>,
    /// The whole server is read-only (also reflected in every `StorageConfig::read_only`).
    pub read_only: bool,
    /// Announce the msgpack protocol (`M5`) instead of pickle (`Z5`).
    pub msgpack: bool,
    /// runzeo's `client-conflict-resolution`: never merge conflicts on the server (stores go back
    /// to the client, undo of a changed object fails). Off: BTrees and Length conflicts are merged
    /// at vote and undo, as Python's server merges them.
    pub client_conflict_resolution: bool,
    pub invalidation_queue_size: usize,
    /// Abort a transaction holding the commit lock for longer than this; `None` = never.
    pub transaction_timeout: Option<Duration>,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    /// ZEO: accept to `register`, TLS handshake included; silent connections are closed after it.
    pub register_timeout: Duration,
    /// ZEO: the largest frame before `register`.
    pub preauth_frame_bytes: usize,
    /// What all not-yet-authenticated connections together may buffer.
    pub preauth_input_bytes: usize,
    /// Networks allowed on the admin port; `None`: the `--allow` list.
    pub admin_allow: Option<Vec<IpNet>>,
    /// Networks allowed on the replication port; empty: any (mutual TLS decides).
    pub replication_allow: Vec<IpNet>,
    pub admin_max_connections: usize,
    /// Deadline for an admin HTTP request head (also the keep-alive idle limit).
    pub admin_head_timeout: Duration,
    /// Per-connection bound on queued outgoing bytes; a client that reads slower is disconnected.
    pub output_buffer_bytes: usize,
    /// Admin HTTP listener (`/livez`, `/readyz`, `/metrics`, `/status`); `None` = none.
    pub admin: Option<HostPort>,
    pub tls: Option<TlsFiles>,
    /// Client networks allowed to connect; empty = everyone.
    pub allow: Vec<IpNet>,
    /// Client-certificate identity → access mode; when non-empty, unlisted certificates are refused.
    pub identities: BTreeMap<String, AccessMode>,
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight commits before exiting.
    pub shutdown_grace: Duration,
    /// Where to write `{"listen", "admin", "replication"}` addresses as JSON once listening.
    pub ready_file: Option<PathBuf>,
    /// Replication listener for standbys.
    pub replication_listen: Option<HostPort>,
    /// Follow this primary (its replication address, resolved at every reconnect).
    pub standby_of: Option<String>,
    /// This server's name as a standby (default: the host name).
    pub standby_name: String,
    /// Standbys that must acknowledge each commit (0: async).
    pub sync_standbys: usize,
    /// Degrade to async after this long (`None`: strict).
    pub sync_timeout: Option<Duration>,
    /// Mutual TLS on the replication link (`None`: no TLS configured).
    pub replication_tls: Option<LinkTlsFiles>,
    /// The link is plain TCP on purpose (labs only; logged at WARN on every start).
    pub replication_insecure: bool,
    /// Bearer token file for the admin API's POST calls.
    pub admin_token_file: Option<PathBuf>,
    pub wait_for_supervisor: bool,
    /// Acknowledge commits only within the supervisor's write grant (docs/FAILOVER.md).
    pub require_write_lease: bool,
    /// The longest write grant kept.
    pub max_write_grant: Duration,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Converts a byte count to `usize`, naming the flag if it does not fit (32-bit targets).
fn bytes(v: Option<ByteSize>, default: usize, flag: &str) -> Result<usize, ConfigError> {
    v.map_or(Ok(default), |ByteSize(n)| usize::try_from(n).map_err(|_| invalid(format!("{flag} {n} is too large"))))
}

/// Storage "1" from `path`/`blob_dir`, then the listed storages, with the per-name overrides applied.
fn resolve_storages(l: &mut Layer, read_only: bool) -> Result<Vec<StorageConfig>, ConfigError> {
    let mut out = Vec::new();
    match (l.path.take(), l.blob_dir.take()) {
        (Some(path), blob_dir) => out.push(StorageConfig { name: "1".into(), path, blob_dir, read_only: false }),
        (None, Some(_)) => return Err(invalid("--blob-dir needs --path (it is the blob directory of storage \"1\")")),
        (None, None) => {}
    }
    for e in l.storages.take().unwrap_or_default() {
        out.push(StorageConfig { name: e.name, path: e.path, blob_dir: e.blob_dir, read_only: e.read_only });
    }
    fn named<'a>(out: &'a mut [StorageConfig], name: &str, flag: &str) -> Result<&'a mut StorageConfig, ConfigError> {
        out.iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| invalid(format!("{flag} names storage {name:?}, which is not configured")))
    }
    for (name, dir) in l.storage_blob_dirs.take().unwrap_or_default() {
        named(&mut out, &name, "--storage-blob-dir")?.blob_dir = Some(dir);
    }
    for name in l.read_only_storages.take().unwrap_or_default() {
        named(&mut out, &name, "--read-only-storage")?.read_only = true;
    }
    for s in &mut out {
        s.read_only |= read_only;
    }
    Ok(out)
}

impl Config {
    /// Loads the configuration from the process's arguments, environment and config file, and
    /// validates it.
    ///
    /// # Errors
    /// Any `ConfigError`; the binary prints it and exits with `exit_code()`.
    pub fn load() -> Result<Config, ConfigError> {
        Config::from_sources(std::env::args_os(), &|var| std::env::var(var).ok())
    }

    /// Like `load`, with the arguments (including the program name) and the environment injected.
    ///
    /// # Errors
    /// Any `ConfigError`.
    pub fn from_sources<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let config_file = match cli.config.clone() {
            Some(path) => Some(path),
            None => env(ENV_CONFIG).filter(|v| !v.trim().is_empty()).map(PathBuf::from),
        };
        let zeo_conf = match cli.zeo_conf.clone() {
            Some(path) => Some(path),
            None => env(ENV_ZEO_CONF).filter(|v| !v.trim().is_empty()).map(PathBuf::from),
        };
        // Both files fill the same layer (below the environment); mixing them would leave the
        // operator guessing which one won.
        let (file_layer, notes) = match (&config_file, &zeo_conf) {
            (Some(_), Some(_)) => {
                return Err(invalid("--config (YAML) and --zeo-conf (runzeo's zeo.conf) exclude each other: give one"));
            }
            (Some(path), None) => (Layer::from_yaml_file(path)?, Vec::new()),
            (None, Some(path)) => {
                let z = zeoconf::load(path, env)?;
                (z.layer, z.notes)
            }
            (None, None) => (Layer::default(), Vec::new()),
        };
        let layer = Layer::from(cli).over(Layer::from_env(env)?.over(file_layer));
        let mut config = Config::resolve(layer, config_file)?;
        config.zeo_conf = zeo_conf;
        config.notes = notes;
        config.validate()?;
        Ok(config)
    }

    /// Applies the defaults and the per-storage overrides.
    fn resolve(mut l: Layer, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
        let read_only = l.read_only.unwrap_or(false);
        let storages = resolve_storages(&mut l, read_only)?;
        let replication_tls = link::resolve(&mut l)?;
        let tls = match (l.tls_cert, l.tls_key, l.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles { cert, key, client_ca }),
            (cert, key, client_ca) => {
                let set = [
                    ("--tls-cert", cert.is_some()),
                    ("--tls-key", key.is_some()),
                    ("--tls-client-ca", client_ca.is_some()),
                ];
                // Some are set and some are not, so both searches find one.
                let given = set.iter().find(|(_, is_set)| *is_set).map_or("", |(flag, _)| flag);
                let missing = set.iter().find(|(_, is_set)| !*is_set).map_or("", |(flag, _)| flag);
                let why = if missing == "--tls-client-ca" {
                    " (a ZEO TLS server always requires client certificates)"
                } else {
                    ""
                };
                return Err(invalid(format!("{missing} is required with {given}{why}")));
            }
        };
        // The pre-auth defaults follow the explicit caps they must fit: never above the full frame
        // cap, and a budget that holds at least one pre-auth frame.
        let max_frame_bytes = bytes(l.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES, "--max-frame-bytes")?;
        let preauth_frame_default = DEFAULT_PREAUTH_FRAME_BYTES.min(max_frame_bytes);
        let preauth_frame_bytes = bytes(l.preauth_frame_bytes, preauth_frame_default, "--preauth-frame-bytes")?;
        let preauth_input_default = DEFAULT_PREAUTH_INPUT_BYTES.max(preauth_frame_bytes);
        let listen = match l.listen {
            Some(hp) => hp,
            // The default is a valid literal.
            None => HostPort::parse(DEFAULT_LISTEN).map_err(invalid)?,
        };
        Ok(Config {
            config_file,
            zeo_conf: None,
            notes: Vec::new(),
            pid_file: l.pid_file,
            log_file: l.log_file,
            log_level: l.log_level.unwrap_or(LogLevel::Info),
            listen,
            storages,
            read_only,
            msgpack: l.msgpack.unwrap_or(false),
            client_conflict_resolution: l.client_conflict_resolution.unwrap_or(false),
            invalidation_queue_size: l.invalidation_queue_size.unwrap_or(DEFAULT_INVALIDATION_QUEUE_SIZE),
            transaction_timeout: l.transaction_timeout.and_then(|t| t.0).map(|s| s.0),
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_frame_bytes,
            register_timeout: l.register_timeout.map_or(DEFAULT_REGISTER_TIMEOUT, |s| s.0),
            preauth_frame_bytes,
            preauth_input_bytes: bytes(l.preauth_input_bytes, preauth_input_default, "--preauth-input-bytes")?,
            admin_allow: l.admin_allow.map(|v| v.into_iter().map(|c| c.0).collect()),
            replication_allow: l.replication_allow.unwrap_or_default().into_iter().map(|c| c.0).collect(),
            admin_max_connections: l.admin_max_connections.unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
            admin_head_timeout: l.admin_head_timeout.map_or(DEFAULT_ADMIN_HEAD_TIMEOUT, |s| s.0),
            output_buffer_bytes: bytes(l.output_buffer_bytes, DEFAULT_OUTPUT_BUFFER_BYTES, "--output-buffer-bytes")?,
            admin: l.admin.and_then(|t| t.0),
            tls,
            allow: l.allow.unwrap_or_default().into_iter().map(|c| c.0).collect(),
            identities: l.identities.unwrap_or_default(),
            log_format: l.log_format.unwrap_or(LogFormat::Plain),
            shutdown_grace: l.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |s| s.0),
            ready_file: l.ready_file,
            replication_listen: l.replication_listen,
            standby_of: l.standby_of,
            standby_name: l.standby_name.unwrap_or_else(default_name),
            sync_standbys: l.sync_standbys.unwrap_or(0),
            sync_timeout: l.sync_timeout.map(|s| s.0),
            replication_tls,
            replication_insecure: l.replication_insecure.unwrap_or(false),
            admin_token_file: l.admin_token_file,
            wait_for_supervisor: l.wait_for_supervisor.unwrap_or(false),
            // A server that waits for a supervisor to promote it writes only within that supervisor's
            // grants: a dead or stalled supervisor must never leave it writable.
            require_write_lease: l.require_write_lease.unwrap_or(false) || l.wait_for_supervisor.unwrap_or(false),
            max_write_grant: l.max_write_grant.map_or(DEFAULT_MAX_WRITE_GRANT, |s| s.0),
        })
    }

    /// Checks the rules that parsing alone cannot. Runs before anything binds.
    ///
    /// # Errors
    /// `ConfigError::Invalid` naming the flag and the rule, or `Unreadable` for TLS files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.storages.is_empty() {
            return Err(invalid("no storage configured: give --path FILE or --storage NAME=FILE"));
        }
        let (mut names, mut paths) = (BTreeSet::new(), BTreeSet::new());
        for s in &self.storages {
            let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
            if s.name.is_empty() || !s.name.chars().all(ok) {
                return Err(invalid(format!("storage name {:?} must be letters, digits, '_', '-' or '.'", s.name)));
            }
            if !names.insert(&s.name) {
                return Err(invalid(format!("storage {:?} is configured twice (--path is storage \"1\")", s.name)));
            }
            if !paths.insert(&s.path) {
                return Err(invalid(format!("file {} is used by two storages", s.path.display())));
            }
        }
        if self.invalidation_queue_size < 1 {
            return Err(invalid("--invalidation-queue-size must be at least 1"));
        }
        if self.max_connections < 1 {
            return Err(invalid("--max-connections must be at least 1"));
        }
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return Err(invalid(format!("--max-frame-bytes must be at least {MIN_FRAME_BYTES} (1KiB)")));
        }
        self.validate_listener_bounds()?;
        if self.output_buffer_bytes < MIN_FRAME_BYTES {
            return Err(invalid(format!("--output-buffer-bytes must be at least {MIN_FRAME_BYTES} (1KiB)")));
        }
        if let Some(t) = self.transaction_timeout {
            if t.is_zero() {
                return Err(invalid("--transaction-timeout must be positive (use \"off\" to disable it)"));
            }
            if t > MAX_TRANSACTION_TIMEOUT {
                return Err(invalid("--transaction-timeout must be at most 24h"));
            }
        }
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return Err(invalid("--shutdown-grace must be at most 1h"));
        }
        if let Some(admin) = &self.admin
            && admin.port != 0
            && *admin == self.listen
        {
            return Err(invalid(format!("--admin and --listen are both {admin}")));
        }
        if self.sync_timeout.is_some() && self.sync_standbys == 0 {
            return Err(invalid("--sync-timeout needs --sync-standbys K (K > 0): it bounds the wait for standbys"));
        }
        if self.sync_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid("--sync-timeout must be positive (leave it out for strict sync mode)"));
        }
        if self.max_write_grant.is_zero() || self.max_write_grant > MAX_WRITE_GRANT {
            return Err(invalid("--max-write-grant must be positive and at most 10m"));
        }
        // Name the setting the operator gave: --wait-for-supervisor implies the write lease.
        let lease_setting = if self.wait_for_supervisor {
            "--wait-for-supervisor (it implies --require-write-lease)"
        } else {
            "--require-write-lease"
        };
        if self.require_write_lease && self.admin_token_file.is_none() {
            return Err(invalid(format!(
                "{lease_setting} needs --admin-token-file: grants come through the admin API, which is off without a token"
            )));
        }
        if self.require_write_lease && self.admin.is_none() {
            return Err(invalid(format!("{lease_setting} needs --admin HOST:PORT: grants come through the admin API")));
        }
        if self.standby_name.is_empty() || self.standby_name.len() > 255 {
            return Err(invalid("--standby-name must be 1 to 255 characters"));
        }
        if let Some(path) = &self.admin_token_file {
            readable("--admin-token-file", path)?;
            let token = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                setting: "--admin-token-file",
                path: path.clone(),
                source,
            })?;
            if token.trim().len() < 16 {
                return Err(invalid("--admin-token-file must hold a token of at least 16 characters"));
            }
        }
        if let Some(r) = &self.replication_listen
            && r.port != 0
            && (*r == self.listen || Some(r) == self.admin.as_ref())
        {
            return Err(invalid(format!("--replication-listen {r} is also used by --listen or --admin")));
        }
        for (flag, file) in [("--pid-file", &self.pid_file), ("--log-file", &self.log_file)] {
            if let Some(file) = file {
                let dir = parent_dir(file);
                if !dir.is_dir() {
                    return Err(invalid(format!(
                        "{flag} {}: directory {} does not exist",
                        file.display(),
                        dir.display()
                    )));
                }
            }
        }
        let replicates = self.replication_listen.is_some() || self.standby_of.is_some();
        link::validate(replicates, self.replication_tls.as_ref(), self.replication_insecure)?;
        match &self.tls {
            Some(tls) => {
                readable("--tls-cert", &tls.cert)?;
                readable("--tls-key", &tls.key)?;
                readable("--tls-client-ca", &tls.client_ca)?;
            }
            None if !self.identities.is_empty() => {
                return Err(invalid(
                    "--identity needs TLS (--tls-cert, --tls-key, --tls-client-ca): identities come from client certificates",
                ));
            }
            None => {}
        }
        Ok(())
    }

    /// The listener bounds: positive deadlines below `MAX_PREAUTH_TIMEOUT`, a pre-auth frame cap
    /// between 1 KiB and the full frame cap, a budget that holds at least one pre-auth frame.
    fn validate_listener_bounds(&self) -> Result<(), ConfigError> {
        for (flag, t) in
            [("--register-timeout", self.register_timeout), ("--admin-head-timeout", self.admin_head_timeout)]
        {
            if t.is_zero() || t > MAX_PREAUTH_TIMEOUT {
                return Err(invalid(format!("{flag} must be positive and at most 10m")));
            }
        }
        if self.preauth_frame_bytes < MIN_FRAME_BYTES || self.preauth_frame_bytes > self.max_frame_bytes {
            return Err(invalid("--preauth-frame-bytes must be at least 1KiB and at most --max-frame-bytes"));
        }
        if self.preauth_input_bytes < self.preauth_frame_bytes {
            return Err(invalid("--preauth-input-bytes must be at least --preauth-frame-bytes"));
        }
        if self.admin_max_connections < 1 {
            return Err(invalid("--admin-max-connections must be at least 1"));
        }
        Ok(())
    }

    /// One line describing the effective configuration for the startup log. File contents are never
    /// included (only paths), so nothing secret is logged.
    pub fn redacted_summary(&self) -> String {
        let storages: Vec<String> = self
            .storages
            .iter()
            .map(|s| {
                let blobs = s.blob_dir.as_ref().map(|d| format!(" blobs={}", d.display())).unwrap_or_default();
                format!("{}={}{}{}", s.name, s.path.display(), blobs, if s.read_only { " ro" } else { "" })
            })
            .collect();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "off".into());
        let tls = self.tls.as_ref().map(|t| format!("cert={} client-ca={}", t.cert.display(), t.client_ca.display()));
        let allow = if self.allow.is_empty() {
            "everyone".to_owned()
        } else {
            self.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        let identities: Vec<String> = self.identities.iter().map(|(n, r)| format!("{n}={r}")).collect();
        format!(
            "listen={} storages=[{}] read-only={} protocol={} client-conflict-resolution={} admin={} tls={} allow={} identities=[{}] \
             invalidation-queue-size={} transaction-timeout={} max-connections={} max-frame-bytes={} \
             output-buffer-bytes={} register-timeout={} preauth-frame-bytes={} preauth-input-bytes={} \
             admin-allow={} admin-max-connections={} admin-head-timeout={} shutdown-grace={} config-file={} \
             replication-listen={} standby-of={} standby-name={} sync-standbys={} sync-timeout={} replication-link={} replication-allow={} \
             admin-token-file={} wait-for-supervisor={} require-write-lease={} max-write-grant={} zeo-conf={} pid-file={} \
             log-file={} log-level={}",
            self.listen,
            storages.join(", "),
            self.read_only,
            if self.msgpack { "M5" } else { "Z5" },
            self.client_conflict_resolution,
            opt(self.admin.as_ref().map(ToString::to_string)),
            opt(tls),
            allow,
            identities.join(","),
            self.invalidation_queue_size,
            opt(self.transaction_timeout.map(|t| humantime::format_duration(t).to_string())),
            self.max_connections,
            self.max_frame_bytes,
            self.output_buffer_bytes,
            humantime::format_duration(self.register_timeout),
            self.preauth_frame_bytes,
            self.preauth_input_bytes,
            self.admin_allow.as_ref().map_or_else(
                || "as --allow".to_owned(),
                |nets| nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            ),
            self.admin_max_connections,
            humantime::format_duration(self.admin_head_timeout),
            humantime::format_duration(self.shutdown_grace),
            opt(self.config_file.as_ref().map(|p| p.display().to_string())),
            opt(self.replication_listen.as_ref().map(ToString::to_string)),
            opt(self.standby_of.clone()),
            self.standby_name,
            self.sync_standbys,
            opt(self.sync_timeout.map(|t| humantime::format_duration(t).to_string())),
            match (&self.replication_tls, self.replication_insecure) {
                (Some(t), _) =>
                    format!("tls(cert={} ca={} peers={})", t.cert.display(), t.ca.display(), t.peers.join(",")),
                (None, true) => "insecure".to_owned(),
                (None, false) => "off".to_owned(),
            },
            if self.replication_allow.is_empty() {
                "any".to_owned()
            } else {
                self.replication_allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            },
            opt(self.admin_token_file.as_ref().map(|p| p.display().to_string())),
            self.wait_for_supervisor,
            self.require_write_lease,
            humantime::format_duration(self.max_write_grant),
            opt(self.zeo_conf.as_ref().map(|p| p.display().to_string())),
            opt(self.pid_file.as_ref().map(|p| p.display().to_string())),
            opt(self.log_file.as_ref().map(|p| p.display().to_string())),
            self.log_level.as_str(),
        )
    }
}

/// The directory a file is in (`.` for a bare file name).
fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The host name (for `--standby-name`), or "zeo-server" when it cannot be read.
fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "zeo-server".into())
}

/// Fails early, with the flag's name, if a startup file (or directory) cannot be opened.
fn readable(setting: &'static str, path: &Path) -> Result<(), ConfigError> {
    let unreadable = |source| ConfigError::Unreadable { setting, path: path.to_owned(), source };
    if path.is_dir() {
        std::fs::read_dir(path).map(drop).map_err(unreadable)
    } else {
        std::fs::File::open(path).map(drop).map_err(unreadable)
    }
}

#[cfg(test)]
mod tests;
