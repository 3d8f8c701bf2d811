//! A real OTLP/gRPC trace receiver in the test process: a tonic server
//! implementing the OTLP TraceService, in plaintext or TLS (optionally
//! requiring a client certificate), that can hold exports until released to
//! play a collector that has stalled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::pki::Issued;

/// What the receiver got, shared with its server task.
#[derive(Clone)]
pub struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Export calls that arrived, answered or not.
    started: Arc<Mutex<usize>>,
    /// Exports are answered while this is true.
    open: tokio::sync::watch::Sender<bool>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.started.lock().expect("lock") += 1;
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        self.got.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// TLS for the receiver: its certificate and, for mutual TLS, the CA its
/// clients' certificates must be signed by.
pub struct ReceiverTls {
    pub server: Issued,
    pub client_ca_pem: Option<String>,
    /// Accept gzip-compressed exports (without it a compressed export is
    /// refused, as a collector without gzip would).
    pub gzip: bool,
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port; `hold`: exports wait
    /// for [`Self::release`].
    pub async fn start(tls: Option<ReceiverTls>, hold: bool) -> (SocketAddr, Self) {
        let receiver = Self {
            got: Arc::default(),
            started: Arc::default(),
            open: tokio::sync::watch::Sender::new(!hold),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("its address");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut server = tonic::transport::Server::builder();
        let mut service = TraceServiceServer::new(receiver.clone());
        if let Some(tls) = tls {
            if tls.gzip {
                service = service.accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            let mut config = ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.server.cert_pem, &tls.server.key_pem));
            if let Some(ca) = tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            server = server.tls_config(config).expect("the receiver's TLS");
        }
        tokio::spawn(server.add_service(service).serve_with_incoming(incoming));
        (addr, receiver)
    }

    /// Lets held exports (and later ones) through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Export calls that arrived so far, answered or held.
    pub fn started(&self) -> usize {
        *self.started.lock().expect("lock")
    }

    /// Every export request answered so far.
    pub fn exports(&self) -> Vec<ExportTraceServiceRequest> {
        self.got.lock().expect("lock").clone()
    }

    /// Every span answered so far.
    pub fn spans(&self) -> Vec<Span> {
        self.exports()
            .into_iter()
            .flat_map(|e| e.resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    /// Polls until a span matching `found` has arrived, for at most `secs`.
    pub async fn span_until(&self, secs: u64, what: &str, found: impl Fn(&Span) -> bool) -> Span {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.spans().into_iter().find(&found) {
                return s;
            }
            let names: Vec<String> = self.spans().iter().map(|s| s.name.clone()).collect();
            assert!(Instant::now() < until, "no {what} span after {secs} s; spans so far: {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A span attribute's value.
pub fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
}

/// A string attribute.
pub fn string(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// An integer attribute.
pub fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::IntValue(i) => Some(i),
        _ => None,
    }
}

/// Bytes as lower-case hex (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span's status code: 0 unset, 1 OK, 2 ERROR.
pub fn status_code(span: &Span) -> i32 {
    span.status.as_ref().map_or(0, |s| s.code)
}

/// `modelgate serve` on loopback ports with a metrics listener and `vars`
/// in its environment (no OTEL_* inherited from the test's), batches sent
/// every 100 ms.
///
/// # Panics
/// When the server exits before it is ready.
pub fn serve_with(repo: &crate::TestRepo, vars: &[(&str, String)]) -> crate::process::ServeProcess {
    let mut cmd = std::process::Command::new(crate::binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--no-watch", "--threads", "1", "--drain-seconds", "1"])
        .arg("--models")
        .arg(repo.path())
        .arg("--state-dir")
        .arg(repo.path().join(".state"))
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        cmd.env_remove(k);
    }
    // Short batches, so a test waits for spans, not for the 5 s default.
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    crate::process::ServeProcess::start(cmd, &repo.path().join(".serve.log"))
        .unwrap_or_else(|log| panic!("modelgate serve exited before it was ready; its log:\n{log}"))
}
