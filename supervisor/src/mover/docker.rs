//! The service address as a DNS alias on a user-defined Docker network that only clients and
//! the primary join. Docker cannot change a live endpoint's aliases, so the move is: disconnect
//! the peers, connect ourselves with the alias. Replication must use another network.

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};

use super::{AddressMover, MoveError};

pub struct DockerAliasMover {
    docker: Docker,
    network: String,
    alias: String,
    own_container: String,
    peer_containers: Vec<String>,
}

impl DockerAliasMover {
    pub fn new(
        docker: Docker,
        network: String,
        alias: String,
        own_container: String,
        peer_containers: Vec<String>,
    ) -> Self {
        DockerAliasMover { docker, network, alias, own_container, peer_containers }
    }
}

/// Joins `container` to the network under `alias`.
pub fn connect_request(container: &str, alias: &str) -> NetworkConnectRequest {
    NetworkConnectRequest {
        container: container.into(),
        endpoint_config: Some(EndpointSettings { aliases: Some(vec![alias.into()]), ..EndpointSettings::default() }),
    }
}

/// Removes `container` from the network even if it is not running (its host may be gone).
pub fn disconnect_request(container: &str) -> NetworkDisconnectRequest {
    NetworkDisconnectRequest { container: container.into(), force: Some(true) }
}

/// Docker answers 403 "already exists in network" / 404 or 403 "is not connected": the wanted
/// state already holds, so these are successes for an idempotent move.
fn already(e: &Error) -> bool {
    match e {
        Error::DockerResponseServerError { status_code, message } => {
            matches!(status_code, 403 | 404 | 409)
                && (message.contains("already exists")
                    || message.contains("is not connected")
                    || message.contains("not connected"))
        }
        _ => false,
    }
}

fn backend(e: Error) -> MoveError {
    MoveError::Backend { backend: "docker", source: Box::new(e) }
}

#[async_trait]
impl AddressMover for DockerAliasMover {
    async fn claim(&self) -> Result<(), MoveError> {
        for peer in &self.peer_containers {
            match self.docker.disconnect_network(&self.network, disconnect_request(peer)).await {
                Err(e) if !already(&e) => return Err(backend(e)),
                _ => {}
            }
        }
        match self.docker.connect_network(&self.network, connect_request(&self.own_container, &self.alias)).await {
            Err(e) if !already(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn release(&self) -> Result<(), MoveError> {
        match self.docker.disconnect_network(&self.network, disconnect_request(&self.own_container)).await {
            Err(e) if !already(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_what_the_engine_api_expects() {
        let body = serde_json::to_value(connect_request("zeo-a", "zeo")).unwrap();
        assert_eq!(body, serde_json::json!({"Container": "zeo-a", "EndpointConfig": {"Aliases": ["zeo"]}}));
        let body = serde_json::to_value(disconnect_request("zeo-b")).unwrap();
        assert_eq!(body, serde_json::json!({"Container": "zeo-b", "Force": true}));
    }

    #[test]
    fn idempotent_outcomes_are_recognised() {
        let exists = Error::DockerResponseServerError {
            status_code: 403,
            message: "endpoint with name zeo-a already exists in network zeo-svc".into(),
        };
        let not_connected = Error::DockerResponseServerError {
            status_code: 403,
            message: "container abc is not connected to network zeo-svc".into(),
        };
        let missing = Error::DockerResponseServerError { status_code: 404, message: "No such container: zeo-a".into() };
        assert!(already(&exists) && already(&not_connected));
        assert!(!already(&missing), "a missing own container is a real error");
    }
}
