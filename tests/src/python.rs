//! Python tools the black-box tests drive (real clients and engines from
//! PyPI), each in its own venv under `.cache/`, made on first use from an
//! exact-pinned requirements file in tests/python/ and remade when that file
//! changes. nextest runs tests as parallel processes, so making a venv takes
//! a file lock: the second test waits for the first's venv instead of
//! racing it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The python of venv `.cache/venv-<name>`, made from
/// `tests/python/<requirements>` when missing or out of date.
///
/// # Panics
/// When the venv cannot be made (no python3, or pip fails): the test that
/// needs it cannot run.
#[allow(clippy::unwrap_used, clippy::expect_used)] // test support: fail loudly
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    let root = crate::root();
    let cache = root.join(".cache");
    std::fs::create_dir_all(&cache).unwrap();
    let venv = cache.join(format!("venv-{name}"));
    let requirements = root.join("tests/python").join(requirements);
    let wanted = std::fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let stamp = venv.join("requirements.installed");
    let python = venv.join("bin/python");
    let lock = File::create(cache.join(format!("venv-{name}.lock"))).unwrap();
    lock.lock().expect("lock the venv's lock file");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success();
    assert!(ok, "python3 -m venv {} failed", venv.display());
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--no-input", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    // Written last: a venv without it is half made and is made again.
    std::fs::write(&stamp, wanted).unwrap();
    python
}

/// Runs `cmd` to completion with its output captured, killing it (and
/// failing) after `limit`: a hung tool fails the test instead of hanging it.
///
/// # Panics
/// When the command cannot start or runs over `limit`.
#[allow(clippy::unwrap_used)] // test support: fail loudly
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("{cmd:?} ran over {limit:?}; its stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}
