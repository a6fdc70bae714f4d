//! The Pingora service: every request's decision, routing and header hygiene.
//!
//! [`Gate::decide`] is the decision order of README's "Requests, in order", once, top to
//! bottom. Each step calls into the module that owns it; who is admitted is the policy
//! core's answer ([`crate::policy::decide`]), which this file maps to a reply. The
//! [`ProxyHttp`] methods below only wire that decision into Pingora's phases: they never
//! decide anything themselves.

pub mod access;
pub mod headers;
pub mod path;
pub mod route;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;

use time::OffsetDateTime;

use crate::app::App;
use crate::endpoints::{self, RequestInfo};
pub use crate::identify;
use crate::identify::{Found, Passport};
use crate::identity::Via;
use crate::passport::Field;
use crate::policy::{self, Admission, LinkStatus};
use crate::respond::{self, Refusal, Reply};
use crate::session::Intent;

pub use crate::decision::{Decision, FORWARD_LABEL};

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
}

/// What [`Gate::decide`] concluded.
#[derive(Debug)]
pub enum Outcome {
    /// Send the request upstream.
    Forward,
    /// Answer it here.
    Reply(Reply),
}

/// The linkgate proxy service.
#[derive(Debug, Clone)]
pub struct Gate {
    app: Arc<App>,
}

// === impl Gate ===

impl Gate {
    /// A gate over shared state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The request decision of README's "Requests, in order", in its order.
    pub async fn decide(&self, session: &mut Session, ctx: &mut RequestCtx) -> Outcome {
        let app = &self.app;
        let req = session.req_header();
        // 0. The target and the host, once: the decision reads them and the upstream gets
        // exactly them (src/proxy/path.rs says why).
        let target = match path::parse(req.raw_path(), app.config.server.encoded_slashes) {
            Ok(target) => target,
            Err(refused) => {
                return self.refuse_target(ctx, refused, respond::is_navigation(req), req)
            }
        };
        let hosts = req.headers.get_all(http::header::HOST).iter();
        let authority = target
            .authority
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        ctx.host = match path::host(hosts.map(|h| h.as_bytes()), authority) {
            Ok(host) => host,
            Err(refused) => {
                return self.refuse_target(ctx, refused, respond::is_navigation(req), req)
            }
        };
        ctx.upstream_target = target.upstream.clone();
        let path = target.decision;

        // 1. linkgate's own endpoints.
        if let Some(endpoint) = path::under_prefix(&path, app.prefix()) {
            ctx.decision = Decision::Endpoint;
            let info = RequestInfo {
                peer_trusted: ctx.peer_trusted,
                local: None,
            };
            let endpoint = endpoint.to_string();
            return Outcome::Reply(endpoints::handle(app, &endpoint, session, info).await);
        }

        let Some((index, _route)) = app.router.pick(ctx.host.as_deref(), &path) else {
            return self.refuse(ctx, Refusal::NoRoute, respond::is_navigation(req), req);
        };
        ctx.route = Some(index);
        // The route's policy: its own, or its rule with the longest prefix of the path.
        ctx.policy = app.policies.pick(index, &path);

        // 2. skip_auth_routes (global and the route's): matched against the normalised
        // path only.
        if app
            .policies
            .get(ctx.policy)
            .skip_auth_routes
            .iter()
            .any(|r| r.method.as_ref().is_none_or(|m| *m == req.method) && r.path.is_match(&path))
        {
            ctx.decision = Decision::SkipAuth;
            return Outcome::Forward;
        }

        // Whether a browser navigates here: only the answers below need it (not read before,
        // so that a skip-auth request does not pay for it).
        let navigation = respond::is_navigation(req);

        // 3. bearer token, 4. session cookie, 5. account JWT; then 6., 7. and the link rule,
        // decided by the policy core (src/policy/mod.rs) and answered here.
        let found = identify::identify(app, req).await;
        let rules = app.rules_under(app.policies.get(ctx.policy), OffsetDateTime::now_utc());
        let admission = policy::decide(found.proof(ctx.policy), navigation, rules);
        ctx.decision = admission.decision();
        let reply = match admission {
            Admission::Pass { link, .. } => {
                let Found::Passport(passport) = found else {
                    return self.refuse(ctx, Refusal::Internal, navigation, req);
                };
                return self.forward(ctx, passport, link, navigation, req);
            }
            Admission::Forbidden(forbidden) => Refusal::Forbidden {
                who: forbidden.who.clone(),
                reason: crate::pages::Text::raw(forbidden.reason.clone()),
            }
            .reply(navigation, &app.pages.for_request(req)),
            Admission::LinkPage => match &found {
                Found::Passport(passport) => {
                    crate::endpoints::link_page::link_required_page(app, passport, req).await
                }
                _ => return self.refuse(ctx, Refusal::Internal, navigation, req),
            },
            Admission::Connect => return self.connect(ctx, &found, req, navigation).await,
            Admission::LinkRequired => app.link_required().reply(false, &app.pages),
            Admission::SignIn => {
                let rd = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
                Reply::redirect(&app.start_url(rd, Intent::Login))
            }
            Admission::Unauthenticated { page } => {
                Refusal::Unauthenticated.reply(page, &app.pages.for_request(req))
            }
            Admission::InvalidToken(refusal) => refusal.clone().reply(false, &app.pages),
            Admission::Unavailable(refusal) => refusal
                .clone()
                .reply(navigation, &app.pages.for_request(req)),
        };
        Outcome::Reply(match found.cookie(app) {
            Some(cookie) => reply.with_cookie(&cookie),
            None => reply,
        })
    }

    /// An admitted request: its identity assertion (when `[assertion]` is set), then on to
    /// the upstream with its passport and link status.
    fn forward(
        &self,
        ctx: &mut RequestCtx,
        passport: Arc<Passport>,
        link: LinkStatus,
        navigation: bool,
        req: &RequestHeader,
    ) -> Outcome {
        if let (Some(signer), Some(claims)) = (&self.app.signer, passport.claims()) {
            let route = ctx.route.unwrap_or(0);
            match signer.assertion(claims, route, link.label()) {
                Ok(value) => ctx.assertion = Some(value),
                Err(e) => {
                    tracing::warn!(error = %e, "no identity assertion; refusing to forward");
                    let refusal = match e {
                        crate::assertion::AssertionError::NoKey => Refusal::StoreUnavailable,
                        crate::assertion::AssertionError::Sign(_) => Refusal::Internal,
                    };
                    return self.refuse(ctx, refusal, navigation, req);
                }
            }
        }
        ctx.link_status = link;
        ctx.passport = Some(passport);
        Outcome::Forward
    }

    /// Method 1: a browser whose cloud account is not linked goes to the Magento.com sign-in
    /// to connect. Connecting needs a session (the callback links the session's account):
    /// one proven by the platform's JWT alone gets one now, for this navigation only.
    async fn connect(
        &self,
        ctx: &mut RequestCtx,
        found: &Found,
        req: &RequestHeader,
        navigation: bool,
    ) -> Outcome {
        let app = &self.app;
        let rd = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let reply = Reply::redirect(&app.start_url(rd, Intent::Connect));
        let Found::Passport(passport) = found else {
            return self.refuse(ctx, Refusal::Internal, navigation, req);
        };
        let cookie = if passport.via != Via::AccountJwt {
            passport.set_cookie().map(str::to_string)
        } else {
            match identify::session_from_jwt(app, req).await {
                Ok(Some((id, _))) => app.sessions.as_ref().map(|s| s.session_cookie(&id)),
                Ok(None) => passport.set_cookie().map(str::to_string),
                Err(refusal) => return self.refuse(ctx, refusal, navigation, req),
            }
        };
        Outcome::Reply(match cookie {
            Some(cookie) => reply.with_cookie(&cookie),
            None => reply,
        })
    }

    /// A target or host with more than one reading: 400, and a log line for the operator.
    fn refuse_target(
        &self,
        ctx: &mut RequestCtx,
        refused: path::Refused,
        html: bool,
        req: &RequestHeader,
    ) -> Outcome {
        tracing::info!(peer = ?ctx.peer, reason = refused.reason(), "refused an ambiguous request target");
        self.app
            .metrics
            .refused_targets
            .with_label_values(&[refused.code()])
            .inc();
        let reason = crate::pages::Text::raw(refused.reason());
        self.refuse(ctx, Refusal::BadRequest(reason), html, req)
    }

    /// A refusal answered here: a page in the request's language, or JSON.
    fn refuse(
        &self,
        ctx: &mut RequestCtx,
        refusal: Refusal,
        html: bool,
        req: &RequestHeader,
    ) -> Outcome {
        ctx.decision = Decision::Refused;
        Outcome::Reply(refusal.reply(html, &self.app.pages.for_request(req)))
    }
}

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
        }
    }

    /// Before anything else: an idle keep-alive connection waits `server.keepalive_timeout`
    /// for its next request (Pingora would wait forever after the first request), unless
    /// the client asked for no keep-alive.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if session.get_keepalive().is_some() {
            let idle = self.app.config.server.keepalive_timeout.as_secs().max(1);
            session.set_keepalive(Some(idle));
        }
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

    /// Adds the session cookie of a session made during this request (from an account JWT).
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()>
    where
        Self::CTX: Send + Sync,
    {
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
