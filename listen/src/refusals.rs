//! Refusals: counted every time, logged at most once per reason per second. An attacker opening
//! thousands of connections a second must not be able to fill the disk with log lines (issue 13
//! saw 37,759 lines in 13 s), while the metric still counts every one.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// How often each (listener, reason) may write a log line.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a listener closed a connection before (or instead of) serving it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Reason {
    /// The peer's address is outside the allow-list.
    Address,
    /// The listener already holds its maximum of connections.
    Capacity,
    /// The TLS handshake failed or did not finish in time.
    Tls,
    /// The peer is not an identity the listener accepts (certificate identity map).
    Identity,
    /// The peer did not authenticate (ZEO: `register`; replication: the handshake) in time.
    AuthTimeout,
    /// A frame before authentication was over the pre-auth frame cap.
    FrameTooLarge,
    /// The listeners' shared pre-auth input budget is spent.
    InputBudget,
    /// An HTTP request head did not arrive in time.
    HeadTimeout,
    /// The peer spoke something else than the protocol before authenticating.
    Protocol,
}

impl Reason {
    /// The fixed `reason` label: the metric's cardinality is bounded by construction.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::Capacity => "max_connections",
            Reason::Tls => "tls",
            Reason::Identity => "identity",
            Reason::AuthTimeout => "auth_timeout",
            Reason::FrameTooLarge => "frame_too_large",
            Reason::InputBudget => "input_budget",
            Reason::HeadTimeout => "head_timeout",
            Reason::Protocol => "protocol",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// `<prefix>_listener_refused_total{listener,reason}`, registered in the caller's registry (the
/// server's prefix is `zeo`, the supervisor's `zeo_supervisor`). Clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct RefusalMetrics {
    refused: Family<RefusedLabels, Counter>,
}

impl RefusalMetrics {
    /// Creates the family and registers it as `listener_refused` in `registry`.
    pub fn register(registry: &mut Registry) -> RefusalMetrics {
        let m = RefusalMetrics::default();
        registry.register("listener_refused", "Connections refused by a listener, by reason", m.refused.clone());
        m
    }

    /// The count so far for one listener and reason.
    pub fn count(&self, listener: &'static str, reason: Reason) -> u64 {
        self.refused.get_or_create(&RefusedLabels { listener, reason: reason.label() }).get()
    }

    fn inc(&self, listener: &'static str, reason: Reason) {
        self.refused.get_or_create(&RefusedLabels { listener, reason: reason.label() }).inc();
    }
}

/// One reason's log window: when its last line was written, and what was refused since.
#[derive(Debug)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

/// A listener's refusals: the counter and the rate-limited log. Clones share both.
#[derive(Clone, Debug)]
pub(crate) struct Refusals {
    listener: &'static str,
    metrics: RefusalMetrics,
    windows: Arc<Mutex<HashMap<Reason, Window>>>,
}

impl Refusals {
    pub(crate) fn new(listener: &'static str, metrics: RefusalMetrics) -> Refusals {
        Refusals { listener, metrics, windows: Arc::default() }
    }

    pub(crate) fn listener(&self) -> &'static str {
        self.listener
    }

    pub(crate) fn metrics(&self) -> &RefusalMetrics {
        &self.metrics
    }

    /// Counts a refusal and logs it unless this reason already logged within the last second; the
    /// next line that is written says how many were left out. Returns whether a line was written.
    pub(crate) fn record(&self, peer: SocketAddr, reason: Reason, detail: &dyn Display) -> bool {
        self.metrics.inc(self.listener, reason);
        let now = Instant::now();
        let suppressed = {
            let mut windows = self.windows.lock().expect("refusal log lock poisoned");
            match windows.get_mut(&reason) {
                Some(w) if now.duration_since(w.logged_at) < LOG_INTERVAL => {
                    w.suppressed += 1;
                    return false;
                }
                Some(w) => {
                    w.logged_at = now;
                    std::mem::take(&mut w.suppressed)
                }
                None => {
                    windows.insert(reason, Window { logged_at: now, suppressed: 0 });
                    0
                }
            }
        };
        tracing::warn!(
            listener = self.listener,
            %peer,
            reason = reason.label(),
            suppressed,
            "refusing connection: {detail}"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn logs_once_per_reason_per_second_and_counts_all() {
        let metrics = RefusalMetrics::default();
        let refusals = Refusals::new("zeo", metrics.clone());
        let logged = (0..1000).filter(|_| refusals.record(peer(), Reason::AuthTimeout, &"silent")).count();
        assert_eq!(logged, 1, "one line for a burst");
        assert!(refusals.record(peer(), Reason::Address, &"other reason"), "reasons have their own windows");
        assert_eq!(metrics.count("zeo", Reason::AuthTimeout), 1000, "every refusal counted");
        assert_eq!(metrics.count("zeo", Reason::Address), 1);

        tokio::time::advance(LOG_INTERVAL).await;
        assert!(refusals.record(peer(), Reason::AuthTimeout, &"silent"), "a new window logs again");
        let windows = refusals.windows.lock().unwrap();
        assert_eq!(windows[&Reason::AuthTimeout].suppressed, 0, "the line carried the suppressed count");
    }

    #[tokio::test(start_paused = true)]
    async fn the_suppressed_count_is_carried_by_the_next_line() {
        let refusals = Refusals::new("admin", RefusalMetrics::default());
        refusals.record(peer(), Reason::Capacity, &"full");
        for _ in 0..41 {
            refusals.record(peer(), Reason::Capacity, &"full");
        }
        assert_eq!(refusals.windows.lock().unwrap()[&Reason::Capacity].suppressed, 41);
        tokio::time::advance(LOG_INTERVAL / 2).await;
        assert!(!refusals.record(peer(), Reason::Capacity, &"full"), "still inside the window");
        tokio::time::advance(LOG_INTERVAL / 2).await;
        assert!(refusals.record(peer(), Reason::Capacity, &"full"));
    }

    #[test]
    fn the_family_is_exposed_in_the_callers_registry() {
        let mut registry = Registry::with_prefix("zeo");
        let metrics = RefusalMetrics::register(&mut registry);
        metrics.inc("zeo", Reason::FrameTooLarge);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.lines().any(|l| l == "zeo_listener_refused_total{listener=\"zeo\",reason=\"frame_too_large\"} 1"),
            "{text}"
        );
    }
}
