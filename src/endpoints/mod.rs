//! linkgate's own endpoints under `server.proxy_prefix`, one file per flow:
//!
//! - [`sign_in`]: `start`, `callback` (Magento.com);
//! - [`account_sign_in`]: `account/start`, `account/callback` (`[account] source = "oauth2"`);
//! - [`link_page`]: `link`, the account page, and the link-required page of the proxy;
//! - [`link`]: `link/connect`, `link/disconnect`, and making a link;
//! - [`problem`]: `link/problem`, a conflict or a failed sign-in at its own URL;
//! - [`sign_out`]: `sign_out` (`GET` asks, `POST` signs out), `signed_out`, and
//!   [`sign_out_chain`], the providers' logouts one after the other;
//! - [`userinfo`], [`forward_auth`] (`auth`): who is signed in, as JSON or as headers;
//! - [`request`]: what they share (query, same-site forms, the gate's base URL, the session).
//!
//! [`ENDPOINTS`] is the one table of paths, methods and handlers. Each handler reads the
//! request, talks to the store and the providers, and returns one [`Reply`]. A handler never
//! leaves anything half-written: a session is stored only once the tokens verified, a link
//! in one atomic operation; a failure on the way is a page (or JSON) that says what to do
//! next.

pub mod account_sign_in;
pub mod forward_auth;
pub mod link;
pub mod link_page;
pub mod problem;
pub mod request;
pub mod sign_in;
pub mod sign_out;
pub mod sign_out_chain;
pub mod userinfo;

use pingora::proxy::Session;

use crate::app::App;
use crate::pages::Text;
use crate::respond::{self, Refusal, Reply};
pub use request::{base_url, query_param};

/// What the handlers need to know about the request beyond its header.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// Whether the peer is a trusted proxy (its `X-Forwarded-Proto`/`-Host` count).
    pub peer_trusted: bool,
    /// The address the connection came in on (the listener's own address), when known.
    pub local: Option<std::net::SocketAddr>,
}

/// The methods an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `GET` (and `HEAD`).
    Get,
    /// `POST`, with a same-site form.
    Post,
    /// `GET`, `HEAD` or `POST` (forward-auth: front proxies differ).
    Any,
}

impl Methods {
    fn allow(self, method: &http::Method) -> bool {
        let get = method == http::Method::GET || method == http::Method::HEAD;
        let post = method == http::Method::POST;
        match self {
            Methods::Get => get,
            Methods::Post => post,
            Methods::Any => get || post,
        }
    }
}

/// Which handler answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// [`sign_in::start`].
    Start,
    /// [`sign_in::callback`].
    Callback,
    /// [`account_sign_in::account_start`].
    AccountStart,
    /// [`account_sign_in::account_callback`].
    AccountCallback,
    /// [`link_page::link_page`].
    LinkPage,
    /// [`problem::page`].
    Problem,
    /// [`link::connect`].
    Connect,
    /// [`link::disconnect`].
    Disconnect,
    /// [`sign_out::sign_out_page`].
    SignOutPage,
    /// [`sign_out::sign_out`].
    SignOut,
    /// [`sign_out::signed_out`].
    SignedOut,
    /// [`userinfo::userinfo`].
    Userinfo,
    /// [`forward_auth::forward_auth`].
    ForwardAuth,
    /// The identity assertion's public keys.
    Jwks,
}

/// Every endpoint: its path below the prefix, its methods, its handler. A path listed with
/// none of the request's methods answers `405`; a path not listed, `404`.
pub const ENDPOINTS: &[(&str, Methods, Handler)] = &[
    ("start", Methods::Get, Handler::Start),
    ("callback", Methods::Get, Handler::Callback),
    ("account/start", Methods::Get, Handler::AccountStart),
    ("account/callback", Methods::Get, Handler::AccountCallback),
    ("link", Methods::Get, Handler::LinkPage),
    ("link/problem", Methods::Get, Handler::Problem),
    ("link/connect", Methods::Post, Handler::Connect),
    ("link/disconnect", Methods::Post, Handler::Disconnect),
    ("sign_out", Methods::Get, Handler::SignOutPage),
    ("sign_out", Methods::Post, Handler::SignOut),
    ("signed_out", Methods::Get, Handler::SignedOut),
    ("userinfo", Methods::Get, Handler::Userinfo),
    ("auth", Methods::Any, Handler::ForwardAuth),
    (".well-known/jwks.json", Methods::Get, Handler::Jwks),
];

/// The handler of endpoint `name` for `method`: `Err` is `404` or `405`.
pub fn route(name: &str, method: &http::Method) -> Result<Handler, Refusal> {
    let mut listed = false;
    for (path, methods, handler) in ENDPOINTS {
        if *path == name {
            listed = true;
            if methods.allow(method) {
                return Ok(*handler);
            }
        }
    }
    Err(if listed {
        Refusal::MethodNotAllowed
    } else {
        Refusal::NotFound
    })
}

/// Answers endpoint `name` (the path below the prefix).
pub async fn handle(app: &App, name: &str, session: &mut Session, info: RequestInfo) -> Reply {
    // No DNS name is longer: refused before the header is copied or read any further.
    let host_len = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .map_or(0, |h| h.len());
    if host_len > request::MAX_HOST {
        let html = respond::prefers_html(session.req_header());
        let pages = app.pages.for_request(session.req_header());
        return Refusal::BadRequest(Text::new("bad_request.host_too_long")).reply(html, &pages);
    }
    let req = session.req_header().clone();
    let html = respond::is_navigation(&req) || respond::prefers_html(&req);
    let info = RequestInfo {
        local: info
            .local
            .or_else(|| session.server_addr().and_then(|a| a.as_inet()).copied()),
        ..info
    };
    let handler = route(name, &req.method);
    let callback = matches!(handler, Ok(Handler::Callback | Handler::AccountCallback));
    let result = match handler {
        Err(refusal) => Err(refusal),
        // What each flow needs is found here, once: a flow the deployment does not offer
        // is not found.
        Ok(Handler::Start) => match app.sign_in() {
            Some(sso) => sign_in::start(app, sso, &req, info).await,
            None => Err(Refusal::NotFound),
        },
        Ok(Handler::Callback) => match app.sign_in() {
            Some(sso) => sign_in::callback(app, sso, &req).await,
            None => Err(Refusal::NotFound),
        },
        Ok(Handler::AccountStart) => match app.account_sign_in() {
            Some((accounts, _)) => account_sign_in::account_start(app, accounts, &req, info).await,
            None => Err(Refusal::NotFound),
        },
        Ok(Handler::AccountCallback) => match app.account_sign_in() {
            Some((accounts, registry)) => {
                account_sign_in::account_callback(app, accounts, registry, &req).await
            }
            None => Err(Refusal::NotFound),
        },
        Ok(Handler::LinkPage) => link_page::link_page(app, &req).await,
        Ok(Handler::Problem) => Ok(problem::page(app, &req)),
        Ok(Handler::Connect) => {
            match (&app.sessions, request::form(session, &req, app, info).await) {
                (_, Err(r)) => Err(r),
                (None, _) => Err(Refusal::NotFound),
                (Some(sessions), Ok(f)) => link::connect(app, sessions, &req, &f).await,
            }
        }
        Ok(Handler::Disconnect) => {
            let form = request::form(session, &req, app, info).await;
            match (&app.sessions, app.linking.registry(), form) {
                (_, _, Err(r)) => Err(r),
                (Some(sessions), Some(registry), Ok(f)) => {
                    link::disconnect(app, sessions, registry, &req, &f).await
                }
                _ => Err(Refusal::NotFound),
            }
        }
        Ok(Handler::SignOutPage) => sign_out::sign_out_page(app, &req, info).await,
        Ok(Handler::SignOut) => match request::form(session, &req, app, info).await {
            Ok(f) => sign_out::sign_out(app, &req, &f, info).await,
            Err(r) => Err(r),
        },
        Ok(Handler::SignedOut) => Ok(sign_out::signed_out(app, &req).await),
        Ok(Handler::Userinfo) => userinfo::userinfo(app, &req).await,
        Ok(Handler::ForwardAuth) => forward_auth::forward_auth(app, &req).await,
        Ok(Handler::Jwks) => match &app.signer {
            Some(signer) => Ok(Reply::json_bytes(signer.jwks())),
            None => Err(Refusal::NotFound),
        },
    };
    // A conflict found while linking, and a sign-in that failed at a callback, get a page of
    // their own (reload-safe, not the callback).
    let result = problem::to_problem_page(app, name, html, result);
    let reply = result.unwrap_or_else(|refusal| refusal.reply(html, &app.pages.for_request(&req)));
    // A callback clears the flow cookie it came with, whatever happened: a flow is used once.
    let carried = callback
        .then_some(app.sessions.as_ref())
        .flatten()
        .and_then(|s| {
            let state = query_param(&req, "state")?;
            s.carried_flow_cookie(&req, &state)
                .map(|name| s.clear_flow_cookie(&name))
        });
    match carried {
        Some(clear) => reply.with_cookie(&clear),
        None => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_routed_by_its_methods() {
        let (get, post, put) = (http::Method::GET, http::Method::POST, http::Method::PUT);
        assert_eq!(route("sign_out", &get).unwrap(), Handler::SignOutPage);
        assert_eq!(route("sign_out", &post).unwrap(), Handler::SignOut);
        assert_eq!(route("start", &http::Method::HEAD).unwrap(), Handler::Start);
        assert_eq!(route("auth", &post).unwrap(), Handler::ForwardAuth);
        assert!(matches!(
            route("start", &post),
            Err(Refusal::MethodNotAllowed)
        ));
        assert!(matches!(
            route("link/connect", &get),
            Err(Refusal::MethodNotAllowed)
        ));
        assert!(matches!(route("nope", &get), Err(Refusal::NotFound)));
        for (path, methods, _) in ENDPOINTS {
            let method = if *methods == Methods::Post {
                &post
            } else {
                &get
            };
            assert!(route(path, method).is_ok(), "{path}");
            assert!(
                matches!(route(path, &put), Err(Refusal::MethodNotAllowed)),
                "{path}"
            );
        }
    }
}
