//! Client options for tests against processes on 127.0.0.1.

use std::time::Duration;

use zeo_client::{ClientOptions, RetryPolicy};

/// Client options for `addr` with deadlines short enough for tests but far above loopback
/// latencies: 10 s calls, 2 s to connect, reconnect backoff 50..400 ms, a heartbeat every
/// second with 3 s to answer, 20 s to settle a lost `tpc_finish`, quick `transact` retries.
pub fn client_options(addr: &str) -> ClientOptions {
    let mut o = ClientOptions::new([addr]);
    o.call_timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_secs(2);
    o.wait_timeout = Duration::from_secs(10);
    o.reconnect_min = Duration::from_millis(50);
    o.reconnect_max = Duration::from_millis(400);
    o.heartbeat_interval = Duration::from_secs(1);
    o.heartbeat_timeout = Duration::from_secs(3);
    o.upgrade_interval = Duration::from_millis(300);
    o.commit_resolve_timeout = Duration::from_secs(20);
    o.retry =
        RetryPolicy { attempts: 3, backoff_min: Duration::from_millis(5), backoff_max: Duration::from_millis(50) };
    o
}
