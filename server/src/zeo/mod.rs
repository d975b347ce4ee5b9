//! The ZEO 5 server: what unmodified Python `ZEO.ClientStorage` processes connect to.
//!
//! # Layout
//! - `mod.rs`: `Server` (shared state) and `run`, the accept loop (the listener's gate: allow-list
//!   and connection cap; TLS under the register deadline; access policy; graceful shutdown).
//! - `conn`: one connection: handshake, read loop, and the dispatch table (method name → handler,
//!   and whether its reply is immediate, deferred or async).
//! - `methods/`: the method handlers, one file per group (session, load, history, txn, iter, pack).
//! - `blobs`: the blob directory (ZODB's bushy layout) and the blob methods (upload, download).
//! - `commit`: a connection's transaction state; the vote task (commit lock) and finish task
//!   (durability, group commit, invalidations).
//! - `host`: one served storage: commit lock, invalidation fan-out in commit order, invalidation
//!   queue.
//! - `outbox`: a connection's bounded outgoing queue.
//! - `args`: reading method arguments off the wire.
//! - `errors`: storage errors → ZODB exception replies.
//! - `convert`: the wire dicts of storage records (history, undo log, extension).

mod args;
mod blobs;
mod commit;
mod conn;
mod convert;
mod errors;
mod host;
mod methods;
mod outbox;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeo_proto::message::Encoding;
use zeo_proto::pickle::Value;

pub use blobs::BlobDir;
pub use host::StorageHost;

use zeo_listen::{Gate, InputBudget, PreAuth, PreAuthLimits, Reason};

use crate::access::{AccessMode, AccessPolicy};
use crate::metrics::Metrics;
use crate::tls::PeerIdentity;

/// Server-wide settings the protocol layer needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub encoding: Encoding,
    /// The whole server refuses writes.
    pub read_only: bool,
    pub max_frame: usize,
    /// Per-connection bound on queued outgoing bytes.
    pub output_limit: usize,
    pub transaction_timeout: Option<Duration>,
    pub max_connections: usize,
    /// Until `register`: the deadline from accept (TLS handshake included) and the frame cap.
    pub preauth: PreAuthLimits,
    /// What all connections together may buffer before `register`.
    pub preauth_input_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            encoding: Encoding::Pickle,
            read_only: false,
            max_frame: zeo_proto::frame::DEFAULT_MAX_FRAME,
            output_limit: 16 << 20,
            transaction_timeout: None,
            max_connections: 1000,
            preauth: PreAuthLimits::default(),
            preauth_input_bytes: 32 << 20,
        }
    }
}

/// State shared by every connection.
pub struct Server {
    pub hosts: HashMap<String, Arc<StorageHost>>,
    pub opts: ServerOptions,
    pub metrics: Arc<Metrics>,
    pub access: AccessPolicy,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The ZEO listener's allow-list and connection cap, and where its refusals are reported.
    pub gate: Gate,
    /// The pre-auth input budget (`preauth_input_bytes`); other pre-auth listeners may share it.
    pub input_budget: InputBudget,
    next_conn: AtomicU64,
    connections: AtomicU64,
}

impl Server {
    pub fn new(
        hosts: HashMap<String, Arc<StorageHost>>,
        opts: ServerOptions,
        metrics: Arc<Metrics>,
        access: AccessPolicy,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let gate = Gate::new("zeo", access.allow_list().clone(), opts.max_connections, &metrics.listener_refusals);
        let input_budget = InputBudget::new(opts.preauth_input_bytes);
        Server {
            hosts,
            opts,
            metrics,
            access,
            tls,
            gate,
            input_budget,
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
        }
    }

    /// Open client connections.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// `server_status()` for one storage, with ZEO's keys.
    pub fn status_value(&self, h: &StorageHost) -> Value {
        let s = |k: &str| Value::Str(k.into());
        let n = |a: &AtomicU64| Value::Int(i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let start = humantime::format_rfc3339_seconds(h.started).to_string();
        Value::Dict(vec![
            (s("connections"), Value::Int(i64::try_from(h.connections()).unwrap_or(i64::MAX))),
            (s("loads"), n(&h.stats.loads)),
            (s("stores"), n(&h.stats.stores)),
            (s("commits"), n(&h.stats.commits)),
            (s("aborts"), n(&h.stats.aborts)),
            (s("active_txns"), n(&h.stats.active_txns)),
            (s("lock_time"), Value::None),
            (s("conflicts"), n(&h.stats.conflicts)),
            (s("conflicts_resolved"), Value::Int(0)),
            (s("start"), Value::Str(start)),
            (s("waiting"), n(&h.stats.waiting)),
            (s("timeout-thread-is-alive"), Value::Bool(self.opts.transaction_timeout.is_some())),
            (s("last-transaction"), Value::Str(hex::encode(h.last_tid()))),
        ])
    }

    /// The `ruok` answer: `{storage: server_status}` as ASCII JSON.
    pub fn ruok_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (name, h) in &self.hosts {
            map.insert(name.clone(), crate::zeo::status_json(&self.status_value(h)));
        }
        serde_json::Value::Object(map).to_string()
    }

    /// `/status` for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let storages: serde_json::Map<String, serde_json::Value> = self
            .hosts
            .iter()
            .map(|(name, h)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "path": h.fs.path().display().to_string(),
                        "read_only": h.is_read_only(),
                        "last_tid": hex::encode(h.last_tid()),
                        "objects": h.fs.len(),
                        "size": h.fs.size(),
                        "connections": h.connections(),
                        "commits": h.stats.commits.load(Ordering::Relaxed),
                        "active_transactions": h.stats.active_txns.load(Ordering::Relaxed),
                        "waiting_for_commit_lock": h.stats.waiting.load(Ordering::Relaxed),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "role": if self.opts.read_only { "read-only" } else { "primary" },
            "connections": self.connection_count(),
            "storages": storages,
        })
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("storages", &self.hosts.keys().collect::<Vec<_>>())
            .field("opts", &self.opts)
            .finish()
    }
}

/// A status dict as JSON (for `ruok`).
fn status_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Dict(items) => serde_json::Value::Object(
            items.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), status_json(v)))).collect(),
        ),
        Value::Int(i) => serde_json::json!(i),
        Value::Bool(b) => serde_json::json!(b),
        Value::Str(s) => serde_json::json!(s),
        Value::Float(f) => serde_json::json!(f),
        _ => serde_json::Value::Null,
    }
}

/// Accepts connections until `shutdown`, then waits (up to `grace`) for connections to finish their
/// in-flight work. The caller binds the listener, so tests can use port 0.
pub async fn run(listener: TcpListener, server: Arc<Server>, shutdown: CancellationToken, grace: Duration) {
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: closes whatever is still open.
    let force = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Before any byte is read or TLS starts: the allow-list, then the connection cap. A refused
        // stream is dropped, which closes it.
        let Ok(admission) = server.gate.admit(addr) else { continue };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let shutdown = shutdown.clone();
        let force = force.clone();
        tracker.spawn(async move {
            server.connections.fetch_add(1, Ordering::Relaxed);
            accept_one(stream, addr, server.clone(), shutdown, force).await;
            server.connections.fetch_sub(1, Ordering::Relaxed);
            drop(admission);
        });
    }
    tracker.close();
    tracing::info!(connections = server.connection_count(), "stopped accepting; waiting for connections to finish");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over; aborting the transactions still open and closing their connections");
        force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
}

async fn accept_one(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    server: Arc<Server>,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    // The register deadline runs from here, so a slow TLS handshake spends it too.
    let preauth = PreAuth::start(server.opts.preauth, &server.input_budget);
    match &server.tls {
        None => {
            let Some(read_only) = read_only_for(&server, addr, None) else { return };
            conn::serve(stream, addr, preauth, read_only, server, shutdown, force).await;
        }
        Some(acceptor) => {
            let handshake = preauth.within("TLS handshake", crate::tls::accept_tls(acceptor, stream)).await;
            let (tls, identity) = match handshake {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return server.gate.refuse(addr, Reason::Tls, &format_args!("TLS handshake failed: {e}")),
                Err(e) => return server.gate.refuse(addr, e.reason(), &e),
            };
            let Some(read_only) = read_only_for(&server, addr, identity.as_ref()) else { return };
            conn::serve(tls, addr, preauth, read_only, server, shutdown, force).await;
        }
    }
}

/// Whether the access policy makes this client read-only; `None` (logged and counted) when it
/// refuses the client. `identity` is `None` on a plain connection.
fn read_only_for(server: &Server, addr: SocketAddr, identity: Option<&PeerIdentity>) -> Option<bool> {
    match server.access.mode_for(identity) {
        Ok(mode) => Some(mode == AccessMode::ReadOnly),
        Err(why) => {
            server.gate.refuse(addr, why.reason(), &why);
            None
        }
    }
}
