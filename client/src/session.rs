//! The shared core behind every [`Client`](crate::Client) handle: the cache and the serving
//! connection under one mutex, connection generations, verifying the cache against a freshly
//! registered connection, the oid pool, and [`ConnEvents`], which routes a connection's async
//! messages into the cache.
//!
//! The supervisor task (`reconnect`), transactions (`txn`) and the public handle (`client`)
//! all sit on top of this module; it knows none of them.
//!
//! # Connection generations
//!
//! Each connection attempt gets a generation number. Only the messages of the generation that
//! is currently *serving* may change the cache; a connection being verified queues its
//! invalidations; a retired connection's late messages are ignored. The check happens under the
//! same mutex as the cache, so retiring a connection (for example when `tpc_finish` times out)
//! takes effect before any later frame of it could be applied.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeo_proto::pickle::Value;
use zeo_proto::{Oid, Tid};

use crate::cache::Cache;
use crate::connection::{Connection, Events};
use crate::error::{ClientError, Hex, Result};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::options::ClientOptions;

/// How many oids one `new_oids` call asks for (ZEO's own batch size).
const OID_BATCH: i64 = 100;

/// The connection currently serving calls.
#[derive(Debug, Clone)]
pub(crate) struct Serving {
    pub conn: Arc<Connection>,
    pub generation: u64,
    pub read_only: bool,
}

/// State that changes together, under one mutex (see the module docs on generations).
#[derive(Debug)]
pub(crate) struct State {
    pub cache: Cache,
    /// Generation of the serving connection; 0 when none serves.
    pub generation: u64,
    next_gen: u64,
    /// Invalidations received by connections still being verified, by generation.
    queues: HashMap<u64, Vec<(Tid, Vec<Oid>)>>,
    /// The most recent reason a connection attempt failed or a connection was lost.
    last_error: Option<ClientError>,
    /// Oids handed out by the serving connection's `new_oids` and not used yet.
    oids: Vec<Oid>,
}

/// Everything behind a [`Client`](crate::Client), shared with the supervisor task and
/// transactions.
#[derive(Debug)]
pub(crate) struct Inner {
    pub opts: ClientOptions,
    pub state: Arc<Mutex<State>>,
    /// The serving connection, for callers to wait on.
    pub serving: watch::Sender<Option<Serving>>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the client closes; stops the supervisor.
    pub cancel: CancellationToken,
    /// One transaction at a time in two-phase commit per client: a ZEO connection carries
    /// one transaction at a time (a second `tpc_begin` would close it).
    pub commit_lock: tokio::sync::Mutex<()>,
    /// Transaction ids for `tpc_begin` (ZEO uses `id(txn)`: any int unique while in use).
    pub next_txn: AtomicU64,
}

impl Inner {
    /// The core of a client that has not connected yet, starting from `cache` (empty, or
    /// loaded from the persistent cache file).
    pub(crate) fn new(opts: ClientOptions, cache: Cache) -> Arc<Inner> {
        let state =
            State { cache, generation: 0, next_gen: 0, queues: HashMap::new(), last_error: None, oids: Vec::new() };
        let (serving, _) = watch::channel(None);
        Arc::new(Inner {
            opts,
            state: Arc::new(Mutex::new(state)),
            serving,
            metrics: Arc::new(Metrics::default()),
            cancel: CancellationToken::new(),
            commit_lock: tokio::sync::Mutex::new(()),
            next_txn: AtomicU64::new(1),
        })
    }

    /// Waits until a connection serves (or `deadline`), and returns it.
    pub(crate) async fn wait_serving(&self, deadline: Instant) -> Result<Serving> {
        let mut rx = self.serving.subscribe();
        loop {
            if self.cancel.is_cancelled() {
                return Err(ClientError::Closed);
            }
            if let Some(s) = rx.borrow_and_update().clone()
                && !s.conn.is_closed()
            {
                return Ok(s);
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Err(ClientError::Closed),
                changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(ClientError::Closed),
                    Err(_) => {
                        let why = self.last_error().map_or_else(|| "no connection yet".to_owned(), |e| e.to_string());
                        return Err(ClientError::disconnected(format!("not connected: {why}")));
                    }
                },
            }
        }
    }

    /// Stops a connection from serving: from now on none of its messages touch the cache.
    /// Idempotent; a no-op if another connection serves already.
    pub(crate) fn retire(&self, generation: u64) {
        {
            let mut st = lock(&self.state);
            if st.generation == generation {
                st.generation = 0;
                st.cache.reset_inflight();
            }
        }
        self.serving.send_if_modified(|s| {
            if s.as_ref().is_some_and(|s| s.generation == generation) {
                *s = None;
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn set_last_error(&self, e: ClientError) {
        lock(&self.state).last_error = Some(e);
    }

    pub(crate) fn last_error(&self) -> Option<ClientError> {
        lock(&self.state).last_error.clone()
    }

    /// Verifies the cache against a freshly registered connection and makes it the serving
    /// one (the rules are in the [`crate::client`] module docs).
    ///
    /// # Errors
    ///
    /// [`ClientError::ServerBehind`], or whatever `getInvalidations` failed with.
    pub(crate) async fn install(&self, cand: Candidate) -> Result<Serving> {
        let cache_tid = lock(&self.state).cache.last_tid();
        let server = cand.server_tid;
        enum Plan {
            Keep,
            DropCurrent(Vec<Oid>),
            Clear,
        }
        let (plan, verified) = match cache_tid {
            None => (Plan::Clear, server),
            Some(c) if c > server => {
                if !self.opts.drop_cache_if_server_behind {
                    return Err(ClientError::ServerBehind { cache_tid: c, server_tid: server });
                }
                tracing::warn!(cache = %Hex(&c), server = %Hex(&server), "server behind client: dropping the cache as configured");
                (Plan::Clear, server)
            }
            Some(c) if c == server => (Plan::Keep, server),
            Some(c) => match cand.conn.call("getInvalidations", vec![c.into()]).await? {
                Value::None => {
                    tracing::info!(cache = %Hex(&c), server = %Hex(&server), "server cannot list changes since the cache's tid: dropping the cache");
                    (Plan::Clear, server)
                }
                reply => {
                    let (tid, oids) = reply.as_seq().and_then(tid_oids).ok_or_else(|| {
                        ClientError::protocol(format!("getInvalidations returned {}", reply.type_name()))
                    })?;
                    if tid < server || tid < c {
                        // The list would not cover every commit up to the server's tid.
                        (Plan::Clear, server)
                    } else {
                        (Plan::DropCurrent(oids), tid)
                    }
                }
            },
        };

        let mut st = lock(&self.state);
        if st.cache.last_tid() != cache_tid {
            // Cannot happen (nothing serves while we verify), but if it did, what we verified
            // is not what the cache holds: start over from the server's view.
            st.cache.clear();
        } else {
            match plan {
                Plan::Keep => {}
                Plan::DropCurrent(oids) => st.cache.drop_current(&oids),
                Plan::Clear => st.cache.clear(),
            }
        }
        st.cache.set_last_tid(verified);
        let queued = st.queues.remove(&cand.generation).unwrap_or_default();
        for (tid, oids) in queued {
            st.cache.invalidate(tid, &oids);
        }
        st.cache.reset_inflight();
        st.generation = cand.generation;
        st.oids.clear();
        st.last_error = None;
        let serving = Serving { conn: cand.conn.clone(), generation: cand.generation, read_only: cand.read_only };
        // Counted before anyone can see the connection, so that a caller woken by it reads
        // counters that include it.
        if self.metrics.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            Metrics::inc(&self.metrics.reconnects);
        }
        self.serving.send_replace(Some(serving.clone()));
        drop(st);
        cand.disarm();
        tracing::info!(
            peer = %serving.conn.peer(),
            read_only = serving.read_only,
            last_tid = %Hex(&verified),
            "connected"
        );
        Ok(serving)
    }

    /// Allocates a generation for a connection attempt, with its invalidation queue.
    pub(crate) fn new_generation(&self) -> u64 {
        let mut st = lock(&self.state);
        st.next_gen += 1;
        let generation = st.next_gen;
        st.queues.insert(generation, Vec::new());
        generation
    }

    /// Forgets the queue of an attempt that will not serve.
    pub(crate) fn forget_generation(&self, generation: u64) {
        lock(&self.state).queues.remove(&generation);
    }

    /// The message sink of connection `generation` (see the module docs on generations).
    pub(crate) fn events(&self, generation: u64) -> Arc<dyn Events> {
        Arc::new(ConnEvents { generation, state: self.state.clone(), metrics: self.metrics.clone() })
    }

    /// One new oid, from the pool filled by `new_oids` on the serving connection.
    pub(crate) async fn new_oid(&self) -> Result<Oid> {
        if self.opts.read_only {
            return Err(ClientError::ReadOnly);
        }
        loop {
            if let Some(oid) = lock(&self.state).oids.pop() {
                return Ok(oid);
            }
            let serving = self.wait_serving(Instant::now() + self.opts.call_timeout).await?;
            if serving.read_only {
                return Err(ClientError::ReadOnly);
            }
            let reply = serving.conn.call("new_oids", vec![Value::Int(OID_BATCH)]).await?;
            let fresh: Vec<Oid> = reply
                .as_seq()
                .and_then(|items| items.iter().map(Value::as_id).collect())
                .ok_or_else(|| ClientError::protocol("new_oids did not return a list of oids"))?;
            if fresh.is_empty() {
                return Err(ClientError::protocol("new_oids returned no oids"));
            }
            let mut st = lock(&self.state);
            // Only keep them if they came from the connection that still serves: another
            // server (after a failover) may hand out the same numbers again.
            if st.generation == serving.generation {
                // Popped from the end: keep them in ascending order of use.
                st.oids.extend(fresh.into_iter().rev());
            }
        }
    }
}

/// A counted handle on the core, held by every [`Client`](crate::Client) and every
/// transaction: the supervisor runs while one exists.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl Session {
    /// The first handle on `inner`; dropping the last clone stops its supervisor.
    pub(crate) fn new(inner: Arc<Inner>) -> Session {
        let guard = DropGuard(inner.cancel.clone());
        Session { inner, _guard: Arc::new(guard) }
    }
}

/// Stops the supervisor when the last [`Session`] goes.
#[derive(Debug)]
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Routes one connection's async messages into the shared state.
struct ConnEvents {
    generation: u64,
    state: Arc<Mutex<State>>,
    metrics: Arc<Metrics>,
}

impl Events for ConnEvents {
    fn on_async(&self, method: &str, args: Vec<Value>) -> Result<()> {
        match method {
            "invalidateTransaction" => {
                let (tid, oids) =
                    tid_oids(&args).ok_or_else(|| ClientError::protocol("malformed invalidateTransaction"))?;
                let mut st = lock(&self.state);
                if st.generation == self.generation {
                    if st.cache.invalidate(tid, &oids) {
                        Metrics::inc(&self.metrics.invalidations);
                    }
                } else if let Some(queue) = st.queues.get_mut(&self.generation) {
                    queue.push((tid, oids));
                }
                Ok(())
            }
            // Storage size and object count after commits and packs; nothing uses them yet.
            "info" => Ok(()),
            other => {
                // ZEO's client logs unknown methods and keeps the connection.
                tracing::warn!(method = other, "unexpected message from the server ignored");
                Ok(())
            }
        }
    }
}

/// `(tid, [oid, ...])`: the args of `invalidateTransaction` and the `getInvalidations` reply.
fn tid_oids(items: &[Value]) -> Option<(Tid, Vec<Oid>)> {
    match items {
        [tid, oids] => Some((tid.as_id()?, oids.as_seq()?.iter().map(Value::as_id).collect::<Option<_>>()?)),
        _ => None,
    }
}

/// A connection generation allocated for an attempt: forgets its invalidation queue when
/// dropped (attempt failed, lost the race, or was aborted), unless disarmed.
pub(crate) struct GenerationGuard {
    pub generation: u64,
    inner: Option<Arc<Inner>>,
}

impl GenerationGuard {
    pub(crate) fn new(inner: &Arc<Inner>) -> GenerationGuard {
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
    /// A connection opened under `guard`'s generation, before `register` tells the rest.
    pub(crate) fn new(conn: Arc<Connection>, guard: GenerationGuard) -> Candidate {
        Candidate { conn, generation: guard.generation, server_tid: Tid::default(), read_only: false, guard }
    }

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
