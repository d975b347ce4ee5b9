//! `serve_http`: an axum router behind a gate, with every HTTP bound of issue 13: the allow-list
//! and connection cap at accept, a deadline for each request head, a head size cap, a body size
//! limit, and an idle timeout (keep-alive, stalled bodies, peers that stop reading). HTTP/1.1 only:
//! probes, Prometheus and the admin CLIs all speak it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::gate::{Admission, Gate};
use crate::idle::IdleTimeout;
use crate::refusals::Reason;

/// How long in-flight requests may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The HTTP bounds of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// From waiting for a request to its complete head. hyper times every wait for a head, so this
    /// is also how long an idle keep-alive connection stays open.
    pub head_timeout: Duration,
    /// No byte moved either way for this long: the connection is closed (idle keep-alive too).
    pub idle_timeout: Duration,
    /// The largest request head; hyper's floor is 8 KiB.
    pub max_head_bytes: usize,
    /// The largest request body.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    /// Sized for admin traffic: tiny requests from probes, scrapers and CLIs.
    fn default() -> Self {
        HttpLimits {
            head_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_head_bytes: 16 << 10,
            max_body_bytes: 64 << 10,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests finish
/// (up to a few seconds). The caller binds the listener, so tests can use port 0.
///
/// # Errors
/// I/O errors of the listener's address lookup; accept errors are logged and retried.
pub async fn serve_http(
    listener: TcpListener,
    gate: Arc<Gate>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(listener = gate.listener(), %addr, max_connections = gate.max_connections(), "HTTP listening");
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(listener = gate.listener(), error = %e, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(admission) = gate.admit(peer) else { continue };
        serve_connection(stream, peer, admission, &gate, &router, limits, &graceful);
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            listener = gate.listener(),
            "HTTP connections still open after the shutdown grace; dropping them"
        );
    }
    Ok(())
}

fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    gate: &Arc<Gate>,
    router: &Router,
    limits: HttpLimits,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let router = router.clone();
    // A head deadline on a connection that already had a request is its keep-alive idle end (hyper
    // times every head wait), not an attack: it is not counted as a refusal.
    let served = Arc::new(AtomicBool::new(false));
    let seen = served.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        seen.store(true, Ordering::Relaxed);
        async move { Ok::<_, std::convert::Infallible>(handle(router, req, limits.max_body_bytes).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(io, service);
    let conn = graceful.watch(conn);
    let gate = gate.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            if e.is_timeout() && !served.load(Ordering::Relaxed) {
                gate.refuse(peer, Reason::HeadTimeout, &e);
            } else {
                tracing::debug!(listener = gate.listener(), %peer, error = %e, "HTTP connection ended");
            }
        }
        drop(admission);
    });
}

/// One request: refused at once when its declared length is over the limit, otherwise routed with
/// a body that fails past the limit (axum's extractors answer that with 413).
async fn handle(router: Router, req: Request<Incoming>, max_body: usize) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let req = req.map(|body| Body::new(Limited::new(body, max_body)));
    match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests;
