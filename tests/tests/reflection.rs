//! Server reflection on both listeners, asked the two ways tools ask: v1
//! (grpcurl, tonic's client here) and v1alpha (Python's `grpcio-reflection`
//! from PyPI, in a venv this test makes once: `.cache/venv-reflection`, from
//! tests/python/requirements-reflection.txt). Each port lists exactly the
//! services it serves, and a listed service's file resolves to its methods.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use modelgate_tests::*;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const REFLECTION: [&str; 2] =
    ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// The services listed over v1, and the methods of `service` found in the
/// file that defines it.
async fn reflect_v1(addr: SocketAddr, service: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut client = ServerReflectionClient::new(channel_to(addr).await);
    let ask = |m| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(service.into())),
    ];
    let mut replies =
        client.server_reflection_info(futures::stream::iter(requests)).await.unwrap().into_inner();
    let mut listed = match replies.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    listed.sort();
    let files = match replies.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
        other => panic!("{other:?}"),
    };
    let mut methods = BTreeSet::new();
    for raw in files {
        let file = <prost_types::FileDescriptorProto as prost::Message>::decode(&raw[..]).unwrap();
        for s in &file.service {
            if format!("{}.{}", file.package(), s.name()) == service {
                methods.extend(s.method.iter().map(|m| m.name().to_string()));
            }
        }
    }
    (listed, methods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_lists_exactly_its_services_over_v1_and_v1alpha() {
    let python = tokio::task::spawn_blocking(|| python::venv("reflection", "requirements-reflection.txt"))
        .await
        .unwrap();
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let predict_port = ["modelgate.v1.Predict", "inference.GRPCInferenceService", "grpc.health.v1.Health"];
    for (port, addr, served, (service, method)) in [
        ("predict", server.addr, &predict_port[..], ("inference.GRPCInferenceService", "ModelStreamInfer")),
        ("admin", server.admin_addr, &["modelgate.v1.Admin"][..], ("modelgate.v1.Admin", "StartRollout")),
    ] {
        let mut want: Vec<String> = served.iter().chain(&REFLECTION).map(|s| s.to_string()).collect();
        want.sort();

        let (listed, methods) = reflect_v1(addr, service).await;
        assert_eq!(listed, want, "{port} port, v1");
        assert!(methods.contains(method), "{port} port, v1: {service} has {methods:?}");

        let mut cmd = Command::new(&python);
        cmd.arg(root().join("tests/python/reflection_client.py")).arg(addr.to_string());
        let out = tokio::task::spawn_blocking(move || python::run_bounded(cmd, Duration::from_secs(60)))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "grpcio-reflection on the {port} port failed ({}):\n{stderr}",
            out.status
        );
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen["services"], serde_json::json!(want), "{port} port, v1alpha");
        // Every listed service resolved, imports included (KServe's
        // model_config.proto, the reflection protos themselves).
        for s in &want {
            let methods = seen["methods"][s].as_array().unwrap();
            assert!(!methods.is_empty(), "{port} port, v1alpha: {s} has no methods");
        }
        assert!(
            seen["methods"][service].as_array().unwrap().iter().any(|m| m == method),
            "{port} port, v1alpha: {service} has {}",
            seen["methods"][service]
        );
    }
    server.stop().await.unwrap();
}
