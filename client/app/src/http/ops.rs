//! `/livez`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::CONTENT_TYPE;

/// The process is up and serving HTTP.
pub async fn livez() -> &'static str {
    "ok"
}

/// Ready only while a writable storage connection serves and the application's objects are
/// known: a replica behind a load balancer then takes traffic only when it can write.
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let client = &st.db.client;
    let why_not = if !client.is_connected() {
        Some("not connected to the storage")
    } else if client.is_read_only() {
        Some("the storage is read-only")
    } else if st.db.layout().is_none() {
        Some("the application's objects are not known yet")
    } else {
        None
    };
    match why_not {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// Prometheus scrape.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], st.metrics.encode())
}
