//! The baseline: ONNX Runtime called in process, with the same session
//! settings the gateway uses (1 intra-op thread, 1 inter-op thread, full graph
//! optimisation), no gRPC, no queue. `--concurrency C` runs C threads, each
//! with its own session, in a closed loop. Prints one JSON line.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

#[derive(Debug, Parser)]
struct Args {
    /// The model file.
    #[arg(long, default_value = "models/repository/breast-cancer/1/model.onnx")]
    model: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rows per run (the input's first dimension); the other dimensions come
    /// from the model (dynamic ones other than the first are set to 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value = "raw-ort")]
    label: String,
    /// Sleep this long after each run, so the thread waits as a server's
    /// does between requests at concurrency 1 (the core may idle, and other
    /// work may take its caches): how much of a run's cost is a cold start.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Spin this long after each run on scalar work that touches no memory:
    /// the caches stay as the run left them, and the core stays busy.
    /// Against `--pause-us`, tells a cold start's cache misses from what
    /// the core does when vector units are idle for a while.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Write this many KiB of a buffer after each run, as a server's network
    /// and protocol work would: how much of a run's cost is its data leaving
    /// the caches.
    #[arg(long, default_value_t = 0)]
    touch_kib: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lib = modelgate_runtime::library::locate(
        std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from).as_deref(),
    );
    let env = ort::init_from(lib.path())
        .map_err(|e| anyhow::anyhow!("load ONNX Runtime: {e}"))?
        .with_telemetry(false)
        .build()?;
    let bytes = std::fs::read(&args.model).with_context(|| format!("read {}", args.model.display()))?;
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let pause = Duration::from_micros(args.pause_us);
    let spin = Duration::from_micros(args.spin_us);
    let touch_bytes = args.touch_kib * 1024;
    let mut handles = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let build = || -> ort::Result<Session> {
            Session::builder(&env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .commit_from_memory(&bytes)
        };
        let mut session = build().map_err(|e| anyhow::anyhow!("build session: {e}"))?;
        let input_name = session.inputs()[0].name().to_string();
        let ort::value::ValueType::Tensor { shape: dims, .. } = session.inputs()[0].dtype() else {
            anyhow::bail!("the model's first input is not a tensor");
        };
        let shape: Vec<i64> = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == 0 { args.batch as i64 } else { d.max(1) })
            .collect();
        let width = shape.iter().skip(1).product::<i64>().max(1) as usize;
        let data = modelgate_benches::features(args.batch, width);
        handles.push(std::thread::spawn(move || -> anyhow::Result<hdrhistogram::Histogram<u64>> {
            let mut h = modelgate_benches::histogram();
            let mut scratch = vec![0u8; touch_bytes];
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let input = TensorRef::from_array_view((shape.clone(), data.as_slice()))?;
                let out = session.run(ort::inputs![input_name.as_str() => input])?;
                std::hint::black_box(&out);
                drop(out);
                if start >= warm_end {
                    h.saturating_record((start.elapsed().as_micros() as u64).max(1));
                }
                if pause > Duration::ZERO {
                    std::thread::sleep(pause);
                }
                if spin > Duration::ZERO {
                    let from = Instant::now();
                    let mut x = 1u64;
                    while from.elapsed() < spin {
                        for _ in 0..64 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                }
                if !scratch.is_empty() {
                    // One write per cache line, each time a new value.
                    let v = (start.elapsed().as_nanos() as u8) | 1;
                    for i in (0..scratch.len()).step_by(64) {
                        scratch[i] = v;
                    }
                    std::hint::black_box(&scratch);
                }
            }
            Ok(h)
        }));
    }
    let mut hist = modelgate_benches::histogram();
    for h in handles {
        let h = h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        hist.add(h)?;
    }
    let extra = serde_json::json!({"mode": "closed", "concurrency": args.concurrency, "batch": args.batch,
        "model": args.model.display().to_string(), "pause_us": args.pause_us, "spin_us": args.spin_us, "touch_kib": args.touch_kib});
    println!("{}", modelgate_benches::summary(&args.label, extra, &hist, 0, args.duration, args.batch));
    Ok(())
}
