//! The configuration layers: the command line (clap), the environment and the YAML file each become a
//! `Layer` of optional settings; `Layer::over` stacks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use super::values::{self, ByteSize, Cidr, Seconds, Setting, Toggle};
use super::*;

const ENV_HELP: &str = "Environment variables (below flags, above the YAML file or zeo.conf): ZEO_CONFIG, ZEO_ZEO_CONF, \
ZEO_PID_FILE, ZEO_LOG_FILE, ZEO_LOG_LEVEL, ZEO_LISTEN, ZEO_PATH, \
ZEO_STORAGES (NAME=FILE,...), ZEO_BLOB_DIR, ZEO_STORAGE_BLOB_DIRS (NAME=DIR,...), ZEO_READ_ONLY, \
ZEO_READ_ONLY_STORAGES (NAME,...), ZEO_MSGPACK, ZEO_CLIENT_CONFLICT_RESOLUTION, ZEO_INVALIDATION_QUEUE_SIZE, \
ZEO_TRANSACTION_TIMEOUT, ZEO_MAX_CONNECTIONS, ZEO_MAX_FRAME_BYTES, ZEO_OUTPUT_BUFFER_BYTES, ZEO_REGISTER_TIMEOUT, \
ZEO_PREAUTH_FRAME_BYTES, ZEO_PREAUTH_INPUT_BYTES, ZEO_ADMIN_ALLOW (CIDR,...), ZEO_ADMIN_MAX_CONNECTIONS, \
ZEO_ADMIN_HEAD_TIMEOUT, ZEO_ADMIN, ZEO_TLS_CERT, ZEO_TLS_KEY, \
ZEO_TLS_CLIENT_CA, ZEO_ALLOW (CIDR,...), ZEO_IDENTITIES (NAME=rw|ro,...), ZEO_LOG_FORMAT, ZEO_SHUTDOWN_GRACE, \
ZEO_READY_FILE, ZEO_REPLICATION_LISTEN, ZEO_STANDBY_OF, ZEO_STANDBY_NAME, ZEO_SYNC_STANDBYS, ZEO_SYNC_TIMEOUT, \
ZEO_REPLICATION_ALLOW (CIDR,...), ZEO_REPLICATION_TLS_CERT, ZEO_REPLICATION_TLS_KEY, ZEO_REPLICATION_TLS_CA, \
ZEO_REPLICATION_PEERS (NAME,...), ZEO_REPLICATION_INSECURE, ZEO_ADMIN_TOKEN_FILE, ZEO_WAIT_FOR_SUPERVISOR, ZEO_REQUIRE_WRITE_LEASE, ZEO_MAX_WRITE_GRANT. Durations: 30s, 1m, or seconds; sizes: bytes or KiB/MiB/GiB.";

/// The command line. Every setting is optional here so that lower layers can fill it in.
#[derive(Debug, Parser)]
#[command(name = "zeo-server", version, about = "Serve ZODB FileStorages over the ZEO 5 protocol", after_help = ENV_HELP)]
pub(super) struct Cli {
    /// YAML config file; its keys are the flag names.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// runzeo's ZConfig file (zeo.conf), read as runzeo reads it; flags and environment override it.
    #[arg(short = 'C', long = "zeo-conf", value_name = "FILE")]
    pub(super) zeo_conf: Option<PathBuf>,
    /// Write the server's pid here once it serves (removed on a clean exit).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Log to this file (appending) instead of stderr.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Log level when RUST_LOG is unset [default: info].
    #[arg(long, value_name = "error|warn|info|debug|trace", value_parser = LogLevel::parse)]
    log_level: Option<LogLevel>,
    /// Address to listen on for ZEO clients [default: 127.0.0.1:8100].
    #[arg(long, value_name = "HOST:PORT", value_parser = HostPort::parse)]
    listen: Option<HostPort>,
    /// FileStorage served as storage "1".
    #[arg(long, value_name = "FILE")]
    path: Option<PathBuf>,
    /// Another named storage (repeatable).
    #[arg(long = "storage", value_name = "NAME=FILE", value_parser = values::parse_named_path)]
    storages: Vec<(String, PathBuf)>,
    /// Blob directory of storage "1".
    #[arg(long, value_name = "DIR")]
    blob_dir: Option<PathBuf>,
    /// Blob directory of a named storage (repeatable).
    #[arg(long = "storage-blob-dir", value_name = "NAME=DIR", value_parser = values::parse_named_path)]
    storage_blob_dirs: Vec<(String, PathBuf)>,
    /// Serve every storage read-only.
    #[arg(long)]
    read_only: bool,
    /// Serve one storage read-only (repeatable).
    #[arg(long = "read-only-storage", value_name = "NAME")]
    read_only_storages: Vec<String>,
    /// Announce msgpack (M5) instead of pickle (Z5).
    #[arg(long)]
    msgpack: bool,
    /// Leave every write conflict to the client, as runzeo's client-conflict-resolution (default: the server
    /// merges BTrees and Length conflicts at vote and undo).
    #[arg(long)]
    client_conflict_resolution: bool,
    /// Invalidations kept for reconnecting clients [default: 100].
    #[arg(long, value_name = "N", value_parser = values::parse_count)]
    invalidation_queue_size: Option<usize>,
    /// Abort transactions holding the commit lock longer than this ("off" = never) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = Toggle::<Seconds>::parse)]
    transaction_timeout: Option<Toggle<Seconds>>,
    /// Maximum simultaneous client connections [default: 1000].
    #[arg(long, value_name = "N", value_parser = values::parse_count)]
    max_connections: Option<usize>,
    /// Largest frame accepted from a client [default: 64MiB].
    #[arg(long, value_name = "BYTES", value_parser = ByteSize::parse)]
    max_frame_bytes: Option<ByteSize>,
    /// Close ZEO connections that have not called register this long after connecting [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = Seconds::parse)]
    register_timeout: Option<Seconds>,
    /// Largest frame accepted before register [default: 64KiB].
    #[arg(long, value_name = "BYTES", value_parser = ByteSize::parse)]
    preauth_frame_bytes: Option<ByteSize>,
    /// Total input buffered for connections not yet registered; past it they are closed [default: 32MiB].
    #[arg(long, value_name = "BYTES", value_parser = ByteSize::parse)]
    preauth_input_bytes: Option<ByteSize>,
    /// Allowed network on the admin port (repeatable) [default: the --allow list].
    #[arg(long = "admin-allow", value_name = "CIDR", value_parser = Cidr::parse)]
    admin_allow: Vec<Cidr>,
    /// Allowed network on the replication port (repeatable) [default: any address; mutual TLS
    /// decides who gets in]. Outside it, a connection is closed at accept, before TLS.
    #[arg(long = "replication-allow", value_name = "CIDR", value_parser = Cidr::parse)]
    replication_allow: Vec<Cidr>,
    /// Maximum simultaneous admin HTTP connections [default: 128].
    #[arg(long, value_name = "N", value_parser = values::parse_count)]
    admin_max_connections: Option<usize>,
    /// Close admin HTTP connections whose request head takes longer than this [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = Seconds::parse)]
    admin_head_timeout: Option<Seconds>,
    /// Per-connection bound on queued outgoing bytes; slower readers are disconnected [default: 16MiB].
    #[arg(long, value_name = "BYTES", value_parser = ByteSize::parse)]
    output_buffer_bytes: Option<ByteSize>,
    /// Admin HTTP address (/livez, /readyz, /metrics, /status) ("off" = none) [default: off].
    #[arg(long, value_name = "HOST:PORT", value_parser = Toggle::<HostPort>::parse)]
    admin: Option<Toggle<HostPort>>,
    /// Server certificate chain (PEM); TLS needs --tls-key and --tls-client-ca too.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM file or directory) that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Allowed client network (repeatable) [default: everyone].
    #[arg(long = "allow", value_name = "CIDR", value_parser = Cidr::parse)]
    allow: Vec<Cidr>,
    /// Client-certificate identity (CN or DNS name) and its role (repeatable); others are refused.
    #[arg(long = "identity", value_name = "NAME=rw|ro", value_parser = values::parse_identity)]
    identities: Vec<(String, AccessMode)>,
    /// Log format [default: plain].
    #[arg(long, value_name = "json|plain", value_parser = LogFormat::parse)]
    log_format: Option<LogFormat>,
    /// How long SIGTERM waits for in-flight commits [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = Seconds::parse)]
    shutdown_grace: Option<Seconds>,
    /// Write {"listen": ..., "admin": ...} as JSON here once listening.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Accept standbys on this address (replication stream) [default: off].
    #[arg(long, value_name = "HOST:PORT", value_parser = HostPort::parse)]
    replication_listen: Option<HostPort>,
    /// Be a standby of the primary whose replication listener is at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = values::parse_peer)]
    standby_of: Option<String>,
    /// This server's name as its primary reports it [default: the host name].
    #[arg(long, value_name = "NAME")]
    standby_name: Option<String>,
    /// Standbys that must have a commit before it is acknowledged (0: async) [default: 0].
    #[arg(long, value_name = "K", value_parser = values::parse_count)]
    sync_standbys: Option<usize>,
    /// Degrade to async after waiting this long for standbys (absent: wait forever, strict).
    #[arg(long, value_name = "DURATION", value_parser = Seconds::parse)]
    sync_timeout: Option<Seconds>,
    /// This member's certificate chain on the replication link (PEM); needs --replication-tls-key,
    /// --replication-tls-ca and --replication-peers too.
    #[arg(long, value_name = "FILE")]
    replication_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    replication_tls_key: Option<PathBuf>,
    /// CA certificates (PEM file or directory) every link peer's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    replication_tls_ca: Option<PathBuf>,
    /// Identities (certificate CN or DNS name) allowed on the replication link, comma-separated.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    replication_peers: Vec<String>,
    /// Run the replication link as plain TCP, unauthenticated (labs only: anyone who reaches it can
    /// read the database).
    #[arg(long)]
    replication_insecure: bool,
    /// File holding the bearer token for POST /promote, /demote and /rejoin.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Start read-only until promoted or told to rejoin, even if last a primary (HA deployments).
    #[arg(long)]
    wait_for_supervisor: bool,
    /// Acknowledge commits only within a write grant from the supervisor (POST /write-lease); at
    /// its deadline, demote (HA deployments: without it, a stalled supervisor cannot fence this server).
    #[arg(long)]
    require_write_lease: bool,
    /// The longest write grant kept, whatever the supervisor asks for [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = Seconds::parse)]
    max_write_grant: Option<Seconds>,
}

/// A YAML `storages:` entry (and what `--storage NAME=FILE` becomes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct StorageEntry {
    pub(super) name: String,
    pub(super) path: PathBuf,
    #[serde(default)]
    pub(super) blob_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) read_only: bool,
}

/// One layer's settings, all optional. The YAML file deserializes straight into it; the command line
/// and the environment are converted into it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Layer {
    pub(super) listen: Option<HostPort>,
    pub(super) path: Option<PathBuf>,
    pub(super) blob_dir: Option<PathBuf>,
    pub(super) storages: Option<Vec<StorageEntry>>,
    #[serde(skip)]
    pub(super) storage_blob_dirs: Option<Vec<(String, PathBuf)>>,
    pub(super) read_only: Option<bool>,
    #[serde(skip)]
    pub(super) read_only_storages: Option<Vec<String>>,
    pub(super) msgpack: Option<bool>,
    pub(super) client_conflict_resolution: Option<bool>,
    pub(super) invalidation_queue_size: Option<usize>,
    pub(super) transaction_timeout: Option<Toggle<Seconds>>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_frame_bytes: Option<ByteSize>,
    pub(super) register_timeout: Option<Seconds>,
    pub(super) preauth_frame_bytes: Option<ByteSize>,
    pub(super) preauth_input_bytes: Option<ByteSize>,
    pub(super) admin_allow: Option<Vec<Cidr>>,
    pub(super) replication_allow: Option<Vec<Cidr>>,
    pub(super) admin_max_connections: Option<usize>,
    pub(super) admin_head_timeout: Option<Seconds>,
    pub(super) output_buffer_bytes: Option<ByteSize>,
    pub(super) admin: Option<Toggle<HostPort>>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) tls_client_ca: Option<PathBuf>,
    pub(super) allow: Option<Vec<Cidr>>,
    pub(super) identities: Option<BTreeMap<String, AccessMode>>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) shutdown_grace: Option<Seconds>,
    pub(super) ready_file: Option<PathBuf>,
    pub(super) replication_listen: Option<HostPort>,
    pub(super) standby_of: Option<String>,
    pub(super) standby_name: Option<String>,
    pub(super) sync_standbys: Option<usize>,
    pub(super) sync_timeout: Option<Seconds>,
    pub(super) replication_tls_cert: Option<PathBuf>,
    pub(super) replication_tls_key: Option<PathBuf>,
    pub(super) replication_tls_ca: Option<PathBuf>,
    pub(super) replication_peers: Option<Vec<String>>,
    pub(super) replication_insecure: Option<bool>,
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) wait_for_supervisor: Option<bool>,
    pub(super) require_write_lease: Option<bool>,
    pub(super) max_write_grant: Option<Seconds>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) log_level: Option<LogLevel>,
}

/// `Some(v)` for a non-empty list, so an absent repeatable flag leaves the lower layers in charge.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

impl From<Cli> for Layer {
    fn from(c: Cli) -> Layer {
        let entry = |(name, path)| StorageEntry { name, path, blob_dir: None, read_only: false };
        Layer {
            listen: c.listen,
            path: c.path,
            blob_dir: c.blob_dir,
            storages: non_empty(c.storages.into_iter().map(entry).collect()),
            storage_blob_dirs: non_empty(c.storage_blob_dirs),
            read_only: c.read_only.then_some(true),
            read_only_storages: non_empty(c.read_only_storages),
            msgpack: c.msgpack.then_some(true),
            client_conflict_resolution: c.client_conflict_resolution.then_some(true),
            invalidation_queue_size: c.invalidation_queue_size,
            transaction_timeout: c.transaction_timeout,
            max_connections: c.max_connections,
            max_frame_bytes: c.max_frame_bytes,
            register_timeout: c.register_timeout,
            preauth_frame_bytes: c.preauth_frame_bytes,
            preauth_input_bytes: c.preauth_input_bytes,
            admin_allow: non_empty(c.admin_allow),
            replication_allow: non_empty(c.replication_allow),
            admin_max_connections: c.admin_max_connections,
            admin_head_timeout: c.admin_head_timeout,
            output_buffer_bytes: c.output_buffer_bytes,
            admin: c.admin,
            tls_cert: c.tls_cert,
            tls_key: c.tls_key,
            tls_client_ca: c.tls_client_ca,
            allow: non_empty(c.allow),
            identities: non_empty(c.identities).map(|v| v.into_iter().collect()),
            log_format: c.log_format,
            shutdown_grace: c.shutdown_grace,
            ready_file: c.ready_file,
            replication_listen: c.replication_listen,
            standby_of: c.standby_of,
            standby_name: c.standby_name,
            sync_standbys: c.sync_standbys,
            sync_timeout: c.sync_timeout,
            replication_tls_cert: c.replication_tls_cert,
            replication_tls_key: c.replication_tls_key,
            replication_tls_ca: c.replication_tls_ca,
            replication_peers: non_empty(c.replication_peers),
            replication_insecure: c.replication_insecure.then_some(true),
            admin_token_file: c.admin_token_file,
            wait_for_supervisor: c.wait_for_supervisor.then_some(true),
            require_write_lease: c.require_write_lease.then_some(true),
            max_write_grant: c.max_write_grant,
            pid_file: c.pid_file,
            log_file: c.log_file,
            log_level: c.log_level,
        }
    }
}

impl Layer {
    /// Reads the environment layer. Empty variables count as unset.
    pub(super) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let get = |var: &'static str| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v));
        fn parsed<T>(
            v: Option<(&'static str, String)>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, ConfigError> {
            v.map(|(var, value)| parse(&value).map_err(|reason| ConfigError::Env { var, value, reason })).transpose()
        }
        fn list<T>(
            v: Option<(&'static str, String)>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<Vec<T>>, ConfigError> {
            parsed(v, |s| values::split_list(s).map(&parse).collect())
        }
        let path = |s: &str| Ok::<_, String>(PathBuf::from(s));
        let entry = |s: &str| {
            values::parse_named_path(s).map(|(name, path)| StorageEntry {
                name,
                path,
                blob_dir: None,
                read_only: false,
            })
        };
        Ok(Layer {
            listen: parsed(get(ENV_LISTEN), HostPort::parse)?,
            path: parsed(get(ENV_PATH), path)?,
            blob_dir: parsed(get(ENV_BLOB_DIR), path)?,
            storages: list(get(ENV_STORAGES), entry)?,
            storage_blob_dirs: list(get(ENV_STORAGE_BLOB_DIRS), values::parse_named_path)?,
            read_only: parsed(get(ENV_READ_ONLY), values::parse_bool)?,
            read_only_storages: list(get(ENV_READ_ONLY_STORAGES), |s| Ok(s.to_owned()))?,
            msgpack: parsed(get(ENV_MSGPACK), values::parse_bool)?,
            client_conflict_resolution: parsed(get(ENV_CLIENT_CONFLICT_RESOLUTION), values::parse_bool)?,
            invalidation_queue_size: parsed(get(ENV_INVALIDATION_QUEUE_SIZE), values::parse_count)?,
            transaction_timeout: parsed(get(ENV_TRANSACTION_TIMEOUT), Toggle::parse)?,
            max_connections: parsed(get(ENV_MAX_CONNECTIONS), values::parse_count)?,
            max_frame_bytes: parsed(get(ENV_MAX_FRAME_BYTES), ByteSize::parse)?,
            register_timeout: parsed(get(ENV_REGISTER_TIMEOUT), Seconds::parse)?,
            preauth_frame_bytes: parsed(get(ENV_PREAUTH_FRAME_BYTES), ByteSize::parse)?,
            preauth_input_bytes: parsed(get(ENV_PREAUTH_INPUT_BYTES), ByteSize::parse)?,
            admin_allow: list(get(ENV_ADMIN_ALLOW), Cidr::parse)?,
            replication_allow: list(get(ENV_REPLICATION_ALLOW), Cidr::parse)?,
            admin_max_connections: parsed(get(ENV_ADMIN_MAX_CONNECTIONS), values::parse_count)?,
            admin_head_timeout: parsed(get(ENV_ADMIN_HEAD_TIMEOUT), Seconds::parse)?,
            output_buffer_bytes: parsed(get(ENV_OUTPUT_BUFFER_BYTES), ByteSize::parse)?,
            admin: parsed(get(ENV_ADMIN), Toggle::parse)?,
            tls_cert: parsed(get(ENV_TLS_CERT), path)?,
            tls_key: parsed(get(ENV_TLS_KEY), path)?,
            tls_client_ca: parsed(get(ENV_TLS_CLIENT_CA), path)?,
            allow: list(get(ENV_ALLOW), Cidr::parse)?,
            identities: list(get(ENV_IDENTITIES), values::parse_identity)?.map(|v| v.into_iter().collect()),
            log_format: parsed(get(ENV_LOG_FORMAT), LogFormat::parse)?,
            shutdown_grace: parsed(get(ENV_SHUTDOWN_GRACE), Seconds::parse)?,
            ready_file: parsed(get(ENV_READY_FILE), path)?,
            replication_listen: parsed(get(ENV_REPLICATION_LISTEN), HostPort::parse)?,
            standby_of: parsed(get(ENV_STANDBY_OF), values::parse_peer)?,
            standby_name: parsed(get(ENV_STANDBY_NAME), |s| Ok(s.to_owned()))?,
            sync_standbys: parsed(get(ENV_SYNC_STANDBYS), values::parse_count)?,
            sync_timeout: parsed(get(ENV_SYNC_TIMEOUT), Seconds::parse)?,
            replication_tls_cert: parsed(get(ENV_REPLICATION_TLS_CERT), path)?,
            replication_tls_key: parsed(get(ENV_REPLICATION_TLS_KEY), path)?,
            replication_tls_ca: parsed(get(ENV_REPLICATION_TLS_CA), path)?,
            replication_peers: list(get(ENV_REPLICATION_PEERS), |s| Ok(s.to_owned()))?,
            replication_insecure: parsed(get(ENV_REPLICATION_INSECURE), values::parse_bool)?,
            admin_token_file: parsed(get(ENV_ADMIN_TOKEN_FILE), path)?,
            wait_for_supervisor: parsed(get(ENV_WAIT_FOR_SUPERVISOR), values::parse_bool)?,
            require_write_lease: parsed(get(ENV_REQUIRE_WRITE_LEASE), values::parse_bool)?,
            max_write_grant: parsed(get(ENV_MAX_WRITE_GRANT), Seconds::parse)?,
            pid_file: parsed(get(ENV_PID_FILE), path)?,
            log_file: parsed(get(ENV_LOG_FILE), path)?,
            log_level: parsed(get(ENV_LOG_LEVEL), LogLevel::parse)?,
        })
    }

    /// Reads the YAML layer. An empty file is an empty layer.
    pub(super) fn from_yaml_file(path: &Path) -> Result<Layer, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
        let layer: Option<Layer> =
            serde_norway::from_str(&text).map_err(|source| ConfigError::Yaml { path: path.to_owned(), source })?;
        Ok(layer.unwrap_or_default())
    }

    /// Fills what `self` (the higher layer) leaves unset from `lower`.
    pub(super) fn over(self, lower: Layer) -> Layer {
        Layer {
            listen: self.listen.or(lower.listen),
            path: self.path.or(lower.path),
            blob_dir: self.blob_dir.or(lower.blob_dir),
            storages: self.storages.or(lower.storages),
            storage_blob_dirs: self.storage_blob_dirs.or(lower.storage_blob_dirs),
            read_only: self.read_only.or(lower.read_only),
            read_only_storages: self.read_only_storages.or(lower.read_only_storages),
            msgpack: self.msgpack.or(lower.msgpack),
            client_conflict_resolution: self.client_conflict_resolution.or(lower.client_conflict_resolution),
            invalidation_queue_size: self.invalidation_queue_size.or(lower.invalidation_queue_size),
            transaction_timeout: self.transaction_timeout.or(lower.transaction_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            register_timeout: self.register_timeout.or(lower.register_timeout),
            preauth_frame_bytes: self.preauth_frame_bytes.or(lower.preauth_frame_bytes),
            preauth_input_bytes: self.preauth_input_bytes.or(lower.preauth_input_bytes),
            admin_allow: self.admin_allow.or(lower.admin_allow),
            replication_allow: self.replication_allow.or(lower.replication_allow),
            admin_max_connections: self.admin_max_connections.or(lower.admin_max_connections),
            admin_head_timeout: self.admin_head_timeout.or(lower.admin_head_timeout),
            output_buffer_bytes: self.output_buffer_bytes.or(lower.output_buffer_bytes),
            admin: self.admin.or(lower.admin),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
            allow: self.allow.or(lower.allow),
            identities: self.identities.or(lower.identities),
            log_format: self.log_format.or(lower.log_format),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            ready_file: self.ready_file.or(lower.ready_file),
            replication_listen: self.replication_listen.or(lower.replication_listen),
            standby_of: self.standby_of.or(lower.standby_of),
            standby_name: self.standby_name.or(lower.standby_name),
            sync_standbys: self.sync_standbys.or(lower.sync_standbys),
            sync_timeout: self.sync_timeout.or(lower.sync_timeout),
            replication_tls_cert: self.replication_tls_cert.or(lower.replication_tls_cert),
            replication_tls_key: self.replication_tls_key.or(lower.replication_tls_key),
            replication_tls_ca: self.replication_tls_ca.or(lower.replication_tls_ca),
            replication_peers: self.replication_peers.or(lower.replication_peers),
            replication_insecure: self.replication_insecure.or(lower.replication_insecure),
            admin_token_file: self.admin_token_file.or(lower.admin_token_file),
            wait_for_supervisor: self.wait_for_supervisor.or(lower.wait_for_supervisor),
            require_write_lease: self.require_write_lease.or(lower.require_write_lease),
            max_write_grant: self.max_write_grant.or(lower.max_write_grant),
            pid_file: self.pid_file.or(lower.pid_file),
            log_file: self.log_file.or(lower.log_file),
            log_level: self.log_level.or(lower.log_level),
        }
    }
}
