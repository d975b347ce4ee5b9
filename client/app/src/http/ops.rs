//! `/livez`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use std::time::Instant;

use super::AppState;
use crate::db::Db;
use crate::metrics::CONTENT_TYPE;
use crate::readiness::{Readiness, Verdict};

/// How often the watcher records the storage's state for the grace (module `readiness`).
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Records the storage's state every [`WATCH_EVERY`] until `cancel`, so the grace counts from
/// the start of an outage, not from the next `/readyz` probe.
pub async fn watch_readiness(
    db: Db,
    readiness: std::sync::Arc<Readiness>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                readiness.observe(storage_trouble(&db), Instant::now());
            }
        }
    }
}

/// The process is up and serving HTTP.
pub async fn livez() -> &'static str {
    "ok"
}

/// Why the storage does not serve this replica now (None: a writable connection serves and the
/// application's objects are known).
pub fn storage_trouble(db: &Db) -> Option<&'static str> {
    if !db.client.is_connected() {
        Some("not connected to the storage")
    } else if db.client.is_read_only() {
        Some("the storage is read-only")
    } else if db.layout().is_none() {
        Some("the application's objects are not known yet")
    } else {
        None
    }
}

/// Ready while a writable storage connection serves and the application's objects are known,
/// and for `--ready-grace` after that stops (see [`crate::readiness`]): a replica behind a load
/// balancer takes traffic when it can write, and a failover does not empty the Service.
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    match st.readiness.observe(storage_trouble(&st.db), Instant::now()) {
        Verdict::Ready => (StatusCode::OK, "ready\n".to_owned()),
        Verdict::WithinGrace { reason, down_for } => (
            StatusCode::OK,
            format!("ready (within the grace): {reason} for {} ms; requests get 503\n", down_for.as_millis()),
        ),
        Verdict::NotReady(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// Prometheus scrape.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], st.metrics.encode())
}
