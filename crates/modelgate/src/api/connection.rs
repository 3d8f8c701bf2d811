//! Admission of connections on the Predict and admin listeners.
//!
//! A socket costs a file descriptor and some memory from the moment it is
//! accepted, before it has said anything. So each listener caps its open
//! connections (the admin listener has its own cap, so a flood on Predict
//! never locks an operator out), gives a new connection a fixed time to finish
//! its TLS handshake and send the HTTP/2 preface and first SETTINGS frame in
//! full (a client trickling one byte every few seconds is closed like a silent
//! one), and backs off when accept fails for want of file descriptors instead
//! of spinning on the error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::api::request_body::{BodyBudget, ConnectionBodies};
use crate::telemetry::metrics::Metrics;

/// Flags for connections, HTTP/2 and request bodies, on both listeners.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Connections the Predict/KServe listener keeps open at once. Over it a
    /// new connection is accepted and closed at once (counted in
    /// modelgate_connections_refused_total). Lowered at start if the open-file
    /// limit cannot hold it.
    #[arg(long, env = "MODELGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections the admin listener keeps open at once: its own cap, so a
    /// flood on the Predict listener never locks out the admin API.
    #[arg(long, env = "MODELGATE_ADMIN_MAX_CONNECTIONS", default_value_t = 64)]
    pub admin_max_connections: usize,
    /// Seconds a new connection has to finish its TLS handshake (if any) and
    /// send the HTTP/2 connection preface and SETTINGS in full; closed otherwise.
    #[arg(long, env = "MODELGATE_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub handshake_timeout_seconds: f64,
    /// HTTP/2 streams (requests in flight) one connection may have open at
    /// once, advertised as SETTINGS_MAX_CONCURRENT_STREAMS; a stream over it is
    /// refused (RST_STREAM REFUSED_STREAM).
    #[arg(long, env = "MODELGATE_HTTP2_MAX_STREAMS", default_value_t = 256)]
    pub http2_max_streams: u32,
    /// Largest header block (request metadata) a stream may send, bytes.
    #[arg(long, env = "MODELGATE_HTTP2_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub http2_max_header_bytes: u32,
    /// Seconds between HTTP/2 keepalive pings; 0 turns them off.
    #[arg(long, env = "MODELGATE_HTTP2_KEEPALIVE_SECONDS", default_value_t = 60.0)]
    pub http2_keepalive_seconds: f64,
    /// Seconds a ping may go unanswered before the connection is closed.
    #[arg(long, env = "MODELGATE_HTTP2_KEEPALIVE_TIMEOUT_SECONDS", default_value_t = 20.0)]
    pub http2_keepalive_timeout_seconds: f64,
    /// MiB of request bodies one connection may hold while they arrive (bytes
    /// received, not yet decoded). A request that would go over gets
    /// RESOURCE_EXHAUSTED. At least --max-request-bytes.
    #[arg(long, env = "MODELGATE_CONNECTION_BODY_MIB", default_value_t = 128)]
    pub connection_body_mib: u64,
    /// MiB of request bodies all connections of one listener may hold while
    /// they arrive. A request that would go over gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "MODELGATE_BODY_BUDGET_MIB", default_value_t = 512)]
    pub body_budget_mib: u64,
    /// Seconds a request's body has to arrive in full after its headers; a
    /// slower one gets DEADLINE_EXCEEDED and its stream is ended.
    #[arg(long, env = "MODELGATE_BODY_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub body_timeout_seconds: f64,
}

/// What [`ConnectionArgs`] say, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub admin_max_connections: usize,
    pub handshake_timeout: Duration,
    pub http2_max_streams: u32,
    pub http2_max_header_bytes: u32,
    /// `None`: no keepalive pings.
    pub http2_keepalive: Option<Duration>,
    pub http2_keepalive_timeout: Duration,
    pub connection_body_bytes: usize,
    pub body_budget_bytes: usize,
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            admin_max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            http2_max_streams: 256,
            http2_max_header_bytes: 64 * 1024,
            http2_keepalive: Some(Duration::from_secs(60)),
            http2_keepalive_timeout: Duration::from_secs(20),
            connection_body_bytes: 128 << 20,
            body_budget_bytes: 512 << 20,
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// A duration flag: finite, positive (or zero where `zero_ok`), at most a day.
fn seconds(flag: &str, v: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    let ok = v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v <= 86_400.0;
    if !ok {
        let least = if zero_ok { "0" } else { "above 0" };
        anyhow::bail!("{flag} must be a number of seconds, {least} and at most 86400, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn mib(flag: &str, v: u64) -> anyhow::Result<usize> {
    if v == 0 {
        anyhow::bail!("{flag} must be at least 1 MiB");
    }
    v.checked_mul(1 << 20)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("{flag} is too large: {v} MiB"))
}

impl ConnectionLimits {
    /// Checks the flags; `max_request_bytes` is the largest message, which
    /// one connection's body budget must be able to hold.
    pub fn from_args(a: &ConnectionArgs, max_request_bytes: usize) -> anyhow::Result<Self> {
        if a.max_connections == 0 || a.admin_max_connections == 0 {
            anyhow::bail!("--max-connections and --admin-max-connections must be at least 1");
        }
        if a.http2_max_streams == 0 {
            anyhow::bail!("--http2-max-streams must be at least 1");
        }
        let keepalive = seconds("--http2-keepalive-seconds", a.http2_keepalive_seconds, true)?;
        let limits = Self {
            max_connections: a.max_connections,
            admin_max_connections: a.admin_max_connections,
            handshake_timeout: seconds("--handshake-timeout-seconds", a.handshake_timeout_seconds, false)?,
            http2_max_streams: a.http2_max_streams,
            http2_max_header_bytes: a.http2_max_header_bytes.max(1024),
            http2_keepalive: (!keepalive.is_zero()).then_some(keepalive),
            http2_keepalive_timeout: seconds(
                "--http2-keepalive-timeout-seconds",
                a.http2_keepalive_timeout_seconds,
                false,
            )?,
            connection_body_bytes: mib("--connection-body-mib", a.connection_body_mib)?,
            body_budget_bytes: mib("--body-budget-mib", a.body_budget_mib)?,
            body_timeout: seconds("--body-timeout-seconds", a.body_timeout_seconds, false)?,
        };
        limits.check(max_request_bytes)?;
        Ok(limits)
    }

    /// A request of the largest allowed size must fit in both body budgets,
    /// or it could never be served.
    pub fn check(&self, max_request_bytes: usize) -> anyhow::Result<()> {
        // The 5-byte gRPC prefix travels in the body too.
        let largest = max_request_bytes.saturating_add(5);
        if self.connection_body_bytes < largest || self.body_budget_bytes < self.connection_body_bytes {
            anyhow::bail!(
                "--connection-body-mib ({} MiB) must hold the largest request (--max-request-bytes {max_request_bytes}) and be at most --body-budget-mib ({} MiB)",
                self.connection_body_bytes >> 20,
                self.body_budget_bytes >> 20
            );
        }
        Ok(())
    }

    /// The tonic server builder with this HTTP/2 configuration.
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.http2_max_streams)
            .http2_max_header_list_size(self.http2_max_header_bytes)
            .http2_keepalive_interval(self.http2_keepalive)
            .http2_keepalive_timeout(Some(self.http2_keepalive_timeout))
    }
}

/// File descriptors kept free for everything but client connections: model
/// files, the state store, shadow records, etcd, the metrics listener.
const RESERVED_FILES: u64 = 128;

/// Raises the soft open-file limit to the hard one (the default soft limit
/// of 1024 is far below what a gateway with thousands of clients needs), and
/// returns the soft limit in force afterwards (`None`: unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit { current: before.maximum, maximum: before.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, soft = ?before.current, "cannot raise the open-file limit"),
        }
    }
    let after = getrlimit(Resource::Nofile);
    tracing::info!(soft = ?after.current, hard = ?after.maximum, "open-file limit");
    after.current
}

/// The caps each listener really gets: the Predict cap shrinks to what the
/// open-file limit can hold beside the admin cap and the descriptors already
/// open, so a flood of Predict connections cannot take the descriptors that
/// the admin listener and model rescans need. Returns `(predict, admin)`.
pub fn fit_to_open_files(limits: &ConnectionLimits, nofile: Option<u64>) -> (usize, usize) {
    let Some(nofile) = nofile else {
        return (limits.max_connections, limits.admin_max_connections);
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    let admin = limits.admin_max_connections as u64;
    let room = nofile.saturating_sub(open + RESERVED_FILES + admin).max(16);
    let predict = (limits.max_connections as u64).min(room);
    if predict < limits.max_connections as u64 {
        tracing::warn!(
            max_connections = limits.max_connections,
            lowered_to = predict,
            open_file_limit = nofile,
            "--max-connections lowered to fit the open-file limit; raise the hard limit (ulimit -Hn) to keep it"
        );
    }
    (usize::try_from(predict).unwrap_or(usize::MAX), limits.admin_max_connections)
}

/// One listener's admission: its name for logs and metrics, its connection
/// cap, and the budget its request bodies draw from.
pub struct Gate {
    listener: &'static str,
    slots: Arc<Semaphore>,
    handshake_timeout: Duration,
    tcp_keepalive: Option<Duration>,
    bodies: Arc<BodyBudget>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(
        listener: &'static str,
        max_connections: usize,
        handshake_timeout: Duration,
        tcp_keepalive: Option<Duration>,
        bodies: Arc<BodyBudget>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        metrics.connection_limit(listener, max_connections);
        Arc::new(Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            handshake_timeout,
            tcp_keepalive,
            bodies,
            metrics,
        })
    }
}

/// An accepted connection that finished its handshake and sent a valid
/// HTTP/2 preface: the bytes read to check it are replayed to the HTTP/2
/// server first. Holds its listener slot and its body accounting until it is
/// dropped, that is until the connection closes.
pub struct Admitted<S> {
    inner: S,
    head: Vec<u8>,
    read: usize,
    _slot: Slot,
    _bodies: ConnectionBodies,
}

/// A listener slot; returning it updates the open-connections gauge.
struct Slot {
    _permit: OwnedSemaphorePermit,
    listener: &'static str,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, listener: &'static str, metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened(listener);
        Self { _permit: permit, listener, metrics }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_ended(self.listener);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.read);
            buf.put_slice(&this.head[this.read..this.read + n]);
            this.read += n;
            if this.read == this.head.len() {
                this.head = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Admitted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A SETTINGS frame larger than this (64 settings) is not a real client's.
const MAX_SETTINGS_BYTES: usize = 6 * 64;

/// Reads the connection preface and the SETTINGS frame that must follow it;
/// returns the bytes read, to be replayed.
async fn read_preface<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut head = vec![0u8; PREFACE.len() + 9];
    stream.read_exact(&mut head).await?;
    if head[..PREFACE.len()] != PREFACE[..] {
        return Err(invalid("not an HTTP/2 connection preface"));
    }
    let frame = &head[PREFACE.len()..];
    let len = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
    let (kind, flags) = (frame[3], frame[4]);
    let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
    const SETTINGS: u8 = 0x4;
    const ACK: u8 = 0x1;
    if kind != SETTINGS || flags & ACK != 0 || stream_id != 0 || len % 6 != 0 || len > MAX_SETTINGS_BYTES {
        return Err(invalid("the preface is not followed by a SETTINGS frame"));
    }
    let start = head.len();
    head.resize(start + len, 0);
    stream.read_exact(&mut head[start..]).await?;
    Ok(head)
}

/// Whether an accept error means the process (or system) is out of
/// descriptors or memory: retrying at once would fail the same way.
fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// The longest pause after accept fails for want of descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` under `gate` and yields those whose
/// `handshake` (TLS, or nothing) and HTTP/2 preface finished within the
/// handshake timeout. Each handshake runs in its own task, so a slow client
/// never holds up the accept loop. The loop ends when the returned stream is
/// dropped.
pub fn incoming<S, H, F>(
    listener: TcpListener,
    gate: Arc<Gate>,
    handshake: H,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Admitted<S>>>
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    if !backoff.is_zero() {
                        tracing::info!(listener = gate.listener, "accepting connections again");
                        backoff = Duration::ZERO;
                    }
                    a
                }
                Err(e) if out_of_resources(&e) => {
                    // The pending connection stays in the backlog; retrying at
                    // once would fail the same way and spin a core.
                    if backoff.is_zero() {
                        tracing::warn!(listener = gate.listener, error = %e, "cannot accept connections: out of file descriptors or memory; backing off");
                    }
                    gate.metrics.connection_refused(gate.listener, "out_of_files");
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        () = tx.closed() => return,
                    }
                }
                Err(e) => {
                    // One connection's trouble (reset before accept and the like).
                    tracing::debug!(listener = gate.listener, error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&gate.slots).try_acquire_owned() else {
                // Accept and close at once: the client learns now, the
                // backlog does not fill with connections that wait for
                // nothing, and the loop does no more work than the client.
                gate.metrics.connection_refused(gate.listener, "limit");
                tracing::debug!(listener = gate.listener, %peer, "connection refused: at --max-connections");
                drop(stream);
                continue;
            };
            let slot = Slot::new(permit, gate.listener, Arc::clone(&gate.metrics));
            prepare(&stream, gate.tcp_keepalive);
            let handshake = handshake(stream);
            let tx = tx.clone();
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let admitted = tokio::time::timeout(gate.handshake_timeout, async {
                    let mut stream = handshake.await?;
                    let head = read_preface(&mut stream).await?;
                    Ok::<_, io::Error>((stream, head))
                })
                .await;
                match admitted {
                    Ok(Ok((inner, head))) => {
                        let conn = Admitted {
                            inner,
                            head,
                            read: 0,
                            _slot: slot,
                            _bodies: gate.bodies.register(peer),
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        gate.metrics.connection_closed(gate.listener, "bad_handshake");
                        tracing::debug!(listener = gate.listener, %peer, error = %e, "connection closed: bad handshake");
                    }
                    Err(_) => {
                        gate.metrics.connection_closed(gate.listener, "handshake_timeout");
                        tracing::debug!(listener = gate.listener, %peer, timeout_secs = gate.handshake_timeout.as_secs_f64(), "connection closed: no HTTP/2 preface within the handshake timeout");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// TCP_NODELAY (Nagle plus delayed ACKs would add ~40 ms to the tail) and
/// TCP keepalive, as tonic sets them on its own listeners.
fn prepare(stream: &TcpStream, keepalive: Option<Duration>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_and_settings_are_read_and_anything_else_is_refused() {
        let mut good = PREFACE.to_vec();
        good.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        let mut extra = good.clone();
        extra.extend_from_slice(b"next frame");
        let head = read_preface(&mut &extra[..]).await.unwrap();
        assert_eq!(head, good, "exactly the preface and the SETTINGS frame are consumed");

        let e = read_preface(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789"[..]).await.unwrap_err();
        assert!(e.to_string().contains("not an HTTP/2 connection preface"), "{e}");
        let mut ping = PREFACE.to_vec();
        ping.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let e = read_preface(&mut &ping[..]).await.unwrap_err();
        assert!(e.to_string().contains("SETTINGS"), "{e}");
        let e = read_preface(&mut &good[..20]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn limits_are_checked() {
        let args = |f: &dyn Fn(&mut ConnectionArgs)| {
            let mut a = ConnectionArgs {
                max_connections: 10_000,
                admin_max_connections: 64,
                handshake_timeout_seconds: 10.0,
                http2_max_streams: 256,
                http2_max_header_bytes: 64 * 1024,
                http2_keepalive_seconds: 60.0,
                http2_keepalive_timeout_seconds: 20.0,
                connection_body_mib: 128,
                body_budget_mib: 512,
                body_timeout_seconds: 60.0,
            };
            f(&mut a);
            ConnectionLimits::from_args(&a, 64 << 20)
        };
        assert_eq!(args(&|_| {}).unwrap(), ConnectionLimits::default());
        assert_eq!(args(&|a| a.http2_keepalive_seconds = 0.0).unwrap().http2_keepalive, None);
        for (bad, flag) in [
            (args(&|a| a.handshake_timeout_seconds = 1e300), "--handshake-timeout-seconds"),
            (args(&|a| a.body_timeout_seconds = 0.0), "--body-timeout-seconds"),
            (args(&|a| a.connection_body_mib = 32), "--connection-body-mib"),
            (args(&|a| a.body_budget_mib = 64), "--connection-body-mib"),
            (args(&|a| a.max_connections = 0), "--max-connections"),
            (args(&|a| a.http2_max_streams = 0), "--http2-max-streams"),
        ] {
            let e = bad.unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn the_predict_cap_fits_the_open_file_limit() {
        let limits =
            ConnectionLimits { max_connections: 10_000, admin_max_connections: 64, ..Default::default() };
        assert_eq!(fit_to_open_files(&limits, None), (10_000, 64));
        let (predict, admin) = fit_to_open_files(&limits, Some(1024));
        assert_eq!(admin, 64);
        assert!(predict < 1024 - 64 - RESERVED_FILES as usize, "{predict}");
        assert!(fit_to_open_files(&limits, Some(10)).0 >= 16);
    }
}
