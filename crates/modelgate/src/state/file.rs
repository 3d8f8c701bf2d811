//! The file state store: `<dir>/state.json` (snapshot) and `<dir>/audit.jsonl`.
//!
//! Snapshots are written to a temporary file, fsynced, renamed over the old
//! one and the directory fsynced, so a crash leaves one whole snapshot. Audit
//! events are appended and fsynced before the call returns, so an
//! acknowledged event survives a crash; a torn last line (a write that never
//! returned) is dropped when the log is opened.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{StateStore, StoreError};

const SNAPSHOT: &str = "state.json";
const AUDIT: &str = "audit.jsonl";

/// State in a local directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    // Appends from concurrent admin calls must not interleave.
    audit: Mutex<File>,
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
        if let Some(last_newline) = text.iter().rposition(|&b| b == b'\n') {
            if last_newline + 1 != text.len() {
                tracing::warn!(path = %audit_path.display(), "dropping a torn last audit line (its write never completed)");
                audit.set_len(last_newline as u64 + 1).map_err(io(&audit_path))?;
            }
        } else if !text.is_empty() {
            audit.set_len(0).map_err(io(&audit_path))?;
        }
        Ok(Self { dir, audit: Mutex::new(audit) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl StateStore for FileStore {
    fn load_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(SNAPSHOT);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    fn save_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
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

    fn append_events(&self, lines: &[String]) -> Result<(), StoreError> {
        let path = self.dir.join(AUDIT);
        let mut buf = String::new();
        for line in lines {
            debug_assert!(!line.contains('\n'), "audit events are single lines");
            buf.push_str(line);
            buf.push('\n');
        }
        let mut f = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(buf.as_bytes()).map_err(io(&path))?;
        f.sync_data().map_err(io(&path))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load_snapshot().unwrap(), None);
        store.save_snapshot(b"{\"a\":1}").unwrap();
        store.save_snapshot(b"{\"a\":2}").unwrap();
        assert_eq!(store.load_snapshot().unwrap().as_deref(), Some(&b"{\"a\":2}"[..]));
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn events_append_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(dir.path()).unwrap();
            store.append_events(&["{\"n\":1}".into(), "{\"n\":2}".into()]).unwrap();
        }
        let store = FileStore::open(dir.path()).unwrap();
        store.append_events(&["{\"n\":3}".into()]).unwrap();
        assert_eq!(store.read_events().unwrap(), vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    }

    #[test]
    fn a_torn_tail_is_dropped_on_open_and_appends_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT), "{\"n\":1}\n{\"n\":").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.append_events(&["{\"n\":2}".into()]).unwrap();
        assert_eq!(store.read_events().unwrap(), vec!["{\"n\":1}", "{\"n\":2}"]);
    }
}
