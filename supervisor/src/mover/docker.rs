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

/// A client of the local engine (`DOCKER_HOST`, else the Unix socket) speaking the engine's API
/// version: bollard defaults to its own, newer version, which older engines refuse outright
/// ("client version 1.53 is too new").
///
/// # Errors
/// The engine cannot be reached (socket missing, or not readable: add its group).
pub async fn connect() -> Result<Docker, Error> {
    Docker::connect_with_local_defaults()?.negotiate_version().await
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

/// Connecting a container that is connected already: 403 "endpoint with name X already exists in
/// network N". The wanted state holds.
fn already_connected(e: &Error) -> bool {
    matches!(e, Error::DockerResponseServerError { message, .. } if message.contains("already exists"))
}

/// Disconnecting a container that is not connected: "container ID is not connected to network N"
/// (a 500 from Docker 20.10, another code from other versions), or, with force, 404 "endpoint X
/// not found" for a container that no longer exists. The wanted state holds.
fn not_connected(e: &Error) -> bool {
    match e {
        Error::DockerResponseServerError { status_code, message } => {
            message.contains("is not connected")
                || (*status_code == 404 && message.starts_with("endpoint ") && message.ends_with("not found"))
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
                Err(e) if !not_connected(&e) => return Err(backend(e)),
                _ => {}
            }
        }
        match self.docker.connect_network(&self.network, connect_request(&self.own_container, &self.alias)).await {
            Err(e) if !already_connected(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn release(&self) -> Result<(), MoveError> {
        match self.docker.disconnect_network(&self.network, disconnect_request(&self.own_container)).await {
            Err(e) if !not_connected(&e) => Err(backend(e)),
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
        // Docker 20.10's answers (API 1.41), and the same messages under another status code.
        let error =
            |status_code, message: &str| Error::DockerResponseServerError { status_code, message: message.into() };
        let exists = error(403, "endpoint with name sup-a already exists in network zeo-rs-service");
        let not_connected_500 = error(500, "container 3f2c is not connected to network zeo-rs-service");
        let not_connected_403 = error(403, "container 3f2c is not connected to network zeo-rs-service");
        let gone = error(404, "endpoint sup-b not found");
        let no_container = error(404, "No such container: sup-a");
        let no_network = error(404, "network zeo-rs-servce not found");
        assert!(already_connected(&exists));
        assert!(not_connected(&not_connected_500) && not_connected(&not_connected_403) && not_connected(&gone));
        assert!(!already_connected(&no_container), "a missing own container is a real error");
        assert!(!not_connected(&no_network) && !already_connected(&no_network), "a wrong network name is a real error");
        assert!(!not_connected(&exists) && !already_connected(&not_connected_500));
    }
}
