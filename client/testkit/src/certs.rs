//! Certificates for the replication link's mutual TLS in tests (issue 13), made with rcgen as
//! `scripts/replication-certs` makes them with openssl: one CA, and member certificates whose CN
//! is the identity and whose first DNS SAN is the identity too. For the attack tests: another CA
//! (`LinkPki::new` again, elsewhere) and certificates with an identity outside the peer list.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A member's certificate and key files.
#[derive(Clone, Debug)]
pub struct MemberCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA whose files live in `dir`.
pub struct LinkPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Numbers the member files: every call makes new ones, so tests running in parallel never
    /// read a certificate while another rewrites it.
    made: std::sync::atomic::AtomicU64,
}

impl LinkPki {
    /// A new CA, written to `dir/ca.pem` (`dir` is created). `label` goes in its CN, so two CAs in
    /// one test are told apart in logs.
    ///
    /// # Panics
    /// When the files cannot be written (a test setup failure).
    pub fn new(dir: &Path, label: &str) -> LinkPki {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("zeo-rs test link CA {label}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        LinkPki { dir: dir.to_path_buf(), ca, made: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The CA certificate file (`--replication-tls-ca`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A member certificate with CN = `identity` and DNS SANs `identity` then `extra_sans`, usable
    /// on both ends of the link (server and client auth). Written to new files
    /// `dir/IDENTITY-N.pem` and `dir/IDENTITY-N-key.pem`.
    ///
    /// # Panics
    /// When the certificate cannot be made or written.
    pub fn member_with(&self, identity: &str, extra_sans: &[&str]) -> MemberCert {
        let sans: Vec<String> =
            std::iter::once(identity).chain(extra_sans.iter().copied()).map(str::to_owned).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, identity);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = MemberCert {
            cert: self.dir.join(format!("{identity}-{n}.pem")),
            key: self.dir.join(format!("{identity}-{n}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// `member_with` without extra SANs.
    pub fn member(&self, identity: &str) -> MemberCert {
        self.member_with(identity, &[])
    }

    /// The zeo-server flags for a member `identity` (its certificate made if needed) that accepts
    /// the identities in `peers` on the link.
    pub fn server_args(&self, identity: &str, peers: &[&str]) -> Vec<String> {
        let m = self.member(identity);
        vec![
            "--replication-tls-cert".into(),
            m.cert.display().to_string(),
            "--replication-tls-key".into(),
            m.key.display().to_string(),
            "--replication-tls-ca".into(),
            self.ca().display().to_string(),
            "--replication-peers".into(),
            peers.join(","),
        ]
    }
}
