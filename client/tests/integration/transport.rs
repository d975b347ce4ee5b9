//! Transports: TLS with a client certificate against zeo-server (which, like ZEO, requires one),
//! and a Unix socket against Python's runzeo (zeo-server listens on TCP only).

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use zeo_client::{Client, ClientError, ClientOptions, Endpoint, TlsOptions, Z64};

use crate::common::{Server, bounded, client_options};

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a certificate signed by `issuer` and its key to `dir/name.pem`, `dir/name-key.pem`.
fn leaf(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
) {
    let mut p = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![eku];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

async fn roundtrip(c: &Client) {
    let oid = c.new_oid().await.unwrap();
    let t = c.begin();
    t.store(oid, Z64, b"over the transport".to_vec()).unwrap();
    t.commit().await.unwrap();
    assert_eq!(&c.load(oid).await.unwrap().0[..], b"over the transport");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let server_ca = ca("server CA");
        let client_ca = ca("client CA");
        std::fs::write(d.join("server-ca.pem"), server_ca.pem()).unwrap();
        std::fs::write(d.join("client-ca.pem"), client_ca.pem()).unwrap();
        leaf(d, &server_ca, "server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        leaf(d, &client_ca, "app", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let p = |f: &str| d.join(f).to_str().unwrap().to_owned();
        let server = Server::start(
            &d.join("Data.fs"),
            0,
            &[
                "--tls-cert",
                &p("server.pem"),
                "--tls-key",
                &p("server-key.pem"),
                "--tls-client-ca",
                &p("client-ca.pem"),
            ],
        )
        .await;
        let tls = TlsOptions {
            ca_file: d.join("server-ca.pem"),
            cert_file: Some(d.join("app.pem")),
            key_file: Some(d.join("app-key.pem")),
            server_name: None,
        };
        // By name, verified against the certificate's DNS name.
        let mut o = client_options(&format!("localhost:{}", server.port));
        o.tls = Some(tls.clone());
        let c = Client::connect(o).await.unwrap();
        roundtrip(&c).await;
        drop(c);

        // Without a client certificate the server refuses the handshake.
        let mut o = client_options(&server.addr);
        o.tls =
            Some(TlsOptions { cert_file: None, key_file: None, server_name: Some("localhost".into()), ..tls.clone() });
        o.wait_timeout = Duration::from_secs(2);
        assert!(Client::connect(o).await.is_err());
        // A server certificate from an unknown CA is refused by the client.
        let mut o = client_options(&server.addr);
        o.tls = Some(TlsOptions { ca_file: d.join("client-ca.pem"), ..tls.clone() });
        o.wait_timeout = Duration::from_secs(2);
        assert!(Client::connect(o).await.is_err());
        // Unreadable files are a configuration error, before any connection.
        let mut o = ClientOptions::new([server.addr.clone()]);
        o.tls = Some(TlsOptions { ca_file: d.join("missing.pem"), ..tls });
        assert!(matches!(o.validate(), Err(ClientError::Config(_))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_against_runzeo() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("zeo.sock");
        let conf = dir.path().join("zeo.conf");
        std::fs::write(
            &conf,
            format!(
                "<zeo>\n  address {}\n</zeo>\n<filestorage 1>\n  path {}\n</filestorage>\n",
                sock.display(),
                dir.path().join("Data.fs").display()
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(crate::python::runzeo())
            .arg("-C")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !sock.exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "runzeo did not create its socket");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = Client::connect(client_options(&format!("unix:{}", sock.display()))).await.unwrap();
        assert_eq!(c.server_endpoint(), Some(Endpoint::Unix(sock.clone())));
        assert_eq!(c.server_addr(), None);
        roundtrip(&c).await;
        drop(c);
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;
}
