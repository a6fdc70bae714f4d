//! linkgate's own endpoints under `server.proxy_prefix`: `start`, `callback`, `sign_out`,
//! `signed_out`, `userinfo` and `auth` (forward-auth).
//!
//! Each handler reads the request, talks to the store and the provider, and returns one
//! [`Reply`]. A handler never leaves anything half-written: a flow is stored only once the
//! authorization URL exists, a session only once the tokens verified; a failure on the way
//! is a page (or JSON) that says what to do next.

use std::sync::Arc;

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pingora::http::RequestHeader;
use serde_json::json;

use crate::app::App;
use crate::oidc::OidcError;
use crate::proxy::identify::{identify, Found, Passport};
use crate::respond::{self, Refusal, Reply};
use crate::session::cookie::OpaqueId;

/// What the handlers need to know about the request beyond its header.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// Whether the peer is a trusted proxy (its `X-Forwarded-Proto`/`-Host` count).
    pub peer_trusted: bool,
}

/// Dispatches an endpoint by its name (the path below the prefix).
pub async fn handle(app: &App, name: &str, req: &RequestHeader, info: RequestInfo) -> Reply {
    let html = respond::is_navigation(req);
    let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let post = req.method == http::Method::POST;
    let result = match name {
        "start" if get => start(app, req, info).await,
        "callback" if get => callback(app, req, info).await,
        "sign_out" if get || post => sign_out(app, req, info).await,
        "signed_out" if get => Ok(signed_out(app, req)),
        "userinfo" if get => userinfo(app, req).await,
        "auth" if get || post || req.method == http::Method::HEAD => forward_auth(app, req).await,
        "start" | "callback" | "sign_out" | "signed_out" | "userinfo" | "auth" => {
            Err(Refusal::MethodNotAllowed)
        }
        _ => Err(Refusal::NotFound),
    };
    result.unwrap_or_else(|refusal| refusal.reply(html, &app.pages))
}

/// The query parameter `name`, decoded.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `scheme://host` of this gate as the browser sees it: `server.public_url` when set,
/// otherwise from the request (with `X-Forwarded-Proto`/`-Host` from trusted proxies only).
pub fn base_url(app: &App, req: &RequestHeader, info: RequestInfo) -> String {
    if let Some(url) = &app.config.server.public_url {
        return url.as_str().trim_end_matches('/').to_string();
    }
    let forwarded = |name: &str| {
        info.peer_trusted
            .then(|| req.headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let scheme = forwarded("x-forwarded-proto").unwrap_or_else(|| {
        if app.config.server.tls.is_some() {
            "https".to_string()
        } else {
            "http".to_string()
        }
    });
    let host = forwarded("x-forwarded-host")
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| app.config.server.listen.to_string());
    format!("{scheme}://{host}")
}

fn start_url(app: &App, rd: &str) -> String {
    format!(
        "{}/start?rd={}",
        app.prefix(),
        utf8_percent_encode(rd, NON_ALPHANUMERIC)
    )
}

fn provider_refusal(e: OidcError) -> Refusal {
    match e {
        OidcError::Unavailable(e) => Refusal::ProviderUnavailable(e),
        other => Refusal::ProviderUnavailable(other.to_string()),
    }
}

/// `GET start?rd=`: stores a new flow under a fresh `state` and sends the browser to the
/// provider. Several tabs may start at once: they share the browser binding.
async fn start(app: &App, req: &RequestHeader, info: RequestInfo) -> Result<Reply, Refusal> {
    let (Some(sso), Some(sessions)) = (&app.sso, &app.sessions) else {
        return Err(Refusal::NotFound);
    };
    let rd = app.redirects.resolve(query_param(req, "rd").as_deref());
    let binding = sessions.binding_of(req).unwrap_or_else(OpaqueId::random);
    let state = crate::session::cookie::OpaqueId::random().to_hex()
        + &crate::session::cookie::OpaqueId::random().to_hex();
    let redirect_uri = format!("{}{}", base_url(app, req, info), sso.redirect_path());
    let request = sso
        .authorize(&state, &redirect_uri)
        .await
        .map_err(provider_refusal)?;
    let flow = crate::session::Flow {
        provider: sso.label.to_string(),
        verifier: request.verifier,
        nonce: request.nonce,
        rd,
        redirect_uri,
        binding: binding.to_hex(),
    };
    sessions
        .put_flow(&state, &flow)
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    Ok(Reply::redirect(request.url.as_str()).with_cookie(&sessions.binding_cookie(&binding)))
}

/// `GET callback?code=&state=`: takes the flow (once), checks the browser binding and the
/// issuer, exchanges the code, verifies the id_token, creates the session, and sends the
/// browser where it was going.
async fn callback(app: &App, req: &RequestHeader, _info: RequestInfo) -> Result<Reply, Refusal> {
    let (Some(sso), Some(sessions)) = (&app.sso, &app.sessions) else {
        return Err(Refusal::NotFound);
    };
    let logins = |result: &str| {
        app.metrics
            .logins
            .with_label_values(&[sso.label, result])
            .inc();
    };
    let state = query_param(req, "state").unwrap_or_default();
    let flow = sessions
        .take_flow(&state)
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    let Some(flow) = flow else {
        logins("unknown_state");
        return Err(Refusal::SignInFailed {
            why: "This sign-in link has expired or was already used.".into(),
            retry: start_url(app, "/"),
        });
    };
    let retry = start_url(app, &flow.rd);
    if let Some(error) = query_param(req, "error") {
        logins("provider_error");
        let why = match error.as_str() {
            "access_denied" => format!("{} sign-in was cancelled or refused.", sso.display_name()),
            "login_required" | "consent_required" | "interaction_required" => format!(
                "{} needs you to sign in again: your session there has ended.",
                sso.display_name()
            ),
            _ => format!("{} reported an error: {error}.", sso.display_name()),
        };
        return Err(Refusal::SignInFailed { why, retry });
    }
    if sessions.binding_of(req).map(|b| b.to_hex()) != Some(flow.binding.clone()) {
        logins("wrong_browser");
        return Err(Refusal::SignInFailed {
            why: "This sign-in was started in another browser (or its cookie expired).".into(),
            retry,
        });
    }
    let endpoints = sso.endpoints().await.map_err(provider_refusal)?;
    if let Some(iss) = query_param(req, "iss") {
        // RFC 9207: a mix-up attack shows up as another issuer here.
        if iss.trim_end_matches('/') != endpoints.issuer.trim_end_matches('/') {
            logins("wrong_issuer");
            return Err(Refusal::SignInFailed {
                why: "The sign-in answer came from an unexpected provider.".into(),
                retry,
            });
        }
    }
    let Some(code) = query_param(req, "code").filter(|c| !c.is_empty()) else {
        logins("no_code");
        return Err(Refusal::SignInFailed {
            why: "The provider's answer carried no authorization code.".into(),
            retry,
        });
    };
    let (identity, tokens) = match sso
        .exchange(&code, &flow.verifier, &flow.redirect_uri, &flow.nonce)
        .await
    {
        Ok(ok) => ok,
        Err(OidcError::Unavailable(e)) => {
            logins("provider_unavailable");
            return Err(Refusal::ProviderUnavailable(e));
        }
        Err(e) => {
            logins("invalid");
            tracing::warn!(error = %e, "sign-in refused");
            return Err(Refusal::SignInFailed {
                why: "The sign-in could not be verified.".into(),
                retry,
            });
        }
    };
    let (id, _) = sessions
        .create(identity, tokens)
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    logins("ok");
    Ok(Reply::redirect(&flow.rd).with_cookie(&sessions.session_cookie(&id)))
}

/// `GET|POST sign_out?rd=`: deletes the session, then ends the provider session too
/// (RP-initiated logout with `id_token_hint`) when the provider has an end-session endpoint.
async fn sign_out(app: &App, req: &RequestHeader, info: RequestInfo) -> Result<Reply, Refusal> {
    let rd = app.redirects.resolve(query_param(req, "rd").as_deref());
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let mut id_token = None;
    if let Some(id) = sessions.id_of(req) {
        let record = sessions
            .load(&id)
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
        sessions
            .destroy(&id, record.as_ref())
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
        id_token = record.and_then(|r| r.tokens.id_token);
    }
    let mut location = rd.clone();
    if let (Some(sso), Some(hint)) = (&app.sso, id_token.as_deref()) {
        let back = format!("{}{}/signed_out", base_url(app, req, info), app.prefix());
        if let Some(mut url) = sso.end_session_url(Some(hint), &back).await {
            url.query_pairs_mut().append_pair("state", &rd);
            location = url.to_string();
        }
    }
    Ok(Reply::redirect(&location).with_cookie(&sessions.clear_session_cookie()))
}

/// `GET signed_out?state=`: where the provider sends the browser after its logout; `state`
/// carries `rd`, validated again.
fn signed_out(app: &App, req: &RequestHeader) -> Reply {
    let rd = app.redirects.resolve(query_param(req, "state").as_deref());
    Reply::redirect(&rd)
}

fn identity_json(p: &Passport) -> serde_json::Value {
    let i = &p.identity;
    json!({
        "user": i.subject,
        "email": i.email,
        "email_verified": i.email_verified,
        "name": i.name,
        "preferred_username": i.preferred_username,
        "groups": i.groups,
        "sso": { "issuer": i.issuer, "subject": i.subject },
    })
}

async fn signed_in(app: &App, req: &RequestHeader) -> Result<Arc<Passport>, Refusal> {
    match identify(app, req).await {
        Found::Passport(p) => {
            crate::authz::check(&app.config.authz, &p.identity).map_err(|reason| {
                Refusal::Forbidden {
                    who: p.identity.display().to_string(),
                    reason,
                }
            })?;
            Ok(p)
        }
        Found::Nobody { .. } => Err(Refusal::Unauthenticated),
        Found::Invalid(r) | Found::Unavailable(r) => Err(r),
    }
}

/// `GET userinfo`: the signed-in identity as JSON, or 401.
async fn userinfo(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let passport = signed_in(app, req).await?;
    Ok(Reply::json(StatusCode::OK, &identity_json(&passport)))
}

/// `GET auth`: forward-auth for nginx `auth_request`, Traefik and Caddy: `202` with the
/// identity headers, or `401`/`403` (never a redirect: the front proxy decides that).
async fn forward_auth(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let passport = match signed_in(app, req).await {
        Ok(p) => p,
        Err(r) => return Ok(r.reply(false, &app.pages)),
    };
    let mut reply = Reply::text(StatusCode::ACCEPTED, Vec::<u8>::new());
    for (name, value) in crate::proxy::identity_headers(app, &passport) {
        reply = reply.with_header(name, &value);
    }
    // The names nginx users know from oauth2-proxy, for `auth_request_set`.
    let i = &passport.identity;
    reply = reply.with_header(
        http::HeaderName::from_static("x-auth-request-user"),
        &i.subject,
    );
    if let Some(email) = &i.email {
        reply = reply.with_header(http::HeaderName::from_static("x-auth-request-email"), email);
    }
    if !i.groups.is_empty() {
        reply = reply.with_header(
            http::HeaderName::from_static("x-auth-request-groups"),
            &i.groups.join(","),
        );
    }
    Ok(reply)
}
