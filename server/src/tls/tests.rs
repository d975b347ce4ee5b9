//! The TLS path end to end: rcgen certificates, a tokio-rustls server on 127.0.0.1:0 behind
//! `tls_acceptor`/`accept_tls`, and tokio-rustls clients, `client_config`/`connect_tls` dialers and
//! Python `ssl` clients.

use std::net::SocketAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::*;
use crate::access::{AccessMode, AccessPolicy};

fn identity(cn: Option<&str>, dns: &[&str]) -> PeerIdentity {
    PeerIdentity { common_name: cn.map(str::to_owned), dns_names: dns.iter().map(|d| (*d).to_owned()).collect() }
}

// ---- certificates -----------------------------------------------------------------------------

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf_params(cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    p
}

/// A certificate signed by `issuer`: (certificate PEM, key PEM).
fn signed(issuer: &Issuer<'_, KeyPair>, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(cn, sans, eku).signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A self-signed client certificate, with or without `CA:TRUE` (ZEO's test certificates have it).
fn self_signed_client(cn: &str, is_ca: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = leaf_params(cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
    p.is_ca = if is_ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as files.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    files: TlsFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("zeo test CA");
        let (server, server_key) =
            signed(&ca, "zeo server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let put = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let files = TlsFiles {
            cert: put("server.pem", &server),
            key: put("server-key.pem", &server_key),
            client_ca: put("client-ca.pem", &ca.pem()),
        };
        let (client, client_key) =
            signed(&ca, "app1", &["app1.clients.example", "alt.example"], ExtendedKeyUsagePurpose::ClientAuth);
        put("client.pem", &client);
        put("client-key.pem", &client_key);
        Pki { dir, ca, files }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a client certificate pair; returns the two paths.
    fn put_client(&self, name: &str, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
        let (c, k) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}-key.pem")));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }
}

/// Accepts one connection through `accept_tls`; on success reads "ping" and answers with the client's
/// identity. Returns the address and the task's outcome.
async fn serve_once(
    acceptor: TlsAcceptor,
) -> (SocketAddr, tokio::task::JoinHandle<Result<Option<PeerIdentity>, TlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, identity) = accept_tls(&acceptor, tcp).await?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(TlsError::Handshake)?;
        let answer = identity.as_ref().map(ToString::to_string).unwrap_or_default();
        tls.write_all(answer.as_bytes()).await.map_err(TlsError::Handshake)?;
        tls.shutdown().await.map_err(TlsError::Handshake)?;
        Ok(identity)
    });
    (addr, task)
}

/// A tokio-rustls client trusting the test CA, optionally presenting a certificate; returns the
/// server's answer.
async fn rust_client(addr: SocketAddr, ca_pem: &str, client: Option<(&Path, &Path)>) -> std::io::Result<String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"ping").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[test]
fn identity_from_certificate() {
    let issuer = ca("x");
    let (pem, _) =
        signed(&issuer, "app1", &["a.example", "127.0.0.1", "b.example"], ExtendedKeyUsagePurpose::ClientAuth);
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(PeerIdentity::from_der(&der), Some(identity(Some("app1"), &["a.example", "b.example"])));
    assert_eq!(PeerIdentity::from_der(b"not a certificate"), None);
}

#[test]
fn acceptor_reports_bad_files_by_flag() {
    let tls_acceptor = |files: &TlsFiles| tls_acceptor(files).map(drop);
    let pki = Pki::new();
    let mut files = pki.files.clone();
    files.key = pki.path("missing.pem");
    let e = tls_acceptor(&files).unwrap_err().to_string();
    assert!(e.starts_with("cannot read --tls-key") && e.contains("missing.pem"), "{e}");

    let mut files = pki.files.clone();
    files.cert = pki.files.key.clone();
    assert!(tls_acceptor(&files).unwrap_err().to_string().starts_with("--tls-cert"));

    let encrypted = pki.path("enc.pem");
    std::fs::write(&encrypted, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
        .unwrap();
    let files = TlsFiles { key: encrypted, ..pki.files.clone() };
    assert!(matches!(tls_acceptor(&files), Err(TlsError::EncryptedKey { .. })));

    let files = TlsFiles { key: pki.path("client-key.pem"), ..pki.files.clone() };
    let e = tls_acceptor(&files).unwrap_err();
    assert!(matches!(e, TlsError::Config(_)), "key of another certificate: {e}");

    let empty_dir = pki.path("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let files = TlsFiles { client_ca: empty_dir, ..pki.files.clone() };
    assert!(tls_acceptor(&files).unwrap_err().to_string().starts_with("--tls-client-ca"));
}

#[tokio::test]
async fn client_certificate_from_the_ca_is_accepted() {
    let pki = Pki::new();
    let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
    let client = (pki.path("client.pem"), pki.path("client-key.pem"));
    let answer = rust_client(addr, &pki.ca.pem(), Some((&client.0, &client.1))).await.unwrap();
    assert_eq!(answer, "CN=app1 DNS=app1.clients.example,alt.example");
    let id = server.await.unwrap().unwrap().unwrap();
    assert_eq!(id, identity(Some("app1"), &["app1.clients.example", "alt.example"]));
    let policy = AccessPolicy::new(Vec::new(), [("alt.example".to_owned(), AccessMode::ReadOnly)].into());
    assert_eq!(policy.mode_for(Some(&id)), Ok(AccessMode::ReadOnly));
}

#[tokio::test]
async fn client_ca_may_be_a_directory() {
    let pki = Pki::new();
    let dir = pki.path("cas");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("other.pem"), ca("other CA").pem()).unwrap();
    std::fs::write(dir.join("ours.pem"), pki.ca.pem()).unwrap();
    std::fs::write(dir.join("README"), "not a certificate").unwrap();
    let files = TlsFiles { client_ca: dir, ..pki.files.clone() };
    let (addr, server) = serve_once(tls_acceptor(&files).unwrap()).await;
    let client = (pki.path("client.pem"), pki.path("client-key.pem"));
    rust_client(addr, &pki.ca.pem(), Some((&client.0, &client.1))).await.unwrap();
    assert!(server.await.unwrap().unwrap().is_some());
}

#[tokio::test]
async fn missing_or_foreign_client_certificate_is_refused() {
    let pki = Pki::new();
    let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
    assert!(rust_client(addr, &pki.ca.pem(), None).await.is_err());
    let e = server.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("peer sent no certificates"), "{e}");

    let foreign = signed(&ca("someone else"), "app1", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let (cert, key) = pki.put_client("foreign", &foreign);
    let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
    assert!(rust_client(addr, &pki.ca.pem(), Some((&cert, &key))).await.is_err());
    let e = server.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

/// ZEO-style: a self-signed client certificate listed in the client CA file. webpki refuses it when
/// it says `CA:TRUE` (as ZEO's do), with our explanation; it accepts it with `CA:FALSE`.
#[tokio::test]
async fn self_signed_client_certificates() {
    let pki = Pki::new();
    for (is_ca, accepted) in [(true, false), (false, true)] {
        let pair = self_signed_client("selfie", is_ca);
        let (cert, key) = pki.put_client("selfie", &pair);
        let files = TlsFiles { client_ca: cert.clone(), ..pki.files.clone() };
        let (addr, server) = serve_once(tls_acceptor(&files).unwrap()).await;
        let answer = rust_client(addr, &pki.ca.pem(), Some((&cert, &key))).await;
        let outcome = server.await.unwrap();
        assert_eq!(answer.is_ok(), accepted, "CA:{is_ca}: {answer:?}");
        match outcome {
            Ok(id) => assert!(accepted && id.is_some_and(|id| id.common_name.as_deref() == Some("selfie"))),
            Err(e) => {
                assert!(!accepted);
                assert!(matches!(e, TlsError::CaAsClientCertificate), "{e}");
                assert!(e.to_string().contains("is a CA certificate (basicConstraints CA:TRUE)"), "{e}");
            }
        }
    }
}

/// The operator recipe from the module docs: `openssl req -x509` self-signed client certificates work
/// with `-addext basicConstraints=critical,CA:FALSE` and are refused without it (OpenSSL's default
/// adds `CA:TRUE`). Fails when the `openssl` CLI is missing (scripts/test installs it).
#[tokio::test]
async fn openssl_self_signed_recipe() {
    let pki = Pki::new();
    for (extra, accepted) in [(&["-addext", "basicConstraints=critical,CA:FALSE"][..], true), (&[][..], false)] {
        let (cert, key) = (pki.path("ossl.pem"), pki.path("ossl-key.pem"));
        let run = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "3650", "-subj", "/CN=ossl-client"])
            .args(extra)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        let out = run.unwrap_or_else(|e| panic!("cannot run the openssl CLI (apt-get install openssl): {e}"));
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let (addr, server) =
            serve_once(tls_acceptor(&TlsFiles { client_ca: cert.clone(), ..pki.files.clone() }).unwrap()).await;
        let answer = rust_client(addr, &pki.ca.pem(), Some((&cert, &key))).await;
        assert_eq!(answer.is_ok(), accepted, "{extra:?}: {answer:?}");
        match server.await.unwrap() {
            Ok(id) => assert_eq!(id.and_then(|i| i.common_name).as_deref(), Some("ossl-client")),
            Err(e) => assert!(!accepted && matches!(e, TlsError::CaAsClientCertificate), "{e}"),
        }
    }
}

/// Callers that run `TlsAcceptor::accept` themselves (not `accept_tls`) still get the explanation in
/// the error text.
#[tokio::test]
async fn raw_handshake_error_explains_ca_client_certificates() {
    let pki = Pki::new();
    let (cert, key) = pki.put_client("zeo-style", &self_signed_client("zeo", true));
    let acceptor = tls_acceptor(&TlsFiles { client_ca: cert.clone(), ..pki.files.clone() }).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await?;
        tls.read_u8().await
    });
    assert!(rust_client(addr, &pki.ca.pem(), Some((&cert, &key))).await.is_err());
    let e = server.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("is a CA certificate (basicConstraints CA:TRUE), which webpki refuses"), "{e}");
}

/// ZEO's own test certificates (they ship with ZEO, in the repository's venv): refused, with the
/// explanation.
#[tokio::test]
#[ignore = "needs the repository's .venv with ZEO (scripts/setup-venv); run with scripts/test or cargo test -- --include-ignored"]
async fn zeo_test_certificates_are_refused_clearly() {
    let zeo =
        zeo_tests_dir().expect("ZEO's test certificates (.venv/lib/*/site-packages/ZEO/tests): run scripts/setup-venv");
    let files =
        TlsFiles { cert: zeo.join("server.pem"), key: zeo.join("server_key.pem"), client_ca: zeo.join("client.pem") };
    let (addr, server) = serve_once(tls_acceptor(&files).unwrap()).await;
    let out =
        python_client(addr, &zeo.join("server.pem"), Some((&zeo.join("client.pem"), &zeo.join("client_key.pem"))), "")
            .await;
    assert!(out.starts_with("FAIL"), "{out}");
    let e = server.await.unwrap().unwrap_err();
    assert!(matches!(e, TlsError::CaAsClientCertificate), "{e}");
}

// ---- the dialing end: client_config, connect_tls ---------------------------------------------

/// Settings of a dialer's files (any flags: errors must name the ones given).
const DIALER: Settings = Settings { cert: "--dial-cert", key: "--dial-key", ca: "--dial-ca" };

/// A dialer presenting `cert`/`key` and trusting the CA of `pki`.
fn dialer_with(pki: &Pki, cert: &Path, key: &Path) -> TlsConnector {
    let end = Endpoint { cert, key, peer_ca: &pki.files.client_ca, settings: DIALER };
    TlsConnector::from(client_config(&end).unwrap())
}

/// A dialer presenting the client certificate of `pki` ("app1").
fn dialer(pki: &Pki) -> TlsConnector {
    dialer_with(pki, &pki.path("client.pem"), &pki.path("client-key.pem"))
}

/// Dials `addr` through `connect_tls`, verifying the server against `name`; on success sends "ping"
/// and returns the server's identity and answer (the identity it saw for us).
async fn dial(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> Result<(Option<PeerIdentity>, String), TlsError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tls, server) = connect_tls(connector, name, tcp).await?;
    tls.write_all(b"ping").await.map_err(TlsError::Handshake)?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.map_err(TlsError::Handshake)?;
    Ok((server, answer))
}

#[tokio::test]
async fn dialer_and_listener_authenticate_each_other() {
    let pki = Pki::new();
    for name in ["localhost", "127.0.0.1"] {
        let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
        let (server_id, answer) = dial(&dialer(&pki), addr, name).await.unwrap();
        assert_eq!(server_id, Some(identity(Some("zeo server"), &["localhost"])), "{name}");
        assert_eq!(answer, "CN=app1 DNS=app1.clients.example,alt.example");
        assert_eq!(
            server.await.unwrap().unwrap(),
            Some(identity(Some("app1"), &["app1.clients.example", "alt.example"]))
        );
    }
}

/// A server the dialer cannot verify is refused: a rogue one (a hijacked name or address) with a
/// certificate from its own CA, though it would accept the dialer; and a real one dialed by a name
/// its certificate is not for.
#[tokio::test]
async fn dialer_refuses_a_server_it_cannot_verify() {
    let pki = Pki::new();
    let (cert, key) = pki.put_client(
        "rogue",
        &signed(&ca("rogue CA"), "zeo server", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth),
    );
    let rogue = TlsFiles { cert, key, ..pki.files.clone() };
    for (files, name, why) in
        [(&rogue, "localhost", "UnknownIssuer"), (&pki.files, "primary.example", "not valid for name")]
    {
        let (addr, server) = serve_once(tls_acceptor(files).unwrap()).await;
        let e = dial(&dialer(&pki), addr, name).await.unwrap_err();
        assert!(matches!(e, TlsError::Handshake(_)) && e.to_string().contains(why), "{name}: {e}");
        assert!(server.await.unwrap().is_err());
    }
}

/// The other way round: a dialer whose certificate comes from another CA is refused by the listener.
#[tokio::test]
async fn listener_refuses_a_dialer_from_another_ca() {
    let pki = Pki::new();
    let (cert, key) =
        pki.put_client("foreign", &signed(&ca("someone else"), "app1", &[], ExtendedKeyUsagePurpose::ClientAuth));
    let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
    assert!(dial(&dialer_with(&pki, &cert, &key), addr, "localhost").await.is_err());
    let e = server.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn dialer_needs_a_dns_name_or_ip_address() {
    let pki = Pki::new();
    let (stream, _peer) = tokio::io::duplex(1024);
    let e = connect_tls(&dialer(&pki), "not a name", stream).await.unwrap_err();
    assert!(matches!(e, TlsError::ServerName(ref n) if n == "not a name"), "{e}");
}

#[test]
fn client_config_reports_bad_files_by_setting() {
    let pki = Pki::new();
    let (client, client_key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let end = Endpoint { cert: &client, key: &client_key, peer_ca: &pki.files.client_ca, settings: DIALER };
    let config = |end: &Endpoint<'_>| client_config(end).map(drop);
    assert!(config(&end).is_ok());

    let missing = pki.path("missing.pem");
    let e = config(&Endpoint { key: &missing, ..end }).unwrap_err().to_string();
    assert!(e.starts_with("cannot read --dial-key") && e.contains("missing.pem"), "{e}");
    let e = config(&Endpoint { cert: &client_key, ..end }).unwrap_err().to_string();
    assert!(e.starts_with("--dial-cert"), "{e}");

    let encrypted = pki.path("enc.pem");
    std::fs::write(&encrypted, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
        .unwrap();
    let e = config(&Endpoint { key: &encrypted, ..end }).unwrap_err();
    assert!(matches!(e, TlsError::EncryptedKey { .. }) && e.to_string().starts_with("--dial-key"), "{e}");

    let e = config(&Endpoint { key: &pki.files.key, ..end }).unwrap_err();
    assert!(matches!(e, TlsError::ClientConfig(_)), "key of another certificate: {e}");

    let empty_dir = pki.path("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let e = config(&Endpoint { peer_ca: &empty_dir, ..end }).unwrap_err().to_string();
    assert!(e.starts_with("--dial-ca"), "{e}");
}

/// The same checks name a listener's own settings too (not the ZEO flags).
#[test]
fn server_config_reports_bad_files_by_setting() {
    let pki = Pki::new();
    let listener = Endpoint { settings: DIALER, ..Endpoint::zeo_listener(&pki.files) };
    assert!(server_config(&listener).is_ok());
    let missing = pki.path("missing.pem");
    let e = server_config(&Endpoint { peer_ca: &missing, ..listener }).unwrap_err().to_string();
    assert!(e.starts_with("cannot read --dial-ca"), "{e}");
    let e = server_config(&Endpoint { key: &missing, ..listener }).unwrap_err().to_string();
    assert!(e.starts_with("cannot read --dial-key"), "{e}");
}

// ---- Python ssl client -----------------------------------------------------------------------

/// The venv's ZEO/tests directory, found from the workspace root.
fn zeo_tests_dir() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/ZEO/tests"))
        .find(|p| p.join("client.pem").is_file())
}

/// Connects like ZEO's client does (an `SSLContext` with `load_verify_locations` and `load_cert_chain`),
/// sends "ping" and prints "OK <version> <answer>" or "FAIL <error>". `opts` may hold `check-hostname`
/// and `tls1.2`.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca, cert, key, opts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.check_hostname = "check-hostname" in opts
if "tls1.2" in opts:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
if cert != "-":
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            answer = b""
            while True:
                chunk = tls.recv(1024)
                if not chunk:
                    break
                answer += chunk
            print("OK", tls.version(), answer.decode())
except Exception as e:
    print("FAIL", type(e).__name__, e)
"#;

/// Runs `PYTHON_CLIENT` with `python3` from PATH (fails loudly without one).
async fn python_client(addr: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>, opts: &str) -> String {
    let (cert, key) =
        client.map_or(("-".into(), "-".into()), |(c, k)| (c.display().to_string(), k.display().to_string()));
    let run = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_CLIENT, "127.0.0.1", &addr.port().to_string()])
        .arg(ca)
        .args([cert, key, opts.to_owned()])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("python3 timed out")
        .unwrap_or_else(|e| panic!("running python3 (a Python 3 on PATH is required): {e}"));
    assert!(output.status.success(), "python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn python_ssl_client_handshakes() {
    let pki = Pki::new();
    let client = (pki.path("client.pem"), pki.path("client-key.pem"));
    for (opts, version) in [("check-hostname", "TLSv1.3"), ("check-hostname tls1.2", "TLSv1.2")] {
        let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
        let out = python_client(addr, &pki.files.client_ca, Some((&client.0, &client.1)), opts).await;
        assert!(out.starts_with(&format!("OK {version} CN=app1 DNS=app1.clients.example")), "{opts}: {out}");
        assert!(server.await.unwrap().unwrap().is_some());
    }

    let (addr, server) = serve_once(tls_acceptor(&pki.files).unwrap()).await;
    let out = python_client(addr, &pki.files.client_ca, None, "check-hostname").await;
    assert!(out.starts_with("FAIL"), "no client certificate: {out}");
    assert!(server.await.unwrap().is_err());
}
