//! The real `modelgate serve` as a child process: started on loopback
//! ephemeral ports, its log in a file, or run to its exit with a ceiling (a
//! start-up that should fail must not hang the suite when it does not).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binary;

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

/// A serving `modelgate serve`; killed (-9) when dropped.
pub struct Served {
    child: Child,
    pub addr: String,
    pub admin: String,
    log: PathBuf,
}

impl Served {
    /// Spawns `cmd` with its stderr in `log` and waits for its ready lines;
    /// `Err(log)` when it exits instead.
    pub fn start(mut cmd: Command, log: &Path) -> Result<Self, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn modelgate");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut admin) = (None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("  admin on ") {
                admin = Some(rest.trim().to_string());
            }
            if line.starts_with("try: ") || line.starts_with("no READY model") {
                break;
            }
        }
        // Keep the pipe drained so the process never blocks on stdout.
        std::thread::spawn(move || for _ in lines {});
        match (addr, admin) {
            (Some(addr), Some(admin)) => Ok(Self { child, addr, admin, log: log.to_path_buf() }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(log).unwrap_or_default())
            }
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An admin client, with `token` when given.
    pub async fn admin(&self, token: Option<&str>) -> modelgate::cli::admin::Client {
        let conn = modelgate::cli::admin::AdminConn {
            admin_addr: self.admin.clone(),
            token: token.map(str::to_string),
            json: false,
            tls: Default::default(),
        };
        modelgate::cli::admin::connect(&conn).await.expect("connect to the admin listener")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
