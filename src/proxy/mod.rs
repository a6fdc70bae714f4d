//! The Pingora service: every request's decision, routing and header hygiene.
//!
//! [`Gate::decide`] (src/proxy/decide.rs) is the decision order of README's "Requests, in
//! order", once, top to bottom. Each step calls into the module that owns it; who is
//! admitted is the policy core's answer ([`crate::policy::decide`]), which it maps to a
//! reply. The [`ProxyHttp`](pingora::proxy::ProxyHttp) methods (src/proxy/phases.rs) only
//! wire that decision into Pingora's phases: they never decide anything themselves. This
//! file holds the service and the state one request carries through those phases.

pub mod access;
mod decide;
pub mod headers;
pub mod path;
mod phases;
pub mod route;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::app::App;
use crate::drain::Drain;
pub use crate::identify;
use crate::identify::Passport;
use crate::policy::LinkStatus;

pub use crate::decision::{Decision, FORWARD_LABEL};
pub use decide::Outcome;

/// Counts a request as in flight for as long as it lives.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request state shared between Pingora's phases.
#[derive(Debug)]
pub struct RequestCtx {
    _inflight: InFlight,
    started: Instant,
    decision: Decision,
    route: Option<usize>,
    peer: Option<IpAddr>,
    peer_trusted: bool,
    passport: Option<Arc<Passport>>,
    link_status: LinkStatus,
    /// The host the client asked for, canonical, read once in `decide` (routing,
    /// `X-Forwarded-Host`, the upstream's `Host`).
    host: Option<String>,
    /// The path and query the upstream gets when the client's spelling was not canonical.
    upstream_target: Option<String>,
    /// The route policy the decision read (src/policy/routes.rs).
    policy: usize,
    /// The signed identity assertion for the upstream (`[assertion]`).
    assertion: Option<HeaderValue>,
    /// Request body bytes passed upstream since this request's task last yielded its
    /// thread (see `request_body_filter` in phases.rs).
    body_since_yield: usize,
}

/// The linkgate proxy service.
#[derive(Debug, Clone)]
pub struct Gate {
    app: Arc<App>,
    /// The process's drain (src/drain.rs): a response written once it has begun says
    /// `Connection: close`.
    drain: Arc<Drain>,
}

// === impl Gate ===

impl Gate {
    /// A gate over shared state, answering under `drain`.
    pub fn new(app: Arc<App>, drain: Arc<Drain>) -> Self {
        Self { app, drain }
    }

    /// Once the drain has begun, the response about to be written ends its connection and
    /// says so (`Connection: close`): a request read before the drain and answered after it
    /// would otherwise say `keep-alive` while Pingora closes the connection behind it, and
    /// the client's next request on it would meet a reset.
    fn close_if_draining(&self, session: &mut pingora::proxy::Session) {
        if self.drain.has_begun() {
            session.set_keepalive(None);
        }
    }
}
