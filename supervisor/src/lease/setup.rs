//! Which lease backend runs (`--lease-backend`) and building it from its settings.
//!
//! Adding a backend: a variant of [`LeaseBackend`], what it needs in [`LeaseSettings::validate`]
//! and how it is built in [`from_settings`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::FileLeaseStore;
use super::static_store::StaticLeaseStore;
use super::{LeaseError, LeaseStore};

/// Where the lease is kept (`--lease-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseBackend {
    /// In this process, kept across restarts with --lease-file: one supervisor deciding alone.
    #[default]
    Static,
    /// A file shared by the supervisors of one host (--lease-file).
    File,
    /// An etcd v3 key, /zeo-rs/LEASE_NAME (--etcd-endpoints).
    #[cfg(feature = "etcd")]
    Etcd,
    /// A coordination.k8s.io/v1 Lease named LEASE_NAME in NAMESPACE.
    #[cfg(feature = "kubernetes")]
    Kubernetes,
}

impl std::fmt::Display for LeaseBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        // Every variant has a value name: none is skipped.
        f.write_str(self.to_possible_value().expect("a value name").get_name())
    }
}

/// The lease settings with their defaults applied.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub backend: LeaseBackend,
    /// static: the file that keeps the lease (and its epoch) across restarts; file: the lease
    /// file shared by the supervisors of one host.
    pub file: Option<PathBuf>,
    pub etcd_endpoints: Vec<String>,
    /// The etcd key's last part, or the Kubernetes Lease's name.
    pub name: String,
    /// The Kubernetes namespace of the Lease.
    pub namespace: String,
    /// The bound of each request to the store.
    pub timeout: Duration,
}

/// Why the lease store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The chosen backend needs a setting that was not given.
    #[error("--{flag} is required with --lease-backend {backend}")]
    Missing { flag: &'static str, backend: LeaseBackend },
    /// The store refused its settings, or its file could not be read.
    #[error(transparent)]
    Store(#[from] LeaseError),
    /// No Kubernetes client configuration (in-cluster or kubeconfig).
    #[cfg(feature = "kubernetes")]
    #[error("Kubernetes client")]
    KubeClient(#[source] kube::Error),
}

impl LeaseSettings {
    /// Checks that the chosen backend has what it needs, without touching it.
    ///
    /// # Errors
    /// [`SetupError::Missing`], naming the flag.
    pub fn validate(&self) -> Result<(), SetupError> {
        match self.backend {
            LeaseBackend::Static => Ok(()),
            LeaseBackend::File => self.lease_file().map(drop),
            #[cfg(feature = "etcd")]
            LeaseBackend::Etcd => self.endpoints().map(drop),
            #[cfg(feature = "kubernetes")]
            LeaseBackend::Kubernetes => Ok(()),
        }
    }

    fn lease_file(&self) -> Result<&Path, SetupError> {
        self.file.as_deref().ok_or(SetupError::Missing { flag: "lease-file", backend: self.backend })
    }

    #[cfg(feature = "etcd")]
    fn endpoints(&self) -> Result<&[String], SetupError> {
        Some(self.etcd_endpoints.as_slice())
            .filter(|e| !e.is_empty())
            .ok_or(SetupError::Missing { flag: "etcd-endpoints", backend: self.backend })
    }
}

/// The store of the chosen backend. Nothing is sent to it yet: a store that is not up yet is the
/// loop's "store unreachable", not a reason to exit.
///
/// # Errors
/// A missing setting, an etcd endpoint that is not `http://`, an unreadable static lease file,
/// no Kubernetes client configuration.
pub async fn from_settings(s: &LeaseSettings) -> Result<Arc<dyn LeaseStore>, SetupError> {
    let store: Arc<dyn LeaseStore> = match s.backend {
        LeaseBackend::Static => Arc::new(match &s.file {
            Some(p) => StaticLeaseStore::with_file(p)?,
            None => StaticLeaseStore::in_memory(),
        }),
        LeaseBackend::File => Arc::new(FileLeaseStore::new(s.lease_file()?)),
        #[cfg(feature = "etcd")]
        LeaseBackend::Etcd => {
            let key = format!("/zeo-rs/{}", s.name);
            Arc::new(super::etcd::EtcdLeaseStore::connect(s.endpoints()?, key, s.timeout).await?)
        }
        #[cfg(feature = "kubernetes")]
        LeaseBackend::Kubernetes => {
            let client = crate::kube_call::client(s.timeout).await.map_err(SetupError::KubeClient)?;
            Arc::new(super::kubernetes::KubeLeaseStore::new(client, &s.namespace, s.name.clone(), s.timeout))
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(backend: LeaseBackend) -> LeaseSettings {
        LeaseSettings {
            backend,
            file: None,
            etcd_endpoints: Vec::new(),
            name: "zeo-primary".into(),
            namespace: "default".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn each_backend_names_the_setting_it_lacks() {
        assert!(settings(LeaseBackend::Static).validate().is_ok());
        let file = settings(LeaseBackend::File);
        assert!(matches!(file.validate(), Err(SetupError::Missing { flag: "lease-file", .. })));
        assert!(matches!(from_settings(&file).await, Err(SetupError::Missing { flag: "lease-file", .. })));
        #[cfg(feature = "etcd")]
        assert!(matches!(
            settings(LeaseBackend::Etcd).validate(),
            Err(SetupError::Missing { flag: "etcd-endpoints", .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let shared = LeaseSettings { file: Some(dir.path().join("lease.json")), ..file };
        shared.validate().unwrap();
        let store = from_settings(&shared).await.unwrap();
        assert!(store.get().await.unwrap().is_none(), "a fresh lease file holds no record");
    }
}
