//! What Predict (modelgate.v1) and KServe v2 ModelInfer share before a
//! request reaches [`Gateway::infer`]: the request span, the deadline from
//! `grpc-timeout`, the request id, the routing key from a field or the
//! `x-routing-key` header, and counting a request refused while decoding.
//! Each service keeps only what its protocol spells differently.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::Instrument;

use crate::api::error::GatewayError;
use crate::serving::convert::BadRequest;
use crate::serving::gateway::Gateway;
use crate::serving::request::MAX_REQUEST_ID_BYTES;

/// How much earlier than the client's deadline the gateway gives up. tonic's
/// own timeout layer answers CANCELLED at the deadline itself; answering a
/// little before it makes the client see DEADLINE_EXCEEDED, as gRPC intends.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The metadata that carries the sticky routing key when the request's own
/// field does not.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";

/// Runs `handle` inside the request's span (W3C parent from the metadata)
/// and records the status it answered on the span (CANCELLED if dropped
/// unanswered). A combinator, not an
/// `async fn`: the handler's future is stored once, as before (an `async fn`
/// would keep the request a second time in the boxed future tonic makes).
pub fn in_request_span<Req, Resp, Fut>(
    request: Request<Req>,
    method: &'static str,
    handle: impl FnOnce(Request<Req>) -> Fut,
) -> impl Future<Output = Result<Resp, Status>>
where
    Fut: Future<Output = Result<Resp, Status>>,
{
    let span = crate::telemetry::otel::request_span(request.metadata(), method);
    let recorder = crate::telemetry::otel::StatusRecorder::new(span.clone());
    handle(request).instrument(span).map(move |result| {
        recorder.finish(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        result
    })
}

/// Parses gRPC's `grpc-timeout` header ("100m", "5S", ...).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a request carries, if any.
pub fn deadline_of(metadata: &MetadataMap) -> Option<Instant> {
    let timeout = metadata.get("grpc-timeout")?.to_str().ok().and_then(parse_grpc_timeout)?;
    Some(Instant::now() + timeout.saturating_sub(DEADLINE_MARGIN))
}

/// The request id to use: the client's, or a new one.
pub fn request_id_or_new(id: String) -> Result<String, BadRequest> {
    if id.is_empty() {
        return Ok(uuid::Uuid::new_v4().simple().to_string());
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(BadRequest(format!(
            "request_id is {} bytes, at most {MAX_REQUEST_ID_BYTES} allowed",
            id.len()
        )));
    }
    Ok(id)
}

/// The routing key in the `x-routing-key` metadata, if any. Read before the
/// request is taken apart.
pub fn header_routing_key(metadata: &MetadataMap) -> Option<String> {
    metadata.get(ROUTING_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The sticky routing key: the request's own (non-empty) field, else the
/// header's.
pub fn routing_key(field: Option<String>, header: Option<String>) -> Option<String> {
    field.filter(|k| !k.is_empty()).or(header)
}

/// Counts a request refused at the edge (while decoding, before the
/// gateway's own checks) in `modelgate_requests_rejected_total`, labelled
/// with the model only when it is served, and hands the error back.
pub fn rejected(gateway: &Gateway, model: &str, e: GatewayError) -> GatewayError {
    gateway.metrics().rejected(gateway.serves(model).then_some(model), e.code());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id_or_new(String::new()).unwrap().len(), 32);
        assert_eq!(request_id_or_new("abc".into()).unwrap(), "abc");
        assert!(request_id_or_new("x".repeat(300)).is_err());
    }

    #[test]
    fn the_field_wins_over_the_header_unless_empty() {
        let h = Some("from-header".to_string());
        assert_eq!(routing_key(Some("k".into()), h.clone()).as_deref(), Some("k"));
        assert_eq!(routing_key(Some(String::new()), h.clone()), h);
        assert_eq!(routing_key(None, h.clone()), h);
        assert_eq!(routing_key(None, None), None);
    }
}
