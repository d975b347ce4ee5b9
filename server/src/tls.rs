//! Mutually authenticated TLS, for both ends of a link: rustls configurations from PEM files (this
//! end's certificate chain and key, and the CA certificates the other end's certificate must chain
//! to), the handshakes with a deadline, and the identity a verified peer certificate vouches for
//! (CN and DNS SANs).
//!
//! - A listener (the ZEO port; the replication port) uses `server_config` and `accept_tls`: every
//!   client must present a certificate (ZEO's `<ssl>` always uses `CERT_REQUIRED`). `access` maps the
//!   client's identity to an access mode.
//! - A dialer (a standby connecting to its primary) uses `client_config` and `connect_tls`: it
//!   presents its own certificate and verifies that the server's chains to the CA and is valid for
//!   the name it dialed.
//!
//! An `Endpoint` names the PEM files and the settings they came from, so every error names the
//! setting to fix. The files are read at every call: building the configuration again picks up
//! rotated certificates.
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
//! When a client presents a CA certificate, the handshake fails with `TlsError::CaAsClientCertificate`,
//! which says so.

pub mod link;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::config::TlsFiles;

/// A slow or silent client must not hold a connection slot in the TLS handshake for long (nor a
/// silent server a dialer).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings (flags) that name an endpoint's three PEM files, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
}

/// The ZEO listener's flags.
pub const ZEO_SETTINGS: Settings = Settings { cert: "--tls-cert", key: "--tls-key", ca: "--tls-client-ca" };

/// One end of a mutually authenticated link, as PEM files.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// This end's certificate chain, leaf first.
    pub cert: &'a Path,
    /// Its private key (unencrypted PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
    /// The CA certificates the other end's certificate must chain to: one PEM file (several
    /// certificates allowed) or a directory of PEM files.
    pub peer_ca: &'a Path,
    /// Where the three paths came from.
    pub settings: Settings,
}

impl<'a> Endpoint<'a> {
    /// The ZEO listener: `--tls-cert`, `--tls-key`, `--tls-client-ca`.
    pub fn zeo_listener(files: &'a TlsFiles) -> Endpoint<'a> {
        Endpoint { cert: &files.cert, key: &files.key, peer_ca: &files.client_ca, settings: ZEO_SETTINGS }
    }
}

/// The names a verified peer certificate vouches for: the subject CN and the SAN DNS names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
}

impl PeerIdentity {
    /// Reads the names from a DER certificate; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
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
        Some(PeerIdentity { common_name, dns_names })
    }

    /// Whether `name` (an identity-map key) names this peer: the CN exactly, or a DNS name
    /// ignoring ASCII case (DNS names are case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        self.common_name.as_deref() == Some(name) || self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={}", self.common_name.as_deref().unwrap_or("-"))?;
        if !self.dns_names.is_empty() {
            write!(f, " DNS={}", self.dns_names.join(","))?;
        }
        Ok(())
    }
}

/// The identity in the peer's (already verified) leaf certificate, on either end of a connection;
/// `None` without a peer certificate (rustls only exposes certificates that passed verification).
pub fn peer_identity(conn: &rustls::CommonState) -> Option<PeerIdentity> {
    conn.peer_certificates()?.first().and_then(|leaf| PeerIdentity::from_der(leaf))
}

/// Why TLS could not be set up, or why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    #[error("{what} {}: the private key is encrypted; decrypt it (openssl pkey -in KEY -out PLAIN)", path.display())]
    EncryptedKey { what: &'static str, path: PathBuf },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("{what} {}: {source}", path.display())]
    TrustAnchor {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The peer-certificate verifier could not be built (e.g. no CA certificates).
    #[error("{what}: {source}")]
    Verifier {
        what: &'static str,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the server configuration (e.g. the key does not match the certificate).
    #[error("TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
    /// rustls refused the client configuration (e.g. the key does not match the certificate).
    #[error("TLS client configuration: {0}")]
    ClientConfig(#[source] rustls::Error),
    /// The name a dialer is to verify the server's certificate against is not a DNS name or an IP
    /// address.
    #[error("{0:?} is not a DNS name or IP address to verify a server certificate against")]
    ServerName(String),
    /// The peer did not finish the TLS handshake in time.
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
    /// The TLS handshake failed (bad or missing peer certificate, protocol mismatch, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn certs_in(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    })?;
    if certs.is_empty() {
        let source = rustls::pki_types::pem::Error::NoItemsFound;
        return Err(TlsError::Pem { what, path: path.to_owned(), source });
    }
    Ok(certs)
}

/// CA certificates: one PEM file, or every PEM file in a directory (as ZEO's `authenticate`
/// allows). Files in a directory without certificates are skipped.
fn ca_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !path.is_dir() {
        return certs_in(what, path, &read(what, path)?);
    }
    let entries = std::fs::read_dir(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    let mut certs = Vec::new();
    for file in files {
        match certs_in(what, &file, &read(what, &file)?) {
            Ok(found) => certs.extend(found),
            Err(e) => tracing::debug!(file = %file.display(), error = %e, "skipping file without certificates"),
        }
    }
    if certs.is_empty() {
        let source = rustls::pki_types::pem::Error::NoItemsFound;
        return Err(TlsError::Pem { what, path: path.to_owned(), source });
    }
    Ok(certs)
}

/// The trust anchors the peer's certificate must chain to.
fn peer_roots(end: &Endpoint<'_>) -> Result<Arc<RootCertStore>, TlsError> {
    let what = end.settings.ca;
    let mut roots = RootCertStore::empty();
    for cert in ca_certs(what, end.peer_ca)? {
        roots.add(cert).map_err(|source| TlsError::TrustAnchor { what, path: end.peer_ca.to_owned(), source })?;
    }
    Ok(Arc::new(roots))
}

/// This end's certificate chain and private key.
fn own_identity(end: &Endpoint<'_>) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let Settings { cert: cert_flag, key: key_flag, .. } = end.settings;
    let chain = certs_in(cert_flag, end.cert, &read(cert_flag, end.cert)?)?;
    let key_pem = read(key_flag, end.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| {
        if String::from_utf8_lossy(&key_pem).contains("ENCRYPTED") {
            TlsError::EncryptedKey { what: key_flag, path: end.key.to_owned() }
        } else {
            TlsError::Pem { what: key_flag, path: end.key.to_owned(), source }
        }
    })?;
    Ok((chain, key))
}

/// A listener's configuration: this end's certificate chain and key, and a verifier that requires
/// every client to present a certificate chaining to a CA in `peer_ca`. TLS 1.2 and 1.3, ring
/// crypto.
///
/// # Errors
/// `TlsError` naming the setting, the file and what is wrong with it.
pub fn server_config(end: &Endpoint<'_>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = own_identity(end)?;
    let webpki = WebPkiClientVerifier::builder_with_provider(peer_roots(end)?, provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier { what: end.settings.ca, source })?;
    let verifier = Arc::new(ExplainCaClientCertificate(webpki));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The ZEO listener's TLS acceptor (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
///
/// # Errors
/// `TlsError` naming the flag, the file and what is wrong with it.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    server_config(&Endpoint::zeo_listener(files)).map(TlsAcceptor::from)
}

/// Runs the server side of the TLS handshake with a deadline and returns the stream with the client's
/// identity.
///
/// # Errors
/// `TlsError::HandshakeTimeout` or `TlsError::Handshake`.
pub async fn accept_tls<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> Result<(server::TlsStream<S>, Option<PeerIdentity>), TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| TlsError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT))?
        .map_err(handshake_error)?;
    let identity = peer_identity(tls.get_ref().1);
    Ok((tls, identity))
}

/// A dialer's configuration: this end's certificate chain and key (presented to the server), and
/// the CA certificates the server's certificate must chain to. TLS 1.2 and 1.3, ring crypto.
///
/// # Errors
/// `TlsError` naming the setting, the file and what is wrong with it.
pub fn client_config(end: &Endpoint<'_>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = own_identity(end)?;
    let roots = peer_roots(end)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ClientConfig)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::ClientConfig)?;
    Ok(Arc::new(config))
}

/// Runs the client side of the TLS handshake with a deadline: the server's certificate must chain
/// to the configured CA and be valid for `server_name` (the host dialed: a DNS name or an IP
/// address). Returns the stream with the server's identity.
///
/// # Errors
/// `TlsError::ServerName`, `TlsError::HandshakeTimeout` or `TlsError::Handshake`.
pub async fn connect_tls<S>(
    connector: &TlsConnector,
    server_name: &str,
    stream: S,
) -> Result<(client::TlsStream<S>, Option<PeerIdentity>), TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| TlsError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT))?
        .map_err(TlsError::Handshake)?;
    let identity = peer_identity(tls.get_ref().1);
    Ok((tls, identity))
}

/// Marks webpki's refusal of a CA certificate presented as a client certificate, so `accept_tls` can
/// report `TlsError::CaAsClientCertificate`. rustls prints it with `Debug` inside its own error
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

/// Turns a failed handshake into a `TlsError`, recognising our `CaAsClientCertificate` marker.
fn handshake_error(e: std::io::Error) -> TlsError {
    let ca_as_client = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|r| {
        matches!(r, rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.0.is::<CaAsClientCertificate>())
    });
    if ca_as_client { TlsError::CaAsClientCertificate } else { TlsError::Handshake(e) }
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
