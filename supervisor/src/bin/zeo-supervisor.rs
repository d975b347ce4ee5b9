//! zeo-supervisor: watches one zeo-server, holds the lease, promotes, fences, moves the address.
//!
//! Settings come from defaults, then the YAML file (`--config`), then env (`ZEO_SUPERVISOR_*`),
//! then flags (`zeo_supervisor::config`); a bad configuration exits 64 before anything starts.
//! `zeo-supervisor switchover` asks a running supervisor to hand over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeo_supervisor::config::{Config, Settings, read_token};
use zeo_supervisor::kill::ServerKiller;
use zeo_supervisor::lease::{self, LeaseElector};
use zeo_supervisor::metrics::Metrics;
use zeo_supervisor::mover;
use zeo_supervisor::process::ServerProcess;
use zeo_supervisor::runner::{Peer, Supervisor};
use zeo_supervisor::server_admin::ServerAdmin;

/// Exit code for a bad configuration (sysexits EX_USAGE).
const EX_USAGE: i32 = 64;

/// Sidecar mode: after the shutdown handover, how long `/handover` stays up for the server's
/// preStop hook at most (Kubernetes' default termination grace period). We leave sooner once our
/// server stops answering: the hook is done then.
const HANDOVER_LINGER: Duration = Duration::from_secs(30);
/// While lingering, how often to look whether our server is gone.
const LINGER_POLL: Duration = Duration::from_millis(100);

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A value no setting accepts is a bad configuration like any other.
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(EX_USAGE);
        }
        Err(e) => e.exit(),
    };
    init_tracing(cli.log_format);
    let result = match cli.command {
        Some(Sub::Switchover { url, to, token_file }) => {
            command(&url, token_file, "switchover", serde_json::json!({ "to": to })).await
        }
        Some(Sub::ForcePromote { url, token_file }) => {
            command(&url, token_file, "promote", serde_json::json!({})).await
        }
        None => match configure(cli.settings).await {
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
    /// Our server's admin API, to see it gone after the handover (sidecar mode).
    server: ServerAdmin,
    token: Option<String>,
    listen: String,
    /// The admin port's gate (allow-list, connection cap) and HTTP bounds.
    gate: Arc<zeo_listen::Gate>,
    limits: zeo_listen::HttpLimits,
    metrics: Arc<Metrics>,
}

/// The configuration, then everything it names: a failure in either is a bad configuration.
async fn configure(settings: Settings) -> Result<Parts> {
    build(Config::from_settings(settings)?).await
}

async fn build(config: Config) -> Result<Parts> {
    let token = config.token_file.as_deref().map(read_token).transpose()?;
    let http_timeout = config.decide.retry_period;
    let server = ServerAdmin::new(config.server_admin.clone(), token.clone(), http_timeout);
    let peers = config
        .peers
        .iter()
        .map(|p| Peer {
            identity: p.identity.clone(),
            replication_addr: p.replication_addr.clone(),
            admin: ServerAdmin::new(p.admin_url.clone(), token.clone(), http_timeout),
        })
        .collect();
    let store = lease::from_settings(&config.lease).await?;
    let mover = mover::from_settings(&config.address).await?;
    let process = config.exec.clone().map(ServerProcess::spawn).transpose()?;
    let killer = ServerKiller::from_settings(config.kill_command.as_deref(), config.kill_container.as_deref()).await?;
    let metrics = Arc::new(Metrics::new());
    let (cfg, tick) = (config.decide, config.tick);
    let identity = cfg.identity.clone();
    let (lease_backend, address) = (config.lease.backend, config.address.backend);
    tracing::info!(%identity, %lease_backend, %address, ?tick, ?cfg, "configuration");
    let supervisor = Supervisor {
        elector: LeaseElector::new(store, identity, cfg.lease_duration),
        cfg,
        tick,
        server: server.clone(),
        zeo_addr: config.server_zeo,
        storage: config.storage,
        probe_timeout: config.probe_timeout,
        peers,
        mover,
        process,
        killer,
        metrics: metrics.clone(),
    };
    let gate =
        Arc::new(zeo_listen::Gate::new("http", config.allow, config.max_connections, &metrics.listener_refusals));
    let limits = zeo_listen::HttpLimits { head_timeout: config.head_timeout, ..zeo_listen::HttpLimits::default() };
    Ok(Parts { supervisor, server, token, listen: config.listen, gate, limits, metrics })
}

/// Serves the admin port and runs the loop. On SIGTERM (or SIGINT) the loop stops acting and
/// hands over first (demote, address, lease: each bounded), then `/handover` answers 200; in
/// exec mode the loop then stops its child and we exit; in sidecar mode the admin port stays up
/// until our server is gone (its preStop hook waited for `/handover`), at most
/// [`HANDOVER_LINGER`]. Exit 0.
async fn serve(parts: Parts) -> Result<()> {
    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let handed_over = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(4);
    let listener =
        tokio::net::TcpListener::bind(&parts.listen).await.with_context(|| format!("binding {}", parts.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "admin port listening");
    let app = zeo_supervisor::http::router(
        parts.metrics,
        tx,
        ready.clone(),
        handed_over.clone(),
        parts.token.as_deref().map(Arc::from),
    );
    let http = tokio::spawn(zeo_listen::serve_http(listener, parts.gate, app, parts.limits, http_stop.clone()));
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        // Kubernetes sends SIGTERM to start a graceful shutdown; Ctrl-C sends SIGINT.
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: handing over first");
        signals.cancel();
    });
    let sidecar = parts.supervisor.process.is_none();
    parts.supervisor.run(rx, ready, shutdown.clone()).await;
    shutdown.cancel();
    handed_over.cancel();
    tracing::info!("handed over");
    if sidecar {
        let gone = async {
            while parts.server.status().await.is_ok() {
                tokio::time::sleep(LINGER_POLL).await;
            }
        };
        if tokio::time::timeout(HANDOVER_LINGER, gone).await.is_err() {
            tracing::warn!(linger = ?HANDOVER_LINGER, "our server still answers; exiting anyway");
        }
    }
    http_stop.cancel();
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
}
