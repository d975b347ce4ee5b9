//! The primary's side: the replication listener, one session per standby, acknowledgements and
//! the sync gate.
//!
//! A session checks the standby's history against ours (its last tid and chain digest must be in
//! our history), sends a copy of the file to an empty standby, then ships every transaction after
//! the standby's last one: from the file while catching up, then as the history keeper announces
//! new durable transactions. Acknowledgements come back on the same connection and move the sync
//! gate (`StorageHost::set_gate`), which holds publication (the committer's answer and everyone's
//! invalidations) until enough standbys have the transaction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::error::LinkError;
use super::history::{self, Digest};
use super::wire::{self, Hello, Msg, PrimaryStatus, Refuse, RefuseCode, ShippedRecord, ShippedTxn, Welcome};
use super::{LinkSecurity, Replication, ServerRole, StandbyView, StorageRepl, tid_after};
use crate::storage::{Tid, status};

/// Transactions read from the file per batch while catching up.
const BATCH: usize = 64;
/// How long a standby has for each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Status (and liveness) messages to a standby at least this often.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Connections the replication listener holds at once (members are few; a flood of strangers
/// must not take the process's descriptors). Over it, a connection is closed at accept.
pub const MAX_LINK_CONNECTIONS: usize = 64;

/// Numbers the sessions, so an acknowledgement only counts for the session that received the
/// transactions (never for a newer or older connection under the same name).
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Starts a storage's primary-side tasks: the history keeper, and in sync mode with a timeout
/// the watchdog that degrades to async.
pub(super) fn start_storage(repl: Arc<Replication>, s: Arc<StorageRepl>, token: CancellationToken) {
    repl.update_gate(&s);
    tokio::spawn(keeper(s.clone(), token.clone()));
    if repl.opts.sync_standbys > 0
        && let Some(timeout) = repl.opts.sync_timeout
    {
        tokio::spawn(watchdog(repl, s, timeout, token));
    }
}

/// Records the history digest of every new durable transaction and announces it to the sessions.
async fn keeper(s: Arc<StorageRepl>, token: CancellationToken) {
    let mut durable = s.host.subscribe_durable();
    loop {
        // Small reads from the page cache and a hash: cheaper inline than a thread hand-off.
        if let Err(e) = s.advance_history() {
            tracing::error!(storage = %s.name, error = %e, "cannot record history digests; standbys wait");
        }
        tokio::select! {
            r = durable.changed() => if r.is_err() { return },
            _ = token.cancelled() => return,
        }
    }
}

/// Degrades sync replication to async once a commit has waited `timeout` for acknowledgements.
async fn watchdog(repl: Arc<Replication>, s: Arc<StorageRepl>, timeout: Duration, token: CancellationToken) {
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = token.cancelled() => return,
        }
        if s.host.blocked_for().is_some_and(|age| age >= timeout) {
            if repl.write_lease.required() {
                repl.request_degrade(&s);
            } else {
                let behind = repl.behind(&s);
                repl.degrade(&s, &behind);
            }
        }
    }
}

impl Replication {
    /// The standbys of `s` that lack durable transactions: those that connected and lag, and, on a
    /// TLS link, every other listed member that has not connected to this primary at all. Without
    /// the latter, a primary promoted while its peer is down (the old primary, gone with its host)
    /// knows no standby to leave behind and would never degrade, with a write lease, or would
    /// degrade recording no one, without.
    fn behind(&self, s: &StorageRepl) -> Vec<String> {
        let last = s.host.fs.last_transaction();
        let standbys = s.standbys.lock().expect("standbys lock poisoned");
        let mut behind: Vec<String> = standbys.iter().filter(|(_, v)| v.acked < last).map(|(n, _)| n.clone()).collect();
        if let LinkSecurity::Tls(tls) = &self.opts.link {
            behind.extend(tls.other_members(&self.opts.name).into_iter().filter(|m| !standbys.contains_key(m)));
        }
        behind.sort();
        behind
    }

    /// With a write lease, past the sync timeout: asks (in `/status`, `degrade_requested`) to drop
    /// the lagging standbys, and degrades only once the supervisor has confirmed every one of their
    /// out-of-sync marks is in the lease record. Until then commits wait. Returns whom it dropped.
    pub(super) fn request_degrade(&self, s: &StorageRepl) -> Vec<String> {
        let behind = self.behind(s);
        let ready = {
            let mut sync = s.sync.lock().expect("sync lock poisoned");
            if sync.degraded {
                return Vec::new();
            }
            let new: Vec<&String> = behind.iter().filter(|n| !sync.degrade_requested.contains(*n)).collect();
            if !new.is_empty() {
                tracing::warn!(storage = %s.name, standbys = ?new, timeout = ?self.opts.sync_timeout,
                    "standbys did not acknowledge in time: waiting for the supervisor to mark them out of sync in the lease before dropping them");
            }
            sync.degrade_requested.extend(behind.iter().cloned());
            !behind.is_empty() && behind.iter().all(|n| sync.mark_confirmed.contains(n))
        };
        if !ready {
            return Vec::new();
        }
        self.degrade(s, &behind);
        behind
    }

    /// The supervisor has written these standbys' out-of-sync marks into the lease record: they may
    /// now be dropped from the sync set, wherever a commit waits for them. Returns whom it dropped.
    pub(super) fn confirm_out_of_sync(&self, names: &[String]) -> Vec<String> {
        let mut dropped = Vec::new();
        for s in self.storages.values() {
            s.sync.lock().expect("sync lock poisoned").mark_confirmed.extend(names.iter().cloned());
            let waiting = self.opts.sync_timeout.is_some_and(|t| s.host.blocked_for().is_some_and(|age| age >= t));
            if waiting {
                dropped.extend(self.request_degrade(s));
            }
        }
        dropped.sort();
        dropped.dedup();
        dropped
    }

    /// Gives up waiting for standbys: records durably which ones lack acknowledged data (they are
    /// never to be promoted automatically until caught up), then publishes without acknowledgements.
    fn degrade(&self, s: &StorageRepl, behind: &[String]) {
        if let Err(e) = self.state().update(|st| st.standbys_out_of_sync.extend(behind.iter().cloned())) {
            // Without the record, degrading could later promote a standby that lacks commits.
            tracing::error!(storage = %s.name, error = %e, "cannot record out-of-sync standbys; commits stay blocked");
            return;
        }
        {
            let mut sync = s.sync.lock().expect("sync lock poisoned");
            sync.degraded = true;
            sync.degrade_requested.clear();
        }
        self.marks.send_modify(|v| *v += 1);
        self.metrics.repl_sync_degraded.inc();
        tracing::error!(storage = %s.name, standbys_out_of_sync = ?behind, timeout = ?self.opts.sync_timeout,
            "sync replication degraded to async: standbys did not acknowledge in time");
        self.update_gate(s);
    }

    /// A standby acknowledged `tid`: move the gate, leave degraded mode when enough standbys have
    /// caught up, and clear the out-of-sync mark of a standby that has everything published.
    fn on_ack(&self, s: &StorageRepl, name: &str, session: u64, tid: Tid) {
        {
            let mut standbys = s.standbys.lock().expect("standbys lock poisoned");
            match standbys.get_mut(name) {
                Some(v) if v.session == session && v.connected => {
                    if tid > v.acked {
                        v.acked = tid;
                        v.acked_at = Instant::now();
                    }
                }
                // A newer session under this name owns the view: this one's word no longer counts.
                _ => return,
            }
        }
        let k = self.opts.sync_standbys;
        let last = s.host.fs.last_transaction();
        let (degraded, floor) = {
            let mut sync = s.sync.lock().expect("sync lock poisoned");
            if tid >= last && (sync.degrade_requested.remove(name) | sync.mark_confirmed.remove(name)) {
                // Caught up: no longer a candidate to drop (its supervisor clears the lease mark).
                tracing::info!(storage = %s.name, standby = name, "standby caught up: no longer to be dropped");
            }
            if sync.degraded {
                let caught_up = s
                    .standbys
                    .lock()
                    .expect("standbys lock poisoned")
                    .values()
                    .filter(|v| v.connected && v.acked >= last)
                    .count();
                if caught_up >= k {
                    sync.degraded = false;
                    // Everything published so far went out without acknowledgements.
                    sync.floor = s.host.last_tid();
                    tracing::info!(storage = %s.name, "standbys caught up: sync replication resumed");
                }
            }
            (sync.degraded, sync.floor)
        };
        if !degraded && tid >= floor.max(last) && self.state().get().standbys_out_of_sync.contains(name) {
            match self.state().update(|st| {
                st.standbys_out_of_sync.remove(name);
            }) {
                Ok(_) => {
                    self.marks.send_modify(|v| *v += 1);
                    tracing::info!(storage = %s.name, standby = name, "standby caught up: no longer out of sync");
                }
                Err(e) => tracing::error!(error = %e, "cannot record that a standby is in sync again"),
            }
        }
        self.update_gate(s);
    }
}

/// Accepts standbys until `shutdown`.
pub async fn serve_listener(repl: Arc<Replication>, listener: TcpListener, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = matches!(repl.opts.link, LinkSecurity::Tls(_)), "replication listening");
    }
    // `--replication-allow` (default: any address) is checked at accept; mutual TLS then decides
    // who gets in. The gate bounds the connections and rate-limits the refusal log.
    let gate = Arc::new(zeo_listen::Gate::new(
        "replication",
        zeo_listen::AllowList::new(repl.opts.allow.clone()),
        MAX_LINK_CONNECTIONS,
        &repl.metrics.listener_refusals,
    ));
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "replication accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(admission) = gate.admit(peer) else { continue };
        let _ = stream.set_nodelay(true);
        let (repl, shutdown, gate) = (repl.clone(), shutdown.clone(), gate.clone());
        tokio::spawn(async move {
            let _admission = admission;
            tokio::select! {
                () = authenticate_then_serve(repl, &gate, stream, peer) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// accept -> authenticate (TLS handshake under its deadline, then a listed identity) -> session.
/// Nothing the peer sends is read as a frame before it is authenticated: no snapshot, no epoch.
async fn authenticate_then_serve(
    repl: Arc<Replication>,
    gate: &zeo_listen::Gate,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let ended = match &repl.opts.link {
        LinkSecurity::Tls(tls) => match tls.accept(stream).await {
            Ok((stream, identity)) => {
                tracing::info!(%peer, %identity, "replication peer authenticated");
                session(repl, stream, peer, Some(identity)).await
            }
            Err(e) => {
                // Counted, and logged at most once a second per reason (no other line): a flood
                // of strangers writes a few lines.
                gate.refuse(peer, e.reason(), &format_args!("replication peer refused, nothing sent: {e}"));
                return;
            }
        },
        LinkSecurity::Insecure => session(repl, stream, peer, None).await,
    };
    match ended {
        Ok(()) => tracing::info!(%peer, "replication session ended"),
        Err(e) => tracing::warn!(%peer, error = %e, "replication session ended"),
    }
}

impl Replication {
    /// Counts an authenticated session closed for breaking the link's rules (`frame`, `ack`), or
    /// a primary this standby refused (`tls`, `identity`, `auth_timeout`).
    pub(super) fn count_refusal(&self, reason: &'static str) {
        self.metrics.repl_link_refused.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
    }
}

/// The name a standby is known by: its certificate identity; its `Hello`'s name only on an
/// insecure link.
fn standby_name(hello: &Hello, identity: Option<&str>, peer: SocketAddr) -> String {
    match identity {
        Some(id) => {
            if hello.name != id {
                tracing::warn!(%peer, identity = id, hello_name = %hello.name,
                    "a standby's hello names itself differently from its certificate: it is known by its certificate identity");
            }
            id.to_owned()
        }
        None => hello.name.clone(),
    }
}

/// Reads a standby's frame: small ones only (see `MAX_STANDBY_FRAME`); an oversized one is counted.
async fn read_standby<R: AsyncRead + Unpin>(repl: &Replication, rd: &mut R) -> Result<(u64, Msg), LinkError> {
    let r = wire::read_max(rd, wire::MAX_STANDBY_FRAME).await;
    if let Err(LinkError::FrameTooLarge { .. }) = &r {
        repl.count_refusal("frame");
    }
    r
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, msg: &Msg, epoch: u64) -> Result<(), LinkError> {
    wr.write_all(&wire::encode(msg, epoch)).await?;
    Ok(())
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, code: RefuseCode, reason: String, epoch: u64) -> LinkError {
    let _ = send(wr, &Msg::Refuse(Refuse { code, reason: reason.clone() }), epoch).await;
    LinkError::RefusedStandby(reason)
}

/// Checks a peer's epoch: a higher one means a newer primary exists, so this one fences itself.
fn check_epoch(repl: &Arc<Replication>, theirs: u64) -> Result<(), String> {
    let ours = repl.epoch();
    if theirs > ours {
        let why = format!("a standby has seen epoch {theirs}, above ours ({ours}): a newer primary exists");
        tracing::error!("{why}; demoting this server");
        let r = repl.clone();
        tokio::spawn(async move {
            if let Err(e) = r.demote("a peer has a higher epoch").await {
                tracing::error!(error = %e, "self-demotion failed");
            }
        });
        return Err(why);
    }
    Ok(())
}

/// One standby's session on an accepted and authenticated stream (`identity`: its certificate's;
/// `None` on an insecure link).
async fn session<S>(
    repl: Arc<Replication>,
    stream: S,
    peer: SocketAddr,
    identity: Option<String>,
) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let epoch = repl.epoch();
    // The storage a diverged standby is probing.
    let mut probing: Option<Arc<StorageRepl>> = None;
    let (s, name, cursor, chain) = loop {
        let (theirs, msg) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_standby(&repl, &mut rd))
            .await
            .map_err(|_| LinkError::Protocol("handshake timed out".into()))??;
        if let Err(why) = check_epoch(&repl, theirs) {
            return Err(refuse(&mut wr, RefuseCode::Epoch, why, epoch).await);
        }
        match msg {
            Msg::Probe { tid, digest } => {
                let Some(p) = &probing else {
                    return Err(LinkError::Protocol("probe before hello".into()));
                };
                let matches = p.history().digest_at(&tid)? == Some(digest);
                send(&mut wr, &Msg::ProbeReply { matches }, epoch).await?;
            }
            Msg::Hello(h) => {
                let name = standby_name(&h, identity.as_deref(), peer);
                match handshake(&repl, &h, &name, &mut wr, epoch).await? {
                    Ok((s, cursor, chain)) => break (s, name, cursor, chain),
                    Err(diverged) => probing = Some(diverged),
                }
            }
            other => return Err(LinkError::Protocol(format!("unexpected {other:?} in the handshake"))),
        }
    };
    tracing::info!(%peer, standby = %name, storage = %s.name, from = %hex::encode(cursor), "standby connected");
    let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
    s.standbys.lock().expect("standbys lock poisoned").insert(
        name.clone(),
        StandbyView {
            peer: peer.to_string(),
            session,
            connected: true,
            told_out_of_sync: None,
            acked: cursor,
            acked_at: Instant::now(),
        },
    );
    // The highest tid sent on this session: the standby holds `cursor` already, and cannot
    // acknowledge what it was never sent. Raised before each send, as the ack may beat the return.
    let sent = Arc::new(AtomicU64::new(zeo_proto::u64_of(cursor)));
    let done = CancellationToken::new();
    let reader = {
        let (repl, s, name, done, sent) = (repl.clone(), s.clone(), name.clone(), done.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                match read_standby(&repl, &mut rd).await {
                    Ok((theirs, Msg::Ack { tid })) => {
                        if let Err(why) = check_epoch(&repl, theirs) {
                            tracing::warn!(%peer, standby = %name, reason = %why, "closing the session");
                            break;
                        }
                        let highest = sent.load(Ordering::Acquire);
                        if zeo_proto::u64_of(tid) > highest {
                            repl.count_refusal("ack");
                            tracing::error!(%peer, standby = %name, storage = %s.name, acked = %hex::encode(tid),
                                sent = %hex::encode(zeo_proto::p64(highest)),
                                "a standby acknowledged a transaction it was never sent: protocol error, closing the session");
                            break;
                        }
                        repl.on_ack(&s, &name, session, tid);
                    }
                    Ok((_, other)) => {
                        tracing::warn!(%peer, standby = %name, "unexpected {other:?} from a standby: closing the session");
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%peer, standby = %name, error = %e, "standby stream closed");
                        break;
                    }
                }
            }
            done.cancel();
        })
    };
    let result = stream_to(&repl, &s, &name, &mut wr, epoch, cursor, chain, &sent, &done).await;
    done.cancel();
    reader.abort();
    if let Some(v) = s.standbys.lock().expect("standbys lock poisoned").get_mut(&name)
        && v.session == session
    {
        v.connected = false;
    }
    repl.update_gate(&s);
    result
}

/// The outcome of a `Hello`: stream after `(tid, chain)`, or the standby diverged (it probes this
/// storage's history, rewinds, and says hello again).
type Handshake = Result<(Arc<StorageRepl>, Tid, Digest), Arc<StorageRepl>>;

/// Answers a `Hello`.
async fn handshake<W: AsyncWrite + Unpin>(
    repl: &Arc<Replication>,
    h: &Hello,
    name: &str,
    wr: &mut W,
    epoch: u64,
) -> Result<Handshake, LinkError> {
    if repl.role().0 != ServerRole::Primary {
        return Err(refuse(wr, RefuseCode::NotPrimary, "this server is not a primary".into(), epoch).await);
    }
    if h.version != wire::VERSION {
        return Err(refuse(wr, RefuseCode::Invalid, format!("unsupported protocol version {}", h.version), epoch).await);
    }
    let Some(s) = repl.storage(&h.storage).cloned() else {
        return Err(refuse(wr, RefuseCode::Invalid, format!("no storage {:?} here", h.storage), epoch).await);
    };
    s.advance_history()?;
    let last = wire::parse_tid(&h.last_tid)?;
    let digest = wire::parse_digest(&h.digest)?;
    let (cursor, chain) = if h.want_snapshot && last == [0; 8] && s.host.fs.last_transaction() != [0; 8] {
        send_snapshot(&s, wr, epoch).await?
    } else {
        let ours = s.history().digest_at(&last)?;
        match ours {
            Some(d) if d == digest => {}
            _ => {
                let _ = send(
                    wr,
                    &Msg::Refuse(Refuse {
                        code: RefuseCode::Diverged,
                        reason: format!("transaction {} is not in this primary's history", hex::encode(last)),
                    }),
                    epoch,
                )
                .await;
                return Ok(Err(s));
            }
        }
        // Pack marks every transaction up to the pack time 'p' (a prefix of the file): if the
        // first one the standby needs is packed, the history it needs is incomplete here.
        let next = tid_after(&last);
        if let Some(first) = s.host.fs.iterator(Some(&next), None)?.next() {
            let first = first?;
            if first.status == status::PACKED {
                let why = format!(
                    "this primary was packed past {} (transaction {} is packed): catching up from the log is impossible; re-seed the standby",
                    hex::encode(last),
                    hex::encode(first.tid)
                );
                return Err(refuse(wr, RefuseCode::Reseed, why, epoch).await);
            }
        }
        (last, digest)
    };
    let out_of_sync = repl.state().get().standbys_out_of_sync.iter().any(|n| n == name);
    let welcome = Welcome {
        primary_last_tid: hex::encode(s.host.fs.last_transaction()),
        out_of_sync,
        sync: repl.opts.sync_standbys > 0,
    };
    send(wr, &Msg::Welcome(welcome), epoch).await?;
    Ok(Ok((s, cursor, chain)))
}

/// Sends a copy of the durable file, its blobs and its history digests.
async fn send_snapshot<W: AsyncWrite + Unpin>(
    s: &Arc<StorageRepl>,
    wr: &mut W,
    epoch: u64,
) -> Result<(Tid, Digest), LinkError> {
    let copy = s.host.fs.durable_copy();
    s.advance_history()?;
    let (raw, digest) = {
        let h = s.history();
        let d = h.digest_at(&copy.last_tid)?.ok_or_else(|| LinkError::Protocol("history behind the file".into()))?;
        (h.raw_through(&copy.last_tid)?, d)
    };
    tracing::info!(storage = %s.name, bytes = copy.end, through = %hex::encode(copy.last_tid), "sending a copy of the file to a new standby");
    send(wr, &Msg::SnapshotBegin { size: copy.end, last_tid: copy.last_tid }, epoch).await?;
    let mut pos = 0;
    while pos < copy.end {
        let chunk = copy.read_at(pos, wire::CHUNK as u64)?;
        pos += chunk.len() as u64;
        send(wr, &Msg::SnapshotData(chunk), epoch).await?;
    }
    if let Some(dir) = &s.host.blobs {
        for (oid, tid, path) in dir.list()? {
            if tid <= copy.last_tid {
                send_blob(wr, &oid, &tid, &path, epoch).await?;
            }
        }
    }
    send(wr, &Msg::SnapshotEnd { chain: raw }, epoch).await?;
    Ok((copy.last_tid, digest))
}

async fn send_blob<W: AsyncWrite + Unpin>(
    wr: &mut W,
    oid: &Tid,
    tid: &Tid,
    path: &std::path::Path,
    epoch: u64,
) -> Result<(), LinkError> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; wire::CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        let last = n == 0;
        send(wr, &Msg::Blob { oid: *oid, tid: *tid, last, data: buf[..n].to_vec() }, epoch).await?;
        if last {
            return Ok(());
        }
    }
}

/// Ships every transaction after `cursor`, then new ones as they become durable, until the
/// standby goes away or this server stops being primary at this epoch.
#[allow(clippy::too_many_arguments)]
async fn stream_to<W: AsyncWrite + Unpin>(
    repl: &Arc<Replication>,
    s: &Arc<StorageRepl>,
    name: &str,
    wr: &mut W,
    epoch: u64,
    mut cursor: Tid,
    mut chain: Digest,
    sent: &AtomicU64,
    done: &CancellationToken,
) -> Result<(), LinkError> {
    let mut log_end = s.log_end.subscribe();
    let mut role = repl.role.subscribe();
    let mut marks = repl.marks.subscribe();
    let mut packs = s.host.subscribe_packs();
    packs.mark_unchanged();
    // A pack to announce once the standby has every transaction up to its pack time.
    let mut pending_pack: Option<Tid> = None;
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let shipped = repl.metrics.repl_shipped_transactions.get_or_create(&crate::metrics::storage_label(&s.name)).clone();
    loop {
        let target = *log_end.borrow_and_update();
        while cursor < target {
            let next = tid_after(&cursor);
            let batch: Vec<_> =
                s.host.fs.iterator(Some(&next), Some(&target))?.take(BATCH).collect::<Result<_, _>>()?;
            if batch.is_empty() {
                return Err(LinkError::Protocol(format!("transactions after {} are missing", hex::encode(cursor))));
            }
            for t in batch {
                if t.status == status::PACKED {
                    let why = format!(
                        "transaction {} was packed: the history after {} is incomplete here; re-seed the standby",
                        hex::encode(t.tid),
                        hex::encode(cursor)
                    );
                    return Err(refuse(wr, RefuseCode::Reseed, why, epoch).await);
                }
                let mut records = Vec::with_capacity(t.records.len());
                for r in &t.records {
                    let mut blob = false;
                    if let Some(dir) = &s.host.blobs {
                        let path = dir.blob_path(&r.oid, &r.tid);
                        if r.data.is_some() && tokio::fs::try_exists(&path).await.unwrap_or(false) {
                            send_blob(wr, &r.oid, &r.tid, &path, epoch).await?;
                            blob = true;
                        }
                    }
                    records.push(ShippedRecord {
                        oid: r.oid,
                        tid: r.tid,
                        data: r.data.clone(),
                        data_txn: r.data_txn,
                        blob,
                    });
                }
                chain = history::chain_next(&chain, &history::txn_digest(&t));
                let shipped_txn = ShippedTxn {
                    tid: t.tid,
                    chain,
                    status: t.status,
                    user: t.user,
                    description: t.description,
                    extension: t.extension,
                    records,
                };
                sent.fetch_max(zeo_proto::u64_of(t.tid), Ordering::AcqRel);
                send(wr, &Msg::Txn(Box::new(shipped_txn)), epoch).await?;
                shipped.inc();
                cursor = t.tid;
            }
        }
        if let Some(p) = pending_pack.take() {
            // Caught up to the log end: everything up to the pack time is on the standby.
            send(wr, &Msg::Pack { pack_tid: p }, epoch).await?;
        }
        let send_status = async |wr: &mut W| -> Result<(), LinkError> {
            let out_of_sync = repl.state().get().standbys_out_of_sync.contains(name);
            let status =
                PrimaryStatus { primary_last_tid: hex::encode(target), out_of_sync, sync: repl.opts.sync_standbys > 0 };
            send(wr, &Msg::Status(status), epoch).await?;
            if let Some(v) = s.standbys.lock().expect("standbys lock poisoned").get_mut(name) {
                v.told_out_of_sync = Some(out_of_sync);
            }
            Ok(())
        };
        tokio::select! {
            r = log_end.changed() => if r.is_err() { return Ok(()) },
            _ = status_tick.tick() => send_status(wr).await?,
            _ = marks.changed() => send_status(wr).await?,
            r = packs.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                pending_pack = *packs.borrow_and_update();
            }
            _ = role.changed() => {
                if *role.borrow() != (ServerRole::Primary, epoch) {
                    return Ok(());
                }
            }
            _ = done.cancelled() => return Ok(()),
        }
    }
}
