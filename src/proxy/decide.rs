//! [`Gate::decide`]: the request decision of README's "Requests, in order", and the ways it
//! ends: forwarded ([`Outcome::Forward`], with the identity and assertion the upstream
//! gets) or answered here ([`Outcome::Reply`]: an endpoint's answer, a redirect to sign in
//! or to connect, or a refusal).

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::prelude::*;
use time::OffsetDateTime;

use super::{identify, path, Decision, Gate, RequestCtx};
use crate::endpoints::{self, RequestInfo};
use crate::identify::{Found, Passport};
use crate::identity::Via;
use crate::policy::{self, Admission, LinkStatus};
use crate::respond::{self, Refusal, Reply};
use crate::session::Intent;

/// What [`Gate::decide`] concluded.
#[derive(Debug)]
pub enum Outcome {
    /// Send the request upstream.
    Forward,
    /// Answer it here.
    Reply(Reply),
}

// === impl Gate ===

impl Gate {
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
