//! The Kafka record sink: one JSON message per record, keyed by the routing
//! key's hash (else the request id) so one user's records stay in order on
//! one partition.
//!
//! Client: `rdkafka` over librdkafka 2.12 as rdkafka-sys bundles it, built
//! from C and linked statically (OpenSSL and zlib from the system).
//! librdkafka is the only maintained Rust-usable client with an idempotent
//! producer (the pure-Rust ones, e.g. rskafka, have no producer id or
//! sequence numbers). Debian's librdkafka 2.0.2 would have saved the C build
//! (rdkafka 0.33 links it dynamically), but it fails the ApiVersions
//! exchange with the test broker (tansu: "Read underflow"), where 2.12 does
//! not; the price is a one-off C build of about two minutes on a cold cache.
//!
//! Never blocking: `write` hands messages to librdkafka's own queue, bounded
//! here by `queue.records` and `queue.bytes`; a batch that does not fit is
//! refused whole with [`SinkError::Transient`] before any of it is queued,
//! so the queue thread's retry never duplicates a record. Delivery is
//! asynchronous: a record accepted by `write` that librdkafka later fails to
//! deliver (broker down past `message.timeout.ms`, refused by the broker) is
//! counted and handed to the queue thread by
//! [`RecordWriter::take_undelivered`], which counts it as dropped. `flush`
//! waits at most `flush.timeout.ms`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::{Record, RecordWriter, SCHEMA_VERSION, SinkError};

pub use super::kafka_security::KafkaSecurity;

/// The variable a SASL password is read from when no password file is given
/// (a password never goes in the URL, which ends up in logs).
pub const SASL_PASSWORD_ENV: &str = "MODELGATE_KAFKA_SASL_PASSWORD";

/// Everything a `kafka://` URL says, after checking.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topic: String,
    /// `none`, `gzip`, `snappy`, `lz4` (default) or `zstd`.
    pub compression: String,
    pub linger_ms: u64,
    pub batch_bytes: u64,
    /// How long librdkafka keeps retrying one record before it fails it.
    pub message_timeout_ms: u64,
    pub max_message_bytes: u64,
    pub flush_timeout_ms: u64,
    /// The bound on records and bytes accepted but not yet acknowledged.
    pub queue_records: u64,
    pub queue_bytes: u64,
    pub client_id: String,
    pub security: KafkaSecurity,
}

const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSettings {
    /// Parses `kafka://host:port[,host:port…]/topic[?key=value&…]`; an
    /// unknown key, a bad value or a password in the URL is an error naming
    /// it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("kafka://").ok_or_else(|| {
            format!("kafka sink url {url:?}: expected kafka://broker:port[,broker:port]/topic")
        })?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, topic) = location
            .split_once('/')
            .ok_or_else(|| format!("kafka sink url {url:?}: no topic (kafka://broker:port/topic)"))?;
        if authority.contains('@') {
            return Err(format!(
                "kafka sink url: credentials do not go in the url; use sasl.username and sasl.password.file or {SASL_PASSWORD_ENV}"
            ));
        }
        let mut brokers = Vec::new();
        for broker in authority.split(',') {
            let valid = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(format!("kafka sink url {url:?}: broker {broker:?} is not host:port"));
            }
            brokers.push(broker.to_string());
        }
        let topic = decode(topic)?;
        // Kafka's own rule for topic names.
        let topic_ok = !topic.is_empty()
            && topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !topic_ok {
            return Err(format!(
                "kafka sink url {url:?}: topic {topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
            ));
        }
        let mut s = KafkaSettings {
            brokers,
            topic,
            compression: "lz4".into(),
            linger_ms: 100,
            batch_bytes: 1_000_000,
            message_timeout_ms: 30_000,
            max_message_bytes: 1_000_000,
            flush_timeout_ms: 5_000,
            queue_records: 100_000,
            queue_bytes: 64 << 20,
            client_id: "modelgate".into(),
            security: KafkaSecurity::default(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            let value = decode(value)?;
            let number = |min: u64, max: u64| -> Result<u64, String> {
                value.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    format!("kafka sink url: {key}={value:?} is not a whole number in {min}..={max}")
                })
            };
            match key.as_str() {
                "compression" => {
                    if !COMPRESSIONS.contains(&value.as_str()) {
                        return Err(format!(
                            "kafka sink url: compression={value:?}; expected one of {COMPRESSIONS:?}"
                        ));
                    }
                    s.compression = value.clone();
                }
                "linger.ms" => s.linger_ms = number(0, 900_000)?,
                "batch.size" => s.batch_bytes = number(1, 2_147_483_647)?,
                "message.timeout.ms" => s.message_timeout_ms = number(1, 2_147_483_647)?,
                "message.max.bytes" => s.max_message_bytes = number(1000, 1_000_000_000)?,
                "flush.timeout.ms" => s.flush_timeout_ms = number(0, 3_600_000)?,
                "queue.records" => s.queue_records = number(1, 5_000_000)?,
                "queue.bytes" => s.queue_bytes = number(1 << 10, 1 << 40)?,
                "client.id" if !value.is_empty() => s.client_id = value.clone(),
                "security.protocol" => s.security.protocol = Some(value.clone()),
                "ssl.ca.location" => s.security.ssl_ca = Some(value.clone().into()),
                "ssl.certificate.location" => s.security.ssl_cert = Some(value.clone().into()),
                "ssl.key.location" => s.security.ssl_key = Some(value.clone().into()),
                "sasl.mechanism" | "sasl.mechanisms" => s.security.sasl_mechanism = Some(value.clone()),
                "sasl.username" => s.security.sasl_username = Some(value.clone()),
                "sasl.password.file" => s.security.sasl_password_file = Some(value.clone().into()),
                "sasl.password" => {
                    return Err(format!(
                        "kafka sink url: a password does not go in the url; use sasl.password.file or {SASL_PASSWORD_ENV}"
                    ));
                }
                _ => {
                    return Err(format!(
                        "kafka sink url: unknown parameter {key:?}; known: compression, linger.ms, batch.size, \
                         message.timeout.ms, message.max.bytes, flush.timeout.ms, queue.records, queue.bytes, \
                         client.id, security.protocol, ssl.ca.location, ssl.certificate.location, \
                         ssl.key.location, sasl.mechanism, sasl.username, sasl.password.file"
                    ));
                }
            }
        }
        Ok(s)
    }

    /// [`Self::parse`], then the `--kafka-*` flags in `flags` win over the
    /// URL's own TLS/SASL keys.
    pub fn parse_with_flags(url: &str, flags: &KafkaSecurity) -> Result<Self, String> {
        let mut settings = Self::parse(url)?;
        settings.security = flags.clone().or(std::mem::take(&mut settings.security));
        Ok(settings)
    }

    /// The librdkafka configuration: idempotent, acks from all in-sync
    /// replicas, batched and compressed, with the secrets read now.
    fn client_config(&self) -> Result<ClientConfig, String> {
        let mut c = self.connection_config()?;
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_bytes.to_string())
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("message.max.bytes", self.max_message_bytes.to_string())
            // The same partition for a key as the Java client picks, so
            // these records co-partition with other topics keyed alike.
            .set("partitioner", "murmur2_random")
            // Twice the writer's own bound: `write` checks that bound before
            // queueing, this only backs it up for a batch larger than it.
            .set("queue.buffering.max.messages", (self.queue_records * 2).min(10_000_000).to_string())
            .set(
                "queue.buffering.max.kbytes",
                (self.queue_bytes * 2 / 1024).clamp(1, 2_147_483_647).to_string(),
            );
        Ok(c)
    }

    /// What any client of these brokers needs, producer or consumer (`shadow
    /// report --from kafka://` reads with it): the brokers, the client id,
    /// TLS and SASL, with the secrets read now.
    pub fn connection_config(&self) -> Result<ClientConfig, String> {
        let sec = &self.security;
        let protocol = sec.protocol.clone().unwrap_or_else(|| "plaintext".into()).to_ascii_lowercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(format!("kafka sink: security.protocol={protocol:?}; expected one of {PROTOCOLS:?}"));
        }
        let sasl = protocol.starts_with("sasl_");
        let tls = protocol.ends_with("ssl");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            .set("security.protocol", &protocol);
        for (name, file, key) in [
            ("ssl.ca.location", &sec.ssl_ca, "ssl.ca.location"),
            ("ssl.certificate.location", &sec.ssl_cert, "ssl.certificate.location"),
            ("ssl.key.location", &sec.ssl_key, "ssl.key.location"),
        ] {
            if let Some(path) = file {
                if !tls {
                    return Err(format!("kafka sink: {name} needs security.protocol=ssl or sasl_ssl"));
                }
                std::fs::metadata(path).map_err(|e| format!("kafka sink: {name} {}: {e}", path.display()))?;
                c.set(key, path.display().to_string());
            }
        }
        match (&sec.sasl_mechanism, sasl) {
            (Some(m), false) => {
                return Err(format!(
                    "kafka sink: sasl.mechanism={m} needs security.protocol=sasl_plaintext or sasl_ssl"
                ));
            }
            (None, true) => {
                return Err(format!(
                    "kafka sink: security.protocol={protocol} needs sasl.mechanism ({MECHANISMS:?})"
                ));
            }
            (Some(m), true) => {
                let m = m.to_ascii_uppercase();
                if !MECHANISMS.contains(&m.as_str()) {
                    return Err(format!("kafka sink: sasl.mechanism={m:?}; expected one of {MECHANISMS:?}"));
                }
                let user = sec
                    .sasl_username
                    .as_deref()
                    .ok_or_else(|| format!("kafka sink: sasl.mechanism={m} needs sasl.username"))?;
                let password = match &sec.sasl_password_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("kafka sink: sasl.password.file {}: {e}", path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                    None => std::env::var(SASL_PASSWORD_ENV).map_err(|_| {
                        format!(
                            "kafka sink: sasl.mechanism={m} needs sasl.password.file or {SASL_PASSWORD_ENV}"
                        )
                    })?,
                };
                c.set("sasl.mechanism", &m).set("sasl.username", user).set("sasl.password", password);
            }
            (None, false) => {}
        }
        Ok(c)
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("kafka sink url: {s:?} is not UTF-8 once decoded"))
}

/// What the delivery callbacks (on librdkafka's polling thread) tell the
/// writer.
#[derive(Default)]
struct Deliveries {
    /// Accepted by `write`, not yet acknowledged or failed.
    queued_records: AtomicU64,
    queued_bytes: AtomicU64,
    delivered: AtomicU64,
    /// Failed since the queue thread last asked.
    undelivered: AtomicU64,
    /// A record failed and none was delivered since.
    failing: std::sync::atomic::AtomicBool,
    /// When the current run of failures began (the first failure after a
    /// delivery); `None` while records are being delivered.
    failing_since: Mutex<Option<Instant>>,
    /// The last broker error or delivery failure, to name in errors.
    last_error: Mutex<Option<String>>,
}

struct SinkContext(Arc<Deliveries>);

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // A down broker is expected operation for a best-effort sink:
        // a warning, and remembered for the next Transient error.
        tracing::warn!(sink = "kafka", %error, reason, "kafka broker error");
        if let Ok(mut last) = self.0.last_error.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for SinkContext {
    /// The message's size in bytes (payload and key), to release from the
    /// writer's bound.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, size: usize) {
        self.0.queued_records.fetch_sub(1, Ordering::Relaxed);
        self.0.queued_bytes.fetch_sub(size as u64, Ordering::Relaxed);
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
                self.0.failing.store(false, Ordering::Relaxed);
                if let Ok(mut since) = self.0.failing_since.lock() {
                    *since = None;
                }
            }
            Err((error, _)) => {
                self.0.undelivered.fetch_add(1, Ordering::Relaxed);
                self.0.failing.store(true, Ordering::Relaxed);
                if let Ok(mut since) = self.0.failing_since.lock() {
                    since.get_or_insert_with(Instant::now);
                }
                tracing::debug!(sink = "kafka", %error, "record not delivered");
                if let Ok(mut last) = self.0.last_error.lock() {
                    *last = Some(format!("delivery failed: {error}"));
                }
            }
        }
    }
}

/// Writes records to one Kafka topic. See the module doc for its guarantees.
pub struct KafkaWriter {
    settings: KafkaSettings,
    config: ClientConfig,
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
}

/// The sink factory's entry for `kafka://` URLs: `security` holds the TLS
/// and SASL flags (they win over the URL's query).
pub fn kafka_writer(url: &str, security: &KafkaSecurity) -> Result<Box<dyn RecordWriter>, String> {
    Ok(Box::new(KafkaWriter::open(url, security)?))
}

impl KafkaWriter {
    /// Checks the URL and settings and creates the producer; it connects in
    /// the background, so a broker that is down now is not an error.
    pub fn open(url: &str, security: &KafkaSecurity) -> Result<Self, String> {
        let settings = KafkaSettings::parse_with_flags(url, security)?;
        let config = settings.client_config()?;
        let deliveries = Arc::new(Deliveries::default());
        let producer = create(&config, &deliveries)?;
        Ok(KafkaWriter { settings, config, producer, deliveries })
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Records acknowledged by the brokers since the writer was opened.
    pub fn delivered(&self) -> u64 {
        self.deliveries.delivered.load(Ordering::Relaxed)
    }

    /// Records accepted and neither acknowledged nor failed yet.
    pub fn queued(&self) -> u64 {
        self.deliveries.queued_records.load(Ordering::Relaxed)
    }

    /// The last broker error or delivery failure, for logs and errors.
    pub fn last_error(&self) -> Option<String> {
        self.deliveries.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn broker_error(&self) -> String {
        self.last_error().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    }

    /// An idempotent producer that hit a fatal error (e.g. the broker
    /// fenced its producer id) refuses every record: start a new one. The
    /// old one's queued records fail as it is dropped and are counted.
    ///
    /// Likewise one whose records time out with nothing delivered since,
    /// once nothing is left in flight or the failures have lasted a whole
    /// `message.timeout.ms` (under steady load the queue never empties): its
    /// producer id and sequence numbers can be stale for a broker that lost
    /// its state (seen with a restarted tansu, where such a producer never
    /// delivers again and a new one does). During a plain outage a new
    /// producer costs nothing: the old one's records were failing anyway.
    fn replace_if_fatal(&mut self) -> Result<(), SinkError> {
        let fatal = self.producer.client().fatal_error();
        let failing_for = self.deliveries.failing_since.lock().ok().and_then(|s| s.map(|t| t.elapsed()));
        let stale = self.deliveries.failing.load(Ordering::Relaxed)
            && (self.queued() == 0
                || failing_for.is_some_and(|d| d >= Duration::from_millis(self.settings.message_timeout_ms)));
        if fatal.is_some() || stale {
            match fatal {
                Some((code, reason)) => {
                    tracing::error!(sink = "kafka", %code, reason, "kafka producer failed fatally; starting a new one")
                }
                None => tracing::warn!(sink = "kafka", "kafka records timed out; starting a new producer"),
            }
            self.producer = create(&self.config, &self.deliveries).map_err(SinkError::Transient)?;
            // After the old producer is dropped (its queued records fail as
            // it goes): the new one is judged on its own deliveries.
            self.deliveries.failing.store(false, Ordering::Relaxed);
            if let Ok(mut since) = self.deliveries.failing_since.lock() {
                *since = None;
            }
        }
        Ok(())
    }
}

fn create(
    config: &ClientConfig,
    deliveries: &Arc<Deliveries>,
) -> Result<ThreadedProducer<SinkContext>, String> {
    config
        .create_with_context(SinkContext(Arc::clone(deliveries)))
        .map_err(|e| format!("kafka sink: cannot create the producer: {e}"))
}

/// The message key: the routing key's hash keeps one user's records in
/// order on one partition; a record without one spreads by request id.
pub fn message_key(record: &Record) -> &str {
    record.routing_key_hash().unwrap_or(match record {
        Record::Prediction(p) => &p.request_id,
        Record::Outcome(o) => &o.request_id,
    })
}

impl RecordWriter for KafkaWriter {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn write(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        self.replace_if_fatal()?;
        let mut messages = Vec::with_capacity(batch.len());
        for record in batch {
            match serde_json::to_vec(record) {
                Ok(payload) => messages.push((record, payload)),
                Err(e) => {
                    tracing::warn!(sink = "kafka", error = %e, "record not serialisable; dropped");
                    self.deliveries.undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let bytes: u64 = messages.iter().map(|(r, p)| (p.len() + message_key(r).len()) as u64).sum();
        let (queued, queued_bytes) = (
            self.deliveries.queued_records.load(Ordering::Relaxed),
            self.deliveries.queued_bytes.load(Ordering::Relaxed),
        );
        // Refused whole, so a retry of this batch never duplicates a record;
        // an empty queue takes any batch (else an outsized one never fits).
        if queued > 0
            && (queued + messages.len() as u64 > self.settings.queue_records
                || queued_bytes + bytes > self.settings.queue_bytes)
        {
            return Err(SinkError::Transient(format!(
                "kafka producer queue full: {queued} records ({queued_bytes} bytes) not yet acknowledged by {}{}",
                self.settings.brokers.join(","),
                self.broker_error()
            )));
        }
        let mut sent = 0usize;
        for (i, (record, payload)) in messages.iter().enumerate() {
            let key = message_key(record);
            let size = payload.len() + key.len();
            let (kind, model) = match record {
                Record::Prediction(p) => ("prediction", p.model.as_str()),
                Record::Outcome(o) => ("outcome", o.model.as_str()),
            };
            let schema = SCHEMA_VERSION.to_string();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: "schema", value: Some(&schema) })
                .insert(Header { key: "kind", value: Some(kind) })
                .insert(Header { key: "model", value: Some(model) });
            let message = BaseRecord::with_opaque_to(&self.settings.topic, size)
                .key(key)
                .payload(payload.as_slice())
                .timestamp(record.ts_ms())
                .headers(headers);
            // Counted before the send: the delivery callback may run on the
            // polling thread before `send` returns.
            self.deliveries.queued_records.fetch_add(1, Ordering::Relaxed);
            self.deliveries.queued_bytes.fetch_add(size as u64, Ordering::Relaxed);
            let Err((error, _)) = self.producer.send(message) else {
                sent += 1;
                continue;
            };
            self.deliveries.queued_records.fetch_sub(1, Ordering::Relaxed);
            self.deliveries.queued_bytes.fetch_sub(size as u64, Ordering::Relaxed);
            let code = error.rdkafka_error_code();
            if code == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
                tracing::warn!(
                    sink = "kafka",
                    bytes = size,
                    max = self.settings.max_message_bytes,
                    "record larger than message.max.bytes; dropped"
                );
                self.deliveries.undelivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let message = format!("kafka produce to {}: {error}{}", self.settings.topic, self.broker_error());
            if sent == 0 {
                return Err(match code {
                    Some(
                        RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::InvalidArgument,
                    ) => SinkError::Permanent(message),
                    _ => SinkError::Transient(message),
                });
            }
            // Part of the batch is queued already: retrying it would
            // duplicate that part, so the rest is counted as failed.
            let rest = (messages.len() - i) as u64;
            tracing::warn!(sink = "kafka", rest, "{message}; rest of the batch dropped");
            self.deliveries.undelivered.fetch_add(rest, Ordering::Relaxed);
            return Ok(());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let timeout = Duration::from_millis(self.settings.flush_timeout_ms);
        match self.producer.flush(timeout) {
            Ok(()) => Ok(()),
            Err(e) => Err(SinkError::Transient(format!(
                "kafka flush: {e}; {} records not acknowledged within flush.timeout.ms={}{}",
                self.queued(),
                self.settings.flush_timeout_ms,
                self.broker_error()
            ))),
        }
    }

    fn take_undelivered(&mut self) -> u64 {
        self.deliveries.undelivered.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::serving::records::OutcomeRecord;

    fn outcome(request_id: &str, hash: Option<&str>) -> Record {
        Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 1_700_000_000_000,
            request_id: request_id.into(),
            model: "iris".into(),
            replica: "r0".into(),
            routing_key_hash: hash.map(Into::into),
            metric: "clicked".into(),
            value: 1.0,
            joined: true,
            version: Some(2),
            role: Some("canary".into()),
        })
    }

    #[test]
    fn a_url_gives_brokers_topic_and_safe_defaults() {
        let s = KafkaSettings::parse("kafka://b1:9092,b2:9093/shadow.records").unwrap();
        assert_eq!(s.brokers, ["b1:9092", "b2:9093"]);
        assert_eq!(s.topic, "shadow.records");
        assert_eq!(s.compression, "lz4");
        assert_eq!(s.security, KafkaSecurity::default());
        let c = s.client_config().unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9093"));
    }

    #[test]
    fn query_parameters_set_batching_bounds_and_tls() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let url = format!(
            "kafka://k:9092/t?compression=zstd&linger.ms=5&batch.size=65536&queue.records=10&queue.bytes=4096\
             &message.timeout.ms=700&flush.timeout.ms=300&security.protocol=ssl&ssl.ca.location={}",
            percent_encoding::utf8_percent_encode(
                ca.path().to_str().unwrap(),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let s = KafkaSettings::parse(&url).unwrap();
        assert_eq!((s.linger_ms, s.batch_bytes, s.queue_records, s.queue_bytes), (5, 65536, 10, 4096));
        assert_eq!((s.message_timeout_ms, s.flush_timeout_ms), (700, 300));
        assert_eq!(s.security.ssl_ca.as_deref(), Some(ca.path()));
        let c = s.client_config().unwrap();
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("ssl.ca.location"), ca.path().to_str());
        assert_eq!(c.get("linger.ms"), Some("5"));
    }

    #[test]
    fn bad_urls_are_refused_naming_what_is_wrong() {
        for (url, named) in [
            ("http://k:9092/t", "kafka://"),
            ("kafka://k:9092", "no topic"),
            ("kafka://k:9092/", "topic"),
            ("kafka://k:9092/a b", "topic"),
            ("kafka://k/t", "broker \"k\""),
            ("kafka://k:0/t", "broker"),
            ("kafka://u:p@k:9092/t", "credentials"),
            ("kafka://k:9092/t?sasl.password=x", "password"),
            ("kafka://k:9092/t?compresion=lz4", "unknown parameter \"compresion\""),
            ("kafka://k:9092/t?compression=brotli", "compression=\"brotli\""),
            ("kafka://k:9092/t?linger.ms=soon", "linger.ms"),
            ("kafka://k:9092/t?queue.records=0", "queue.records"),
        ] {
            let err = KafkaSettings::parse(url).unwrap_err();
            assert!(err.contains(named), "{url}: {err}");
        }
    }

    #[test]
    fn security_settings_that_cannot_work_are_refused() {
        let missing = "/nonexistent/ca.pem";
        for (url, named) in [
            ("kafka://k:9092/t?security.protocol=tls", "security.protocol"),
            ("kafka://k:9092/t?security.protocol=sasl_ssl", "needs sasl.mechanism"),
            ("kafka://k:9092/t?sasl.mechanism=PLAIN", "needs security.protocol=sasl_plaintext"),
            ("kafka://k:9092/t?ssl.ca.location=/etc/hostname", "needs security.protocol=ssl"),
            (&format!("kafka://k:9092/t?security.protocol=ssl&ssl.ca.location={missing}"), missing),
            ("kafka://k:9092/t?security.protocol=sasl_plaintext&sasl.mechanism=GSSAPI", "GSSAPI"),
            ("kafka://k:9092/t?security.protocol=sasl_plaintext&sasl.mechanism=PLAIN", "sasl.username"),
        ] {
            let err = KafkaSettings::parse(url).unwrap().client_config().unwrap_err();
            assert!(err.contains(named), "{url}: {err}");
        }
    }

    #[test]
    fn the_sasl_password_comes_from_its_file_and_flags_win_over_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let flags = KafkaSecurity {
            protocol: Some("sasl_plaintext".into()),
            sasl_mechanism: Some("scram-sha-512".into()),
            sasl_username: Some("flag-user".into()),
            sasl_password_file: Some(file),
            ..KafkaSecurity::default()
        };
        let w = KafkaWriter::open("kafka://127.0.0.1:9/t?sasl.username=url-user", &flags).unwrap();
        assert_eq!(w.config.get("sasl.username"), Some("flag-user"));
        assert_eq!(w.config.get("sasl.password"), Some("s3cret"));
        assert_eq!(w.config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn the_bundled_librdkafka_takes_every_compression_offered() {
        for codec in COMPRESSIONS {
            let url = format!("kafka://127.0.0.1:9/t?compression={codec}");
            if let Err(e) = KafkaWriter::open(&url, &KafkaSecurity::default()) {
                panic!("{codec}: {e}");
            }
        }
    }

    #[test]
    fn the_key_is_the_routing_key_hash_else_the_request_id() {
        assert_eq!(message_key(&outcome("req-1", Some("ab12"))), "ab12");
        assert_eq!(message_key(&outcome("req-1", None)), "req-1");
    }

    /// A real producer with no broker behind its address: writes never
    /// block, the bound refuses a batch whole, flush gives up at its
    /// timeout, and records that time out are counted for the queue.
    #[test]
    fn with_no_broker_writes_are_bounded_and_failures_counted() {
        // A port that was just free: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url =
            format!("kafka://127.0.0.1:{port}/t?queue.records=3&message.timeout.ms=500&flush.timeout.ms=200");
        let mut w = KafkaWriter::open(&url, &KafkaSecurity::default()).unwrap();
        let batch: Vec<Record> = (0..3).map(|i| outcome(&format!("req-{i}"), None)).collect();
        w.write(&batch).unwrap();
        let Err(SinkError::Transient(full)) = w.write(&batch[..1]) else {
            panic!("a write past queue.records must be refused as transient");
        };
        assert!(full.contains("queue full") && full.contains(&format!("127.0.0.1:{port}")), "{full}");
        let started = Instant::now();
        let Err(SinkError::Transient(flush)) = w.flush() else {
            panic!("a flush with no broker must fail as transient");
        };
        assert!(flush.contains("not acknowledged"), "{flush}");
        // Generous: the flush is bounded by its 200 ms, never by the broker.
        assert!(started.elapsed() < Duration::from_secs(30), "flush took {:?}", started.elapsed());
        let mut failed = 0;
        let until = Instant::now() + Duration::from_secs(120);
        while failed < 3 && Instant::now() < until {
            failed += w.take_undelivered();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(failed, 3, "each timed-out record is counted once");
        assert_eq!((w.queued(), w.delivered()), (0, 0));
        // The bound is free again.
        w.write(&batch[..1]).unwrap();
    }
}
