//! The file sink: JSON lines under a directory, one file at a time per
//! replica (its id in the name, so replicas sharing a volume never write the
//! same file), rotated by size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Record, RecordWriter, SinkError};

/// Writes `records-<replica>-<unix-ms>-<n>.jsonl` files under a directory.
#[derive(Debug)]
pub struct FileWriter {
    dir: PathBuf,
    replica: String,
    max_bytes: u64,
    file: Option<(BufWriter<File>, u64)>,
    seq: u64,
}

impl FileWriter {
    /// Creates `dir` if needed; the first file is made by the first write.
    pub fn open(dir: &Path, replica: &str, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            replica: replica.to_string(),
            max_bytes: max_bytes.max(1),
            file: None,
            seq: 0,
        })
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.as_ref().is_none_or(|(_, n)| *n >= self.max_bytes) {
            if let Some((mut f, _)) = self.file.take() {
                f.flush()?;
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            self.seq += 1;
            let path = self.dir.join(format!("records-{}-{ts}-{}.jsonl", self.replica, self.seq));
            self.file = Some((BufWriter::new(File::create(path)?), 0));
        }
        if let Some((f, n)) = self.file.as_mut() {
            f.write_all(line)?;
            f.write_all(b"\n")?;
            *n += line.len() as u64 + 1;
        }
        Ok(())
    }
}

impl RecordWriter for FileWriter {
    fn name(&self) -> &'static str {
        "file"
    }

    fn write(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        for r in batch {
            buf.clear();
            serde_json::to_writer(&mut buf, r).map_err(|e| SinkError::Permanent(e.to_string()))?;
            // A full or failing disk may recover: worth the queue's retries.
            self.line(&buf).map_err(|e| SinkError::Transient(format!("{}: {e}", self.dir.display())))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some((f, _)) = self.file.as_mut() {
            f.flush().map_err(|e| SinkError::Transient(format!("{}: {e}", self.dir.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::records::test_outcome as record;

    #[test]
    fn records_are_written_as_json_lines_rotated_by_size_named_by_replica() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = FileWriter::open(dir.path(), "host-1", 400).unwrap();
        let batch: Vec<Record> = (0..20).map(record).collect();
        w.write(&batch[..10]).unwrap();
        w.write(&batch[10..]).unwrap();
        w.flush().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() > 1, "rotated by size: {files:?}");
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            assert!(name.starts_with("records-host-1-") && name.ends_with(".jsonl"), "{name}");
        }
        let mut read: Vec<Record> = files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        read.sort_by_key(|r| match r {
            Record::Outcome(o) => o.value as u64,
            Record::Prediction(_) => u64::MAX,
        });
        assert_eq!(read, batch);
    }
}
