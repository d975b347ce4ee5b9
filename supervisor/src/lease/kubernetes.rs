//! The lease as a `coordination.k8s.io/v1` Lease: created when absent, replaced with the
//! `resourceVersion` we read, so the API server's optimistic concurrency (409) is our CAS.
//!
//! What LeaseSpec has no ungated field for travels in annotations of the same object, written by
//! the same replace: the out-of-sync marks and the preferred holder. `spec.preferredHolder` is
//! gated (CoordinatedLeaderElection): with the gate off a real API server drops it, with the gate
//! on it rejects it without `spec.strategy`. Records written by the previous release may still
//! carry it: it is read, never written.
//!
//! Every call is bounded by the store's budget (the loop's retry period), retries of 429 and 5xx
//! included ([`crate::kube_call`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};
use crate::kube_call::{KubeCallError, within};

const BACKEND: &str = "kubernetes";

/// One named Lease in one namespace.
pub struct KubeLeaseStore {
    api: Api<Lease>,
    name: String,
    /// The bound of each call, its retries included.
    timeout: Duration,
}

/// Names of the standbys the holder's server degraded past, comma-separated.
pub const OUT_OF_SYNC_ANNOTATION: &str = "zeo-rs.io/out-of-sync";

/// The candidate a planned release names as the next holder.
pub const PREFERRED_HOLDER_ANNOTATION: &str = "zeo-rs.io/preferred-holder";

impl KubeLeaseStore {
    /// The Lease `name` in `namespace`; each call gets at most `timeout`.
    pub fn new(client: kube::Client, namespace: &str, name: impl Into<String>, timeout: Duration) -> KubeLeaseStore {
        KubeLeaseStore { api: Api::namespaced(client, namespace), name: name.into(), timeout }
    }

    fn to_lease(&self, record: &LeaseRecord, version: Option<&Version>) -> Lease {
        let micro = |t: Option<SystemTime>| t.and_then(|t| Timestamp::try_from(t).ok()).map(MicroTime);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: version.map(|v| v.0.clone()),
                annotations: annotations(record),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: record.holder.clone(),
                // Gated: see the module comment. The annotation carries it.
                preferred_holder: None,
                acquire_time: micro(record.acquire_time),
                renew_time: micro(record.renew_time),
                // Whole seconds on the wire; round up so a sub-second duration is never 0.
                lease_duration_seconds: Some(
                    i32::try_from(record.lease_duration.as_millis().div_ceil(1000)).unwrap_or(i32::MAX),
                ),
                lease_transitions: Some(i32::try_from(record.transitions).unwrap_or(i32::MAX)),
                strategy: None,
            }),
        }
    }
}

/// The annotations for `record`; none when it has nothing to say (empty lists are not written).
fn annotations(record: &LeaseRecord) -> Option<BTreeMap<String, String>> {
    let mut a = BTreeMap::new();
    if !record.out_of_sync.is_empty() {
        a.insert(OUT_OF_SYNC_ANNOTATION.to_string(), record.out_of_sync.join(","));
    }
    if let Some(to) = record.preferred_holder.as_ref().filter(|h| !h.is_empty()) {
        a.insert(PREFERRED_HOLDER_ANNOTATION.to_string(), to.clone());
    }
    (!a.is_empty()).then_some(a)
}

fn from_lease(lease: Lease) -> Result<Versioned, LeaseError> {
    let version =
        lease.metadata.resource_version.ok_or_else(|| LeaseError::Corrupt("Lease without resourceVersion".into()))?;
    let annotation = |key: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let out_of_sync = annotation(OUT_OF_SYNC_ANNOTATION)
        .map(|v| v.split(',').filter(|n| !n.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let preferred_annotation = annotation(PREFERRED_HOLDER_ANNOTATION);
    let spec = lease.spec.unwrap_or_default();
    let wall = |t: Option<MicroTime>| t.map(|t| SystemTime::from(t.0));
    let record = LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        // The annotation; else the spec field an older release wrote.
        preferred_holder: preferred_annotation.or(spec.preferred_holder).filter(|h| !h.is_empty()),
        acquire_time: wall(spec.acquire_time),
        renew_time: wall(spec.renew_time),
        lease_duration: Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0)),
        transitions: u64::try_from(spec.lease_transitions.unwrap_or(0)).unwrap_or(0),
        out_of_sync,
    };
    Ok(Versioned { record, version: Version(version) })
}

fn backend(e: KubeCallError) -> LeaseError {
    LeaseError::backend(BACKEND, e)
}

#[async_trait]
impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        let lease = within(self.timeout, || self.api.get_opt(&self.name)).await.map_err(backend)?;
        lease.map(from_lease).transpose()
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let lease = self.to_lease(record, expected);
        let pp = PostParams::default();
        // A retried write that did go through the first time comes back as a 409: the loop
        // re-reads and sees its own write, as after any lost race.
        let written = within(self.timeout, || async {
            match expected {
                None => self.api.create(&pp, &lease).await,
                Some(_) => self.api.replace(&self.name, &pp, &lease).await,
            }
        })
        .await;
        match written {
            Ok(lease) => Ok(Cas::Written(from_lease(lease)?.version)),
            // Conflict: stale resourceVersion; AlreadyExists: someone created it first.
            Err(KubeCallError::Kube(kube::Error::Api(s))) if s.is_conflict() || s.is_already_exists() => {
                Ok(Cas::Conflict)
            }
            Err(e) => Err(backend(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lease::tests::elector_contract;
    use crate::testkit::kube_fake::FakeKube;

    #[tokio::test]
    async fn elector_contract_on_fake_api_server() {
        let fake = FakeKube::start().await;
        let store = KubeLeaseStore::new(fake.client(), "zeo", "zeo-primary", Duration::from_secs(5));
        elector_contract(Arc::new(store)).await;
        let lease = fake.object("leases", "zeo", "zeo-primary").unwrap();
        assert_eq!(lease["spec"]["leaseTransitions"], 4);
        assert_eq!(lease["spec"]["holderIdentity"], "z");
        assert!(fake.conflicts() >= 2, "the races went through 409s: {}", fake.conflicts());
    }
}
