//! The supervisor's Prometheus metrics (`GET /metrics` on its admin port).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HolderLabel {
    pub holder: String,
}

/// Every metric, registered once.
pub struct Metrics {
    pub registry: Registry,
    /// 1 for our server's current role, 0 for the others.
    pub role: Family<RoleLabel, Gauge>,
    /// 1 for the current lease holder as we see it.
    pub lease_holder: Family<HolderLabel, Gauge>,
    pub epoch: Gauge,
    pub failovers: Counter,
    /// From the first tick that saw the lease free or expired to our successful promotion.
    pub last_failover_seconds: Gauge<f64, AtomicU64>,
    pub renew_latency: Histogram,
    /// `zeo_supervisor_listener_refused_total{listener="http",reason}` (zeo-listen).
    pub listener_refusals: zeo_listen::RefusalMetrics,
    /// Write-lease grants our server accepted, and grant calls that failed or were withheld.
    pub grants: Counter,
    pub grant_failures: Counter,
    /// The loop's heartbeat (`/livez`); shared here because the loop and the admin port both hold
    /// the metrics.
    pub liveness: std::sync::Arc<crate::liveness::Liveness>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("zeo_supervisor");
        let m = Metrics {
            role: Family::default(),
            lease_holder: Family::default(),
            epoch: Gauge::default(),
            failovers: Counter::default(),
            last_failover_seconds: Gauge::default(),
            renew_latency: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            listener_refusals: zeo_listen::RefusalMetrics::register(&mut registry),
            grants: Counter::default(),
            grant_failures: Counter::default(),
            liveness: std::sync::Arc::default(),
            registry: Registry::default(),
        };
        registry.register("server_role", "Role of the supervised server (1 = current)", m.role.clone());
        registry.register("lease_holder", "Lease holder as seen by this supervisor", m.lease_holder.clone());
        registry.register("epoch", "Lease transitions: the epoch of the current primary", m.epoch.clone());
        registry.register("failovers", "Promotions of our server after a takeover", m.failovers.clone());
        registry.register(
            "last_failover_duration_seconds",
            "Seconds from seeing the lease free to our server promoted",
            m.last_failover_seconds.clone(),
        );
        registry.register("lease_renew_latency_seconds", "Latency of lease renewals", m.renew_latency.clone());
        registry.register("write_lease_grants", "Write-lease grants our server accepted", m.grants.clone());
        registry.register(
            "write_lease_grant_failures",
            "Write-lease grants that failed or were withheld (the server fences itself at the last one's end)",
            m.grant_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode into a String");
        out
    }

    pub fn set_role(&self, role: &str) {
        for r in ["primary", "standby", "demoted", "unknown"] {
            self.role.get_or_create(&RoleLabel { role: r.into() }).set(i64::from(r == role));
        }
    }

    pub fn set_holder(&self, holder: Option<&str>) {
        self.lease_holder.clear();
        if let Some(h) = holder {
            self.lease_holder.get_or_create(&HolderLabel { holder: h.into() }).set(1);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
