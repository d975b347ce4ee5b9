//! The settings as each layer gives them: every one optional, so that the command line (flags
//! with their `ZEO_SUPERVISOR_*` environment fallbacks, both read by clap) can be laid over the
//! YAML file (the same names in snake_case).

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::lease::LeaseBackend;
use crate::mover::AddressBackend;

/// Every setting; all optional here so that file, env and flags can be layered.
#[derive(Args, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// YAML file with any of these settings (snake_case keys).
    #[arg(long, env = "ZEO_SUPERVISOR_CONFIG")]
    #[serde(skip)]
    pub(super) config: Option<std::path::PathBuf>,
    /// This supervisor's name in the lease.
    #[arg(long, env = "ZEO_SUPERVISOR_IDENTITY")]
    pub(super) identity: Option<String>,
    /// Our server's admin API, e.g. http://127.0.0.1:8101.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVER_ADMIN")]
    pub(super) server_admin: Option<String>,
    /// Our server's ZEO address for the round-trip probe.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVER_ZEO")]
    pub(super) server_zeo: Option<String>,
    /// Storage name to register in the probe.
    #[arg(long, env = "ZEO_SUPERVISOR_STORAGE")]
    pub(super) storage: Option<String>,
    /// Our server's replication listener (what standbys follow).
    #[arg(long, env = "ZEO_SUPERVISOR_REPLICATION_ADDR")]
    pub(super) replication_addr: Option<String>,
    /// File holding the admin API bearer token.
    #[arg(long, env = "ZEO_SUPERVISOR_TOKEN_FILE")]
    pub(super) token_file: Option<std::path::PathBuf>,
    /// Peers as NAME=ADMIN_URL=REPLICATION_ADDR (repeat or comma-separate).
    #[arg(long = "peer", env = "ZEO_SUPERVISOR_PEERS", value_delimiter = ',')]
    pub(super) peers: Option<Vec<String>>,
    /// Our admin port (/livez /readyz /metrics /switchover).
    #[arg(long, env = "ZEO_SUPERVISOR_LISTEN")]
    pub(super) listen: Option<String>,
    /// Networks (CIDR or address) allowed on our admin port, every route included; repeat or
    /// comma-separate [default: everyone].
    #[arg(long = "allow", env = "ZEO_SUPERVISOR_ALLOW", value_delimiter = ',')]
    pub(super) allow: Option<Vec<String>>,
    /// Maximum simultaneous connections to our admin port [default: 64].
    #[arg(long, env = "ZEO_SUPERVISOR_MAX_CONNECTIONS")]
    pub(super) max_connections: Option<usize>,
    /// Close admin connections whose request head takes longer than this [default: 5s].
    #[arg(long, env = "ZEO_SUPERVISOR_HEAD_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) head_timeout: Option<Duration>,
    /// Where the lease is kept [default: static].
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_BACKEND")]
    pub(super) lease_backend: Option<LeaseBackend>,
    /// static: file that keeps the lease (and its epoch) across restarts; file: the lease file
    /// shared by the supervisors of one host.
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_FILE")]
    pub(super) lease_file: Option<std::path::PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "ZEO_SUPERVISOR_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub(super) etcd_endpoints: Option<Vec<String>>,
    /// etcd key, or Kubernetes Lease name.
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_NAME")]
    pub(super) lease_name: Option<String>,
    /// Kubernetes namespace (Lease and pods).
    #[arg(long, env = "ZEO_SUPERVISOR_NAMESPACE")]
    pub(super) namespace: Option<String>,
    /// How the service address follows the primary [default: none].
    #[arg(long, env = "ZEO_SUPERVISOR_ADDRESS")]
    pub(super) address: Option<AddressBackend>,
    /// kubernetes: our pod; docker: our container.
    #[arg(long, env = "ZEO_SUPERVISOR_OWN_TARGET")]
    pub(super) own_target: Option<String>,
    /// kubernetes: peer pods; docker: peer containers.
    #[arg(long, env = "ZEO_SUPERVISOR_PEER_TARGETS", value_delimiter = ',')]
    pub(super) peer_targets: Option<Vec<String>>,
    /// kubernetes: the role label key.
    #[arg(long, env = "ZEO_SUPERVISOR_ROLE_LABEL")]
    pub(super) role_label: Option<String>,
    /// docker: the client network and the alias on it.
    #[arg(long, env = "ZEO_SUPERVISOR_DOCKER_NETWORK")]
    pub(super) docker_network: Option<String>,
    #[arg(long, env = "ZEO_SUPERVISOR_DOCKER_ALIAS")]
    pub(super) docker_alias: Option<String>,
    /// local: the service address (host:port) this supervisor listens on while its server is
    /// primary, forwarding to --server-zeo.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVICE_ADDRESS")]
    pub(super) service_address: Option<String>,
    /// vip: address/prefix and interface.
    #[arg(long, env = "ZEO_SUPERVISOR_VIP")]
    pub(super) vip: Option<String>,
    #[arg(long, env = "ZEO_SUPERVISOR_VIP_INTERFACE")]
    pub(super) vip_interface: Option<String>,
    /// Loop period (100ms-500ms).
    #[arg(long, env = "ZEO_SUPERVISOR_TICK", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) tick: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_PROBE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) probe_timeout: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_FAILURE_THRESHOLD")]
    pub(super) failure_threshold: Option<u32>,
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) lease_duration: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_RENEW_DEADLINE", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) renew_deadline: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_RETRY_PERIOD", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) retry_period: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_DEMOTE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) demote_timeout: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_MIN_FAILOVER_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) min_failover_interval: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_MAX_TRANSITIONS")]
    pub(super) max_transitions: Option<usize>,
    #[arg(long, env = "ZEO_SUPERVISOR_TRANSITION_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) transition_window: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_STABLE_FOR", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub(super) stable_for: Option<Duration>,
    /// Async promotion bound: transactions behind (unset: only in-sync standbys are promoted).
    #[arg(long, env = "ZEO_SUPERVISOR_ASYNC_MAX_LAG_TRANSACTIONS")]
    pub(super) async_max_lag_transactions: Option<u64>,
    #[arg(long, env = "ZEO_SUPERVISOR_ASYNC_MAX_LAG_SECONDS")]
    pub(super) async_max_lag_seconds: Option<f64>,
    /// Demote on a missed renew deadline even if the peer still follows us.
    #[arg(long, env = "ZEO_SUPERVISOR_NO_FAILSAFE")]
    pub(super) no_failsafe: Option<bool>,
    /// Command that kills the server (without --exec), e.g. "docker kill zeo-a".
    #[arg(long, env = "ZEO_SUPERVISOR_KILL_COMMAND")]
    pub(super) kill_command: Option<String>,
    /// The server's container (without --exec): the fence SIGKILLs it through the Docker API.
    #[arg(long, env = "ZEO_SUPERVISOR_KILL_CONTAINER")]
    pub(super) kill_container: Option<String>,
    /// Exec mode: start this server command as our child (everything after `--`).
    #[arg(num_args = 1.., allow_hyphen_values = true, last = true, value_name = "SERVER_COMMAND")]
    pub(super) exec: Option<Vec<String>>,
}

impl Settings {
    /// Flags and env over the YAML file.
    ///
    /// # Errors
    /// The file cannot be read, or has an unknown key or a bad value.
    pub(super) fn layered(self) -> Result<Settings, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?;
        let file = serde_norway::from_str::<Settings>(&text)
            .map_err(|source| ConfigError::Yaml { path: path.clone(), source })?;
        // Both layers as JSON objects: a setting the command line gives replaces the file's.
        let mut merged = serde_json::to_value(file).map_err(ConfigError::Layering)?;
        if let serde_json::Value::Object(cli) = serde_json::to_value(&self).map_err(ConfigError::Layering)? {
            for (k, v) in cli.into_iter().filter(|(_, v)| !v.is_null()) {
                merged[k] = v;
            }
        }
        serde_json::from_value(merged).map_err(ConfigError::Layering)
    }
}
