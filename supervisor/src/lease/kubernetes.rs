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

/// Members whose promotion failed and who gave the lease back, comma-separated: peers pass them over.
pub const PROMOTION_FAILED_ANNOTATION: &str = "zeo-rs.io/promotion-failed";

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
    if !record.promotion_failed.is_empty() {
        a.insert(PROMOTION_FAILED_ANNOTATION.to_string(), record.promotion_failed.join(","));
    }
    (!a.is_empty()).then_some(a)
}

fn from_lease(lease: Lease) -> Result<Versioned, LeaseError> {
    let version =
        lease.metadata.resource_version.ok_or_else(|| LeaseError::Corrupt("Lease without resourceVersion".into()))?;
    let annotation = |key: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let names = |key: &str| -> Vec<String> {
        annotation(key).map(|v| v.split(',').filter(|n| !n.is_empty()).map(String::from).collect()).unwrap_or_default()
    };
    let out_of_sync = names(OUT_OF_SYNC_ANNOTATION);
    let promotion_failed = names(PROMOTION_FAILED_ANNOTATION);
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
        promotion_failed,
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

    use serde_json::{Value, json};

    use super::*;
    use crate::lease::LeaseElector;
    use crate::lease::tests::elector_contract;
    use crate::testkit::kube_fake::{FakeKube, Fault};

    /// Per call: short, so a stall costs the test little.
    const BUDGET: Duration = Duration::from_millis(400);
    /// Far past any budget: a call still running then is wedged.
    const WEDGED: Duration = Duration::from_secs(30);

    fn store(fake: &FakeKube) -> KubeLeaseStore {
        KubeLeaseStore::new(fake.client(), "zeo", "zeo-primary", BUDGET)
    }

    fn record(preferred: Option<&str>) -> LeaseRecord {
        LeaseRecord {
            holder: None,
            preferred_holder: preferred.map(String::from),
            acquire_time: Some(SystemTime::now()),
            renew_time: Some(SystemTime::now()),
            lease_duration: Duration::from_millis(1500),
            transitions: 3,
            out_of_sync: vec!["c".into()],
            promotion_failed: vec!["d".into()],
        }
    }

    #[tokio::test]
    async fn the_preferred_holder_travels_in_an_annotation_whatever_the_gate() {
        for gate in [false, true] {
            let fake = FakeKube::start().await;
            fake.set_coordinated_election(gate);
            let store = store(&fake);
            assert!(matches!(store.compare_and_swap(None, &record(Some("b"))).await.unwrap(), Cas::Written(_)));
            let lease = fake.object("leases", "zeo", "zeo-primary").unwrap();
            assert_eq!(lease["metadata"]["annotations"][PREFERRED_HOLDER_ANNOTATION], "b", "gate {gate}");
            assert!(lease["spec"].get("preferredHolder").is_none(), "the gated field is not written");
            assert_eq!(lease["spec"]["leaseDurationSeconds"], 2, "rounded up to whole seconds");
            let read = store.get().await.unwrap().unwrap().record;
            assert_eq!(read.preferred_holder.as_deref(), Some("b"));
            assert_eq!(read.out_of_sync, ["c"]);
            assert_eq!(read.promotion_failed, ["d"], "gate {gate}: the failed promotion travels in an annotation");
        }
    }

    #[tokio::test]
    async fn a_record_of_the_previous_release_with_spec_preferred_holder_is_read() {
        let fake = FakeKube::start().await;
        fake.put_lease(
            "zeo",
            "zeo-primary",
            json!({"metadata": {}, "spec": {"preferredHolder": "a", "leaseDurationSeconds": 1, "leaseTransitions": 2}}),
        );
        let read = store(&fake).get().await.unwrap().unwrap().record;
        assert_eq!((read.preferred_holder.as_deref(), read.transitions), (Some("a"), 2));
    }

    #[tokio::test]
    async fn the_fake_refuses_what_a_real_api_server_refuses() {
        let fake = FakeKube::start().await;
        let url = format!("{}/apis/coordination.k8s.io/v1/namespaces/zeo/leases", fake.url());
        let create = |spec: Value| {
            let url = url.clone();
            async move {
                let body = json!({"metadata": {"name": "l"}, "spec": spec});
                reqwest::Client::new().post(url).json(&body).send().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(create(json!({"renewTime": "2026-01-01T00:00:00Z"})).await, 400, "no microseconds");
        assert_eq!(create(json!({"renewTime": "2026-01-01T00:00:00.123Z"})).await, 400, "milliseconds");
        assert_eq!(create(json!({"leaseDurationSeconds": 0})).await, 422);
        fake.set_coordinated_election(true);
        assert_eq!(create(json!({"preferredHolder": "b"})).await, 422, "gate on: preferredHolder needs strategy");
        fake.set_coordinated_election(false);
        let ok = json!({"renewTime": "2026-01-01T00:00:00.123456Z", "acquireTime": "2026-01-01T00:00:00.000001+02:00",
                        "leaseDurationSeconds": 1, "preferredHolder": "b", "unknownField": 1});
        assert_eq!(create(ok).await, 201);
        let spec = fake.object("leases", "zeo", "l").unwrap()["spec"].clone();
        assert!(spec.get("preferredHolder").is_none() && spec.get("unknownField").is_none(), "dropped: {spec}");
        // What our store writes passes all of it.
        assert!(matches!(store(&fake).compare_and_swap(None, &record(None)).await.unwrap(), Cas::Written(_)));
    }

    #[tokio::test]
    async fn a_stalled_call_returns_an_error_by_its_budget() {
        for fault in [Fault::Stall, Fault::StallBody] {
            let fake = FakeKube::start().await;
            let store = store(&fake);
            store.compare_and_swap(None, &record(None)).await.unwrap();
            fake.fault(fault, 1000);
            let read = tokio::time::timeout(WEDGED, store.get()).await.expect("the read came back");
            assert!(read.is_err(), "{fault:?}: a stalled read is an error");
            let current = Version("1".into());
            let write = tokio::time::timeout(WEDGED, store.compare_and_swap(Some(&current), &record(None)))
                .await
                .expect("the write came back");
            assert!(write.is_err(), "{fault:?}: a stalled write is an error");
            fake.heal();
            assert!(store.get().await.unwrap().is_some(), "{fault:?}: answers again once healed");
        }
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_within_the_budget() {
        let fake = FakeKube::start().await;
        let patient = KubeLeaseStore::new(fake.client(), "zeo", "zeo-primary", Duration::from_secs(20));
        patient.compare_and_swap(None, &record(None)).await.unwrap();
        for fault in
            [Fault::TooManyRequests(1), Fault::ServerError(500), Fault::ServerError(503), Fault::ServerError(504)]
        {
            fake.fault(fault, 2);
        }
        let before = fake.faulted();
        assert!(patient.get().await.unwrap().is_some(), "read through every fault");
        assert_eq!(fake.faulted() - before, 8, "each fault was met and retried");
        fake.fault(Fault::TooManyRequests(5), 1);
        assert!(store(&fake).get().await.is_err(), "a Retry-After past the budget is not waited out");
    }

    #[tokio::test]
    async fn a_holder_whose_renewals_stall_keeps_ticking_to_its_renew_deadline() {
        let renew_deadline = Duration::from_secs(2);
        let fake = FakeKube::start().await;
        let mut holder = LeaseElector::new(Arc::new(store(&fake)), "a", Duration::from_secs(3));
        assert!(holder.try_acquire().await.unwrap());
        let renewed_at = holder.view(tokio::time::Instant::now()).renewed_at.expect("renewed");
        fake.fault(Fault::Stall, 1000);
        // The loop's renewals: each comes back (an error), so the loop reaches the renew
        // deadline with its own clock and fences, rather than hanging in a call.
        let mut failed = 0;
        while tokio::time::Instant::now() < renewed_at + renew_deadline {
            let renewal = tokio::time::timeout(WEDGED, holder.renew()).await.expect("the renewal came back");
            assert!(renewal.is_err());
            failed += 1;
        }
        assert!(failed >= 2, "renewals were retried before the deadline: {failed}");
        let view = holder.view(tokio::time::Instant::now());
        assert_eq!(view.renewed_at, Some(renewed_at), "no renewal counted");
        assert!(!view.reachable, "the store is seen unreachable");
    }

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
