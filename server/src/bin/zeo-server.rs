//! zeo-server: serves ZODB FileStorages over the ZEO 5 protocol to unmodified Python clients.
//!
//! Startup: parse and validate the configuration (exit 64 on a bad one, before binding anything),
//! open every storage (recovering crash tails), bind the listeners, write the ready file, serve.
//! SIGTERM/SIGINT: stop accepting, let in-flight commits finish (up to --shutdown-grace), fsync,
//! save the index snapshots, exit 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use zeo_proto::message::Encoding;
use zeo_server::access::AccessPolicy;
use zeo_server::admin::{self, AdminSource};
use zeo_server::config::Config;
use zeo_server::metrics::Metrics;
use zeo_server::replication::{self, LinkSecurity, Replication, ReplicationOptions};
use zeo_server::storage::{ConflictResolution, FileStorage, OpenOptions};
use zeo_server::tls::link::LinkTls;
use zeo_server::zeo::{self, BlobDir, Server, ServerOptions, StorageHost};

/// Set by zeo-supervisor in exec mode to its pid: the server gets SIGTERM (and drains) when that
/// parent dies, even by SIGKILL. An orphaned server would hold the storage lock against the server
/// of the next supervisor, and serve with nobody fencing it.
const PARENT_ENV: &str = "ZEO_EXIT_WITH_PARENT";

fn exit_with_parent() -> Result<(), String> {
    let Some(raw) = std::env::var_os(PARENT_ENV) else {
        return Ok(());
    };
    let parent: i32 =
        raw.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{PARENT_ENV}={raw:?}: expected a pid"))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    // The parent may have died before the prctl: then nobody would send the signal.
    if nix::unistd::getppid().as_raw() != parent {
        return Err(format!("the supervisor that started this server (pid {parent}) is gone"));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zeo-server: {e}");
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(64));
        }
    };
    if let Err(e) = zeo_server::telemetry::init_with(
        config.log_format.as_str(),
        config.log_level.as_str(),
        config.log_file.as_deref(),
    ) {
        // Only a path is known bad here: a usage error, as for any other setting.
        let file = config.log_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("zeo-server: --log-file {file}: {e}");
        return std::process::ExitCode::from(64);
    }
    for note in &config.notes {
        tracing::info!("{note}");
    }
    // The link's certificates are parsed before anything binds: a bad file is a usage error.
    let link = match &config.replication_tls {
        Some(files) => match LinkTls::load(files) {
            Ok(t) => {
                // Its primary and the supervisors know this member by its certificate identity.
                if !t.own_identity().matches(&config.standby_name) {
                    tracing::warn!(standby_name = %config.standby_name, certificate = %t.own_identity(),
                        "--standby-name is not this member's certificate identity: its primary reports and marks it by the certificate's");
                }
                LinkSecurity::Tls(t)
            }
            Err(e) => {
                eprintln!("zeo-server: replication link TLS: {e}");
                return std::process::ExitCode::from(64);
            }
        },
        None => LinkSecurity::Insecure,
    };
    if config.replication_insecure && (config.replication_listen.is_some() || config.standby_of.is_some()) {
        tracing::warn!(
            "replication link is plain TCP: anyone who reaches it can read the database (--replication-insecure)"
        );
    }
    if let Err(e) = exit_with_parent() {
        eprintln!("zeo-server: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zeo-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, link)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "zeo-server failed");
            eprintln!("zeo-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the admin endpoints see.
struct AdminView {
    server: Arc<Server>,
    repl: Arc<Replication>,
    ready: AtomicBool,
}

impl AdminSource for AdminView {
    /// The server's status with the replication fields (role, epoch, writable, replication) on top.
    fn status(&self) -> serde_json::Value {
        let mut doc = self.server.status();
        let repl = self.repl.status();
        if let (serde_json::Value::Object(d), serde_json::Value::Object(r)) = (&mut doc, repl) {
            let storages = r.get("storages").cloned();
            for (k, v) in r {
                if k != "storages" {
                    d.insert(k, v);
                }
            }
            // Each storage's entry gets its replication section.
            if let (Some(serde_json::Value::Object(rs)), Some(serde_json::Value::Object(ds))) =
                (storages, d.get_mut("storages"))
            {
                for (name, section) in rs {
                    if let Some(serde_json::Value::Object(entry)) = ds.get_mut(&name) {
                        // The supervisor reads which standbys this primary waits to drop per storage.
                        if let Some(requested) = section.get("degrade_requested") {
                            entry.insert("degrade_requested".into(), requested.clone());
                        }
                        entry.insert("replication".into(), section);
                    }
                }
            }
        }
        doc
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn refresh_metrics(&self) {
        self.repl.refresh_metrics();
        for h in self.server.hosts.values() {
            h.metrics.objects.set(i64::try_from(h.fs.len()).unwrap_or(i64::MAX));
            h.metrics.bytes.set(i64::try_from(h.fs.size()).unwrap_or(i64::MAX));
            let tid = zeo_proto::timestamp::TimeStamp::from_raw(h.fs.last_transaction());
            h.metrics.last_tid_seconds.set(if tid.as_u64() == 0 { 0.0 } else { tid.time_time() });
        }
    }
}

async fn run(config: Config, link: LinkSecurity) -> Result<()> {
    tracing::info!(config = %config.redacted_summary(), "starting zeo-server");
    let metrics = Metrics::new();
    let mut hosts = HashMap::new();
    for sc in &config.storages {
        tracing::info!(storage = %sc.name, path = %sc.path.display(), "opening storage");
        let path = sc.path.clone();
        let read_only = sc.read_only;
        let resolution =
            if config.client_conflict_resolution { ConflictResolution::Client } else { ConflictResolution::Server };
        let fs = tokio::task::spawn_blocking(move || {
            FileStorage::open(
                &path,
                OpenOptions {
                    read_only: false,
                    create: !read_only || !path.exists(),
                    conflict_resolution: resolution,
                    ..Default::default()
                },
            )
        })
        .await?
        .with_context(|| format!("opening storage {} ({})", sc.name, sc.path.display()))?;
        let fs = Arc::new(fs);
        let m = metrics.clone();
        fs.set_sync_observer(move |secs, txns| {
            m.fsync_seconds.observe(secs);
            m.fsync_batch_transactions.observe(txns as f64);
        });
        let blobs = match &sc.blob_dir {
            Some(dir) => Some(BlobDir::open(dir).with_context(|| format!("opening blob directory {}", dir.display()))?),
            None => None,
        };
        let host =
            StorageHost::new(sc.name.clone(), fs, read_only, blobs, config.invalidation_queue_size, metrics.clone());
        hosts.insert(sc.name.clone(), Arc::new(host));
    }
    let tls = match &config.tls {
        Some(files) => Some(zeo_server::tls::tls_acceptor(files).context("setting up TLS")?),
        None => None,
    };
    let opts = ServerOptions {
        encoding: if config.msgpack { Encoding::Msgpack } else { Encoding::Pickle },
        read_only: config.read_only,
        max_frame: config.max_frame_bytes,
        output_limit: config.output_buffer_bytes,
        transaction_timeout: config.transaction_timeout,
        max_connections: config.max_connections,
        preauth: zeo_listen::PreAuthLimits { deadline: config.register_timeout, max_frame: config.preauth_frame_bytes },
        preauth_input_bytes: config.preauth_input_bytes,
    };
    let admin_token = match &config.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned(),
        ),
        None => None,
    };
    let repl_opts = ReplicationOptions {
        standby_of: config.standby_of.clone(),
        name: config.standby_name.clone(),
        sync_standbys: config.sync_standbys,
        sync_timeout: config.sync_timeout,
        admin_token,
        wait_for_supervisor: config.wait_for_supervisor,
        require_write_lease: config.require_write_lease,
        max_write_grant: config.max_write_grant,
        link,
        allow: config.replication_allow.clone(),
        read_only_storages: config.storages.iter().filter(|s| s.read_only).map(|s| s.name.clone()).collect(),
    };
    let first_path = &config.storages[0].path;
    let repl = {
        let (hosts, metrics) = (hosts.clone(), metrics.clone());
        let first_path = first_path.clone();
        tokio::task::spawn_blocking(move || Replication::open(repl_opts, &hosts, &first_path, metrics))
            .await?
            .context("opening the replication state")?
    };
    let server = Arc::new(Server::new(hosts, opts, metrics.clone(), AccessPolicy::from_config(&config), tls));

    let listener = tokio::net::TcpListener::bind(config.listen.as_tuple())
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let listen_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let view = Arc::new(AdminView { server: server.clone(), repl: repl.clone(), ready: AtomicBool::new(false) });
    let mut admin_task = None;
    let mut admin_addr = None;
    if let Some(admin) = &config.admin {
        let l =
            tokio::net::TcpListener::bind(admin.as_tuple()).await.with_context(|| format!("binding admin {admin}"))?;
        admin_addr = Some(l.local_addr()?);
        let app = admin::router(view.clone(), metrics.clone()).merge(replication::control::router(repl.clone()));
        let gate = admin::gate(&config, &metrics);
        let limits = admin::limits(&config);
        admin_task = Some(tokio::spawn(admin::serve_router(l, gate, app, limits, shutdown.clone())));
    }
    let mut repl_addr = None;
    if let Some(rl) = &config.replication_listen {
        let l = tokio::net::TcpListener::bind(rl.as_tuple())
            .await
            .with_context(|| format!("binding --replication-listen {rl}"))?;
        repl_addr = Some(l.local_addr()?);
        tokio::spawn(replication::serve_listener(repl.clone(), l, shutdown.clone()));
    }
    repl.start();
    tracing::info!(listen = %listen_addr, admin = ?admin_addr, tls = config.tls.is_some(), "listening");
    // Before the ready file: whoever waits for that one finds the pid file too.
    if let Some(path) = &config.pid_file {
        write_atomically(path, &format!("{}\n", std::process::id()))?;
    }
    if let Some(path) = &config.ready_file {
        let doc = serde_json::json!({
            "listen": listen_addr.to_string(),
            "admin": admin_addr.map(|a| a.to_string()),
            "replication": repl_addr.map(|a| a.to_string()),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string())
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    view.ready.store(true, Ordering::SeqCst);

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });
    zeo::run(listener, server.clone(), shutdown.clone(), config.shutdown_grace).await;
    view.ready.store(false, Ordering::SeqCst);
    repl.stop();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    // Every connection is gone: make everything durable and save the index snapshots.
    for h in server.hosts.values() {
        let fs = h.fs.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            fs.sync()?;
            fs.save_index()?;
            Ok(())
        })
        .await??;
    }
    if let Some(path) = &config.pid_file {
        // Another process may have taken the path over; a pid file that is not ours stays.
        let ours = std::fs::read_to_string(path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours && let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the pid file");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`: a reader sees
/// the old content or the whole new one, never a partial pid.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
