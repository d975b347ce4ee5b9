//! The zeo-supervisor configuration, resolved from four layers: flags > environment
//! (`ZEO_SUPERVISOR_*`) > YAML file (`--config`, the flag names in snake_case) > defaults.
//!
//! [`Settings`] is what the layers give (every setting optional; the binary flattens it into its
//! command line); [`Config::from_settings`] lays them over each other, applies the defaults and
//! runs [`Config::validate`], all before anything is started or bound, so a bad configuration
//! fails at once (the binary exits 64) with a message naming the flag.
//!
//! ```yaml
//! identity: zeo-0
//! server_admin: http://127.0.0.1:8101
//! server_zeo: 127.0.0.1:8100
//! replication_addr: zeo-0.zeo:8102
//! peers: [zeo-1=http://zeo-1.zeo:8101=zeo-1.zeo:8102]
//! lease_backend: etcd
//! etcd_endpoints: [http://etcd:2379]
//! address: vip
//! vip: 198.51.100.10/24
//! vip_interface: eth0
//! lease_duration: 6s
//! ```

mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::decide::{DecideConfig, DecideConfigError, LagBound};
use crate::lease::LeaseSettings;
use crate::mover::AddressSettings;
pub use settings::Settings;

/// Longer head deadlines would let silent peers hold admin slots for nothing.
const MAX_HEAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The loop period's accepted range; 100ms-500ms is what the timings are tuned for.
const TICK_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_secs(2);

/// Why the configuration could not be loaded. The binary exits 64 (`EX_USAGE`) on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML file (`--config`) could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML file is malformed, has an unknown key or a bad value.
    #[error("parsing {}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// Laying the command line over the file gave settings that do not fit together.
    #[error("merging the command line over the config file: {0}")]
    Layering(#[source] serde_json::Error),
    /// A setting every supervisor needs was not given.
    #[error("--{0} is required")]
    Missing(&'static str),
    #[error("--peer {0:?}: expected NAME=ADMIN_URL=REPLICATION_ADDR")]
    Peer(String),
    #[error("--tick {0:?}: expected 100ms-500ms (50ms-2s accepted)")]
    Tick(Duration),
    #[error("--allow: {0}")]
    Allow(String),
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    #[error("--head-timeout {0:?}: must be positive and at most 10m")]
    HeadTimeout(Duration),
    #[error("--kill-command and --kill-container: give one way to kill the server")]
    TwoKillers,
    #[cfg(not(feature = "docker"))]
    #[error("--kill-container: this build has no Docker support (cargo feature docker)")]
    NoDocker,
    /// The lease timings break a rule the safety argument rests on.
    #[error(transparent)]
    Timing(#[from] DecideConfigError),
    #[error(transparent)]
    Lease(#[from] crate::lease::SetupError),
    #[error(transparent)]
    Address(#[from] crate::mover::SetupError),
    /// The bearer token file (`--token-file`) could not be read.
    #[error("reading {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A peer as `--peer NAME=ADMIN_URL=REPLICATION_ADDR` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub identity: String,
    pub admin_url: String,
    pub replication_addr: String,
}

/// Every setting, resolved and with the defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The rules' knobs, with our identity and our server's replication address.
    pub decide: DecideConfig,
    /// Our server's admin API, its ZEO address (probed) and the storage the probe registers.
    pub server_admin: String,
    pub server_zeo: String,
    pub storage: String,
    /// The admin API bearer token's file, for our server, the peers and our own commands.
    pub token_file: Option<PathBuf>,
    /// The other members (never ourselves, though deployments may list every member).
    pub peers: Vec<PeerSettings>,
    /// Our admin port, and its bounds: the allow-list (every route, probes included), the
    /// connection cap and the request head deadline.
    pub listen: String,
    pub allow: zeo_listen::AllowList,
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub lease: LeaseSettings,
    pub address: AddressSettings,
    pub tick: Duration,
    pub probe_timeout: Duration,
    /// Exec mode: the server command we start as our child.
    pub exec: Option<Vec<String>>,
    /// Without exec mode, how to kill the server: a command (argv), or its container.
    pub kill_command: Option<Vec<String>>,
    pub kill_container: Option<String>,
}

impl Config {
    /// Lays the layers over each other, applies the defaults and validates the result.
    ///
    /// # Errors
    /// Any [`ConfigError`] but [`ConfigError::Token`].
    pub fn from_settings(settings: Settings) -> Result<Config, ConfigError> {
        let s = settings.layered()?;
        let identity = required(&s.identity, "identity")?;
        let replication_addr = required(&s.replication_addr, "replication-addr")?;
        let decide = decide_config(&s, &identity, &replication_addr);
        let server_zeo = required(&s.server_zeo, "server-zeo")?;
        let namespace = s.namespace.clone().unwrap_or_else(|| "default".into());
        let own_target = s.own_target.clone();
        let own = own_target.clone().unwrap_or_default();
        let config = Config {
            server_admin: required(&s.server_admin, "server-admin")?,
            storage: s.storage.clone().unwrap_or_else(|| "1".into()),
            token_file: s.token_file.clone(),
            peers: peers(s.peers.as_deref().unwrap_or_default(), &identity)?,
            listen: s.listen.clone().unwrap_or_else(|| "127.0.0.1:8190".into()),
            allow: zeo_listen::AllowList::parse(s.allow.as_deref().unwrap_or_default()).map_err(ConfigError::Allow)?,
            max_connections: s.max_connections.unwrap_or(64),
            head_timeout: s.head_timeout.unwrap_or(Duration::from_secs(5)),
            lease: LeaseSettings {
                backend: s.lease_backend.unwrap_or_default(),
                file: s.lease_file.clone(),
                etcd_endpoints: s.etcd_endpoints.clone().unwrap_or_default(),
                name: s.lease_name.clone().unwrap_or_else(|| "zeo-primary".into()),
                namespace: namespace.clone(),
                timeout: decide.retry_period,
            },
            address: AddressSettings {
                backend: s.address.unwrap_or_default(),
                service_address: s.service_address.clone(),
                server_zeo: server_zeo.clone(),
                vip: s.vip.clone(),
                vip_interface: s.vip_interface.clone(),
                // Deployments may list every member: our own target is not a peer's.
                peer_targets: s.peer_targets.clone().unwrap_or_default().into_iter().filter(|t| *t != own).collect(),
                own_target,
                role_label: s.role_label.clone().unwrap_or_else(|| "role".into()),
                namespace,
                docker_network: s.docker_network.clone(),
                docker_alias: s.docker_alias.clone(),
                timeout: decide.retry_period,
            },
            tick: s.tick.unwrap_or(Duration::from_millis(200)),
            probe_timeout: s.probe_timeout.unwrap_or(Duration::from_millis(500)),
            exec: s.exec.clone().filter(|argv| !argv.is_empty()),
            kill_command: s.kill_command.as_deref().map(|c| c.split_whitespace().map(String::from).collect()),
            kill_container: s.kill_container.clone(),
            server_zeo,
            decide,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules between settings, touching nothing outside.
    ///
    /// # Errors
    /// The first rule that does not hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.decide.validate()?;
        if !TICK_RANGE.contains(&self.tick) {
            return Err(ConfigError::Tick(self.tick));
        }
        if self.max_connections < 1 {
            return Err(ConfigError::MaxConnections);
        }
        if self.head_timeout.is_zero() || self.head_timeout > MAX_HEAD_TIMEOUT {
            return Err(ConfigError::HeadTimeout(self.head_timeout));
        }
        if self.kill_command.is_some() && self.kill_container.is_some() {
            return Err(ConfigError::TwoKillers);
        }
        #[cfg(not(feature = "docker"))]
        if self.kill_container.is_some() {
            return Err(ConfigError::NoDocker);
        }
        self.lease.validate()?;
        self.address.validate()?;
        Ok(())
    }
}

/// The bearer token in `path`, without surrounding whitespace.
///
/// # Errors
/// [`ConfigError::Token`].
pub fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Token { path: path.into(), source })?;
    Ok(text.trim().to_string())
}

fn required<T: Clone>(v: &Option<T>, flag: &'static str) -> Result<T, ConfigError> {
    v.clone().ok_or(ConfigError::Missing(flag))
}

/// The peers of `--peer`, without `identity` (deployments give every pod the same list).
fn peers(specs: &[String], identity: &str) -> Result<Vec<PeerSettings>, ConfigError> {
    let mut peers = Vec::new();
    for spec in specs {
        let parts: Vec<&str> = spec.splitn(3, '=').collect();
        let [name, admin, repl] = parts[..] else {
            return Err(ConfigError::Peer(spec.clone()));
        };
        if name != identity {
            peers.push(PeerSettings { identity: name.into(), admin_url: admin.into(), replication_addr: repl.into() });
        }
    }
    Ok(peers)
}

fn decide_config(s: &Settings, identity: &str, replication_addr: &str) -> DecideConfig {
    let mut c = DecideConfig::new(identity, replication_addr);
    let set = |slot: &mut Duration, v: Option<Duration>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut c.lease_duration, s.lease_duration);
    set(&mut c.renew_deadline, s.renew_deadline);
    set(&mut c.retry_period, s.retry_period);
    set(&mut c.demote_timeout, s.demote_timeout);
    set(&mut c.min_failover_interval, s.min_failover_interval);
    set(&mut c.transition_window, s.transition_window);
    set(&mut c.stable_for, s.stable_for);
    c.failure_threshold = s.failure_threshold.unwrap_or(c.failure_threshold);
    c.max_transitions = s.max_transitions.unwrap_or(c.max_transitions);
    c.failsafe = !s.no_failsafe.unwrap_or(false);
    c.peer_fresh = c.renew_deadline.min(c.lease_duration / 2);
    if let Some(transactions) = s.async_max_lag_transactions {
        let seconds = s.async_max_lag_seconds.unwrap_or(f64::INFINITY);
        c.async_max_lag = Some(LagBound { transactions, seconds });
    }
    c
}

#[cfg(test)]
mod tests;
