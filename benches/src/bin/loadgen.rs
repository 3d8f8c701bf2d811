//! Load generator for a running gateway: closed loop at a concurrency, or open
//! loop at a request rate (latency measured from each request's intended start,
//! so a stalled server cannot hide its queueing). Prints one JSON line.
//!
//! Bounded: it stops after `--duration` seconds or `--max-requests` requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    #[arg(long, default_value = "breast-cancer")]
    model: String,
    /// Pin a version.
    #[arg(long)]
    version: Option<i64>,
    /// Closed loop: requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Open loop: requests per second (overrides the closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured warm-up first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Stop after this many measured requests.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// gRPC connections to spread the clients over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Label for the JSON line.
    #[arg(long, default_value = "gateway")]
    label: String,
    /// Set every row's first feature to this value (e.g. 20 makes the NaN
    /// fault model answer NaN).
    #[arg(long)]
    first_feature: Option<f32>,
}

async fn connect(addr: &str, n: usize) -> anyhow::Result<Vec<PredictClient<Channel>>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        out.push(PredictClient::new(ch));
    }
    Ok(out)
}

async fn request(clients: &[PredictClient<Channel>], args: &Args) -> anyhow::Result<pb::PredictRequest> {
    let mut c = clients[0].clone();
    let meta = c.model_metadata(pb::ModelMetadataRequest { model: args.model.clone() }).await?.into_inner();
    let want = args.version.unwrap_or(meta.champion);
    let v = meta.versions.iter().find(|v| v.version == want).context("version not found")?;
    let inputs = v
        .inputs
        .iter()
        .map(|spec| {
            let mut shape: Vec<i64> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
            if let Some(first) = shape.first_mut() {
                *first = args.batch as i64;
            }
            let n: i64 = shape.iter().product();
            let width = shape.iter().skip(1).product::<i64>().max(1) as usize;
            let mut data = modelgate_benches::features(n as usize / width, width);
            if let Some(f) = args.first_feature {
                for row in data.chunks_mut(width) {
                    row[0] = f;
                }
            }
            pb::Tensor {
                name: spec.name.clone(),
                dtype: pb::DataType::Float32 as i32,
                shape,
                raw: data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
                ..Default::default()
            }
        })
        .collect();
    Ok(pb::PredictRequest { model: args.model.clone(), version: args.version, inputs, ..Default::default() })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let clients = connect(&args.addr, args.connections).await?;
    let req = Arc::new(request(&clients, &args).await?);
    let errors = Arc::new(AtomicU64::new(0));
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let sent = Arc::new(AtomicU64::new(0));

    let mut hist = modelgate_benches::histogram();
    let mode;
    if let Some(rate) = args.rate {
        mode = serde_json::json!({"mode": "open", "rate": rate});
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut next = Instant::now();
        let mut i = 0usize;
        let in_flight_cap = Arc::new(tokio::sync::Semaphore::new(50_000));
        while next < end && sent.load(Ordering::Relaxed) < args.max_requests {
            tokio::time::sleep_until(next.into()).await;
            let intended = next;
            next += interval;
            let Ok(permit) = Arc::clone(&in_flight_cap).try_acquire_owned() else {
                errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut c = clients[i % clients.len()].clone();
            i += 1;
            let (req, tx, errors, sent) =
                (Arc::clone(&req), tx.clone(), Arc::clone(&errors), Arc::clone(&sent));
            tokio::spawn(async move {
                let ok = c.predict((*req).clone()).await.is_ok();
                let _permit = permit;
                if intended >= warm_end {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        let _ = tx.send(intended.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(tx);
        while let Some(us) = rx.recv().await {
            hist.saturating_record(us.max(1));
        }
    } else {
        mode = serde_json::json!({"mode": "closed", "concurrency": args.concurrency});
        let mut tasks = Vec::new();
        for t in 0..args.concurrency.max(1) {
            let mut c = clients[t % clients.len()].clone();
            let (req, errors, sent) = (Arc::clone(&req), Arc::clone(&errors), Arc::clone(&sent));
            let max = args.max_requests;
            tasks.push(tokio::spawn(async move {
                let mut h = modelgate_benches::histogram();
                loop {
                    let start = Instant::now();
                    if start >= end || sent.load(Ordering::Relaxed) >= max {
                        break;
                    }
                    let ok = c.predict((*req).clone()).await.is_ok();
                    if start >= warm_end {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if ok {
                            h.saturating_record((start.elapsed().as_micros() as u64).max(1));
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                h
            }));
        }
        for t in tasks {
            hist.add(t.await?).context("merge histograms")?;
        }
    }
    let seconds = (Instant::now().min(end) - warm_end).as_secs_f64().max(1e-9);
    let mut extra = mode;
    extra["batch"] = args.batch.into();
    extra["model"] = args.model.clone().into();
    let line = modelgate_benches::summary(
        &args.label,
        extra,
        &hist,
        errors.load(Ordering::Relaxed),
        seconds,
        args.batch,
    );
    println!("{line}");
    Ok(())
}
