//! Which address mover runs (`--address`) and building it from its settings.
//!
//! Adding a mover: a variant of [`AddressBackend`], what it needs in
//! [`AddressSettings::validate`] and how it is built in [`from_settings`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::local::LocalProxy;
use super::vip::VipMover;
use super::{AddressMover, NoAddress};

/// How the service address follows the primary (`--address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressBackend {
    /// No address: clients list every server and find the writable one.
    #[default]
    None,
    /// A listener on SERVICE_ADDRESS forwarding to our server, on one host.
    Local,
    /// The role label of our pod (OWN_TARGET) and the peers' (PEER_TARGETS).
    #[cfg(feature = "kubernetes")]
    Kubernetes,
    /// The alias DOCKER_ALIAS on DOCKER_NETWORK, for our container (OWN_TARGET) only.
    #[cfg(feature = "docker")]
    Docker,
    /// The address VIP on VIP_INTERFACE, announced by gratuitous ARP.
    Vip,
}

impl std::fmt::Display for AddressBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        // Every variant has a value name: none is skipped.
        f.write_str(self.to_possible_value().expect("a value name").get_name())
    }
}

/// The address settings with their defaults applied.
#[derive(Debug, Clone)]
pub struct AddressSettings {
    pub backend: AddressBackend,
    /// local: `IP:PORT` clients connect to.
    pub service_address: Option<String>,
    /// local: where the listener forwards to (our server's ZEO address).
    pub server_zeo: String,
    /// vip: address/prefix, and its interface.
    pub vip: Option<String>,
    pub vip_interface: Option<String>,
    /// kubernetes: our pod; docker: our container.
    pub own_target: Option<String>,
    /// kubernetes: the peers' pods; docker: their containers. Never our own.
    pub peer_targets: Vec<String>,
    /// kubernetes: the label key, and the pods' namespace.
    pub role_label: String,
    pub namespace: String,
    /// docker: the client network and the alias on it.
    pub docker_network: Option<String>,
    pub docker_alias: Option<String>,
    /// kubernetes: the bound of each API call, its retries included.
    pub timeout: Duration,
}

/// Why the address mover could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The chosen mover needs a setting that was not given.
    #[error("--{flag} is required with --address {backend}")]
    Missing { flag: &'static str, backend: AddressBackend },
    #[error("--service-address {0:?} must be IP:PORT")]
    ServiceAddress(String),
    /// No Kubernetes client configuration (in-cluster or kubeconfig).
    #[cfg(feature = "kubernetes")]
    #[error("Kubernetes client")]
    Kubernetes(#[from] kube::Error),
    /// The Docker engine does not answer.
    #[cfg(feature = "docker")]
    #[error("Docker engine")]
    Docker(#[from] bollard::errors::Error),
}

impl AddressSettings {
    /// Checks that the chosen mover has what it needs, without touching it.
    ///
    /// # Errors
    /// A missing setting (named) or a service address that is not `IP:PORT`.
    pub fn validate(&self) -> Result<(), SetupError> {
        match self.backend {
            AddressBackend::None => Ok(()),
            AddressBackend::Local => self.service().map(drop),
            #[cfg(feature = "kubernetes")]
            AddressBackend::Kubernetes => self.own_target().map(drop),
            #[cfg(feature = "docker")]
            AddressBackend::Docker => {
                self.required(&self.docker_network, "docker-network")?;
                self.required(&self.docker_alias, "docker-alias")?;
                self.own_target().map(drop)
            }
            AddressBackend::Vip => {
                self.required(&self.vip, "vip")?;
                self.required(&self.vip_interface, "vip-interface").map(drop)
            }
        }
    }

    fn required<'a>(&self, value: &'a Option<String>, flag: &'static str) -> Result<&'a str, SetupError> {
        value.as_deref().ok_or(SetupError::Missing { flag, backend: self.backend })
    }

    fn service(&self) -> Result<SocketAddr, SetupError> {
        let text = self.required(&self.service_address, "service-address")?;
        text.parse().map_err(|_| SetupError::ServiceAddress(text.to_string()))
    }

    #[cfg(any(feature = "kubernetes", feature = "docker"))]
    fn own_target(&self) -> Result<&str, SetupError> {
        self.required(&self.own_target, "own-target")
    }
}

/// The mover of the chosen backend. It changes nothing yet: the loop claims or releases.
///
/// # Errors
/// A missing or malformed setting; no Kubernetes client configuration; no Docker engine.
pub async fn from_settings(s: &AddressSettings) -> Result<Box<dyn AddressMover>, SetupError> {
    let mover: Box<dyn AddressMover> = match s.backend {
        AddressBackend::None => Box::new(NoAddress),
        AddressBackend::Local => Box::new(LocalProxy::new(s.service()?, s.server_zeo.clone())),
        AddressBackend::Vip => Box::new(VipMover::new(
            s.required(&s.vip, "vip")?.to_string(),
            s.required(&s.vip_interface, "vip-interface")?.to_string(),
        )),
        #[cfg(feature = "kubernetes")]
        AddressBackend::Kubernetes => Box::new(super::kubernetes::PodLabelMover::new(
            crate::kube_call::client(s.timeout).await?,
            &s.namespace,
            s.own_target()?.to_string(),
            s.peer_targets.clone(),
            s.role_label.clone(),
            s.timeout,
        )),
        #[cfg(feature = "docker")]
        AddressBackend::Docker => Box::new(super::docker::DockerAliasMover::new(
            super::docker::connect().await?,
            s.required(&s.docker_network, "docker-network")?.to_string(),
            s.required(&s.docker_alias, "docker-alias")?.to_string(),
            s.own_target()?.to_string(),
            s.peer_targets.clone(),
        )),
    };
    Ok(mover)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(backend: AddressBackend) -> AddressSettings {
        AddressSettings {
            backend,
            service_address: None,
            server_zeo: "127.0.0.1:8100".into(),
            vip: None,
            vip_interface: None,
            own_target: None,
            peer_targets: Vec::new(),
            role_label: "role".into(),
            namespace: "default".into(),
            docker_network: None,
            docker_alias: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn each_mover_names_the_setting_it_lacks() {
        assert!(settings(AddressBackend::None).validate().is_ok());
        let missing = |s: AddressSettings| match s.validate() {
            Err(SetupError::Missing { flag, .. }) => flag,
            other => panic!("{:?}: {other:?}", s.backend),
        };
        assert_eq!(missing(settings(AddressBackend::Local)), "service-address");
        assert_eq!(missing(settings(AddressBackend::Vip)), "vip");
        let vip = AddressSettings { vip: Some("198.51.100.10/24".into()), ..settings(AddressBackend::Vip) };
        assert_eq!(missing(vip.clone()), "vip-interface");
        assert!(AddressSettings { vip_interface: Some("eth0".into()), ..vip }.validate().is_ok());
        #[cfg(feature = "kubernetes")]
        assert_eq!(missing(settings(AddressBackend::Kubernetes)), "own-target");
        #[cfg(feature = "docker")]
        assert_eq!(missing(settings(AddressBackend::Docker)), "docker-network");
        let local =
            AddressSettings { service_address: Some("localhost:8100".into()), ..settings(AddressBackend::Local) };
        assert!(matches!(local.validate(), Err(SetupError::ServiceAddress(_))), "an IP, not a name");
    }
}
