//! The application's Prometheus metrics (prefix `zeo_app_`), as OpenMetrics text for `/metrics`:
//! HTTP requests by route and status, their latency, and the storage client's own counters
//! (read from [`zeo_client::Client::metrics`] at scrape time).
//!
//! Route labels are axum's matched route templates (`/api/kv/{key}`), never raw paths, so a
//! client cannot grow the label set.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use zeo_client::Client;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// Every metric of the application.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, prometheus_client::metrics::counter::Counter>,
    latency: Family<RouteLabel, Histogram>,
}

impl Metrics {
    /// Registers the HTTP metrics and the storage client's.
    pub fn new(client: Client) -> Metrics {
        let mut registry = Registry::with_prefix("zeo_app");
        let requests = Family::<RequestLabels, _>::default();
        registry.register("http_requests", "HTTP requests answered, by method, route and status", requests.clone());
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("http_request_duration_seconds", "Time to answer a request, by route", latency.clone());
        registry.register_collector(Box::new(ClientCollector(client)));
        Metrics { registry, requests, latency }
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels { method: method.to_owned(), route: route.to_owned(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabel { route: route.to_owned() }).observe(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep the scrape well-formed if it ever did.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// Exports the storage client's counters at scrape time.
#[derive(Debug)]
struct ClientCollector(Client);

impl Collector for ClientCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.0.metrics();
        let counters: [(&str, &str, u64); 12] = [
            ("client_loads", "Object loads requested", m.loads),
            ("client_cache_hits", "Loads answered from the client cache", m.cache_hits),
            ("client_cache_misses", "Loads that went to the storage server", m.cache_misses),
            ("client_commits", "Transactions committed", m.commits),
            ("client_conflicts", "Write conflicts reported at vote", m.conflicts),
            ("client_read_conflicts", "Read conflicts", m.read_conflicts),
            ("client_retries", "Transactions run again after a conflict or disconnection", m.retries),
            ("client_connects", "Successful connections, the first included", m.connects),
            ("client_reconnects", "Successful connections after the first", m.reconnects),
            ("client_disconnects", "Connections lost", m.disconnects),
            ("client_invalidations", "Invalidations applied to the cache", m.invalidations),
            (
                "client_commit_resolutions",
                "Commits whose tpc_finish reply was lost and looked up",
                m.commit_resolutions,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let (entries, bytes) = self.0.cache_usage();
        let gauges: [(&str, &str, i64); 4] = [
            ("storage_connected", "1 while a storage server connection serves", i64::from(self.0.is_connected())),
            ("storage_read_only", "1 while the storage is read-only for this client", i64::from(self.0.is_read_only())),
            ("client_cache_entries", "Revisions in the client cache", i64::try_from(entries).unwrap_or(i64::MAX)),
            ("client_cache_bytes", "Bytes charged to the client cache", i64::try_from(bytes).unwrap_or(i64::MAX)),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}
