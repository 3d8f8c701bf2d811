//! The real `modelgate serve` process, for tests that measure what an
//! attack costs it: memory read from `/proc/<pid>/status`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

use crate::{TestRepo, binary};

/// A running `modelgate serve` on loopback; killed when dropped.
pub struct Spawned {
    child: Child,
    /// The Predict/KServe address, `host:port`.
    pub addr: String,
    /// The admin address, `host:port`.
    pub admin: String,
}

/// Resident memory of a process, in KiB: now (VmRSS) and at its peak
/// (VmHWM, since start or the last [`Spawned::reset_peak`]).
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Spawned {
    /// Starts `modelgate serve` on `repo` with `args` added, and waits for
    /// its ready line.
    pub fn serve(repo: &TestRepo, args: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "off", "--no-watch", "--models"])
            .arg(repo.path())
            .arg("--state-dir")
            .arg(repo.path().join(".state"))
            .args(args)
            .env_remove("ORT_DYLIB_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn modelgate serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut admin) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(a) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = Some(a.trim().to_string());
            }
            if let Some(a) = line.strip_prefix("  admin on ") {
                admin = Some(a.trim().to_string());
            }
            if line.starts_with("try: ") {
                break;
            }
        }
        // Keep draining stdout so the process never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr: addr.expect("the gateway printed its ready line"),
            admin: admin.expect("the gateway printed its admin address"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS and VmHWM now.
    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status"))
        };
        Memory { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") }
    }

    /// CPU time the process has used (user + system), in milliseconds,
    /// from `/proc/<pid>/stat` (clock ticks of 10 ms).
    pub fn cpu_ms(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        // The fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime, fields 14 and 15 of stat.
        (ticks(11) + ticks(12)) * 10
    }

    /// Resets VmHWM to the current RSS (`clear_refs` 5), so the next reading
    /// is the peak from now on. False where the kernel does not allow it;
    /// VmHWM is then the peak since start, a stricter bound.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    pub async fn client(&self) -> PredictClient<Channel> {
        PredictClient::new(self.channel().await)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the gateway")
    }

    /// An admin client (no token).
    pub async fn admin(&self) -> modelgate::cli::admin::Client {
        let conn = modelgate::cli::admin::AdminConn {
            admin_addr: self.admin.clone(),
            token: None,
            json: false,
            tls: Default::default(),
        };
        modelgate::cli::admin::connect(&conn).await.expect("connect to the admin listener")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
