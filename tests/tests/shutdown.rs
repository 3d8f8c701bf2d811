//! Graceful shutdown of the real binary on SIGTERM: NOT_SERVING, stop
//! accepting, finish what is in flight within the drain time, flush, persist,
//! exit 0.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

struct Served {
    child: Child,
    addr: String,
    metrics: std::net::SocketAddr,
    log: std::path::PathBuf,
}

fn serve(repo: &TestRepo, drain_seconds: &str, log_format: &str) -> Served {
    let log = repo.path().join(".serve.log");
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        // One inference thread: the slow model runs one request at a time and
        // the next waits in its queue, which the metrics show (until_queued).
        .args([
            "--threads",
            "1",
            "--drain-seconds",
            drain_seconds,
            "--log-format",
            log_format,
            "--no-watch",
            "--models",
        ])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(repo.path().join(".state"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn modelgate serve");
    let stdout = child.stdout.take().unwrap();
    let (mut addr, mut metrics) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
            addr = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("metrics on http://") {
            metrics = rest.strip_suffix("/metrics").and_then(|a| a.parse().ok());
        }
        if line.starts_with("try: ") {
            break;
        }
    }
    Served { child, addr: addr.expect("ready line"), metrics: metrics.expect("metrics line"), log }
}

/// Waits (bounded) until the slow model's queue has held `depth` requests in
/// several scrapes in a row. With one inference thread and one request per run, a
/// queue that stays at `depth` means the session is busy too: every request
/// sent has reached the server (one running, `depth` waiting). A fixed sleep
/// instead raced a loaded machine.
async fn until_queued(metrics: std::net::SocketAddr, depth: usize) {
    let series = "modelgate_queue_depth{model=\"slow\",version=\"1\"} ";
    let ceiling = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 3 {
        let (_, body) = http_get(metrics, "/metrics").await;
        let now = body.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.parse::<f64>().ok());
        seen = if now == Some(depth as f64) { seen + 1 } else { 0 };
        assert!(Instant::now() < ceiling, "the slow model's queue never held {depth}:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM");
}

/// Waits (bounded) for the process to exit; returns its status and how long it took.
fn wait_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        assert!(start.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn connect(addr: &str) -> Result<pb::predict_client::PredictClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(pb::predict_client::PredictClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let repo = TestRepo::new();
    // The slow fault model: ~4 ms per row, so 300 rows take over a second.
    repo.add("slow", 1, SLOW);
    let served = serve(&repo, "20", "human");
    let mut in_flight = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&served.addr).await.unwrap();
        in_flight.push(tokio::spawn(async move { c.predict(request("slow", &rows(300))).await }));
    }
    until_queued(served.metrics, 1).await;
    sigterm(&served.child);
    // The listener closes: new connections are refused while the two finish.
    let refused_by = Instant::now() + Duration::from_secs(3);
    loop {
        if connect(&served.addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < refused_by, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in in_flight {
        let resp = r.await.unwrap().expect("an in-flight request finishes");
        assert_eq!(resp.into_inner().outputs[0].shape[0], 300);
    }
    let log_path = served.log.clone();
    let mut child = served.child;
    let (status, _) =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(15))).await.unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // Rollout state was written on the way out.
    assert!(repo.path().join(".state/state.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded() {
    let repo = TestRepo::new();
    repo.add("slow", 1, SLOW);
    let mut served = serve(&repo, "0.5", "json");
    // ~60 s of work each: far longer than the 0.5 s drain (and than the
    // generous ceiling below, which only has to hold on a loaded machine).
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&served.addr).await.unwrap();
        stuck.push(tokio::spawn(async move { c.predict(request("slow", &rows(15_000))).await }));
    }
    until_queued(served.metrics, 1).await;
    sigterm(&served.child);
    let (status, took) =
        tokio::task::spawn_blocking(move || wait_exit(&mut served.child, Duration::from_secs(40)))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(30), "exit took {took:?}");
    // The requests that outlived the drain were cut off, not answered.
    for r in stuck {
        assert!(r.await.unwrap().is_err());
    }
    // --log-format json: every line is one JSON object with a level and a message.
    let log = std::fs::read_to_string(&served.log).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l["fields"]["message"].as_str().unwrap().contains("drain"))
    );
}
