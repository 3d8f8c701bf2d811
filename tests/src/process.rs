//! A real `modelgate serve` process for tests that must see what a process
//! does from outside (crash, abort, exit on a signal, memory and CPU it
//! uses): its addresses from the ready lines, its resident memory, CPU time
//! and open-file limit from /proc, its log and its metrics.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

use crate::{TestRepo, binary};

/// Resident memory of a process, in KiB: now (VmRSS) and at its peak
/// (VmHWM, since start or the last [`ServeProcess::reset_peak`]).
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// A spawned `modelgate serve`, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `None` when started with `--metrics-listen off`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

impl ServeProcess {
    /// Serves `repo` on loopback ports, one inference thread, no watcher,
    /// with `extra` flags.
    pub fn spawn(repo: &TestRepo, extra: &[&str]) -> Self {
        Self::spawn_with(repo.path(), None, &[&["--threads", "1", "--no-watch"], extra].concat())
    }

    /// Like [`Self::spawn`], started with RLIMIT_NOFILE `soft:hard` (through
    /// util-linux `prlimit`).
    pub fn spawn_with_nofile(repo: &TestRepo, soft: u64, hard: u64, extra: &[&str]) -> Self {
        Self::spawn_with(
            repo.path(),
            Some((soft, hard)),
            &[&["--threads", "1", "--no-watch"], extra].concat(),
        )
    }

    /// Serves the repository at `repo` as `modelgate serve` does by default
    /// (watching it, a thread per core), with a 1 s drain and `extra` flags.
    pub fn serve(repo: &Path, extra: &[&str]) -> Self {
        Self::spawn_with(repo, None, &[&["--drain-seconds", "1"], extra].concat())
    }

    fn spawn_with(repo: &Path, nofile: Option<(u64, u64)>, extra: &[&str]) -> Self {
        let mut cmd = match nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--models"])
            .arg(repo)
            .arg("--state-dir")
            .arg(repo.join(".state"))
            .args(extra)
            .env_remove("ORT_DYLIB_PATH")
            .env("RUST_LOG", "info");
        Self::start(cmd, &repo.join(".serve.log"))
            .unwrap_or_else(|log| panic!("modelgate serve exited before it was ready; its log:\n{log}"))
    }

    /// Spawns `cmd` (a `modelgate serve`, e.g. from [`serve_command`]) with
    /// its stderr in `log` and waits for its ready lines; `Err(log)` when it
    /// exits instead.
    pub fn start(mut cmd: Command, log: &Path) -> Result<Self, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("create the log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn modelgate serve");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let (mut addr, mut admin, mut metrics) = (None, None, None);
        for line in lines.by_ref() {
            // The process may exit before it is ready: its log says why.
            let Ok(line) = line else { break };
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
        // Keep the pipe drained so the process never blocks on stdout.
        std::thread::spawn(move || for _ in lines {});
        match (addr, admin) {
            (Some(addr), Some(admin_addr)) => {
                Ok(Self { child, addr, admin_addr, metrics_addr: metrics, log: log.to_path_buf() })
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(log).unwrap_or_default())
            }
        }
    }

    /// An admin client, with `token` when given.
    pub async fn admin(&self, token: Option<&str>) -> modelgate::cli::admin::Client {
        crate::admin_at(self.admin_addr, token).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS") * 1024
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`: the peak).
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/<pid>/status"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits up to `ceiling` for the process to exit: its exit status, or
    /// `None` if it is still running.
    pub fn wait_exit(&mut self, ceiling: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + ceiling;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A Predict client (and ModelMetadata, RecordOutcome) on its port.
    pub async fn client(&self) -> PredictClient<Channel> {
        PredictClient::new(self.channel().await)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX)
    }

    /// A channel to its Predict/KServe port.
    pub async fn channel(&self) -> Channel {
        crate::channel_to(self.addr).await
    }

    /// VmRSS and VmHWM now.
    pub fn memory(&self) -> Memory {
        Memory { rss_kib: self.status_kib("VmRSS"), hwm_kib: self.status_kib("VmHWM") }
    }

    /// CPU time the process has used (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> u64 {
        (self.cpu_seconds() * 1000.0).round() as u64
    }

    /// Resets VmHWM to the current RSS (`clear_refs` 5), so the next reading
    /// is the peak from now on. False where the kernel does not allow it;
    /// VmHWM is then the peak since start, a stricter bound.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
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
        let (status, body) =
            crate::http_get(self.metrics_addr.expect("a metrics listener"), "/metrics").await;
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

/// Publishes `bytes` as `<repo>/<model>/<version>/model.onnx` the way the
/// README says: written into a hidden staging folder, then renamed in.
pub fn publish(repo: &Path, model: &str, version: u64, bytes: &[u8]) {
    let staging = repo.join(format!(".staging-{model}-{version}"));
    std::fs::create_dir_all(&staging).expect("create staging");
    std::fs::write(staging.join("model.onnx"), bytes).expect("write model");
    std::fs::create_dir_all(repo.join(model)).expect("create model dir");
    std::fs::rename(&staging, repo.join(model).join(version.to_string())).expect("rename in");
}

/// Polls `ModelMetadata(model)` until `done` holds, for at most `secs`
/// seconds; the last answer (or error) is in the panic message.
pub async fn metadata_until(
    c: &mut PredictClient<Channel>,
    model: &str,
    secs: u64,
    mut done: impl FnMut(&pb::ModelMetadataResponse) -> bool,
) -> pb::ModelMetadataResponse {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = c.model_metadata(pb::ModelMetadataRequest { model: model.into() }).await;
        if let Ok(m) = &got
            && done(m.get_ref())
        {
            return got.expect("checked").into_inner();
        }
        assert!(Instant::now() < until, "gave up after {secs} s waiting on {model}'s metadata: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A version's state and reason in a metadata answer.
pub fn version_state(m: &pb::ModelMetadataResponse, version: i64) -> Option<(pb::VersionState, String)> {
    m.versions.iter().find(|v| v.version == version).map(|v| {
        (pb::VersionState::try_from(v.state).unwrap_or(pb::VersionState::Unspecified), v.reason.clone())
    })
}

/// `modelgate serve` for `repo` with its state in `state_dir`: loopback
/// ephemeral ports, no metrics listener, no repository watch, one thread.
/// Add flags before running it.
pub fn serve_command(repo: &Path, state_dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "off", "--no-watch", "--threads", "1"])
        .arg("--models")
        .arg(repo)
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("ORT_DYLIB_PATH")
        .env("NO_COLOR", "1");
    cmd
}

/// How a process that was expected to exit ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its exit, for at most `secs` seconds: past that it is
/// killed and the test fails with what it printed.
pub fn run_to_exit(mut cmd: Command, secs: u64) -> Exited {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn modelgate");
    let until = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for modelgate") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "modelgate was still running after {secs} s; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// Spawns a test server that listens on port 0 and logs its address, and
/// waits until its log shows the address (`addr_in` finds it) and it answers
/// `probe` over HTTP/1.1 with any status: the service is up, not only its
/// socket. Port 0 leaves no window for another process to take the port.
/// Fails the test, with the log, if it exits or passes `ceiling`.
pub fn spawn_listening(
    what: &str,
    cmd: &mut Command,
    log_path: &Path,
    addr_in: fn(&str) -> Option<std::net::SocketAddr>,
    probe: &str,
    ceiling: Duration,
) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::{Read, Write};
    let read = || std::fs::read_to_string(log_path).unwrap_or_default();
    let log = std::fs::File::create(log_path).unwrap_or_else(|e| panic!("create the {what} log: {e}"));
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let until = Instant::now() + ceiling;
    let fail = |child: &mut std::process::Child, why: String| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} {why}; its log:\n{}", read());
    };
    let addr = loop {
        if let Ok(Some(status)) = child.try_wait() {
            fail(&mut child, format!("exited ({status})"));
        }
        if let Some(addr) = addr_in(&read()) {
            break addr;
        }
        if Instant::now() >= until {
            fail(&mut child, format!("did not listen within {ceiling:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!("GET {probe} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 ")
            {
                return (child, addr);
            }
        }
        if Instant::now() >= until {
            fail(&mut child, format!("did not answer HTTP within {ceiling:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test server `make test-servers` installs: `$env` if set, else
/// `<repo>/<installed>`; fails the test saying how to get it.
pub fn test_server_binary(env: &str, installed: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let bin = crate::root().join(installed);
    assert!(
        bin.is_file(),
        "{} not found: run `make test-servers` (`make test` does) or set {env}",
        bin.display()
    );
    bin
}
