//! zeo-client: a Rust client for ZEO storage servers (zeo-rs's own, or Python's `runzeo`).
//!
//! It does what `ZEO.ClientStorage` does for ZODB, at the storage level: objects are opaque
//! byte records named by 8-byte oids, revisions by 8-byte tids. Applications get a cloneable
//! [`Client`] and run [`Transaction`]s on it:
//!
//! ```no_run
//! # async fn example() -> zeo_client::Result<()> {
//! use zeo_client::{Client, ClientOptions};
//!
//! let client = Client::connect(ClientOptions::new(["127.0.0.1:8100"])).await?;
//! let oid = client.new_oid().await?;
//! let txn = client.begin();
//! txn.store(oid, zeo_proto::Z64, b"hello".to_vec())?;
//! let tid = txn.commit().await?;
//!
//! // Read-modify-write, retried on conflicts and disconnections (3 attempts by default).
//! client
//!     .transact(|txn| async move {
//!         let (data, serial) = txn.load(oid).await?;
//!         txn.store(oid, serial, [&data[..], b"!"].concat())
//!     })
//!     .await?;
//! # let _ = tid;
//! # Ok(())
//! # }
//! ```
//!
//! Guarantees:
//! - **Snapshot reads.** A transaction reads the database as of its snapshot tid, fixed when it
//!   begins; no read is newer or older than that, whatever other clients commit meanwhile.
//! - **Never stale.** The cache follows the server's invalidations in order, applies load
//!   replies in the same order (no load/invalidation race, ZEO issues 155 and 166), is verified
//!   with `getInvalidations` on every (re)connect, and a server that is behind the cache is
//!   refused.
//! - **Typed failures.** [`ClientError`] distinguishes conflicts, read-only, missing objects,
//!   disconnection, timeouts; a commit whose connection died in `tpc_finish` is looked up, not
//!   guessed ([`ClientError::CommitOutcomeUnknown`] only when that is impossible in time).
//! - **Liveness.** Every call has a deadline; a heartbeat notices a dead or stopped server within
//!   seconds; reconnection uses exponential backoff with jitter and re-resolves host names.
//!
//! Not yet here: blobs, undo and iteration APIs.
//!
//! # Layout
//!
//! - [`client`]: [`Client`], the public handle; what cache verification on (re)connect does.
//! - `options`: [`ClientOptions`] and [`RetryPolicy`], their defaults and validation.
//! - `session`: the shared core behind every handle: cache and serving connection under one
//!   mutex, connection generations, cache verification, the oid pool, async messages.
//! - `reconnect`: the supervisor task: connect to the best address, serve, notice loss,
//!   back off, upgrade from a read-only fallback server.
//! - `backoff`: doubling, jittered delays between attempts.
//! - `mutex`: the poison-tolerant `lock` every shared state here is taken with.
//! - `transport`: dialing a TCP (keepalive, `TCP_USER_TIMEOUT`, self-connect check) or Unix
//!   socket, optionally TLS with a client certificate.
//! - `connection`: one connection: hello, framing, calls matched by msgid (tuple msgids for
//!   `loadBefore`), reader/writer/heartbeat tasks, per-call deadlines.
//! - [`cache`]: the in-memory MVCC cache bounded in bytes, and its staleness contract.
//! - `cache_file`: the persistent cache file (a verified-on-connect snapshot of the cache).
//! - [`txn`]: [`Transaction`] (snapshot loads, buffered writes, two-phase commit, resolving a
//!   lost `tpc_finish`) and the retry loop behind [`Client::transact`].
//! - [`error`]: [`ClientError`] and the mapping from server error replies.
//! - [`metrics`]: counters ([`MetricsSnapshot`]).
//! - [`objects`]: ZODB's record format for `PersistentMapping`/`PersistentList` ([`objects::Object`]),
//!   loading and storing them in transactions, and creating the root object.

mod backoff;
pub mod cache;
mod cache_file;
pub mod client;
mod connection;
pub mod error;
pub mod metrics;
mod mutex;
pub mod objects;
mod options;
mod reconnect;
mod session;
mod transport;
pub mod txn;

pub use client::{Client, ClientOptions};
pub use error::{ClientError, Result};
pub use metrics::MetricsSnapshot;
pub use transport::{Endpoint, TlsOptions};
pub use txn::{COMMIT_TOKEN_KEY, RetryPolicy, Transaction};
pub use zeo_proto::{MAXTID, Oid, Tid, Z64, p64, u64_of};

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures applications spawn must be `Send` (checked at compile time; never run).
    #[allow(dead_code)]
    fn futures_are_send(client: Client) {
        fn send<T: Send>(_: T) {}
        send(client.transact(|txn| async move { txn.load(p64(1)).await.map(|_| ()) }));
        send(client.begin().commit());
        send(client.load(p64(1)));
        send(client.new_oid());
        send(client.sync());
        send(Client::connect(ClientOptions::new(["127.0.0.1:1"])));
    }
}
