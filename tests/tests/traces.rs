//! OpenTelemetry traces reach a real OTLP receiver: a tonic server
//! implementing the OTLP TraceService, in this process. One test per file:
//! it installs the process's global tracing subscriber.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Default, Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
}

fn string(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::IntValue(i) => Some(i),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_their_parents_links_and_attributes() {
    // The receiver.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(incoming),
    );
    let telemetry = modelgate::init_telemetry(
        modelgate::LogFormat::Human,
        &modelgate::TraceConfig {
            endpoint: Some(format!("http://{otlp}")),
            service_name: Some("modelgate-under-test".into()),
            sampler: None,
            sampler_arg: None,
        },
    )
    .unwrap();
    assert!(telemetry.exporting());

    // A gateway with v1 shadowing the champion v2 on every request.
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let mut a = admin(&server, None).await;
    a.start_rollout(pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
            versions: vec![1],
            fraction_percent: Some(100.0),
        })),
        reason: "trace test".into(),
        triggers: None,
    })
    .await
    .unwrap();

    // A client request carrying W3C trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut c = client(&server).await;
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-{client_span}-01").parse().unwrap());
    req.metadata_mut().insert("x-routing-key", "user-42".parse().unwrap());
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    // A failing one: its span says so.
    let e = c.predict(request("breast-cancer", &[vec![0.0; 29]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Let the shadow copy finish (it runs at the lowest priority, so on a
    // busy machine it can take a while), then stop and flush.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while rollout_status(&mut a, "breast-cancer").await.shadows.first().is_none_or(|s| s.compared == 0) {
        assert!(std::time::Instant::now() < until, "the shadow copy never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let exports = receiver.got.lock().unwrap().clone();
    assert!(!exports.is_empty(), "no export arrived");
    let resource_names: Vec<String> = exports
        .iter()
        .flat_map(|e| &e.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref().and_then(|v| v.value.clone()) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert!(resource_names.iter().all(|n| n == "modelgate-under-test") && !resource_names.is_empty());
    let spans: Vec<Span> = exports
        .into_iter()
        .flat_map(|e| e.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    // The request: a child of the client's span, in the client's trace.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let request_span = spans
        .iter()
        .find(|s| s.name == "modelgate.v1.Predict/Predict" && hex(&s.trace_id) == trace_id)
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(hex(&request_span.parent_span_id), client_span);
    assert_eq!(request_span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(string(request_span, "model").as_deref(), Some("breast-cancer"));
    assert_eq!(int(request_span, "version"), Some(2), "{:?}", request_span.attributes);
    assert_eq!(string(request_span, "role").as_deref(), Some("champion"));
    assert!(string(request_span, "rollout.id").unwrap().starts_with("breast-cancer-"));
    assert!(int(request_span, "bucket").is_some_and(|b| (0..10_000).contains(&b)));
    let key_hash = string(request_span, "routing_key.hash").unwrap();
    assert_eq!(key_hash.len(), 16);
    assert_eq!(int(request_span, "rpc.grpc.status_code"), Some(0));
    // The raw routing key appears nowhere.
    for s in &spans {
        for a in &s.attributes {
            assert_ne!(
                a.value.as_ref().and_then(|v| v.value.clone()),
                Some(Value::StringValue("user-42".into()))
            );
        }
    }

    // Queue wait and inference: children of the request span.
    for name in ["queue", "inference"] {
        let child = spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id == request_span.span_id)
            .unwrap_or_else(|| panic!("no {name} span under the request in {names:?}"));
        assert_eq!(child.trace_id, request_span.trace_id);
        assert!(child.start_time_unix_nano >= request_span.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= request_span.end_time_unix_nano);
    }
    let inference =
        spans.iter().find(|s| s.name == "inference" && s.parent_span_id == request_span.span_id).unwrap();
    assert_eq!(int(inference, "batch_size"), Some(1));

    // The shadow: its own trace, linked to the request.
    let shadow = spans
        .iter()
        .find(|s| s.name == "shadow" && s.links.iter().any(|l| l.span_id == request_span.span_id))
        .unwrap_or_else(|| panic!("no shadow span linked to the request in {names:?}"));
    assert_ne!(shadow.trace_id, request_span.trace_id);
    assert_eq!(shadow.links[0].trace_id, request_span.trace_id);
    assert_eq!(int(shadow, "version"), Some(1));
    assert!(spans.iter().any(|s| s.name == "inference" && s.parent_span_id == shadow.span_id));

    // The failed request: its status code and an error status.
    let failed = spans
        .iter()
        .find(|s| s.name == "modelgate.v1.Predict/Predict" && int(s, "rpc.grpc.status_code") == Some(3))
        .unwrap_or_else(|| panic!("no failed request span in {names:?}"));
    assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2), "STATUS_CODE_ERROR");

    // The rollout decision that started the shadow.
    let decision = spans.iter().find(|s| s.name == "rollout.decision").unwrap();
    assert_eq!(string(decision, "action").as_deref(), Some("started"));
    assert_eq!(string(decision, "model").as_deref(), Some("breast-cancer"));
}
