//! A real S3 server for tests: s3s-fs (crates.io, built by `make
//! test-servers` into `.cache/tools/bin/s3s-fs`) serving a temporary folder
//! on a loopback port, with signature-v4 authentication on. Buckets are that
//! folder's subdirectories and objects are files under them, so a test can
//! also look at what was stored on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// How long the server may take to listen and answer; generous for a busy machine.
const READY_CEILING: Duration = Duration::from_secs(120);

/// The s3s-fs binary: `S3S_FS_BIN`, else `.cache/tools/bin/s3s-fs`.
pub fn s3s_fs_binary() -> PathBuf {
    crate::process::test_server_binary("S3S_FS_BIN", ".cache/tools/bin/s3s-fs")
}

/// An s3s-fs server on 127.0.0.1; killed when dropped, its folder removed.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// The access key every request must be signed with.
    pub const ACCESS_KEY: &'static str = "modelgate-test";
    /// The secret key that goes with [`Self::ACCESS_KEY`].
    pub const SECRET_KEY: &'static str = "modelgate-test-secret";
    /// The region clients sign for (s3s-fs accepts any).
    pub const REGION: &'static str = "us-east-1";

    /// A server on an ephemeral loopback port over an empty folder, ready
    /// to answer.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create the data folder");
        let mut cmd = Command::new(s3s_fs_binary());
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
            .arg(&data)
            .env_clear()
            // The listening address is in its info log.
            .env("RUST_LOG", "info");
        // Any answer to an unsigned request (an S3 error) means it is up.
        let (child, addr) = crate::process::spawn_listening(
            "s3s-fs",
            &mut cmd,
            &dir.path().join("s3s-fs.log"),
            listening_addr,
            "/",
            READY_CEILING,
        );
        Self { child, addr, dir }
    }

    /// `http://127.0.0.1:<port>`, for a client's endpoint URL (path-style).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates `bucket`: s3s-fs's CreateBucket is a directory under its
    /// root, made here directly so a test needs no signing client for it.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir(self.data().join(bucket))
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
    }

    /// The folder served: `<root>/<bucket>/<key>` is an object's bytes.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the object `bucket`/`key` is stored on disk.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.data().join(bucket).join(key)
    }

    /// The keys under `bucket` (recursively, `/`-separated), sorted; hidden
    /// bookkeeping files of the server are left out.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = self.data().join(bucket);
        let mut keys = Vec::new();
        walk(&base, &base, &mut keys);
        keys.retain(|k| !k.split('/').any(|part| part.starts_with('.')));
        keys.sort();
        keys
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("s3s-fs.log"))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The address in s3s-fs's "server is running at http://ADDR" log line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("server is running at http://")?;
    rest.split(|c: char| c.is_whitespace() || c == '\u{1b}').next()?.parse().ok()
}
