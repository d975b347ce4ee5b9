//! Transactions: snapshot reads, buffered writes, two-phase commit, and [`Client::transact`].
//!
//! # Reads
//!
//! [`Client::begin`] fixes the snapshot: the newest tid whose invalidations the client has
//! applied (for a client that has never connected yet, the first load or commit fixes it once
//! connected). Every [`Transaction::load`] returns the revision that was current at that tid,
//! from the cache or with `loadBefore(oid, snapshot + 1)`, so a transaction never sees a
//! commit that happened after it started, from this client or any other, and never sees an
//! older revision either. Loads survive reconnects (history does not change).
//!
//! # Writes
//!
//! Stores and `check_current` calls are only buffered; [`Transaction::commit`] sends them in
//! one go on the serving connection: `tpc_begin`, `storea`..., `checkCurrentSerialInTransaction`...,
//! `vote`, `tpc_finish`. Conflicts come back from `vote`, as errors or (servers in client-side
//! conflict resolution mode, which zeo-rs always is) as conflict dicts; this client has no
//! conflict resolver, so both abort the transaction with [`ClientError::Conflict`] (or
//! [`ClientError::ReadConflict`]) and [`Client::transact`] runs the whole function again.
//!
//! # When the connection dies during `tpc_finish`
//!
//! Until `tpc_finish` is sent, a failure leaves nothing committed (the server aborts a voted
//! transaction when its connection goes), so the error is [`ClientError::Disconnected`] or
//! [`ClientError::Timeout`]. After it is sent, the transaction may or may not have committed,
//! and the client finds out rather than guessing:
//!
//! 1. Every commit carries a random 128-bit token in its transaction extension, under
//!    [`COMMIT_TOKEN_KEY`]. The connection is retired at once, so nothing more from it can
//!    touch the cache.
//! 2. On the next writable connection, the client commits an empty *barrier* transaction
//!    (description `zeo-rs: commit outcome check`). Its vote waits for the commit lock, which
//!    the lost transaction held from its vote until it finished or was aborted; and the server
//!    answers `tpc_finish` only after earlier commits are visible. So once the barrier's
//!    `tpc_finish` returns, the lost transaction is settled and, if committed, readable.
//! 3. `history(oid)` of one stored oid lists its revisions newest first, each with its
//!    transaction's extension keys. The lost transaction committed if and only if a revision
//!    newer than the transaction's snapshot carries its token; that revision's tid is the
//!    answer. A `POSKeyError` means the oid was never stored, so it did not commit.
//!
//! If no writable server can be reached within
//! [`ClientOptions::commit_resolve_timeout`](crate::ClientOptions::commit_resolve_timeout), the
//! error is [`ClientError::CommitOutcomeUnknown`], which [`Client::transact`] never retries.
//!
//! [`Client::begin`]: crate::Client::begin
//! [`Client::transact`]: crate::Client::transact

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use zeo_proto::pickle::Value;
use zeo_proto::{Oid, Tid, u64_of};

use crate::backoff::jitter;
use crate::connection::Hook;
use crate::error::{ClientError, Hex, Result, conflict_fields};
use crate::metrics::Metrics;
use crate::mutex::lock;
pub use crate::options::RetryPolicy;
use crate::session::{Inner, Serving, Session};

/// The transaction extension key holding each commit's random token (see the module docs).
pub const COMMIT_TOKEN_KEY: &str = "zeo-rs.commit-token";

/// The description of the empty barrier transaction used to settle a lost `tpc_finish`.
const BARRIER_DESCRIPTION: &[u8] = b"zeo-rs: commit outcome check";

/// The most revisions of one oid looked through when settling a lost `tpc_finish`.
const MAX_HISTORY: i64 = 1 << 16;

/// One buffered store.
#[derive(Debug, Clone)]
struct Store {
    oid: Oid,
    serial: Tid,
    data: Bytes,
}

#[derive(Debug, Default)]
struct TxnState {
    stores: Vec<Store>,
    checks: Vec<(Oid, Tid)>,
    user: Vec<u8>,
    description: Vec<u8>,
    finished: bool,
}

/// A transaction: a snapshot to read from and a buffer of writes (see the module docs).
///
/// A cheap handle: clones share the same transaction, so it can be moved into the futures
/// that [`Client::transact`](crate::Client::transact) runs. Methods take `&self`.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Keeps the client's supervisor running while the transaction lives.
    session: Session,
    /// Set at begin, or by the first load or commit when the client had no tid yet.
    snapshot: Arc<OnceLock<Tid>>,
    state: Arc<Mutex<TxnState>>,
}

impl Transaction {
    /// A transaction reading the snapshot of everything `session` has seen committed so far
    /// (see [`Client::begin`](crate::Client::begin)).
    pub(crate) fn begin(session: Session) -> Transaction {
        let snapshot = lock(&session.inner.state).cache.last_tid();
        let fixed = OnceLock::new();
        if let Some(tid) = snapshot {
            let _ = fixed.set(tid);
        }
        Transaction { session, snapshot: Arc::new(fixed), state: Arc::new(Mutex::new(TxnState::default())) }
    }

    /// The snapshot tid: this transaction sees exactly the commits with tid <= it. `None` only
    /// when the transaction began before the client's first connection and has not loaded
    /// anything yet.
    pub fn snapshot(&self) -> Option<Tid> {
        self.snapshot.get().copied()
    }

    /// The snapshot, fixing it now if the client had no tid at begin (waits for a connection).
    async fn fixed_snapshot(&self, deadline: Instant) -> Result<Tid> {
        if let Some(tid) = self.snapshot.get() {
            return Ok(*tid);
        }
        let inner = self.inner();
        inner.wait_serving(deadline).await?;
        let last = lock(&inner.state).cache.last_tid().unwrap_or_default();
        Ok(*self.snapshot.get_or_init(|| last))
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.session.inner
    }

    /// The revision of `oid` current at the snapshot, as `(data, serial)`. The serial is what
    /// a [`Transaction::store`] of a new version must name. Writes buffered in this
    /// transaction are not visible here.
    ///
    /// Waits for a connection (within the call deadline) when disconnected, and retries on a
    /// new connection when the connection drops mid-load.
    ///
    /// # Errors
    ///
    /// [`ClientError::PosKey`] if the object does not exist; [`ClientError::ReadConflict`] if it
    /// was created after the snapshot (retry the transaction); call errors.
    pub async fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        let inner = self.inner();
        if inner.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        Metrics::inc(&inner.metrics.loads);
        let deadline = Instant::now() + inner.opts.call_timeout;
        let snapshot = self.fixed_snapshot(deadline).await?;
        if let Some(hit) = lock(&inner.state).cache.load(&oid, &snapshot) {
            Metrics::inc(&inner.metrics.cache_hits);
            return Ok(hit);
        }
        Metrics::inc(&inner.metrics.cache_misses);
        loop {
            let serving = inner.wait_serving(deadline).await?;
            match self.load_from(&serving, oid, snapshot, deadline).await {
                Err(ClientError::Disconnected { .. }) if Instant::now() < deadline => {}
                Err(e @ ClientError::ReadConflict { .. }) => {
                    Metrics::inc(&inner.metrics.read_conflicts);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// One `loadBefore` on `serving`; its reply is cached on the reader task (see
    /// [`crate::cache`] on the load/invalidation race).
    async fn load_from(&self, serving: &Serving, oid: Oid, snapshot: Tid, deadline: Instant) -> Result<(Bytes, Tid)> {
        let before = zeo_proto::p64(u64_of(snapshot) + 1);
        let state = self.inner().state.clone();
        let generation = serving.generation;
        let make_hook = move || -> Option<Hook> {
            {
                let mut st = lock(&state);
                if st.generation != generation {
                    return None;
                }
                st.cache.begin_load(oid);
            }
            Some(Box::new(move |result: &Result<Value>| {
                let mut st = lock(&state);
                if st.generation != generation {
                    return;
                }
                let raced = st.cache.end_load(&oid);
                if let Ok(reply) = result
                    && let Ok(Some((data, start, end))) = parse_load(reply)
                {
                    st.cache.store(oid, data, start, end, !raced);
                }
            }))
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let reply = serving.conn.load_before(oid, before, timeout, make_hook).await.map_err(|e| match e {
            // The server's payload may lack the oid; we know it.
            ClientError::PosKey { .. } => ClientError::PosKey { oid },
            other => other,
        })?;
        match parse_load(&reply)? {
            Some((data, start, _)) => Ok((data, start)),
            // Every revision is newer than the snapshot (ZODB's MVCC adapter raises the same).
            None => Err(ClientError::ReadConflict { oid: Some(oid), serials: None }),
        }
    }

    /// Buffers a new revision of `oid`, based on the revision with tid `serial` (what
    /// [`Transaction::load`] returned; [`zeo_proto::Z64`] for a new object). A later store of
    /// the same oid in this transaction replaces the earlier one.
    ///
    /// # Errors
    ///
    /// [`ClientError::TransactionFinished`] after commit or abort.
    pub fn store(&self, oid: Oid, serial: Tid, data: impl Into<Bytes>) -> Result<()> {
        let mut st = lock(&self.state);
        if st.finished {
            return Err(ClientError::TransactionFinished);
        }
        let data = data.into();
        match st.stores.iter_mut().find(|s| s.oid == oid) {
            Some(s) => {
                s.serial = serial;
                s.data = data;
            }
            None => st.stores.push(Store { oid, serial, data }),
        }
        Ok(())
    }

    /// Requires that `oid` is still at revision `serial` when the transaction commits, without
    /// writing it (ZODB's `readCurrent`): the commit fails with
    /// [`ClientError::ReadConflict`] otherwise.
    ///
    /// # Errors
    ///
    /// [`ClientError::TransactionFinished`] after commit or abort.
    pub fn check_current(&self, oid: Oid, serial: Tid) -> Result<()> {
        let mut st = lock(&self.state);
        if st.finished {
            return Err(ClientError::TransactionFinished);
        }
        st.checks.push((oid, serial));
        Ok(())
    }

    /// Sets the transaction's user name (ZODB convention: `"<path> <user>"`, e.g. `"/ alice"`).
    pub fn set_user(&self, user: &str) {
        lock(&self.state).user = user.as_bytes().to_vec();
    }

    /// Appends a line to the transaction's description.
    pub fn note(&self, text: &str) {
        let mut st = lock(&self.state);
        if !st.description.is_empty() {
            st.description.push(b'\n');
        }
        st.description.extend_from_slice(text.as_bytes());
    }

    /// A new oid for an object this transaction will store (with serial `Z64`).
    ///
    /// # Errors
    ///
    /// As [`Client::new_oid`](crate::Client::new_oid).
    pub async fn new_oid(&self) -> Result<Oid> {
        self.inner().new_oid().await
    }

    /// Whether the transaction was committed or aborted.
    pub fn is_finished(&self) -> bool {
        lock(&self.state).finished
    }

    /// Drops the buffered writes. Nothing was sent to the server, so nothing else happens.
    pub fn abort(&self) {
        let mut st = lock(&self.state);
        st.finished = true;
        st.stores.clear();
        st.checks.clear();
    }

    /// Commits the buffered writes with two-phase commit. Returns the new tid, or `None` when
    /// there was nothing to commit. The client's cache then holds the written data, and
    /// transactions begun afterwards see it.
    ///
    /// # Errors
    ///
    /// - [`ClientError::Conflict`] / [`ClientError::ReadConflict`]: nothing committed; retry.
    /// - [`ClientError::ReadOnly`]: read-only client, connection or server.
    /// - [`ClientError::Disconnected`] / [`ClientError::Timeout`]: nothing committed (for a lost
    ///   `tpc_finish`, only after the outcome was looked up).
    /// - [`ClientError::CommitOutcomeUnknown`]: the outcome could not be looked up in time.
    /// - [`ClientError::TransactionFinished`]: committed or aborted already.
    pub async fn commit(&self) -> Result<Option<Tid>> {
        let (stores, checks, user, description) = {
            let mut st = lock(&self.state);
            if st.finished {
                return Err(ClientError::TransactionFinished);
            }
            st.finished = true;
            (
                std::mem::take(&mut st.stores),
                std::mem::take(&mut st.checks),
                std::mem::take(&mut st.user),
                std::mem::take(&mut st.description),
            )
        };
        if stores.is_empty() && checks.is_empty() {
            return Ok(None);
        }
        let inner = self.inner().clone();
        if inner.opts.read_only {
            return Err(ClientError::ReadOnly);
        }
        let _one_at_a_time = inner.commit_lock.lock().await;
        let serving = inner.wait_serving(Instant::now() + inner.opts.call_timeout).await?;
        if serving.read_only {
            return Err(ClientError::ReadOnly);
        }
        // Our tid will be newer than anything this client has seen, so newer than this.
        let last = lock(&inner.state).cache.last_tid().unwrap_or_default();
        let snapshot = *self.snapshot.get_or_init(|| last);
        let token = format!("{:032x}", rand::random::<u128>());
        let meta = Meta { user, description, token: Some(token.clone()) };
        match two_phase(&inner, &serving, &meta, &stores, &checks).await {
            Ok(tid) => {
                Metrics::inc(&inner.metrics.commits);
                Ok(Some(tid))
            }
            Err(Phase::Before(e)) => {
                match &e {
                    ClientError::Conflict { .. } => Metrics::inc(&inner.metrics.conflicts),
                    ClientError::ReadConflict { .. } => Metrics::inc(&inner.metrics.read_conflicts),
                    _ => {}
                }
                Err(e)
            }
            Err(Phase::Finish(e)) => {
                Metrics::inc(&inner.metrics.commit_resolutions);
                tracing::warn!(error = %e, "tpc_finish failed: looking up whether the transaction committed");
                let Some(first) = stores.first() else {
                    // Only check_current: nothing was written either way.
                    return Err(ClientError::disconnected(format!("tpc_finish failed ({e}); nothing was written")));
                };
                let outcome = resolve_outcome(&inner, first.oid, snapshot, &token, &e).await?;
                match outcome {
                    Some(tid) => {
                        tracing::info!(tid = %Hex(&tid), "the transaction whose tpc_finish failed did commit");
                        Metrics::inc(&inner.metrics.commits);
                        Ok(Some(tid))
                    }
                    None => {
                        tracing::info!("the transaction whose tpc_finish failed did not commit");
                        Err(ClientError::disconnected(format!(
                            "tpc_finish failed ({e}); the transaction did not commit"
                        )))
                    }
                }
            }
        }
    }
}

/// Transaction metadata for `tpc_begin`.
struct Meta {
    user: Vec<u8>,
    description: Vec<u8>,
    token: Option<String>,
}

/// Where a two-phase commit failed: before `tpc_finish` was sent (nothing committed) or in
/// `tpc_finish` (unknown).
enum Phase {
    Before(ClientError),
    Finish(ClientError),
}

/// `tpc_begin`, stores, checks, `vote`, `tpc_finish` on `serving`. The caller holds the
/// client's commit lock.
async fn two_phase(
    inner: &Arc<Inner>,
    serving: &Serving,
    meta: &Meta,
    stores: &[Store],
    checks: &[(Oid, Tid)],
) -> std::result::Result<Tid, Phase> {
    let conn = &serving.conn;
    let txn = Value::from(inner.next_txn.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let ext = match &meta.token {
        Some(token) => Value::Dict(vec![(Value::Str(COMMIT_TOKEN_KEY.into()), Value::Str(token.clone()))]),
        None => Value::Dict(Vec::new()),
    };
    let sent = async {
        conn.send_async(
            "tpc_begin",
            vec![
                txn.clone(),
                Value::Bytes(meta.user.clone()),
                Value::Bytes(meta.description.clone()),
                ext,
                Value::None,
                Value::Str(" ".into()),
            ],
        )
        .await?;
        for s in stores {
            conn.send_async("storea", vec![s.oid.into(), s.serial.into(), Value::Bytes(s.data.to_vec()), txn.clone()])
                .await?;
        }
        for (oid, serial) in checks {
            conn.send_async("checkCurrentSerialInTransaction", vec![(*oid).into(), (*serial).into(), txn.clone()])
                .await?;
        }
        conn.call("vote", vec![txn.clone()]).await
    };
    let voted = match sent.await {
        Ok(v) => v,
        Err(e) => {
            abort_on_server(inner, serving, &txn).await;
            return Err(Phase::Before(e));
        }
    };
    // A list of oids the server resolved or undid (their data is not ours: don't cache it),
    // or, in client-side conflict resolution mode, conflict dicts. The server keeps the commit
    // lock for us after conflict dicts until we re-vote or abort: abort now.
    let items = voted.as_seq().unwrap_or(&[]);
    if let Some(conflict) = items.iter().find(|v| v.as_dict().is_some()) {
        let (oid, serials) = conflict_fields(conflict);
        abort_on_server(inner, serving, &txn).await;
        return Err(Phase::Before(ClientError::Conflict { oid, serials }));
    }
    let uncached: Vec<Oid> = items.iter().filter_map(Value::as_id).collect();

    let written: Vec<(Oid, Bytes)> = stores.iter().map(|s| (s.oid, s.data.clone())).collect();
    let state = inner.state.clone();
    let generation = serving.generation;
    // Runs on the reader task, in wire order with invalidations: the server never echoes our
    // own commit as an invalidation, so this is where the cache learns about it.
    let hook: Hook = Box::new(move |result: &Result<Value>| {
        if let Ok(tid) = result.as_ref().map(Value::as_id)
            && let Some(tid) = tid
        {
            let mut st = lock(&state);
            if st.generation == generation {
                st.cache.commit(tid, &written, &uncached);
            }
        }
    });
    match conn.call_with("tpc_finish", vec![txn], inner.opts.call_timeout, Some(hook)).await {
        Ok(v) => v.as_id().ok_or_else(|| {
            // A reply we cannot read: treat like a lost reply and look the outcome up.
            inner.retire(generation);
            conn.close("unreadable tpc_finish reply");
            Phase::Finish(ClientError::protocol("tpc_finish did not return a tid"))
        }),
        Err(e) => {
            // Nothing more from this connection may touch the cache: the outcome is unknown
            // until looked up on a fresh connection.
            inner.retire(generation);
            conn.close("tpc_finish failed");
            Err(Phase::Finish(e))
        }
    }
}

/// Best effort `tpc_abort`; if it fails, the connection is closed, which makes the server abort
/// the transaction and release any commit lock it holds for us.
async fn abort_on_server(inner: &Arc<Inner>, serving: &Serving, txn: &Value) {
    if let Err(e) = serving.conn.call("tpc_abort", vec![txn.clone()]).await
        && !matches!(e, ClientError::Disconnected { .. })
    {
        tracing::warn!(error = %e, "tpc_abort failed: dropping the connection so the server aborts");
        inner.retire(serving.generation);
        serving.conn.close("tpc_abort failed");
    }
}

/// Finds out whether the transaction with `token` committed (see the module docs).
async fn resolve_outcome(
    inner: &Arc<Inner>,
    oid: Oid,
    snapshot: Tid,
    token: &str,
    cause: &ClientError,
) -> Result<Option<Tid>> {
    let deadline = Instant::now() + inner.opts.commit_resolve_timeout;
    let mut last = cause.clone();
    loop {
        if Instant::now() >= deadline {
            return Err(ClientError::CommitOutcomeUnknown {
                reason: format!("tpc_finish failed ({cause}) and the outcome could not be looked up in time: {last}"),
            });
        }
        let serving = match inner.wait_serving(deadline).await {
            Ok(s) => s,
            Err(ClientError::Closed) => {
                return Err(ClientError::CommitOutcomeUnknown {
                    reason: format!("tpc_finish failed ({cause}) and the client was closed"),
                });
            }
            Err(e) => {
                last = e;
                continue;
            }
        };
        if serving.read_only {
            // The barrier needs a writable server; wait for the supervisor to find one.
            last = ClientError::ReadOnly;
            tokio::time::sleep(jitter(Duration::from_millis(200))).await;
            continue;
        }
        let barrier = Meta { user: Vec::new(), description: BARRIER_DESCRIPTION.to_vec(), token: None };
        let settled = match two_phase(inner, &serving, &barrier, &[], &[]).await {
            Ok(_) => find_commit(&serving, oid, snapshot, token).await,
            Err(Phase::Before(e) | Phase::Finish(e)) => Err(e),
        };
        match settled {
            Ok(found) => return Ok(found),
            Err(e @ (ClientError::Disconnected { .. } | ClientError::Timeout { .. })) => last = e,
            Err(e) => {
                return Err(ClientError::CommitOutcomeUnknown {
                    reason: format!("tpc_finish failed ({cause}) and looking up the outcome failed: {e}"),
                });
            }
        }
    }
}

/// Looks through `history(oid)` for a revision newer than `snapshot` whose transaction carries
/// `token`.
async fn find_commit(serving: &Serving, oid: Oid, snapshot: Tid, token: &str) -> Result<Option<Tid>> {
    let mut size: i64 = 16;
    loop {
        let list = match serving.conn.call("history", vec![oid.into(), Value::Int(size)]).await {
            Ok(v) => v,
            Err(ClientError::PosKey { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let entries = list.as_seq().ok_or_else(|| ClientError::protocol("history did not return a list"))?;
        for entry in entries {
            let tid = entry
                .dict_get("tid")
                .and_then(Value::as_id)
                .ok_or_else(|| ClientError::protocol("history entry without a tid"))?;
            if tid <= snapshot {
                return Ok(None);
            }
            if entry.dict_get(COMMIT_TOKEN_KEY).and_then(Value::as_str) == Some(token) {
                return Ok(Some(tid));
            }
        }
        if i64::try_from(entries.len()).unwrap_or(i64::MAX) < size {
            return Ok(None);
        }
        if size >= MAX_HISTORY {
            return Err(ClientError::CommitOutcomeUnknown {
                reason: format!("more than {MAX_HISTORY} revisions of {} since the transaction began", Hex(&oid)),
            });
        }
        size *= 4;
    }
}

/// A `loadBefore` reply: `None`, or `(data, start, end or None)`.
fn parse_load(v: &Value) -> Result<Option<(Bytes, Tid, Option<Tid>)>> {
    if v.is_none() {
        return Ok(None);
    }
    let bad = || ClientError::protocol(format!("loadBefore returned a {}", v.type_name()));
    let [data, start, end] = v.as_seq().ok_or_else(bad)? else {
        return Err(bad());
    };
    let data = Bytes::copy_from_slice(data.as_bytes().ok_or_else(bad)?);
    let start = start.as_id().ok_or_else(bad)?;
    let end = if end.is_none() { None } else { Some(end.as_id().ok_or_else(bad)?) };
    Ok(Some((data, start, end)))
}

/// [`Client::transact`](crate::Client::transact): run `f` and commit, retrying what
/// [`ClientError::is_retryable`] says.
pub(crate) async fn transact<T, F, Fut>(session: &Session, policy: RetryPolicy, mut f: F) -> Result<T>
where
    F: FnMut(Transaction) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = policy.attempts.max(1);
    let mut wait = policy.backoff_min;
    let mut attempt = 1;
    loop {
        let txn = Transaction::begin(session.clone());
        let outcome = match f(txn.clone()).await {
            Ok(value) if txn.is_finished() => Ok(value),
            Ok(value) => txn.commit().await.map(|_| value),
            Err(e) => {
                txn.abort();
                Err(e)
            }
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::debug!(error = %e, attempt, "retrying transaction");
                Metrics::inc(&session.inner.metrics.retries);
                tokio::time::sleep(jitter(wait)).await;
                wait = (wait * 2).min(policy.backoff_max);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_proto::p64;

    #[test]
    fn parses_load_replies() {
        assert_eq!(parse_load(&Value::None), Ok(None));
        let reply = Value::Tuple(vec![Value::Bytes(b"d".to_vec()), p64(3).into(), Value::None]);
        assert_eq!(parse_load(&reply), Ok(Some((Bytes::from_static(b"d"), p64(3), None))));
        let reply = Value::List(vec![Value::Bytes(b"d".to_vec()), p64(3).into(), p64(5).into()]);
        assert_eq!(parse_load(&reply), Ok(Some((Bytes::from_static(b"d"), p64(3), Some(p64(5))))));
        assert!(parse_load(&Value::Tuple(vec![Value::None, p64(3).into(), Value::None])).is_err());
        assert!(parse_load(&Value::Int(3)).is_err());
    }
}
