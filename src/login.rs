//! linkgate's own endpoints under `server.proxy_prefix`: sign-in with Magento.com (`start`,
//! `callback`) and with the cloud account (`account/start`, `account/callback`), the account
//! page (`link`, `link/connect`, `link/disconnect`), `sign_out` (a confirmation page on
//! `GET`, the sign-out itself on a same-site `POST` with the CSRF token), `signed_out`,
//! `userinfo` and `auth` (forward-auth).
//!
//! Each handler reads the request, talks to the store and the providers, and returns one
//! [`Reply`]. A handler never leaves anything half-written: a session is stored only once
//! the tokens verified, a link in one atomic operation; a failure on the way is a page (or
//! JSON) that says what to do next.
//!
//! SECURITY: `start` writes nothing to the store (the flow is a sealed cookie, see
//! [`crate::session::flow`]) and nothing it keeps is sized by the client beyond
//! [`flow::MAX_RD`]: `redirect_uri` is built from `server.public_url`, or from a `Host` the
//! configuration names (an upstream's `hosts`) or the listener's own address, and any other
//! `Host` is refused. A link is made only for the session that started the flow: connect
//! flows (and account sign-ins of a session waiting for its account) carry that session's
//! id and identity, and the callback links only when the request's session is the same.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;

use crate::app::App;
use crate::link::{LinkOutcome, Requirement};
use crate::oidc::{Identity, OidcError, Provider, Tokens};
use crate::pages::{self, AccountView, Text};
use crate::passport::Field;
use crate::proxy::identify::{identify, Found, Passport};
use crate::respond::{self, Refusal, Reply};
use crate::session::cookie::OpaqueId;
use crate::session::flow::{self, AskedBy};
use crate::session::{Flow, FlowRefusal, Intent, JwtBinding, SessionRecord, FLOW_TTL};

/// What the handlers need to know about the request beyond its header.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    /// Whether the peer is a trusted proxy (its `X-Forwarded-Proto`/`-Host` count).
    pub peer_trusted: bool,
    /// The address the connection came in on (the listener's own address), when known.
    pub local: Option<std::net::SocketAddr>,
}

/// The largest form body an endpoint reads.
const MAX_FORM: usize = 16 * 1024;

/// Dispatches an endpoint by its name (the path below the prefix).
pub async fn handle(app: &App, name: &str, session: &mut Session, info: RequestInfo) -> Reply {
    // No DNS name is longer: refused before the header is copied or read any further.
    let host_len = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .map_or(0, |h| h.len());
    if host_len > MAX_HOST {
        let html = respond::prefers_html(session.req_header());
        let pages = app.pages.for_request(session.req_header());
        return Refusal::BadRequest(Text::new("bad_request.host_too_long")).reply(html, &pages);
    }
    let req = session.req_header().clone();
    let html = respond::is_navigation(&req) || respond::prefers_html(&req);
    let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let post = req.method == http::Method::POST;
    let info = RequestInfo {
        local: info
            .local
            .or_else(|| session.server_addr().and_then(|a| a.as_inet()).copied()),
        ..info
    };
    let result = match name {
        "start" if get => start(app, &req, info).await,
        "callback" if get => callback(app, &req).await,
        "account/start" if get => account_start(app, &req, info).await,
        "account/callback" if get => account_callback(app, &req).await,
        "link" if get => link_page(app, &req).await,
        "link/connect" if post => match form(session, &req, app, info).await {
            Ok(f) => connect(app, &req, &f, info).await,
            Err(r) => Err(r),
        },
        "link/problem" if get => Ok(problem_page(app, &req)),
        "link/disconnect" if post => match form(session, &req, app, info).await {
            Ok(f) => disconnect(app, &req, &f).await,
            Err(r) => Err(r),
        },
        "sign_out" if get => sign_out_page(app, &req, info).await,
        "sign_out" if post => match form(session, &req, app, info).await {
            Ok(f) => sign_out(app, &req, &f, info).await,
            Err(r) => Err(r),
        },
        "signed_out" if get => Ok(signed_out(app, &req).await),
        "userinfo" if get => userinfo(app, &req).await,
        "auth" if get || post => forward_auth(app, &req).await,
        ".well-known/jwks.json" if get => match &app.signer {
            Some(signer) => Ok(Reply::json_bytes(signer.jwks())),
            None => Err(Refusal::NotFound),
        },
        "start" | "callback" | "account/start" | "account/callback" | "link" | "link/connect"
        | "link/problem" | "link/disconnect" | "sign_out" | "signed_out" | "userinfo" | "auth" => {
            Err(Refusal::MethodNotAllowed)
        }
        _ => Err(Refusal::NotFound),
    };
    // A conflict found while linking, and a sign-in that failed at a callback, get a page of
    // their own (reload-safe, not the callback).
    let result = crate::troubleshoot::to_problem_page(app, name, html, result);
    let reply = result.unwrap_or_else(|refusal| refusal.reply(html, &app.pages.for_request(&req)));
    // A callback clears the flow cookie it came with, whatever happened: a flow is used once.
    let carried = matches!(name, "callback" | "account/callback")
        .then(|| app.sessions.as_ref())
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

// === request helpers ===

/// The query parameter `name`, decoded.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a url-encoded form body (bounded) after checking that the POST comes from this
/// site: `Sec-Fetch-Site`, then `Origin`, when the browser sends them.
async fn form(
    session: &mut Session,
    req: &RequestHeader,
    app: &App,
    info: RequestInfo,
) -> Result<HashMap<String, String>, Refusal> {
    if let Some(site) = req
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        if !matches!(site, "same-origin" | "none") {
            return Err(Refusal::BadRequest(Text::new("bad_request.cross_site")));
        }
    }
    if let Some(origin) = req
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let ours = base_url(app, req, info);
        if origin != "null" && Some(origin.trim_end_matches('/')) != ours.as_deref() {
            return Err(Refusal::BadRequest(Text::new("bad_request.cross_site")));
        }
    }
    let body = crate::body::read_bounded(session, MAX_FORM)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge => Refusal::TooLarge,
            crate::body::BodyError::Unreadable => {
                Refusal::BadRequest(Text::new("bad_request.form_unreadable"))
            }
        })?;
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

/// `scheme://host` of this gate as the browser sees it: `server.public_url` when set,
/// otherwise from the request (with `X-Forwarded-Proto`/`-Host` from trusted proxies only),
/// provided the host is one linkgate vouches for ([`host_is_ours`]). `None` for any other
/// host: nothing is built from a name the client made up.
pub fn base_url(app: &App, req: &RequestHeader, info: RequestInfo) -> Option<String> {
    if let Some(url) = &app.config.server.public_url {
        return Some(url.as_str().trim_end_matches('/').to_string());
    }
    let forwarded = |name: &str| {
        info.peer_trusted
            .then(|| req.headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let scheme = match forwarded("x-forwarded-proto").as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ if app.config.server.tls.is_some() => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| req.uri.authority().map(|a| a.to_string()))?;
    host_is_ours(app, &host, scheme, info).then(|| format!("{scheme}://{host}"))
}

/// The longest `Host` value considered at all (a DNS name and a port).
const MAX_HOST: usize = 261;

/// Whether linkgate may build its own URLs (`redirect_uri`, the sign-out return) on `host`:
/// a name an upstream's `hosts` lists (exactly or by `*.` pattern), or the address the
/// connection came in on (`127.0.0.1:4180` when the browser opened that, `localhost:4180`
/// on a loopback listener; the port may be left out when it is the scheme's default). Without `public_url` and without `hosts`, a
/// gate reached by a DNS name therefore refuses to start sign-ins: set `public_url`. Why
/// not any well-formed host: a provider that accepts redirect URIs by pattern, a cache keyed
/// without `Host`, or a log reader would each trust a name the client chose.
fn host_is_ours(app: &App, host: &str, scheme: &str, info: RequestInfo) -> bool {
    if host.is_empty()
        || host.len() > MAX_HOST
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return false;
    }
    if app.router.names_host(host) {
        return true;
    }
    let Some(local) = info.local else {
        return false;
    };
    if let Ok(addr) = host.parse::<std::net::SocketAddr>() {
        return addr == local;
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !host.ends_with(']') => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, Some(default_port)),
    };
    if port != Some(local.port()) {
        return false;
    }
    // `localhost` is the loopback listener's own name (the demo, development).
    if name.eq_ignore_ascii_case("localhost") {
        return local.ip().is_loopback();
    }
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == local.ip())
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `{prefix}/start?rd=…` (with `intent=connect` to connect the session's cloud account).
/// An `rd` longer than [`flow::MAX_RD`] becomes `/`: `start` would refuse it.
pub fn start_url(app: &App, rd: &str, intent: Intent) -> String {
    let rd = if rd.len() > flow::MAX_RD { "/" } else { rd };
    let connect = if intent == Intent::Connect {
        "&intent=connect"
    } else {
        ""
    };
    format!("{}/start?rd={}{connect}", app.prefix(), encode(rd))
}

fn link_page_url(app: &App) -> String {
    format!("{}/link", app.prefix())
}

fn provider_refusal(e: OidcError) -> Refusal {
    match e {
        OidcError::Unavailable(e) => Refusal::ProviderUnavailable(e),
        other => Refusal::ProviderUnavailable(other.to_string()),
    }
}

/// The session of the request, if any (a store failure is a refusal). A session whose
/// account came from the platform's JWT is used only while the request's JWT still names
/// that account (else it is ended here, as on any request).
async fn current(
    app: &App,
    req: &RequestHeader,
) -> Result<Option<(OpaqueId, SessionRecord)>, Refusal> {
    let Some(sessions) = &app.sessions else {
        return Ok(None);
    };
    let Some(id) = sessions.id_of(req) else {
        return Ok(None);
    };
    match sessions.load(&id).await {
        Ok(Some(record)) => {
            if !crate::proxy::identify::session_keeps(app, req, &id, &record).await? {
                return Ok(None);
            }
            Ok(Some((id, record)))
        }
        Ok(None) => Ok(None),
        Err(_) => Err(Refusal::StoreUnavailable),
    }
}

/// Replaces the browser's session (if any) with a new one: a new id at every sign-in.
/// `account_jwt`: the platform JWT `account` came from, which the new session follows.
/// The accounts provider's id_token (for its sign-out) is `account_id_token`, else the old
/// session's when it holds the same account.
async fn replace_session(
    app: &App,
    old: Option<&(OpaqueId, SessionRecord)>,
    sso: Option<Identity>,
    account: Option<Identity>,
    tokens: Option<Tokens>,
    account_jwt: Option<JwtBinding>,
) -> Result<String, Refusal> {
    replace_session_proven(app, old, sso, account, tokens, account_jwt, None).await
}

/// [`replace_session`] after a sign-in at the accounts provider, with its id_token.
async fn replace_session_proven(
    app: &App,
    old: Option<&(OpaqueId, SessionRecord)>,
    sso: Option<Identity>,
    account: Option<Identity>,
    tokens: Option<Tokens>,
    account_jwt: Option<JwtBinding>,
    account_id_token: Option<String>,
) -> Result<String, Refusal> {
    let sessions = app.sessions.as_ref().ok_or(Refusal::NotFound)?;
    let account_id_token = account_id_token.or_else(|| {
        let (_, record) = old?;
        let same = record.account.as_ref()?.key() == account.as_ref()?.key();
        same.then(|| record.account_id_token.clone()).flatten()
    });
    let (id, _) = sessions
        .create_with(
            OpaqueId::random(),
            sso,
            account,
            tokens,
            account_jwt,
            account_id_token,
        )
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    if let Some((old_id, old_record)) = old {
        // Best effort: the new session is already in place.
        let _ = sessions.destroy(old_id, Some(old_record)).await;
    }
    Ok(sessions.session_cookie(&id))
}

// === sign-in ===

/// What a person reads when a callback comes without its flow.
const UNKNOWN_FLOW: &str = "sign_in.unknown_flow";

/// Starts a flow for `provider` and returns the redirect to its authorization endpoint,
/// with the flow sealed in a cookie of its own. Writes nothing to the store.
/// `asked_by` is the session that starts it, for a flow that may link.
async fn begin(
    app: &App,
    provider: &Provider,
    intent: Intent,
    asked_by: Option<AskedBy>,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let sessions = app.sessions.as_ref().ok_or(Refusal::NotFound)?;
    let rd = query_param(req, "rd");
    if rd.as_ref().is_some_and(|rd| rd.len() > flow::MAX_RD) {
        return Err(Refusal::BadRequest(
            Text::new("bad_request.rd_too_long").arg("max", flow::MAX_RD),
        ));
    }
    let rd = app.redirects.resolve(rd.as_deref());
    let Some(base) = base_url(app, req, info) else {
        tracing::warn!(
            "sign-in refused: the request's host is neither server.public_url nor an upstream's hosts"
        );
        return Err(Refusal::BadRequest(Text::new("bad_request.unknown_host")));
    };
    let state = flow::new_state();
    let redirect_uri = format!("{base}{}", provider.redirect_path());
    let request = provider
        .authorize(&state, &redirect_uri)
        .await
        .map_err(provider_refusal)?;
    let flow = Flow {
        provider: provider.label.to_string(),
        intent,
        verifier: request.verifier,
        nonce: request.nonce,
        rd,
        redirect_uri,
        asked_by,
        expires_at_ms: flow::now_ms() + FLOW_TTL.as_millis() as i64,
    };
    let Some(cookies) = sessions.flow_cookies(req, &state, &flow) else {
        return Err(Refusal::BadRequest(Text::new("bad_request.flow_too_large")));
    };
    let mut reply = Reply::redirect(request.url.as_str());
    for cookie in &cookies {
        reply = reply.with_cookie(cookie);
    }
    Ok(reply)
}

/// Opens the flow of a callback from its cookie (once: the cookie is cleared by
/// [`handle`]), checks it belongs to `provider`, checks the issuer, exchanges the code,
/// verifies the id_token, then marks the state used (the first store write of a sign-in).
async fn finish(
    app: &App,
    provider: &Provider,
    req: &RequestHeader,
) -> Result<(Flow, Identity, Tokens), Refusal> {
    let sessions = app.sessions.as_ref().ok_or(Refusal::NotFound)?;
    let logins = |result: &str| {
        app.metrics
            .logins
            .with_label_values(&[provider.label, result])
            .inc();
    };
    let state = query_param(req, "state").unwrap_or_default();
    let home = start_url(app, "/", Intent::Login);
    let flow = match sessions.flow_of(req, &state) {
        Ok(Some((_, flow))) if flow.provider == provider.label => flow,
        Ok(_) | Err(FlowRefusal::Invalid(_)) => {
            logins("unknown_state");
            return Err(Refusal::SignInFailed {
                why: Text::new(UNKNOWN_FLOW),
                retry: home,
            });
        }
        Err(FlowRefusal::Duplicate(_)) => {
            // Two cookies of one flow's name: one was planted. Neither is used.
            logins("duplicate_cookie");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.duplicate"),
                retry: home,
            });
        }
        Err(FlowRefusal::Expired(_)) => {
            logins("expired");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.expired"),
                retry: home,
            });
        }
    };
    let retry = start_url(app, &flow.rd, flow.intent);
    if let Some(error) = query_param(req, "error") {
        logins("provider_error");
        let name = provider.display_name();
        let why = match error.as_str() {
            "access_denied" => Text::new("sign_in.cancelled"),
            "login_required" | "consent_required" | "interaction_required" => {
                Text::new("sign_in.login_required")
            }
            _ => Text::new("sign_in.provider_error").arg("error", &error),
        }
        .arg("provider", name);
        return Err(Refusal::SignInFailed { why, retry });
    }
    let endpoints = provider.endpoints().await.map_err(provider_refusal)?;
    // RFC 9207: a mix-up attack shows up as another issuer here, or as none.
    if let Err(e) = endpoints.check_response_issuer(query_param(req, "iss").as_deref()) {
        logins("wrong_issuer");
        tracing::warn!(provider = provider.label, error = %e, "sign-in refused");
        return Err(Refusal::SignInFailed {
            why: Text::new("sign_in.wrong_issuer"),
            retry,
        });
    }
    let Some(code) = query_param(req, "code").filter(|c| !c.is_empty()) else {
        logins("no_code");
        return Err(Refusal::SignInFailed {
            why: Text::new("sign_in.no_code"),
            retry,
        });
    };
    let (identity, tokens) = match provider
        .exchange(&code, &flow.verifier, &flow.redirect_uri, &flow.nonce)
        .await
    {
        Ok(done) => done,
        Err(OidcError::Unavailable(e)) => {
            logins("provider_unavailable");
            return Err(Refusal::ProviderUnavailable(e));
        }
        Err(e) => {
            logins("invalid");
            tracing::warn!(provider = provider.label, error = %e, "sign-in refused");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.not_verified"),
                retry,
            });
        }
    };
    // Only now, with a code the provider honoured, may the store be written.
    match sessions.mark_flow_used(&state, &flow).await {
        Ok(true) => {}
        Ok(false) => {
            logins("replayed");
            return Err(Refusal::SignInFailed {
                why: Text::new(UNKNOWN_FLOW),
                retry: home,
            });
        }
        Err(_) => return Err(Refusal::StoreUnavailable),
    }
    logins("ok");
    Ok((flow, identity, tokens))
}

/// `GET start?rd=[&intent=connect]`: sign in with Magento.com. A connect flow records the
/// session that asks and the cloud account it holds (the callback links only for them).
async fn start(app: &App, req: &RequestHeader, info: RequestInfo) -> Result<Reply, Refusal> {
    let sso = app.sso.as_ref().ok_or(Refusal::NotFound)?;
    let intent = match query_param(req, "intent").as_deref() {
        Some("connect") => Intent::Connect,
        _ => Intent::Login,
    };
    let asked_by = asked_by_current(app, req).await?;
    begin(app, sso, intent, asked_by, req, info).await
}

/// `GET account/start?rd=`: sign in to the cloud account (`[account] source = "oauth2"`).
/// A Magento.com session waiting for its account is recorded: the callback links for it only.
async fn account_start(
    app: &App,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let provider = app.account_provider.as_ref().ok_or(Refusal::NotFound)?;
    let asked_by = asked_by_current(app, req).await?;
    begin(app, provider, Intent::Login, asked_by, req, info).await
}

/// The identity a session is known by: its Magento.com identity, else its cloud account.
fn primary_key(record: &SessionRecord) -> Option<String> {
    record
        .sso
        .as_ref()
        .or(record.account.as_ref())
        .map(|i| i.key())
}

/// The session of the request as the starter of a flow, if it has one. A store read only
/// for a cookie whose tag verified: never for an anonymous client.
async fn asked_by_current(app: &App, req: &RequestHeader) -> Result<Option<AskedBy>, Refusal> {
    Ok(current(app, req)
        .await?
        .and_then(|(id, record)| primary_key(&record).map(|key| AskedBy::new(id, &key))))
}

/// Whether `flow` was started by the session `old` (same id, same identity).
fn started_by(flow: &Flow, old: &(OpaqueId, SessionRecord)) -> bool {
    let (id, record) = old;
    match (flow.asked_by, primary_key(record)) {
        (Some(asked), Some(key)) => asked.is(id, &key),
        _ => false,
    }
}

/// Whether a sign-in as `identity` may replace the browser's session `old`: when that
/// session started it (switching users on purpose), or is already this person. Otherwise a
/// planted flow cookie would sign a signed-in victim into the attacker's account (login
/// CSRF), from where one more click could link her account to his.
fn may_replace(flow: &Flow, old: Option<&(OpaqueId, SessionRecord)>, identity_key: &str) -> bool {
    old.is_none_or(|old| {
        let same_person = [&old.1.sso, &old.1.account]
            .into_iter()
            .flatten()
            .any(|i| i.key() == identity_key);
        same_person || started_by(flow, old)
    })
}

/// The page for a flow that would link an identity to a session other than the one that
/// asked for it (a planted flow cookie, or a session that changed meanwhile).
fn not_this_session(app: &App) -> Refusal {
    app.metrics
        .links
        .with_label_values(&["wrong_session"])
        .inc();
    Refusal::SignInFailed {
        why: Text::new("sign_in.not_this_session"),
        retry: if app.config.account.is_some() {
            link_page_url(app)
        } else {
            start_url(app, "/", Intent::Login)
        },
    }
}

/// `GET callback`: back from Magento.com. A login looks up the link (primary login, never a
/// new link); a connect links the session's cloud account to this Magento.com account, only
/// when the request's session is the one that started the connect and still holds the same
/// cloud account.
async fn callback(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let sso = app.sso.as_ref().ok_or(Refusal::NotFound)?;
    let (flow, identity, tokens) = finish(app, sso, req).await?;
    let old = current(app, req).await?;
    let linking = app.config.account.is_some();
    // The account a connect links came from the session; if that came from the platform's
    // JWT, the new session follows the JWT too.
    let mut account_jwt = None;
    let account = match (flow.intent, linking) {
        (Intent::Connect, true) => {
            let Some(account) = old.as_ref().and_then(|(_, r)| r.account.clone()) else {
                return Err(Refusal::SignInFailed {
                    why: Text::new("sign_in.account_first"),
                    retry: link_page_url(app),
                });
            };
            if !old.as_ref().is_some_and(|old| started_by(&flow, old)) {
                tracing::warn!("connect callback for another session refused; nothing linked");
                return Err(not_this_session(app));
            }
            link(app, &account, &identity).await?;
            account_jwt = old.as_ref().and_then(|(_, r)| r.account_jwt.clone());
            Some(account)
        }
        (Intent::Login, _) | (Intent::Connect, false)
            if !may_replace(&flow, old.as_ref(), &identity.key()) =>
        {
            tracing::warn!("sign-in into another session's browser refused; session kept");
            return Err(not_this_session(app));
        }
        (Intent::Login, true) => {
            let registry = app.registry.as_ref().ok_or(Refusal::NotFound)?;
            registry
                .by_sso(&identity.key())
                .await
                .map_err(|_| Refusal::StoreUnavailable)?
                .map(|l| l.account)
        }
        (_, false) => None,
    };
    let cookie = replace_session(
        app,
        old.as_ref(),
        Some(identity),
        account,
        Some(tokens),
        account_jwt,
    )
    .await?;
    Ok(Reply::redirect(&flow.rd).with_cookie(&cookie))
}

/// `GET account/callback`: back from the cloud account's sign-in. With a Magento.com
/// session waiting for its account, this links them, when that session started this
/// sign-in (otherwise nothing is linked and the session is left alone); without one, it
/// starts an account session, which the link rule then sends on to Magento.com.
async fn account_callback(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let provider = app.account_provider.as_ref().ok_or(Refusal::NotFound)?;
    let (flow, account, account_tokens) = finish(app, provider, req).await?;
    let account_id_token = account_tokens.id_token;
    let old = current(app, req).await?;
    let waiting_sso = old
        .as_ref()
        .filter(|(_, r)| r.account.is_none())
        .and_then(|(_, r)| r.sso.clone().map(|s| (s, r.tokens.clone())));
    let cookie = match waiting_sso {
        Some((sso, tokens)) => {
            if !old.as_ref().is_some_and(|old| started_by(&flow, old)) {
                tracing::warn!("account callback for another session refused; nothing linked");
                return Err(not_this_session(app));
            }
            link(app, &account, &sso).await?;
            replace_session_proven(
                app,
                old.as_ref(),
                Some(sso),
                Some(account),
                tokens,
                None,
                account_id_token,
            )
            .await?
        }
        None if !may_replace(&flow, old.as_ref(), &account.key()) => {
            tracing::warn!("sign-in into another session's browser refused; session kept");
            return Err(not_this_session(app));
        }
        None => {
            replace_session_proven(
                app,
                old.as_ref(),
                None,
                Some(account),
                None,
                None,
                account_id_token,
            )
            .await?
        }
    };
    Ok(Reply::redirect(&flow.rd).with_cookie(&cookie))
}

/// Links `account` and `sso`; a conflict is a page that says who holds the other side.
async fn link(app: &App, account: &Identity, sso: &Identity) -> Result<(), Refusal> {
    let registry = app.registry.as_ref().ok_or(Refusal::NotFound)?;
    let outcome = registry
        .create(account, sso)
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    if let (LinkOutcome::Created(_), Some(sessions)) = (&outcome, &app.sessions) {
        // The remembered account JWTs hold the link they found.
        sessions.links_changed().await;
    }
    let (result, refusal) = match outcome {
        LinkOutcome::Created(_) => ("created", None),
        LinkOutcome::AlreadyLinked(_) => ("unchanged", None),
        LinkOutcome::SsoTaken(existing) => (
            "conflict_sso",
            Some(Refusal::LinkConflict {
                why: Text::new("link.sso_taken")
                    .arg("sso", app.sso_name())
                    .arg("sso_as", sso.display())
                    .arg("account_name", app.account_name())
                    .arg("other", masked(existing.account.display())),
                what_to_do: Text::new("link.sso_taken_fix")
                    .arg("account_name", app.account_name())
                    .arg("sso", app.sso_name())
                    .arg("key", sso.key()),
                link_page: link_page_url(app),
            }),
        ),
        LinkOutcome::AccountTaken(existing) => (
            "conflict_account",
            Some(Refusal::LinkConflict {
                why: Text::new("link.account_taken")
                    .arg("account_name", app.account_name())
                    .arg("account", account.display())
                    .arg("sso", app.sso_name())
                    .arg("other", masked(existing.sso.display())),
                what_to_do: Text::new("link.account_taken_fix")
                    .arg("sso", app.sso_name())
                    .arg("other", masked(existing.sso.display()))
                    .arg("key", account.key()),
                link_page: link_page_url(app),
            }),
        ),
    };
    app.metrics.links.with_label_values(&[result]).inc();
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

// === problem pages ===

/// `GET link/problem?p=`: a problem page at its own URL (see [`crate::troubleshoot`]).
fn problem_page(app: &App, req: &RequestHeader) -> Reply {
    crate::troubleshoot::page(app, req)
}

// === the account page ===

/// Shows an email (or a name) of someone who may not be the person looking: the first
/// letter of the local part and the domain, `a***@example.com`.
pub fn masked(text: &str) -> String {
    let (local, domain) = match text.split_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (text, None),
    };
    let first: String = local.chars().take(1).collect();
    match domain {
        Some(domain) => format!("{first}***@{domain}"),
        None => format!("{first}***"),
    }
}

/// The cloud account the request's platform JWT names, for a Magento.com session that has
/// none (`[account] source = "jwt"`): the person signed in at the platform after signing in
/// here. `linked_to`: the Magento.com account that account is already linked to, if any.
/// A JWT that does not verify (or keys that cannot be fetched) shows as none: the page
/// still renders, and `link/connect` verifies again and says why.
struct JwtAccount {
    account: Identity,
    linked_to: Option<Identity>,
}

async fn jwt_account(app: &App, req: &RequestHeader) -> Option<JwtAccount> {
    app.account_jwt.as_ref()?;
    let (account, _) = crate::proxy::identify::account_of_jwt(app, req)
        .await
        .ok()
        .flatten()?;
    let linked_to = match &app.registry {
        Some(registry) => registry
            .by_account(&account.key())
            .await
            .ok()
            .flatten()
            .map(|l| l.sso),
        None => None,
    };
    Some(JwtAccount { account, linked_to })
}

/// Where a person stands, as the account page (and its JSON twin) tells it.
async fn account_view(
    app: &App,
    id: &OpaqueId,
    sso: Option<&Identity>,
    account: Option<&Identity>,
    req: &RequestHeader,
) -> AccountView {
    let requirement = crate::link::requirement(&app.config.link, time::OffsetDateTime::now_utc());
    let linked = sso.is_some() && account.is_some();
    let tr = app.pages.for_request(req);
    let mode = match (app.config.link.mode, requirement) {
        (crate::config::LinkMode::Warn, _) => "warn",
        (_, Requirement::Grace) => "grace",
        (_, Requirement::Off) => "off",
        (_, Requirement::Enforced) => "enforce",
    };
    let grace_notice = (!linked)
        .then(|| match mode {
            "grace" => {
                let from = app
                    .config
                    .link
                    .required_from
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                Some(
                    tr.text(
                        &Text::new("account.grace")
                            .arg("sso", app.sso_name())
                            .arg("from", from),
                    ),
                )
            }
            "warn" => Some(tr.text(&Text::new("account.warn").arg("sso", app.sso_name()))),
            _ => None,
        })
        .flatten();
    // A Magento.com session without an account notices the platform's JWT when it appears:
    // the page shows whom it names and offers the Connect button (a CSRF-protected POST;
    // nothing is linked by the JWT alone).
    let from_jwt = match (sso, account) {
        (Some(_), None) => jwt_account(app, req).await,
        _ => None,
    };
    let mut conflict = None;
    let mut conflict_fix = None;
    let shown_account = account
        .map(|a| a.display().to_string())
        .or_else(|| from_jwt.as_ref().map(|j| j.account.display().to_string()));
    if let (Some(sso), Some(j)) = (sso, &from_jwt) {
        if let Some(other) = j.linked_to.as_ref().filter(|o| o.key() != sso.key()) {
            conflict = Some(
                tr.text(
                    &Text::new("account.jwt_conflict")
                        .arg("account_name", app.account_name())
                        .arg("account", j.account.display())
                        .arg("sso", app.sso_name())
                        .arg("other", masked(other.display())),
                ),
            );
            conflict_fix = Some(
                tr.text(
                    &Text::new("account.jwt_conflict_fix")
                        .arg("sso", app.sso_name())
                        .arg("key", j.account.key()),
                ),
            );
        }
    }
    let state = match (sso.is_some(), shown_account.is_some()) {
        _ if linked => "linked",
        _ if conflict.is_some() => "linked_to_someone_else",
        (true, true) => "both_unlinked",
        (true, false) => "sso_only",
        (false, true) => "cloud_only",
        (false, false) => "nothing",
    };
    let rd = query_param(req, "rd").unwrap_or_else(|| link_page_url(app));
    AccountView {
        state: state.to_string(),
        mode: mode.to_string(),
        sso_name: app.sso_name().to_string(),
        account_name: app.account_name().to_string(),
        account: shown_account,
        account_from_jwt: from_jwt.is_some(),
        connected_as: sso.filter(|_| linked).map(|s| s.display().to_string()),
        sso_unlinked: sso.filter(|_| !linked).map(|s| s.display().to_string()),
        signed_in_sso: sso.map(|s| s.display().to_string()),
        grace_notice,
        conflict,
        conflict_fix,
        allow_disconnect: app.config.link.allow_disconnect,
        csrf: app
            .sessions
            .as_ref()
            .map(|s| s.csrf_token(id))
            .unwrap_or_default(),
        account_sign_in: app
            .account_provider
            .as_ref()
            .map(|_| format!("{}/account/start?rd={}", app.prefix(), encode(&rd))),
        account_hint: app.account_jwt.as_ref().map(|_| {
            tr.text(&Text::new("account.account_hint").arg("account_name", app.account_name()))
        }),
        check_again: app.account_jwt.as_ref().map(|_| {
            req.uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string()
        }),
        here: req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
    }
}

/// The page for an SSO session without a linked account, while the rule is enforced.
/// With the JWT source, a JWT that appeared since the sign-in is noticed here: the page
/// offers "Connect with Magento.com" for the account it names.
pub async fn link_required_page(app: &App, passport: &Passport, req: &RequestHeader) -> Reply {
    let record = match (passport.session, &app.sessions) {
        (Some(id), Some(sessions)) => sessions.load(&id).await.ok().flatten(),
        _ => None,
    };
    let id = passport.session.unwrap_or_else(OpaqueId::random);
    let mut view = match &record {
        Some(r) => account_view(app, &id, r.sso.as_ref(), r.account.as_ref(), req).await,
        None => {
            // An unlinked passport keeps the names (with `[account]` configured, as here).
            let names = passport.names().cloned().unwrap_or_default();
            let mut view = account_view(app, &id, None, None, req).await;
            view.sso_unlinked = names.sso.clone();
            view.signed_in_sso = names.sso;
            view.state = "sso_only".into();
            view
        }
    };
    if let Some(url) = &mut view.account_sign_in {
        let rd = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        *url = format!("{}/account/start?rd={}", app.prefix(), encode(rd));
    }
    Reply::html(
        StatusCode::FORBIDDEN,
        pages::link_required(&app.pages.for_request(req), &view),
    )
}

/// The account page's JSON twin: the same state, what it says and what it offers.
fn account_json(app: &App, view: &AccountView) -> serde_json::Value {
    let connect = matches!(view.state.as_str(), "cloud_only" | "both_unlinked");
    json!({
        "state": view.state,
        "mode": view.mode,
        "provider": view.sso_name,
        "status": if view.connected_as.is_some() { "connected" } else { "not_connected" },
        "connected_as": view.connected_as,
        "sso": view.signed_in_sso,
        "account": view.account,
        "account_from_jwt": view.account_from_jwt,
        "grace": view.grace_notice,
        "conflict": view.conflict,
        "conflict_fix": view.conflict_fix,
        "allow_disconnect": view.allow_disconnect,
        "actions": {
            "connect": connect.then(|| format!("{}/link/connect", app.prefix())),
            "disconnect": (view.connected_as.is_some() && view.allow_disconnect)
                .then(|| format!("{}/link/disconnect", app.prefix())),
            "account_sign_in": (view.state == "sso_only").then(|| view.account_sign_in.clone()).flatten(),
            "sign_out": format!("{}/sign_out", app.prefix()),
        },
        "csrf": view.csrf,
    })
}

/// The account page's JSON twin for a client with no identity at all: `401` (as every
/// endpoint answers without credentials), with `state: "nothing"` and where to sign in.
fn nothing_json(app: &App, req: &RequestHeader) -> Reply {
    let reply = Refusal::Unauthenticated.reply(false, &app.pages.for_request(req));
    let mut body: serde_json::Value = serde_json::from_slice(reply.body()).unwrap_or_default();
    body["state"] = json!("nothing");
    body["actions"] = json!({
        "sign_in": start_url(app, &link_page_url(app), Intent::Login),
        "account_sign_in": app.account_provider.as_ref().map(|_| {
            format!("{}/account/start?rd={}", app.prefix(), encode(&link_page_url(app)))
        }),
    });
    Reply::json(StatusCode::UNAUTHORIZED, &body).with_header(
        http::header::WWW_AUTHENTICATE,
        &format!("Bearer realm=\"{}\"", app.pages.realm),
    )
}

/// `GET link`: Account Settings with the Single Sign-On section.
async fn link_page(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    if app.config.account.is_none() {
        return Err(Refusal::NotFound);
    }
    let mut made = None;
    let (id, record) = match current(app, req).await? {
        Some(current) => current,
        None if !respond::is_navigation(req) => return Ok(nothing_json(app, req)),
        // A browser with the platform's JWT alone: the page and its forms need a session.
        None => match crate::proxy::identify::session_from_jwt(app, req).await? {
            Some((id, record)) => {
                made = app.sessions.as_ref().map(|s| s.session_cookie(&id));
                (id, record)
            }
            None => {
                return Ok(Reply::redirect(&start_url(
                    app,
                    &link_page_url(app),
                    Intent::Login,
                )))
            }
        },
    };
    let with_made = |reply: Reply| match &made {
        Some(cookie) => reply.with_cookie(cookie),
        None => reply,
    };
    let view = account_view(app, &id, record.sso.as_ref(), record.account.as_ref(), req).await;
    if !respond::prefers_html(req) && !respond::is_navigation(req) {
        return Ok(with_made(Reply::json(
            StatusCode::OK,
            &account_json(app, &view),
        )));
    }
    Ok(with_made(Reply::html(
        StatusCode::OK,
        pages::account_page(&app.pages.for_request(req), &view),
    )))
}

fn checked_session(
    app: &App,
    session: Option<(OpaqueId, SessionRecord)>,
    form: &HashMap<String, String>,
) -> Result<(OpaqueId, SessionRecord), Refusal> {
    let sessions = app.sessions.as_ref().ok_or(Refusal::NotFound)?;
    let (id, record) = session.ok_or(Refusal::Unauthenticated)?;
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !sessions.csrf_ok(&id, token) {
        return Err(Refusal::BadRequest(Text::new("bad_request.form_expired")));
    }
    Ok((id, record))
}

/// `POST link/connect`: starts connecting the two accounts.
async fn connect(
    app: &App,
    req: &RequestHeader,
    form: &HashMap<String, String>,
    _info: RequestInfo,
) -> Result<Reply, Refusal> {
    let (id, record) = checked_session(app, current(app, req).await?, form)?;
    // Back to the page the form was on (the link-required page stands on the page asked for).
    let back = match form.get("rd") {
        Some(rd) if rd.len() <= flow::MAX_RD => app.redirects.resolve(Some(rd)),
        _ => link_page_url(app),
    };
    match (&record.sso, &record.account) {
        (Some(_), Some(_)) => Ok(Reply::redirect(&back)),
        (None, Some(_)) => Ok(Reply::redirect(&start_url(app, &back, Intent::Connect))),
        (Some(sso), None) => {
            if app.account_provider.is_some() {
                return Ok(Reply::redirect(&format!(
                    "{}/account/start?rd={}",
                    app.prefix(),
                    encode(&back)
                )));
            }
            if app.account_jwt.is_none() {
                return Err(Refusal::NotFound);
            }
            let (account, binding) = crate::proxy::identify::account_of_jwt(app, req)
                .await?
                .ok_or_else(|| Refusal::SignInFailed {
                    why: Text::new("sign_in.account_in_browser_first")
                        .arg("account_name", app.account_name()),
                    retry: back.clone(),
                })?;
            link(app, &account, sso).await?;
            let old = Some((id, record.clone()));
            let cookie = replace_session(
                app,
                old.as_ref(),
                record.sso.clone(),
                Some(account),
                record.tokens.clone(),
                Some(binding),
            )
            .await?;
            Ok(Reply::redirect(&back).with_cookie(&cookie))
        }
        (None, None) => Err(Refusal::Unauthenticated),
    }
}

/// `POST link/disconnect`: removes the link and ends every session that relied on it; this
/// browser keeps a cloud-account session and lands on the account page.
async fn disconnect(
    app: &App,
    req: &RequestHeader,
    form: &HashMap<String, String>,
) -> Result<Reply, Refusal> {
    if !app.config.link.allow_disconnect {
        return Err(Refusal::Forbidden {
            who: String::new(),
            reason: Text::new("link.disconnect_disabled"),
        });
    }
    let (id, record) = checked_session(app, current(app, req).await?, form)?;
    let (Some(sso), Some(account)) = (&record.sso, &record.account) else {
        return Ok(Reply::redirect(&link_page_url(app)));
    };
    let registry = app.registry.as_ref().ok_or(Refusal::NotFound)?;
    let sessions = app.sessions.as_ref().ok_or(Refusal::NotFound)?;
    if let Some(existing) = registry
        .by_sso(&sso.key())
        .await
        .map_err(|_| Refusal::StoreUnavailable)?
    {
        registry
            .unlink(&existing)
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
        app.metrics.links.with_label_values(&["disconnected"]).inc();
    }
    let ended = sessions
        .destroy_all_for(&sso.key())
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    let _ = sessions.destroy(&id, Some(&record)).await;
    tracing::info!(ended, "link disconnected; sessions that relied on it ended");
    let cookie = replace_session_proven(
        app,
        None,
        None,
        Some(account.clone()),
        None,
        record.account_jwt.clone(),
        record.account_id_token.clone(),
    )
    .await?;
    Ok(Reply::redirect(&link_page_url(app)).with_cookie(&cookie))
}

// === sign-out, userinfo, forward-auth ===

/// `GET sign_out?rd=`: never signs out by itself (a cross-site link or image must not end
/// anyone's sessions). With a session it answers a page that asks to confirm, whose button
/// POSTs with the session's CSRF token (JSON clients get the action and token); without
/// one there is nothing to end, and it goes on to `rd`.
async fn sign_out_page(
    app: &App,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let rd = sign_out_rd(app, req);
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let Some(id) = sessions.id_of(req) else {
        return Ok(Reply::redirect(&rd).with_cookie(&sessions.clear_session_cookie()));
    };
    let record = current(app, req).await.ok().flatten().map(|(_, r)| r);
    let who = record.as_ref().and_then(|record| {
        record
            .sso
            .as_ref()
            .or(record.account.as_ref())
            .map(|i| i.display().to_string())
    });
    // The accounts provider's session ends too when this browser signed in there.
    let account_too = record
        .as_ref()
        .filter(|r| r.account_id_token.is_some() && app.account_provider.is_some())
        .map(|_| app.account_name().to_string());
    let everywhere = query_param(req, "everywhere").as_deref() == Some("1");
    let action = format!(
        "{}/sign_out?rd={}{}",
        app.prefix(),
        encode(&rd),
        if everywhere { "&everywhere=1" } else { "" }
    );
    let csrf = sessions.csrf_token(&id);
    if !respond::prefers_html(req) && !respond::is_navigation(req) {
        return Ok(Reply::json(
            StatusCode::OK,
            &json!({
                "sign_out": format!(
                    "{}{action}",
                    base_url(app, req, info).unwrap_or_default()
                ),
                "method": "POST",
                "csrf": csrf,
                "everywhere": everywhere,
            }),
        ));
    }
    let page = pages::sign_out_page(
        &app.pages.for_request(req),
        &pages::SignOutView {
            signed_in_as: who,
            action,
            csrf,
            back: rd,
            provider_too: app.sso.is_some(),
            account_too,
            everywhere,
        },
    );
    Ok(Reply::html(StatusCode::OK, page))
}

/// `POST sign_out?rd=[&everywhere=1]` (same-site, with the session's CSRF token): deletes
/// the session (with `everywhere=1`, every session of its Magento.com identity), then
/// ends the provider session too (RP-initiated logout with `id_token_hint`) when the
/// provider has an end-session endpoint.
async fn sign_out(
    app: &App,
    req: &RequestHeader,
    form: &HashMap<String, String>,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let rd = sign_out_rd(app, req);
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let mut ended = crate::sign_out_chain::Ended {
        had_session: sessions.id_of(req).is_some(),
        ..Default::default()
    };
    if let Some(id) = sessions.id_of(req) {
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !sessions.csrf_ok(&id, token) {
            return Err(Refusal::BadRequest(Text::new(
                "bad_request.sign_out_form_expired",
            )));
        }
        let record = sessions
            .load(&id)
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
        sessions
            .destroy(&id, record.as_ref())
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
        // Everywhere: every session of this Magento.com identity, on every instance (the
        // store's index of them; each instance drops its cached copy on the invalidation).
        let everywhere = query_param(req, "everywhere").as_deref() == Some("1")
            || form.get("everywhere").map(String::as_str) == Some("1");
        if let Some(sso) = record
            .as_ref()
            .and_then(|r| r.sso.as_ref())
            .filter(|_| everywhere)
        {
            let ended = sessions
                .destroy_all_for(&sso.key())
                .await
                .map_err(|_| Refusal::StoreUnavailable)?;
            tracing::info!(ended, "signed out everywhere");
        }
        if let Some(record) = record {
            ended.account_id_token = record.account_id_token;
            ended.sso_id_token = record.tokens.and_then(|t| t.id_token);
        }
    }
    // The providers' sessions end too (the accounts provider's, then Magento.com's), each
    // with its id_token as hint when the session still has one (after a disconnect it has
    // none for Magento.com, and the browser is still signed in there).
    let base = base_url(app, req, info);
    let step = crate::sign_out_chain::begin(app, base.as_deref(), &rd, ended).await;
    let reply = Reply::redirect(&step.location).with_cookie(&sessions.clear_session_cookie());
    Ok(keep_chain(sessions, reply, step.keep))
}

/// A provider whose logout returns no `state` (Adobe IMS): the rest of the chain waits in
/// a cookie of its own (src/session/signed_out.rs) that `signed_out` follows.
fn keep_chain(sessions: &crate::session::Sessions, reply: Reply, keep: Option<String>) -> Reply {
    match keep {
        Some(state) => reply.with_cookie(&sessions.return_cookie(&state)),
        None => reply,
    }
}

/// Where a sign-out ends: its validated `rd`, or without one the "Signed out" page (rather
/// than `/`, which would send a signed-out person straight back to a sign-in).
fn sign_out_rd(app: &App, req: &RequestHeader) -> String {
    match query_param(req, "rd") {
        Some(rd) => app.redirects.resolve(Some(&rd)),
        None => format!("{}/signed_out", app.prefix()),
    }
}

/// `GET signed_out?state=`: where a provider sends the browser after its logout. `state`
/// (or, after IMS's logout, which returns none, the cookie `sign_out` left) carries the rest
/// of the sign-out chain: the next provider's logout, or `rd`, validated again
/// (src/sign_out_chain.rs). Without either, or once the chain ends here: the "Signed out"
/// page, with "Sign in again".
async fn signed_out(app: &App, req: &RequestHeader) -> Reply {
    let sessions = app.sessions.as_ref();
    let clear = sessions
        .filter(|s| s.has_return_cookie(req))
        .map(|s| s.clear_return_cookie());
    let (state, from_cookie) = match query_param(req, "state") {
        Some(state) => (Some(state), false),
        None => (sessions.and_then(|s| s.return_destination(req)), true),
    };
    let this_page = format!("{}/signed_out", app.prefix());
    let mut keep = None;
    let next = match state {
        Some(state) => {
            let step = crate::sign_out_chain::resume(app, &state).await;
            keep = step.keep;
            // Back from IMS (no `state` in the URL): the page itself is shown at once, not
            // redirected to this very URL.
            Some(step.location).filter(|to| !(from_cookie && *to == this_page))
        }
        None => None,
    };
    let reply = match next {
        Some(to) => Reply::redirect(&to),
        None => {
            let ctx = app.pages.for_request(req);
            let html = pages::message(
                &ctx,
                &ctx.tr("signed_out.title"),
                &ctx.text(&Text::new("signed_out.what").arg("sso", app.sso_name())),
                &ctx.tr("signed_out.advice"),
                None,
                Some((
                    &ctx.tr("page.sign_in_again"),
                    &start_url(app, "/", Intent::Login),
                )),
            );
            Reply::html(StatusCode::OK, html)
        }
    };
    match (sessions, keep, clear) {
        (Some(sessions), Some(keep), _) => keep_chain(sessions, reply, Some(keep)),
        (_, _, Some(clear)) => reply.with_cookie(&clear),
        _ => reply,
    }
}

fn identity_json(sso: Option<&Identity>, account: Option<&Identity>) -> serde_json::Value {
    let i = sso.or(account);
    json!({
        "user": i.map(|i| &i.subject),
        "email": i.and_then(|i| i.email.as_ref()),
        "email_verified": i.is_some_and(|i| i.email_verified),
        "name": i.and_then(|i| i.name.as_ref()),
        "preferred_username": i.and_then(|i| i.preferred_username.as_ref()),
        "groups": i.map(|i| i.groups.clone()).unwrap_or_default(),
        "sso": sso.map(|s| json!({ "issuer": s.issuer, "subject": s.subject, "email": s.email })),
        "account": account.map(|a| json!({ "issuer": a.issuer, "subject": a.subject, "email": a.email })),
        "linked": sso.is_some() && account.is_some(),
    })
}

async fn signed_in(app: &App, req: &RequestHeader) -> Result<Arc<Passport>, Refusal> {
    match identify(app, req).await {
        Found::Passport(p) => {
            if !p.anyone() {
                return Err(Refusal::Unauthenticated);
            }
            if let Some(forbidden) = p.forbidden() {
                return Err(Refusal::Forbidden {
                    who: forbidden.who.clone(),
                    reason: Text::raw(forbidden.reason.clone()),
                });
            }
            Ok(p)
        }
        Found::Nobody { .. } => Err(Refusal::Unauthenticated),
        Found::Invalid(r) | Found::Unavailable(r) => Err(r),
        Found::InvalidAccountJwt { refusal, .. } => Err(refusal),
    }
}

/// `GET userinfo`: the signed-in identity as JSON, or 401. The passport says who may see
/// it; the identities in full come from the store (a session) or the token (a bearer).
async fn userinfo(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let passport = signed_in(app, req).await?;
    let (sso, account) = crate::proxy::identify::identities(app, req, &passport).await?;
    Ok(Reply::json(
        StatusCode::OK,
        &identity_json(sso.as_ref(), account.as_ref()),
    ))
}

/// `GET auth`: forward-auth for nginx `auth_request`, Traefik and Caddy: `202` with the
/// identity headers, or `401`/`403` (never a redirect: the front proxy decides that).
async fn forward_auth(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let passport = match signed_in(app, req).await {
        Ok(p) => p,
        Err(r) => return Ok(r.reply(false, &app.pages)),
    };
    let requirement = crate::link::requirement(&app.config.link, time::OffsetDateTime::now_utc());
    let verdict = crate::link::verdict(
        app.config.account.is_some(),
        passport.sso,
        passport.account,
        requirement,
    );
    let status = match verdict {
        crate::link::Verdict::Pass(status) => status,
        _ => {
            let refusal = Refusal::LinkRequired {
                sso: app.sso_name().to_string(),
                link_page: link_page_url(app),
            };
            return Ok(refusal.reply(false, &app.pages));
        }
    };
    let mut reply = Reply::text(StatusCode::ACCEPTED, Vec::<u8>::new());
    let forward_user = app.config.headers.pass_user_headers;
    for (name, value) in passport
        .headers
        .iter(&app.config.headers.names, forward_user)
    {
        reply = reply.with_header_value(name.clone(), value);
    }
    if let Some(value) = app.link_status_value(status) {
        let name = app.config.headers.names.link_status.clone();
        reply = reply.with_header_value(name, value);
    }
    // The names nginx users know from oauth2-proxy, for `auth_request_set` (sent whether
    // or not `headers.pass_user_headers` forwards the user headers).
    for (field, name) in [
        (Field::User, "x-auth-request-user"),
        (Field::Email, "x-auth-request-email"),
        (Field::Groups, "x-auth-request-groups"),
    ] {
        if let Some(value) = passport.headers.get(field) {
            reply = reply.with_header_value(http::HeaderName::from_static(name), value);
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn the_other_side_is_masked() {
        assert_eq!(masked("ann@example.com"), "a***@example.com");
        assert_eq!(masked("cloud-gus"), "c***");
        assert_eq!(masked(""), "***");
        assert_eq!(masked("émile@exemple.fr"), "é***@exemple.fr");
    }
}
