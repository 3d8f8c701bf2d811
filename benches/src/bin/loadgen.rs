//! Load generator for a running gateway: closed loop at a concurrency, or open
//! loop at a request rate (latency measured from each request's intended start,
//! so a stalled server cannot hide its queueing). Speaks modelgate's Predict or
//! KServe v2 ModelInfer (`--protocol`), with the same rows either way. Prints
//! one JSON line.
//!
//! Bounded: it stops after `--duration` seconds or `--max-requests` requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use tonic::transport::Channel;

/// The API the requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    /// modelgate.v1 Predict.
    Predict,
    /// KServe v2 (inference.GRPCInferenceService) ModelInfer.
    Kserve,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Predict => "predict",
            Protocol::Kserve => "kserve",
        }
    }
}

#[derive(Debug, Parser)]
struct Args {
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    #[arg(long, default_value = "breast-cancer")]
    model: String,
    /// The API to call; both carry the same rows.
    #[arg(long, value_enum, default_value_t = Protocol::Predict)]
    protocol: Protocol,
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

/// One prepared request and the client of its protocol: cloning it is cheap
/// (the tensors' bytes are shared), so every task sends the same request.
#[derive(Clone)]
enum Caller {
    Predict(PredictClient<Channel>, Arc<pb::PredictRequest>),
    Kserve(GrpcInferenceServiceClient<Channel>, Arc<kpb::ModelInferRequest>),
}

impl Caller {
    /// One call; whether it succeeded.
    async fn call(&mut self) -> bool {
        match self {
            Caller::Predict(c, req) => c.predict((**req).clone()).await.is_ok(),
            Caller::Kserve(c, req) => c.model_infer((**req).clone()).await.is_ok(),
        }
    }
}

async fn connect(addr: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// `rows × width` feature values shaped like a declared input (dynamic
/// dimensions: the batch first, 1 elsewhere), as little-endian FP32 bytes.
fn input_of(declared: &[i64], args: &Args) -> (Vec<i64>, Vec<u8>) {
    let mut shape: Vec<i64> = declared.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
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
    (shape, data.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Asks the server for the model's inputs and builds the request every call sends.
async fn caller(channel: Channel, args: &Args) -> anyhow::Result<Caller> {
    match args.protocol {
        Protocol::Predict => {
            let mut c = PredictClient::new(channel);
            let meta =
                c.model_metadata(pb::ModelMetadataRequest { model: args.model.clone() }).await?.into_inner();
            let want = args.version.unwrap_or(meta.champion);
            let v = meta.versions.iter().find(|v| v.version == want).context("version not found")?;
            let inputs = v
                .inputs
                .iter()
                .map(|spec| {
                    let (shape, raw) = input_of(&spec.shape, args);
                    pb::Tensor {
                        name: spec.name.clone(),
                        dtype: pb::DataType::Float32 as i32,
                        shape,
                        raw: raw.into(),
                        ..Default::default()
                    }
                })
                .collect();
            let req = pb::PredictRequest {
                model: args.model.clone(),
                version: args.version,
                inputs,
                ..Default::default()
            };
            Ok(Caller::Predict(c, Arc::new(req)))
        }
        Protocol::Kserve => {
            let mut c = GrpcInferenceServiceClient::new(channel);
            let version = args.version.map(|v| v.to_string()).unwrap_or_default();
            let meta = c
                .model_metadata(kpb::ModelMetadataRequest {
                    name: args.model.clone(),
                    version: version.clone(),
                })
                .await?
                .into_inner();
            let mut req = kpb::ModelInferRequest {
                model_name: args.model.clone(),
                model_version: version,
                ..Default::default()
            };
            for spec in &meta.inputs {
                let (shape, raw) = input_of(&spec.shape, args);
                req.inputs.push(kpb::model_infer_request::InferInputTensor {
                    name: spec.name.clone(),
                    datatype: "FP32".into(),
                    shape,
                    ..Default::default()
                });
                req.raw_input_contents.push(raw.into());
            }
            Ok(Caller::Kserve(c, Arc::new(req)))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channels = connect(&args.addr, args.connections).await?;
    let first = caller(channels[0].clone(), &args).await?;
    let clients: Vec<Caller> = channels
        .into_iter()
        .map(|ch| match &first {
            Caller::Predict(_, req) => Caller::Predict(PredictClient::new(ch), Arc::clone(req)),
            Caller::Kserve(_, req) => Caller::Kserve(GrpcInferenceServiceClient::new(ch), Arc::clone(req)),
        })
        .collect();
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
            let (tx, errors, sent) = (tx.clone(), Arc::clone(&errors), Arc::clone(&sent));
            tokio::spawn(async move {
                let ok = c.call().await;
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
            let (errors, sent) = (Arc::clone(&errors), Arc::clone(&sent));
            let max = args.max_requests;
            tasks.push(tokio::spawn(async move {
                let mut h = modelgate_benches::histogram();
                loop {
                    let start = Instant::now();
                    if start >= end || sent.load(Ordering::Relaxed) >= max {
                        break;
                    }
                    let ok = c.call().await;
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
    extra["protocol"] = args.protocol.as_str().into();
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
