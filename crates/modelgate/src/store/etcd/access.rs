//! How a replica reaches etcd: the `etcd://` URL of the fleet's state and
//! the access files of a secured etcd (CA, client certificate, user and
//! password file), read into connect options with a fingerprint that tells
//! when they changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use sha2::{Digest, Sha256};

use super::CALL_TIMEOUT;
use crate::store::StoreError;

/// How replicas reach a secured etcd. Every field is optional; none set is
/// plaintext without authentication (etcd on loopback or a private network).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// CA certificates (PEM) that signed etcd's server certificates. Set:
    /// connect with TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// An etcd user and the file holding its password (etcd auth).
    pub user: Option<(String, PathBuf)>,
}

/// What was read from an [`EtcdAccess`]'s files.
pub(super) struct AccessRead {
    pub(super) options: ConnectOptions,
    pub(super) fingerprint: [u8; 32],
}

impl EtcdAccess {
    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    pub(super) fn read(&self) -> Result<AccessRead, StoreError> {
        fn file(path: &Path) -> Result<Vec<u8>, StoreError> {
            std::fs::read(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })
        }
        let mut h = Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &self.ca {
            let ca = file(ca)?;
            part(&ca);
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                let (cert, key) = (file(cert)?, file(key)?);
                part(&cert);
                part(&key);
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((name, password_file)) = &self.user {
            let password = String::from_utf8(file(password_file)?).map_err(|_| StoreError::Corrupt {
                path: password_file.clone(),
                reason: "the etcd password file is not UTF-8".into(),
            })?;
            // Secret files often end with a newline the password does not have.
            let password = password.trim_end_matches(['\n', '\r']);
            part(name.as_bytes());
            part(password.as_bytes());
            // etcd's tokens expire (simple tokens after 5 minutes idle): get
            // a new one when a call is refused for that.
            options = options.with_user(name.clone(), password).with_auto_token_refresh(true);
        }
        Ok(AccessRead { options, fingerprint: h.finalize().into() })
    }
}

/// Where the fleet's state lives: `etcd://host:port[,host:port...]/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

impl std::str::FromStr for EtcdUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("'{s}' is not an etcd URL (etcd://host:port[,host:port]/prefix)"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let prefix = if prefix.is_empty() { "/modelgate".to_string() } else { prefix.to_string() };
        let endpoints: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("http://{h}")).collect();
        if endpoints.is_empty() {
            return Err(format!("'{s}' names no etcd endpoint"));
        }
        for h in hosts.split(',') {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("etcd endpoint '{h}' in '{s}' is not host:port"));
            }
        }
        Ok(Self { endpoints, prefix })
    }
}

/// The URL's endpoints, https:// when the access has a CA.
pub(super) fn endpoints(url: &EtcdUrl, access: &EtcdAccess) -> Vec<String> {
    url.endpoints
        .iter()
        .map(|e| match (access.tls(), e.strip_prefix("http://")) {
            (true, Some(rest)) => format!("https://{rest}"),
            _ => e.clone(),
        })
        .collect()
}

/// The access's connect options without its user: connecting with them
/// does not call etcd.
pub(super) fn without_user(access: &EtcdAccess) -> Result<ConnectOptions, StoreError> {
    let access = EtcdAccess { user: None, ..access.clone() };
    Ok(access.read()?.options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_a_default_prefix() {
        let u: EtcdUrl = "etcd://127.0.0.1:2379/prod/gw".parse().unwrap();
        assert_eq!(u.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(u.prefix, "/prod/gw");
        let u: EtcdUrl = "etcd://a:1,b:2".parse().unwrap();
        assert_eq!(u.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!(u.prefix, "/modelgate");
        assert!("etcd://a/x".parse::<EtcdUrl>().unwrap_err().contains("host:port"));
        assert!("http://a:1".parse::<EtcdUrl>().unwrap_err().contains("not an etcd URL"));
        assert!("etcd:///x".parse::<EtcdUrl>().is_err());
    }
}
