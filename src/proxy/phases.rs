//! The [`ProxyHttp`] phases of [`Gate`]: they run [`Gate::decide`] and carry its outcome
//! through Pingora (the upstream peer and its timeouts, header hygiene on the way up, the
//! session cookie on the way down, linkgate's own answer when proxying fails, the access
//! log and the request metrics). None of them decides who is admitted.

use std::net::IpAddr;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;

use super::{access, Decision, Gate, InFlight, Outcome, RequestCtx, FORWARD_LABEL};
use crate::passport::Field;
use crate::policy::LinkStatus;
use crate::respond::{self, Refusal};

/// How many request body bytes a request streams upstream before its task lets the other
/// tasks of its thread run. Tokio's cooperative budget alone let a 1 GiB upload (1.2 GB/s on
/// loopback) hold its thread for milliseconds at a time: in `bench/faults floods`, pinned to
/// one CPU, the cached sessions served beside it had their p99 go from 2.6 to 9.1 ms. A
/// yield every 256 KiB is ~0.2 ms of copying at that rate, and a few hundred nanoseconds.
const BODY_YIELD_BYTES: usize = 256 * 1024;

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            _inflight: InFlight::new(&self.app.inflight),
            started: Instant::now(),
            decision: Decision::Undecided,
            route: None,
            peer: None,
            peer_trusted: false,
            passport: None,
            link_status: LinkStatus::NotInPlay,
            host: None,
            upstream_target: None,
            policy: crate::policy::GLOBAL,
            assertion: None,
            body_since_yield: 0,
        }
    }

    /// Before anything else: an idle keep-alive connection waits `server.keepalive_timeout`
    /// for its next request (Pingora would wait forever after the first request), unless
    /// the client asked for no keep-alive; each write to the client waits
    /// `server.send_timeout` at most.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.app.config.server.keepalive_secs()));
        }
        // Pingora sets no downstream write timeout: a client that stopped reading held its
        // response, and the upstream connection behind it, for as long as it stayed.
        session.set_write_timeout(Some(self.app.config.server.send_timeout));
        Ok(())
    }

    /// Runs the decision; a reply is written here and ends the request (`Ok(true)`), a
    /// forward continues to `upstream_peer` (`Ok(false)`).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.peer = peer_ip(session);
        ctx.peer_trusted = self.app.hygiene.is_trusted(ctx.peer);
        match self.decide(session, ctx).await {
            Outcome::Forward => Ok(false),
            Outcome::Reply(reply) => {
                self.close_if_draining(session);
                reply.send(session).await?;
                Ok(true)
            }
        }
    }

    /// The peer of the route chosen in `request_filter`, with the route's timeouts. An
    /// upgraded (WebSocket) connection gets the route's idle timeout instead of the read
    /// timeout, so a quiet socket is not cut after one read timeout.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .and_then(|i| self.app.router.get(i))
            .ok_or_else(|| Error::explain(InternalError, "no route chosen before upstream_peer"))?;
        let mut peer = HttpPeer::new(route.addr, route.tls, route.sni.clone());
        peer.options.connection_timeout = Some(route.connect_timeout);
        peer.options.total_connection_timeout = Some(route.connect_timeout);
        if session.is_upgrade_req() && route.websockets {
            peer.options.read_timeout = Some(route.websocket_idle_timeout);
            peer.options.idle_timeout = Some(route.websocket_idle_timeout);
        } else {
            peer.options.read_timeout = Some(route.read_timeout);
            peer.options.write_timeout = Some(route.read_timeout);
        }
        Ok(Box::new(peer))
    }

    /// Counts whether the upstream connection came from the keep-alive pool.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        let metrics = &self.app.metrics;
        if reused {
            metrics.upstream_reused.inc();
        } else {
            metrics.upstream_new.inc();
        }
        Ok(())
    }

    /// Header hygiene on the request the upstream will see.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let hygiene = &self.app.hygiene;
        let stripped = hygiene.strip(upstream, ctx.peer_trusted);
        if !stripped.is_empty() {
            self.app
                .metrics
                .stripped_headers
                .inc_by(stripped.len() as u64);
            tracing::warn!(
                peer = ?ctx.peer,
                headers = ?stripped,
                "client sent identity headers; removed before the upstream"
            );
        }
        hygiene.strip_own_cookies(upstream)?;
        super::headers::normalize_framing(upstream)?;
        let websockets_off = ctx
            .route
            .and_then(|i| self.app.router.get(i))
            .is_some_and(|r| !r.websockets);
        if websockets_off && session.is_upgrade_req() {
            upstream.remove_header(&http::header::UPGRADE);
            upstream.remove_header(&http::header::CONNECTION);
        }
        let scheme = if self.app.config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        hygiene.set_forwarded(
            upstream,
            ctx.peer,
            scheme,
            ctx.host.as_deref(),
            ctx.peer_trusted,
        )?;
        if let Some(passport) = &ctx.passport {
            let cased = &self.app.cased_names;
            let forward_user = self.app.config.headers.pass_user_headers;
            for (field, value) in passport.headers.fields(forward_user) {
                upstream.insert_header(cased.field(field), value)?;
            }
            if let Some(value) = self.app.link_status_value(ctx.link_status) {
                upstream.insert_header(cased.link_status(), value)?;
            }
            if let Some(authorization) = passport.headers.get(Field::Authorization) {
                upstream.insert_header(cased.field(Field::Authorization), authorization)?;
            }
        }
        if let (Some(assertion), Some(signer)) = (ctx.assertion.take(), &self.app.signer) {
            upstream.insert_header(signer.header().clone(), assertion)?;
        }
        // The upstream gets the target the decision read: the canonical spelling (and
        // origin-form) when the client's differed, under the route's base path.
        let base = ctx
            .route
            .and_then(|i| self.app.router.get(i))
            .map_or("", |r| r.base_path.as_str());
        if ctx.upstream_target.is_some() || !base.is_empty() {
            let target = match &ctx.upstream_target {
                Some(t) => t.as_str(),
                None => upstream.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            };
            let uri = format!("{base}{target}")
                .parse::<http::Uri>()
                .map_err(|e| Error::because(InternalError, "while setting the upstream path", e))?;
            upstream.set_uri(uri);
        }
        // And the host the decision read (lower case, no trailing dot).
        if let Some(host) = &ctx.host {
            let sent = upstream
                .headers
                .get(http::header::HOST)
                .map(|h| h.as_bytes());
            if sent != Some(host.as_bytes()) {
                upstream.insert_header(http::header::HOST, host.as_str())?;
            }
        }
        Ok(())
    }

    /// A large request body streams through without holding its thread: every
    /// [`BODY_YIELD_BYTES`] its task yields, so the requests beside it on that thread (a
    /// cached session costs microseconds) do not wait behind the copy.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_since_yield += chunk.len();
            if ctx.body_since_yield >= BODY_YIELD_BYTES {
                ctx.body_since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// Adds the session cookie of a session made during this request (from an account JWT);
    /// once the drain has begun, the response ends its connection (`Connection: close`).
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()>
    where
        Self::CTX: Send + Sync,
    {
        self.close_if_draining(session);
        if let Some(cookie) = ctx.passport.as_ref().and_then(|p| p.set_cookie()) {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    /// linkgate's own answer when proxying fails: 504 for timeouts, 502 for anything else
    /// the upstream did, as a page or JSON. Nothing is written if the response had started.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy
    where
        Self::CTX: Send + Sync,
    {
        let refusal = match e.etype() {
            ErrorType::HTTPStatus(code) if *code < 500 => Refusal::BadRequest(
                crate::pages::Text::raw(format!("rejected with status {code}")),
            ),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                Refusal::GatewayTimeout
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Refusal::BadGateway,
                ErrorSource::Downstream => {
                    // The client went away or sent garbage: nothing useful to say to it.
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                _ => Refusal::Internal,
            },
        };
        if matches!(refusal, Refusal::BadGateway | Refusal::GatewayTimeout) {
            let upstream = ctx
                .route
                .and_then(|i| self.app.router.get(i))
                .map_or("-", |r| r.name.as_str());
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[upstream, refusal.code()])
                .inc();
        }
        let code = refusal.status().as_u16();
        if session.response_written().is_none() {
            let html = respond::is_navigation(session.req_header());
            // Pingora closes the connection after a failed proxy attempt: say so
            // (`Connection: close`), so that a client does not send its next request into
            // a closing socket.
            session.set_keepalive(None);
            let pages = self.app.pages.for_request(session.req_header());
            if let Err(err) = refusal.reply(html, &pages).send(session).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The access log line and the request metrics.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX)
    where
        Self::CTX: Send + Sync,
    {
        let elapsed = ctx.started.elapsed();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let decision = if ctx.decision == Decision::Undecided && ctx.route.is_some() {
            FORWARD_LABEL
        } else {
            ctx.decision.as_str()
        };
        let metrics = &self.app.metrics;
        metrics.request_done(decision, elapsed.as_secs_f64());
        if !access::enabled() {
            return;
        }
        let req = session.req_header();
        let upstream = ctx
            .route
            .and_then(|i| self.app.router.get(i))
            .map_or("-", |r| r.name.as_str());
        access::log(&access::AccessLine {
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream,
            decision,
            peer: ctx.peer,
            error: e,
        });
    }
}
