//! The server's Prometheus metrics (prefix `zeo_`), encoded as OpenMetrics text for `/metrics`.
//!
//! Every metric is an atomic, so connection tasks update them without locks. Labelled families take a
//! read lock to find their child; hot paths avoid even that by holding a `StorageMetrics` handle
//! (cloned counters) for their storage. Label values are `&'static str` wherever a client could
//! otherwise choose them (method and error names), which keeps the label cardinality bounded by
//! construction.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of `Metrics::encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabel {
    pub storage: String,
}

/// Which kind of conflict a commit hit.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum ConflictKind {
    Write,
    Read,
    /// Write conflicts the server merged (they never reached the client).
    Resolved,
}

impl EncodeLabelValue for ConflictKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ConflictKind::Write => "write",
            ConflictKind::Read => "read",
            ConflictKind::Resolved => "resolved",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabels {
    storage: String,
    kind: ConflictKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// All of the server's metrics. Create once with `Metrics::new` and share the `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    /// `zeo_listener_refused_total{listener,reason}`: every listener's refusals (zeo-listen).
    pub listener_refusals: zeo_listen::RefusalMetrics,
    loads: Family<StorageLabel, Counter>,
    stores: Family<StorageLabel, Counter>,
    commits: Family<StorageLabel, Counter>,
    aborts: Family<StorageLabel, Counter>,
    conflicts: Family<ConflictLabels, Counter>,
    /// Seconds a transaction waited for the commit lock.
    pub commit_lock_wait_seconds: Histogram,
    /// Duration of each fsync of the log.
    pub fsync_seconds: Histogram,
    /// Transactions made durable by one fsync (group commit batch size).
    pub fsync_batch_transactions: Histogram,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub invalidations_sent: Counter,
    errors: Family<ErrorLabels, Counter>,
    storage_objects: Family<StorageLabel, Gauge>,
    storage_bytes: Family<StorageLabel, Gauge>,
    last_tid_seconds: Family<StorageLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Replication: this server's epoch, role (1 on the current one), standbys as the primary sees
    /// them, and what a standby applied.
    pub repl_epoch: Gauge,
    pub repl_role: Family<RoleLabel, Gauge>,
    pub repl_standby_connected: Family<StandbyLabels, Gauge>,
    pub repl_standby_out_of_sync: Family<StandbyLabels, Gauge>,
    pub repl_standby_lag_transactions: Family<StandbyLabels, Gauge>,
    pub repl_standby_lag_seconds: Family<StandbyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub repl_shipped_transactions: Family<StorageLabel, Counter>,
    pub repl_applied_transactions: Family<StorageLabel, Counter>,
    pub repl_standby_applied_lag_transactions: Family<StorageLabel, Gauge>,
    pub repl_sync_degraded: Counter,
    /// The replication link's rule breaks (issue 13), by reason: on a primary, authenticated
    /// sessions closed for an oversized frame (`frame`) or an ack of a tid never sent (`ack`); on a
    /// standby, primaries refused (`tls`, `identity`, `auth_timeout`). Refusals at the primary's
    /// listener are in `listener_refusals` (`listener="replication"`).
    pub repl_link_refused: Family<ReasonLabel, Counter>,
    pub repl_commits_waiting: Family<StorageLabel, Gauge>,
    pub write_lease_remaining_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub write_lease_expiries: Counter,
    pub commits_refused_not_writable: Counter,
}

/// A role name (`primary`, `standby`, `demoted`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
}

/// Why a replication peer was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A standby of a storage, as the primary sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StandbyLabels {
    pub storage: String,
    pub standby: String,
}

/// A storage name, for the replication families.
pub fn storage_label(storage: &str) -> StorageLabel {
    StorageLabel { storage: storage.to_owned() }
}

/// Cloned handles to one storage's counters and gauges, so per-request updates take no lock.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    pub loads: Counter,
    pub stores: Counter,
    pub commits: Counter,
    pub aborts: Counter,
    pub write_conflicts: Counter,
    pub read_conflicts: Counter,
    pub resolved_conflicts: Counter,
    /// Set at scrape time (`AdminSource::refresh_metrics`) or after commits.
    pub objects: Gauge,
    pub bytes: Gauge,
    /// The last committed tid as Unix seconds: `time() - zeo_last_tid_seconds` is the commit lag.
    pub last_tid_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("zeo");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "zeo-server version", build_info);

        let m = Metrics {
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            listener_refusals: zeo_listen::RefusalMetrics::register(&mut registry),
            loads: Family::default(),
            stores: Family::default(),
            commits: Family::default(),
            aborts: Family::default(),
            conflicts: Family::default(),
            // 100us .. ~13s
            commit_lock_wait_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            // 50us .. ~1.6s
            fsync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            // 1 .. 1024
            fsync_batch_transactions: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            invalidations_sent: Counter::default(),
            errors: Family::default(),
            storage_objects: Family::default(),
            storage_bytes: Family::default(),
            last_tid_seconds: Family::default(),
            repl_epoch: Gauge::default(),
            repl_role: Family::default(),
            repl_standby_connected: Family::default(),
            repl_standby_out_of_sync: Family::default(),
            repl_standby_lag_transactions: Family::default(),
            repl_standby_lag_seconds: Family::default(),
            repl_shipped_transactions: Family::default(),
            repl_applied_transactions: Family::default(),
            repl_standby_applied_lag_transactions: Family::default(),
            repl_sync_degraded: Counter::default(),
            repl_link_refused: Family::default(),
            repl_commits_waiting: Family::default(),
            write_lease_remaining_seconds: Gauge::default(),
            write_lease_expiries: Counter::default(),
            commits_refused_not_writable: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("connections", "Open client connections", m.connections.clone());
        r.register("connections_accepted", "Client connections accepted", m.connections_accepted.clone());
        r.register("loads", "Object loads", m.loads.clone());
        r.register("stores", "Object stores", m.stores.clone());
        r.register("commits", "Committed transactions", m.commits.clone());
        r.register("aborts", "Aborted transactions", m.aborts.clone());
        r.register(
            "conflicts",
            "Conflicts, by kind (write or read: reported to the client; resolved: merged by the server)",
            m.conflicts.clone(),
        );
        r.register("commit_lock_wait_seconds", "Time waited for the commit lock", m.commit_lock_wait_seconds.clone());
        r.register("fsync_seconds", "Duration of log fsyncs", m.fsync_seconds.clone());
        r.register("fsync_batch_transactions", "Transactions per fsync", m.fsync_batch_transactions.clone());
        r.register("bytes_received", "Bytes received from clients", m.bytes_received.clone());
        r.register("bytes_sent", "Bytes sent to clients", m.bytes_sent.clone());
        r.register("invalidations_sent", "Invalidation messages sent", m.invalidations_sent.clone());
        r.register("errors", "Errors returned to clients, by method and error", m.errors.clone());
        r.register("storage_objects", "Objects in the storage", m.storage_objects.clone());
        r.register("storage_bytes", "Size of the storage file", m.storage_bytes.clone());
        r.register("last_tid_seconds", "Time of the last committed transaction", m.last_tid_seconds.clone());
        r.register("replication_epoch", "Replication epoch (fencing token)", m.repl_epoch.clone());
        r.register("replication_role", "1 on this server's current role", m.repl_role.clone());
        r.register(
            "replication_standby_connected",
            "Standby connected (primary's view)",
            m.repl_standby_connected.clone(),
        );
        r.register("replication_standby_out_of_sync", "Standby marked out of sync", m.repl_standby_out_of_sync.clone());
        r.register(
            "replication_standby_lag_transactions",
            "Transactions the standby has not acknowledged",
            m.repl_standby_lag_transactions.clone(),
        );
        r.register(
            "replication_standby_lag_seconds",
            "Commit-time distance to the standby's acknowledged tid",
            m.repl_standby_lag_seconds.clone(),
        );
        r.register(
            "replication_shipped_transactions",
            "Transactions sent to standbys",
            m.repl_shipped_transactions.clone(),
        );
        r.register(
            "replication_applied_transactions",
            "Transactions applied from the primary",
            m.repl_applied_transactions.clone(),
        );
        r.register(
            "replication_applied_lag_transactions",
            "Transactions the primary announced and this standby lacks",
            m.repl_standby_applied_lag_transactions.clone(),
        );
        r.register(
            "replication_sync_degraded",
            "Times sync replication degraded to async after the timeout",
            m.repl_sync_degraded.clone(),
        );
        r.register(
            "replication_link_refused",
            "Replication sessions closed for breaking the link's rules, and primaries a standby refused, by reason",
            m.repl_link_refused.clone(),
        );
        r.register(
            "replication_commits_waiting",
            "Durable commits waiting for standby acknowledgements",
            m.repl_commits_waiting.clone(),
        );
        r.register(
            "write_lease_remaining_seconds",
            "Seconds left on the write lease (0: none granted or expired)",
            m.write_lease_remaining_seconds.clone(),
        );
        r.register(
            "write_lease_expiries",
            "Times the write lease ran out and the server fenced itself",
            m.write_lease_expiries.clone(),
        );
        r.register(
            "commits_refused_not_writable",
            "Commits refused or left unacknowledged because the write lease did not allow them",
            m.commits_refused_not_writable.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Handles to `storage`'s metrics; creating them also makes the series appear (at 0) in scrapes.
    pub fn storage(&self, storage: &str) -> StorageMetrics {
        let label = StorageLabel { storage: storage.to_owned() };
        let conflict = |kind| ConflictLabels { storage: storage.to_owned(), kind };
        StorageMetrics {
            loads: self.loads.get_or_create_owned(&label),
            stores: self.stores.get_or_create_owned(&label),
            commits: self.commits.get_or_create_owned(&label),
            aborts: self.aborts.get_or_create_owned(&label),
            write_conflicts: self.conflicts.get_or_create_owned(&conflict(ConflictKind::Write)),
            read_conflicts: self.conflicts.get_or_create_owned(&conflict(ConflictKind::Read)),
            resolved_conflicts: self.conflicts.get_or_create_owned(&conflict(ConflictKind::Resolved)),
            objects: self.storage_objects.get_or_create_owned(&label),
            bytes: self.storage_bytes.get_or_create_owned(&label),
            last_tid_seconds: self.last_tid_seconds.get_or_create_owned(&label),
        }
    }

    /// Counts an error returned to a client. `method` must be a known method name (or `"unknown"`),
    /// never text taken from the wire; `error` is the exception name (e.g. `"POSKeyError"`).
    pub fn error(&self, method: &'static str, error: &'static str) {
        self.errors.get_or_create(&ErrorLabels { method, error }).inc();
    }

    /// The OpenMetrics text exposition (served with `CONTENT_TYPE`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every label and value encoder here is infallible.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn encodes_every_metric_with_prefix_and_labels() {
        let m = Metrics::new();
        m.connections.inc();
        m.connections_accepted.inc();
        let allow = zeo_listen::AllowList::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let gate = zeo_listen::Gate::new("zeo", allow, 1, &m.listener_refusals);
        assert!(gate.admit("127.0.0.2:4000".parse().unwrap()).is_err());
        let s = m.storage("1");
        s.loads.inc_by(3);
        s.stores.inc();
        s.commits.inc();
        s.aborts.inc();
        s.write_conflicts.inc();
        s.objects.set(42);
        s.bytes.set(4096);
        s.last_tid_seconds.set(1_700_000_000.5);
        m.commit_lock_wait_seconds.observe(0.001);
        m.fsync_seconds.observe(0.00004);
        m.fsync_batch_transactions.observe(3.0);
        m.bytes_received.inc_by(100);
        m.bytes_sent.inc_by(200);
        m.invalidations_sent.inc();
        m.error("loadBefore", "POSKeyError");
        let text = m.encode();
        for line in [
            "zeo_connections 1",
            "zeo_connections_accepted_total 1",
            "zeo_listener_refused_total{listener=\"zeo\",reason=\"address\"} 1",
            "zeo_loads_total{storage=\"1\"} 3",
            "zeo_stores_total{storage=\"1\"} 1",
            "zeo_commits_total{storage=\"1\"} 1",
            "zeo_aborts_total{storage=\"1\"} 1",
            "zeo_conflicts_total{storage=\"1\",kind=\"write\"} 1",
            "zeo_conflicts_total{storage=\"1\",kind=\"read\"} 0",
            "zeo_conflicts_total{storage=\"1\",kind=\"resolved\"} 0",
            "zeo_storage_objects{storage=\"1\"} 42",
            "zeo_storage_bytes{storage=\"1\"} 4096",
            "zeo_last_tid_seconds{storage=\"1\"} 1700000000.5",
            "zeo_commit_lock_wait_seconds_count 1",
            "zeo_fsync_seconds_bucket{le=\"0.00005\"} 1",
            "zeo_fsync_batch_transactions_sum 3.0",
            "zeo_bytes_received_total 100",
            "zeo_bytes_sent_total 200",
            "zeo_invalidations_sent_total 1",
            "zeo_errors_total{method=\"loadBefore\",error=\"POSKeyError\"} 1",
            "# TYPE zeo_fsync_seconds histogram",
            "# EOF",
        ] {
            assert!(has_line(&text, line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("zeo_build_info{version=\""), "{text}");
    }

    #[test]
    fn storage_handles_share_the_registered_series() {
        let m = Metrics::new();
        let (a, b) = (m.storage("main"), m.storage("main"));
        a.commits.inc();
        b.commits.inc();
        m.storage("other");
        let text = m.encode();
        assert!(has_line(&text, "zeo_commits_total{storage=\"main\"} 2"), "{text}");
        assert!(has_line(&text, "zeo_commits_total{storage=\"other\"} 0"), "{text}");
    }

    #[test]
    fn updates_from_many_threads_add_up() {
        let m = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let s = m.storage("1");
                let m = &m;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        s.loads.inc();
                        m.bytes_sent.inc_by(2);
                    }
                });
            }
        });
        let text = m.encode();
        assert!(has_line(&text, "zeo_loads_total{storage=\"1\"} 4000"), "{text}");
        assert!(has_line(&text, "zeo_bytes_sent_total 8000"), "{text}");
    }
}
