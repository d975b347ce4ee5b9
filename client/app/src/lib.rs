//! zeo-app: a small web application whose whole state lives in a ZEO storage, through
//! [`zeo_client`] and its object layer ([`zeo_client::objects`]): a wiki with edit history,
//! counters (one deliberately hot object), and a JSON key-value API. Several replicas can run
//! against one storage; each sees every write acknowledged by any of them on its next request
//! (see [`db`] for how).
//!
//! # Layout
//!
//! - `config`: command line and `ZEO_APP_*` environment; `telemetry`: logging.
//! - [`db`]: the storage handle and the freshness rule; [`layout`]: where the objects live.
//! - [`wiki`], [`counters`], [`kv`]: the application's operations, as storage transactions;
//!   [`names`]: what names and keys may be; [`json`]: JSON <-> stored values.
//! - [`readiness`]: `/readyz` and its `--ready-grace`.
//! - [`http`]: routes, error answers (503 + `Retry-After` when the storage cannot serve),
//!   request bounds; [`metrics`]: Prometheus.

pub mod config;
pub mod counters;
pub mod db;
pub mod http;
pub mod json;
pub mod kv;
pub mod layout;
pub mod metrics;
pub mod names;
pub mod readiness;
pub mod telemetry;
pub mod wiki;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeo_client::Client;

use crate::config::Config;
use crate::db::Db;
use crate::http::AppState;
use crate::metrics::Metrics;

/// Serves until `shutdown` is cancelled: binds, writes the ready file, connects to the
/// storage in the background (the layout is read or created once it is reached), then
/// drains requests and closes the client.
///
/// # Errors
///
/// Binding the listener, writing the ready file, serving.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::spawn(config.client_options()).context("starting the storage client")?;
    let db = Db::new(client.clone());
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, storage = ?config.storage, "listening");
    if let Some(path) = &config.ready_file {
        let doc = serde_json::json!({"listen": addr.to_string()});
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let tasks = TaskTracker::new();
    tasks.spawn(find_layout(db.clone(), shutdown.child_token()));
    let readiness = Arc::new(readiness::Readiness::new(config.ready_grace));
    tasks.spawn(http::watch_readiness(db.clone(), readiness.clone(), shutdown.child_token()));
    let state = AppState {
        readiness,
        db,
        metrics: Arc::new(Metrics::new(client.clone())),
        request_timeout: config.request_timeout,
        tasks: tasks.clone(),
    };
    let app = http::router(state, config.max_body);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.context("serving HTTP")?;

    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait()).await.is_err() {
        tracing::warn!("storage work still running after the shutdown grace period; closing anyway");
    }
    client.close();
    tracing::info!("stopped");
    Ok(())
}

/// Reads (or creates) the layout, retrying until the storage is reached or shutdown.
async fn find_layout(db: Db, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match layout::ensure(&db.client).await {
            Ok(l) => {
                tracing::info!(wiki = %hex(&l.wiki), counters = %hex(&l.counters), "application objects ready");
                db.set_layout(l);
                return;
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cannot read the application's objects yet"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn hex(oid: &zeo_client::Oid) -> String {
    format!("{:#018x}", u64::from_be_bytes(*oid))
}
