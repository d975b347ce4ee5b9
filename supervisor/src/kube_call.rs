//! Bounded Kubernetes API calls. kube 5 has no read timeout by default, so a stalled API server
//! (a half-open connection, an overloaded apiserver that accepted the request and never answers)
//! would hang a call, and with it the loop, past the renew deadline. Two bounds, as client-go's
//! leader election has them: the client's connect, read and write timeouts, and a budget per
//! call (the loop's retry period) that also covers the retries of a throttled (429) or failing
//! (500, 503, 504) API server.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The pause between retries when the API server names none (it sends Retry-After on a 429).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a bounded call failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeCallError {
    /// No answer within the call's budget (the connection stalled, or every retry failed late).
    #[error("no answer from the Kubernetes API within {0:?}")]
    TimedOut(Duration),
    /// The API server answered with an error, or the request could not be sent.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A client from the in-cluster or kubeconfig configuration, with every timeout set to `timeout`.
///
/// # Errors
/// No client configuration could be found or used.
pub async fn client(timeout: Duration) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    kube::Client::try_from(bounded(config, timeout))
}

/// `config` with connect, read and write timeouts of `timeout`; the read timeout counts from
/// when the request was written, not from when the pooled connection went idle.
#[must_use]
pub fn bounded(mut config: kube::Config, timeout: Duration) -> kube::Config {
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config
}

/// Whether a failure is the API server's "try again" (throttled, overloaded, its own timeout).
fn retryable(e: &kube::Error) -> Option<Duration> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 429 | 500 | 503 | 504) => Some(
            s.details
                .as_ref()
                .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds)))
                .filter(|d| !d.is_zero())
                .unwrap_or(RETRY_PAUSE),
        ),
        _ => None,
    }
}

/// Runs `call` until it succeeds, fails for good, or `budget` is spent; retries 429 and 5xx
/// after the pause the server asks for, but only if that pause ends within the budget.
///
/// # Errors
/// The last failure, or [`KubeCallError::TimedOut`] when the budget ran out mid-call.
pub async fn within<T, F, Fut>(budget: Duration, mut call: F) -> Result<T, KubeCallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + budget;
    loop {
        let e = match tokio::time::timeout_at(deadline, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => return Err(KubeCallError::TimedOut(budget)),
        };
        match retryable(&e) {
            Some(pause) if Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, ?pause, "Kubernetes API asks to retry");
                tokio::time::sleep(pause).await;
            }
            _ => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn api_error(code: u16, retry_after: u32) -> kube::Error {
        let mut s = kube::core::Status::failure("busy", "TooManyRequests").with_code(code);
        s.details = Some(kube::core::response::StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: retry_after,
        });
        kube::Error::Api(s.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_the_server_asks_to_retry_within_the_budget() {
        let tries = AtomicU32::new(0);
        let got = within(Duration::from_secs(5), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 => Err(api_error(429, 1)),
                1 => Err(api_error(503, 0)),
                2 => Err(api_error(504, 0)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_retry_after_would_end_past_the_budget() {
        let tries = AtomicU32::new(0);
        let start = Instant::now();
        let got: Result<(), _> = within(Duration::from_secs(1), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(api_error(429, 2))
        })
        .await;
        assert!(matches!(got, Err(KubeCallError::Kube(kube::Error::Api(s))) if s.code == 429));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a 2 s Retry-After does not fit a 1 s budget");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends_at_the_budget() {
        let start = Instant::now();
        let got: Result<(), _> = within(Duration::from_millis(800), std::future::pending).await;
        assert!(matches!(got, Err(KubeCallError::TimedOut(_))));
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test]
    async fn the_bounded_client_gives_up_on_a_stalled_api_by_itself() {
        use k8s_openapi::api::coordination::v1::Lease;

        use crate::testkit::kube_fake::{FakeKube, Fault};
        let fake = FakeKube::start().await;
        let config = bounded(kube::Config::new(fake.url().parse().unwrap()), Duration::from_millis(300));
        let leases: kube::Api<Lease> = kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "zeo");
        for fault in [Fault::Stall, Fault::StallBody] {
            fake.fault(fault, 1);
            // No per-call budget here: only the client's own read timeout ends the call.
            let got = tokio::time::timeout(Duration::from_secs(30), leases.get_opt("l")).await;
            assert!(got.expect("the client's read timeout ended the call").is_err(), "{fault:?}");
        }
        assert!(leases.get_opt("l").await.unwrap().is_none(), "healthy again");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let tries = AtomicU32::new(0);
        let got: Result<(), _> = within(Duration::from_secs(5), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(api_error(409, 0))
        })
        .await;
        assert!(got.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
