//! Soak: the release gateway under sustained overload for minutes while
//! versions are dropped into its repository, canaries are promoted, NaN
//! canaries roll themselves back and old versions are removed, every few
//! seconds. It checks what must hold however long it runs:
//!
//! - no failed request other than `RESOURCE_EXHAUSTED` (the overload answer);
//! - no deadlock: the admin RPC and Predict keep answering (a watchdog call
//!   every second, with a deadline);
//! - memory flat: resident memory at the end ≤ 1.2× its value after warm-up.
//!
//! Bounded in time (`--seconds`) and in requests (`--max-requests`). Prints
//! a summary and one JSON line; exits non-zero when a check fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;

#[derive(Debug, Parser)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 300.0)]
    seconds: f64,
    /// Seconds before the warm-up memory sample: long enough for the
    /// outcome-join cache to reach its memory bound at this load.
    #[arg(long, default_value_t = 60.0)]
    warmup: f64,
    /// Requests in flight (closed loop); far above what the queues take.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds between chaos actions.
    #[arg(long, default_value_t = 3.0)]
    chaos_every: f64,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// Which chaos actions run: all, none (load only), versions (drops and
    /// removals, no rollouts) or rollouts (rollouts of the starting versions'
    /// drops only) — for telling which one a finding belongs to.
    #[arg(long, default_value = "all")]
    chaos: String,
    /// Working directory (repository, state, logs).
    #[arg(long, default_value = "target/bench/soak")]
    dir: PathBuf,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/modelgate")]
    bin: PathBuf,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    exhausted: AtomicU64,
    other: Mutex<BTreeMap<String, u64>>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn copy_version(repo: &Path, version: u64, source: &Path) -> anyhow::Result<()> {
    // Written beside, then renamed in: the watcher sees a whole file.
    let tmp = repo.join(format!(".tmp-{version}"));
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(source, tmp.join("model.onnx"))?;
    std::fs::rename(&tmp, repo.join("breast-cancer").join(version.to_string()))?;
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(Iterator::count).unwrap_or(0)
}

fn golden_rows() -> anyhow::Result<Vec<Vec<f32>>> {
    let path = root().join("models/golden/breast-cancer-1.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let data: Vec<f32> = doc["inputs"]["input"]["data"]
        .as_array()
        .context("golden file has no inputs.input.data")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .map(|x| x as f32)
        .collect();
    Ok(data.chunks(30).map(<[f32]>::to_vec).collect())
}

fn request(row: &[f32], key: String) -> pb::PredictRequest {
    pb::PredictRequest {
        model: "breast-cancer".into(),
        routing_key: key,
        inputs: vec![pb::Tensor {
            name: "input".into(),
            dtype: pb::DataType::Float32 as i32,
            shape: vec![1, row.len() as i64],
            float_data: row.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A canary of `candidate` at 50% then 100%, advanced only by hand.
fn canary(candidate: i64, reason: &str) -> pb::StartRolloutRequest {
    let step = |percent| pb::CanaryStep { percent, min_duration_secs: 0, min_samples: 1_000_000 };
    pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Canary(pb::CanaryPlan {
            candidate,
            steps: vec![step(50), step(100)],
            auto_advance: false,
        })),
        reason: reason.into(),
        triggers: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = a.dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("breast-cancer"))?;
    let models = root().join("models");
    let healthy = [
        models.join("repository/breast-cancer/1/model.onnx"),
        models.join("repository/breast-cancer/2/model.onnx"),
    ];
    let nan = models.join("faults/nan.onnx");
    copy_version(&repo, 1, &healthy[0])?;
    copy_version(&repo, 2, &healthy[1])?;
    // Small queues, so the overload is answered with RESOURCE_EXHAUSTED.
    std::fs::write(repo.join("breast-cancer/model.toml"), "queue_capacity = 32\n")?;

    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut child = Command::new(&a.bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .args(["--tick-ms", "100", "--rescan-seconds", "0.5", "--settle-ms", "200", "--models"])
        .arg(&repo)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {}", a.bin.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let (addr, admin_addr) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut addr, mut admin) = (None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(r) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = Some(r.trim().to_string());
            }
            if let Some(r) = line.strip_prefix("  admin on ") {
                admin = Some(r.trim().to_string());
            }
            if line.starts_with("try: ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        (addr, admin)
    })
    .await?;
    let (Some(addr), Some(admin_addr)) = (addr, admin_addr) else {
        let _ = child.kill();
        bail!("the gateway did not start; see {}", dir.join("server.log").display());
    };

    let rows = Arc::new(golden_rows()?);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(a.seconds);

    // Load: closed loop, far more in flight than the queues hold.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let mut load = Vec::new();
    for i in 0..a.concurrency {
        let mut c = PredictClient::new(channels[i % channels.len()].clone());
        let (tally, stop, sent, rows) = (tally.clone(), stop.clone(), sent.clone(), rows.clone());
        let max = a.max_requests;
        load.push(tokio::spawn(async move {
            let mut n = i as u64;
            while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < max {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let row = &rows[(n >> 33) as usize % rows.len()];
                let mut req = tonic::Request::new(request(row, format!("user-{}", n % 100_000)));
                req.set_timeout(Duration::from_secs(10));
                match c.predict(req).await {
                    Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        tally.exhausted.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(s) => {
                        let key = format!("{:?}: {}", s.code(), s.message());
                        *tally.other.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
                        0
                    }
                };
            }
        }));
    }

    let conn = modelgate::cli::admin::AdminConn {
        admin_addr: admin_addr.clone(),
        token: None,
        json: false,
        tls: Default::default(),
    };
    let admin = modelgate::cli::admin::connect(&conn).await?;

    // Watchdog: the admin RPC must answer every second.
    let watchdog_max = Arc::new(AtomicU64::new(0));
    let watchdog_fail = Arc::new(AtomicU64::new(0));
    let watchdog = {
        let (mut admin, stop, max, fail) =
            (admin.clone(), stop.clone(), watchdog_max.clone(), watchdog_fail.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = tonic::Request::new(pb::GetRolloutRequest { model: "breast-cancer".into() });
                req.set_timeout(Duration::from_secs(5));
                if admin.get_rollout(req).await.is_err() {
                    fail.fetch_add(1, Ordering::Relaxed);
                }
                max.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Chaos: drop versions, promote canaries, let NaN canaries roll back,
    // remove old versions.
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut admin_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_version = 3u64;
    let mut rss_warm = None;
    let mut rss_max = 0u64;
    // (seconds, KiB) every ~30 s, to tell a plateau from a slope.
    let mut rss_trace: Vec<(u64, u64, usize)> = Vec::new();
    let mut step = 0u64;
    let rr = |reason: &str| pb::RolloutRequest {
        model: "breast-cancer".into(),
        reason: reason.into(),
        expected_stage: None,
    };
    let mut admin = admin;
    while started.elapsed() < deadline && sent.load(Ordering::Relaxed) < a.max_requests {
        tokio::time::sleep(Duration::from_secs_f64(a.chaos_every)).await;
        if let Some(r) = rss_kib(pid) {
            rss_max = rss_max.max(r);
            let t = started.elapsed().as_secs();
            if rss_trace.last().is_none_or(|(last, _, _)| t >= last + 30) {
                rss_trace.push((t, r, threads(pid)));
            }
            if rss_warm.is_none() && started.elapsed().as_secs_f64() >= a.warmup {
                rss_warm = Some(r);
            }
        }
        let status =
            admin.get_rollout(pb::GetRolloutRequest { model: "breast-cancer".into() }).await?.into_inner();
        let live = matches!(status.state.as_str(), "running" | "paused");
        let action = step % 4;
        let skip = match a.chaos.as_str() {
            "none" => true,
            "versions" => action == 1 || action == 2,
            "rollouts" => action == 3,
            _ => false,
        };
        let result: Result<&str, tonic::Status> = match action {
            _ if skip => Ok("skipped"),
            // A new healthy version, then a canary of it promoted in two steps.
            0 => {
                copy_version(&repo, next_version, &healthy[(next_version % 2) as usize])?;
                next_version += 1;
                Ok("version dropped")
            }
            1 if !live => {
                let candidate = next_version as i64 - 1;
                let plan = canary(candidate, "soak");
                match admin.start_rollout(plan).await {
                    Ok(_) => admin.advance(rr("soak")).await.map(|_| "canary promoted"),
                    Err(e) => Err(e),
                }
            }
            // A NaN version and a canary of it: the hard trigger rolls it back.
            2 if !live => {
                copy_version(&repo, next_version, &nan)?;
                let candidate = next_version as i64;
                next_version += 1;
                // Give the watcher time to load it (settle 200 ms, rescan 500 ms).
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let plan = canary(candidate, "soak nan");
                admin.start_rollout(plan).await.map(|_| "nan canary started")
            }
            // Remove versions no rollout uses, keeping the newest few.
            3 => {
                let champion = status.champion as u64;
                let mut removed = 0;
                let mut versions: Vec<u64> = std::fs::read_dir(repo.join("breast-cancer"))?
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect();
                versions.sort_unstable();
                let keep_from = versions.len().saturating_sub(3);
                for v in &versions[..keep_from] {
                    if *v != champion && !status.arms.iter().any(|arm| arm.version as u64 == *v) {
                        std::fs::remove_dir_all(repo.join("breast-cancer").join(v.to_string()))?;
                        removed += 1;
                    }
                }
                Ok(if removed > 0 { "versions removed" } else { "nothing to remove" })
            }
            _ => {
                // A rollout still live from an earlier step: end it by hand.
                admin.rollback(rr("soak: still running")).await.map(|_| "manual rollback")
            }
        };
        match result {
            Ok(what) => *counts.entry(what).or_default() += 1,
            Err(e) => *admin_errors.entry(format!("{:?}", e.code())).or_default() += 1,
        }
        step += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    let _ = watchdog.await;
    let rss_end = rss_kib(pid).unwrap_or(0);
    let events = admin.list_events(pb::ListEventsRequest::default()).await?.into_inner().events;
    let auto_rollbacks = events.iter().filter(|e| e.action == "rolled_back" && e.who == "modelgate").count();
    let promotions = events.iter().filter(|e| e.action == "promoted").count();
    let _ = child.kill();
    let _ = child.wait();

    let elapsed = started.elapsed().as_secs_f64();
    let ok = tally.ok.load(Ordering::Relaxed);
    let exhausted = tally.exhausted.load(Ordering::Relaxed);
    let other = tally.other.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let other_total: u64 = other.values().sum();
    let warm = rss_warm.unwrap_or(rss_end);
    let ratio = rss_end as f64 / warm.max(1) as f64;
    println!("soak: {elapsed:.0} s at {} in flight against queues of 32", a.concurrency);
    println!(
        "  requests: {ok} ok ({:.0}/s), {exhausted} RESOURCE_EXHAUSTED, {other_total} other failures {other:?}",
        ok as f64 / elapsed
    );
    println!("  chaos: {counts:?}; admin refusals {admin_errors:?}");
    println!("  audit: {promotions} promotions, {auto_rollbacks} automatic rollbacks");
    println!(
        "  watchdog: slowest GetRollout {:.1} ms, {} failed",
        watchdog_max.load(Ordering::Relaxed) as f64 / 1000.0,
        watchdog_fail.load(Ordering::Relaxed)
    );
    println!(
        "  memory: RSS {warm} KiB after {:.0} s warm-up, {rss_end} KiB at the end ({ratio:.2}x), max {rss_max} KiB",
        a.warmup
    );
    let trace: Vec<String> =
        rss_trace.iter().map(|(t, r, n)| format!("{t}s {} MiB {n} threads", r / 1024)).collect();
    println!("  RSS over time: {}", trace.join(", "));
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak", "seconds": elapsed, "concurrency": a.concurrency,
            "ok": ok, "resource_exhausted": exhausted, "other_failures": other_total,
            "promotions": promotions, "automatic_rollbacks": auto_rollbacks,
            "watchdog_max_ms": watchdog_max.load(Ordering::Relaxed) as f64 / 1000.0,
            "watchdog_failed": watchdog_fail.load(Ordering::Relaxed),
            "rss_warm_kib": warm, "rss_end_kib": rss_end, "rss_ratio": ratio, "rss_max_kib": rss_max,
        })
    );
    let mut failed = Vec::new();
    if other_total > 0 {
        failed.push(format!("{other_total} requests failed with something other than RESOURCE_EXHAUSTED"));
    }
    if watchdog_fail.load(Ordering::Relaxed) > 0 {
        failed.push("the admin RPC stopped answering within 5 s".to_string());
    }
    if ratio > 1.2 {
        failed.push(format!("resident memory grew {ratio:.2}x after warm-up"));
    }
    if ok == 0 {
        failed.push("no request succeeded".to_string());
    }
    if !failed.is_empty() {
        bail!("soak failed: {}", failed.join("; "));
    }
    Ok(())
}
