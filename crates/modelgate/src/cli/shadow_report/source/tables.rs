//! `--from s3://bucket/prefix` (and `gs://`, `az://`, `parquet+file://`):
//! the Parquet sink's Hive-partitioned tables, opened as the sink opens
//! them (same URL grammar, credentials from the provider's variables).
//!
//! Only the report's model is listed (`predictions/model=<model>/` and
//! `outcomes/model=<model>/`), and with `--since`/`--until` only the
//! `date=` partitions that can hold records of that window. Each file is
//! read one row group at a time (one ranged GET per row group, decoded in
//! batches), so memory is bounded by a row group, never by the table.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use arrow_array::RecordBatch;
use bytes::{Buf, Bytes};
use futures_util::TryStreamExt;
use object_store::path::{Path, PathPart};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};

use super::{ReadTally, Record, RecordSource, SCHEMA_VERSION, SourceOptions};
use crate::serving::records::parquet::{DecodedRows, outcomes_from, predictions_from, store_of};

/// The file's tail fetched first: the footer and, for the sink's files,
/// the whole metadata in one request.
const TAIL_BYTES: u64 = 64 << 10;
/// Rows decoded at a time from a row group.
const BATCH_ROWS: usize = 1024;

/// The two tables, by directory, and how their rows become records.
type Decode = fn(&RecordBatch, &str) -> DecodedRows;
const TABLES: [(&str, Decode); 2] = [("predictions", predictions_from), ("outcomes", outcomes_from)];

/// A model's records in the Parquet tables under one prefix.
pub struct TableSource {
    /// The URL without its query, for messages.
    shown: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    model: String,
    /// `date=` partitions kept: from and through these days (`YYYY-MM-DD`).
    first_day: Option<String>,
    last_day: Option<String>,
    timeout: Duration,
    /// object_store is async and the report is not: its requests run here.
    runtime: tokio::runtime::Runtime,
}

/// The UTC day of unix ms, as the sink names `date=` partitions.
fn day_of(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default().format("%Y-%m-%d").to_string()
}

impl TableSource {
    pub fn new(url: &str, options: &SourceOptions) -> anyhow::Result<Self> {
        let shown = url.split_once('?').map_or(url, |(u, _)| u).to_owned();
        // Reading must not create the directory the sink would.
        if let Some(dir) = url.strip_prefix("parquet+file://") {
            let dir = dir.split_once('?').map_or(dir, |(d, _)| d);
            anyhow::ensure!(std::path::Path::new(dir).is_dir(), "--from {url}: {dir} is not a directory");
        }
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (store, prefix, _) = store_of(url, &env).map_err(|e| anyhow!("--from {url}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow!("cannot start the object store client's runtime: {e}"))?;
        Ok(Self {
            shown,
            store,
            prefix,
            model: options.model.clone(),
            first_day: options.since_ms.map(day_of),
            // `--until` is exclusive: its own day counts only after midnight.
            last_day: options.until_ms.map(|t| day_of(t - 1)),
            timeout: options.timeout,
            runtime,
        })
    }

    /// Runs one object store request, bounded by `--timeout`.
    fn call<T>(
        &self,
        what: impl std::fmt::Display,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> anyhow::Result<T> {
        // The timer is made inside the runtime: it needs its clock.
        match self.runtime.block_on(async { tokio::time::timeout(self.timeout, request).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!("{}: {what}: {e}", self.shown)),
            Err(_) => Err(anyhow!(
                "{}: {what}: no answer within {} (--timeout sets the wait)",
                self.shown,
                humantime::format_duration(self.timeout)
            )),
        }
    }

    fn keeps(&self, day: &str) -> bool {
        self.first_day.as_deref().is_none_or(|f| day >= f)
            && self.last_day.as_deref().is_none_or(|l| day <= l)
    }

    /// The model's Parquet files in `table`, in the days kept, sorted; and
    /// how many `date=` partitions were pruned.
    fn files(&self, table: &str) -> anyhow::Result<(Vec<ObjectMeta>, usize)> {
        // Built as the sink builds it, so a model name is encoded alike.
        let dir = Path::from_iter(
            self.prefix
                .parts()
                .chain([PathPart::from(table), PathPart::from(format!("model={}", self.model))]),
        );
        let listed = self.call(format_args!("list {dir}/"), self.store.list_with_delimiter(Some(&dir)))?;
        let mut files = listed.objects;
        let mut pruned = 0;
        for day_dir in listed.common_prefixes {
            let day = day_dir.filename().and_then(|n| n.strip_prefix("date=")).map(str::to_owned);
            if day.is_some_and(|d| !self.keeps(&d)) {
                pruned += 1;
                continue;
            }
            let objects = self.call(
                format_args!("list {day_dir}/"),
                self.store.list(Some(&day_dir)).try_collect::<Vec<ObjectMeta>>(),
            )?;
            files.extend(objects);
        }
        files.retain(|f| f.location.extension() == Some("parquet"));
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok((files, pruned))
    }

    fn metadata(&self, file: &ObjectMeta) -> anyhow::Result<Result<ParquetMetaData, String>> {
        let size = file.size;
        let mut tail_len = size.min(TAIL_BYTES);
        loop {
            let tail = self.call(
                format_args!("read {}", file.location),
                self.store.get_range(&file.location, size - tail_len..size),
            )?;
            let mut reader = ParquetMetaDataReader::new();
            match reader.try_parse_sized(&tail, size) {
                Ok(()) => return Ok(reader.finish().map_err(|e| e.to_string())),
                Err(ParquetError::NeedMoreData(needed))
                    if (needed as u64) > tail_len && needed as u64 <= size =>
                {
                    tail_len = needed as u64;
                }
                Err(e) => return Ok(Err(format!("not a Parquet file: {e}"))),
            }
        }
    }

    /// Hands every row of `file` to `each`. What is not a v1 record (a file
    /// of another schema, a row with a null that must not be) is counted.
    fn read_file(
        &self,
        decode: Decode,
        file: &ObjectMeta,
        tally: &mut ReadTally,
        each: &mut dyn FnMut(Record),
    ) -> anyhow::Result<()> {
        let location = &file.location;
        let metadata = match self.metadata(file)? {
            Ok(m) => Arc::new(m),
            Err(why) => {
                tally.unreadable(location, why);
                return Ok(());
            }
        };
        let schema = metadata
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == "modelgate.record_schema"))
            .and_then(|kv| kv.value.clone());
        if let Some(v) = schema.filter(|v| *v != SCHEMA_VERSION.to_string()) {
            tally.unreadable(location, format!("schema {v}, this modelgate reads schema {SCHEMA_VERSION}"));
            return Ok(());
        }
        let arrow = match ArrowReaderMetadata::try_new(Arc::clone(&metadata), ArrowReaderOptions::new()) {
            Ok(a) => a,
            Err(e) => {
                tally.unreadable(location, e);
                return Ok(());
            }
        };
        tally.files += 1;
        for (i, group) in metadata.row_groups().iter().enumerate() {
            let span = group.columns().iter().map(|c| c.byte_range()).fold(
                None,
                |span: Option<Range<u64>>, (start, len)| {
                    let end = start + len;
                    Some(span.map_or(start..end, |s| s.start.min(start)..s.end.max(end)))
                },
            );
            let Some(span) = span.filter(|s| s.end <= file.size) else {
                tally
                    .unreadable(format_args!("{location} row group {i}"), "its columns lie outside the file");
                continue;
            };
            let bytes = self.call(
                format_args!("read {location} row group {i}"),
                self.store.get_range(location, span.clone()),
            )?;
            let group_bytes = RowGroupBytes { start: span.start, bytes, file_len: file.size };
            let batches = match ParquetRecordBatchReaderBuilder::new_with_metadata(group_bytes, arrow.clone())
                .with_row_groups(vec![i])
                .with_batch_size(BATCH_ROWS)
                .build()
            {
                Ok(b) => b,
                Err(e) => {
                    tally.unreadable(format_args!("{location} row group {i}"), e);
                    continue;
                }
            };
            for batch in batches {
                let rows = batch.map_err(|e| e.to_string()).and_then(|b| decode(&b, &self.model));
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(why) => {
                        tally.unreadable(format_args!("{location} row group {i}"), why);
                        break;
                    }
                };
                for row in rows {
                    tally.lines += 1;
                    match row {
                        Ok(r) if record_schema(&r) == SCHEMA_VERSION => {
                            tally.records += 1;
                            each(r);
                        }
                        Ok(r) => tally.unreadable(
                            format_args!("{location} row group {i}"),
                            format!(
                                "schema {}, this modelgate reads schema {SCHEMA_VERSION}",
                                record_schema(&r)
                            ),
                        ),
                        Err(why) => tally.unreadable(format_args!("{location} row group {i}"), why),
                    }
                }
            }
        }
        Ok(())
    }
}

fn record_schema(r: &Record) -> u32 {
    match r {
        Record::Prediction(p) => p.schema,
        Record::Outcome(o) => o.schema,
    }
}

impl RecordSource for TableSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn read(&mut self, each: &mut dyn FnMut(Record)) -> anyhow::Result<ReadTally> {
        let mut tally = ReadTally::default();
        let mut found = 0;
        let mut pruned = 0;
        for (table, decode) in TABLES {
            let (files, skipped) = self.files(table)?;
            found += files.len();
            pruned += skipped;
            for file in &files {
                self.read_file(decode, file, &mut tally, each)?;
            }
        }
        if found == 0 {
            let window = if pruned > 0 {
                format!(" in --since/--until ({pruned} date= partitions outside it)")
            } else {
                String::new()
            };
            anyhow::bail!(
                "no records found: no Parquet files under {}/predictions/model={m}/ or outcomes/model={m}/{window}",
                self.shown,
                m = self.model
            );
        }
        Ok(tally)
    }
}

/// One row group's bytes, fetched in one request, as the Parquet reader
/// asks for them: by offsets in the whole file.
struct RowGroupBytes {
    start: u64,
    bytes: Bytes,
    file_len: u64,
}

impl RowGroupBytes {
    fn slice(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        let outside = || {
            ParquetError::General(format!(
                "offset {start} is outside the row group read ({}..{})",
                self.start,
                self.start + self.bytes.len() as u64
            ))
        };
        let from =
            start.checked_sub(self.start).filter(|&o| o <= self.bytes.len() as u64).ok_or_else(outside)?
                as usize;
        let to = match len {
            Some(len) => from.checked_add(len).filter(|&t| t <= self.bytes.len()).ok_or_else(outside)?,
            None => self.bytes.len(),
        };
        Ok(self.bytes.slice(from..to))
    }
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::cli::shadow_report::source::{KafkaSecurity, OutcomeRecord, open};
    use crate::cli::shadow_report::stats::tests::prediction;
    use crate::serving::records::RecordWriter;
    use crate::serving::records::parquet::ParquetWriter;

    /// 2026-12-07T04:00:00Z.
    const T0: i64 = 1_796_616_000_000;
    const DAY: i64 = 86_400_000;

    fn options(since_ms: Option<i64>, until_ms: Option<i64>) -> SourceOptions {
        SourceOptions {
            model: "m".into(),
            since_ms,
            until_ms,
            timeout: Duration::from_secs(60),
            kafka: KafkaSecurity::default(),
        }
    }

    fn record(i: i64, model: &str, day: i64) -> Record {
        let mut p = prediction(&format!("r{i:03}"), 2, 0.25, 0.5);
        p.model = model.into();
        p.ts_ms = T0 + day * DAY + i;
        Record::Prediction(p)
    }

    fn outcome(i: i64) -> Record {
        Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: T0 + i,
            request_id: format!("r{i:03}"),
            model: "m".into(),
            replica: "r-0".into(),
            routing_key_hash: None,
            metric: "clicks".into(),
            value: i as f64,
            joined: true,
            version: Some(1),
            role: Some("champion".into()),
        })
    }

    fn parquet_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                parquet_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }

    /// The sink's tables in `dir`: model m on three days (the middle one's
    /// file rewritten in row groups of 3 rows), another model, outcomes.
    fn tables(dir: &std::path::Path) -> Vec<Record> {
        let url = format!("parquet+file://{}", dir.display());
        let mut w = ParquetWriter::open(&url, "r-0", &[], Box::new(|| T0)).unwrap();
        let mut written = Vec::new();
        for day in 0..3 {
            for i in 0..10 {
                written.push(record(day * 10 + i, "m", day));
            }
        }
        let others: Vec<Record> = (0..4).map(|i| record(100 + i, "other", 0)).collect();
        let outcomes: Vec<Record> = (0..5).map(outcome).collect();
        w.write(&written).unwrap();
        w.write(&others).unwrap();
        w.write(&outcomes).unwrap();
        drop(w);
        let mut files = Vec::new();
        parquet_files(dir, &mut files);
        let middle = files.iter().find(|f| f.to_string_lossy().contains("model=m/date=2026-12-08")).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(middle).unwrap()).unwrap();
        let metadata = reader.metadata().file_metadata().key_value_metadata().cloned();
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(3))
            .set_key_value_metadata(metadata)
            .build();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(middle).unwrap(), batches[0].schema(), Some(props))
                .unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.close().unwrap();
        written.extend(outcomes);
        written
    }

    fn read_all(url: &str, options: &SourceOptions) -> anyhow::Result<(Vec<Record>, ReadTally)> {
        let mut got = Vec::new();
        let tally = open(url, options)?.read(&mut |r| got.push(r))?;
        Ok((got, tally))
    }

    #[test]
    fn the_models_partitions_read_back_as_the_records_written_row_group_by_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let written = tables(dir.path());
        let url = format!("parquet+file://{}", dir.path().display());
        let (got, tally) = read_all(&url, &options(None, None)).unwrap();
        assert_eq!(got, written, "every field of every record, the other model's partition not read");
        assert_eq!((tally.files, tally.lines, tally.records, tally.unreadable), (4, 35, 35, 0));
        let middle = dir.path().join("predictions/model=m/date=2026-12-08");
        let file = std::fs::read_dir(&middle).unwrap().next().unwrap().unwrap().path();
        let rewritten = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
        assert_eq!(rewritten.metadata().num_row_groups(), 4, "the test reads a file of several row groups");
    }

    #[test]
    fn since_and_until_prune_date_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let written = tables(dir.path());
        let url = format!("parquet+file://{}", dir.path().display());
        // Day 1 only: since its first record, until the next midnight (exclusive).
        let (got, tally) =
            read_all(&url, &options(Some(T0 + DAY), Some(T0 - 4 * 3_600_000 + 2 * DAY))).unwrap();
        let day1: Vec<Record> = written[10..20].to_vec();
        assert_eq!(got, day1);
        assert_eq!(tally.files, 1, "the other days' files and the outcomes' day were not read");
        let e = read_all(&url, &options(Some(T0 + 5 * DAY), None)).unwrap_err().to_string();
        assert!(e.contains("no records found") && e.contains("4 date= partitions outside it"), "{e}");
    }

    #[test]
    fn an_empty_prefix_and_a_file_that_is_not_parquet_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("parquet+file://{}", dir.path().display());
        let e = read_all(&url, &options(None, None)).unwrap_err().to_string();
        assert!(e.contains("no records found") && e.contains("predictions/model=m/"), "{e}");
        let day = dir.path().join("outcomes/model=m/date=2026-12-07");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("x.parquet"), b"not parquet at all").unwrap();
        let (got, tally) = read_all(&url, &options(None, None)).unwrap();
        assert!(got.is_empty());
        assert_eq!(tally.unreadable, 1);
        assert!(tally.unreadable_examples[0].contains("not a Parquet file"), "{tally:?}");
    }
}
