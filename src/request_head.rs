//! Limits on reading HTTP/1 request heads, below Pingora: how large a head may be and how
//! long a client may take to send it.
//!
//! Pingora 0.9.1 reads a request head into a buffer of up to 1 MiB (a constant), with a
//! timeout per read only (60 s on a new connection, none at all between the requests of a
//! keep-alive connection), and offers no hook before the head is complete. A client
//! dribbling a byte every few seconds could so hold a connection, and up to 1 MiB, for as
//! long as it liked. This module wraps every accepted connection ([`Guarded`], a
//! [`ServerApp`] around Pingora's proxy app) in a stream ([`HeadLimited`]) that watches the
//! bytes of each request head go by:
//!
//! - a head that grows past `max_header_size` is answered `431` and the connection closed;
//! - a head not complete within `header_read_timeout` (from the connection's start, or from
//!   the first byte of a further request on a keep-alive connection, as nginx's
//!   `client_header_timeout`) is answered `408` and the connection closed.
//!
//! The stream knows heads from bodies without parsing HTTP: a head ends at the first empty
//! line, the request's body follows until linkgate writes a final (non-`1xx`) response, and
//! the next byte read after that starts the next head. A `101 Switching Protocols`
//! (WebSocket), an HTTP/2 connection (h2c preface or ALPN `h2`) or anything else that is
//! not HTTP/1 is passed through untouched from then on: HTTP/2 has its own header limits.
//! What stays out of reach here: the idle time between keep-alive requests is Pingora's
//! keep-alive timeout (set per request by the proxy, see `server.keepalive_timeout`), and
//! the pace of request bodies is Pingora's per-read timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use pingora_prometheus::prometheus;

use crate::drain::{Drain, WsCloser};

/// The limits on one request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest head, in bytes (request line, headers and the empty line).
    pub max_size: usize,
    /// The time to send a whole head.
    pub read_timeout: Duration,
}

/// What every connection shares: the counters of cut connections
/// (`linkgate_refused_heads_total{reason}`) and the drain (src/drain.rs).
#[derive(Debug, Clone)]
pub struct Shared {
    /// `reason="too_large"`: a head past `max_header_size` (answered `431`).
    pub too_large: prometheus::IntCounter,
    /// `reason="too_slow"`: a head begun but not complete in time (answered `408`).
    pub too_slow: prometheus::IntCounter,
    /// `reason="no_request"`: a new connection that sent nothing in time (closed
    /// without an answer).
    pub no_request: prometheus::IntCounter,
    /// The process's drain.
    pub drain: Arc<Drain>,
}

/// A [`ServerApp`] whose connections are [`HeadLimited`].
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    shared: Arc<Shared>,
    /// Connections open now (the drain's linger ends early when there are none).
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open connection, counted while it lives.
struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<A> Guarded<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, limits: Limits, shared: Shared) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            shared: Arc::new(shared),
            open: Arc::default(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _open = Open(self.open.clone());
        let guarded: Stream = Box::new(HeadLimited::new(stream, self.limits, &self.shared));
        self.inner.process_new(guarded, shutdown).await
    }

    /// The listeners have stopped: WebSockets are told to close, keep-alive connections
    /// get one more request (answered `Connection: close`) during the linger, then the idle
    /// ones are closed (src/drain.rs). No connection open: no linger.
    async fn cleanup(&self) {
        let drain = &self.shared.drain;
        drain.begin();
        let until = Instant::now() + drain.linger();
        while Instant::now() < until && self.open.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.cleanup().await;
        drain.mark_idle_closed();
    }
}

/// Where the connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head (since `started`).
    Head,
    /// The head is complete: reads are the body; a final response ends the exchange.
    Body,
    /// A final response was written: the next byte read starts the next head.
    Idle,
    /// Not (or no longer) HTTP/1: no limits.
    Passthrough,
}

/// A connection whose request heads are bounded in size and time.
pub struct HeadLimited {
    inner: Stream,
    limits: Limits,
    phase: Phase,
    /// Bytes of the current head so far.
    head_bytes: usize,
    /// Whether the current head has had a byte other than CR or LF (empty lines before a
    /// request line are allowed and are not its end).
    head_started: bool,
    /// Whether the last byte of the head was a line feed (CRs aside): the next LF ends it.
    after_newline: bool,
    /// When the current head must be complete.
    deadline: Pin<Box<Sleep>>,
    /// Whether the response to the current request has started (its status line seen).
    response_seen: bool,
    shared: Arc<Shared>,
    /// A proxied WebSocket, closed with a close frame when the drain begins.
    ws: Option<Box<WsCloser>>,
}

impl std::fmt::Debug for HeadLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadLimited")
            .field("phase", &self.phase)
            .field("head_bytes", &self.head_bytes)
            .finish()
    }
}

/// The most a head read takes at once (on the stack).
const SCRATCH: usize = 8 * 1024;

const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 37\r\nconnection: close\r\n\r\nrequest header fields are too large\r\n";
const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 23\r\nconnection: close\r\n\r\nrequest head too slow\r\n";

// === impl HeadLimited ===

impl HeadLimited {
    /// Wraps a freshly accepted connection: its first head is due within the timeout.
    pub fn new(inner: Stream, limits: Limits, shared: &Arc<Shared>) -> Self {
        let phase = if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            Phase::Passthrough
        } else {
            Phase::Head
        };
        Self {
            inner,
            limits,
            phase,
            head_bytes: 0,
            head_started: false,
            after_newline: false,
            deadline: Box::pin(tokio::time::sleep(limits.read_timeout)),
            response_seen: false,
            shared: shared.clone(),
            ws: None,
        }
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.head_bytes = 0;
        self.head_started = false;
        self.after_newline = false;
        self.response_seen = false;
        let at = Instant::now() + self.limits.read_timeout;
        self.deadline.as_mut().reset(at);
    }

    /// Scans bytes of the head; returns how many of them belong to it (all of them unless
    /// the head ends inside `bytes`, when the phase becomes [`Phase::Body`]).
    fn scan(&mut self, bytes: &[u8]) -> usize {
        if self.head_bytes == 0 && !self.head_started && bytes.starts_with(b"PRI * HTTP/2") {
            // The h2c preface: HTTP/2 from here on.
            self.phase = Phase::Passthrough;
            return 0;
        }
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if self.after_newline && self.head_started => {
                    self.phase = Phase::Body;
                    return i + 1;
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => {
                    self.head_started = true;
                    self.after_newline = false;
                }
            }
        }
        bytes.len()
    }

    /// Best effort: one attempt to tell the client why the connection ends. Whatever
    /// happens, the caller fails the read.
    fn refuse(&mut self, cx: &mut Context<'_>, answer: &[u8]) {
        let _ = Pin::new(&mut self.inner).poll_write(cx, answer);
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> io::Error {
        if self.head_bytes > 0 {
            self.shared.too_slow.inc();
            self.refuse(cx, TIMED_OUT);
        } else {
            self.shared.no_request.inc();
        }
        tracing::debug!(bytes = self.head_bytes, "request head too slow; closing");
        self.phase = Phase::Passthrough;
        io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")
    }
}

impl AsyncRead for HeadLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(ws) = &mut this.ws {
            // Reads are polled all along a WebSocket's life: where the drain is noticed.
            let _ = ws.poll_close(cx, &mut this.inner);
        }
        match this.phase {
            Phase::Passthrough | Phase::Body => {
                return Pin::new(&mut this.inner).poll_read(cx, buf)
            }
            Phase::Head if this.deadline.is_elapsed() => {
                return Poll::Ready(Err(this.timed_out(cx)))
            }
            Phase::Head | Phase::Idle => {}
        }
        // Never hand Pingora more head than the limit (and one byte to know it was passed).
        let room = match this.phase {
            Phase::Head => (this.limits.max_size + 1).saturating_sub(this.head_bytes),
            _ => this.limits.max_size + 1,
        };
        let before = buf.filled().len();
        let direct = buf.remaining() <= room;
        // Pingora's head buffer is smaller than the room left: read into it and count the
        // new bytes in place (no copy). Otherwise through a small uninitialised buffer of
        // our own, so that no more than the room is read (no `unsafe`, and no zeroing:
        // zeroing 8 KiB per read was ~24k instructions a request).
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut limited = ReadBuf::uninit(&mut scratch[..room.min(buf.remaining()).min(SCRATCH)]);
        let polled = if direct {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            Pin::new(&mut this.inner).poll_read(cx, &mut limited)
        };
        match polled {
            Poll::Pending => {
                if this.phase == Phase::Head && this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.timed_out(cx)));
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let read: &[u8] = if direct {
            &buf.filled()[before..]
        } else {
            let read = limited.filled();
            buf.put_slice(read);
            read
        };
        let n = read.len();
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.phase == Phase::Idle {
            this.start_head();
        }
        let in_head = this.scan(read);
        this.head_bytes += in_head;
        if this.phase == Phase::Head && this.head_bytes > this.limits.max_size {
            this.shared.too_large.inc();
            this.refuse(cx, TOO_LARGE);
            tracing::debug!(bytes = this.head_bytes, "request head too large; closing");
            this.phase = Phase::Passthrough;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.phase == Phase::Body && !this.response_seen && !data.is_empty() {
            this.response_seen = true;
            match response_kind(data) {
                Response::Interim => this.response_seen = false,
                Response::Final => this.phase = Phase::Idle,
                Response::Upgrade => {
                    this.phase = Phase::Passthrough;
                    if let Some(head_len) = websocket_head_len(data) {
                        this.ws = Some(Box::new(WsCloser::new(&this.shared.drain, head_len)));
                    }
                }
                Response::NotHttp1 => this.phase = Phase::Passthrough,
            }
        }
        if let Some(ws) = &mut this.ws {
            if ws.poll_close(cx, &mut this.inner).is_pending() {
                return Poll::Pending;
            }
            if ws.closed() {
                // After the close frame the client gets nothing more.
                return Poll::Ready(Ok(data.len()));
            }
            let allowed = ws.allowed(data.len());
            let polled = Pin::new(&mut this.inner).poll_write(cx, &data[..allowed]);
            if let Poll::Ready(Ok(n)) = polled {
                ws.written(&data[..n]);
            }
            return polled;
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One buffer at a time, so that every write passes the status check above.
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => self.poll_write(cx, first),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

enum Response {
    /// `1xx` other than `101`: the final response follows.
    Interim,
    /// The final response.
    Final,
    /// `101 Switching Protocols`.
    Upgrade,
    /// Not an HTTP/1 status line.
    NotHttp1,
}

/// The length of a `101` response head (Pingora writes it in one piece) that switches to
/// WebSocket, or `None` for any other protocol.
fn websocket_head_len(data: &[u8]) -> Option<usize> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &data[..end];
    head.windows(b"websocket".len())
        .any(|w| w.eq_ignore_ascii_case(b"websocket"))
        .then_some(end)
}

/// What the first bytes of a response say (Pingora writes a status line in one piece).
fn response_kind(data: &[u8]) -> Response {
    let Some(status) = data
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| data.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
    else {
        return Response::NotHttp1;
    };
    match status {
        b"101" => Response::Upgrade,
        [b'1', _, _] => Response::Interim,
        _ => Response::Final,
    }
}

#[async_trait]
impl Shutdown for HeadLimited {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadLimited {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadLimited {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadLimited {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadLimited {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadLimited {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeadLimited {
    /// Pingora peeks at a new plain-HTTP connection's first 24 bytes (the h2c preface)
    /// before reading anything, without a timeout of its own: a client that sent fewer
    /// would hold the connection forever. The head's deadline bounds the peek too.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let deadline = self.deadline.deadline();
        // A request never starts with NUL: a first byte other than 0 after the timeout
        // means one had begun.
        buf.fill(0);
        match tokio::time::timeout_at(deadline, self.inner.try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => {
                if buf.first().is_some_and(|b| *b != 0) {
                    self.shared.too_slow.inc();
                    let answer = tokio::io::AsyncWriteExt::write_all(&mut self.inner, TIMED_OUT);
                    let _ = tokio::time::timeout(Duration::from_millis(100), answer).await;
                } else {
                    self.shared.no_request.inc();
                }
                tracing::debug!("request head too slow (peek); closing");
                self.phase = Phase::Passthrough;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the head timeout",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_told_apart() {
        assert!(matches!(
            response_kind(b"HTTP/1.1 200 OK\r\n"),
            Response::Final
        ));
        assert!(matches!(
            response_kind(b"HTTP/1.1 100 Continue\r\n"),
            Response::Interim
        ));
        assert!(matches!(
            response_kind(b"HTTP/1.1 101 Switching Protocols\r\n"),
            Response::Upgrade
        ));
        assert!(matches!(response_kind(b"\0\0\x12\x04"), Response::NotHttp1));
    }

    #[test]
    fn websocket_upgrades_are_told_from_others() {
        let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(websocket_head_len(ws), Some(ws.len()));
        assert_eq!(
            websocket_head_len(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
            None
        );
    }
}
