//! The Kafka record sink's TLS/SASL settings: defined whether or not the
//! binary is built with the `kafka` feature, so the `--kafka-*` flags and
//! the configuration exist either way (a build without it refuses
//! `kafka://` sinks with a clear error).

use std::path::PathBuf;

/// TLS and SASL settings; the same keys are accepted in the URL's query
/// (`security.protocol`, `ssl.ca.location`, …). A field set here (from a
/// command-line flag) wins over the URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaSecurity {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates.
    pub ssl_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that ask for one.
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// A file holding the password (a mounted Secret); else
    /// `MODELGATE_KAFKA_SASL_PASSWORD`.
    pub sasl_password_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// These settings, each one unset here taken from `url`'s (flags win
    /// over the URL).
    pub fn or(self, url: KafkaSecurity) -> KafkaSecurity {
        KafkaSecurity {
            protocol: self.protocol.or(url.protocol),
            ssl_ca: self.ssl_ca.or(url.ssl_ca),
            ssl_cert: self.ssl_cert.or(url.ssl_cert),
            ssl_key: self.ssl_key.or(url.ssl_key),
            sasl_mechanism: self.sasl_mechanism.or(url.sasl_mechanism),
            sasl_username: self.sasl_username.or(url.sasl_username),
            sasl_password_file: self.sasl_password_file.or(url.sasl_password_file),
        }
    }
}
