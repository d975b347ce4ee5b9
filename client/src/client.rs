//! [`Client`]: the cloneable handle applications use. Its options are [`ClientOptions`]; the
//! state it shares with the supervisor task and transactions is the crate's session core.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use zeo_proto::{Oid, Tid};

use crate::cache::Cache;
use crate::error::{ClientError, Result};
use crate::metrics::MetricsSnapshot;
use crate::mutex::lock;
pub use crate::options::ClientOptions;
use crate::options::RetryPolicy;
use crate::reconnect;
use crate::session::{Inner, Session};
use crate::txn::Transaction;

/// A handle on a ZEO storage: cheap to clone, usable from many tasks at once.
///
/// A supervisor task keeps one connection serving: it connects, verifies the cache, notices a
/// dead server (heartbeat), reconnects with backoff and jitter, and with read-only fallback keeps
/// looking for a writable server. Calls wait (within their deadline) while it reconnects.
/// The supervisor stops when the last handle is dropped or [`Client::close`] is called.
#[derive(Debug, Clone)]
pub struct Client {
    /// Shared with every clone and every transaction (they keep the supervisor running).
    session: Session,
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
        let mut cache = Cache::new(opts.cache_bytes);
        if let Some(path) = &opts.cache_file {
            crate::cache_file::load_into(path, &mut cache);
        }
        let inner = Inner::new(opts, cache);
        tokio::spawn(reconnect::run(inner.clone()));
        if inner.opts.cache_file.is_some() {
            tokio::spawn(save_periodically(inner.clone()));
        }
        Ok(Client { session: Session::new(inner) })
    }

    /// Waits until a connection serves.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] (with the last failure) after `timeout`,
    /// [`ClientError::Closed`] if the client is closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.inner().wait_serving(Instant::now() + timeout).await.map(|_| ())
    }

    /// Starts a transaction reading the snapshot of everything this client has seen committed
    /// so far: [`Client::last_tid`] at this moment (or, before the first connection, at the
    /// transaction's first load or commit).
    pub fn begin(&self) -> Transaction {
        Transaction::begin(self.session.clone())
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
        crate::txn::transact(&self.session, self.inner().opts.retry, f).await
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
        crate::txn::transact(&self.session, policy, f).await
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
        self.inner().new_oid().await
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
        let serving = self.inner().wait_serving(Instant::now() + self.inner().opts.call_timeout).await?;
        serving.conn.call("ping", Vec::new()).await?;
        Ok(self.last_tid().unwrap_or_default())
    }

    /// The newest tid this client has seen (every invalidation up to it is applied); `None`
    /// before the first connection.
    pub fn last_tid(&self) -> Option<Tid> {
        lock(&self.inner().state).cache.last_tid()
    }

    /// Whether a connection is serving right now.
    pub fn is_connected(&self) -> bool {
        self.inner().serving.borrow().as_ref().is_some_and(|s| !s.conn.is_closed())
    }

    /// Whether the client is read-only right now: by configuration, or because it fell back
    /// to a read-only server.
    pub fn is_read_only(&self) -> bool {
        self.inner().opts.read_only || self.inner().serving.borrow().as_ref().is_some_and(|s| s.read_only)
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
        self.inner().serving.borrow().as_ref().map(|s| s.conn.peer().clone())
    }

    /// The message encoding the serving server chose (`Z5` pickle or `M5` msgpack).
    pub fn encoding(&self) -> Option<zeo_proto::message::Encoding> {
        self.inner().serving.borrow().as_ref().map(|s| s.conn.encoding())
    }

    /// Why the last connection attempt failed or the last connection was lost, if it has not
    /// been followed by a successful connection.
    pub fn last_error(&self) -> Option<ClientError> {
        self.inner().last_error()
    }

    /// The client's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner().metrics.snapshot()
    }

    /// `(revisions cached, bytes charged)` of the in-memory cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let st = lock(&self.inner().state);
        (st.cache.len(), st.cache.bytes())
    }

    /// Closes the connection and stops reconnecting; later calls fail with
    /// [`ClientError::Closed`]. Dropping every handle does the same.
    pub fn close(&self) {
        self.inner().cancel.cancel();
        if self.inner().opts.cache_file.is_some()
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
        save_cache(self.inner())
    }

    /// The options the client runs with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner().opts
    }

    fn inner(&self) -> &Inner {
        &self.session.inner
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
