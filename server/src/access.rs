//! Access control, checked before a connection's ZEO handshake reaches `register`: the client address
//! against the allow-list, then (with TLS) the verified client certificate against the identity map,
//! which gives the connection its access mode (read-write or read-only).
//!
//! ZEO itself has neither (its only authentication is the TLS client certificate, and every accepted
//! certificate may write); both are opt-in here and the defaults behave like ZEO.
//!
//! TLS itself (certificates, the handshake, reading the identity off a verified certificate) is
//! `tls`.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use zeo_listen::AllowList;

/// Defined with the settings that name it (`--identity NAME=rw|ro`), so the configuration needs
/// nothing from this module.
pub use crate::config::AccessMode;
use crate::config::Config;
use crate::tls::PeerIdentity;

/// Why a connection is refused. An expected outcome, logged with its `Display` and counted by
/// `metric_label`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client address is outside every `--allow` network.
    #[error("address {0} is not in the allow list")]
    AddressNotAllowed(IpAddr),
    /// Identities are configured but the connection has no readable client certificate.
    #[error("no client certificate identity, and identities are configured")]
    NoIdentity,
    /// The certificate's CN and DNS names are all missing from the identity map.
    #[error("client certificate {0} matches no configured identity")]
    UnknownIdentity(PeerIdentity),
}

impl Refusal {
    /// How the listener counts it (`zeo_listener_refused_total{reason}`).
    pub fn reason(&self) -> zeo_listen::Reason {
        match self {
            Refusal::AddressNotAllowed(_) => zeo_listen::Reason::Address,
            Refusal::NoIdentity | Refusal::UnknownIdentity(_) => zeo_listen::Reason::Identity,
        }
    }
}

/// The allow-list and the identity map. Empty means open, as in ZEO.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    allow: AllowList,
    identities: BTreeMap<String, AccessMode>,
}

impl AccessPolicy {
    pub fn new(allow: Vec<IpNet>, identities: BTreeMap<String, AccessMode>) -> AccessPolicy {
        AccessPolicy { allow: AllowList::new(allow), identities }
    }

    /// The address allow-list, for the listeners' gates.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    pub fn from_config(config: &Config) -> AccessPolicy {
        AccessPolicy::new(config.allow.clone(), config.identities.clone())
    }

    /// Checks the client address; call it right after `accept`, before any TLS work. An IPv4-mapped
    /// IPv6 address (`::ffff:10.1.2.3`, from a dual-stack listener) is also checked as IPv4.
    ///
    /// # Errors
    /// `Refusal::AddressNotAllowed` when an allow-list is configured and no entry contains `addr`.
    pub fn check_addr(&self, addr: IpAddr) -> Result<(), Refusal> {
        if self.allow.allows(addr) { Ok(()) } else { Err(Refusal::AddressNotAllowed(addr)) }
    }

    /// The connection's access mode. `identity` is `None` for a plain (non-TLS) connection. Without
    /// an identity map every client may write (ZEO's behaviour); with one, the certificate must match
    /// an entry, and when its names match several entries the most restrictive mode wins. The config
    /// only allows an identity map together with TLS, so `None` with a map is refused.
    ///
    /// # Errors
    /// `Refusal::NoIdentity` or `Refusal::UnknownIdentity` when an identity map is configured and
    /// the client is not in it.
    pub fn mode_for(&self, identity: Option<&PeerIdentity>) -> Result<AccessMode, Refusal> {
        if self.identities.is_empty() {
            return Ok(AccessMode::ReadWrite);
        }
        let identity = identity.ok_or(Refusal::NoIdentity)?;
        self.identities
            .iter()
            .filter(|(name, _)| identity.matches(name))
            .map(|(_, mode)| *mode)
            .max() // ReadOnly > ReadWrite: the most restrictive.
            .ok_or_else(|| Refusal::UnknownIdentity(identity.clone()))
    }
}
