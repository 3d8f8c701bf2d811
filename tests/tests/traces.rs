//! OpenTelemetry traces reach a real OTLP receiver: a tonic server
//! implementing the OTLP TraceService, in this process. One test per file:
//! it installs the process's global tracing subscriber. (The tests that set
//! OTEL_* variables start the binary instead: traces_export.rs,
//! traces_queue.rs.)

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_tests::otlp::{Receiver, hex, int, status_code, string};
use modelgate_tests::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_their_parents_links_attributes_and_semantic_statuses() {
    let (otlp, receiver) = Receiver::start(None, false).await;
    let telemetry = modelgate::init_telemetry(
        modelgate::LogFormat::Human,
        &modelgate::TraceConfig {
            endpoint: Some(format!("http://{otlp}")),
            service_name: Some("modelgate-under-test".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(telemetry.exporting());

    // A gateway with v1 shadowing the champion v2 on every request, and a
    // model whose runtime fails on a negative input.
    let repo = TestRepo::breast_cancer();
    repo.add("failing", 1, FAIL);
    let server = start(&repo, |_| {}).await;
    let mut a = admin(&server, None).await;
    // An admin call in the operator's trace.
    let admin_trace = "0af7651916cd43dd8448eb211c80319c";
    let admin_parent = "b7ad6b7169203331";
    let mut start_req = tonic::Request::new(pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
            versions: vec![1],
            fraction_percent: Some(100.0),
        })),
        reason: "trace test".into(),
        triggers: None,
    });
    start_req
        .metadata_mut()
        .insert("traceparent", format!("00-{admin_trace}-{admin_parent}-01").parse().unwrap());
    a.start_rollout(start_req).await.unwrap();
    // An admin call with a client's mistake.
    let e = a.get_rollout(pb::GetRolloutRequest { model: "no-such-model".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // A client request carrying W3C trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut c = client(&server).await;
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-{client_span}-01").parse().unwrap());
    req.metadata_mut().insert("x-routing-key", "user-42".parse().unwrap());
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    // One whose traceparent says not sampled: served and shadowed, no span.
    let unsampled_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let unsampled_parent = "10f067aa0ba902b8";
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.metadata_mut()
        .insert("traceparent", format!("00-{unsampled_trace}-{unsampled_parent}-00").parse().unwrap());
    c.predict(req).await.unwrap();
    // Client mistakes, and a server failure.
    let e = c.predict(request("breast-cancer", &[vec![0.0; 29]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c.predict(request("no-such-model", &rows(1))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let mut negative = rows(1);
    negative[0][0] = -1.0;
    let e = c.predict(request("failing", &negative)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    // Let both shadow copies finish (they run at the lowest priority, so on
    // a busy machine it can take a while), then stop and flush.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while rollout_status(&mut a, "breast-cancer").await.shadows.first().is_none_or(|s| s.compared < 2) {
        assert!(std::time::Instant::now() < until, "the shadow copies never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let exports = receiver.exports();
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
    let request_span = spans
        .iter()
        .find(|s| s.name == "modelgate.v1.Predict/Predict" && hex(&s.trace_id) == trace_id)
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(hex(&request_span.parent_span_id), client_span);
    assert_eq!(request_span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(string(request_span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(string(request_span, "rpc.service").as_deref(), Some("modelgate.v1.Predict"));
    assert_eq!(string(request_span, "rpc.method").as_deref(), Some("Predict"));
    assert_eq!(status_code(request_span), 0, "STATUS_CODE_UNSET");
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

    // The unsampled request: nothing in its trace, and no shadow span
    // linking to it (the only shadow span is the sampled request's).
    assert!(spans.iter().all(|s| hex(&s.trace_id) != unsampled_trace), "a span of the unsampled trace");
    let shadows: Vec<&Span> = spans.iter().filter(|s| s.name == "shadow").collect();
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    for s in &spans {
        assert!(
            s.links.iter().all(|l| hex(&l.trace_id) != unsampled_trace),
            "{s:?} links to the unsampled trace"
        );
    }

    // Failed requests: their status codes always, an ERROR status only for
    // the server's own failure (INTERNAL), never for a client's mistake.
    let predict_with = |code: i64| {
        spans
            .iter()
            .find(|s| {
                s.name == "modelgate.v1.Predict/Predict" && int(s, "rpc.grpc.status_code") == Some(code)
            })
            .unwrap_or_else(|| panic!("no Predict span with status {code} in {names:?}"))
    };
    assert_eq!(status_code(predict_with(3)), 0, "INVALID_ARGUMENT leaves the status unset");
    assert_eq!(status_code(predict_with(5)), 0, "NOT_FOUND leaves the status unset");
    let internal = predict_with(13);
    assert_eq!(status_code(internal), 2, "INTERNAL is STATUS_CODE_ERROR");
    assert_eq!(string(internal, "model").as_deref(), Some("failing"));

    // Admin calls: server spans with the RPC conventions' attributes, in the
    // caller's trace.
    let start = spans
        .iter()
        .find(|s| s.name == "modelgate.v1.Admin/StartRollout")
        .unwrap_or_else(|| panic!("no StartRollout span in {names:?}"));
    assert_eq!(start.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(hex(&start.trace_id), admin_trace);
    assert_eq!(hex(&start.parent_span_id), admin_parent);
    assert_eq!(string(start, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(string(start, "rpc.service").as_deref(), Some("modelgate.v1.Admin"));
    assert_eq!(string(start, "rpc.method").as_deref(), Some("StartRollout"));
    assert_eq!(int(start, "rpc.grpc.status_code"), Some(0));
    assert_eq!(status_code(start), 0);
    let get_rollouts: Vec<&Span> =
        spans.iter().filter(|s| s.name == "modelgate.v1.Admin/GetRollout").collect();
    assert!(get_rollouts.iter().any(|s| int(s, "rpc.grpc.status_code") == Some(0)), "{get_rollouts:?}");
    let not_found = get_rollouts
        .iter()
        .find(|s| int(s, "rpc.grpc.status_code") == Some(5))
        .unwrap_or_else(|| panic!("no NOT_FOUND GetRollout span in {get_rollouts:?}"));
    assert_eq!(status_code(not_found), 0, "an admin call's NOT_FOUND leaves the status unset");

    // The rollout decision that started the shadow.
    let decision = spans.iter().find(|s| s.name == "rollout.decision").unwrap();
    assert_eq!(string(decision, "action").as_deref(), Some("started"));
    assert_eq!(string(decision, "model").as_deref(), Some("breast-cancer"));
}
