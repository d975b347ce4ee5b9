//! Mutual TLS on the replication link (issue 13): both ends present a certificate chaining to
//! `--replication-tls-ca`, and each checks that the other's certificate names an identity (CN or
//! DNS SAN) listed in `--replication-peers`.
//!
//! - The primary's listener requires a client certificate (webpki, the ZEO port's verifier) and,
//!   after the handshake, maps it to a listed identity or refuses the peer before reading a byte.
//! - The standby verifies the primary's chain to the CA but not against the name it dialed (in
//!   Kubernetes it dials a Service name, which no member certificate need carry): the primary's
//!   certificate must instead name a listed identity, checked inside the handshake.
//!
//! TLS 1.3 only (both ends are zeo-rs), ring crypto like the ZEO port. The files are read once, at
//! startup, before anything binds: a rotated certificate takes a restart.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::{Endpoint, PeerIdentity, Settings, TlsError, own_identity, peer_roots};
use crate::config::LinkTlsFiles;

/// The link's flags, for error messages.
pub const LINK_SETTINGS: Settings =
    Settings { cert: "--replication-tls-cert", key: "--replication-tls-key", ca: "--replication-tls-ca" };

/// The SNI name a standby sends. The primary does not look at it and the standby does not verify
/// the primary against it (see the module docs); it only has to be a valid DNS name.
const SNI: &str = "zeo-replication";

/// Why a link peer was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum LinkAuthError {
    /// The TLS handshake failed or timed out (no certificate, another CA, a plain-TCP peer, ...).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A certificate from the right CA whose names are not in `--replication-peers`.
    #[error("the peer's certificate ({0}) names no identity in --replication-peers")]
    NotAPeer(PeerIdentity),
}

impl LinkAuthError {
    /// The refusal reason (`zeo_listener_refused_total{listener="replication"}` on the primary,
    /// `zeo_replication_link_refused_total` on a standby).
    pub fn reason(&self) -> zeo_listen::Reason {
        match self {
            LinkAuthError::Tls(TlsError::HandshakeTimeout(_)) => zeo_listen::Reason::AuthTimeout,
            LinkAuthError::Tls(_) => zeo_listen::Reason::Tls,
            LinkAuthError::NotAPeer(_) => zeo_listen::Reason::Identity,
        }
    }
}

/// The link's TLS: an acceptor (primary), a connector (standby) and the allowed identities.
#[derive(Clone)]
pub struct LinkTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    peers: Arc<Vec<String>>,
    /// The names this member's own certificate carries (the identity its peers know it by).
    own: PeerIdentity,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls").field("peers", &self.peers).finish_non_exhaustive()
    }
}

impl LinkTls {
    /// Reads and checks the files (certificate, key, CA) and builds both ends' configurations.
    ///
    /// # Errors
    /// `TlsError` naming the flag and the file.
    pub fn load(files: &LinkTlsFiles) -> Result<LinkTls, TlsError> {
        let end = Endpoint { cert: &files.cert, key: &files.key, peer_ca: &files.ca, settings: LINK_SETTINGS };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = own_identity(&end)?;
        let roots = peer_roots(&end)?;
        let peers = Arc::new(files.peers.clone());
        let own = chain.first().and_then(|leaf| PeerIdentity::from_der(leaf)).unwrap_or_default();
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|source| TlsError::Verifier { what: LINK_SETTINGS.ca, source })?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let server_verifier = Arc::new(PeerServerVerifier {
            roots,
            algs: provider.signature_verification_algorithms,
            peers: peers.clone(),
        });
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::ClientConfig)?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::ClientConfig)?;
        Ok(LinkTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            peers,
            own,
        })
    }

    /// The names in this member's own certificate.
    pub fn own_identity(&self) -> &PeerIdentity {
        &self.own
    }

    /// The identities allowed on the link.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// The members this one expects as standbys when it is primary: every listed identity its own
    /// certificate does not name, nor `own_name` (its `--standby-name`).
    pub fn other_members(&self, own_name: &str) -> Vec<String> {
        self.peers.iter().filter(|p| p.as_str() != own_name && !self.own.matches(p)).cloned().collect()
    }

    /// The first listed identity `id` vouches for.
    fn listed(&self, id: &PeerIdentity) -> Option<String> {
        listed_in(&self.peers, id)
    }

    /// The primary's side: the TLS handshake (under the handshake deadline), then the standby's
    /// identity, which must be listed. Returns the stream and that identity.
    ///
    /// # Errors
    /// `LinkAuthError::Tls` (handshake failed or timed out) or `NotAPeer`.
    pub async fn accept<S>(&self, stream: S) -> Result<(server::TlsStream<S>, String), LinkAuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (tls, id) = super::accept_tls(&self.acceptor, stream).await?;
        // rustls only completes the handshake with a verified client certificate.
        let id = id.unwrap_or_default();
        let name = self.listed(&id).ok_or(LinkAuthError::NotAPeer(id))?;
        Ok((tls, name))
    }

    /// The standby's side: the TLS handshake, in which the primary's certificate must chain to the
    /// CA and name a listed identity. Returns the stream and that identity.
    ///
    /// # Errors
    /// `LinkAuthError::Tls` (handshake failed, refused certificate, timeout).
    pub async fn connect<S>(&self, stream: S) -> Result<(client::TlsStream<S>, String), LinkAuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (tls, id) = super::connect_tls(&self.connector, SNI, stream).await?;
        let id = id.unwrap_or_default();
        let name = self.listed(&id).ok_or(LinkAuthError::NotAPeer(id))?;
        Ok((tls, name))
    }
}

/// The first of `peers` that `id` matches (CN exactly, DNS names ignoring case).
pub fn listed_in(peers: &[String], id: &PeerIdentity) -> Option<String> {
    peers.iter().find(|p| id.matches(p)).cloned()
}

/// The standby's check of the primary: chain to the CA (webpki), and a listed identity instead of
/// the dialed name.
#[derive(Debug)]
struct PeerServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    peers: Arc<Vec<String>>,
}

/// The refusal of a primary whose certificate names no listed identity, as rustls carries it.
#[derive(Debug, thiserror::Error)]
#[error("the primary's certificate ({0}) names no identity in --replication-peers")]
struct PrimaryNotAPeer(PeerIdentity);

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let id = PeerIdentity::from_der(end_entity).unwrap_or_default();
        if listed_in(&self.peers, &id).is_none() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                PrimaryNotAPeer(id),
            )))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cn: Option<&str>, dns: &[&str]) -> PeerIdentity {
        PeerIdentity { common_name: cn.map(str::to_owned), dns_names: dns.iter().map(|d| (*d).to_owned()).collect() }
    }

    #[test]
    fn an_identity_is_the_cn_or_any_dns_san_that_is_listed() {
        let peers = vec!["a".to_owned(), "sup-b".to_owned()];
        assert_eq!(listed_in(&peers, &id(Some("a"), &[])).as_deref(), Some("a"), "CN only");
        assert_eq!(
            listed_in(&peers, &id(Some("b"), &["b", "SUP-B"])).as_deref(),
            Some("sup-b"),
            "a later SAN, any case"
        );
        assert_eq!(listed_in(&peers, &id(Some("mallory"), &["mallory.example"])), None);
        assert_eq!(listed_in(&peers, &id(Some("A"), &[])), None, "the CN is compared exactly");
        assert_eq!(listed_in(&peers, &PeerIdentity::default()), None, "no names, no identity");
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let timeout = LinkAuthError::Tls(TlsError::HandshakeTimeout(std::time::Duration::from_secs(10)));
        assert_eq!(timeout.reason(), zeo_listen::Reason::AuthTimeout);
        assert_eq!(LinkAuthError::NotAPeer(PeerIdentity::default()).reason(), zeo_listen::Reason::Identity);
    }
}
