//! How a connection reaches a server: TCP or a Unix socket, optionally inside TLS with a client
//! certificate (what ZEO servers configured with `<ssl>` require). [`dial`] opens the stream
//! that the framed connection then runs on.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{ClientError, Result};

/// One resolved place to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host` is the name the address was resolved from (the TLS server name by default).
    Tcp {
        addr: SocketAddr,
        host: String,
    },
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { addr, .. } => write!(f, "{addr}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A configured address: `unix:/path` or an absolute path is a Unix socket, anything else
/// `host:port`.
pub(crate) fn unix_path(addr: &str) -> Option<PathBuf> {
    addr.strip_prefix("unix:").or_else(|| addr.starts_with('/').then_some(addr)).map(PathBuf::from)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_owned()
}

/// Any byte stream a connection can run on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(crate) type Stream = Box<dyn Io>;

/// How a stream is opened: the socket options that notice a vanished host, and TLS.
#[derive(Debug, Clone)]
pub(crate) struct DialConfig {
    /// TCP keepalive idle time (probes then every second, 3 of them), `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// Linux `TCP_USER_TIMEOUT`: unacknowledged data older than this kills the connection.
    pub tcp_user_timeout: Option<Duration>,
    pub tls: Option<Tls>,
}

/// Connects to `addr` and, when configured, runs the TLS handshake, all before `deadline`
/// (`budget` is how long that was, for the timeout error).
///
/// # Errors
///
/// [`ClientError::Disconnected`] when the connection fails, [`ClientError::Timeout`] when the
/// deadline passes, [`ClientError::Config`] for TLS settings that do not fit the address.
pub(crate) async fn dial(addr: &Endpoint, cfg: &DialConfig, deadline: Instant, budget: Duration) -> Result<Stream> {
    let timeout = |op: &str| ClientError::Timeout { op: format!("{op} {addr}"), after: budget };
    let stream: Stream = match addr {
        Endpoint::Tcp { addr: sa, .. } => {
            let stream = tokio::time::timeout_at(deadline, TcpStream::connect(sa))
                .await
                .map_err(|_| timeout("connecting to"))?
                .map_err(|e| ClientError::disconnected(format!("connecting to {addr}: {e}")))?;
            // Connecting to a free port in the ephemeral range of this host can "succeed" by
            // connecting the socket to itself (TCP simultaneous open); that would also keep
            // the port from the server we are waiting for.
            if stream.local_addr().ok() == Some(*sa) {
                return Err(ClientError::disconnected(format!("connecting to {addr}: connected to itself")));
            }
            // Latency matters more than packet count for a request/reply protocol.
            let _ = stream.set_nodelay(true);
            // A server whose host vanished sends nothing, not even a reset: the kernel
            // notices through keepalive probes (idle connection) or unacknowledged data
            // (busy one) long before the default retransmission timeout of about 15 minutes.
            set_liveness(&stream, cfg);
            Box::new(stream)
        }
        Endpoint::Unix(path) => Box::new(
            tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| timeout("connecting to"))?
                .map_err(|e| ClientError::disconnected(format!("connecting to {addr}: {e}")))?,
        ),
    };
    match &cfg.tls {
        Some(tls) => {
            tokio::time::timeout_at(deadline, tls.wrap(stream, addr)).await.map_err(|_| timeout("TLS with"))?
        }
        None => Ok(stream),
    }
}

/// Applies the keepalive and user-timeout settings; failures only cost detection speed.
fn set_liveness(stream: &TcpStream, cfg: &DialConfig) {
    let sock = socket2::SockRef::from(stream);
    if let Some(idle) = cfg.tcp_keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(idle).with_interval(Duration::from_secs(1)).with_retries(3);
        if let Err(e) = sock.set_tcp_keepalive(&ka) {
            tracing::debug!(error = %e, "cannot enable TCP keepalive");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(t) = cfg.tcp_user_timeout
        && let Err(e) = sock.set_tcp_user_timeout(Some(t))
    {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// TLS settings of [`crate::ClientOptions::tls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificates the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and its key, for servers that authenticate clients (ZEO's
    /// `authenticate` setting). Both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify the server's certificate against (default: the host of the address).
    pub server_name: Option<String>,
}

/// A ready TLS client configuration.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish()
    }
}

fn config_err(what: &str, path: &std::path::Path, e: impl fmt::Display) -> ClientError {
    ClientError::Config(format!("TLS {what} {}: {e}", path.display()))
}

impl Tls {
    /// Reads the PEM files and builds the rustls configuration.
    pub(crate) fn load(o: &TlsOptions) -> Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(&o.ca_file).map_err(|e| config_err("CA file", &o.ca_file, e))?;
        for cert in rustls_pemfile::certs(&mut &ca[..]) {
            let cert = cert.map_err(|e| config_err("CA file", &o.ca_file, e))?;
            roots.add(cert).map_err(|e| config_err("CA file", &o.ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(config_err("CA file", &o.ca_file, "no certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (&o.cert_file, &o.key_file) {
            (Some(cert), Some(key)) => {
                let pem = std::fs::read(cert).map_err(|e| config_err("certificate", cert, e))?;
                let chain: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| config_err("certificate", cert, e))?;
                let pem = std::fs::read(key).map_err(|e| config_err("key", key, e))?;
                let key_der = rustls_pemfile::private_key(&mut &pem[..])
                    .map_err(|e| config_err("key", key, e))?
                    .ok_or_else(|| config_err("key", key, "no private key in it"))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| config_err("certificate", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(ClientError::Config("TLS cert_file and key_file go together".into())),
        };
        Ok(Tls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name: o.server_name.clone() })
    }

    /// Runs the TLS handshake over `stream`.
    pub(crate) async fn wrap(&self, stream: Stream, endpoint: &Endpoint) -> Result<Stream> {
        let name = match (&self.server_name, endpoint) {
            (Some(n), _) => n.clone(),
            (None, Endpoint::Tcp { host, .. }) => host.clone(),
            (None, Endpoint::Unix(_)) => {
                return Err(ClientError::Config("TLS over a Unix socket needs TlsOptions::server_name".into()));
            }
        };
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| ClientError::Config(format!("TLS server name {name:?}: {e}")))?;
        let tls = self
            .connector
            .connect(server_name, stream)
            .await
            .map_err(|e| ClientError::disconnected(format!("TLS handshake with {endpoint}: {e}")))?;
        Ok(Box::new(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(unix_path("unix:/run/zeo.sock"), Some(PathBuf::from("/run/zeo.sock")));
        assert_eq!(unix_path("/run/zeo.sock"), Some(PathBuf::from("/run/zeo.sock")));
        assert_eq!(unix_path("zeo:8100"), None);
        assert_eq!(host_of("zeo.example:8100"), "zeo.example");
        assert_eq!(host_of("[::1]:8100"), "::1");
    }

    fn cfg() -> DialConfig {
        DialConfig {
            tcp_keepalive: Some(Duration::from_secs(7)),
            tcp_user_timeout: Some(Duration::from_secs(11)),
            tls: None,
        }
    }

    #[tokio::test]
    async fn dead_host_detection_is_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        set_liveness(&stream, &cfg());
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(1));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(11)));
    }
}
