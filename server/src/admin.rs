//! The admin HTTP listener: `/livez`, `/readyz`, `/metrics` and `/status`, for probes, Prometheus and
//! operators. It is separate from the ZEO port so that it can be firewalled differently.
//!
//! `router` builds the read-only endpoints; other modules add theirs (e.g. authenticated `POST
//! /promote`) by merging a router of their own and passing the result to `serve_router`:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn f(listener: tokio::net::TcpListener, source: Arc<dyn zeo_server::admin::AdminSource>,
//! #     metrics: Arc<zeo_server::metrics::Metrics>, gate: Arc<zeo_listen::Gate>,
//! #     shutdown: tokio_util::sync::CancellationToken) {
//! let control = axum::Router::new().route("/promote", axum::routing::post(|| async { "promoted" }));
//! let app = zeo_server::admin::router(source, metrics).merge(control);
//! let limits = zeo_listen::HttpLimits::default();
//! zeo_server::admin::serve_router(listener, gate, app, limits, shutdown).await.unwrap();
//! # }
//! ```
//!
//! Every endpoint, `/status` and `/metrics` included, is behind the listener's gate: the
//! `--admin-allow` list (or `--allow`), a connection cap, a request head deadline and a body limit
//! (zeo-listen's `serve_http`). Liveness probes come from the node, so its range must be allowed.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use zeo_listen::{AllowList, Gate, HttpLimits};

use crate::config::Config;
use crate::metrics::{self, Metrics};

/// What the admin endpoints report about the running server. Implemented by the server core.
pub trait AdminSource: Send + Sync {
    /// The `/status` document (storages, connections, last tids, ...).
    fn status(&self) -> serde_json::Value;
    /// Whether the server can serve clients now (storages open, listener bound, not shutting down).
    fn ready(&self) -> bool;
    /// Updates scrape-time gauges (storage sizes, last tid) just before `/metrics` is encoded. Runs on
    /// a blocking thread, so it may stat files.
    fn refresh_metrics(&self) {}
}

/// State shared by the built-in handlers.
#[derive(Clone)]
struct Admin {
    source: Arc<dyn AdminSource>,
    metrics: Arc<Metrics>,
}

/// The built-in endpoints. Unknown paths get 404, a wrong method on a known path 405.
pub fn router(source: Arc<dyn AdminSource>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(Admin { source, metrics })
}

/// The admin listener's gate: `--admin-allow` (or else `--allow`) and `--admin-max-connections`,
/// counting into `zeo_listener_refused_total{listener="admin"}`.
pub fn gate(config: &Config, metrics: &Metrics) -> Arc<Gate> {
    let allow = AllowList::new(config.admin_allow.clone().unwrap_or_else(|| config.allow.clone()));
    Arc::new(Gate::new("admin", allow, config.admin_max_connections, &metrics.listener_refusals))
}

/// The admin listener's HTTP bounds (`--admin-head-timeout`; the body and head caps are fixed: no
/// admin call sends more than a small JSON document).
pub fn limits(config: &Config) -> HttpLimits {
    HttpLimits { head_timeout: config.admin_head_timeout, ..HttpLimits::default() }
}

/// Serves the built-in endpoints until `shutdown` is cancelled, then lets in-flight requests finish.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    source: Arc<dyn AdminSource>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, gate, router(source, metrics), HttpLimits::default(), shutdown).await
}

/// Serves any admin router (the built-in one merged with others) behind `gate` and `limits` until
/// `shutdown` is cancelled.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve_router(
    listener: TcpListener,
    gate: Arc<Gate>,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    zeo_listen::serve_http(listener, gate, app, limits, shutdown).await
}

async fn readyz(State(admin): State<Admin>) -> Response {
    if admin.source.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    let source = admin.source.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || source.refresh_metrics()).await {
        // A panicking source must not take the endpoint down; serve the last values.
        tracing::warn!(error = %e, "refreshing metrics failed");
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], admin.metrics.encode()).into_response()
}

async fn status(State(admin): State<Admin>) -> axum::Json<serde_json::Value> {
    axum::Json(admin.source.status())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Fake {
        ready: AtomicBool,
        refreshed: AtomicUsize,
        metrics: Arc<Metrics>,
    }

    impl AdminSource for Fake {
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"storages": ["1"], "connections": 2})
        }
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
        fn refresh_metrics(&self) {
            let n = self.refreshed.fetch_add(1, Ordering::SeqCst) + 1;
            self.metrics.storage("1").objects.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Minimal HTTP/1.1 client: one request per connection, returns (status, content-type, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }

    async fn start() -> (SocketAddr, Arc<Fake>, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
        let metrics = Metrics::new();
        let fake =
            Arc::new(Fake { ready: AtomicBool::new(false), refreshed: AtomicUsize::new(0), metrics: metrics.clone() });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let gate = Arc::new(Gate::new("admin", AllowList::default(), 16, &metrics.listener_refusals));
        let task = tokio::spawn(serve(listener, gate, fake.clone(), metrics, shutdown.clone()));
        (addr, fake, shutdown, task)
    }

    #[tokio::test]
    async fn endpoints() {
        let (addr, fake, shutdown, task) = start().await;
        assert_eq!(request(addr, "GET", "/livez").await, (200, "text/plain; charset=utf-8".into(), "ok".into()));
        assert_eq!(request(addr, "GET", "/readyz").await.0, 503);
        assert_eq!(request(addr, "GET", "/readyz").await.2, "not ready");
        fake.ready.store(true, Ordering::SeqCst);
        assert_eq!(request(addr, "GET", "/readyz").await, (200, "text/plain; charset=utf-8".into(), "ready".into()));

        let (code, ctype, body) = request(addr, "GET", "/metrics").await;
        assert_eq!((code, ctype.as_str()), (200, metrics::CONTENT_TYPE));
        assert!(body.lines().any(|l| l == "zeo_storage_objects{storage=\"1\"} 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (_, _, body) = request(addr, "GET", "/metrics").await;
        assert!(body.lines().any(|l| l == "zeo_storage_objects{storage=\"1\"} 2"), "refreshed per scrape: {body}");

        let (code, ctype, body) = request(addr, "GET", "/status").await;
        assert_eq!((code, ctype.as_str()), (200, "application/json"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["connections"], 2);

        assert_eq!(request(addr, "GET", "/nope").await.0, 404);
        assert_eq!(request(addr, "POST", "/livez").await.0, 405);

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed after shutdown");
    }

    #[tokio::test]
    async fn other_modules_can_merge_routes() {
        let metrics = Metrics::new();
        let fake =
            Arc::new(Fake { ready: AtomicBool::new(true), refreshed: AtomicUsize::new(0), metrics: metrics.clone() });
        let control = Router::new().route("/promote", axum::routing::post(|| async { "promoted" }));
        let app = router(fake, metrics).merge(control);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let gate = Arc::new(Gate::new("admin", AllowList::default(), 16, &Metrics::new().listener_refusals));
        let task = tokio::spawn(serve_router(listener, gate, app, HttpLimits::default(), shutdown.clone()));
        assert_eq!(request(addr, "POST", "/promote").await.2, "promoted");
        assert_eq!(request(addr, "GET", "/livez").await.2, "ok");
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
