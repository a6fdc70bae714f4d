//! [`HeadLimited`]: the stream that watches each request head go by, and cuts a head that
//! is too large (`431`) or too slow (`408`, or nothing at all for a connection that never
//! sent a byte). It tells head from body by the empty line and the response's status
//! (response.rs), and stops watching once the connection is not HTTP/1 (a connection that
//! negotiated HTTP/2 by ALPN is held to the same deadline for its 24-byte preface first).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{Peek, Stream, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::response::{response_kind, websocket_head_len, Response};
use super::{Limits, Shared};
use crate::drain::WsCloser;

/// Where the connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head (since `started`).
    Head,
    /// The head is complete: reads are the body; a final response ends the exchange.
    Body,
    /// A final response was written: the next byte read starts the next head.
    Idle,
    /// HTTP/2 negotiated by ALPN, its 24-byte client preface not yet in: bounded by the
    /// head's deadline like a first request (Pingora's h2 handshake waits for the preface
    /// without a timeout), then [`Phase::Passthrough`].
    Preface,
    /// Not (or no longer) HTTP/1: no limits.
    Passthrough,
}

/// The length of the HTTP/2 client connection preface (`PRI * HTTP/2.0...`).
const H2_PREFACE_LEN: usize = 24;

/// A connection whose request heads are bounded in size and time.
pub struct HeadLimited {
    /// The connection, which the stream traits pass through to (forward.rs).
    pub(super) inner: Stream,
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
            Phase::Preface
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
            if self.phase == Phase::Head {
                // An HTTP/1 answer; an HTTP/2 client (a partial preface) is just closed.
                self.refuse(cx, TIMED_OUT);
            }
        } else {
            self.shared.no_request.inc();
        }
        tracing::debug!(bytes = self.head_bytes, "request head too slow; closing");
        self.phase = Phase::Passthrough;
        io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")
    }

    /// A read while the HTTP/2 preface is due: passed through, counted, and cut at the
    /// deadline.
    fn poll_preface(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.timed_out(cx)));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                self.head_bytes += n;
                if n == 0 || self.head_bytes >= H2_PREFACE_LEN {
                    self.phase = Phase::Passthrough;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
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
            Phase::Head | Phase::Preface if this.deadline.is_elapsed() => {
                return Poll::Ready(Err(this.timed_out(cx)))
            }
            Phase::Preface => return this.poll_preface(cx, buf),
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
        // Whether or not the head ended in these bytes: a head whose last byte is the one past
        // the limit is too large as well (checking only a head still open let it through).
        if this.head_bytes > this.limits.max_size {
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
