//! The lease: who may run the primary, and the epoch it runs at.
//!
//! A [`LeaseStore`] is only a compare-and-swap register for one [`LeaseRecord`]; the algorithm
//! on top (acquire, renew, release, expiry) is in [`LeaseElector`] and is the same for every
//! backend. As in client-go's `leaderelection`, expiry is judged on this observer's monotonic
//! clock from when it last saw the record change, never by comparing the record's wall-clock
//! times with ours: clock offsets between hosts do not matter, only clock rates.
//!
//! Backends: [`static_store`] (in-process, optionally persisted to a file: one supervisor deciding
//! alone), [`file`] (a file shared by supervisors on one host, flock + compare-and-swap), [`etcd`] (etcd v3 transaction on the key's mod revision) and [`kubernetes`]
//! (`coordination.k8s.io/v1` Lease, replace with `resourceVersion`). `--lease-backend` picks one
//! ([`LeaseBackend`]); [`from_settings`] builds it.

mod elector;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod setup;
pub mod static_store;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use elector::LeaseElector;
pub use setup::{LeaseBackend, LeaseSettings, SetupError, from_settings};

/// The stored lease. Wall-clock times are informational (for operators); nothing compares them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The supervisor holding it; `None` once released.
    pub holder: Option<String>,
    /// Named by a planned release: the candidate that may take it at once.
    #[serde(default)]
    pub preferred_holder: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub acquire_time: Option<SystemTime>,
    #[serde(default, with = "humantime_serde")]
    pub renew_time: Option<SystemTime>,
    /// How long observers wait without seeing a change before they may take it.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// Incremented by every acquisition by a new holder: the epoch that holder promotes at.
    pub transitions: u64,
    /// Standbys the holder's server degraded past (they may lack acknowledged commits): never to
    /// be promoted without force. Kept here because a partitioned standby cannot learn it from
    /// its primary, yet must read the lease before it may take over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_sync: Vec<String>,
    /// Members that held the lease and could not get their server promoted: the others pass them
    /// over until a holder serves again (which clears the list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_failed: Vec<String>,
}

/// A backend's opaque version of the record (etcd mod revision, Kubernetes resourceVersion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// A record with the version to compare against on the next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub record: LeaseRecord,
    pub version: Version,
}

/// Outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Written; the record now has this version.
    Written(Version),
    /// Someone else wrote first (or created it first): re-read and decide again.
    Conflict,
}

/// A compare-and-swap register holding one lease record.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The record, or `None` when it was never created.
    ///
    /// # Errors
    /// The store could not be read (unreachable, denied, undecodable record).
    async fn get(&self) -> Result<Option<Versioned>, LeaseError>;

    /// Writes `record` if the stored version is still `expected` (`None`: only if absent).
    ///
    /// # Errors
    /// The store could not be written; a lost race is [`Cas::Conflict`], not an error.
    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError>;
}

/// Why the lease store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The backend failed or could not be reached.
    #[error("lease store {backend}: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The stored record could not be decoded.
    #[error("lease record is not valid: {0}")]
    Corrupt(String),
    /// The store did not answer within the call's budget (never longer than the retry period,
    /// never past the renew deadline). A write that timed out may still land: the next read shows.
    #[error("lease store: no answer to {call} within {after:?}")]
    TimedOut { call: &'static str, after: Duration },
    /// The static store's file could not be read or written.
    #[error("lease file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LeaseError {
    pub(crate) fn backend(backend: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> LeaseError {
        LeaseError::Backend { backend, source: Box::new(e) }
    }
}

/// Runs one store call within `budget`: every backend's calls are bounded here, whatever its
/// client does (a stalled connection, a server that accepts and never answers).
///
/// # Errors
/// The call's own error, or [`LeaseError::TimedOut`].
pub async fn bounded<T>(
    call: &'static str,
    budget: Duration,
    fut: impl std::future::Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    tokio::time::timeout(budget, fut).await.unwrap_or(Err(LeaseError::TimedOut { call, after: budget }))
}

#[cfg(test)]
pub(crate) mod tests;
