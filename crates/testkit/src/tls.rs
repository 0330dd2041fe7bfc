//! A throwaway PKI for TLS tests, generated with rcgen into a temporary directory: a CA, a server
//! certificate for 127.0.0.1/localhost, client certificates signed by the CA, and a second
//! "rogue" CA with a client certificate that etcd does not trust.
//!
//! Key usages follow what Go's crypto/tls (etcd) checks: the server certificate carries
//! ExtendedKeyUsage ServerAuth, client certificates ClientAuth. Keys are ECDSA P-256 in PKCS#8
//! PEM, which both etcd and rustls read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::etcd::EtcdTls;

/// A PEM certificate and its private key, as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The generated PKI. The files live as long as this value (the directory is removed on drop),
/// so keep it alive as long as any etcd cluster that uses them.
pub struct TestPki {
    dir: TempDir,
    ca: Issuer<'static, KeyPair>,
    /// The trusted CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Server certificate for SAN IP 127.0.0.1 and DNS localhost, signed by the CA.
    pub server: CertFiles,
    /// A client certificate (CN `lockkeeper-test-client`) signed by the CA.
    pub client: CertFiles,
    /// The harness's own client certificate (CN `root`: with etcd auth enabled, etcd takes the
    /// user name from the certificate's CN, so the harness acts as root).
    pub admin: CertFiles,
    /// A self-signed CA that etcd does not trust.
    pub rogue_ca_cert: PathBuf,
    /// A client certificate signed by the rogue CA.
    pub rogue_client: CertFiles,
}

impl TestPki {
    /// Generates every certificate; panics on failure (tests only).
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("lockkeeper-pki-")
            .tempdir()
            .expect("create PKI dir");
        let (ca, ca_pem) = new_ca("lockkeeper test CA");
        let ca_cert = write(dir.path(), "ca.pem", &ca_pem);

        let server = issue(
            dir.path(),
            "server",
            &ca,
            "127.0.0.1",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = issue_client(dir.path(), "client", &ca, "lockkeeper-test-client");
        let admin = issue_client(dir.path(), "admin", &ca, "root");

        let (rogue_ca, rogue_pem) = new_ca("lockkeeper rogue CA");
        let rogue_ca_cert = write(dir.path(), "rogue-ca.pem", &rogue_pem);
        // Same CN as the trusted client: only the signature chain tells them apart.
        let rogue_client = issue_client(
            dir.path(),
            "rogue-client",
            &rogue_ca,
            "lockkeeper-test-client",
        );

        TestPki {
            dir,
            ca,
            ca_cert,
            server,
            client,
            admin,
            rogue_ca_cert,
            rogue_client,
        }
    }

    /// Another client certificate signed by the trusted CA, with the given common name (the
    /// etcd user name when etcd auth is enabled). `file_stem` must be unique within this PKI.
    pub fn issue_client(&self, file_stem: &str, common_name: &str) -> CertFiles {
        issue_client(self.dir.path(), file_stem, &self.ca, common_name)
    }

    /// Server settings for `EtcdCluster::start_with`, requiring client certificates and with
    /// the harness acting through the `admin` certificate.
    pub fn etcd_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_file: self.ca_cert.clone(),
            cert_file: self.server.cert.clone(),
            key_file: self.server.key.clone(),
            client_cert_auth: true,
            client_cert_file: self.admin.cert.clone(),
            client_key_file: self.admin.key.clone(),
        }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn new_ca(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "lockkeeper tests");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("generate CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (Issuer::new(params, key), cert.pem())
}

fn issue(
    dir: &Path,
    file_stem: &str,
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> CertFiles {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "lockkeeper tests");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    let cert_path = write(dir, &format!("{file_stem}.pem"), &cert.pem());
    let key_path = write(dir, &format!("{file_stem}-key.pem"), &key.serialize_pem());
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).expect("chmod key");
    CertFiles {
        cert: cert_path,
        key: key_path,
    }
}

/// A client certificate (no SANs, ClientAuth) signed by `issuer`.
fn issue_client(
    dir: &Path,
    file_stem: &str,
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
) -> CertFiles {
    issue(
        dir,
        file_stem,
        issuer,
        common_name,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(!path.exists(), "{} already exists", path.display());
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
