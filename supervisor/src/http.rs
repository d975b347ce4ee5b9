//! The supervisor's own admin HTTP API: `/livez`, `/readyz`, `/metrics`, and
//! `POST /switchover {"to": name|null}` which hands a command to the loop and returns the
//! decision it led to.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::decide::Command;
use crate::metrics::Metrics;
use crate::runner::CommandRequest;

/// The loop answers within a tick or two; past this it is stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct App {
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<CommandRequest>,
    /// Cancelled after the loop's first decision.
    ready: CancellationToken,
}

#[derive(Deserialize, Default)]
struct SwitchoverBody {
    #[serde(default)]
    to: Option<String>,
}

/// The router for the admin port.
pub fn router(metrics: Arc<Metrics>, commands: mpsc::Sender<CommandRequest>, ready: CancellationToken) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/switchover", post(switchover))
        .route("/promote", post(force_promote))
        .with_state(App { metrics, commands, ready })
}

async fn readyz(State(app): State<App>) -> Response {
    if app.ready.is_cancelled() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics_handler(State(app): State<App>) -> Response {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.encode())
        .into_response()
}

async fn send(app: &App, command: Command) -> Response {
    let (tx, rx) = oneshot::channel();
    if app.commands.send((command, tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "supervisor is stopping"}))).into_response();
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(decision)) => Json(json!({"decision": decision})).into_response(),
        _ => (StatusCode::GATEWAY_TIMEOUT, Json(json!({"error": "no decision in time"}))).into_response(),
    }
}

async fn switchover(State(app): State<App>, body: Option<Json<SwitchoverBody>>) -> Response {
    let to = body.map(|b| b.0).unwrap_or_default().to;
    send(&app, Command::Switchover { to }).await
}

async fn force_promote(State(app): State<App>) -> Response {
    send(&app, Command::ForcePromote).await
}
