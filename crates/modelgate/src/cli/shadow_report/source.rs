//! Where a report reads records from. A source hands every record to the
//! report one at a time, so a report's memory does not grow with its input:
//! JSON-lines files as the file sink writes them, a Kafka topic read up to
//! the end it had when the report started ([`kafka`]), and the Parquet
//! tables on object storage, only the asked model's partitions ([`tables`]).

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod tables;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

pub use crate::serving::records::{
    KafkaSecurity, OutcomeRecord, OutputRecord, PredictionRecord, Record, SCHEMA_VERSION, TensorValues,
};

/// How many unreadable items a tally quotes (the rest are only counted).
const QUOTED_UNREADABLE: usize = 5;

/// A stream of v1 [`Record`]s.
pub trait RecordSource {
    /// What is read, for messages: a directory, a file, a topic, a table.
    fn describe(&self) -> String;
    /// Calls `each` with every record. What cannot be read as a record (a
    /// line cut short by a crash, another schema) is counted in the tally,
    /// not fatal: one bad line must not hide a day of records.
    fn read(&mut self, each: &mut dyn FnMut(Record)) -> anyhow::Result<ReadTally>;
}

/// What a source read.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReadTally {
    /// JSON-lines or Parquet files read.
    pub files: u64,
    /// Kafka partitions read.
    pub partitions: u64,
    /// JSON lines, Kafka messages or Parquet rows read.
    pub lines: u64,
    pub records: u64,
    /// Lines, messages or rows that are not v1 records, skipped.
    pub unreadable: u64,
    /// The first few of them, as `where: why`.
    pub unreadable_examples: Vec<String>,
}

impl ReadTally {
    fn unreadable(&mut self, at: impl std::fmt::Display, why: impl std::fmt::Display) {
        self.unreadable += 1;
        if self.unreadable_examples.len() < QUOTED_UNREADABLE {
            self.unreadable_examples.push(format!("{at}: {why}"));
        }
    }

    /// `6 files` or `3 partitions`, for the report's first line.
    pub fn units(&self) -> String {
        if self.partitions > 0 {
            format!("{} partitions", self.partitions)
        } else {
            format!("{} files", self.files)
        }
    }
}

/// What a source may need besides its URL.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The report's model: the Parquet tables are read only in its partitions.
    pub model: String,
    /// The report's window: Parquet `date=` partitions outside it are not read.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// The longest wait for a broker or an object store that does not answer.
    pub timeout: Duration,
    /// TLS/SASL for `kafka://` (the `--kafka-*` flags win over the URL).
    pub kafka: KafkaSecurity,
}

/// The source `--from` names: a directory or file path (or `file://…`) of
/// JSON lines, `kafka://…`, or Parquet tables at `s3://…`, `gs://…`,
/// `az://…` or `parquet+file://…` (the record sinks' URLs).
pub fn open(from: &str, options: &SourceOptions) -> anyhow::Result<Box<dyn RecordSource>> {
    match from.split_once("://") {
        None => Ok(Box::new(FileSource::new(Path::new(from))?)),
        Some(("file", path)) => Ok(Box::new(FileSource::new(Path::new(path))?)),
        #[cfg(feature = "kafka")]
        Some(("kafka", _)) => Ok(Box::new(kafka::KafkaSource::new(from, options)?)),
        #[cfg(not(feature = "kafka"))]
        Some(("kafka", _)) => anyhow::bail!(
            "--from {from}: this binary was built without the kafka feature (cargo build --features kafka)"
        ),
        Some((
            "parquet+file" | "parquet+s3" | "parquet+s3a" | "parquet+gs" | "parquet+az" | "s3" | "s3a" | "gs"
            | "az",
            _,
        )) => Ok(Box::new(tables::TableSource::new(from, options)?)),
        Some((scheme, _)) => anyhow::bail!(
            "--from {from}: unknown scheme {scheme}://; expected a directory or file of JSON lines, \
             kafka://, s3://, gs://, az:// or parquet+file://"
        ),
    }
}

/// JSON-lines files: one file, or every `*.jsonl` file under a directory
/// (at any depth, so several replicas' directories can sit side by side).
pub struct FileSource {
    root: PathBuf,
    files: Vec<PathBuf>,
}

impl FileSource {
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("--from {}", path.display()))?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            collect_jsonl(path, &mut files)?;
            files.sort();
            anyhow::ensure!(
                !files.is_empty(),
                "--from {}: no *.jsonl files in this directory",
                path.display()
            );
            files
        } else {
            vec![path.to_path_buf()]
        };
        Ok(Self { root: path.to_path_buf(), files })
    }
}

fn collect_jsonl(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_jsonl(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

/// One line (or Kafka message) as a v1 record, or why not.
fn parse_line(line: &[u8]) -> Result<Record, String> {
    // The schema is checked first so a future schema's record is named as
    // such rather than as whichever field failed to parse.
    #[derive(serde::Deserialize)]
    struct Tag {
        schema: Option<u32>,
    }
    let tag: Tag = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    match tag.schema {
        Some(SCHEMA_VERSION) => {}
        Some(v) => return Err(format!("schema {v}, this modelgate reads schema {SCHEMA_VERSION}")),
        None => return Err("no schema field: not a v1 record (written by an older modelgate?)".into()),
    }
    serde_json::from_slice(line).map_err(|e| format!("not a v1 record: {e}"))
}

impl RecordSource for FileSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&mut self, each: &mut dyn FnMut(Record)) -> anyhow::Result<ReadTally> {
        let mut tally = ReadTally::default();
        let mut line = Vec::new();
        for path in &self.files {
            let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let mut reader = BufReader::new(file);
            tally.files += 1;
            let mut n = 0u64;
            loop {
                line.clear();
                let read = reader
                    .read_until(b'\n', &mut line)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if read == 0 {
                    break;
                }
                n += 1;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                tally.lines += 1;
                match parse_line(line.trim_ascii()) {
                    Ok(record) => {
                        tally.records += 1;
                        each(record);
                    }
                    Err(why) => tally.unreadable(format_args!("{}:{n}", path.display()), why),
                }
            }
        }
        Ok(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::shadow_report::stats::tests::prediction;

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    fn line(r: &Record) -> String {
        serde_json::to_string(r).unwrap()
    }

    #[test]
    fn a_directory_merges_every_replicas_files_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("replica-b")).unwrap();
        let a = Record::Prediction(prediction("r1", 2, 0.1, 0.2));
        let b = Record::Prediction(prediction("r2", 2, 0.3, 0.3));
        write(&dir.path().join("shadow-1-1.jsonl"), &[line(&a), "{\"kind\":\"predic".into()]);
        write(&dir.path().join("replica-b/shadow-2-1.jsonl"), &[line(&b), "{\"ts_ms\":1}".into()]);
        write(&dir.path().join("notes.txt"), &["not a record".into()]);
        let mut ids = Vec::new();
        let tally = open(dir.path().to_str().unwrap(), &options())
            .unwrap()
            .read(&mut |r| {
                if let Record::Prediction(p) = r {
                    ids.push(p.request_id);
                }
            })
            .unwrap();
        ids.sort();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!((tally.files, tally.lines, tally.records, tally.unreadable), (2, 4, 2, 2));
        let quoted = |s: &str| tally.unreadable_examples.iter().any(|e| e.contains(s));
        assert!(quoted("shadow-1-1.jsonl:2: not JSON"), "{tally:?}");
        assert!(quoted("shadow-2-1.jsonl:2: no schema field"), "{tally:?}");
    }

    #[test]
    fn another_schema_is_named() {
        let mut v = serde_json::to_value(Record::Prediction(prediction("r1", 2, 0.1, 0.2))).unwrap();
        v["schema"] = 2.into();
        let why = parse_line(v.to_string().as_bytes()).unwrap_err();
        assert!(why.contains("schema 2"), "{why}");
    }

    fn options() -> SourceOptions {
        SourceOptions {
            model: "m".into(),
            since_ms: None,
            until_ms: None,
            timeout: Duration::from_secs(1),
            kafka: KafkaSecurity::default(),
        }
    }

    #[test]
    fn bad_sources_say_what_is_wrong() {
        let e = |s: &str| format!("{:#}", open(s, &options()).err().unwrap());
        assert!(e("ftp://x").contains("unknown scheme ftp://"));
        assert!(e("/no/such/dir").contains("/no/such/dir"));
        let empty = tempfile::tempdir().unwrap();
        assert!(e(empty.path().to_str().unwrap()).contains("no *.jsonl files"));
        assert!(e("s3://bucket/x?max_rowz=1").contains("unknown parameter \"max_rowz\""));
        assert!(e("parquet+file:///no/such/dir").contains("/no/such/dir"));
        #[cfg(not(feature = "kafka"))]
        assert!(e("kafka://b:9092/t").contains("without the kafka feature"));
        #[cfg(feature = "kafka")]
        {
            assert!(e("kafka://broker/topic").contains("is not host:port"));
            assert!(e("kafka://b:9092/t?sasl.mechanism=PLAIN").contains("needs security.protocol"));
        }
    }
}
