//! The file state store: `<dir>/state.json` (snapshot) and `<dir>/audit.jsonl`.
//!
//! Snapshots are written to a temporary file, fsynced, renamed over the old
//! one and the directory fsynced, so a crash leaves one whole snapshot. Audit
//! events are appended and fsynced before the call returns, so an
//! acknowledged event survives a crash. A last line without its newline is
//! mended when the log is opened, never dropped: a whole event gets its
//! newline, a torn write is moved aside to `audit.jsonl.torn-<ms>`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Snapshot, StateStore, StoreError};

const SNAPSHOT: &str = "state.json";
const AUDIT: &str = "audit.jsonl";

/// State in a local directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    // Appends from concurrent callers must not interleave; the revision
    // counter moves under the same lock.
    audit: Mutex<(File, u64)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, repairing a torn audit tail.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let audit_path = dir.join(AUDIT);
        let mut audit = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&audit_path)
            .map_err(io(&audit_path))?;
        let mut text = Vec::new();
        audit.read_to_end(&mut text).map_err(io(&audit_path))?;
        repair_tail(&dir, &mut audit, &text)?;
        // One writer: revisions only count this process's commits, from 1
        // for a snapshot found on disk.
        let revision = u64::from(dir.join(SNAPSHOT).exists());
        // A temporary snapshot left by a crash mid-write is not the snapshot.
        let _ = std::fs::remove_file(dir.join(format!(".{SNAPSHOT}.tmp")));
        Ok(Self { inner: Arc::new(Inner { dir, audit: Mutex::new((audit, revision)) }) })
    }

    /// Runs blocking file work off the async workers (an fsync can take
    /// milliseconds; a tokio worker stalled on it stalls every request
    /// queued behind it).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Io { path: self.inner.dir.clone(), source: std::io::Error::other(e) }),
        }
    }
}

/// Mends an audit log whose last line has no newline, keeping every byte.
///
/// A last line that is a whole JSON event (written by hand, or a crash
/// between the event and its newline) is kept and gets its newline. Anything
/// else (a write that never finished) cannot be read as an event: it is
/// moved to `audit.jsonl.torn-<unix ms>` beside the log with a WARN naming
/// that file, and the log continues after the last whole line.
fn repair_tail(dir: &Path, audit: &mut File, text: &[u8]) -> Result<(), StoreError> {
    let audit_path = dir.join(AUDIT);
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = &text[whole..];
    if tail.is_empty() {
        return Ok(());
    }
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(tail).is_ok() {
        audit.write_all(b"\n").map_err(io(&audit_path))?;
        audit.sync_data().map_err(io(&audit_path))?;
        tracing::warn!(path = %audit_path.display(), "the last audit event had no newline; it is whole, so it was kept and the newline added");
        return Ok(());
    }
    let aside = dir.join(format!("{AUDIT}.torn-{}", crate::clock::now_ms()));
    {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&aside).map_err(io(&aside))?;
        f.write_all(tail).map_err(io(&aside))?;
        f.sync_all().map_err(io(&aside))?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    audit.set_len(whole as u64).map_err(io(&audit_path))?;
    tracing::warn!(
        path = %audit_path.display(),
        moved_to = %aside.display(),
        bytes = tail.len(),
        "the last audit line is not a whole event (its write never finished); moved it aside, the log goes on after the last whole line"
    );
    Ok(())
}

impl Inner {
    fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        let path = self.dir.join(SNAPSHOT);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let revision = self.audit.lock().unwrap_or_else(|p| p.into_inner()).1.max(1);
                Ok(Some(Snapshot { bytes, revision, origin: path.display().to_string() }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    fn append(&self, audit: &mut File, lines: &[String]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(AUDIT);
        let mut buf = String::new();
        for line in lines {
            debug_assert!(!line.contains('\n'), "audit events are single lines");
            buf.push_str(line);
            buf.push('\n');
        }
        audit.write_all(buf.as_bytes()).map_err(io(&path))?;
        audit.sync_data().map_err(io(&path))
    }

    fn save(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!(".{SNAPSHOT}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(())
    }

    fn read_events(&self) -> Result<Vec<String>, StoreError> {
        let path = self.dir.join(AUDIT);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        // Only whole lines: a line still being written has no newline yet.
        let whole = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        Ok(whole.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
    }
}

#[async_trait::async_trait]
impl StateStore for FileStore {
    async fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.blocking(|s| s.load()).await
    }

    async fn commit(&self, expected: u64, snapshot: Vec<u8>, events: Vec<String>) -> Result<u64, StoreError> {
        self.blocking(move |s| {
            let mut guard = s.audit.lock().unwrap_or_else(|p| p.into_inner());
            let (audit, revision) = &mut *guard;
            if *revision != expected {
                return Err(StoreError::Conflict { current: *revision });
            }
            // Events first: a crash between the two leaves an acknowledged
            // decision in the log and the old snapshot, never the reverse.
            s.append(audit, &events)?;
            s.save(&snapshot)?;
            *revision += 1;
            Ok(*revision)
        })
        .await
    }

    async fn append_events(&self, lines: Vec<String>) -> Result<(), StoreError> {
        self.blocking(move |s| {
            let mut guard = s.audit.lock().unwrap_or_else(|p| p.into_inner());
            s.append(&mut guard.0, &lines)
        })
        .await
    }

    async fn read_events(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|s| s.read_events()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_round_trips_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load_snapshot().await.unwrap(), None);
        assert_eq!(store.commit(0, b"{\"a\":1}".to_vec(), vec![]).await.unwrap(), 1);
        assert_eq!(store.commit(1, b"{\"a\":2}".to_vec(), vec![]).await.unwrap(), 2);
        let snap = store.load_snapshot().await.unwrap().unwrap();
        assert_eq!((snap.bytes.as_slice(), snap.revision), (&b"{\"a\":2}"[..], 2));
        assert!(!dir.path().join(".state.json.tmp").exists());
        // A writer that did not see revision 2 is refused and writes nothing.
        assert!(matches!(
            store.commit(1, b"{\"a\":3}".to_vec(), vec!["{}".into()]).await,
            Err(StoreError::Conflict { current: 2 })
        ));
        assert!(store.read_events().await.unwrap().is_empty());
        // Reopened, the snapshot on disk is revision 1 of the new process.
        drop(store);
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load_snapshot().await.unwrap().unwrap().revision, 1);
    }

    #[tokio::test]
    async fn events_append_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(dir.path()).unwrap();
            store.append_events(vec!["{\"n\":1}".into(), "{\"n\":2}".into()]).await.unwrap();
        }
        let store = FileStore::open(dir.path()).unwrap();
        store.commit(0, b"{}".to_vec(), vec!["{\"n\":3}".into()]).await.unwrap();
        assert_eq!(store.read_events().await.unwrap(), vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    }

    fn torn_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("audit.jsonl.torn-"))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_torn_tail_is_moved_aside_on_open_and_appends_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT), "{\"n\":1}\n{\"n\":").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.append_events(vec!["{\"n\":2}".into()]).await.unwrap();
        assert_eq!(store.read_events().await.unwrap(), vec!["{\"n\":1}", "{\"n\":2}"]);
        let torn = torn_files(dir.path());
        assert_eq!(torn.len(), 1, "{torn:?}");
        assert_eq!(torn[0].1, b"{\"n\":");
    }

    #[tokio::test]
    async fn a_whole_last_event_without_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT), "{\"n\":1}").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.append_events(vec!["{\"n\":2}".into()]).await.unwrap();
        assert_eq!(store.read_events().await.unwrap(), vec!["{\"n\":1}", "{\"n\":2}"]);
        assert!(torn_files(dir.path()).is_empty());
        // An only line that is not an event is moved aside, not emptied away.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT), "{\"n\":1, \"act").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.read_events().await.unwrap().is_empty());
        assert_eq!(torn_files(dir.path())[0].1, b"{\"n\":1, \"act");
    }
}
