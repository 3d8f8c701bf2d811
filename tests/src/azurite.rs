//! A real Azure Blob Storage endpoint for tests: Azurite, Microsoft's own
//! emulator (npm package `azurite`, pinned by tests/azurite/package-lock.json
//! and installed by `make test-servers` into `.cache/tools/azurite`), its
//! blob service alone on an ephemeral loopback port with in-memory storage.
//! It checks Shared Key signatures like Azure does, with the emulator's
//! well-known account and key.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Azurite may take to listen and answer; generous for a busy machine.
const READY_CEILING: Duration = Duration::from_secs(120);

/// `azurite-blob`: `AZURITE_BLOB_BIN`, else the one `make test-servers` installed.
pub fn azurite_binary() -> PathBuf {
    if let Ok(p) = std::env::var("AZURITE_BLOB_BIN") {
        return PathBuf::from(p);
    }
    let bin = crate::root().join(".cache/tools/azurite/node_modules/.bin/azurite-blob");
    assert!(
        bin.is_file(),
        "{} not found: run `make test-servers` (`make test` does) or set AZURITE_BLOB_BIN",
        bin.display()
    );
    bin
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
        let log_path = dir.path().join("azurite.log");
        let log = File::create(&log_path).expect("create the Azurite log");
        let mut child = Command::new(azurite_binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            // Memory only, bounded; no telemetry (no network but loopback).
            .args(["--inMemoryPersistence", "--extentMemoryLimit", "512", "--disableTelemetry"])
            // The SDKs' newest API versions are newer than a pinned emulator knows.
            .arg("--skipApiVersionCheck")
            .arg("--debug")
            .arg(dir.path().join("debug.log"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", azurite_binary().display()));
        let until = Instant::now() + READY_CEILING;
        let addr = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("Azurite exited ({status}); its log:\n{}", read(&log_path));
            }
            // Port 0 and the address from its log: no window for another
            // process to take the port.
            if let Some(addr) = listening_addr(&read(&log_path)) {
                break addr;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Azurite did not listen within {READY_CEILING:?}; its log:\n{}", read(&log_path));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let azurite = Self { child, addr, dir };
        azurite.wait_answers(until);
        azurite
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

    /// Any HTTP answer to an unsigned request (an auth error) means the
    /// service, not just the socket, is up.
    fn wait_answers(&self, until: Instant) {
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!(
                    "GET /{}?comp=list HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    Self::ACCOUNT,
                    self.addr
                );
                let mut answer = String::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1 ")
                {
                    return;
                }
            }
            assert!(Instant::now() < until, "Azurite did not answer HTTP; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
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
