//! What the endpoints share: reading the query and a same-site form (the CSRF checks), the
//! gate's own base URL and which hosts it may build URLs on, the request's session, and a
//! new session in place of the old one.

use std::collections::HashMap;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::RequestInfo;
use crate::app::App;
use crate::identity::{Identity, OpaqueId};
use crate::oidc::Tokens;
use crate::pages::Text;
use crate::respond::Refusal;
use crate::session::{JwtBinding, SessionRecord, Sessions};

/// The largest form body an endpoint reads.
pub(super) const MAX_FORM: usize = 16 * 1024;

/// The query parameter `name`, decoded.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a url-encoded form body (bounded) after checking that the POST comes from this
/// site: `Sec-Fetch-Site`, then `Origin`, when the browser sends them.
pub(super) async fn form(
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
pub(super) const MAX_HOST: usize = 261;

/// Whether linkgate may build its own URLs (`redirect_uri`, the sign-out return) on `host`:
/// a name an upstream's `hosts` lists (exactly or by `*.` pattern), or the address the
/// connection came in on (`127.0.0.1:4180` when the browser opened that, `localhost:4180`
/// on a loopback listener; the port may be left out when it is the scheme's default). Without `public_url` and without `hosts`, a
/// gate reached by a DNS name therefore refuses to start sign-ins: set `public_url`. Why
/// not any well-formed host: a provider that accepts redirect URIs by pattern, a cache keyed
/// without `Host`, or a log reader would each trust a name the client chose.
pub(super) fn host_is_ours(app: &App, host: &str, scheme: &str, info: RequestInfo) -> bool {
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

/// The session of the request, if any (a store failure is a refusal). A session whose
/// account came from the platform's JWT is used only while the request's JWT still names
/// that account (else it is ended here, as on any request).
pub(super) async fn current(
    app: &App,
    req: &RequestHeader,
) -> Result<Option<(OpaqueId, SessionRecord)>, Refusal> {
    let Some(sessions) = &app.sessions else {
        return Ok(None);
    };
    let Some(id) = sessions.id_of(req) else {
        return Ok(None);
    };
    match sessions.load(&id).await? {
        Some(record) if crate::identify::session_keeps(app, req, &id, &record).await? => {
            Ok(Some((id, record)))
        }
        _ => Ok(None),
    }
}

/// Replaces the browser's session (if any) with a new one: a new id at every sign-in.
/// `account_jwt`: the platform JWT `account` came from, which the new session follows.
/// The accounts provider's id_token (for its sign-out) is the old session's when it holds
/// the same account.
pub(super) async fn replace_session(
    sessions: &Sessions,
    old: Option<&(OpaqueId, SessionRecord)>,
    sso: Option<Identity>,
    account: Option<Identity>,
    tokens: Option<Tokens>,
    account_jwt: Option<JwtBinding>,
) -> Result<String, Refusal> {
    let proven = Proven {
        sso,
        account,
        tokens,
        account_jwt,
        account_id_token: None,
    };
    replace_session_proven(sessions, old, proven).await
}

/// What a new session is made of.
pub(super) struct Proven {
    /// The Magento.com identity.
    pub(super) sso: Option<Identity>,
    /// The cloud account.
    pub(super) account: Option<Identity>,
    /// The SSO tokens.
    pub(super) tokens: Option<Tokens>,
    /// The platform JWT `account` came from.
    pub(super) account_jwt: Option<JwtBinding>,
    /// The accounts provider's id_token, after a sign-in there.
    pub(super) account_id_token: Option<String>,
}

/// [`replace_session`] after a sign-in at the accounts provider, with its id_token (else
/// the old session's when it holds the same account).
pub(super) async fn replace_session_proven(
    sessions: &Sessions,
    old: Option<&(OpaqueId, SessionRecord)>,
    proven: Proven,
) -> Result<String, Refusal> {
    let Proven {
        sso,
        account,
        tokens,
        account_jwt,
        account_id_token,
    } = proven;
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
        .await?;
    if let Some((old_id, old_record)) = old {
        // Best effort: the new session is already in place.
        let _ = sessions.destroy(old_id, Some(old_record)).await;
    }
    Ok(sessions.session_cookie(&id))
}

pub(super) fn checked_session(
    sessions: &Sessions,
    session: Option<(OpaqueId, SessionRecord)>,
    form: &HashMap<String, String>,
) -> Result<(OpaqueId, SessionRecord), Refusal> {
    let (id, record) = session.ok_or(Refusal::Unauthenticated)?;
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !sessions.csrf_ok(&id, token) {
        return Err(Refusal::BadRequest(Text::new("bad_request.form_expired")));
    }
    Ok((id, record))
}

/// The identity a session is known by: its Magento.com identity, else its cloud account.
pub(super) fn primary_key(record: &SessionRecord) -> Option<String> {
    record
        .sso
        .as_ref()
        .or(record.account.as_ref())
        .map(|i| i.key())
}
