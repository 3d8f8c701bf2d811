//! Fleet-mode test support: a real etcd (Debian's `etcd-server`) on loopback
//! ports with a temporary data directory, and gateway replicas as real
//! `modelgate serve` processes sharing it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

use crate::{TestRepo, binary, free_port};

/// How long etcd may take to answer /health: it fsyncs its WAL at start,
/// slow on a busy disk.
const READY_CEILING: Duration = Duration::from_secs(120);

/// The `etcd` binary: `ETCD_BIN`, else `etcd` on the PATH (`make test`
/// installs Debian's `etcd-server`).
pub fn etcd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("etcd not found: install Debian's etcd-server (make test does) or set ETCD_BIN");
}

/// One etcd member on loopback; killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    /// Plain-HTTP /health and /metrics, whatever the client port speaks.
    metrics: u16,
    /// Clients speak TLS; with `client_cert_auth`, they need a certificate
    /// the test CA signed.
    tls: Option<EtcdTls>,
}

struct EtcdTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    client_cert_auth: bool,
}

impl Etcd {
    pub fn start() -> Self {
        let mut e = Self::new(None);
        e.spawn_until_healthy(true);
        e
    }

    /// etcd serving clients over TLS with a server certificate from `ca`;
    /// with `client_cert_auth`, every client must present one `ca` signed.
    pub fn start_tls(ca: &crate::pki::Ca, client_cert_auth: bool) -> Self {
        let mut e = Self::new(None);
        let server = ca.server("etcd");
        e.tls = Some(EtcdTls {
            cert: crate::pki::write(e.dir.path(), "server.crt", &server.cert_pem),
            key: crate::pki::write(e.dir.path(), "server.key", &server.key_pem),
            ca: crate::pki::write(e.dir.path(), "ca.crt", &ca.pem()),
            client_cert_auth,
        });
        e.spawn_until_healthy(true);
        e
    }

    /// [`Self::start`] with its client port first set to `taken`, a port
    /// something else holds: what a start meets when its port is taken
    /// between [`free_port`] and etcd's bind.
    pub fn start_on_a_taken_port(taken: u16) -> Self {
        let mut e = Self::new(None);
        e.client = taken;
        e.spawn_until_healthy(true);
        e
    }

    /// The port etcd serves clients on.
    pub fn client_port(&self) -> u16 {
        self.client
    }

    fn new(tls: Option<EtcdTls>) -> Self {
        Self {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client: free_port(),
            peer: free_port(),
            metrics: free_port(),
            tls,
        }
    }

    /// Starts etcd and waits until it is healthy. When it exits first: with
    /// `new_ports` (nobody knows these ports yet), again on new ports, as
    /// another process may have taken one since [`free_port`] chose it; else
    /// again on the same ports after a pause (replicas know this address, and
    /// the etcd just killed may still hold them).
    fn spawn_until_healthy(&mut self, new_ports: bool) {
        let until = Instant::now() + READY_CEILING;
        while let Err(exit) = self.spawn_once(until) {
            assert!(Instant::now() < until, "etcd did not become healthy ({exit}); log: {}", self.log());
            self.append_log(&format!("--- etcd exited ({exit}); starting it again"));
            if new_ports {
                (self.client, self.peer, self.metrics) = (free_port(), free_port(), free_port());
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Spawns etcd and waits until it is healthy (`Ok`) or has exited
    /// (`Err` with its exit status); panics at `until`.
    fn spawn_once(&mut self, until: Instant) -> Result<(), String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let metrics = format!("http://127.0.0.1:{}", self.metrics);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let mut child = Command::new(etcd_binary())
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--listen-metrics-urls", &metrics])
            .args(self.tls.iter().flat_map(|t| {
                let mut a = vec![
                    "--cert-file".into(),
                    t.cert.clone().into_os_string(),
                    "--key-file".into(),
                    t.key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    t.ca.clone().into_os_string(),
                ];
                if t.client_cert_auth {
                    a.push("--client-cert-auth".into());
                }
                a
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        loop {
            if self.healthy() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(exit)) = child.try_wait() {
                return Err(exit.to_string());
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcd did not become healthy; log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether etcd's plain-HTTP /health answers healthy.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req =
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.metrics);
        let mut body = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut body).is_ok()
            && body.contains("\"health\":\"true\"")
    }

    fn append_log(&self, line: &str) {
        if let Ok(mut f) =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("etcd.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// `etcd://127.0.0.1:<port>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.client)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A client of this (plaintext) etcd, as `user` when given: for setting
    /// up users and looking at keys from the test.
    pub async fn client(&self, user: Option<(&str, &str)>) -> etcd_client::Client {
        assert!(self.tls.is_none(), "the test client speaks plaintext");
        let mut options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        etcd_client::Client::connect([format!("http://127.0.0.1:{}", self.client)], Some(options))
            .await
            .expect("connect to the test etcd")
    }

    /// kill -9: the fleet loses its store at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_until_healthy(false);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `modelgate serve` process in fleet mode; killed when dropped.
pub struct Replica {
    child: Option<Child>,
    pub id: String,
    pub addr: SocketAddr,
    pub admin: String,
    pub metrics: SocketAddr,
    state_dir: PathBuf,
    repo: PathBuf,
    state_url: String,
    extra: Vec<std::ffi::OsString>,
}

impl Replica {
    /// Starts replica `id` serving `repo`, its state in `etcd_url`, its local
    /// files (cache, shadow records, log) in `state_dir`.
    pub fn start(repo: &TestRepo, etcd_url: &str, id: &str, state_dir: &Path) -> Self {
        Self::try_start(repo, etcd_url, id, state_dir, &[])
            .unwrap_or_else(|log| panic!("replica {id} did not start; log:\n{log}"))
    }

    /// Like [`Replica::start`] with more flags; Err(its log) when it exits
    /// instead of serving.
    pub fn try_start(
        repo: &TestRepo,
        etcd_url: &str,
        id: &str,
        state_dir: &Path,
        extra: &[std::ffi::OsString],
    ) -> Result<Self, String> {
        let mut r = Self {
            child: None,
            id: id.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: String::new(),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.to_path_buf(),
            repo: repo.path().to_path_buf(),
            state_url: etcd_url.to_string(),
            extra: extra.to_vec(),
        };
        r.try_spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("replica {} did not start; log:\n{log}", self.id);
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.state_dir).expect("state dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("server.log"))
            .expect("server log");
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--no-watch", "--threads", "1"])
            .args(["--tick-ms", "100", "--drain-seconds", "1"])
            .arg("--models")
            .arg(&self.repo)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--state", &self.state_url, "--replica-id", &self.id])
            .args(&self.extra)
            .env_remove("ORT_DYLIB_PATH")
            .env("MODELGATE_LOG_FORMAT", "human")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn modelgate serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut admin, mut metrics) = (None, None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = rest.trim().parse().ok();
            }
            if let Some(rest) = line.strip_prefix("  admin on ") {
                admin = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("  metrics on http://") {
                metrics = rest.trim().trim_end_matches("/metrics").parse().ok();
            }
            if line.starts_with("try: ") || line.starts_with("no READY model") {
                break;
            }
        }
        // Keep the pipe drained so the process never blocks on stdout.
        std::thread::spawn(move || for _ in lines {});
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(self.state_dir.join("server.log")).unwrap_or_default());
        };
        self.addr = addr;
        self.admin = admin.expect("admin line");
        self.metrics = metrics.expect("metrics line");
        self.child = Some(child);
        Ok(())
    }

    /// kill -9, mid-whatever.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new process with the same id, repository and state directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("server.log")).unwrap_or_default()
    }

    pub async fn admin(&self) -> modelgate::cli::admin::Client {
        let conn = modelgate::cli::admin::AdminConn {
            admin_addr: self.admin.clone(),
            token: None,
            json: false,
            tls: Default::default(),
        };
        modelgate::cli::admin::connect(&conn).await.expect("connect to the admin listener")
    }

    pub async fn client(&self) -> PredictClient<Channel> {
        PredictClient::connect(format!("http://{}", self.addr)).await.expect("connect to Predict")
    }

    /// One gauge or counter from `/metrics` (no labels), if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = crate::http_get(self.metrics, "/metrics").await;
        body.lines().find_map(|l| {
            l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 50 ms until it returns Some, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "gave up after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
