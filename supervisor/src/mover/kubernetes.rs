//! The service address as a pod label: the client Service selects `role=primary`. Every patch
//! is bounded by the mover's budget (the loop's retry period), its 429/5xx retries included.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{AddressMover, MoveError};
use crate::kube_call::{KubeCallError, within};

/// Labels our pod `role=primary` and the peers' `role=standby` (a JSON merge patch each).
pub struct PodLabelMover {
    pods: Api<Pod>,
    own_pod: String,
    peer_pods: Vec<String>,
    label: String,
    /// The bound of each patch.
    timeout: Duration,
}

impl PodLabelMover {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        own_pod: String,
        peer_pods: Vec<String>,
        label: String,
        timeout: Duration,
    ) -> Self {
        PodLabelMover { pods: Api::namespaced(client, namespace), own_pod, peer_pods, label, timeout }
    }

    async fn set(&self, pod: &str, value: &str) -> Result<(), KubeCallError> {
        let patch = json!({"metadata": {"labels": {self.label.as_str(): value}}});
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        within(self.timeout, || self.pods.patch(pod, &pp, &patch)).await.map(drop)
    }
}

fn backend(e: KubeCallError) -> MoveError {
    MoveError::Backend { backend: "kubernetes", source: Box::new(e) }
}

#[async_trait]
impl AddressMover for PodLabelMover {
    async fn claim(&self) -> Result<(), MoveError> {
        // Peers first: the Service must never select two primaries, even for a moment. A peer
        // pod that is gone (its node died) has no label to remove.
        for peer in &self.peer_pods {
            match self.set(peer, "standby").await {
                Err(KubeCallError::Kube(kube::Error::Api(s))) if s.is_not_found() => {}
                other => other.map_err(backend)?,
            }
        }
        self.set(&self.own_pod, "primary").await.map_err(backend)
    }

    async fn release(&self) -> Result<(), MoveError> {
        self.set(&self.own_pod, "standby").await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::kube_fake::{FakeKube, Fault};

    fn role(fake: &FakeKube, pod: &str) -> serde_json::Value {
        fake.object("pods", "zeo", pod).unwrap()["metadata"]["labels"]["role"].clone()
    }

    #[tokio::test]
    async fn claim_and_release_relabel_the_pods() {
        let fake = FakeKube::start().await;
        fake.add_pod("zeo", "zeo-0", json!({"app": "zeo", "role": "standby"}));
        fake.add_pod("zeo", "zeo-1", json!({"app": "zeo", "role": "primary"}));
        let mover = PodLabelMover::new(
            fake.client(),
            "zeo",
            "zeo-0".into(),
            vec!["zeo-1".into(), "zeo-2".into()],
            "role".into(),
            Duration::from_secs(5),
        );
        mover.claim().await.unwrap();
        assert_eq!((role(&fake, "zeo-0"), role(&fake, "zeo-1")), (json!("primary"), json!("standby")));
        assert_eq!(
            fake.object("pods", "zeo", "zeo-0").unwrap()["metadata"]["labels"]["app"],
            "zeo",
            "other labels kept"
        );
        mover.claim().await.unwrap();
        mover.release().await.unwrap();
        assert_eq!(role(&fake, "zeo-0"), json!("standby"));
    }

    #[tokio::test]
    async fn a_stalled_or_throttled_api_is_bounded() {
        let fake = FakeKube::start().await;
        fake.add_pod("zeo", "zeo-0", json!({"role": "standby"}));
        let mover =
            PodLabelMover::new(fake.client(), "zeo", "zeo-0".into(), vec![], "role".into(), Duration::from_millis(400));
        fake.fault(Fault::Stall, 100);
        let claimed = tokio::time::timeout(Duration::from_secs(30), mover.claim()).await.expect("the claim came back");
        assert!(claimed.is_err(), "a stalled patch is an error");
        fake.heal();
        fake.fault(Fault::ServerError(503), 1);
        mover.claim().await.expect("a 503 is retried within the budget");
        assert_eq!(role(&fake, "zeo-0"), json!("primary"));
    }

    #[tokio::test]
    async fn a_missing_own_pod_is_an_error() {
        let fake = FakeKube::start().await;
        let mover =
            PodLabelMover::new(fake.client(), "zeo", "gone".into(), vec![], "role".into(), Duration::from_secs(5));
        assert!(mover.claim().await.is_err());
    }
}
