//! zeo-supervisor: watches one zeo-server, holds the lease, promotes, fences, moves the address.
//!
//! Settings come from defaults, then the YAML file (`--config`), then env (`ZEO_SUPERVISOR_*`),
//! then flags. `zeo-supervisor switchover` asks a running supervisor to hand over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeo_supervisor::admin::AdminClient;
use zeo_supervisor::decide::DecideConfig;
use zeo_supervisor::kill::ServerKiller;
use zeo_supervisor::lease::static_store::StaticLeaseStore;
use zeo_supervisor::lease::{LeaseElector, LeaseStore};
use zeo_supervisor::metrics::Metrics;
use zeo_supervisor::mover::{AddressMover, NoAddress, vip::VipMover};
use zeo_supervisor::process::ServerProcess;
use zeo_supervisor::runner::{Peer, Supervisor};

/// Exit code for a bad configuration (sysexits EX_USAGE).
const EX_USAGE: i32 = 64;

#[derive(Parser)]
#[command(name = "zeo-supervisor", version, about = "Failover supervisor for zeo-server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    settings: Settings,
    /// Log format.
    #[arg(long, env = "ZEO_SUPERVISOR_LOG_FORMAT", default_value = "plain", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Plain,
}

#[derive(Subcommand)]
enum Sub {
    /// Ask the running supervisor (of the primary) to hand over to a standby.
    Switchover {
        /// The supervisor's admin URL.
        #[arg(long, env = "ZEO_SUPERVISOR_URL", default_value = "http://127.0.0.1:8190")]
        url: String,
        /// The identity of the target (default: the only peer).
        #[arg(long)]
        to: Option<String>,
        /// File holding the supervisor's bearer token (its --token-file).
        #[arg(long, env = "ZEO_SUPERVISOR_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
    },
    /// Force the promotion of this supervisor's server, even if it is not in sync.
    ForcePromote {
        #[arg(long, env = "ZEO_SUPERVISOR_URL", default_value = "http://127.0.0.1:8190")]
        url: String,
        /// File holding the supervisor's bearer token (its --token-file).
        #[arg(long, env = "ZEO_SUPERVISOR_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
    },
}

/// Every setting; all optional here so that file, env and flags can be layered.
#[derive(Args, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// YAML file with any of these settings (snake_case keys).
    #[arg(long, env = "ZEO_SUPERVISOR_CONFIG")]
    #[serde(skip)]
    config: Option<std::path::PathBuf>,
    /// This supervisor's name in the lease.
    #[arg(long, env = "ZEO_SUPERVISOR_IDENTITY")]
    identity: Option<String>,
    /// Our server's admin API, e.g. http://127.0.0.1:8101.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVER_ADMIN")]
    server_admin: Option<String>,
    /// Our server's ZEO address for the round-trip probe.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVER_ZEO")]
    server_zeo: Option<String>,
    /// Storage name to register in the probe.
    #[arg(long, env = "ZEO_SUPERVISOR_STORAGE")]
    storage: Option<String>,
    /// Our server's replication listener (what standbys follow).
    #[arg(long, env = "ZEO_SUPERVISOR_REPLICATION_ADDR")]
    replication_addr: Option<String>,
    /// File holding the admin API bearer token.
    #[arg(long, env = "ZEO_SUPERVISOR_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Peers as NAME=ADMIN_URL=REPLICATION_ADDR (repeat or comma-separate).
    #[arg(long = "peer", env = "ZEO_SUPERVISOR_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Our admin port (/livez /readyz /metrics /switchover).
    #[arg(long, env = "ZEO_SUPERVISOR_LISTEN")]
    listen: Option<String>,
    /// static | file | etcd | kubernetes.
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_BACKEND")]
    lease_backend: Option<String>,
    /// static: file that keeps the lease (and its epoch) across restarts; file: the lease file
    /// shared by the supervisors of one host.
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_FILE")]
    lease_file: Option<std::path::PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "ZEO_SUPERVISOR_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Option<Vec<String>>,
    /// etcd key, or Kubernetes Lease name.
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_NAME")]
    lease_name: Option<String>,
    /// Kubernetes namespace (Lease and pods).
    #[arg(long, env = "ZEO_SUPERVISOR_NAMESPACE")]
    namespace: Option<String>,
    /// none | local | kubernetes | docker | vip.
    #[arg(long, env = "ZEO_SUPERVISOR_ADDRESS")]
    address: Option<String>,
    /// kubernetes: our pod; docker: our container.
    #[arg(long, env = "ZEO_SUPERVISOR_OWN_TARGET")]
    own_target: Option<String>,
    /// kubernetes: peer pods; docker: peer containers.
    #[arg(long, env = "ZEO_SUPERVISOR_PEER_TARGETS", value_delimiter = ',')]
    peer_targets: Option<Vec<String>>,
    /// kubernetes: the role label key.
    #[arg(long, env = "ZEO_SUPERVISOR_ROLE_LABEL")]
    role_label: Option<String>,
    /// docker: the client network and the alias on it.
    #[arg(long, env = "ZEO_SUPERVISOR_DOCKER_NETWORK")]
    docker_network: Option<String>,
    #[arg(long, env = "ZEO_SUPERVISOR_DOCKER_ALIAS")]
    docker_alias: Option<String>,
    /// local: the service address (host:port) this supervisor listens on while its server is
    /// primary, forwarding to --server-zeo.
    #[arg(long, env = "ZEO_SUPERVISOR_SERVICE_ADDRESS")]
    service_address: Option<String>,
    /// vip: address/prefix and interface.
    #[arg(long, env = "ZEO_SUPERVISOR_VIP")]
    vip: Option<String>,
    #[arg(long, env = "ZEO_SUPERVISOR_VIP_INTERFACE")]
    vip_interface: Option<String>,
    /// Loop period (100ms-500ms).
    #[arg(long, env = "ZEO_SUPERVISOR_TICK", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    tick: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_PROBE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    probe_timeout: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_FAILURE_THRESHOLD")]
    failure_threshold: Option<u32>,
    #[arg(long, env = "ZEO_SUPERVISOR_LEASE_DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    lease_duration: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_RENEW_DEADLINE", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    renew_deadline: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_RETRY_PERIOD", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    retry_period: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_DEMOTE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    demote_timeout: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_MIN_FAILOVER_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    min_failover_interval: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_MAX_TRANSITIONS")]
    max_transitions: Option<usize>,
    #[arg(long, env = "ZEO_SUPERVISOR_TRANSITION_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    transition_window: Option<Duration>,
    #[arg(long, env = "ZEO_SUPERVISOR_STABLE_FOR", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    stable_for: Option<Duration>,
    /// Async promotion bound: transactions behind (unset: only in-sync standbys are promoted).
    #[arg(long, env = "ZEO_SUPERVISOR_ASYNC_MAX_LAG_TRANSACTIONS")]
    async_max_lag_transactions: Option<u64>,
    #[arg(long, env = "ZEO_SUPERVISOR_ASYNC_MAX_LAG_SECONDS")]
    async_max_lag_seconds: Option<f64>,
    /// Demote on a missed renew deadline even if the peer still follows us.
    #[arg(long, env = "ZEO_SUPERVISOR_NO_FAILSAFE")]
    no_failsafe: Option<bool>,
    /// Command that kills the server (without --exec), e.g. "docker kill zeo-a".
    #[arg(long, env = "ZEO_SUPERVISOR_KILL_COMMAND")]
    kill_command: Option<String>,
    /// The server's container (without --exec): the fence SIGKILLs it through the Docker API.
    #[arg(long, env = "ZEO_SUPERVISOR_KILL_CONTAINER")]
    kill_container: Option<String>,
    /// Exec mode: start this server command as our child (everything after `--`).
    #[arg(num_args = 1.., allow_hyphen_values = true, last = true, value_name = "SERVER_COMMAND")]
    exec: Option<Vec<String>>,
}

impl Settings {
    /// Flags and env over the YAML file.
    fn layered(self) -> Result<Settings> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: serde_json::Value = serde_norway::from_str::<Settings>(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .and_then(|s| Ok(serde_json::to_value(s)?))?;
        let mut merged = file;
        if let serde_json::Value::Object(cli) = serde_json::to_value(&self)? {
            for (k, v) in cli.into_iter().filter(|(_, v)| !v.is_null()) {
                merged[k] = v;
            }
        }
        Ok(serde_json::from_value(merged)?)
    }

    fn decide_config(&self, identity: &str, replication_addr: &str) -> Result<DecideConfig> {
        let mut c = DecideConfig::new(identity, replication_addr);
        let set = |slot: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut c.lease_duration, self.lease_duration);
        set(&mut c.renew_deadline, self.renew_deadline);
        set(&mut c.retry_period, self.retry_period);
        set(&mut c.demote_timeout, self.demote_timeout);
        set(&mut c.min_failover_interval, self.min_failover_interval);
        set(&mut c.transition_window, self.transition_window);
        set(&mut c.stable_for, self.stable_for);
        c.failure_threshold = self.failure_threshold.unwrap_or(c.failure_threshold);
        c.max_transitions = self.max_transitions.unwrap_or(c.max_transitions);
        c.failsafe = !self.no_failsafe.unwrap_or(false);
        c.peer_fresh = c.renew_deadline.min(c.lease_duration / 2);
        if let Some(transactions) = self.async_max_lag_transactions {
            let seconds = self.async_max_lag_seconds.unwrap_or(f64::INFINITY);
            c.async_max_lag = Some(zeo_supervisor::decide::LagBound { transactions, seconds });
        }
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

/// The peers' pods or containers, without our own (deployments may list every member).
fn peer_targets(s: &Settings) -> Result<Vec<String>> {
    let own = s.own_target.clone().unwrap_or_default();
    Ok(s.peer_targets.clone().unwrap_or_default().into_iter().filter(|t| *t != own).collect())
}

fn required<T: Clone>(v: &Option<T>, name: &str) -> Result<T> {
    v.clone().with_context(|| format!("--{name} is required"))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Some(Sub::Switchover { url, to, token_file }) => {
            command(&url, token_file, "switchover", serde_json::json!({ "to": to })).await
        }
        Some(Sub::ForcePromote { url, token_file }) => {
            command(&url, token_file, "promote", serde_json::json!({})).await
        }
        None => match build(cli.settings).await {
            Ok(parts) => serve(parts).await,
            Err(e) => {
                eprintln!("zeo-supervisor: bad configuration: {e:#}");
                std::process::exit(EX_USAGE);
            }
        },
    };
    if let Err(e) = result {
        eprintln!("zeo-supervisor: {e:#}");
        std::process::exit(1);
    }
}

fn read_token(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_string())
}

async fn command(url: &str, token_file: Option<std::path::PathBuf>, what: &str, body: serde_json::Value) -> Result<()> {
    let mut request = reqwest::Client::new().post(format!("{}/{what}", url.trim_end_matches('/'))).json(&body);
    if let Some(path) = token_file {
        request = request.bearer_auth(read_token(&path)?);
    }
    let resp = request.timeout(Duration::from_secs(15)).send().await.with_context(|| format!("asking {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    println!("{text}");
    if !status.is_success() || text.contains("refused") || text.contains("aborted") {
        bail!("{what} not done ({status})");
    }
    Ok(())
}

struct Parts {
    supervisor: Supervisor,
    token: Option<String>,
    listen: String,
    metrics: Arc<Metrics>,
}

async fn build(settings: Settings) -> Result<Parts> {
    let s = settings.layered()?;
    let identity = required(&s.identity, "identity")?;
    let replication_addr = required(&s.replication_addr, "replication-addr")?;
    let cfg = s.decide_config(&identity, &replication_addr)?;
    let token = s.token_file.as_deref().map(read_token).transpose()?;
    let probe_timeout = s.probe_timeout.unwrap_or(Duration::from_millis(500));
    let http_timeout = cfg.retry_period;
    let server = AdminClient::new(required(&s.server_admin, "server-admin")?, token.clone(), http_timeout);
    let mut peers = Vec::new();
    for spec in s.peers.clone().unwrap_or_default() {
        let parts: Vec<&str> = spec.splitn(3, '=').collect();
        let [name, admin, repl] = parts[..] else {
            bail!("--peer {spec:?}: expected NAME=ADMIN_URL=REPLICATION_ADDR");
        };
        // Deployments list every member (the same value in every pod): we are not our own peer.
        if name == identity {
            continue;
        }
        peers.push(Peer {
            identity: name.into(),
            replication_addr: repl.into(),
            admin: AdminClient::new(admin, token.clone(), http_timeout),
        });
    }
    let lease_name = s.lease_name.clone().unwrap_or_else(|| "zeo-primary".into());
    let namespace = s.namespace.clone().unwrap_or_else(|| "default".into());
    let store: Arc<dyn LeaseStore> = match s.lease_backend.as_deref().unwrap_or("static") {
        "static" => Arc::new(match &s.lease_file {
            Some(p) => StaticLeaseStore::with_file(p)?,
            None => StaticLeaseStore::in_memory(),
        }),
        "file" => Arc::new(zeo_supervisor::lease::file::FileLeaseStore::new(required(&s.lease_file, "lease-file")?)),
        #[cfg(feature = "etcd")]
        "etcd" => {
            let endpoints = required(&s.etcd_endpoints, "etcd-endpoints")?;
            let key = format!("/zeo-rs/{lease_name}");
            Arc::new(zeo_supervisor::lease::etcd::EtcdLeaseStore::connect(&endpoints, key, http_timeout).await?)
        }
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            let client = kube::Client::try_default().await.context("Kubernetes client")?;
            Arc::new(zeo_supervisor::lease::kubernetes::KubeLeaseStore::new(client, &namespace, lease_name.clone()))
        }
        other => bail!("--lease-backend {other:?}: expected static, file, etcd or kubernetes"),
    };
    let mover: Box<dyn AddressMover> = match s.address.as_deref().unwrap_or("none") {
        "none" => Box::new(NoAddress),
        "local" => {
            let service: std::net::SocketAddr = required(&s.service_address, "service-address")?
                .parse()
                .context("--service-address must be IP:PORT")?;
            Box::new(zeo_supervisor::mover::local::LocalProxy::new(service, required(&s.server_zeo, "server-zeo")?))
        }
        "vip" => Box::new(VipMover::new(required(&s.vip, "vip")?, required(&s.vip_interface, "vip-interface")?)),
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            let client = kube::Client::try_default().await.context("Kubernetes client")?;
            Box::new(zeo_supervisor::mover::kubernetes::PodLabelMover::new(
                client,
                &namespace,
                required(&s.own_target, "own-target")?,
                peer_targets(&s)?,
                s.role_label.clone().unwrap_or_else(|| "role".into()),
            ))
        }
        #[cfg(feature = "docker")]
        "docker" => Box::new(zeo_supervisor::mover::docker::DockerAliasMover::new(
            zeo_supervisor::mover::docker::connect().await.context("Docker engine")?,
            required(&s.docker_network, "docker-network")?,
            required(&s.docker_alias, "docker-alias")?,
            required(&s.own_target, "own-target")?,
            peer_targets(&s)?,
        )),
        other => bail!("--address {other:?}: expected none, local, kubernetes, docker or vip"),
    };
    let process = match &s.exec {
        Some(argv) if !argv.is_empty() => Some(ServerProcess::spawn(argv.clone())?),
        _ => None,
    };
    let killer = match (&s.kill_command, &s.kill_container) {
        (Some(_), Some(_)) => bail!("--kill-command and --kill-container: give one way to kill the server"),
        (Some(c), None) => Some(ServerKiller::Command(c.split_whitespace().map(String::from).collect())),
        #[cfg(feature = "docker")]
        (None, Some(name)) => Some(ServerKiller::Container {
            docker: zeo_supervisor::mover::docker::connect().await.context("Docker engine")?,
            name: name.clone(),
        }),
        #[cfg(not(feature = "docker"))]
        (None, Some(_)) => bail!("--kill-container: this build has no Docker support (cargo feature docker)"),
        (None, None) => None,
    };
    let metrics = Arc::new(Metrics::new());
    let tick = s.tick.unwrap_or(Duration::from_millis(200));
    if !(Duration::from_millis(50)..=Duration::from_secs(2)).contains(&tick) {
        bail!("--tick {tick:?}: expected 100ms-500ms (50ms-2s accepted)");
    }
    tracing::info!(%identity, lease_backend = ?s.lease_backend, address = ?s.address, ?tick, ?cfg, "configuration");
    let supervisor = Supervisor {
        elector: LeaseElector::new(store, identity, cfg.lease_duration),
        cfg,
        tick,
        server,
        zeo_addr: required(&s.server_zeo, "server-zeo")?,
        storage: s.storage.clone().unwrap_or_else(|| "1".into()),
        probe_timeout,
        peers,
        mover,
        process,
        killer,
        metrics: metrics.clone(),
    };
    Ok(Parts { supervisor, token, listen: s.listen.clone().unwrap_or_else(|| "127.0.0.1:8190".into()), metrics })
}

async fn serve(parts: Parts) -> Result<()> {
    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let (tx, rx) = mpsc::channel(4);
    let listener =
        tokio::net::TcpListener::bind(&parts.listen).await.with_context(|| format!("binding {}", parts.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "admin port listening");
    let app = zeo_supervisor::http::router(parts.metrics, tx, ready.clone(), parts.token.as_deref().map(Arc::from));
    let http_stop = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { http_stop.cancelled().await }).await
    });
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        // Kubernetes sends SIGTERM to start a graceful shutdown; Ctrl-C sends SIGINT.
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        signals.cancel();
    });
    parts.supervisor.run(rx, ready, shutdown.clone()).await;
    shutdown.cancel();
    http.await.context("admin server task")?.context("admin server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_yaml_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "identity: a\nreplication_addr: a:9000\ntick: 300ms\nfailure_threshold: 5\n").unwrap();
        let cli = Cli::try_parse_from([
            "zeo-supervisor",
            "--config",
            path.to_str().unwrap(),
            "--failure-threshold",
            "2",
            "--",
            "zeo-server",
            "--listen",
            "x",
        ])
        .unwrap();
        let s = cli.settings.layered().unwrap();
        assert_eq!(
            (s.identity.as_deref(), s.tick, s.failure_threshold),
            (Some("a"), Some(Duration::from_millis(300)), Some(2))
        );
        assert_eq!(s.exec.unwrap(), ["zeo-server", "--listen", "x"]);
        std::fs::write(&path, "identiy: a\n").unwrap();
        let cli = Cli::try_parse_from(["zeo-supervisor", "--config", path.to_str().unwrap()]).unwrap();
        assert!(cli.settings.layered().is_err(), "unknown keys are refused");
    }
}
