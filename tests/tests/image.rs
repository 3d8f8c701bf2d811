//! The container image, without a container engine (none is reachable
//! here): the Dockerfile is parsed (dockerfile-parse) and linted (hadolint,
//! both from PyPI), and its final stage is replayed on the built binary. The
//! replay makes the image's file tree in a temporary root: the host's /usr
//! and /etc read-only stand in for the base image, /usr/local is empty but
//! for what the stage's COPY lines put there, each COPY source is bound at
//! its destination (`--from=build` paths under the build stage's WORKDIR map
//! into this checkout, with target/debug/modelgate for the release binary;
//! other build-image files are the host's, Debian bookworm too), and its RUN
//! lines run in that root with /bin/sh as root. Then, in a private mount and network
//! namespace (so the image's fixed ports collide with nothing), it runs
//! ENTRYPOINT + CMD exactly as written, resolved through PATH, in WORKDIR,
//! with the stage's ENV, as its USER, and waits until a Predict on the
//! bundled model succeeds. What this cannot show: that the build stage
//! builds, and that the base images' own libraries are the host's.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_tests::process::ServeProcess;
use modelgate_tests::{binary, python, root, rows};
use serde_json::Value;

/// Docker's PATH when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Stage {
    name: Option<String>,
    /// (instruction, value), in order.
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn values(&self, instruction: &str) -> Vec<&str> {
        self.instructions.iter().filter(|(i, _)| i == instruction).map(|(_, v)| v.as_str()).collect()
    }

    /// The last value of an instruction, which is the one in force.
    fn last(&self, instruction: &str) -> Option<&str> {
        self.values(instruction).last().copied()
    }
}

fn stages(python: &Path) -> Vec<Stage> {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/python/dockerfile_stages.py")).arg(root().join("Dockerfile"));
    let out = python::run_bounded(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "dockerfile_stages.py: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .iter()
        .map(|s| Stage {
            name: s["as"].as_str().map(str::to_string),
            instructions: s["instructions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (i["instruction"].as_str().unwrap().to_string(), i["value"].as_str().unwrap().to_string())
                })
                .collect(),
        })
        .collect()
}

/// An exec-form (JSON array) ENTRYPOINT or CMD; the shell form would put
/// /bin/sh between the signal and the gateway.
fn exec_form(instruction: &str, value: &str) -> Vec<String> {
    serde_json::from_str(value)
        .unwrap_or_else(|e| panic!("{instruction} must be in exec form (a JSON array), got {value}: {e}"))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn dockerfile_lints_clean_and_its_build_stage_has_protoc() {
    let python = python::venv("image", "requirements-image.txt");
    let hadolint = python.parent().unwrap().join("hadolint");
    let out = Command::new(&hadolint).arg(root().join("Dockerfile")).output().unwrap();
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let stages = stages(&python);
    assert_eq!(stages.len(), 2, "a build stage and the runtime stage");
    let build = &stages[0];
    assert_eq!(build.name.as_deref(), Some("build"));
    // The etcd client's build runs protoc and needs the well-known protos.
    let installs = build.values("RUN").into_iter().find(|r| r.contains("apt-get install"));
    let installs = installs.expect("the build stage installs Debian packages");
    for package in ["protobuf-compiler", "libprotobuf-dev"] {
        assert!(installs.split_whitespace().any(|w| w == package), "{package} missing from: {installs}");
    }
    assert!(build.values("RUN").iter().any(|r| r.contains("cargo build --release -p modelgate")));
}

/// Runs the image's default command as the image would, until it serves the
/// bundled model.
#[test]
fn image_entrypoint_serves_the_bundled_models_as_its_non_root_user() {
    assert_eq!(
        uid(),
        0,
        "this test replays the image in a mount and network namespace and switches to the image's user: \
         it needs root (as `make test` runs in CI)"
    );
    let python = python::venv("image", "requirements-image.txt");
    let stages = stages(&python);
    let build = &stages[0];
    let image = stages.last().unwrap();
    let build_workdir = build.last("WORKDIR").expect("the build stage's WORKDIR");
    assert!(build.values("COPY").contains(&". ."), "the build stage copies the whole context");
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    for dir in ["usr", "etc", "dev", "proc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    // Debian's merged /usr, as in the base image.
    for (link, to) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
        std::os::unix::fs::symlink(to, rootfs.join(link)).unwrap();
    }
    let r = rootfs.display().to_string();
    let mut script = vec![
        "set -eu".to_string(),
        format!("R={}", quote(&r)),
        // The base image: the host's system read-only, an empty /usr/local.
        r#"for d in usr etc; do mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; done"#.into(),
        r#"mount -t tmpfs -o mode=0755 tmpfs "$R/usr/local""#.into(),
        r#"mount --rbind /dev "$R/dev""#.into(),
        r#"mount -t proc proc "$R/proc""#.into(),
        r#"mount -t tmpfs -o mode=1777 tmpfs "$R/tmp""#.into(),
        "ip link set lo up".into(),
    ];
    let mut env = vec![format!("PATH={DEFAULT_PATH}"), "HOME=/".to_string()];
    let mut workdir = "/".to_string();
    let mut user = None;
    let mut models_dir = None;
    for (instruction, value) in &image.instructions {
        match instruction.as_str() {
            "COPY" => {
                let words: Vec<&str> = value.split_whitespace().collect();
                let (from, rest) = match words[0].strip_prefix("--from=") {
                    Some(stage) => (Some(stage), &words[1..]),
                    None => (None, &words[..]),
                };
                assert_eq!(rest.len(), 2, "COPY with one source: {value}");
                let (src, dest) = (rest[0], rest[1]);
                let host: PathBuf = match from {
                    Some(stage) => {
                        assert_eq!(Some(stage), build.name.as_deref(), "{value}");
                        match Path::new(src).strip_prefix(build_workdir) {
                            Ok(rel) if rel == Path::new("target/release/modelgate") => binary(),
                            Ok(rel) => root().join(rel),
                            // The build image's own files: Debian bookworm's,
                            // as the host's.
                            Err(_) => PathBuf::from(src),
                        }
                    }
                    None => {
                        let rel = src.trim_end_matches('/');
                        assert!(
                            !ignored.iter().any(|i| rel == i || rel.starts_with(&format!("{i}/"))),
                            "{src} is excluded by .dockerignore"
                        );
                        root().join(rel)
                    }
                };
                assert!(host.exists(), "COPY source {} ({src}) missing", host.display());
                let target = if host.is_file() && dest.ends_with('/') {
                    format!("{dest}{}", host.file_name().unwrap().to_string_lossy())
                } else {
                    dest.trim_end_matches('/').to_string()
                };
                let h = quote(&host.display().to_string());
                let t = format!("\"$R\"{}", quote(&target));
                if host.is_dir() {
                    script.push(format!("mkdir -p {t} && mount --bind {h} {t}"));
                } else {
                    // A destination in the base image's read-only /etc exists
                    // there already: bind over it.
                    script.push(format!(
                        "[ -e {t} ] || {{ mkdir -p \"$(dirname {t})\" && touch {t}; }}; mount --bind {h} {t}"
                    ));
                }
                script.push(format!("mount -o remount,bind,ro {t}"));
                if target == "/models" {
                    models_dir = Some(host);
                }
            }
            // The stand-in base image is the host's read-only system with no
            // network: Debian packages the stage installs must be installed
            // on the host instead (install-build-deps.sh puts them there).
            "RUN" if value.contains("apt-get install") => {
                for package in apt_packages(value) {
                    let ok = Command::new("dpkg").args(["-s", package]).output().unwrap().status.success();
                    assert!(ok, "the image stage installs {package}; the replay needs it on the host");
                }
            }
            "RUN" => script.push(format!(r#"chroot "$R" /bin/sh -c {}"#, quote(value))),
            "ENV" => {
                for pair in value.split_whitespace() {
                    assert!(
                        pair.contains('=') && !pair.contains('"'),
                        "ENV as plain KEY=value pairs: {value}"
                    );
                    env.push(pair.to_string());
                }
            }
            "WORKDIR" => {
                workdir = value.clone();
                script.push(format!("mkdir -p \"$R\"{}", quote(&workdir)));
            }
            "USER" => user = Some(value.clone()),
            "EXPOSE" | "ENTRYPOINT" | "CMD" => {}
            other => panic!("the replay does not know {other} (in the image stage): {value}"),
        }
    }
    let user = user.expect("the image sets a USER");
    let (uid, gid) = user.split_once(':').expect("USER as uid:gid");
    assert_ne!(uid, "0", "the image must not run as root");
    let mut command = exec_form("ENTRYPOINT", image.last("ENTRYPOINT").expect("an ENTRYPOINT"));
    command.extend(exec_form("CMD", image.last("CMD").expect("a CMD")));
    let models = models_dir.expect("the image copies a model repository to /models");
    assert!(models.join("breast-cancer").is_dir(), "the bundled models: {}", models.display());
    let exposed: Vec<&str> = image.last("EXPOSE").unwrap().split_whitespace().collect();
    for listen in ["--listen", "--metrics-listen"] {
        let at = command.iter().position(|a| a == listen).unwrap_or_else(|| panic!("CMD sets {listen}"));
        let port = command[at + 1].rsplit(':').next().unwrap();
        assert!(exposed.contains(&port), "{listen} {port} is not EXPOSEd: {exposed:?}");
    }

    let mut exec = vec![
        r#"exec chroot "$R""#.to_string(),
        format!("/usr/bin/setpriv --reuid={uid} --regid={gid} --clear-groups"),
        format!("/usr/bin/env -i -C {}", quote(&workdir)),
    ];
    exec.extend(env.iter().map(|e| quote(e)));
    exec.extend(command.iter().map(|a| quote(a)));
    script.push(exec.join(" "));
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--net", "--propagation", "private", "sh", "-c"]).arg(script.join("\n"));
    let log = tmp.path().join("serve.log");
    let mut server = ServeProcess::start(cmd, &log)
        .unwrap_or_else(|log| panic!("the image's command exited before it was ready; its log:\n{log}"));

    // The gateway itself runs as the image's user.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert!(uids.split_whitespace().all(|u| u == uid), "Uid:{uids}");

    // A Predict on the bundled model from inside the image's network.
    let input = serde_json::to_string(&rows(1)).unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    let port = server.addr.port();
    let answer = loop {
        let out = Command::new("nsenter")
            .args(["--target", &server.pid().to_string(), "--net", "--"])
            .arg(binary())
            .args(["predict", "--addr", &format!("127.0.0.1:{port}"), "--model", "breast-cancer", "--json"])
            .args(["--input", &input])
            .output()
            .unwrap();
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(server.alive(), "the gateway exited; its log:\n{}", server.log());
        assert!(
            Instant::now() < until,
            "no Predict answer within 120 s: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(answer["version"].as_u64().is_some(), "{answer}");
    assert!(answer["outputs"].as_object().is_some_and(|o| !o.is_empty()), "{answer}");

    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(60)).expect("the gateway stops on SIGTERM");
    assert!(exit.success(), "exit {exit}; log:\n{}", server.log());
    // The state dir the image made is where the gateway wrote, as its user.
    let state = command.iter().position(|a| a == "--state-dir").map(|i| command[i + 1].clone());
    let state = rootfs.join(state.expect("CMD sets --state-dir").trim_start_matches('/'));
    let written: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!written.is_empty(), "nothing written in {}", state.display());
    for path in &written {
        assert_eq!(path.metadata().unwrap().uid().to_string(), uid, "{}", path.display());
    }
}

/// The packages of `apt-get install` in a RUN line (its words after the
/// install, up to the next `&&`, less options).
fn apt_packages(run: &str) -> Vec<&str> {
    let words: Vec<&str> = run.split_whitespace().collect();
    let at = words.windows(2).position(|w| w == ["apt-get", "install"]).unwrap();
    words[at + 2..]
        .iter()
        .take_while(|w| **w != "&&")
        .filter(|w| !w.starts_with('-') && **w != "\\")
        .copied()
        .collect()
}
