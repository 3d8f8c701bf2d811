//! Heap allocations per request on the request path, counted by dhat's
//! global allocator (all threads: tokio, the executor, ORT), in process:
//!
//! - `gateway`: `Gateway::infer` alone (routing, validation, queue, ORT,
//!   windows, metrics);
//! - `predict`: the Predict service handler on top (protobuf tensors in and
//!   out), still without the network.
//!
//! Prints one JSON line per model. Not a timing: counts are exact and
//! repeatable.

use std::sync::Arc;

use modelgate::InferRequest;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_server::Predict;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const N: u64 = 2000;

fn rows(shape: &[i64]) -> (Vec<i64>, Vec<f32>) {
    let shape: Vec<i64> = shape.iter().map(|&d| d.max(1)).collect();
    let width = shape.iter().skip(1).product::<i64>() as usize;
    (shape, modelgate_benches::features(1, width))
}

fn main() -> anyhow::Result<()> {
    // ALLOCS_PROFILE=1 writes dhat-heap.json with every allocation site
    // (open it in dhat's viewer) instead of only counting.
    let _profiler = if std::env::var_os("ALLOCS_PROFILE").is_some() {
        dhat::Profiler::new_heap()
    } else {
        dhat::Profiler::builder().testing().build()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut config = modelgate::ServeConfig::new("models/repository");
        config.state_dir = std::env::temp_dir().join(format!("modelgate-allocs-{}", std::process::id()));
        config.shadow_dir = config.state_dir.join("shadow");
        config.watch = false;
        config.metrics_listen = None;
        let server = modelgate::start(config).await?;
        let gateway = Arc::clone(&server.gateway);
        let service = modelgate::PredictService::new(Arc::clone(&gateway));
        for model in ["breast-cancer", "cnn"] {
            let table = gateway.table();
            let spec = &table
                .get(model)
                .expect("the model")
                .champion()
                .expect("a champion")
                .model()
                .signature()
                .inputs[0];
            let (shape, data) = rows(
                &spec
                    .dims
                    .iter()
                    .map(|d| match d {
                        modelgate_runtime::Dim::Fixed(n) => *n,
                        modelgate_runtime::Dim::Dynamic(_) => 1,
                    })
                    .collect::<Vec<_>>(),
            );
            let tensor = modelgate_runtime::Tensor::new(
                spec.name.clone(),
                shape.clone(),
                modelgate_runtime::TensorData::Float32(data.clone()),
            );
            let infer = |i: u64| InferRequest {
                model: model.to_string(),
                version: None,
                routing_key: None,
                request_id: format!("r{i}"),
                inputs: vec![tensor.clone()],
                outputs: Vec::new(),
                deadline: None,
            };
            let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            let predict = |i: u64| pb::PredictRequest {
                model: model.to_string(),
                request_id: format!("r{i}"),
                inputs: vec![pb::Tensor {
                    name: spec.name.clone(),
                    dtype: pb::DataType::Float32 as i32,
                    shape: shape.clone(),
                    raw: raw.clone().into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            // Warm up: first-use allocations (metric handles, caches) are not per request.
            for i in 0..200 {
                gateway.infer(infer(i)).await?;
                service.predict(tonic::Request::new(predict(i))).await?;
            }
            let mut per = serde_json::Map::new();
            for what in ["gateway", "predict"] {
                // The request itself is built before counting starts.
                let reqs: Vec<_> = (0..N).map(|i| (infer(i), predict(i))).collect();
                let before = dhat::HeapStats::get();
                for (a, b) in reqs {
                    if what == "gateway" {
                        std::hint::black_box(gateway.infer(a).await?);
                    } else {
                        std::hint::black_box(service.predict(tonic::Request::new(b)).await?);
                    }
                }
                let after = dhat::HeapStats::get();
                per.insert(
                    what.to_string(),
                    serde_json::json!({
                        "allocs_per_request": (after.total_blocks - before.total_blocks) as f64 / N as f64,
                        "bytes_per_request": (after.total_bytes - before.total_bytes) as f64 / N as f64,
                    }),
                );
            }
            println!(
                "{}",
                serde_json::json!({"bench": "allocations", "model": model, "requests": N, "per": per})
            );
        }
        server.stop().await?;
        anyhow::Ok(())
    })
}
