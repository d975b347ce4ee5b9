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

use rand::Rng;
use tokio::task::JoinSet;
use zeo_proto::Tid;
use zeo_proto::pickle::Value;

use crate::client::{Inner, Serving};
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::metrics::Metrics;

/// Exponential backoff with jitter between failed connection attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The delay before the next attempt: the current step scaled by a random factor in
    /// [0.5, 1.0] (so that clients that lost the same server spread out, yet none waits longer
    /// than the step), after which the step doubles up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(step)
    }

    /// Back to `min`, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `base` scaled by a random factor in [0.5, 1.0].
pub(crate) fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A connection generation allocated for an attempt: forgets its invalidation queue when
/// dropped (attempt failed, lost the race, or was aborted), unless disarmed.
struct GenerationGuard {
    generation: u64,
    inner: Option<Arc<Inner>>,
}

impl GenerationGuard {
    fn new(inner: &Arc<Inner>) -> GenerationGuard {
        GenerationGuard { generation: inner.new_generation(), inner: Some(inner.clone()) }
    }
}

impl Drop for GenerationGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.forget_generation(self.generation);
        }
    }
}

/// A registered connection that is not serving yet. Dropping it closes the connection and
/// forgets its invalidation queue, unless [`Candidate::disarm`] was called.
pub(crate) struct Candidate {
    pub conn: Arc<Connection>,
    pub generation: u64,
    pub server_tid: Tid,
    pub read_only: bool,
    guard: GenerationGuard,
}

impl Candidate {
    /// The candidate now serves: keep its connection and state.
    pub(crate) fn disarm(mut self) {
        self.guard.inner = None;
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if self.guard.inner.is_some() {
            self.conn.close("not selected");
        }
    }
}

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
    let mut cand = Candidate { conn, generation, server_tid: Tid::default(), read_only: false, guard };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(750));
        let steps = [100u64, 200, 400, 750, 750];
        for step in steps {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step), "{d:?} for {step}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads() {
        let samples: Vec<Duration> = (0..200).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(samples.iter().all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter should vary");
    }
}
