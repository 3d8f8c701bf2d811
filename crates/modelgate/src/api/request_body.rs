//! Budgets for request bodies while they arrive.
//!
//! tonic buffers a message until all of it is in (its 5-byte prefix says how
//! long it will be), so a client that opens many streams, each sending part
//! of a large message and then nothing, makes the gateway hold all of it. The
//! [`BodyLimitLayer`] counts every body byte received and not yet released
//! against the connection's budget and the listener's, and gives each body a
//! time limit to arrive in full. A request over either budget, or too slow,
//! ends with a gRPC status naming the limit (RESOURCE_EXHAUSTED or
//! DEADLINE_EXCEEDED); its bytes are released when tonic drops the body.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::body::Body;

use crate::telemetry::metrics::Metrics;

/// Why a request body was stopped.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BodyLimitError {
    #[error(
        "request bodies arriving on this connection would hold {would_hold} bytes, over the per-connection budget of {limit} bytes (--connection-body-mib)"
    )]
    ConnectionBudget { would_hold: usize, limit: usize },
    #[error(
        "request bodies arriving on the {listener} listener would hold {would_hold} bytes, over its budget of {limit} bytes (--body-budget-mib)"
    )]
    ListenerBudget { listener: &'static str, would_hold: usize, limit: usize },
    #[error(
        "the request body did not arrive in full within {secs} s of its headers (--body-timeout-seconds)"
    )]
    Timeout { secs: f64 },
}

impl BodyLimitError {
    fn reason(&self) -> &'static str {
        match self {
            Self::ConnectionBudget { .. } => "connection_budget",
            Self::ListenerBudget { .. } => "listener_budget",
            Self::Timeout { .. } => "body_timeout",
        }
    }
}

/// One listener's body accounting.
pub struct BodyBudget {
    listener: &'static str,
    limit: usize,
    held: AtomicUsize,
    connection_limit: usize,
    timeout: Duration,
    /// Each open connection's count, by peer address (unique per listener
    /// while the connection lives): how a request finds its connection's.
    connections: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyBudget")
            .field("listener", &self.listener)
            .field("limit", &self.limit)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl BodyBudget {
    pub fn new(
        listener: &'static str,
        limit: usize,
        connection_limit: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            limit,
            held: AtomicUsize::new(0),
            connection_limit,
            timeout,
            connections: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Bytes held by bodies on this listener now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Starts accounting for a connection; ends when the guard is dropped.
    pub fn register(self: &Arc<Self>, peer: SocketAddr) -> ConnectionBodies {
        self.lock().insert(peer, Arc::new(AtomicUsize::new(0)));
        ConnectionBodies { budget: Arc::clone(self), peer }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicUsize>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The count of the connection a request came on.
    fn connection(&self, peer: Option<SocketAddr>) -> Arc<AtomicUsize> {
        // A request whose connection is unknown (not admitted through
        // `connection::incoming`) is counted alone, and still against the
        // listener's budget.
        peer.and_then(|p| self.lock().get(&p).cloned()).unwrap_or_default()
    }

    /// Takes `n` bytes from the connection's budget and the listener's.
    fn reserve(&self, connection: &AtomicUsize, n: usize) -> Result<(), BodyLimitError> {
        take(connection, n, self.connection_limit).map_err(|would_hold| {
            BodyLimitError::ConnectionBudget { would_hold, limit: self.connection_limit }
        })?;
        if let Err(would_hold) = take(&self.held, n, self.limit) {
            connection.fetch_sub(n, Ordering::Relaxed);
            return Err(BodyLimitError::ListenerBudget {
                listener: self.listener,
                would_hold,
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn release(&self, connection: &AtomicUsize, n: usize) {
        connection.fetch_sub(n, Ordering::Relaxed);
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Adds `n` to `count` unless that would pass `limit`; `Err` says what it
/// would have reached.
fn take(count: &AtomicUsize, n: usize, limit: usize) -> Result<(), usize> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(n).filter(|&would| would <= limit)
        })
        .map(|_| ())
        .map_err(|held| held.saturating_add(n))
}

/// A connection's entry in its listener's accounting, removed on drop.
pub struct ConnectionBodies {
    budget: Arc<BodyBudget>,
    peer: SocketAddr,
}

impl Drop for ConnectionBodies {
    fn drop(&mut self) {
        self.budget.lock().remove(&self.peer);
    }
}

/// Wraps every request body of a listener in a [`MeteredBody`].
#[derive(Clone)]
pub struct BodyLimitLayer {
    budget: Arc<BodyBudget>,
}

impl BodyLimitLayer {
    pub fn new(budget: Arc<BodyBudget>) -> Self {
        Self { budget }
    }
}

impl<S> tower::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit { inner, budget: Arc::clone(&self.budget) }
    }
}

#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    budget: Arc<BodyBudget>,
}

impl<S> tower::Service<http::Request<Body>> for BodyLimit<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let connection = self.budget.connection(peer_addr(req.extensions()));
        // NOTE: reflection and ModelStreamInfer are the client-streaming
        // RPCs: a grpcurl session or a Triton stream keeps its request body
        // open for as long as it likes. Their bodies have no time limit, and
        // each message's bytes are released once it is in full, so the
        // budgets bound the message still arriving, not the stream's total.
        let path = req.uri().path();
        let streaming = path.starts_with("/grpc.reflection.")
            || path == "/inference.GRPCInferenceService/ModelStreamInfer";
        let deadline = if streaming { BodyDeadline::None } else { BodyDeadline::after(self.budget.timeout) };
        let framing = streaming.then(Framing::default);
        let budget = Arc::clone(&self.budget);
        self.inner.call(req.map(|inner| {
            Body::new(MeteredBody { inner, budget, connection, held: 0, deadline, framing, failed: false })
        }))
    }
}

/// A request body whose bytes count against the budgets until it is dropped,
/// and which fails once its deadline passes before its end.
struct MeteredBody {
    inner: Body,
    budget: Arc<BodyBudget>,
    connection: Arc<AtomicUsize>,
    held: usize,
    /// `None` once the body is complete, or for streams.
    deadline: BodyDeadline,
    /// For a streaming call: where it is in gRPC's message framing.
    framing: Option<Framing>,
    failed: bool,
}

/// A request body's time limit. Its timer is made only when the body has to
/// wait for bytes: a unary request's body usually arrives with its headers,
/// and then no timer is allocated or registered at all.
enum BodyDeadline {
    /// No limit: a stream, or a body that is complete or failed.
    None,
    /// The body must be in full by then; no timer yet.
    At(tokio::time::Instant),
    /// The body is waiting for bytes, with its timer.
    Armed(Pin<Box<tokio::time::Sleep>>),
}

impl BodyDeadline {
    /// `limit` from now. A limit past what an `Instant` can hold is no
    /// limit, as a tokio sleep that long would be.
    fn after(limit: Duration) -> Self {
        tokio::time::Instant::now().checked_add(limit).map_or(Self::None, Self::At)
    }

    /// Whether the limit has passed; arms the timer (so `cx` is woken when
    /// it passes) the first time the body waits.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Self::At(at) = *self {
            *self = Self::Armed(Box::pin(tokio::time::sleep_until(at)));
        }
        match self {
            Self::Armed(sleep) => sleep.as_mut().poll(cx).is_ready(),
            Self::None | Self::At(_) => false,
        }
    }
}

/// Where a request stream is in gRPC's framing (a flag byte, a 4-byte
/// big-endian length, the message), to tell when a message is in full.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come, once its prefix is in.
    remaining: usize,
    /// Bytes of the current message received, prefix included.
    received: usize,
}

impl Framing {
    /// Takes in `data`; returns the bytes of the messages it completed.
    fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut completed = 0;
        while !data.is_empty() {
            if self.prefix_len < self.prefix.len() {
                let take = (self.prefix.len() - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                (self.prefix_len, self.received, data) =
                    (self.prefix_len + take, self.received + take, &data[take..]);
                if self.prefix_len < self.prefix.len() {
                    break;
                }
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u32::from_be_bytes([a, b, c, d]) as usize;
            }
            let take = self.remaining.min(data.len());
            (self.remaining, self.received, data) =
                (self.remaining - take, self.received + take, &data[take..]);
            if self.remaining == 0 {
                completed += std::mem::take(&mut self.received);
                self.prefix_len = 0;
            }
        }
        completed
    }
}

impl MeteredBody {
    fn fail(&mut self, e: BodyLimitError) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.failed = true;
        self.deadline = BodyDeadline::None;
        self.budget.metrics.request_body_refused(self.budget.listener, e.reason());
        Poll::Ready(Some(Err(tonic::Status::from(e))))
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len();
                    if let Err(e) = this.budget.reserve(&this.connection, n) {
                        return this.fail(e);
                    }
                    this.held += n;
                    if let Some(framing) = &mut this.framing {
                        let completed = framing.feed(data);
                        this.budget.release(&this.connection, completed);
                        this.held -= completed;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.deadline = BodyDeadline::None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                let expired = this.deadline.expired(cx);
                if expired {
                    let secs = this.budget.timeout.as_secs_f64();
                    return this.fail(BodyLimitError::Timeout { secs });
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.budget.release(&self.connection, self.held);
    }
}

/// The peer address tonic recorded for a request, plaintext or TLS.
pub fn peer_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions.get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr).or_else(|| {
        extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn budget(limit: usize, connection_limit: usize) -> Arc<BodyBudget> {
        BodyBudget::new("predict", limit, connection_limit, Duration::from_secs(60), Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn a_streaming_body_holds_only_the_message_still_arriving() {
        let b = budget(1 << 20, 1 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        let mut body = MeteredBody {
            inner: Body::new(channel_body(rx)),
            budget: Arc::clone(&b),
            connection: Arc::default(),
            held: 0,
            deadline: BodyDeadline::None,
            framing: Some(Framing::default()),
            failed: false,
        };
        // One whole message and the first 2 bytes of the next, the rest of
        // its prefix, then its one byte.
        let frames: [(&'static [u8], usize); 3] =
            [(&[0, 0, 0, 0, 2, 7, 7, 0, 0], 2), (&[0, 0, 1], 5), (&[9], 0)];
        for (bytes, held) in frames {
            tx.send(Ok(Frame::data(Bytes::from_static(bytes)))).await.unwrap();
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap();
            assert_eq!(b.held(), held, "after {bytes:?}");
        }
    }

    #[test]
    fn a_stream_releases_each_message_once_it_is_in_full() {
        let mut f = Framing::default();
        // A 3-byte message split across frames, then an empty one and the
        // start of a third in one frame.
        assert_eq!(f.feed(&[0, 0, 0]), 0);
        assert_eq!(f.feed(&[0, 3, 7]), 0);
        assert_eq!(f.feed(&[8, 9]), 8);
        assert_eq!(f.feed(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1]), 5);
        assert_eq!(f.feed(&[2]), 7);
    }

    #[test]
    fn bytes_count_against_the_connection_and_the_listener_until_released() {
        let b = budget(100, 60);
        let one = b.register("127.0.0.1:1".parse().unwrap());
        let two = b.register("127.0.0.1:2".parse().unwrap());
        let c1 = b.connection(Some(one.peer));
        let c2 = b.connection(Some(two.peer));
        b.reserve(&c1, 50).unwrap();
        assert_eq!(
            b.reserve(&c1, 20).unwrap_err(),
            BodyLimitError::ConnectionBudget { would_hold: 70, limit: 60 }
        );
        b.reserve(&c2, 40).unwrap();
        let e = b.reserve(&c2, 20).unwrap_err();
        assert_eq!(e, BodyLimitError::ListenerBudget { listener: "predict", would_hold: 110, limit: 100 });
        assert!(e.to_string().contains("--body-budget-mib"), "{e}");
        assert_eq!((c2.load(Ordering::Relaxed), b.held()), (40, 90), "a refused reservation takes nothing");
        b.release(&c1, 50);
        b.reserve(&c2, 20).unwrap();
        assert_eq!(b.held(), 60);
        drop(one);
        assert!(b.lock().get(&"127.0.0.1:1".parse().unwrap()).is_none(), "a closed connection is forgotten");
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_its_deadline_and_releases_its_bytes() {
        let b =
            BodyBudget::new("admin", 1 << 20, 1 << 20, Duration::from_millis(50), Arc::new(Metrics::new()));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        let inner = Body::new(channel_body(rx));
        let mut body = MeteredBody {
            inner,
            budget: Arc::clone(&b),
            connection: Arc::default(),
            held: 0,
            deadline: BodyDeadline::after(b.timeout),
            framing: None,
            failed: false,
        };
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello")))).await.unwrap();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.unwrap().is_ok());
        assert_eq!(b.held(), 5);
        let err = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(err.message().contains("--body-timeout-seconds"), "{}", err.message());
        drop(body);
        assert_eq!(b.held(), 0);
    }

    /// A body fed from a channel.
    fn channel_body(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>,
    ) -> impl http_body::Body<Data = Bytes, Error = tonic::Status> + Send + 'static {
        struct Chan(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>);
        impl http_body::Body for Chan {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
                self.0.poll_recv(cx)
            }
        }
        Chan(rx)
    }
}
