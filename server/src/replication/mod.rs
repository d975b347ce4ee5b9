//! Replication: a warm standby fed by transaction-log shipping (docs/REPLICATION.md).
//!
//! A primary with `--replication-listen` streams every durable transaction to the standbys that
//! connect; a standby (`--standby-of`) applies them through the storage's restore path with the
//! same tids and data, fsyncs, acknowledges, and serves read-only clients with invalidations. In
//! sync mode (`--sync-standbys K`) a commit is published (answered, invalidated) only once K
//! standbys acknowledged it; with `--sync-timeout` the primary degrades to async after that long,
//! having first recorded durably which standbys it left behind.
//!
//! # Layout
//! - `history`: the hash chain over transactions (`Data.fs.rschain`): prefix checks, common point.
//! - `state`: the persisted epoch, role, primary and out-of-sync marks (`Data.fs.rsrepl`).
//! - `wire`: the stream's frames.
//! - `error`: `LinkError`, why a session ended, on either end of the link.
//! - `primary`: the listener, one session per standby (handshake, snapshot, catch-up, live),
//!   acknowledgements and the sync gate.
//! - `standby`: following a primary: handshake, probing for the common point and rewinding,
//!   receiving a snapshot, applying and acknowledging.
//! - `control`: promote, demote, rejoin, and the admin routes that call them.
//! - `write_lease`: the server's own fence: the boottime clock and the grant arithmetic.
//! - `lease_control`: the grant and out-of-sync admin routes, and the expiry timer that demotes.

pub mod control;
mod error;
pub mod history;
mod lease_control;
mod primary;
mod standby;
pub mod state;
pub mod wire;
pub mod write_lease;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{StorageError, Tid};
use crate::zeo::StorageHost;
pub use error::LinkError;
use history::History;
pub use primary::serve_listener;
use state::StateFile;
pub use state::{ReplState, ServerRole};
use write_lease::WriteLease;

/// Replication settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Follow this primary (its replication address, `host:port`).
    pub standby_of: Option<String>,
    /// This server's name in the primary's status and out-of-sync marks.
    pub name: String,
    /// Standbys that must acknowledge a commit before it is answered (0: async).
    pub sync_standbys: usize,
    /// After this long without enough acknowledgements, degrade to async (`None`: block, strict).
    pub sync_timeout: Option<Duration>,
    /// Bearer token for the admin API's POST calls (`None`: they are refused).
    pub admin_token: Option<String>,
    /// Start read-only (demoted) even if the last role was primary, until a supervisor promotes
    /// this server or tells it to rejoin: a restarted old primary never takes writes on its own.
    pub wait_for_supervisor: bool,
    /// Storages configured read-only stay read-only whatever the role.
    pub read_only_storages: Vec<String>,
    /// Acknowledge commits only within a write grant from the supervisor (`POST /write-lease`).
    pub require_write_lease: bool,
    /// The longest grant kept, whatever a supervisor asks for.
    pub max_write_grant: Duration,
    /// How the link authenticates its peers.
    pub link: LinkSecurity,
    /// Networks allowed on the replication listener (`--replication-allow`); empty: any.
    pub allow: Vec<ipnet::IpNet>,
}

/// The replication link's security (issue 13, docs/SECURITY.md).
#[derive(Debug, Clone, Default)]
pub enum LinkSecurity {
    /// Plain TCP, peers unauthenticated, the standby's name taken from its `Hello`
    /// (`--replication-insecure`, labs only). The default only for in-process tests: the
    /// configuration refuses a replicating server with neither TLS nor the flag.
    #[default]
    Insecure,
    /// Mutual TLS; a standby's name is its certificate identity.
    Tls(crate::tls::link::LinkTls),
}

/// The default `--max-write-grant`.
pub const DEFAULT_MAX_WRITE_GRANT: Duration = Duration::from_secs(30);

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            standby_of: None,
            name: String::new(),
            sync_standbys: 0,
            sync_timeout: None,
            admin_token: None,
            wait_for_supervisor: false,
            read_only_storages: Vec::new(),
            require_write_lease: false,
            max_write_grant: DEFAULT_MAX_WRITE_GRANT,
            link: LinkSecurity::Insecure,
            allow: Vec::new(),
        }
    }
}

/// The primary's view of one standby of one storage.
#[derive(Debug, Clone)]
pub struct StandbyView {
    pub peer: String,
    /// The session that owns this view: acknowledgements from any other (an older connection
    /// under the same name) are ignored.
    pub session: u64,
    pub connected: bool,
    /// The out-of-sync mark this standby was last sent (it persists what it is told).
    pub told_out_of_sync: Option<bool>,
    pub acked: Tid,
    pub acked_at: Instant,
}

/// A standby's view of its stream for one storage.
#[derive(Debug, Clone, Default)]
pub struct FollowView {
    pub connected: bool,
    pub primary_last_tid: Tid,
    pub applied: Tid,
    pub last_error: Option<String>,
    /// Writing what the primary sent failed here (disk full, I/O error), and has not worked since.
    pub storage_error: Option<String>,
}

/// Replication state of one storage.
#[derive(Debug)]
pub struct StorageRepl {
    pub name: String,
    pub host: Arc<StorageHost>,
    pub history: Mutex<History>,
    /// Last tid whose history digest is recorded (what sessions may ship).
    log_end: watch::Sender<Tid>,
    standbys: Mutex<BTreeMap<String, StandbyView>>,
    follow: Mutex<FollowView>,
    sync: Mutex<SyncState>,
}

/// The sync gate's state on a primary.
#[derive(Debug, Default)]
struct SyncState {
    /// Gave up waiting (sync timeout): commits are published once durable.
    degraded: bool,
    /// Transactions up to this tid are published without acknowledgements (those before sync
    /// replication started, or published while degraded).
    floor: Tid,
    /// With a write lease: standbys past the sync timeout that this primary wants to drop, waiting
    /// for the supervisor to confirm their out-of-sync marks are in the lease record.
    degrade_requested: BTreeSet<String>,
    /// Standbys whose out-of-sync marks the supervisor confirmed (`POST /out-of-sync`).
    mark_confirmed: BTreeSet<String>,
}

impl StorageRepl {
    fn new(host: Arc<StorageHost>) -> Result<Self, StorageError> {
        let history = History::open(&host.fs)?;
        let last = history.last().0;
        Ok(StorageRepl {
            name: host.name.clone(),
            log_end: watch::channel(last).0,
            history: Mutex::new(history),
            standbys: Mutex::new(BTreeMap::new()),
            follow: Mutex::new(FollowView::default()),
            sync: Mutex::new(SyncState::default()),
            host,
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().expect("history lock poisoned")
    }

    /// Records the digests of every durable transaction not yet in the history, then announces
    /// the new end to the sessions.
    fn advance_history(&self) -> Result<Tid, StorageError> {
        let mut h = self.history();
        let (last, mut chain) = h.last();
        let end = self.host.fs.last_transaction();
        if end > last {
            let start = tid_after(&last);
            for t in self.host.fs.iterator(Some(&start), Some(&end))? {
                let t = t?;
                chain = history::chain_next(&chain, &history::txn_digest(&t));
                h.append(t.tid, chain)?;
            }
        }
        let now = h.last().0;
        drop(h);
        self.log_end.send_if_modified(|t| {
            let changed = *t != now;
            *t = now;
            changed
        });
        Ok(now)
    }
}

/// The replication of a whole server: role, epoch, and every storage's streams.
pub struct Replication {
    opts: ReplicationOptions,
    storages: BTreeMap<String, Arc<StorageRepl>>,
    state: Mutex<StateFile>,
    /// `(role, epoch)`; sessions and followers stop when it changes.
    role: watch::Sender<(ServerRole, u64)>,
    /// Bumped when out-of-sync marks change, so sessions tell their standby at once.
    marks: watch::Sender<u64>,
    /// Serializes promote, demote and rejoin.
    control: tokio::sync::Mutex<()>,
    /// Tasks of the current role (followers, or the primary's history keepers and gate watchdogs).
    role_tasks: Mutex<CancellationToken>,
    /// The write lease every storage host checks before acknowledging a commit.
    write_lease: Arc<WriteLease>,
    /// Stops the write lease's expiry timer (server shutdown).
    lease_timer: CancellationToken,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("role", &*self.role.borrow()).finish()
    }
}

impl Replication {
    /// Loads the persisted state (beside the first storage), decides the starting role, and makes
    /// the storages read-only or writable accordingly. Call `start` once the runtime runs.
    pub fn open(
        opts: ReplicationOptions,
        hosts: &HashMap<String, Arc<StorageHost>>,
        first_storage_path: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StorageError> {
        let initial = match &opts.standby_of {
            Some(p) => ReplState { primary: Some(p.clone()), ..ReplState::new(ServerRole::Standby) },
            None => ReplState::new(ServerRole::Primary),
        };
        let mut state = StateFile::open(StateFile::path_for(first_storage_path), initial)?;
        // Flags may only take a server down from primary, never up: a persisted standby or
        // demoted server stays so until promoted through the admin API.
        let persisted = state.get().clone();
        state.update(|s| match (&opts.standby_of, persisted.role) {
            (Some(p), _) => {
                s.role = ServerRole::Standby;
                if s.primary.as_ref() != Some(p) {
                    s.synced = false;
                }
                s.primary = Some(p.clone());
            }
            (None, ServerRole::Primary) if opts.wait_for_supervisor => s.role = ServerRole::Demoted,
            _ => {}
        })?;
        let write_lease = Arc::new(WriteLease::new(opts.require_write_lease, opts.max_write_grant));
        let mut storages = BTreeMap::new();
        for (name, host) in hosts {
            host.set_write_lease(write_lease.clone());
            storages.insert(name.clone(), Arc::new(StorageRepl::new(host.clone())?));
        }
        let (role, epoch) = (state.get().role, state.get().epoch);
        tracing::info!(role = role.as_str(), epoch, primary = ?state.get().primary, "replication state loaded");
        let repl = Arc::new(Replication {
            opts,
            storages,
            state: Mutex::new(state),
            role: watch::channel((role, epoch)).0,
            marks: watch::channel(0).0,
            control: tokio::sync::Mutex::new(()),
            role_tasks: Mutex::new(CancellationToken::new()),
            write_lease,
            lease_timer: CancellationToken::new(),
            metrics,
        });
        repl.apply_read_only(role);
        Ok(repl)
    }

    /// Starts the tasks of the current role.
    pub fn start(self: &Arc<Self>) {
        let role = self.role.borrow().0;
        self.start_role_tasks(role);
        if self.write_lease.required() {
            tokio::spawn(lease_control::expiry_timer(self.clone(), self.lease_timer.clone()));
        }
    }

    /// Stops every task (server shutdown).
    pub fn stop(&self) {
        self.role_tasks.lock().expect("role tasks lock poisoned").cancel();
        self.lease_timer.cancel();
    }

    /// The write lease (shared with every storage host).
    pub fn write_lease(&self) -> &Arc<WriteLease> {
        &self.write_lease
    }

    fn apply_read_only(&self, role: ServerRole) {
        for s in self.storages.values() {
            let configured = self.opts.read_only_storages.contains(&s.name);
            s.host.set_read_only(configured || role != ServerRole::Primary);
        }
    }

    fn start_role_tasks(self: &Arc<Self>, role: ServerRole) {
        let token = CancellationToken::new();
        let old = std::mem::replace(&mut *self.role_tasks.lock().expect("role tasks lock poisoned"), token.clone());
        old.cancel();
        match role {
            ServerRole::Primary => {
                for s in self.storages.values() {
                    primary::start_storage(self.clone(), s.clone(), token.clone());
                }
            }
            ServerRole::Standby => {
                let primary = self.state().get().primary.clone();
                let Some(primary) = primary else {
                    tracing::error!("standby without a primary address; waiting for POST /rejoin");
                    return;
                };
                if let Some(why) = self.state().get().needs_reseed.clone() {
                    tracing::error!(reason = %why, "this standby needs a re-seed before it can follow: POST /rejoin with \"reseed\": true");
                    return;
                }
                for s in self.storages.values() {
                    tokio::spawn(standby::follow(self.clone(), s.clone(), primary.clone(), token.clone()));
                }
            }
            ServerRole::Demoted => {}
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StateFile> {
        self.state.lock().expect("replication state lock poisoned")
    }

    /// Current role and epoch.
    pub fn role(&self) -> (ServerRole, u64) {
        *self.role.borrow()
    }

    pub fn epoch(&self) -> u64 {
        self.role.borrow().1
    }

    pub fn options(&self) -> &ReplicationOptions {
        &self.opts
    }

    fn storage(&self, name: &str) -> Option<&Arc<StorageRepl>> {
        self.storages.get(name)
    }

    /// Adopts a higher epoch seen from our primary (a standby follows the primary's epoch).
    fn adopt_epoch(&self, epoch: u64) -> Result<(), StorageError> {
        let mut st = self.state();
        if epoch > st.get().epoch {
            st.update(|s| s.epoch = epoch)?;
            let role = self.role.borrow().0;
            self.role.send_replace((role, epoch));
            tracing::info!(epoch, "adopted the primary's epoch");
        }
        Ok(())
    }

    /// The sync gate's watermark for `s`: the K-th highest acknowledged tid among its standbys.
    fn update_gate(&self, s: &StorageRepl) {
        let k = self.opts.sync_standbys;
        if k == 0 {
            s.host.set_gate(None);
            return;
        }
        if self.role().0 != ServerRole::Primary {
            // A demoted primary keeps its gate shut: what no standby acknowledged must never be
            // published here (its committer would take the answer for an acknowledgement). Once it
            // follows a primary, the standby side reopens it after any rewind.
            return;
        }
        let sync = s.sync.lock().expect("sync lock poisoned");
        if sync.degraded {
            drop(sync);
            s.host.set_gate(None);
            return;
        }
        // Only standbys connected now count: an acknowledgement of a session that ended must not
        // hold the gate open (issue 13).
        let mut acked: Vec<Tid> = s
            .standbys
            .lock()
            .expect("standbys lock poisoned")
            .values()
            .filter(|v| v.connected)
            .map(|v| v.acked)
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let kth = acked.get(k - 1).copied().unwrap_or([0; 8]);
        let watermark = kth.max(sync.floor);
        drop(sync);
        s.host.set_gate(Some(watermark));
    }

    /// `/status`'s `replication` section, and the role fields.
    pub fn status(&self) -> serde_json::Value {
        let (role, epoch) = self.role();
        let st = self.state().get().clone();
        let mut storages = serde_json::Map::new();
        for (name, s) in &self.storages {
            storages.insert(name.clone(), self.storage_status(s, role, &st));
        }
        // The first storage's section, as already computed (BTreeMap: same order as `self.storages`).
        let first = self.storages.keys().next().and_then(|name| storages.get(name)).cloned();
        let now = write_lease::boottime_ns();
        let lease = &self.write_lease;
        let not_writable_reason = self.not_writable_reason(role, now);
        let mut doc = serde_json::json!({
            "role": role.as_str(),
            "epoch": epoch,
            "writable": not_writable_reason.is_none(),
            "not_writable_reason": not_writable_reason,
            "write_lease": {
                "required": lease.required(),
                "remaining_ms": lease.remaining_ms_at(now),
                "expired": lease.expired_at(now),
            },
            "boottime_ns": now,
            "name": self.opts.name,
            "needs_reseed": st.needs_reseed,
            "storages": storages,
        });
        // The first storage's section is also `replication` and the top level, for the common
        // single-storage case (supervisors read `replication`).
        if let (Some(serde_json::Value::Object(f)), serde_json::Value::Object(d)) = (first, &mut doc) {
            d.insert("replication".into(), serde_json::Value::Object(f.clone()));
            for (k, v) in f {
                d.entry(k).or_insert(v);
            }
        }
        doc
    }

    /// Why this server would not acknowledge a commit at `now` (`None`: it would).
    pub fn not_writable_reason(&self, role: ServerRole, now: u64) -> Option<&'static str> {
        let lease = &self.write_lease;
        match role {
            ServerRole::Standby => Some("standby"),
            ServerRole::Demoted if lease.expired_at(now) => Some(write_lease::REASON_EXPIRED),
            ServerRole::Demoted => Some("demoted"),
            ServerRole::Primary if !self.storages.values().any(|s| !s.host.is_read_only()) => {
                Some("every storage is read-only")
            }
            ServerRole::Primary => lease.reason_at(now),
        }
    }

    fn storage_status(&self, s: &StorageRepl, role: ServerRole, st: &ReplState) -> serde_json::Value {
        let last = s.host.fs.last_transaction();
        match role {
            ServerRole::Primary | ServerRole::Demoted => {
                let log_end = *s.log_end.borrow();
                let h = s.history();
                let standbys: Vec<serde_json::Value> = s
                    .standbys
                    .lock()
                    .expect("standbys lock poisoned")
                    .iter()
                    .map(|(name, v)| {
                        let lag =
                            h.count_after(&v.acked).unwrap_or(0).saturating_sub(h.count_after(&log_end).unwrap_or(0));
                        let lag_seconds = if lag == 0 { 0.0 } else { tid_seconds(&log_end) - tid_seconds(&v.acked) };
                        let lag_bytes = if lag == 0 {
                            Some(0)
                        } else if lag <= 100_000 {
                            s.host.fs.position_after(&v.acked).ok().map(|(p, _)| s.host.fs.size().saturating_sub(p))
                        } else {
                            None
                        };
                        let out_of_sync = st.standbys_out_of_sync.contains(name);
                        serde_json::json!({
                            "name": name,
                            "peer": v.peer,
                            "connected": v.connected,
                            "acked_tid": hex::encode(v.acked),
                            "lag_transactions": lag,
                            "lag_bytes": lag_bytes,
                            "lag_seconds": lag_seconds.max(0.0),
                            "out_of_sync": out_of_sync,
                            "told_out_of_sync": v.told_out_of_sync,
                            "in_sync": v.connected && lag == 0 && !out_of_sync,
                        })
                    })
                    .collect();
                drop(h);
                let sync = s.sync.lock().expect("sync lock poisoned");
                let degrade_requested: Vec<&String> = sync.degrade_requested.iter().collect();
                let sync_state = if self.opts.sync_standbys == 0 {
                    "async"
                } else if sync.degraded {
                    "degraded"
                } else if s.host.blocked_for().is_some() {
                    "blocked"
                } else {
                    "sync"
                };
                serde_json::json!({
                    "last_tid": hex::encode(last),
                    "sync_standbys": self.opts.sync_standbys,
                    "sync_timeout_ms": self.opts.sync_timeout.map(|d| d.as_millis() as u64),
                    "sync_state": sync_state,
                    "degrade_requested": degrade_requested,
                    "standbys": standbys,
                })
            }
            ServerRole::Standby => {
                let f = s.follow.lock().expect("follow lock poisoned").clone();
                let h = s.history();
                let lag =
                    if f.primary_last_tid > f.applied { h.count_after(&f.applied).unwrap_or(0).max(1) } else { 0 };
                drop(h);
                let lag_seconds = if f.primary_last_tid > f.applied {
                    tid_seconds(&f.primary_last_tid) - tid_seconds(&f.applied)
                } else {
                    0.0
                };
                serde_json::json!({
                    "last_tid": hex::encode(last),
                    "primary": st.primary,
                    "connected": f.connected,
                    "applied_tid": hex::encode(f.applied),
                    "primary_last_tid": hex::encode(f.primary_last_tid),
                    "lag_transactions": lag,
                    "lag_seconds": lag_seconds.max(0.0),
                    "out_of_sync": st.out_of_sync,
                    // Promotable: holds every commit its sync primary acknowledged (state.rs), and
                    // can write (a standby that cannot store what it is sent is no candidate).
                    "in_sync": st.synced && !st.out_of_sync && f.storage_error.is_none(),
                    "storage_error": f.storage_error,
                    "synced": st.synced,
                    "last_error": f.last_error,
                })
            }
        }
    }

    /// Sets the replication gauges (at scrape time).
    pub fn refresh_metrics(&self) {
        let (role, epoch) = self.role();
        let m = &self.metrics;
        m.repl_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        let now = write_lease::boottime_ns();
        let remaining = if role == ServerRole::Primary { self.write_lease.until().saturating_sub(now) } else { 0 };
        m.write_lease_remaining_seconds.set(remaining as f64 / 1e9);
        for r in [ServerRole::Primary, ServerRole::Standby, ServerRole::Demoted] {
            m.repl_role.get_or_create(&crate::metrics::RoleLabel { role: r.as_str() }).set(i64::from(r == role));
        }
        let status = self.status();
        for (name, s) in status["storages"].as_object().into_iter().flatten() {
            for sb in s["standbys"].as_array().into_iter().flatten() {
                let labels = crate::metrics::StandbyLabels {
                    storage: name.clone(),
                    standby: sb["name"].as_str().unwrap_or_default().to_owned(),
                };
                m.repl_standby_connected.get_or_create(&labels).set(i64::from(sb["connected"] == true));
                m.repl_standby_out_of_sync.get_or_create(&labels).set(i64::from(sb["out_of_sync"] == true));
                m.repl_standby_lag_transactions
                    .get_or_create(&labels)
                    .set(sb["lag_transactions"].as_i64().unwrap_or(0));
                m.repl_standby_lag_seconds.get_or_create(&labels).set(sb["lag_seconds"].as_f64().unwrap_or(0.0));
            }
            if role == ServerRole::Standby {
                m.repl_standby_applied_lag_transactions
                    .get_or_create(&crate::metrics::storage_label(name))
                    .set(s["lag_transactions"].as_i64().unwrap_or(0));
            }
        }
        for (name, s) in &self.storages {
            let waiting = i64::from(s.host.blocked_for().is_some());
            m.repl_commits_waiting.get_or_create(&crate::metrics::storage_label(name)).set(waiting);
        }
    }
}

/// The smallest tid after `tid`: where an iteration of the transactions after `tid` starts.
fn tid_after(tid: &Tid) -> Tid {
    zeo_proto::p64(zeo_proto::u64_of(*tid).saturating_add(1))
}

/// A tid's time as Unix seconds.
fn tid_seconds(tid: &Tid) -> f64 {
    if *tid == [0; 8] { 0.0 } else { zeo_proto::timestamp::TimeStamp::from_raw(*tid).time_time() }
}
