//! Real certificates for the TLS tests: a CA made with rcgen in the test,
//! server certificates for 127.0.0.1 and localhost, client certificates, and
//! files laid out the way a Kubernetes secret volume (cert-manager) lays them
//! out, so a rotation is the same atomic symlink swap the kubelet does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    serial: AtomicU64,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

impl Ca {
    pub fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(cn, None);
        let key = KeyPair::generate().expect("CA key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"), serial: 1.into() }
    }

    /// The CA certificate, PEM: what clients (or the gateway, for client
    /// certificates) trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, sans: &[&str], dn: DistinguishedName) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(self.serial.fetch_add(1, Ordering::Relaxed)));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A server certificate valid for 127.0.0.1 and localhost.
    pub fn server(&self, cn: &str) -> Issued {
        self.issue(&["127.0.0.1", "localhost"], name(cn, None))
    }

    /// A client certificate with subject `CN=<cn>, O=<org>`.
    pub fn client(&self, cn: &str, org: &str) -> Issued {
        self.issue(&[], name(cn, Some(org)))
    }
}

/// A folder laid out like a Kubernetes secret volume: `tls.crt` and
/// `tls.key` are symlinks through `..data` into a timestamped folder, and an
/// update swaps `..data` in one rename.
#[derive(Debug)]
pub struct SecretDir {
    dir: tempfile::TempDir,
    generation: AtomicU64,
}

impl Default for SecretDir {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretDir {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir"), generation: 0.into() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Publishes a new certificate and key (and CA) atomically, as the kubelet does.
    pub fn publish(&self, issued: &Issued, ca_pem: &str) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let data = format!("..gen_{generation}");
        let folder = self.dir.path().join(&data);
        std::fs::create_dir(&folder).expect("create generation folder");
        std::fs::write(folder.join("tls.crt"), &issued.cert_pem).expect("write cert");
        std::fs::write(folder.join("tls.key"), &issued.key_pem).expect("write key");
        std::fs::write(folder.join("ca.crt"), ca_pem).expect("write ca");
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap ..data");
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            let link = self.dir.path().join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), &link).expect("symlink file");
            }
        }
    }

    /// Overwrites the current certificate file in place with `contents`, as
    /// a careless writer would.
    pub fn overwrite_cert(&self, contents: &str) {
        std::fs::write(self.cert(), contents).expect("overwrite cert");
    }

    /// The files for the gateway's config.
    pub fn files(&self, client_ca: Option<PathBuf>) -> modelgate::TlsFiles {
        modelgate::TlsFiles { cert: self.cert(), key: self.key(), client_ca }
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p
}
