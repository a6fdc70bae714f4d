//! Draining without resets: what a connection does once linkgate stops (`SIGTERM`) or hands
//! its sockets to a new process (`SIGQUIT`, the graceful upgrade).
//!
//! Pingora 0.9.1, when told to shut down, drops every keep-alive connection that is waiting
//! for its next request at once. A client that writes a request on such a connection in that
//! instant gets a reset (the request was never read), and the process exits as soon as no
//! request is in flight, closing the rest the same way. [`Drain`] changes the order:
//!
//! 1. the listeners stop accepting (Pingora);
//! 2. for a short *linger* (1 s, or half the grace period if that is shorter; over as soon
//!    as no connection is open) keep-alive connections stay open: the next request on each is served with `Connection: close`
//!    (Pingora marks every request read during the shutdown so; a request read before it and
//!    answered after it is marked by the gate, `Gate::close_if_draining`), and the client
//!    goes to a new connection, which the new process (or nobody) accepts;
//! 3. then the connections still idle are closed (Pingora's own cleanup), and the process
//!    exits once nothing is in flight.
//!
//! WebSockets never end on their own: when the drain begins, each one gets a close frame
//! (`1001 going away`) from linkgate at the next frame boundary of what the upstream sends;
//! what the upstream sends afterwards is dropped (a client must not get frames after a
//! close), the client's own close frame goes on to the upstream as usual, and the upstream's
//! answer ending the connection ends the request. [`WsCloser`] does this inside the
//! connection's stream (src/request_head/limited.rs).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::watch;

/// The longest linger for keep-alive connections once the drain has begun.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

/// The close frame sent to a WebSocket client when the drain begins: FIN + close, unmasked
/// (server to client), status 1001 (going away) and a reason.
pub const CLOSE_FRAME: &[u8] = b"\x88\x13\x03\xe9server restarting";

/// The process-wide drain state, shared by every connection.
#[derive(Debug)]
pub struct Drain {
    /// Wakes what waits for the drain (each WebSocket's closer).
    started: watch::Sender<bool>,
    /// The same fact for [`Drain::has_begun`], read on every response: one atomic load, not
    /// the channel's lock.
    begun: AtomicBool,
    linger: Duration,
    idle_closed: AtomicBool,
}

impl Drain {
    /// A drain whose linger is [`MAX_LINGER`] or half of `grace`, whichever is shorter.
    pub fn new(grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            started: watch::Sender::new(false),
            begun: AtomicBool::new(false),
            linger: MAX_LINGER.min(grace / 2),
            idle_closed: AtomicBool::new(false),
        })
    }

    /// How long keep-alive connections stay open once the drain has begun.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// The drain begins: WebSockets are told to close.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.started.send_replace(true);
    }

    /// Whether the drain has begun.
    pub fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// The linger is over and idle connections are closed: the process may exit once
    /// nothing is in flight.
    pub fn mark_idle_closed(&self) {
        self.idle_closed.store(true, Ordering::Release);
    }

    /// See [`Drain::mark_idle_closed`].
    pub fn idle_closed(&self) -> bool {
        self.idle_closed.load(Ordering::Acquire)
    }

    fn signal(&self) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let mut rx = self.started.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|begun| *begun).await;
        })
    }
}

/// Where the bytes written to a WebSocket client are in their frames (server frames:
/// 2–10 header bytes, no mask key from a server, but one is accepted).
#[derive(Debug, Default, Clone)]
struct Frames {
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame not yet written.
    left: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }

    /// Payload bytes until the end of the current frame, when inside a payload.
    fn payload_left(&self) -> Option<u64> {
        (self.have == 0 && self.left > 0).then_some(self.left)
    }

    fn head_len(&self) -> usize {
        let ext = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = (data.len() as u64).min(self.left);
                self.left -= n;
                data = &data[n as usize..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have >= 2 && self.have == self.head_len() {
                self.left = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0; 8])),
                    n => u64::from(n),
                };
                self.have = 0;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not draining.
    Open,
    /// Draining: the close frame goes out at the next frame boundary.
    Due,
    /// This many bytes of the close frame are written.
    Sending(usize),
    /// The close frame is out: whatever the upstream sends now is dropped.
    Sent,
}

/// The server side of one proxied WebSocket: sends the client a close frame when the drain
/// begins (see the module documentation).
pub struct WsCloser {
    frames: Frames,
    /// Bytes of the `101` response head still to be written before the frames start.
    head_left: usize,
    signal: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    state: State,
}

impl std::fmt::Debug for WsCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsCloser")
            .field("state", &self.state)
            .finish()
    }
}

impl WsCloser {
    /// For a connection whose `101` response head is `head_len` bytes long (the frames
    /// follow it).
    pub fn new(drain: &Drain, head_len: usize) -> Self {
        Self {
            frames: Frames::default(),
            head_left: head_len,
            signal: drain.signal(),
            state: State::Open,
        }
    }

    /// Whether the close frame went out (what the upstream writes now is dropped).
    pub fn closed(&self) -> bool {
        self.state == State::Sent
    }

    /// Notices the drain (registering the waker until it begins) and, at a frame
    /// boundary, writes the close frame. `Pending` only while the close frame is being
    /// written and the socket is full.
    pub fn poll_close<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        inner: &mut W,
    ) -> Poll<()> {
        if self.state == State::Open && self.signal.as_mut().poll(cx).is_ready() {
            self.state = State::Due;
        }
        if self.state == State::Due && self.head_left == 0 && self.frames.at_boundary() {
            self.state = State::Sending(0);
        }
        while let State::Sending(done) = self.state {
            match Pin::new(&mut *inner).poll_write(cx, &CLOSE_FRAME[done..]) {
                Poll::Ready(Ok(n)) if n > 0 && done + n < CLOSE_FRAME.len() => {
                    self.state = State::Sending(done + n)
                }
                Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => {
                    // Written, or the client is gone: nothing more goes to it either way.
                    let _ = Pin::new(&mut *inner).poll_flush(cx);
                    self.state = State::Sent;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// A write of upstream bytes: how many of `len` may go now (up to the end of the
    /// current frame while a close is due, so that it can follow at the boundary).
    pub fn allowed(&self, len: usize) -> usize {
        if self.head_left > 0 {
            return len.min(self.head_left);
        }
        match (self.state, self.frames.payload_left()) {
            (State::Due, Some(left)) => len.min(usize::try_from(left).unwrap_or(usize::MAX)),
            _ => len,
        }
    }

    /// Records bytes written to the client.
    pub fn written(&mut self, data: &[u8]) {
        let head = data.len().min(self.head_left);
        self.head_left -= head;
        self.frames.advance(&data[head..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_followed_across_writes() {
        let mut f = Frames::default();
        assert!(f.at_boundary());
        // A 5-byte text frame in two pieces.
        f.advance(b"\x81\x05he");
        assert_eq!(f.payload_left(), Some(3));
        f.advance(b"llo");
        assert!(f.at_boundary());
        // A 300-byte binary frame (16-bit length), its header split.
        f.advance(b"\x82\x7e");
        assert!(!f.at_boundary());
        assert_eq!(f.payload_left(), None);
        f.advance(&[0x01, 0x2c]);
        assert_eq!(f.payload_left(), Some(300));
        f.advance(&[0u8; 299]);
        assert_eq!(f.payload_left(), Some(1));
        // The end of one frame and a whole masked one in the same write.
        f.advance(b"x\x89\x82abcdXY");
        assert!(f.at_boundary());
        // A 64-bit length.
        f.advance(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(f.payload_left(), Some(65536));
    }

    #[test]
    fn the_close_frame_says_going_away() {
        assert_eq!(CLOSE_FRAME[0], 0x88);
        assert_eq!(usize::from(CLOSE_FRAME[1]), CLOSE_FRAME.len() - 2);
        assert_eq!(u16::from_be_bytes([CLOSE_FRAME[2], CLOSE_FRAME[3]]), 1001);
    }

    #[tokio::test]
    async fn a_due_close_waits_for_the_end_of_the_frame() {
        let drain = Drain::new(Duration::from_secs(10));
        assert_eq!(drain.linger(), MAX_LINGER);
        let mut ws = WsCloser::new(&drain, 4);
        let mut out: Vec<u8> = Vec::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // The head, then half a frame.
        assert_eq!(ws.allowed(10), 4);
        ws.written(b"\r\n\r\n");
        ws.written(b"\x81\x04ab");
        assert!(ws.poll_close(&mut cx, &mut out).is_ready());
        assert!(out.is_empty(), "nothing before the drain");
        drain.begin();
        assert!(ws.poll_close(&mut cx, &mut out).is_ready());
        assert!(out.is_empty(), "not inside a frame");
        assert_eq!(ws.allowed(100), 2, "the frame's end only");
        ws.written(b"cd");
        assert!(ws.poll_close(&mut cx, &mut out).is_ready());
        assert_eq!(out, CLOSE_FRAME);
        assert!(ws.closed());
    }
}
