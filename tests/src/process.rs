//! A real `modelgate serve` process for tests that measure it from outside:
//! its addresses from the ready lines, its resident memory, CPU time and
//! open-file limit from /proc, and its metrics.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{TestRepo, binary};

/// A spawned `modelgate serve`, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

impl ServeProcess {
    /// Serves `repo` on loopback ports with `extra` flags.
    pub fn spawn(repo: &TestRepo, extra: &[&str]) -> Self {
        Self::spawn_with(repo, None, extra)
    }

    /// Like [`Self::spawn`], started with RLIMIT_NOFILE `soft:hard` (through
    /// util-linux `prlimit`).
    pub fn spawn_with_nofile(repo: &TestRepo, soft: u64, hard: u64, extra: &[&str]) -> Self {
        Self::spawn_with(repo, Some((soft, hard)), extra)
    }

    fn spawn_with(repo: &TestRepo, nofile: Option<(u64, u64)>, extra: &[&str]) -> Self {
        let log = repo.path().join(".serve.log");
        let mut cmd = match nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--threads", "1", "--no-watch", "--models"])
            .arg(repo.path())
            .arg("--state-dir")
            .arg(repo.path().join(".state"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("spawn modelgate serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (mut addr, mut admin, mut metrics) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the ready lines");
            if let Some(a) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = a.trim().parse().ok();
            } else if let Some(a) = line.trim().strip_prefix("admin on ") {
                admin = a.trim().parse().ok();
            } else if let Some(a) = line.trim().strip_prefix("metrics on http://") {
                metrics = a.trim().trim_end_matches("/metrics").parse().ok();
            }
            if line.starts_with("try: ") || line.starts_with("no READY model") {
                break;
            }
        }
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        Self {
            addr: addr.unwrap_or_else(|| panic!("no ready line; log:\n{}", log_text())),
            admin_addr: admin.unwrap_or_else(|| panic!("no admin line; log:\n{}", log_text())),
            metrics_addr: metrics.unwrap_or_else(|| panic!("no metrics line; log:\n{}", log_text())),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// User plus system CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        // The command name may hold spaces: fields are counted after its ')'.
        let rest = &stat[stat.rfind(')').expect("comm in stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after comm.
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / clock_ticks_per_second()
    }

    /// The soft and hard RLIMIT_NOFILE in force, from /proc/<pid>/limits.
    pub fn open_file_limit(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("read limits");
        let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line");
        let v: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
        (v[0].to_string(), v[1].to_string())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One sample of the metrics, 0 when the series does not exist yet:
    /// `name` with exactly the label values in `labels` among its labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (status, body) = crate::http_get(self.metrics_addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
