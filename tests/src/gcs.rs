//! A Google Cloud Storage server for tests: `gcp-storage-emulator` (PyPI,
//! pinned in tests/python/requirements-gcs.txt, in a venv the tests make)
//! on a loopback port with in-memory storage. It serves GCS's JSON API
//! (which pyarrow reads through); object_store's GCS client speaks the XML
//! API, of which the emulator lacks the listing and the PUT/GET headers:
//! tests/python/gcs_emulator.py adds those on the emulator's own storage
//! (no registry has a GCS server that does: fake-gcs-server is Go, the
//! Firebase emulator has no XML API). It checks no credentials: object_store
//! connects with a service-account key saying `disable_oauth` (its way to
//! reach an emulator; `GOOGLE_SKIP_SIGNATURE` is not enough in 0.14, whose
//! uploads still ask the metadata server for a token).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the emulator may take to answer; generous for a busy machine
/// (the first start also makes its venv).
const READY_CEILING: Duration = Duration::from_secs(180);

/// A GCS emulator on 127.0.0.1; killed when dropped.
pub struct GcsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl GcsServer {
    /// An emulator on a free loopback port, ready to answer. It takes a
    /// port number, not 0, so a port another process took in between means
    /// it exits and is started again on another.
    pub fn start() -> Self {
        let python = crate::python::venv("gcs", "requirements-gcs.txt");
        let until = Instant::now() + READY_CEILING;
        loop {
            let port = crate::free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let log = std::fs::File::create(dir.path().join("gcs.log")).expect("create the emulator log");
            let child = Command::new(&python)
                .arg(crate::root().join("tests/python/gcs_emulator.py"))
                .args(["start", "--host", "127.0.0.1", "--in-memory"])
                .args(["--port", &port.to_string()])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn the GCS emulator with {}: {e}", python.display()));
            let mut server = Self { child, port, dir };
            match server.wait_answers(until) {
                Ok(()) => return server,
                // Exited (its port was taken): again on another port.
                Err(true) if Instant::now() < until => continue,
                Err(_) => panic!("the GCS emulator did not answer; its log:\n{}", server.log()),
            }
        }
    }

    /// `http://127.0.0.1:<port>`: a client's base URL (a sink URL's
    /// `endpoint`, `GOOGLE_BASE_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A service-account key for object_store (`GOOGLE_SERVICE_ACCOUNT_KEY`,
    /// or a file named by `GOOGLE_SERVICE_ACCOUNT`): no OAuth, and this
    /// server as the base URL.
    pub fn service_account_key(&self) -> String {
        serde_json::json!({
            "private_key": "", "private_key_id": "", "client_email": "",
            "gcs_base_url": self.endpoint(), "disable_oauth": true,
        })
        .to_string()
    }

    /// Creates `bucket` through the JSON API.
    pub fn create_bucket(&self, bucket: &str) {
        let body = format!("{{\"name\":\"{bucket}\"}}");
        let (status, answer) = self
            .request("POST", "/storage/v1/b?project=modelgate-test", Some(&body))
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        assert_eq!(status, 200, "create bucket {bucket}: {answer}\n{}", self.log());
    }

    /// The object names in `bucket` under `prefix`, through the JSON API.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, answer) = self
            .request("GET", &format!("/storage/v1/b/{bucket}/o?prefix={prefix}"), None)
            .unwrap_or_else(|e| panic!("list {bucket}: {e}"));
        assert_eq!(status, 200, "list {bucket}: {answer}");
        let listed: serde_json::Value = serde_json::from_str(&answer).expect("a JSON object list");
        let mut keys: Vec<String> = listed["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|o| o["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The emulator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gcs.log")).unwrap_or_default()
    }

    /// HTTP/1.0 (never chunked) `method path` with an optional JSON body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, answer) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, answer.to_owned()))
    }

    /// Waits for the health check (`GET /` answering `OK`). Err(true): the
    /// emulator exited (its port was taken), start again; Err(false): the
    /// ceiling passed.
    fn wait_answers(&mut self, until: Instant) -> Result<(), bool> {
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(true);
            }
            if let Ok((200, body)) = self.request("GET", "/", None)
                && body.trim() == "OK"
            {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
