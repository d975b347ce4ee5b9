//! Test harness shared by the integration tests of the client crates (zeo-client, zeo-app,
//! zeo-load): the real `zeo-server` and `zeo-app` binaries as child processes on 127.0.0.1
//! (killed on drop), client options for tests, and a small HTTP client. Everything waits for
//! events (ready files, answers) rather than sleeping blindly.
//!
//! # Layout
//!
//! - [`certs`]: [`certs::LinkPki`], a CA and member certificates for the replication link's TLS.
//! - [`procs`]: [`Server`] and [`App`] processes, finding the binaries.
//! - [`options`]: [`client_options`], zeo-client options with test deadlines.
//! - [`http`]: [`Http`], a minimal HTTP/1 client.
//! - [`net`]: blocking socket helpers ([`net::connect_from`], [`net::poll_until`]).

pub mod certs;
pub mod http;
pub mod net;
pub mod options;
pub mod procs;

use std::time::{Duration, Instant};

pub use http::Http;
pub use options::client_options;
pub use procs::{App, Server, bin};

/// Every test body runs under this bound, so a hang fails instead of blocking CI.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// Runs a test body with [`TEST_BOUND`].
///
/// # Panics
///
/// When the body takes longer.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_BOUND, body).await.expect("test exceeded its time bound");
}

/// Polls `cond` until it returns `Some`, every 20 ms.
///
/// # Panics
///
/// With `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
