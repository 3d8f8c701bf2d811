//! Where shadow comparison records go. The file sink writes JSON lines on its
//! own thread, rotated by size and flushed on shutdown; the request path only
//! offers a record to a bounded channel and counts a drop when it is full.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::compare::OutputDiff;

/// One shadow inference compared with the champion's for the same request.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRecord {
    pub ts_ms: i64,
    pub model: String,
    pub champion_version: u64,
    pub shadow_version: u64,
    pub request_id: String,
    /// A hash of the routing key; the raw key never leaves the request.
    pub routing_key_hash: Option<String>,
    pub champion_latency_us: u64,
    pub shadow_latency_us: u64,
    /// Set when the shadow failed; then `outputs` is empty.
    pub shadow_error: Option<String>,
    pub outputs: Vec<OutputDiff>,
}

/// Receives comparison records. Implementations must not block the caller.
pub trait ShadowSink: Send + Sync + std::fmt::Debug {
    fn offer(&self, record: ShadowRecord);
    /// Writes out everything offered so far (called at shutdown).
    fn flush(&self);
    /// Records dropped because the sink could not keep up.
    fn dropped(&self) -> u64;
}

enum Msg {
    Record(Box<ShadowRecord>),
    Flush(crossbeam_channel::Sender<()>),
}

/// JSON-lines files `shadow-<unix-ms>-<n>.jsonl` under a directory.
#[derive(Debug)]
pub struct FileSink {
    tx: crossbeam_channel::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    file: Option<(BufWriter<File>, u64)>,
    seq: u64,
}

impl Writer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.as_ref().is_none_or(|(_, n)| *n >= self.max_bytes) {
            if let Some((mut f, _)) = self.file.take() {
                f.flush()?;
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            self.seq += 1;
            let path = self.dir.join(format!("shadow-{ts}-{}.jsonl", self.seq));
            self.file = Some((BufWriter::new(File::create(path)?), 0));
        }
        if let Some((f, n)) = self.file.as_mut() {
            f.write_all(line)?;
            f.write_all(b"\n")?;
            *n += line.len() as u64 + 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some((f, _)) = self.file.as_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

impl FileSink {
    /// Starts the writer thread; files rotate when they reach `max_bytes`.
    /// Encoding and writing are charged to `budget` when there is one.
    pub fn start(
        dir: &Path,
        max_bytes: u64,
        capacity: usize,
        budget: Option<Arc<modelgate_runtime::CpuBudget>>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(capacity.max(1));
        let mut w = Writer { dir: dir.to_path_buf(), max_bytes: max_bytes.max(1), file: None, seq: 0 };
        let thread = std::thread::Builder::new().name("shadow-sink".into()).spawn(move || {
            // Records are for offline analysis: they only get spare CPU.
            modelgate_runtime::executor::make_background();
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(Msg::Record(r)) => {
                        let mut write = || match serde_json::to_vec(&r) {
                            Ok(line) => {
                                if let Err(e) = w.write(&line) {
                                    tracing::warn!(error = %e, "shadow sink write failed");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "shadow record did not serialise"),
                        };
                        match &budget {
                            Some(b) => b.metered(write),
                            None => write(),
                        }
                    }
                    Ok(Msg::Flush(done)) => {
                        let _ = w.flush();
                        let _ = done.send(());
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        let _ = w.flush();
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        let _ = w.flush();
                        return;
                    }
                }
            }
        })?;
        Ok(Self { tx, dropped: Arc::new(AtomicU64::new(0)), thread: std::sync::Mutex::new(Some(thread)) })
    }
}

impl ShadowSink for FileSink {
    fn offer(&self, record: ShadowRecord) {
        if self.tx.try_send(Msg::Record(Box::new(record))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        // Blocking send: the flush must come after every record already queued.
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.flush();
        // The thread ends when the channel closes, after writing what is queued.
        let (tx, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> ShadowRecord {
        ShadowRecord {
            ts_ms: 1,
            model: "m".into(),
            champion_version: 1,
            shadow_version: 2,
            request_id: format!("r{i}"),
            routing_key_hash: None,
            champion_latency_us: 10,
            shadow_latency_us: 20,
            shadow_error: None,
            outputs: vec![],
        }
    }

    #[test]
    fn records_are_written_rotated_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::start(dir.path(), 400, 1024, None).unwrap();
        for i in 0..20 {
            sink.offer(record(i));
        }
        sink.flush();
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() > 1, "rotated by size: {files:?}");
        let lines: usize = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
        assert_eq!(lines, 20);
        assert_eq!(sink.dropped(), 0);
    }
}
