//! The HTTP side: routes, shared state, per-request bounds and metrics.
//!
//! Every handler runs its storage work through [`AppState::exec`], which runs it as its own
//! task and waits at most the request timeout. The task is never cancelled halfway: dropping
//! a commit between its `vote` and `tpc_finish` would leave the outcome to chance, so a slow
//! request is answered 503 while its transaction finishes (or fails) on its own, within the
//! storage client's deadlines.

mod api;
mod error;
mod html;
mod ops;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use tokio_util::task::TaskTracker;

pub use error::ApiError;
pub use ops::watch_readiness;

use crate::db::{Db, StoreError};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The storage.
    pub db: Db,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Longest time a request waits for its storage work.
    pub request_timeout: Duration,
    /// Tracks the storage tasks, so that shutdown can wait for the ones still running.
    pub tasks: TaskTracker,
    /// `/readyz` and its grace while the storage is briefly unreachable.
    pub readiness: Arc<Readiness>,
}

impl AppState {
    /// Runs `f` as its own task (see the module docs) and waits up to the request timeout.
    ///
    /// # Errors
    ///
    /// What `f` failed with, as an [`ApiError`]; [`ApiError::Unavailable`] on timeout.
    pub async fn exec<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.tasks.spawn(f(self.db.clone()));
        match tokio::time::timeout(self.request_timeout, task).await {
            Ok(Ok(result)) => result.map_err(ApiError::from),
            Ok(Err(join)) => {
                tracing::error!(error = %join, "request task failed");
                Err(ApiError::Internal("the request failed".into()))
            }
            Err(_) => Err(ApiError::Unavailable(format!(
                "no answer from the storage within {}; a write may still be saved",
                humantime::format_duration(self.request_timeout)
            ))),
        }
    }
}

/// Every route; `max_body` bounds request bodies.
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(|| async { Redirect::to("/wiki") }))
        .route("/wiki", get(html::index))
        .route("/wiki/{name}", get(html::page).post(html::save))
        .route("/wiki/{name}/history", get(html::history))
        .route("/api/wiki", get(api::wiki_list))
        .route("/api/wiki/{name}", get(api::wiki_get).put(api::wiki_put))
        .route("/api/wiki/{name}/history", get(api::wiki_history))
        .route("/api/counters", get(api::counters_all))
        .route("/api/counters/{name}", get(api::counter_get))
        .route("/api/counters/{name}/incr", post(api::counter_incr))
        .route("/api/kv/{key}", get(api::kv_get).put(api::kv_put).delete(api::kv_delete))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts and times every request by its route template.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only standard methods become label values: a client cannot invent new ones.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    tracing::debug!(method, route, status, "request");
    st.metrics.observe(method, &route, status, start.elapsed().as_secs_f64());
    resp
}
