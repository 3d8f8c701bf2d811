//! `make bench-sinks`: what the shadow record sinks cost, measured side by
//! side in one run on this machine, against real servers on loopback (the
//! tansu Kafka broker and the s3s-fs S3 server `make test-servers` builds).
//!
//! 1. **Each sink alone**: records/s through the sink's writer with no
//!    gateway (batches of 256, as the gateway's queue hands them over, then
//!    a final flush that waits for delivery): JSON lines, Parquet on a local
//!    directory, Kafka (idempotent, acks=all, lz4), Parquet on S3.
//! 2. **The champion's cost**: one release gateway per sink, breast-cancer v1
//!    serving at a fixed concurrency, v2 shadowing 100% of it and the copies'
//!    records going to that sink. Shadow off and on alternate in rounds; the
//!    table gives p50/p99 of each, p99 on/off, and records written per second
//!    (from `modelgate_shadow_records_total`) while on.
//! 3. **The broker stopped mid-load**: the Kafka gateway under the same load
//!    in four phases: broker up, broker stopped, broker started again, and the interval after that. Per
//!    phase: champion requests, failures, p50/p99, and what the sink wrote,
//!    retried and dropped.
//!
//! Bounded: every load phase is `--seconds` long; the whole run takes about
//! (2 x rounds x 4 + 4) x seconds plus start-ups.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use modelgate::records::parquet::ParquetWriter;
use modelgate::records::{
    self, KafkaSecurity, OutputRecord, PredictionRecord, Record, RecordWriter, SCHEMA_VERSION, SinkContext,
    TensorValues,
};
use modelgate_tests::kafka::Broker;
use modelgate_tests::s3::S3Server;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Off/on pairs per sink.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Records per sink in the sink-alone run.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Champion requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Which sections to run (1: each sink alone, 2: the champion's cost,
    /// 3: the broker stopped mid-load).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    sections: Vec<u32>,
    /// The Kafka sink's message.timeout.ms in section 3: records the broker
    /// has not acknowledged by then are given up (counted `dropped_failed`),
    /// which frees the producer's bound for the records after the restart.
    #[arg(long, default_value_t = 5000)]
    outage_message_timeout_ms: u64,
    /// Where the gateways' repositories, logs and records go.
    #[arg(long, default_value = "target/bench/sinks")]
    out: PathBuf,
}

const TOPIC: &str = "shadow-records";
const BUCKET: &str = "lake";

/// The servers and where each sink writes.
struct Sinks {
    broker: Broker,
    s3: S3Server,
    out: PathBuf,
}

impl Sinks {
    /// (name, --records URL) of every sink.
    fn urls(&self, tag: &str) -> Vec<(&'static str, String)> {
        let out = self.out.canonicalize().unwrap_or_else(|_| self.out.clone());
        vec![
            ("file", format!("file://{}/{tag}-jsonl", out.display())),
            ("parquet-local", format!("parquet+file://{}/{tag}-parquet", out.display())),
            ("kafka", format!("kafka://{}/{TOPIC}", self.broker.bootstrap())),
            ("parquet-s3", format!("s3://{BUCKET}/{tag}?endpoint={}&allow_http=true", self.s3.endpoint())),
        ]
    }

    /// The S3 server's credentials, as the gateway reads them.
    fn s3_env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3Server::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3Server::SECRET_KEY.into()),
            ("AWS_REGION".into(), S3Server::REGION.into()),
        ]
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = std::env::current_dir()?;
    std::fs::create_dir_all(&args.out)?;
    let bin = root.join("target/release/modelgate");
    let loadgen = root.join("target/release/loadgen");
    for b in [&bin, &loadgen] {
        anyhow::ensure!(
            b.exists(),
            "{} is missing: cargo build --release -p modelgate -p modelgate-benches",
            b.display()
        );
    }
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut sinks = Sinks { broker, s3, out: args.out.clone() };

    let mut alone = BTreeMap::new();
    if args.sections.contains(&1) {
        println!(
            "1. each sink alone: {} prediction records (breast-cancer's two outputs), batches of 256",
            args.records
        );
    }
    for (name, url) in sinks.urls("alone").into_iter().filter(|_| args.sections.contains(&1)) {
        let rate = sink_alone(name, &url, args.records)?;
        println!("   {name:<14} {rate:>10.0} records/s");
        alone.insert(name, rate);
    }

    let repo = args.out.join("repo");
    let _ = std::fs::remove_dir_all(&repo);
    let model_dir = repo.join("breast-cancer/1");
    std::fs::create_dir_all(&model_dir)?;
    std::fs::copy(root.join("models/repository/breast-cancer/1/model.onnx"), model_dir.join("model.onnx"))?;

    let mut rows = Vec::new();
    if args.sections.contains(&2) {
        println!(
            "\n2. champion v1 at concurrency {}, shadow v2 at 100% writing to one sink; {} off/on rounds of {} s each",
            args.concurrency, args.rounds, args.seconds
        );
        for (name, url) in sinks.urls("gateway") {
            // A gateway that starts with v1 and v2 on disk makes v2 (the highest)
            // champion: v2 must arrive while v1 serves.
            let _ = std::fs::remove_dir_all(repo.join("breast-cancer/2"));
            let gw = Gateway::start(&bin, &repo, &args.out.join(format!("gw-{name}")), &url, &root)?;
            gw.add_v2(&repo, &root)?;
            let mut off = Vec::new();
            let mut on = Vec::new();
            let mut written = 0.0;
            let mut on_seconds = 0.0;
            for r in 0..args.rounds {
                off.push(load(&loadgen, &gw.addr, args.concurrency, args.seconds, &format!("{name}-off"))?);
                gw.admin(&bin, &["start", "breast-cancer", "shadow", "--versions", "2"])?;
                let before = gw.sink_counts(name)?;
                let started = Instant::now();
                on.push(load(&loadgen, &gw.addr, args.concurrency, args.seconds, &format!("{name}-on"))?);
                on_seconds += started.elapsed().as_secs_f64();
                let after = gw.sink_counts(name)?;
                written += after.written - before.written;
                gw.admin(&bin, &["abort", "breast-cancer", "--reason", &format!("bench round {}", r + 1)])?;
            }
            let counts = gw.sink_counts(name)?;
            gw.stop();
            let med = |v: &[Value], k: &str| median(v.iter().map(|x| x[k].as_f64().unwrap_or(0.0)).collect());
            let errors: f64 = on.iter().chain(&off).map(|x| x["errors"].as_f64().unwrap_or(0.0)).sum();
            rows.push(json!({
                "sink": name,
                "off_p50_us": med(&off, "p50_us"), "off_p99_us": med(&off, "p99_us"),
                "on_p50_us": med(&on, "p50_us"), "on_p99_us": med(&on, "p99_us"),
                "p99_on_off": med(&on, "p99_us") / med(&off, "p99_us").max(1.0),
                "p99_on_off_rounds": on.iter().zip(&off).map(|(a, b)| a["p99_us"].as_f64().unwrap_or(0.0) / b["p99_us"].as_f64().unwrap_or(1.0).max(1.0)).collect::<Vec<_>>(),
                "records_per_s": written / on_seconds.max(1e-9),
                "champion_errors": errors,
                "dropped_full": counts.dropped_full, "dropped_failed": counts.dropped_failed,
            }));
        }
        println!(
            "   {:<14} | {:>8} {:>8} | {:>8} {:>8} | {:>10} {:>16} | {:>10} | {:>8} {:>8} {:>8}",
            "sink",
            "off p50",
            "off p99",
            "on p50",
            "on p99",
            "p99 on/off",
            "(rounds)",
            "records/s",
            "errors",
            "drop-q",
            "drop-f"
        );
        for r in &rows {
            let rounds: Vec<String> = r["p99_on_off_rounds"]
                .as_array()
                .map(|a| a.iter().map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0))).collect())
                .unwrap_or_default();
            println!(
                "   {:<14} | {:>8.0} {:>8.0} | {:>8.0} {:>8.0} | {:>10.2} {:>16} | {:>10.0} | {:>8} {:>8} {:>8}",
                r["sink"].as_str().unwrap_or(""),
                r["off_p50_us"].as_f64().unwrap_or(0.0),
                r["off_p99_us"].as_f64().unwrap_or(0.0),
                r["on_p50_us"].as_f64().unwrap_or(0.0),
                r["on_p99_us"].as_f64().unwrap_or(0.0),
                r["p99_on_off"].as_f64().unwrap_or(0.0),
                rounds.join(" "),
                r["records_per_s"].as_f64().unwrap_or(0.0),
                r["champion_errors"].as_f64().unwrap_or(0.0),
                r["dropped_full"].as_f64().unwrap_or(0.0),
                r["dropped_failed"].as_f64().unwrap_or(0.0),
            );
        }
    }

    let mut phases = Vec::new();
    if args.sections.contains(&3) {
        println!(
            "\n3. the Kafka broker stopped mid-load (champion at concurrency {}, shadow on, message.timeout.ms={})",
            args.concurrency, args.outage_message_timeout_ms
        );
        let url = format!(
            "kafka://{}/{TOPIC}?message.timeout.ms={}",
            sinks.broker.bootstrap(),
            args.outage_message_timeout_ms
        );
        let _ = std::fs::remove_dir_all(repo.join("breast-cancer/2"));
        let gw = Gateway::start(&bin, &repo, &args.out.join("gw-broker-down"), &url, &root)?;
        gw.add_v2(&repo, &root)?;
        gw.admin(&bin, &["start", "breast-cancer", "shadow", "--versions", "2"])?;
        println!(
            "   {:<26} | {:>9} {:>7} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
            "phase", "requests", "failed", "p50 µs", "p99 µs", "written", "retried", "drop-q", "drop-f"
        );
        // Two intervals after the restart: librdkafka's reconnect backoff and
        // the records that timed out while it was down take the first.
        for phase in ["broker up", "broker stopped", "broker started again", "broker back, next interval"] {
            match phase {
                "broker stopped" => sinks.broker.stop(),
                "broker started again" => {
                    sinks.broker.start_again();
                    sinks.broker.create_topic(TOPIC, 3);
                }
                _ => {}
            }
            let before = gw.sink_counts("kafka")?;
            let r = load(&loadgen, &gw.addr, args.concurrency, args.seconds, phase)?;
            let after = gw.sink_counts("kafka")?;
            let d = after.minus(&before);
            println!(
                "   {:<26} | {:>9.0} {:>7.0} | {:>8.0} {:>8.0} | {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                phase,
                r["requests"].as_f64().unwrap_or(0.0),
                r["errors"].as_f64().unwrap_or(0.0),
                r["p50_us"].as_f64().unwrap_or(0.0),
                r["p99_us"].as_f64().unwrap_or(0.0),
                d.written,
                d.retried,
                d.dropped_full,
                d.dropped_failed
            );
            phases.push(json!({"phase": phase, "load": r, "sink": d.to_json()}));
        }
        gw.stop();
    }

    let summary = json!({"alone_records_per_s": alone, "gateway": rows, "broker_down": phases});
    std::fs::write(args.out.join("results.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("\n(all numbers: {})", args.out.join("results.json").display());
    Ok(())
}

/// A record like the gateway writes for breast-cancer: a label and two class
/// probabilities from each version, compared.
fn record(i: usize) -> Record {
    let p = (i % 1000) as f64 / 1000.0;
    let probs = |p: f64| TensorValues {
        dtype: "FP32".into(),
        shape: vec![1, 2],
        values: vec![Some(1.0 - p), Some(p)],
        strings: Vec::new(),
        truncated: false,
        count: 2,
        min: Some(p.min(1.0 - p)),
        max: Some(p.max(1.0 - p)),
        mean: Some(0.5),
    };
    let label = |l: f64| TensorValues {
        dtype: "INT64".into(),
        shape: vec![1],
        values: vec![Some(l)],
        strings: Vec::new(),
        truncated: false,
        count: 1,
        min: Some(l),
        max: Some(l),
        mean: Some(l),
    };
    let q = (p + 0.01).min(1.0);
    Record::Prediction(PredictionRecord {
        schema: SCHEMA_VERSION,
        ts_ms: modelgate::clock::now_ms() as i64,
        request_id: format!("bench-{i:08}"),
        model: "breast-cancer".into(),
        replica: "bench-0".into(),
        champion_version: 1,
        champion_role: "champion".into(),
        shadow_version: 2,
        shadow_role: "shadow".into(),
        routing_key_hash: Some(format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))),
        champion_latency_us: 180 + (i % 50) as u64,
        shadow_latency_us: 240 + (i % 70) as u64,
        shadow_error: None,
        outputs: vec![
            OutputRecord {
                name: "label".into(),
                champion: label(if p > 0.5 { 1.0 } else { 0.0 }),
                shadow: Some(label(if q > 0.5 { 1.0 } else { 0.0 })),
                elements: 1,
                max_abs_diff: Some(0.0),
                mean_abs_diff: Some(0.0),
                agreement: Some(1.0),
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: None,
            },
            OutputRecord {
                name: "probabilities".into(),
                champion: probs(p),
                shadow: Some(probs(q)),
                elements: 2,
                max_abs_diff: Some(q - p),
                mean_abs_diff: Some(q - p),
                agreement: Some(1.0),
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: None,
            },
        ],
        inputs: None,
    })
}

/// Records/s through one sink's writer alone, final flush included.
fn sink_alone(name: &str, url: &str, n: usize) -> anyhow::Result<f64> {
    let ctx =
        SinkContext { replica: "bench-0".into(), file_max_bytes: 64 << 20, kafka: KafkaSecurity::default() };
    let mut writer: Box<dyn RecordWriter> = if name == "parquet-s3" {
        // The S3 credentials from this run's server, not the environment.
        Box::new(
            ParquetWriter::open(
                url,
                "bench-0",
                &Sinks::s3_env(),
                Box::new(|| modelgate::clock::now_ms() as i64),
            )
            .map_err(anyhow::Error::msg)?,
        )
    } else {
        records::open(url, &ctx).with_context(|| format!("open {url}"))?
    };
    let batches: Vec<Vec<Record>> =
        (0..n).collect::<Vec<_>>().chunks(256).map(|c| c.iter().map(|&i| record(i)).collect()).collect();
    let start = Instant::now();
    for b in &batches {
        // A full producer queue refuses the whole batch (Transient): wait
        // for acknowledgements and offer it again, as the gateway's queue
        // does. Bounded: a sink that stays full for a minute fails the run.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match writer.write(b) {
                Ok(()) => break,
                Err(records::SinkError::Transient(_)) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => bail!("{name}: {e}"),
            }
        }
    }
    writer.flush().map_err(|e| anyhow::anyhow!("{name}: flush: {e}"))?;
    let took = start.elapsed().as_secs_f64();
    let lost = writer.take_undelivered();
    anyhow::ensure!(lost == 0, "{name}: {lost} records not delivered");
    Ok(n as f64 / took)
}

/// Runs the load generator once; its JSON line.
fn load(loadgen: &Path, addr: &str, concurrency: usize, seconds: f64, label: &str) -> anyhow::Result<Value> {
    let out = Command::new(loadgen)
        .args(["--addr", addr, "--model", "breast-cancer", "--label", label])
        .args(["--concurrency", &concurrency.to_string(), "--duration", &seconds.to_string()])
        .output()
        .context("run loadgen")?;
    anyhow::ensure!(out.status.success(), "loadgen: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("loadgen printed {line:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// `modelgate_shadow_records_total` of one sink.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    written: f64,
    retried: f64,
    dropped_full: f64,
    dropped_failed: f64,
}

impl Counts {
    fn minus(&self, o: &Counts) -> Counts {
        Counts {
            written: self.written - o.written,
            retried: self.retried - o.retried,
            dropped_full: self.dropped_full - o.dropped_full,
            dropped_failed: self.dropped_failed - o.dropped_failed,
        }
    }

    fn to_json(self) -> Value {
        json!({"written": self.written, "retried": self.retried, "dropped_full": self.dropped_full, "dropped_failed": self.dropped_failed})
    }
}

/// A release gateway as its own process, one sink.
struct Gateway {
    child: Child,
    addr: String,
    admin: String,
    metrics: String,
}

impl Gateway {
    fn start(bin: &Path, repo: &Path, dir: &Path, records: &str, root: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut child = Command::new(bin)
            .current_dir(root)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--rescan-seconds", "0.2", "--settle-ms", "200"])
            .arg("--models")
            .arg(repo)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--records", records, "--replica-id", "bench-0"])
            .envs(Sinks::s3_env())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .spawn()
            .context("start the gateway")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let (mut addr, mut admin, mut metrics) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(a) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
                addr = Some(a.trim().to_string());
            }
            if let Some(a) = line.trim().strip_prefix("admin on ") {
                admin = Some(a.trim().to_string());
            }
            if let Some(a) = line.trim().strip_prefix("metrics on http://") {
                metrics = a.strip_suffix("/metrics").map(str::to_string);
            }
            if line.starts_with("try: ") {
                break;
            }
        }
        match (addr, admin, metrics) {
            (Some(addr), Some(admin), Some(metrics)) => Ok(Self { child, addr, admin, metrics }),
            _ => {
                let _ = child.kill();
                bail!("the gateway did not start; see {}", dir.join("server.log").display())
            }
        }
    }

    /// Drops v2 into the repository beside the serving v1 and waits until
    /// it is READY (a challenger-to-be, not the champion).
    fn add_v2(&self, repo: &Path, root: &Path) -> anyhow::Result<()> {
        let v2 = repo.join("breast-cancer/2");
        if !v2.exists() {
            let staging = repo.join(".staging");
            std::fs::create_dir_all(&staging)?;
            std::fs::copy(
                root.join("models/repository/breast-cancer/2/model.onnx"),
                staging.join("model.onnx"),
            )?;
            std::fs::rename(&staging, &v2)?;
        }
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let body = self.scrape()?;
            if body.lines().any(|l| {
                l.starts_with("modelgate_model_version_state{")
                    && l.contains("version=\"2\"")
                    && l.contains("state=\"ready\"")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0)
            }) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < until, "v2 not READY within 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin(&self, bin: &Path, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(bin).args(["admin", "--admin-addr", &self.admin]).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "modelgate admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn scrape(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics)?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    fn sink_counts(&self, sink: &str) -> anyhow::Result<Counts> {
        let body = self.scrape()?;
        let mut c = Counts::default();
        let prefix =
            format!("modelgate_shadow_records_total{{sink=\"{}\",outcome=\"", sink_metric_name(sink));
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else { continue };
            let Some((outcome, value)) = rest.split_once("\"} ") else { continue };
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            match outcome {
                "written" => c.written = v,
                "retried" => c.retried = v,
                "dropped_full" => c.dropped_full = v,
                "dropped_failed" => c.dropped_failed = v,
                _ => {}
            }
        }
        Ok(c)
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sink` label the gateway gives each kind.
fn sink_metric_name(sink: &str) -> &'static str {
    match sink {
        "file" => "file",
        "kafka" => "kafka",
        _ => "parquet",
    }
}
