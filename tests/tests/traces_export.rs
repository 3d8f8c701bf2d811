//! The OTLP exporter as an operator configures it, with the OpenTelemetry
//! SDK's environment variables on a real `modelgate serve` (env vars are
//! process-wide, so each test starts the binary): TLS to the collector (a
//! real TLS OTLP receiver, certificates from tests/src/pki.rs), the traces
//! endpoint winning over the generic one, OTEL_SDK_DISABLED, and start-up
//! errors that name a bad variable.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use modelgate_tests::otlp::{Receiver, ReceiverTls, hex, serve_with};
use modelgate_tests::pki::{Ca, write};
use modelgate_tests::process::{ServeProcess, run_to_exit, serve_command};
use modelgate_tests::*;

/// One Predict call, sampled, in the trace `trace_id`.
async fn traced_predict(served: &ServeProcess, trace_id: &str) {
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    served.client().await.predict(req).await.unwrap();
}

/// Stops the server with SIGTERM (which flushes queued spans) and waits.
fn stop(mut served: ServeProcess) {
    served.signal("TERM");
    let status = tokio::task::block_in_place(|| served.wait_exit(Duration::from_secs(120)));
    assert!(status.is_some_and(|s| s.success()), "no clean exit: {status:?}\n{}", served.log());
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_exports_over_tls_trusting_the_given_ca() {
    let ca = Ca::new("otel test CA");
    let certs = tempfile::tempdir().unwrap();
    let ca_file = write(certs.path(), "ca.pem", &ca.pem());
    let (otlp, receiver) = Receiver::start(
        Some(ReceiverTls { server: ca.server("collector"), client_ca_pem: None, gzip: false }),
        false,
    )
    .await;
    let repo = TestRepo::breast_cancer();
    let served = serve_with(
        &repo,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://127.0.0.1:{}", otlp.port())),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&ca_file)),
        ],
    );
    let trace_id = "1bf92f3577b34da6a3ce929d0e0e4731";
    traced_predict(&served, trace_id).await;
    let span = receiver
        .span_until(120, "Predict over TLS", |s| {
            s.name == "modelgate.v1.Predict/Predict" && hex(&s.trace_id) == trace_id
        })
        .await;
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    stop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_less_traces_endpoint_wins_over_the_generic_one_and_presents_a_client_certificate_gzipped() {
    let ca = Ca::new("otel test CA");
    let certs = tempfile::tempdir().unwrap();
    let ca_file = write(certs.path(), "ca.pem", &ca.pem());
    let client = ca.client("modelgate", "gateways");
    let cert_file = write(certs.path(), "client.pem", &client.cert_pem);
    let key_file = write(certs.path(), "client.key", &client.key_pem);
    // The collector for traces requires a client certificate signed by the CA.
    let (otlp, receiver) = Receiver::start(
        Some(ReceiverTls { server: ca.server("collector"), client_ca_pem: Some(ca.pem()), gzip: true }),
        false,
    )
    .await;
    // The generic endpoint: a plaintext receiver that must get nothing.
    let (generic, generic_receiver) = Receiver::start(None, false).await;
    let repo = TestRepo::breast_cancer();
    let served = serve_with(
        &repo,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{generic}")),
            // No scheme: TLS, as the specification says (INSECURE unset).
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("127.0.0.1:{}", otlp.port())),
            // The generic CA is wrong; the traces one wins.
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                path(&write(certs.path(), "other.pem", &Ca::new("other").pem())),
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", path(&ca_file)),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", path(&cert_file)),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", path(&key_file)),
            // The receiver takes gzip only when asked to; this one is.
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip".into()),
        ],
    );
    let trace_id = "2bf92f3577b34da6a3ce929d0e0e4732";
    traced_predict(&served, trace_id).await;
    receiver
        .span_until(120, "Predict over mutual TLS", |s| {
            s.name == "modelgate.v1.Predict/Predict" && hex(&s.trace_id) == trace_id
        })
        .await;
    stop(served);
    assert_eq!(generic_receiver.started(), 0, "the generic endpoint got an export");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_disabled_exports_nothing_and_still_serves() {
    let (otlp, receiver) = Receiver::start(None, false).await;
    let repo = TestRepo::breast_cancer();
    let served = serve_with(
        &repo,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")), ("OTEL_SDK_DISABLED", "TRUE".into())],
    );
    for _ in 0..3 {
        traced_predict(&served, "3bf92f3577b34da6a3ce929d0e0e4733").await;
    }
    assert!(served.log().contains("OTEL_SDK_DISABLED is true: no spans are exported"), "{}", served.log());
    // SIGTERM flushes whatever an exporter would hold: after the exit,
    // nothing arriving means nothing was ever exported.
    stop(served);
    assert_eq!(receiver.started(), 0, "spans were exported with OTEL_SDK_DISABLED=true");
}

#[test]
fn bad_otel_settings_stop_start_up_with_the_variable_named() {
    let repo = TestRepo::breast_cancer();
    let state = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = write(certs.path(), "client.pem", &Ca::new("ca").client("c", "o").cert_pem);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")], "OTEL_BSP_MAX_QUEUE_SIZE must be a whole number from 1 to"),
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE must be a whole number from 1 to"),
        (&[("OTEL_BSP_SCHEDULE_DELAY", "-1")], "OTEL_BSP_SCHEDULE_DELAY must be a whole number"),
        (&[("OTEL_SDK_DISABLED", "maybe")], "OTEL_SDK_DISABLED must be true or false, got 'maybe'"),
        (
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
            "cannot read OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.to_str().unwrap())],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but OTEL_EXPORTER_OTLP_CLIENT_KEY is not",
        ),
        (&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unix:///tmp/otel.sock")], "has scheme 'unix'"),
        (&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")], "exports OTLP over gRPC only"),
        (
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
            "OTEL_EXPORTER_OTLP_COMPRESSION is 'zstd'; expected gzip or none",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")],
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be a whole number",
        ),
    ];
    for (vars, expected) in cases {
        let mut cmd = serve_command(repo.path(), state.path());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        // An https:// endpoint that nothing listens on: the settings are
        // checked at start-up, before any export.
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:9");
        for (k, v) in *vars {
            cmd.env(k, v);
        }
        let exited = run_to_exit(cmd, 120);
        assert!(!exited.status.success(), "{vars:?} started: {}", exited.stdout);
        assert!(exited.stderr.contains(expected), "{vars:?}: expected '{expected}' in:\n{}", exited.stderr);
        assert!(!exited.stderr.contains("panicked"), "{vars:?}: {}", exited.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_a_collector_never_takes_are_counted_and_serving_goes_on() {
    // A port nothing listens on: every export is refused.
    let port = modelgate_tests::closed_port();
    let closed = port.addr;
    let repo = TestRepo::breast_cancer();
    let served = serve_with(&repo, &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))]);
    let failed = || served.metric("modelgate_trace_spans_dropped_total", &[("reason", "export_failed")]);
    // Both series exist from the start, at 0 (a rate over them is never empty).
    let (_, body) = http_get(served.metrics_addr.unwrap(), "/metrics").await;
    for reason in ["queue_full", "export_failed"] {
        let series = format!("modelgate_trace_spans_dropped_total{{reason=\"{reason}\"}} 0");
        assert!(body.lines().any(|l| l == series), "no '{series}' in:\n{body}");
    }
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while failed().await == 0.0 {
        assert!(std::time::Instant::now() < until, "no failed export counted; log:\n{}", served.log());
        traced_predict(&served, "7bf92f3577b34da6a3ce929d0e0e4737").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.metric("modelgate_trace_spans_dropped_total", &[("reason", "queue_full")]).await, 0.0);
}
