//! A real Kafka-protocol broker for tests: tansu (crates.io, built by
//! `make test-servers` into `.cache/tools/bin/tansu`) on a loopback port with
//! in-memory storage. Ready means it answered an ApiVersions request, not
//! merely that its port accepts connections. It can be stopped and started
//! again on the same port for broker-down tests; memory storage means topics
//! and messages do not survive that.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a (re)started broker may take to answer; generous for a busy machine.
const READY_CEILING: Duration = Duration::from_secs(120);

/// The tansu binary: `TANSU_BIN`, else `.cache/tools/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    crate::process::test_server_binary("TANSU_BIN", ".cache/tools/bin/tansu")
}

/// A tansu broker on 127.0.0.1; killed when dropped.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    /// A broker on a free loopback port, ready to serve.
    pub fn start() -> Self {
        let port = crate::free_port();
        let mut broker = Self { child: None, port, dir: tempfile::tempdir().expect("tempdir") };
        broker.start_until_ready(true);
        broker
    }

    /// Where clients connect (and what the broker advertises).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `bootstrap.servers` for a client: `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// Kills the broker and waits for it to exit; its port then refuses
    /// connections until [`Self::start_again`]. Everything it stored is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped broker again on the same port and waits until it is
    /// ready. Empty: memory storage kept nothing.
    pub fn start_again(&mut self) {
        self.start_until_ready(false);
    }

    /// Starts the broker and waits until it answers. When it exits first:
    /// with `new_port` (nobody knows this port yet), again on a new port, as
    /// another process may have taken it since it was chosen; else again on
    /// the same port after a pause, as the broker just killed may still hold it.
    fn start_until_ready(&mut self, new_port: bool) {
        assert!(self.child.is_none(), "the broker is already running");
        let until = Instant::now() + READY_CEILING;
        loop {
            let mut child = self.spawn();
            match self.wait_ready(&mut child, until) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(exit) if Instant::now() < until => {
                    let _ = writeln!(self.log_file(), "--- tansu exited ({exit}); starting it again");
                    if new_port {
                        self.port = crate::free_port();
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(exit) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tansu was not ready on {} ({exit}); its log:\n{}", self.addr(), self.log());
                }
            }
        }
    }

    /// [`Self::stop`], then [`Self::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Creates `topic` with `partitions` partitions through the broker's
    /// CreateTopics API (tansu's own admin client). tansu does not create
    /// topics on first use, so a test creates each topic it produces to.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let mut cmd = Command::new(tansu_binary());
        cmd.args(["topic", "create", topic, "--broker", &format!("tcp://{}", self.addr())])
            .args(["--partitions", &partitions.to_string()])
            .env_clear()
            .env("RUST_LOG", "warn");
        let out = crate::python::run_bounded(cmd, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "tansu topic create {topic} failed: {}{}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The broker's output so far (stdout and stderr, across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn log_file(&self) -> File {
        OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open the tansu log")
    }

    fn spawn(&self) -> Child {
        let url = format!("tcp://{}", self.addr());
        let log = self.log_file();
        Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            // Its settings also come from the environment (STORAGE_ENGINE,
            // OTEL_EXPORTER_OTLP_ENDPOINT, ...): only the flags count here.
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", tansu_binary().display()))
    }

    /// Polls with ApiVersions until the broker answers, or `Err` with how
    /// the process ended if it exits first.
    fn wait_ready(&self, child: &mut Child, until: Instant) -> Result<(), String> {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(status.to_string());
            }
            if api_versions(self.addr()).is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!("no ApiVersions answer within {READY_CEILING:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a Kafka ApiVersions v0 request to `addr` and returns the API keys
/// the broker lists; `Err` when it refuses, stays silent or answers an error.
pub fn api_versions(addr: SocketAddr) -> std::io::Result<Vec<i16>> {
    use std::io::{Error, ErrorKind};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    const CORRELATION: i32 = 0x6d67;
    let client = b"modelgate-tests";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0: no tagged fields
    body.extend_from_slice(&CORRELATION.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(&body)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(10..=1 << 20).contains(&len) {
        return Err(Error::new(ErrorKind::InvalidData, format!("response length {len}")));
    }
    let mut resp = vec![0u8; len as usize];
    s.read_exact(&mut resp)?;
    let int16 = |at: usize| i16::from_be_bytes([resp[at], resp[at + 1]]);
    let correlation = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
    let error = int16(4);
    let count = i32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]);
    if correlation != CORRELATION || error != 0 || count <= 0 || resp.len() < 10 + 6 * count as usize {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("ApiVersions answer: correlation {correlation}, error {error}, {count} APIs"),
        ));
    }
    Ok((0..count as usize).map(|i| int16(10 + 6 * i)).collect())
}
