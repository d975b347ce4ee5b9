//! The replication link's security settings (issue 13): mutual TLS with a peer list, or an explicit
//! plain-TCP lab mode. A server that replicates (either end) must choose one; half a TLS
//! configuration names what is missing.

use std::path::PathBuf;

use super::layers::Layer;
use super::{ConfigError, invalid, readable};

/// The link's PEM files and the identities allowed on it. All four come together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTlsFiles {
    /// This member's certificate chain (leaf first), presented on both ends of the link.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates every peer's certificate must chain to (file or directory).
    pub ca: PathBuf,
    /// Identities (CN or DNS SAN) allowed on the link: the standbys a primary serves, the primaries
    /// a standby follows.
    pub peers: Vec<String>,
}

/// Takes the link settings out of the merged layer: `Some` only when all four TLS settings are
/// given, an error naming the first missing one when only some are.
pub(super) fn resolve(l: &mut Layer) -> Result<Option<LinkTlsFiles>, ConfigError> {
    let peers: Option<Vec<String>> = l
        .replication_peers
        .take()
        .map(|v| v.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect::<Vec<_>>())
        .filter(|v| !v.is_empty());
    match (l.replication_tls_cert.take(), l.replication_tls_key.take(), l.replication_tls_ca.take(), peers) {
        (None, None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca), Some(peers)) => Ok(Some(LinkTlsFiles { cert, key, ca, peers })),
        (cert, key, ca, peers) => {
            let set = [
                ("--replication-tls-cert", cert.is_some()),
                ("--replication-tls-key", key.is_some()),
                ("--replication-tls-ca", ca.is_some()),
                ("--replication-peers", peers.is_some()),
            ];
            // Some are set and some are not, so both searches find one.
            let given = set.iter().find(|(_, is_set)| *is_set).map_or("", |(flag, _)| flag);
            let missing = set.iter().find(|(_, is_set)| !*is_set).map_or("", |(flag, _)| flag);
            Err(invalid(format!(
                "{missing} is required with {given}: the replication link's TLS needs a certificate, its key, \
                 the CA peers must chain to, and the peer identities allowed"
            )))
        }
    }
}

/// A replicating server (`--replication-listen` or `--standby-of`) has link TLS or says
/// `--replication-insecure`; never both. The TLS files must be readable (they are parsed before
/// anything binds, in the binary).
pub(super) fn validate(replicates: bool, tls: Option<&LinkTlsFiles>, insecure: bool) -> Result<(), ConfigError> {
    match (tls, insecure) {
        (Some(_), true) => {
            return Err(invalid(
                "--replication-insecure contradicts --replication-tls-cert: choose TLS or plain TCP for the replication link",
            ));
        }
        (None, false) if replicates => {
            return Err(invalid(
                "--replication-listen and --standby-of need the link's TLS (--replication-tls-cert, \
                 --replication-tls-key, --replication-tls-ca, --replication-peers), or --replication-insecure \
                 for a lab (plain TCP: anyone who reaches the port can read the database)",
            ));
        }
        _ => {}
    }
    if let Some(t) = tls {
        readable("--replication-tls-cert", &t.cert)?;
        readable("--replication-tls-key", &t.key)?;
        readable("--replication-tls-ca", &t.ca)?;
        if let Some(bad) = t.peers.iter().find(|p| p.len() > 255 || p.contains(char::is_whitespace)) {
            return Err(invalid(format!("--replication-peers: {bad:?} is not a certificate identity")));
        }
    }
    Ok(())
}
