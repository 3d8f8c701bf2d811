//! Transport security for the Predict and admin listeners: rustls server
//! configurations built from PEM files, rebuilt while serving when the files
//! change, and the handshake [`crate::api::connection::incoming`] runs on each
//! accepted connection.
//!
//! cert-manager (and most secret mounts) rotate a certificate by swapping a
//! symlink, so a file's mtime says little; [`ReloadingConfig`] compares a hash
//! of the files' contents instead. A replacement that does not parse, or a
//! certificate that does not match its key (a rotation caught half-written),
//! keeps the old configuration serving and is counted as a failure; the next
//! poll that sees whole files picks them up.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

/// How often the PEM files are read again.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The PEM files of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that sign client certificates. Set: every client must
    /// present a certificate one of them signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the {what} {} is not usable PEM: {detail}", path.display())]
    Pem { what: &'static str, path: PathBuf, detail: String },
    #[error("the certificate {} and key {} do not make a server identity: {source}", cert.display(), key.display())]
    Identity { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the client CA {} cannot verify client certificates: {detail}", path.display())]
    ClientCa { path: PathBuf, detail: String },
}

/// The parsed contents of a listener's files.
struct Loaded {
    config: ServerConfig,
    /// The leaf certificate's notAfter, unix seconds.
    not_after: i64,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, path: path.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, path: path.to_path_buf(), detail: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

/// The raw bytes of every file, in a fixed order: what the hash covers.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read("certificate", &files.cert)?,
            key: read("private key", &files.key)?,
            client_ca: files.client_ca.as_deref().map(|p| read("client CA", p)).transpose()?,
        })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            // Length-prefixed, so moving bytes between files changes the hash.
            let part = part.map_or(&[][..], Vec::as_slice);
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn build(&self, files: &TlsFiles) -> Result<Loaded, TlsError> {
        let chain = certificates("certificate", &files.cert, &self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| TlsError::Pem {
            what: "private key",
            path: files.key.clone(),
            detail: e.to_string(),
        })?;
        let not_after = x509_parser::parse_x509_certificate(&chain[0])
            .map(|(_, c)| c.validity().not_after.timestamp())
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                path: files.cert.clone(),
                detail: format!("the first certificate does not parse: {e}"),
            })?;
        let builder =
            ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(
                |source| TlsError::Identity { cert: files.cert.clone(), key: files.key.clone(), source },
            )?;
        let builder = match (&files.client_ca, &self.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates("client CA", path, pem)? {
                    roots
                        .add(ca)
                        .map_err(|e| TlsError::ClientCa { path: path.clone(), detail: e.to_string() })?;
                }
                // Required client authentication: no certificate, no handshake.
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::ClientCa { path: path.clone(), detail: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded { config, not_after })
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are as last seen.
    Unchanged,
    /// New files, now serving.
    Reloaded,
}

/// A listener's current TLS configuration, swapped atomically when its files
/// change. New connections take the configuration current at their accept;
/// established ones keep theirs.
pub struct ReloadingConfig {
    /// `predict` or `admin`: the metrics' and logs' label.
    listener: &'static str,
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    not_after: AtomicI64,
    /// The contents last tried, good or bad: a bad file is reported once,
    /// not on every poll.
    seen: std::sync::Mutex<[u8; 32]>,
}

impl std::fmt::Debug for ReloadingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingConfig")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingConfig {
    /// Reads and checks the files; any problem is an error naming the file.
    pub fn load(listener: &'static str, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = Contents::read(&files)?;
        let loaded = contents.build(&files)?;
        Ok(Arc::new(Self {
            listener,
            current: ArcSwap::from_pointee(loaded.config),
            not_after: AtomicI64::new(loaded.not_after),
            seen: std::sync::Mutex::new(contents.fingerprint()),
            files,
        }))
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// The serving certificate's notAfter, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Reads the files again and, if their contents changed, rebuilds and
    /// swaps the configuration. On error the old configuration stays.
    /// Blocking (file reads): call it off the async workers.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let contents = Contents::read(&self.files)?;
        let fingerprint = contents.fingerprint();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == fingerprint {
                return Ok(Reload::Unchanged);
            }
            *seen = fingerprint;
        }
        let loaded = contents.build(&self.files)?;
        self.current.store(Arc::new(loaded.config));
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
        Ok(Reload::Reloaded)
    }

    /// Polls the files every `period` until `stop` is cancelled (the
    /// server's shutdown token), logging and counting every change.
    pub fn spawn_watch(
        self: &Arc<Self>,
        period: Duration,
        metrics: Arc<crate::telemetry::metrics::Metrics>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        metrics.tls_not_after(this.listener, this.not_after());
        tokio::spawn(async move {
            // A file that cannot be read (mid-swap, or deleted) is warned
            // about once until it reads again.
            let mut unreadable = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(period) => {}
                }
                let reloading = Arc::clone(&this);
                let Ok(result) = tokio::task::spawn_blocking(move || reloading.reload()).await else {
                    continue;
                };
                match result {
                    Ok(Reload::Unchanged) => unreadable = false,
                    Ok(Reload::Reloaded) => {
                        unreadable = false;
                        metrics.tls_reload(this.listener, "ok");
                        metrics.tls_not_after(this.listener, this.not_after());
                        tracing::info!(listener = this.listener, cert = %this.files.cert.display(), not_after = this.not_after(), "TLS certificate reloaded; new connections use it");
                    }
                    Err(e @ TlsError::Read { .. }) => {
                        if !unreadable {
                            metrics.tls_reload(this.listener, "error");
                            tracing::warn!(listener = this.listener, error = %e, "cannot reload TLS files; still serving the previous certificate");
                        }
                        unreadable = true;
                    }
                    Err(e) => {
                        metrics.tls_reload(this.listener, "error");
                        tracing::warn!(listener = this.listener, error = %e, "new TLS files rejected; still serving the previous certificate");
                    }
                }
            }
        })
    }
}

/// The TLS handshake for a connection the listener accepted, with the
/// configuration current at its accept. The time limit is the caller's
/// ([`crate::api::connection::incoming`] bounds handshake and HTTP/2 preface together).
pub fn handshake(
    config: Arc<ReloadingConfig>,
) -> impl Fn(TcpStream) -> tokio_rustls::Accept<TcpStream> + Send + 'static {
    move |stream| tokio_rustls::TlsAcceptor::from(config.current()).accept(stream)
}

/// The subject of the client certificate of an admin request over mutual
/// TLS, e.g. `CN=alice, O=ops`; `None` without one.
pub fn client_subject<T>(req: &tonic::Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    x509_parser::parse_x509_certificate(leaf).ok().map(|(_, c)| c.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
            let key = rcgen::KeyPair::generate().unwrap();
            Self { dir: tempfile::tempdir().unwrap(), ca: rcgen::Issuer::new(params, key) }
        }

        /// Writes a server certificate and key for `cn`; returns their paths.
        fn server(&self, cn: &str) -> TlsFiles {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let files = TlsFiles {
                cert: self.dir.path().join("tls.crt"),
                key: self.dir.path().join("tls.key"),
                client_ca: None,
            };
            std::fs::write(&files.cert, cert.pem()).unwrap();
            std::fs::write(&files.key, key.serialize_pem()).unwrap();
            files
        }
    }

    #[test]
    fn loads_reloads_on_change_and_keeps_the_old_config_on_garbage() {
        let pki = Pki::new();
        let files = pki.server("one");
        let config = ReloadingConfig::load("predict", files.clone()).unwrap();
        assert!(config.not_after() > 0);
        let first = config.current();
        assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(config.reload().unwrap(), Reload::Unchanged);
        assert!(Arc::ptr_eq(&first, &config.current()), "unchanged files keep the same config");

        pki.server("two");
        assert_eq!(config.reload().unwrap(), Reload::Reloaded);
        let second = config.current();
        assert!(!Arc::ptr_eq(&first, &second));

        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
        let e = config.reload().unwrap_err().to_string();
        assert!(e.contains("tls.crt"), "{e}");
        assert!(Arc::ptr_eq(&second, &config.current()), "a bad file keeps the old config");
        // The same bad contents are not re-reported.
        assert_eq!(config.reload().unwrap(), Reload::Unchanged);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let pki = Pki::new();
        let files = pki.server("one");
        let missing = TlsFiles { key: pki.dir.path().join("nope.key"), ..files.clone() };
        let e = ReloadingConfig::load("predict", missing).unwrap_err().to_string();
        assert!(e.contains("cannot read the private key") && e.contains("nope.key"), "{e}");

        // A key that is not the certificate's.
        let other = pki.dir.path().join("other.key");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let e = ReloadingConfig::load("predict", TlsFiles { key: other, ..files.clone() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not make a server identity"), "{e}");

        let empty = pki.dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = ReloadingConfig::load("admin", TlsFiles { client_ca: Some(empty), ..files })
            .unwrap_err()
            .to_string();
        assert!(e.contains("client CA") && e.contains("empty.pem") && e.contains("no CERTIFICATE"), "{e}");
    }
}
