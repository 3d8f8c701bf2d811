//! A real monitoring pipeline on loopback: Debian's `prometheus` scraping
//! gateways with rule files loaded, Debian's `prometheus-alertmanager`
//! routing what fires to a [`Webhook`] receiver in the test, and helpers
//! for Prometheus's query API. Each process has its own temporary folder
//! and is killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

/// The first of `names` on the PATH.
fn on_path(names: &[&str], package: &str) -> PathBuf {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("{names:?} not found: install Debian's {package} (make test-deps does)");
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET` over HTTP/1.0 (so the answer is never chunked): (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Starts `command(port)` on a [`free_port`] with its stderr in `log` and
/// waits up to 120 s for `GET /-/ready` to answer 200. When the process exits
/// first (its port was taken since it was chosen), again on a new port.
fn start_on_free_port(what: &str, log: &Path, mut command: impl FnMut(u16) -> Command) -> (Child, u16) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let port = free_port();
        // Appended to, so a start that exited keeps its log above the next.
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut child = command(port).stdout(Stdio::null()).stderr(Stdio::from(file)).spawn().expect("spawn");
        loop {
            if matches!(http_get(port, "/-/ready"), Ok((200, _))) {
                return (child, port);
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not become ready; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if exited {
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
                    let _ = writeln!(f, "--- {what} exited; starting it again on a new port");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A Prometheus server scraping `targets` every second and evaluating
/// `rule_files` every second, sending alerts to an Alertmanager.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `modelgate`) with the rule
    /// files at `rule_files` (read where they are, not copied) and alerts
    /// going to `alertmanager`, when given.
    pub fn start(targets: &[SocketAddr], rule_files: &[PathBuf], alertmanager: Option<u16>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let targets = list(targets.iter().map(|t| format!("'{t}'")).collect());
        let rules = list(rule_files.iter().map(|r| format!("'{}'", r.display())).collect());
        let alerting = alertmanager.map_or_else(String::new, |am| {
            format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am}']\n"
            )
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: {rules}\n{alerting}\
             scrape_configs:\n  - job_name: modelgate\n    static_configs:\n      - targets: {targets}\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let (child, port) = start_on_free_port("prometheus", &log, |port| {
            let mut cmd = Command::new(on_path(&["prometheus"], "prometheus"));
            cmd.arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Alerts reach Alertmanager as soon as they fire, not a minute later.
                .arg("--rules.alert.resend-delay=1s");
            cmd
        });
        Self { child, dir, port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).expect("prometheus answers");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus {path}: {status} {e}: {body}"));
        assert_eq!(v["status"], "success", "prometheus {path}: {body}");
        v["data"].clone()
    }

    /// An instant query: the result's series (vector) or value.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `secs` seconds, one point per second:
    /// the series, as a dashboard draws them.
    pub fn query_range(&self, promql: &str, secs: u64) -> Vec<Value> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={end}&step=1",
            encode(promql),
            end.saturating_sub(secs)
        );
        self.api(&path)["result"].as_array().cloned().unwrap_or_default()
    }

    /// The names of the alerting rules Prometheus has loaded.
    pub fn alert_rules(&self) -> Vec<String> {
        let data = self.api("/api/v1/rules?type=alert");
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The scrape targets' health, as Prometheus sees them.
    pub fn targets_up(&self) -> usize {
        self.query("up == 1").len()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Alertmanager (clustering off) routing every alert to `webhook` at once.
pub struct Alertmanager {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Alertmanager {
    pub fn start(webhook: &Webhook) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "route:\n  receiver: test\n  group_by: ['...']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: 'http://{}/alerts'\n",
            webhook.addr
        );
        let config_file = dir.path().join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("write alertmanager.yml");
        let log = dir.path().join("alertmanager.log");
        let (child, port) = start_on_free_port("alertmanager", &log, |port| {
            let mut cmd = Command::new(on_path(
                &["alertmanager", "prometheus-alertmanager"],
                "prometheus-alertmanager",
            ));
            cmd.arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=");
            cmd
        });
        Self { child, dir, port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP server on 127.0.0.1 keeping every alert Alertmanager posts
/// (the `alerts` of each webhook message, with the message's `status`).
pub struct Webhook {
    pub addr: SocketAddr,
    alerts: Arc<Mutex<Vec<Value>>>,
}

impl Default for Webhook {
    fn default() -> Self {
        Self::start()
    }
}

impl Webhook {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
        let addr = listener.local_addr().expect("webhook address");
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&alerts);
        // Ends with the test process; one message at a time is all
        // Alertmanager sends here.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Some(message) = read_post(conn) {
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    kept.extend(message["alerts"].as_array().cloned().unwrap_or_default());
                }
            }
        });
        Self { addr, alerts }
    }

    /// Every alert received so far.
    pub fn alerts(&self) -> Vec<Value> {
        self.alerts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to `secs` for an alert that `want` accepts, and returns it.
    pub fn wait_for(&self, secs: u64, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(a) = self.alerts().into_iter().find(|a| want(a)) {
                return a;
            }
            assert!(
                Instant::now() < until,
                "no {what} at the webhook after {secs} s; it received: {:#?}",
                self.alerts()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Reads one HTTP POST, answers 200, returns its JSON body.
fn read_post(conn: TcpStream) -> Option<Value> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut conn = reader.into_inner();
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    serde_json::from_slice(&body).ok()
}
