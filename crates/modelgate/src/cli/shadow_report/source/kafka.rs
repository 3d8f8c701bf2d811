//! `--from kafka://broker:port[,…]/topic`: the Kafka sink's topic, read
//! once. Every partition is read from its earliest offset up to the high
//! watermark it had when the report started, then the read stops: records
//! produced meanwhile wait for the next report, so a busy topic never keeps
//! a report running. Partitions are assigned, not subscribed: no consumer
//! group is joined and no offset is committed, so a report leaves no trace
//! on the brokers. A broker that does not answer ends the report after
//! `--timeout` with an error naming the brokers.
//!
//! Past the watermark, a record still counts while its timestamp (the
//! record's own time, which the sink sets) is not after the report's start,
//! and a partition ends at its end as a fetch finds it: some brokers answer
//! the watermark query with the start of the partition's last batch rather
//! than its end (tansu 0.6 does), and what was written before the report
//! started belongs in it. A record from after the start ends the partition,
//! so the read is bounded all the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{ReadTally, Record, RecordSource, SourceOptions, parse_line};
use crate::serving::records::kafka::KafkaSettings;

/// How long one poll waits: short, so a stalled read notices its ceiling soon.
const POLL: Duration = Duration::from_millis(200);

/// Per partition that holds records: (the next offset to read, the high
/// watermark taken at the start).
type Pending = BTreeMap<i32, (i64, i64)>;

/// A topic's records, read up to the watermarks taken at the start.
pub struct KafkaSource {
    settings: KafkaSettings,
    timeout: Duration,
}

impl KafkaSource {
    /// Checks the URL (the sink's grammar) and the TLS/SASL settings (the
    /// flags win over the URL); connects only when read.
    pub fn new(url: &str, options: &SourceOptions) -> anyhow::Result<Self> {
        let settings =
            KafkaSettings::parse_with_flags(url, &options.kafka).map_err(|e| anyhow!("--from {url}: {e}"))?;
        settings.connection_config().map_err(|e| anyhow!("--from {url}: {e}"))?;
        Ok(Self { settings, timeout: options.timeout })
    }

    fn brokers(&self) -> String {
        self.settings.brokers.join(",")
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer> {
        let mut config = self.settings.connection_config().map_err(anyhow::Error::msg)?;
        // librdkafka assigns partitions only with a group id; assigning
        // (never subscribing) joins no group, and nothing is committed.
        config
            .set("group.id", "modelgate-shadow-report")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Retention may have moved the start since the watermarks were taken.
            .set("auto.offset.reset", "earliest")
            // librdkafka's prefetch, the only buffer that grows with a topic.
            .set("queued.max.messages.kbytes", "16384");
        config.create().context("cannot create a Kafka consumer")
    }

    /// The topic's partitions that hold records, each with its low and high
    /// watermark now.
    fn watermarks(&self, consumer: &BaseConsumer) -> anyhow::Result<(usize, Pending)> {
        let topic = &self.settings.topic;
        let unanswered = |what: &str, e: KafkaError| {
            anyhow!(
                "no answer from the Kafka brokers {} within {} ({what}: {e}); check --from and that the brokers \
                 are up (--timeout sets the wait)",
                self.brokers(),
                humantime::format_duration(self.timeout)
            )
        };
        let metadata = consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|e| unanswered("topic metadata", e))?;
        let found =
            metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(|| {
                anyhow!("the Kafka brokers {} did not describe topic {topic}", self.brokers())
            })?;
        if let Some(e) = found.error() {
            anyhow::bail!(
                "topic {topic} on the Kafka brokers {}: {}",
                self.brokers(),
                RDKafkaErrorCode::from(e)
            );
        }
        let mut pending = BTreeMap::new();
        for p in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), self.timeout)
                .map_err(|e| unanswered(&format!("offsets of partition {}", p.id()), e))?;
            if high > low {
                pending.insert(p.id(), (low, high));
            }
        }
        Ok((found.partitions().len(), pending))
    }
}

impl RecordSource for KafkaSource {
    fn describe(&self) -> String {
        format!("kafka://{}/{}", self.brokers(), self.settings.topic)
    }

    fn read(&mut self, each: &mut dyn FnMut(Record)) -> anyhow::Result<ReadTally> {
        let topic = self.settings.topic.clone();
        let started_ms = crate::clock::now_ms() as i64;
        let consumer = self.consumer()?;
        let (partitions, mut pending) = self.watermarks(&consumer)?;
        let mut tally = ReadTally { partitions: partitions as u64, ..ReadTally::default() };
        if pending.is_empty() {
            return Ok(tally);
        }
        let mut assignment = TopicPartitionList::new();
        for (&p, &(low, _)) in &pending {
            assignment.add_partition_offset(&topic, p, Offset::Offset(low)).context("assign a partition")?;
        }
        consumer.assign(&assignment).context("cannot assign the topic's partitions")?;
        let mut progress = Instant::now();
        let mut last_error: Option<String> = None;
        while !pending.is_empty() {
            match consumer.poll(POLL) {
                Some(Ok(m)) => {
                    progress = Instant::now();
                    let p = m.partition();
                    let Some(&(_, high)) = pending.get(&p) else { continue };
                    let after_start = m.timestamp().to_millis().is_none_or(|t| t > started_ms);
                    if m.offset() >= high && after_start {
                        pending.remove(&p);
                        continue;
                    }
                    tally.lines += 1;
                    let at = || format!("{topic}/{p}@{}", m.offset());
                    match m.payload().map(parse_line) {
                        Some(Ok(record)) => {
                            tally.records += 1;
                            each(record);
                        }
                        Some(Err(why)) => tally.unreadable(at(), why),
                        None => tally.unreadable(at(), "empty message"),
                    }
                    pending.insert(p, (m.offset() + 1, high));
                }
                // The end of the partition as this fetch found it.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    progress = Instant::now();
                    pending.remove(&p);
                }
                // librdkafka retries on its own; the ceiling below ends it.
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {}
            }
            if progress.elapsed() > self.timeout && !pending.is_empty() {
                let left: Vec<String> = pending
                    .iter()
                    .map(|(p, (next, high))| format!("{p} at offset {next} of {high}"))
                    .collect();
                anyhow::bail!(
                    "the Kafka brokers {} sent nothing for {} with partitions of {topic} unread ({}){}",
                    self.brokers(),
                    humantime::format_duration(self.timeout),
                    left.join(", "),
                    last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                );
            }
        }
        Ok(tally)
    }
}
