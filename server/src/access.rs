//! Access control, checked before a connection's ZEO handshake reaches `register`: the client address
//! against the allow-list, then (with TLS) the verified client certificate against the identity map,
//! which gives the connection its access mode (read-write or read-only).
//!
//! ZEO itself has neither (its only authentication is the TLS client certificate, and every accepted
//! certificate may write); both are opt-in here and the defaults behave like ZEO.
//!
//! # Self-signed client certificates (ZEO's test style)
//! Python ZEO (OpenSSL) accepts a self-signed client certificate listed in `authenticate` as its own
//! trust anchor. rustls verifies clients with webpki, which differs in one way that matters: **a
//! certificate with `basicConstraints CA:TRUE` is refused as a client (end-entity) certificate**
//! (`CaUsedAsEndEntity`). ZEO's test certificates (`client.pem`, and most made with `openssl req -x509`,
//! whose default config adds `CA:TRUE`) are of that kind and do not work. A self-signed certificate
//! *without* `CA:TRUE` (e.g. `openssl req -x509 -addext basicConstraints=critical,CA:FALSE`) listed in
//! `--tls-client-ca` does work, since webpki takes any listed certificate's name and key as an anchor.
//! The usual setup is a small CA that signs the client certificates; `--tls-client-ca` holds the CA.
//! When a client presents a CA certificate, the handshake fails with `AccessError::CaAsClientCertificate`,
//! which says so.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Defined with the settings that name it (`--identity NAME=rw|ro`), so the configuration needs
/// nothing from this module.
pub use crate::config::AccessMode;
use crate::config::{Config, TlsFiles};

/// A slow or silent client must not hold a connection slot in the TLS handshake for long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The names a verified client certificate vouches for: the subject CN and the SAN DNS names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
}

impl ClientIdentity {
    /// Reads the names from a DER certificate; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok()).map(str::to_owned);
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(ClientIdentity { common_name, dns_names })
    }

    /// Whether `name` (an identity-map key) names this client: the CN exactly, or a DNS name
    /// ignoring ASCII case (DNS names are case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        self.common_name.as_deref() == Some(name) || self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={}", self.common_name.as_deref().unwrap_or("-"))?;
        if !self.dns_names.is_empty() {
            write!(f, " DNS={}", self.dns_names.join(","))?;
        }
        Ok(())
    }
}

/// The identity in the peer's (already verified) leaf certificate; `None` without a client
/// certificate (rustls only exposes certificates that passed verification).
pub fn identity_from(conn: &rustls::ServerConnection) -> Option<ClientIdentity> {
    conn.peer_certificates()?.first().and_then(|leaf| ClientIdentity::from_der(leaf))
}

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
    UnknownIdentity(ClientIdentity),
}

impl Refusal {
    /// A fixed label for `zeo_connections_refused_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::AddressNotAllowed(_) => "address",
            Refusal::NoIdentity | Refusal::UnknownIdentity(_) => "identity",
        }
    }
}

/// The allow-list and the identity map. Empty means open, as in ZEO.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    allow: Vec<IpNet>,
    identities: BTreeMap<String, AccessMode>,
}

impl AccessPolicy {
    pub fn new(allow: Vec<IpNet>, identities: BTreeMap<String, AccessMode>) -> AccessPolicy {
        AccessPolicy { allow, identities }
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
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if self.allow.is_empty() || allowed(addr) || mapped.is_some_and(allowed) {
            Ok(())
        } else {
            Err(Refusal::AddressNotAllowed(addr))
        }
    }

    /// The connection's access mode. `identity` is `None` for a plain (non-TLS) connection. Without
    /// an identity map every client may write (ZEO's behaviour); with one, the certificate must match
    /// an entry, and when its names match several entries the most restrictive mode wins. The config
    /// only allows an identity map together with TLS, so `None` with a map is refused.
    ///
    /// # Errors
    /// `Refusal::NoIdentity` or `Refusal::UnknownIdentity` when an identity map is configured and
    /// the client is not in it.
    pub fn mode_for(&self, identity: Option<&ClientIdentity>) -> Result<AccessMode, Refusal> {
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

/// Why TLS could not be set up, or why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A TLS file or directory could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is malformed or holds nothing usable.
    #[error("{what} {}: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The private key is encrypted; ZEO's `password-function` has no equivalent here.
    #[error("--tls-key {}: the private key is encrypted; decrypt it (openssl pkey -in KEY -out PLAIN)", path.display())]
    EncryptedKey { path: PathBuf },
    /// A certificate in `--tls-client-ca` cannot serve as a trust anchor.
    #[error("--tls-client-ca {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built (e.g. no CA certificates).
    #[error("--tls-client-ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the server configuration (e.g. the key does not match the certificate).
    #[error("TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client did not finish the TLS handshake in time.
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The client presented a CA certificate (`CA:TRUE`) as its own, as ZEO's test certificates do;
    /// webpki refuses those (see the module docs).
    #[error(
        "TLS handshake failed: the client certificate is a CA certificate (basicConstraints CA:TRUE), which \
         rustls/webpki does not accept as a client certificate (ZEO-style self-signed certificates); issue \
         client certificates from a CA listed in --tls-client-ca, or self-sign them with CA:FALSE"
    )]
    CaAsClientCertificate,
    /// The TLS handshake failed (bad or missing client certificate, protocol mismatch, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path).map_err(|source| AccessError::Read { what, path: path.to_owned(), source })
}

fn certs_in(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, AccessError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| AccessError::Pem { what, path: path.to_owned(), source })?;
    if certs.is_empty() {
        let source = rustls::pki_types::pem::Error::NoItemsFound;
        return Err(AccessError::Pem { what, path: path.to_owned(), source });
    }
    Ok(certs)
}

/// The client CA certificates: one PEM file, or every PEM file in a directory (as ZEO's
/// `authenticate` allows). Files in a directory without certificates are skipped.
fn client_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, AccessError> {
    const WHAT: &str = "--tls-client-ca";
    if !path.is_dir() {
        return certs_in(WHAT, path, &read(WHAT, path)?);
    }
    let entries =
        std::fs::read_dir(path).map_err(|source| AccessError::Read { what: WHAT, path: path.to_owned(), source })?;
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    let mut certs = Vec::new();
    for file in files {
        match certs_in(WHAT, &file, &read(WHAT, &file)?) {
            Ok(found) => certs.extend(found),
            Err(e) => tracing::debug!(file = %file.display(), error = %e, "skipping file without certificates"),
        }
    }
    if certs.is_empty() {
        let source = rustls::pki_types::pem::Error::NoItemsFound;
        return Err(AccessError::Pem { what: WHAT, path: path.to_owned(), source });
    }
    Ok(certs)
}

/// Builds the TLS acceptor: the server certificate chain and key from PEM, and a verifier that
/// requires every client to present a certificate chaining to a CA in `client_ca` (ZEO's `<ssl>`
/// always uses `CERT_REQUIRED`). TLS 1.2 and 1.3, ring crypto.
///
/// # Errors
/// `AccessError` naming the file and what is wrong with it.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, AccessError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs_in("--tls-cert", &files.cert, &read("--tls-cert", &files.cert)?)?;
    let key_pem = read("--tls-key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| {
        if String::from_utf8_lossy(&key_pem).contains("ENCRYPTED") {
            AccessError::EncryptedKey { path: files.key.clone() }
        } else {
            AccessError::Pem { what: "--tls-key", path: files.key.clone(), source }
        }
    })?;
    let mut roots = RootCertStore::empty();
    for cert in client_ca_certs(&files.client_ca)? {
        roots.add(cert).map_err(|source| AccessError::ClientCa { path: files.client_ca.clone(), source })?;
    }
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(ExplainCaClientCertificate(webpki));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs the server side of the TLS handshake with a deadline and returns the stream with the client's
/// identity.
///
/// # Errors
/// `AccessError::HandshakeTimeout` or `AccessError::Handshake`.
pub async fn accept_tls<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> Result<(TlsStream<S>, Option<ClientIdentity>), AccessError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| AccessError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT))?
        .map_err(handshake_error)?;
    let identity = identity_from(tls.get_ref().1);
    Ok((tls, identity))
}

/// Marks webpki's refusal of a CA certificate presented as a client certificate, so `accept_tls` can
/// report `AccessError::CaAsClientCertificate`. rustls prints it with `Debug` inside its own error
/// ("invalid peer certificate: Other(OtherError(...))"), so `Debug` carries the explanation too.
#[derive(thiserror::Error)]
#[error("the client certificate is a CA certificate (basicConstraints CA:TRUE)")]
struct CaAsClientCertificate;

impl fmt::Debug for CaAsClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the client certificate is a CA certificate (basicConstraints CA:TRUE), which webpki refuses as a \
             client certificate; use one issued by a CA in --tls-client-ca",
        )
    }
}

/// Turns a failed handshake into an `AccessError`, recognising our `CaAsClientCertificate` marker.
fn handshake_error(e: std::io::Error) -> AccessError {
    let ca_as_client = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|r| {
        matches!(r, rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.0.is::<CaAsClientCertificate>())
    });
    if ca_as_client { AccessError::CaAsClientCertificate } else { AccessError::Handshake(e) }
}

/// Wraps webpki's verifier only to replace its terse `CaUsedAsEndEntity` with an explanation.
#[derive(Debug)]
struct ExplainCaClientCertificate(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ExplainCaClientCertificate {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now).map_err(|e| {
            let is_ca = x509_parser::parse_x509_certificate(end_entity).is_ok_and(|(_, c)| c.is_ca());
            if is_ca {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(CaAsClientCertificate))))
            } else {
                e
            }
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
