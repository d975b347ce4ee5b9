//! Moving the service address clients use to the primary's server.
//!
//! [`AddressMover::claim`] points it at our server, [`AddressMover::release`] takes it away.
//! Both are idempotent: the loop repeats them after failures and after restarts.
//! Backends: [`kubernetes`] (the pod `role` label a Service selects on), [`docker`] (a network
//! alias), [`vip`] (an IP on an interface plus gratuitous ARP), [`local`] (a forwarding listener on
//! one host, for a pair of local processes), and [`NoAddress`] for clients
//! that list every server and find the writable one themselves (ZEO `read_only_fallback`).
//! `--address` picks one ([`AddressBackend`]); [`from_settings`] builds it.

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod local;
mod setup;
pub mod vip;

use async_trait::async_trait;

pub use setup::{AddressBackend, AddressSettings, SetupError, from_settings};

/// Where the service address points.
#[async_trait]
pub trait AddressMover: Send + Sync {
    /// Points the service address at our server (and away from the peers').
    ///
    /// # Errors
    /// The backend refused or could not be reached; the loop retries next tick.
    async fn claim(&self) -> Result<(), MoveError>;

    /// Takes the service address away from our server.
    ///
    /// # Errors
    /// As [`AddressMover::claim`].
    async fn release(&self) -> Result<(), MoveError>;
}

/// Why the address could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// A backend API call failed.
    #[error("{backend}: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command (`ip`, `arping`) failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// No address to move: clients are configured with every server's address.
pub struct NoAddress;

#[async_trait]
impl AddressMover for NoAddress {
    async fn claim(&self) -> Result<(), MoveError> {
        Ok(())
    }

    async fn release(&self) -> Result<(), MoveError> {
        Ok(())
    }
}
