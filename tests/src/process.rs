//! The real `modelgate serve` as a child process: for tests that must see
//! what a process does (crash, abort, exit on a signal, memory and CPU it
//! uses), which an in-process server cannot show.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

use crate::binary;

/// A running `modelgate serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    /// Predict/KServe address, `host:port`.
    pub addr: String,
    pub admin: String,
    /// The metrics listener, `host:port`.
    pub metrics: Option<String>,
    /// Its stderr (the log), in a file beside the repository.
    pub log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `modelgate serve` on `repo` (loopback, ephemeral ports, state in
/// `<repo>/.state`) with `extra` flags, and waits for its ready line. The
/// log goes to `<repo>/.state/serve-<n>.log`.
pub fn serve(repo: &Path, extra: &[&str]) -> Served {
    try_serve(repo, extra)
        .unwrap_or_else(|log| panic!("modelgate serve exited before it was ready; its log:\n{log}"))
}

/// As [`serve`], or the log when the process exits before it is ready.
pub fn try_serve(repo: &Path, extra: &[&str]) -> Result<Served, String> {
    let state = repo.join(".state");
    std::fs::create_dir_all(&state).expect("create state dir");
    let n = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    let log = state.join(format!("serve-{n}.log"));
    let stderr = std::fs::File::create(&log).expect("create log file");
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--models"])
        .arg(repo)
        .arg("--state-dir")
        .arg(&state)
        .args(["--admin-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--drain-seconds", "1"])
        .args(extra)
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn modelgate serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut addr = None;
    let mut admin = None;
    let mut metrics = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
            addr = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("  admin on ") {
            admin = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("  metrics on http://") {
            metrics = rest.strip_suffix("/metrics").map(str::to_string);
        }
        if line.starts_with("try: ") || line.starts_with("no READY model") {
            break;
        }
    }
    match (addr, admin) {
        (Some(addr), Some(admin)) => Ok(Served { child, addr, admin, metrics, log }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::fs::read_to_string(&log).unwrap_or_default())
        }
    }
}

impl Served {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time the process has used (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at ')'.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits up to `ceiling` for the process to exit; its exit status, or
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

    pub async fn client(&self) -> PredictClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the gateway");
        PredictClient::new(channel).max_decoding_message_size(usize::MAX)
    }
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
