//! [`Client`]: the cloneable handle applications use, its options, and the shared state behind
//! it (cache, serving connection, verification of the cache on every connection).
//!
//! # Connection generations
//!
//! Each connection attempt gets a generation number. Only the messages of the generation that
//! is currently *serving* may change the cache; a connection being verified queues its
//! invalidations; a retired connection's late messages are ignored. The check happens under the
//! same mutex as the cache, so retiring a connection (for example when `tpc_finish` times out)
//! takes effect before any later frame of it could be applied.
//!
//! # Verification on every (re)connect
//!
//! After `register` returns the server's last tid `S`, with the cache's tid `C`
//! (protocol §4.8, as `ZEO.ClientStorage` does):
//! - no tid yet (first connection): start at `S`;
//! - `C > S`: the server is behind what this client has seen: refuse it
//!   ([`ClientError::ServerBehind`]) and keep looking, unless
//!   [`ClientOptions::drop_cache_if_server_behind`] is set, which drops the cache and restarts
//!   from `S`;
//! - `C == S`: nothing changed;
//! - `C < S`: `getInvalidations(C)` returns `(T, oids)`: those oids lose their current revision
//!   and the cache moves to `T`; `None` (the server cannot say) drops the whole cache.
//!
//! Invalidations that arrived on the new connection meanwhile are then applied if newer than
//! the verified tid, and the connection starts serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeo_proto::frame::DEFAULT_MAX_FRAME;
use zeo_proto::pickle::Value;
use zeo_proto::{Oid, Tid};

use crate::cache::Cache;
use crate::connection::{ConnConfig, Connection, Events, lock};
use crate::error::{ClientError, Hex, Result};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::reconnect;
use crate::txn::{RetryPolicy, Transaction};

/// How many oids one `new_oids` call asks for (ZEO's own batch size).
const OID_BATCH: i64 = 100;

/// What a [`Client`] connects to and how patient it is.
///
/// Build with [`ClientOptions::new`] and adjust fields; [`Client::connect`] validates them.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Server addresses as `host:port`, or `unix:/path` (or an absolute path) for a Unix
    /// socket. Host names are resolved again at every connection attempt, so a service address
    /// that moves (failover) is followed. All addresses are
    /// tried in parallel; a writable server is preferred.
    pub addrs: Vec<String>,
    /// The storage name to register for (ZEO's default is `"1"`).
    pub storage: String,
    /// Register read-only: writes fail locally with [`ClientError::ReadOnly`].
    pub read_only: bool,
    /// Accept a read-only server when no writable one is reachable, and keep looking for a
    /// writable one every [`ClientOptions::upgrade_interval`] (ZEO's `read_only_fallback`).
    pub read_only_fallback: bool,
    /// Deadline of each call to the server, including the wait for a connection.
    pub call_timeout: Duration,
    /// Budget of one connection attempt: TCP connect, hello and `register`.
    pub connect_timeout: Duration,
    /// How long [`Client::connect`] waits for the first connection.
    pub wait_timeout: Duration,
    /// First delay between failed connection attempts; doubled after each failure.
    pub reconnect_min: Duration,
    /// Largest delay between failed connection attempts. Delays are jittered (50-100%).
    pub reconnect_max: Duration,
    /// How often an idle connection pings the server.
    pub heartbeat_interval: Duration,
    /// How long a ping may go unanswered before the connection is declared dead. A dead or
    /// stopped server is noticed within `heartbeat_interval + heartbeat_timeout`. It must also
    /// exceed the time needed to upload the largest transaction: pings queue behind the
    /// records being sent.
    pub heartbeat_timeout: Duration,
    /// Budget of the in-memory cache in bytes (0 disables caching).
    pub cache_bytes: usize,
    /// How often a read-only fallback connection looks for a writable server.
    pub upgrade_interval: Duration,
    /// How long a commit whose connection died during `tpc_finish` keeps trying to find out
    /// whether it committed before giving up with [`ClientError::CommitOutcomeUnknown`].
    pub commit_resolve_timeout: Duration,
    /// Accept a server that is behind the cache by dropping the cache (data the client saw
    /// may then be missing on that server). Off by default: such a server is refused.
    pub drop_cache_if_server_behind: bool,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// Retries of [`Client::transact`].
    pub retry: RetryPolicy,
    /// TCP keepalive: probe an idle connection after this long (then every second, 3 probes),
    /// so a server whose host vanished is noticed even between heartbeats. `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// Linux `TCP_USER_TIMEOUT`: a connection whose sent data stays unacknowledged this long
    /// is closed by the kernel (a dead host during a commit), instead of after the default
    /// retransmission timeout of about 15 minutes. `None`: the system default.
    pub tcp_user_timeout: Option<Duration>,
    /// TLS (with a client certificate when the server asks for one). The files are read again
    /// at every connection, so rotated certificates are picked up. `None`: plain.
    pub tls: Option<crate::TlsOptions>,
    /// A persistent cache file: loaded at start (then verified against the server like any
    /// cache after a disconnection), saved every [`ClientOptions::cache_save_interval`] when
    /// it changed, and on [`Client::close`]. Bounded by [`ClientOptions::cache_bytes`].
    pub cache_file: Option<std::path::PathBuf>,
    pub cache_save_interval: Duration,
}

impl ClientOptions {
    /// Defaults for the given addresses: storage `"1"`, writable, 30 s calls, 10 s connect,
    /// reconnect backoff 100 ms..5 s, heartbeat every 5 s with 10 s to answer, 64 MiB cache.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> ClientOptions {
        ClientOptions {
            addrs: addrs.into_iter().map(Into::into).collect(),
            storage: "1".to_owned(),
            read_only: false,
            read_only_fallback: false,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(10),
            cache_bytes: 64 << 20,
            upgrade_interval: Duration::from_secs(5),
            commit_resolve_timeout: Duration::from_secs(60),
            drop_cache_if_server_behind: false,
            max_frame: DEFAULT_MAX_FRAME,
            retry: RetryPolicy::default(),
            tcp_keepalive: Some(Duration::from_secs(5)),
            tcp_user_timeout: Some(Duration::from_secs(10)),
            tls: None,
            cache_file: None,
            cache_save_interval: Duration::from_secs(10),
        }
    }

    /// Checks the options for mistakes that would make the client misbehave.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] explaining the first rule broken.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(ClientError::Config(msg.to_owned()));
        if self.addrs.is_empty() {
            return fail("at least one server address is needed");
        }
        let zero = Duration::ZERO;
        if [self.call_timeout, self.connect_timeout, self.heartbeat_interval, self.heartbeat_timeout].contains(&zero) {
            return fail("call_timeout, connect_timeout, heartbeat_interval and heartbeat_timeout must be > 0");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return fail("reconnect_min must be > 0 and <= reconnect_max");
        }
        if self.read_only_fallback && self.upgrade_interval.is_zero() {
            return fail("upgrade_interval must be > 0 with read_only_fallback");
        }
        if self.retry.attempts == 0 {
            return fail("retry.attempts must be >= 1");
        }
        if self.cache_file.is_some() && self.cache_save_interval.is_zero() {
            return fail("cache_save_interval must be > 0 with a cache_file");
        }
        self.conn_config()?;
        Ok(())
    }

    /// The per-connection settings (reads the TLS files).
    pub(crate) fn conn_config(&self) -> Result<ConnConfig> {
        Ok(ConnConfig {
            connect_timeout: self.connect_timeout,
            call_timeout: self.call_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            max_frame: self.max_frame,
            tcp_keepalive: self.tcp_keepalive,
            tcp_user_timeout: self.tcp_user_timeout,
            tls: self.tls.as_ref().map(crate::transport::Tls::load).transpose()?,
        })
    }
}

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

/// Everything behind a [`Client`], shared with the supervisor task and transactions.
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
    /// one (see the module docs).
    ///
    /// # Errors
    ///
    /// [`ClientError::ServerBehind`], or whatever `getInvalidations` failed with.
    pub(crate) async fn install(&self, cand: reconnect::Candidate) -> Result<Serving> {
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

/// A handle on a ZEO storage: cheap to clone, usable from many tasks at once.
///
/// A supervisor task keeps one connection serving: it connects, verifies the cache, notices a
/// dead server (heartbeat), reconnects with backoff and jitter, and with read-only fallback keeps
/// looking for a writable server. Calls wait (within their deadline) while it reconnects.
/// The supervisor stops when the last handle is dropped or [`Client::close`] is called.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

/// Stops the supervisor when the last [`Client`] handle goes (transactions hold a handle).
#[derive(Debug)]
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Client {
    /// Starts a client and waits up to [`ClientOptions::wait_timeout`] for its first
    /// connection.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for invalid options; otherwise, if no connection was made in
    /// time, the last reason an attempt failed ([`ClientError::ReadOnly`] from a read-only
    /// server, [`ClientError::ServerBehind`], [`ClientError::Disconnected`], ...).
    pub async fn connect(opts: ClientOptions) -> Result<Client> {
        let wait = opts.wait_timeout;
        let client = Client::spawn(opts)?;
        match client.wait_connected(wait).await {
            Ok(()) => Ok(client),
            Err(e) => {
                let err = client.last_error().unwrap_or(e);
                client.close();
                Err(err)
            }
        }
    }

    /// Starts a client without waiting for a connection (calls wait for one, within their
    /// deadline). Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for invalid options.
    pub fn spawn(opts: ClientOptions) -> Result<Client> {
        opts.validate()?;
        let cancel = CancellationToken::new();
        let mut cache = Cache::new(opts.cache_bytes);
        if let Some(path) = &opts.cache_file {
            crate::cache_file::load_into(path, &mut cache);
        }
        let state =
            State { cache, generation: 0, next_gen: 0, queues: HashMap::new(), last_error: None, oids: Vec::new() };
        let (serving, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            opts,
            state: Arc::new(Mutex::new(state)),
            serving,
            metrics: Arc::new(Metrics::default()),
            cancel: cancel.clone(),
            commit_lock: tokio::sync::Mutex::new(()),
            next_txn: AtomicU64::new(1),
        });
        tokio::spawn(reconnect::run(inner.clone()));
        if inner.opts.cache_file.is_some() {
            tokio::spawn(save_periodically(inner.clone()));
        }
        Ok(Client { inner, _guard: Arc::new(DropGuard(cancel)) })
    }

    /// Waits until a connection serves.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] (with the last failure) after `timeout`,
    /// [`ClientError::Closed`] if the client is closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.inner.wait_serving(Instant::now() + timeout).await.map(|_| ())
    }

    /// Starts a transaction reading the snapshot of everything this client has seen committed
    /// so far: [`Client::last_tid`] at this moment (or, before the first connection, at the
    /// transaction's first load or commit).
    pub fn begin(&self) -> Transaction {
        let snapshot = lock(&self.inner.state).cache.last_tid();
        Transaction::new(self.clone(), snapshot)
    }

    /// Runs `f` in a transaction and commits it, retrying conflicts and disconnections with
    /// backoff, up to [`ClientOptions::retry`] attempts (default 3). `f` gets a fresh
    /// [`Transaction`] (a cheap handle) each attempt and must be safe to run again. If `f`
    /// commits or aborts the transaction itself, `transact` does not commit it again.
    ///
    /// # Errors
    ///
    /// The last attempt's error, or the first one that is not retryable
    /// ([`ClientError::is_retryable`]).
    pub async fn transact<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        crate::txn::transact(self, self.inner.opts.retry, f).await
    }

    /// [`Client::transact`] with its own retry policy.
    ///
    /// # Errors
    ///
    /// As [`Client::transact`].
    pub async fn transact_with<T, F, Fut>(&self, policy: RetryPolicy, f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        crate::txn::transact(self, policy, f).await
    }

    /// The current revision of `oid` as `(data, serial)`: a one-load transaction.
    ///
    /// # Errors
    ///
    /// As [`Transaction::load`].
    pub async fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        self.begin().load(oid).await
    }

    /// A new oid for an object about to be stored.
    ///
    /// # Errors
    ///
    /// [`ClientError::ReadOnly`] on a read-only client or connection; call errors.
    pub async fn new_oid(&self) -> Result<Oid> {
        self.inner.new_oid().await
    }

    /// Makes sure every invalidation the server sent before now has been applied (one `ping`
    /// round trip; replies and invalidations are applied in wire order), and returns the
    /// resulting [`Client::last_tid`]. A transaction begun afterwards sees every commit that was
    /// acknowledged to anyone before this call.
    ///
    /// # Errors
    ///
    /// Call errors.
    pub async fn sync(&self) -> Result<Tid> {
        let serving = self.inner.wait_serving(Instant::now() + self.inner.opts.call_timeout).await?;
        serving.conn.call("ping", Vec::new()).await?;
        Ok(self.last_tid().unwrap_or_default())
    }

    /// The newest tid this client has seen (every invalidation up to it is applied); `None`
    /// before the first connection.
    pub fn last_tid(&self) -> Option<Tid> {
        lock(&self.inner.state).cache.last_tid()
    }

    /// Whether a connection is serving right now.
    pub fn is_connected(&self) -> bool {
        self.inner.serving.borrow().as_ref().is_some_and(|s| !s.conn.is_closed())
    }

    /// Whether the client is read-only right now: by configuration, or because it fell back
    /// to a read-only server.
    pub fn is_read_only(&self) -> bool {
        self.inner.opts.read_only || self.inner.serving.borrow().as_ref().is_some_and(|s| s.read_only)
    }

    /// The address of the server serving right now.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        match self.server_endpoint()? {
            crate::Endpoint::Tcp { addr, .. } => Some(addr),
            crate::Endpoint::Unix(_) => None,
        }
    }

    /// Where the serving connection goes (TCP or Unix socket).
    pub fn server_endpoint(&self) -> Option<crate::Endpoint> {
        self.inner.serving.borrow().as_ref().map(|s| s.conn.peer().clone())
    }

    /// The message encoding the serving server chose (`Z5` pickle or `M5` msgpack).
    pub fn encoding(&self) -> Option<zeo_proto::message::Encoding> {
        self.inner.serving.borrow().as_ref().map(|s| s.conn.encoding())
    }

    /// Why the last connection attempt failed or the last connection was lost, if it has not
    /// been followed by a successful connection.
    pub fn last_error(&self) -> Option<ClientError> {
        self.inner.last_error()
    }

    /// The client's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// `(revisions cached, bytes charged)` of the in-memory cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let st = lock(&self.inner.state);
        (st.cache.len(), st.cache.bytes())
    }

    /// Closes the connection and stops reconnecting; later calls fail with
    /// [`ClientError::Closed`]. Dropping every handle does the same.
    pub fn close(&self) {
        self.inner.cancel.cancel();
        if self.inner.opts.cache_file.is_some()
            && let Err(e) = self.save_cache()
        {
            tracing::warn!(error = %e, "cannot save the persistent cache");
        }
    }

    /// Writes the persistent cache file now (a no-op without [`ClientOptions::cache_file`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] when the file cannot be written.
    pub fn save_cache(&self) -> Result<()> {
        save_cache(&self.inner)
    }

    /// The options the client runs with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }
}

/// Snapshots the cache under the state lock (cheap: data is reference-counted) and writes it.
fn save_cache(inner: &Inner) -> Result<()> {
    let Some(path) = &inner.opts.cache_file else { return Ok(()) };
    let Some(bytes) = crate::cache_file::encode(&lock(&inner.state).cache) else { return Ok(()) };
    crate::cache_file::write(path, &bytes).map_err(|e| ClientError::Io(format!("writing {}: {e}", path.display())))
}

/// Saves the cache file whenever the cache moved on, every `cache_save_interval`.
async fn save_periodically(inner: Arc<Inner>) {
    let mut saved = lock(&inner.state).cache.last_tid();
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            () = tokio::time::sleep(inner.opts.cache_save_interval) => {}
        }
        let now = lock(&inner.state).cache.last_tid();
        if now == saved {
            continue;
        }
        let inner2 = inner.clone();
        match tokio::task::spawn_blocking(move || save_cache(&inner2)).await {
            Ok(Ok(())) => saved = now,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the persistent cache"),
            Err(e) => tracing::warn!(error = %e, "cache save task failed"),
        }
    }
}
