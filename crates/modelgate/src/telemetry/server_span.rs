//! A server span for every gRPC call through a router (the admin port's
//! Admin and reflection), named `package.Service/Method` from the request's
//! path, with the RPC semantic conventions' attributes and the W3C parent
//! the client sent. The Predict port's calls get richer spans from their
//! handlers ([`super::otel::request_span`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Instrument;

use super::otel::{StatusRecorder, set_remote_parent};

/// Wraps a service in [`ServerSpan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> tower::Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

/// The status a gRPC response carries in its headers. A unary call that
/// fails answers with headers only (grpc-status among them); a call that
/// succeeds puts grpc-status in the trailers, after the body, and counts as
/// OK here (every call this wraps is unary or answers errors in messages).
fn status_of<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ServerSpan<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = request.uri().path().trim_start_matches('/');
        let (service, method) = rpc.split_once('/').unwrap_or(("", rpc));
        let span = tracing::info_span!(
            target: "modelgate::span",
            "request",
            otel.name = rpc,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        set_remote_parent(&span, request.headers());
        let recorder = StatusRecorder::new(span.clone());
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = response.await;
            // A router error never reaches the client as a gRPC status of
            // its own; tonic answers it as UNKNOWN.
            recorder.finish(response.as_ref().map_or(tonic::Code::Unknown, status_of));
            response
        })
    }
}
