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
//! Only an ALPN `h2` connection's client preface is held to the head deadline first (Pingora
//! waits for it without a timeout); once in, an HTTP/2 connection with no stream in flight
//! is closed after `server.keepalive_timeout` (Pingora's `h2_idle_timeout`, set in
//! src/server.rs). What stays out of reach here: the idle time between keep-alive requests
//! is Pingora's keep-alive timeout (set per request by the proxy, see
//! `server.keepalive_timeout`), and the pace of request bodies is Pingora's per-read
//! timeout (HTTP/1; an HTTP/2 request body has none in Pingora 0.9.1).
//!
//! This file holds the limits ([`Limits`]) and what every connection shares ([`Shared`]).
//! The app wrapper is src/request_head/guarded.rs, the stream src/request_head/limited.rs,
//! what a response's first bytes say src/request_head/response.rs, and the Pingora stream
//! traits that [`HeadLimited`] passes through to its connection src/request_head/forward.rs.
//!
//! [`ServerApp`]: pingora::apps::ServerApp

mod forward;
mod guarded;
mod limited;
mod response;

use std::sync::Arc;
use std::time::Duration;

use pingora_prometheus::prometheus;

use crate::drain::Drain;

pub use guarded::Guarded;
pub use limited::HeadLimited;

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
