//! The supervisor: keeps one verified connection serving, for as long as the client lives.
//!
//! ```text
//!            +-------------- backoff (jittered, doubling) <-------------+
//!            v                                                          |
//!   Connecting: resolve every address, try them all in parallel ---- failed
//!            |  (a writable registration wins; a read-only one only with fallback)
//!            v
//!   Verifying: cache vs server (Inner::install) ------------------- refused (server behind)
//!            |
//!            v
//!   Serving: until the connection dies (EOF, error, heartbeat) ---> Connecting
//!            \  read-only fallback: every upgrade_interval, look for a writable server
//!             \ and switch to it when one registers
//! ```
//!
//! Host names are resolved at every attempt, so a service name that moves to another address
//! during a failover is followed.

use crate::transport::Endpoint;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use zeo_proto::pickle::Value;

use crate::backoff::Backoff;
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::metrics::Metrics;
use crate::session::{Candidate, GenerationGuard, Inner, Serving};

/// The supervisor task (see the module docs). Returns when the client closes.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(inner.opts.reconnect_min, inner.opts.reconnect_max);
    loop {
        let attempt = tokio::select! {
            () = inner.cancel.cancelled() => break,
            r = establish(&inner, false) => r,
        };
        match attempt {
            Ok(serving) => {
                backoff.reset();
                if !hold(&inner, serving).await {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to a ZEO server");
                inner.set_last_error(e);
                let delay = backoff.next_delay();
                tokio::select! {
                    () = inner.cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    if let Some(s) = inner.serving.send_replace(None) {
        inner.retire(s.generation);
        s.conn.close("client closed");
    }
}

/// Connects to the best available server and verifies the cache against it.
async fn establish(inner: &Arc<Inner>, writable_only: bool) -> Result<Serving> {
    let cand = connect_best(inner, writable_only).await?;
    inner.install(cand).await
}

/// Serves through `serving` until it dies (returns true: reconnect) or the client closes
/// (returns false). With read-only fallback, periodically looks for a writable server.
async fn hold(inner: &Arc<Inner>, mut serving: Serving) -> bool {
    loop {
        let upgrade = serving.read_only && inner.opts.read_only_fallback && !inner.opts.read_only;
        tokio::select! {
            () = inner.cancel.cancelled() => return false,
            () = serving.conn.closed() => {
                inner.retire(serving.generation);
                Metrics::inc(&inner.metrics.disconnects);
                let reason = serving.conn.close_reason().unwrap_or_else(|| "connection closed".to_owned());
                tracing::warn!(peer = %serving.conn.peer(), reason, "connection lost");
                inner.set_last_error(ClientError::disconnected(reason));
                return true;
            }
            () = tokio::time::sleep(inner.opts.upgrade_interval), if upgrade => {
                let Ok(cand) = connect_best(inner, true).await else { continue };
                tracing::info!(peer = %cand.conn.peer(), "a writable server is available: switching");
                // Retire first: the cache must not move while the new server verifies it.
                inner.retire(serving.generation);
                serving.conn.close("switching to a writable server");
                Metrics::inc(&inner.metrics.disconnects);
                match inner.install(cand).await {
                    Ok(s) => serving = s,
                    Err(e) => {
                        inner.set_last_error(e);
                        return true;
                    }
                }
            }
        }
    }
}

/// Resolves every address and tries them all at once. The first writable registration wins;
/// otherwise (with fallback, unless `writable_only`) the first read-only one.
async fn connect_best(inner: &Arc<Inner>, writable_only: bool) -> Result<Candidate> {
    let (addrs, mut last_err) = resolve(&inner.opts.addrs, inner.opts.connect_timeout).await;
    let mut attempts = JoinSet::new();
    for addr in addrs {
        let inner = inner.clone();
        attempts.spawn(async move { attempt(inner, addr, writable_only).await });
    }
    let mut fallback: Option<Candidate> = None;
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok(Ok(cand)) if !cand.read_only => return Ok(cand),
            Ok(Ok(cand)) => {
                // Keep the first read-only one in case no writable server answers.
                if fallback.is_none() {
                    fallback = Some(cand);
                }
            }
            Ok(Err(e)) => last_err = Some(e),
            Err(e) => last_err = Some(ClientError::disconnected(format!("connection attempt failed: {e}"))),
        }
    }
    // Dropping the JoinSet aborts attempts still running; their candidates clean up on drop.
    fallback.ok_or_else(|| last_err.unwrap_or_else(|| ClientError::disconnected("no server address")))
}

/// Resolves `host:port` strings now (never cached). Returns the addresses and the last
/// resolution error.
async fn resolve(addrs: &[String], timeout: Duration) -> (Vec<Endpoint>, Option<ClientError>) {
    let mut out = Vec::new();
    let mut err = None;
    for a in addrs {
        if let Some(path) = crate::transport::unix_path(a) {
            out.push(Endpoint::Unix(path));
            continue;
        }
        match tokio::time::timeout(timeout, tokio::net::lookup_host(a.as_str())).await {
            Ok(Ok(found)) => {
                for addr in found {
                    let ep = Endpoint::Tcp { addr, host: crate::transport::host_of(a) };
                    if !out.contains(&ep) {
                        out.push(ep);
                    }
                }
            }
            Ok(Err(e)) => err = Some(ClientError::disconnected(format!("resolving {a}: {e}"))),
            Err(_) => err = Some(ClientError::Timeout { op: format!("resolving {a}"), after: timeout }),
        }
    }
    (out, err)
}

/// Connects to one address and registers: read-only if configured; else writable, falling
/// back to read-only on a read-only server when allowed (ZEO sends the second `register` on
/// the same connection).
async fn attempt(inner: Arc<Inner>, addr: Endpoint, writable_only: bool) -> Result<Candidate> {
    // From here on the generation is forgotten again however this ends, including when this
    // task is aborted because another address won.
    let guard = GenerationGuard::new(&inner);
    let generation = guard.generation;
    let conn = Arc::new(Connection::open(addr.clone(), inner.opts.conn_config()?, inner.events(generation)).await?);
    let mut cand = Candidate::new(conn, guard);
    let opts = &inner.opts;
    let register = |read_only: bool| {
        let conn = cand.conn.clone();
        let storage = opts.storage.clone();
        let timeout = opts.connect_timeout;
        async move { conn.call_with("register", vec![Value::Str(storage), Value::Bool(read_only)], timeout, None).await }
    };
    let (reply, read_only) = if opts.read_only {
        (register(true).await?, true)
    } else {
        match register(false).await {
            Ok(reply) => (reply, false),
            Err(ClientError::ReadOnly) if opts.read_only_fallback && !writable_only => (register(true).await?, true),
            Err(e) => return Err(e),
        }
    };
    cand.server_tid = match reply {
        Value::Bytes(_) => reply.as_id(),
        // Protocol-4 style servers answer None and expect lastTransaction().
        Value::None => cand.conn.call("lastTransaction", Vec::new()).await?.as_id(),
        _ => None,
    }
    .ok_or_else(|| ClientError::protocol("register did not return a tid"))?;
    cand.read_only = read_only;
    tracing::debug!(peer = %addr, read_only, "registered");
    Ok(cand)
}
