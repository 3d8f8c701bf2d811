//! A real Azure Blob Storage endpoint for tests: Azurite, Microsoft's own
//! emulator (npm package `azurite`, pinned by tests/azurite/package-lock.json
//! and installed by `make test-servers` into `.cache/tools/azurite`), its
//! blob service alone on an ephemeral loopback port with in-memory storage.
//! It checks Shared Key signatures like Azure does, with the emulator's
//! well-known account and key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// How long Azurite may take to listen and answer; generous for a busy machine.
const READY_CEILING: Duration = Duration::from_secs(120);

/// `azurite-blob`: `AZURITE_BLOB_BIN`, else the one `make test-servers` installed.
pub fn azurite_binary() -> PathBuf {
    crate::process::test_server_binary(
        "AZURITE_BLOB_BIN",
        ".cache/tools/azurite/node_modules/.bin/azurite-blob",
    )
}

/// Azurite's blob service on 127.0.0.1; killed when dropped.
pub struct Azurite {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Azurite {
    /// The emulator's account (path-style: the first segment of every URL).
    pub const ACCOUNT: &'static str = "devstoreaccount1";
    /// The emulator's published account key, which it checks signatures with.
    pub const KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// A blob service on an ephemeral loopback port, ready to answer.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(azurite_binary());
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            // Memory only, bounded; no telemetry (no network but loopback).
            .args(["--inMemoryPersistence", "--extentMemoryLimit", "512", "--disableTelemetry"])
            // The SDKs' newest API versions are newer than a pinned emulator knows.
            .arg("--skipApiVersionCheck")
            .arg("--debug")
            .arg(dir.path().join("debug.log"))
            .current_dir(dir.path());
        // Any answer to an unsigned listing (an auth error) means it is up.
        let (child, addr) = crate::process::spawn_listening(
            "Azurite",
            &mut cmd,
            &dir.path().join("azurite.log"),
            listening_addr,
            &format!("/{}?comp=list", Self::ACCOUNT),
            READY_CEILING,
        );
        Self { child, addr, dir }
    }

    /// `127.0.0.1:<port>`: what pyarrow's `blob_storage_authority` takes.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The account's blob endpoint, `http://127.0.0.1:<port>/devstoreaccount1`
    /// (a sink URL's `endpoint`, or `AZURE_STORAGE_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/{}", self.addr, Self::ACCOUNT)
    }

    /// The provider variables object_store reads for this account.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), Self::ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), Self::KEY.into()),
        ]
    }

    /// Creates `container` with an independent client (pyarrow's Azure
    /// filesystem, Azure's C++ SDK; tests/python/azure_container.py).
    pub fn create_container(&self, container: &str) {
        let python = crate::python::venv("kafka-s3", "requirements-kafka-s3.txt");
        let mut cmd = Command::new(python);
        cmd.arg(crate::root().join("tests/python/azure_container.py"))
            .args([&self.authority(), container])
            .envs(self.env());
        let out = crate::python::run_bounded(cmd, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "create container {container}: {}
{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The service's log so far, and its request log.
    pub fn log(&self) -> String {
        format!(
            "{}\n--- debug log ---\n{}",
            read(&self.dir.path().join("azurite.log")),
            self.debug_log_tail()
        )
    }

    fn debug_log_tail(&self) -> String {
        let log = read(&self.dir.path().join("debug.log"));
        let start = log.len().saturating_sub(8000);
        log.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The address in "Azurite Blob service successfully listens on http://ADDR".
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("successfully listens on http://")?;
    rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_ready_line() {
        let log = "Azurite Blob service is starting on 127.0.0.1:0\n\
                   Azurite Blob service successfully listens on http://127.0.0.1:44119\n";
        assert_eq!(listening_addr(log), Some("127.0.0.1:44119".parse().unwrap()));
        assert_eq!(listening_addr("Azurite Blob service is starting on 127.0.0.1:0\n"), None);
    }
}
