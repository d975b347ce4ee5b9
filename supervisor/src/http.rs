//! The supervisor's own admin HTTP API: `/livez`, `/readyz`, `/metrics`, `GET /handover`
//! (200 once a shutdown has handed over, 503 before: what the server's preStop hook waits for),
//! and `POST /switchover {"to": name|null}` which hands a command to the loop and returns the
//! decision it led to. The POST routes need the bearer token of `--token-file` (the one the
//! supervisor uses with its server): they change who is primary.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
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
    /// Cancelled once a shutdown has demoted our server and given the lease and address up
    /// (at once when we did not hold them).
    handed_over: CancellationToken,
    /// Bearer token for the POST routes; none configured: they are refused.
    token: Option<Arc<str>>,
}

#[derive(Deserialize, Default)]
struct SwitchoverBody {
    #[serde(default)]
    to: Option<String>,
}

/// The router for the admin port.
pub fn router(
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<CommandRequest>,
    ready: CancellationToken,
    handed_over: CancellationToken,
    token: Option<Arc<str>>,
) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/handover", get(handover))
        .route("/metrics", get(metrics_handler))
        .route("/switchover", post(switchover))
        .route("/promote", post(force_promote))
        .with_state(App { metrics, commands, ready, handed_over, token })
}

/// 503 once the loop has not made progress within its bound (see [`crate::liveness`]).
async fn livez(State(app): State<App>) -> Response {
    let live = &app.metrics.liveness;
    if live.is_live() {
        "ok".into_response()
    } else {
        let stuck = format!("loop stuck for {:?}", live.since_beat());
        (StatusCode::SERVICE_UNAVAILABLE, stuck).into_response()
    }
}

async fn readyz(State(app): State<App>) -> Response {
    if app.ready.is_cancelled() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

/// No token: it only says whether the shutdown handover is done, and the preStop hook of the
/// server container has no business holding the command token.
async fn handover(State(app): State<App>) -> Response {
    if app.handed_over.is_cancelled() {
        "handed over".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not handed over").into_response()
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

/// Checks the bearer token in constant time; the refusal to send back, if any.
fn refusal(app: &App, headers: &HeaderMap, call: &str) -> Option<Response> {
    let Some(expected) = &app.token else {
        tracing::warn!(call, "command refused: no --token-file configured");
        return Some(
            (StatusCode::FORBIDDEN, Json(json!({"error": "commands need --token-file on the supervisor"})))
                .into_response(),
        );
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::info!(call, "command accepted");
        None
    } else {
        tracing::warn!(call, "command refused: bad or missing token");
        Some((StatusCode::UNAUTHORIZED, Json(json!({"error": "bad or missing bearer token"}))).into_response())
    }
}

async fn switchover(State(app): State<App>, headers: HeaderMap, body: Option<Json<SwitchoverBody>>) -> Response {
    if let Some(r) = refusal(&app, &headers, "switchover") {
        return r;
    }
    let to = body.map(|b| b.0).unwrap_or_default().to;
    send(&app, Command::Switchover { to }).await
}

async fn force_promote(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&app, &headers, "force-promote") {
        return r;
    }
    send(&app, Command::ForcePromote).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves the router on a free port; a fake loop answers every command with "ok".
    async fn serve(token: Option<&str>) -> String {
        let (tx, mut rx) = mpsc::channel::<CommandRequest>(1);
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send("ok".into());
            }
        });
        let handed_over = CancellationToken::new();
        handed_over.cancel();
        let app = router(Arc::new(Metrics::new()), tx, CancellationToken::new(), handed_over, token.map(Arc::from));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn post(url: &str, path: &str, token: Option<&str>) -> u16 {
        let mut r = reqwest::Client::new().post(format!("{url}{path}")).json(&json!({}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn commands_need_the_bearer_token() {
        let url = serve(Some("s3cret-token")).await;
        for path in ["/switchover", "/promote"] {
            assert_eq!(post(&url, path, None).await, 401, "{path} without a token");
            assert_eq!(post(&url, path, Some("wrong")).await, 401, "{path} with a wrong token");
            assert_eq!(post(&url, path, Some("s3cret-token")).await, 200, "{path} with the token");
        }
        let open = serve(None).await;
        assert_eq!(post(&open, "/switchover", Some("anything")).await, 403, "no token configured: refused");
        let live = reqwest::get(format!("{url}/livez")).await.unwrap().status().as_u16();
        assert_eq!(live, 200, "probes need no token");
        let handover = reqwest::get(format!("{url}/handover")).await.unwrap().status().as_u16();
        assert_eq!(handover, 200, "the handover state needs no token");
    }
}
