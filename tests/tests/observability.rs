//! What operators watch: Prometheus metrics (scraped and parsed), gRPC health
//! and server reflection.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::Duration;

use modelgate_tests::*;

fn labels(s: &prometheus_parse::Sample) -> HashMap<String, String> {
    s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The value of the one sample of `metric` whose labels include `want`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            let l = labels(s);
            want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .filter_map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        })
        .collect();
    assert!(found.len() <= 1, "{metric} {want:?} matches {} samples", found.len());
    found.first().copied()
}

async fn scrape(server: &modelgate::RunningServer) -> (String, prometheus_parse::Scrape) {
    let (status, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    (body, parsed)
}

/// Prometheus's own checker, from Debian's `prometheus` package (installed
/// by `make test-deps`).
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (make test-deps; Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed:\n{said}");
    // Lint findings (not errors) are printed too; there must be none.
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_and_parse() {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, NAN).add("breast-cancer", 2, V2);
    // An SLA the alert rules compare p99 with (never reached here).
    repo.config("breast-cancer", "[triggers]\np99_sla_ms = 1000.0\n");
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut c = client(&server).await;
    let mut a = admin(&server, None).await;
    for _ in 0..5 {
        c.predict(request("breast-cancer", &rows(1))).await.unwrap();
    }
    let bad = c.predict(request("no-such-model", &rows(1))).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::NotFound);
    // Caught while decoding (shape and data disagree): no version chosen yet.
    let mut undecodable = request("breast-cancer", &rows(1));
    undecodable.inputs[0].shape = vec![1, 29];
    assert_eq!(c.predict(undecodable).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Caught against the routed version's signature (29 features, not 30).
    let short = request("breast-cancer", &[vec![0.0; 29]]);
    assert_eq!(c.predict(short).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // A NaN canary that the hard trigger rolls back.
    let plan = canary_plan(1, 50, 1_000_000, false);
    a.start_rollout(plan).await.unwrap();
    let (_, mid) = scrape(&server).await;
    assert_eq!(
        value(&mid, "modelgate_rollout_weight_ratio", &[("model", "breast-cancer"), ("version", "1")]),
        Some(0.5)
    );
    assert_eq!(
        value(&mid, "modelgate_rollout_stage", &[("model", "breast-cancer"), ("strategy", "canary")]),
        Some(1.0)
    );
    let g = golden(2);
    let mut i = 0;
    while rollout_status(&mut a, "breast-cancer").await.state != "rolled_back" {
        let mut req = request("breast-cancer", std::slice::from_ref(&g.rows[i % 16]));
        req.routing_key = format!("m{i}");
        c.predict(req).await.unwrap();
        i += 1;
        assert!(i < 5000, "no rollback");
    }

    let (text, s) = scrape(&server).await;
    promtool_check(&text);
    let ok = value(
        &s,
        "modelgate_requests_total",
        &[("model", "breast-cancer"), ("version", "2"), ("role", "champion"), ("code", "OK")],
    )
    .unwrap();
    assert!(ok >= 5.0, "{ok}");
    assert_eq!(
        value(&s, "modelgate_requests_total", &[("model", ""), ("version", ""), ("code", "NOT_FOUND")]),
        Some(1.0),
        "an unknown model name is not a label"
    );
    for version in ["", "2"] {
        assert_eq!(
            value(
                &s,
                "modelgate_requests_total",
                &[("model", "breast-cancer"), ("version", version), ("code", "INVALID_ARGUMENT")]
            ),
            Some(1.0),
            "version '{version}'"
        );
    }
    let nan = value(&s, "modelgate_nan_inf_outputs_total", &[("model", "breast-cancer"), ("version", "1")]);
    assert!(nan.unwrap() > 0.0);
    assert_eq!(
        value(&s, "modelgate_rollbacks_total", &[("model", "breast-cancer"), ("trigger", "nan_inf_rate")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "modelgate_rollout_events_total", &[("model", "breast-cancer"), ("action", "started")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "modelgate_rollout_state", &[("model", "breast-cancer"), ("state", "rolled_back")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "modelgate_model_version_state",
            &[("model", "breast-cancer"), ("version", "1"), ("state", "ready")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "modelgate_p99_sla_seconds", &[("model", "breast-cancer")]), Some(1.0));
    assert_eq!(
        value(&s, "modelgate_queue_depth", &[("model", "breast-cancer"), ("version", "2")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "modelgate_queue_rejected_total", &[("model", "breast-cancer"), ("version", "2")]),
        Some(0.0)
    );
    // After the rollback everything goes to the champion again.
    assert_eq!(
        value(&s, "modelgate_rollout_weight_ratio", &[("model", "breast-cancer"), ("version", "2")]),
        Some(1.0)
    );
    // The latency histogram, in seconds, with its count matching the OK requests.
    let hist = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "modelgate_request_duration_seconds"
                && labels(x).get("version").map(String::as_str) == Some("2")
                && labels(x).get("role").map(String::as_str) == Some("champion")
        })
        .unwrap();
    let prometheus_parse::Value::Histogram(buckets) = &hist.value else { panic!("{hist:?}") };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(inf.count, ok);
    assert!(buckets.iter().any(|b| b.less_than == 0.001));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_and_reflection_lists_the_services() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let channel = channel_to(server.addr).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "modelgate.v1.Predict", "inference.GRPCInferenceService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let e = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Reflection: the services and a symbol's file, as grpcurl asks for them.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("modelgate.v1.Predict".into())),
        },
    ];
    let mut stream =
        reflection.server_reflection_info(futures::stream::iter(requests)).await.unwrap().into_inner();
    let listed = match stream.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    for want in [
        "modelgate.v1.Predict",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(listed.iter().any(|s| s == want), "{want} not in {listed:?}");
    }
    match stream.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => {
            let file =
                <prost_types::FileDescriptorProto as prost::Message>::decode(&f.file_descriptor_proto[0][..])
                    .unwrap();
            assert_eq!(file.package(), "modelgate.v1");
        }
        other => panic!("{other:?}"),
    }

    // Shutdown: a watcher sees NOT_SERVING before the server goes away.
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap();
    assert_eq!(next.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    // Let go of the connection so the drain has nothing to wait for.
    drop((watch, health, reflection, channel));
    stopping.await.unwrap().unwrap();
}
