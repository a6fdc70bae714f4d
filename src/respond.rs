//! The one way linkgate answers a request itself: redirects, pages and JSON errors.
//!
//! Every response that does not come from an upstream is built here, so that each one carries
//! `Content-Length` (Pingora hangs or closes a connection whose self-written response lacks it),
//! `Cache-Control: no-store` (auth answers must never be cached by a shared cache) and the
//! same security headers. Nothing in this module decides *whether* to answer; it only knows
//! *how*.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use serde_json::json;

use crate::pages::{self, Text};

/// A complete response written by linkgate itself.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    content_type: &'static str,
    body: Bytes,
}

// === impl Reply ===

impl Reply {
    /// A `302 Found` to `location` (already validated by the caller).
    pub fn redirect(location: &str) -> Self {
        let mut reply = Self::new(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
        reply.push_header(header::LOCATION, location);
        reply
    }

    /// A JSON body with the given status.
    pub fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        Self::new(
            status,
            "application/json",
            Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        )
    }

    /// JSON already serialised (a JWKS), `200`.
    pub fn json_bytes(body: Bytes) -> Self {
        Self::new(StatusCode::OK, "application/json", body)
    }

    /// An HTML page with the given status.
    pub fn html(status: StatusCode, body: String) -> Self {
        Self::new(status, "text/html; charset=utf-8", Bytes::from(body))
    }

    /// A plain-text body (used by the admin listener and `202` forward-auth answers).
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    fn new(status: StatusCode, content_type: &'static str, body: Bytes) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type,
            body,
        }
    }

    /// The status this reply will be sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body this reply will be sent with.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Adds a header; a value that is not a valid header value is dropped (and logged), never
    /// sent half-formed.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        self.push_header(name, value);
        self
    }

    /// Adds a header whose value is already checked.
    pub fn with_header_value(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a `Set-Cookie` header.
    pub fn with_cookie(self, cookie: &str) -> Self {
        self.with_header(header::SET_COOKIE, cookie)
    }

    fn push_header(&mut self, name: HeaderName, value: &str) {
        match HeaderValue::from_str(value) {
            Ok(v) => self.headers.push((name, v)),
            Err(_) => tracing::error!(header = %name, "refusing to send an invalid header value"),
        }
    }

    /// Builds the response header: status, the reply's headers, `Content-Type`,
    /// `Content-Length`, `Cache-Control: no-store` and the security headers.
    pub fn header(&self) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 6))?;
        resp.insert_header(header::CONTENT_TYPE, self.content_type)?;
        resp.insert_header(header::CONTENT_LENGTH, self.body.len())?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.insert_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
        resp.insert_header(header::REFERRER_POLICY, "no-referrer")?;
        if self.content_type.starts_with("text/html") {
            resp.insert_header(header::X_FRAME_OPTIONS, "DENY")?;
            resp.insert_header(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; frame-ancestors 'none'; base-uri 'none'",
            )?;
        }
        for (name, value) in &self.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        Ok(resp)
    }

    /// Writes the whole reply to the downstream. A `HEAD` request gets the headers only.
    pub async fn send(self, session: &mut Session) -> Result<()> {
        let header = self.header()?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only || self.body.is_empty())
            .await?;
        if !head_only && !self.body.is_empty() {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }
}

/// Whether the client is a browser navigating (and so should see pages and redirects) rather
/// than a script, an XHR/fetch, or an API client (which get JSON and plain status codes).
///
/// `Sec-Fetch-Mode` decides when the browser sends it; otherwise `Accept` must prefer
/// `text/html` and the method must be `GET` or `HEAD`.
pub fn is_navigation(req: &http::request::Parts) -> bool {
    // Names, not strings: a lookup by `&str` parses the name on every request.
    const SEC_FETCH_MODE: header::HeaderName = header::HeaderName::from_static("sec-fetch-mode");
    const SEC_FETCH_DEST: header::HeaderName = header::HeaderName::from_static("sec-fetch-dest");
    const X_REQUESTED_WITH: header::HeaderName =
        header::HeaderName::from_static("x-requested-with");
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return false;
    }
    if let Some(mode) = req.headers.get(SEC_FETCH_MODE) {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate");
    }
    if let Some(dest) = req.headers.get(SEC_FETCH_DEST) {
        if !dest.as_bytes().eq_ignore_ascii_case(b"document") {
            return false;
        }
    }
    if req
        .headers
        .get(X_REQUESTED_WITH)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"))
    {
        return false;
    }
    prefers_html(req)
}

/// Whether `Accept` ranks `text/html` above `application/json` (and above `*/*`). Missing
/// `Accept` means no preference: not HTML.
pub fn prefers_html(req: &http::request::Parts) -> bool {
    let Some(accept) = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (mut html, mut json) = (None::<f32>, None::<f32>);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = Some(html.map_or(q, |h| h.max(q))),
            "application/json" => json = Some(json.map_or(q, |j| j.max(q))),
            _ => {}
        }
    }
    match (html, json) {
        (Some(h), Some(j)) => h > 0.0 && h >= j,
        (Some(h), None) => h > 0.0,
        _ => false,
    }
}

/// Why linkgate answers a request itself with an error. Each variant knows its status, a
/// stable machine-readable code, and the page it shows a person.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// No (valid) credentials for a protected resource, and the client is not a browser that
    /// could be sent to sign in.
    #[error("authentication required")]
    Unauthenticated,
    /// Signed in but not allowed by `[authz]`.
    #[error("{reason}")]
    Forbidden {
        /// Who the user is signed in as, shown so they can tell which account was refused.
        who: String,
        /// Why they were refused, in words a user understands (a policy's rule name stays
        /// as configured: [`Text::raw`]).
        reason: Text,
    },
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(Text),
    /// A bearer token that did not verify. The detail is logged, never sent: it may name the
    /// provider's internal URLs.
    #[error("the token is not valid")]
    InvalidToken(String),
    /// A sign-in that cannot complete (expired or replayed flow, another browser, the
    /// provider refused or cancelled). `retry` starts a fresh sign-in.
    #[error("{why}")]
    SignInFailed {
        /// What happened, in words a user understands.
        why: Text,
        /// Where "Try again" goes.
        retry: String,
    },
    /// Signed in, but the Magento.com link the site requires is missing (API clients; a
    /// browser sees the link page instead).
    #[error("this account is not linked to a {sso} account")]
    LinkRequired {
        /// The SSO provider's name.
        sso: String,
        /// Where a person can connect.
        link_page: String,
    },
    /// Linking refused because one side is already linked elsewhere. Nothing changed.
    #[error("{why}")]
    LinkConflict {
        /// What happened.
        why: Text,
        /// What to do about it.
        what_to_do: Text,
        /// The account page.
        link_page: String,
    },
    /// No upstream route matches the host and path.
    #[error("no application is configured for this address")]
    NoRoute,
    /// A linkgate endpoint that does not exist.
    #[error("not found")]
    NotFound,
    /// The method is not allowed on a linkgate endpoint.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A request body to a linkgate endpoint longer than it takes (a form is at most 16 KiB),
    /// refused before it is read whole.
    #[error("the request body is too large")]
    TooLarge,
    /// The session store is unreachable.
    #[error("the session store is unavailable")]
    StoreUnavailable,
    /// The identity provider could not be reached or answered nonsense. The detail (which
    /// URL, which status) is logged, never sent: an anonymous client learns nothing about
    /// the provider's internals.
    #[error("the sign-in provider is unavailable")]
    ProviderUnavailable(String),
    /// The upstream refused the connection or broke it.
    #[error("the application could not be reached")]
    BadGateway,
    /// The upstream did not answer in time.
    #[error("the application did not answer in time")]
    GatewayTimeout,
    /// A bug or an unexpected internal failure.
    #[error("internal error")]
    Internal,
}

// === impl Refusal ===

/// A provider that could not be asked is a `503` whose detail goes to the log, never to the
/// client. (A sign-in tells a provider's refusal apart before it comes to this.)
impl From<crate::oidc::OidcError> for Refusal {
    fn from(e: crate::oidc::OidcError) -> Self {
        Refusal::ProviderUnavailable(e.to_string())
    }
}

/// A store failure is a `503` (what failed was logged where it happened, by the store).
impl From<crate::store::StoreError> for Refusal {
    fn from(_: crate::store::StoreError) -> Self {
        Refusal::StoreUnavailable
    }
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::BadRequest(_) | Refusal::SignInFailed { .. } => StatusCode::BAD_REQUEST,
            Refusal::InvalidToken(_) | Refusal::LinkRequired { .. } => StatusCode::UNAUTHORIZED,
            Refusal::LinkConflict { .. } => StatusCode::CONFLICT,
            Refusal::NoRoute | Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable code for API clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::LinkRequired { .. } => "link_required",
            Refusal::LinkConflict { .. } => "link_conflict",
            Refusal::SignInFailed { .. } => "sign_in_failed",
            Refusal::NoRoute => "no_route",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::TooLarge => "payload_too_large",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::ProviderUnavailable(_) => "provider_unavailable",
            Refusal::BadGateway => "bad_gateway",
            Refusal::GatewayTimeout => "gateway_timeout",
            Refusal::Internal => "internal_error",
        }
    }

    /// What the user can do next, in one sentence (a catalogue key).
    fn advice(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "refusal.unauthenticated_advice",
            Refusal::Forbidden { .. } => "refusal.forbidden_advice",
            Refusal::BadRequest(_) => "refusal.bad_request_advice",
            Refusal::InvalidToken(_) => "refusal.invalid_token_advice",
            Refusal::LinkRequired { .. } => "refusal.link_required_advice",
            Refusal::LinkConflict { .. } => "refusal.link_conflict_advice",
            Refusal::SignInFailed { .. } => "refusal.sign_in_failed_advice",
            Refusal::NoRoute | Refusal::NotFound => "refusal.not_found_advice",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_advice",
            Refusal::TooLarge => "refusal.too_large_advice",
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                "refusal.unavailable_advice"
            }
            Refusal::BadGateway | Refusal::GatewayTimeout => "refusal.gateway_advice",
            Refusal::Internal => "refusal.internal_advice",
        }
    }

    /// The page's title (a catalogue key).
    fn title(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "refusal.unauthenticated_title",
            Refusal::Forbidden { .. } => "refusal.forbidden_title",
            Refusal::BadRequest(_) => "refusal.bad_request_title",
            Refusal::InvalidToken(_) => "refusal.invalid_token_title",
            Refusal::LinkRequired { .. } => "refusal.link_required_title",
            Refusal::LinkConflict { .. } => "refusal.link_conflict_title",
            Refusal::SignInFailed { .. } => "refusal.sign_in_failed_title",
            Refusal::NoRoute | Refusal::NotFound => "refusal.not_found_title",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_title",
            Refusal::TooLarge => "refusal.too_large_title",
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                "refusal.unavailable_title"
            }
            Refusal::BadGateway => "refusal.bad_gateway_title",
            Refusal::GatewayTimeout => "refusal.gateway_timeout_title",
            Refusal::Internal => "refusal.internal_title",
        }
    }

    /// What happened, in `ctx`'s language (the page's first paragraph, JSON's `message`).
    fn what(&self, ctx: &pages::PageContext) -> String {
        let key = match self {
            Refusal::SignInFailed { why, .. } | Refusal::LinkConflict { why, .. } => {
                return ctx.text(why)
            }
            Refusal::Forbidden { reason, .. } => {
                return ctx
                    .text(&Text::new("refusal.forbidden_what").arg("reason", ctx.text(reason)))
            }
            Refusal::BadRequest(detail) => {
                return ctx
                    .text(&Text::new("refusal.bad_request_what").arg("detail", ctx.text(detail)))
            }
            Refusal::LinkRequired { sso, .. } => {
                return ctx.text(&Text::new("refusal.link_required_what").arg("sso", sso))
            }
            Refusal::Unauthenticated => "refusal.unauthenticated_what",
            Refusal::InvalidToken(_) => "refusal.invalid_token_what",
            Refusal::NoRoute => "refusal.no_route_what",
            Refusal::NotFound => "refusal.not_found_what",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_what",
            Refusal::TooLarge => "refusal.too_large_what",
            Refusal::StoreUnavailable => "refusal.store_unavailable_what",
            Refusal::ProviderUnavailable(_) => "refusal.provider_unavailable_what",
            Refusal::BadGateway => "refusal.bad_gateway_what",
            Refusal::GatewayTimeout => "refusal.gateway_timeout_what",
            Refusal::Internal => "refusal.internal_what",
        };
        ctx.tr(key)
    }

    /// The reply for this refusal: an HTML page for a browser navigation, JSON otherwise,
    /// its human texts in `ctx`'s language (`error` stays the stable English code).
    /// Internal detail a refusal carries is logged here and left out of the reply.
    pub fn reply(&self, html: bool, ctx: &pages::PageContext) -> Reply {
        match self {
            Refusal::ProviderUnavailable(detail) => {
                tracing::warn!(detail = %detail, "sign-in provider unavailable");
            }
            Refusal::InvalidToken(detail) => {
                tracing::debug!(detail = %detail, "token refused");
            }
            _ => {}
        }
        let status = self.status();
        let advice = match self {
            Refusal::LinkConflict { what_to_do, .. } => ctx.text(what_to_do),
            _ => ctx.tr(self.advice()),
        };
        let what = self.what(ctx);
        let reply = if html {
            let who = match self {
                Refusal::Forbidden { who, .. } => Some(who.as_str()),
                _ => None,
            };
            let action = match self {
                Refusal::SignInFailed { retry, .. } => {
                    Some((ctx.tr("page.try_again"), retry.as_str()))
                }
                Refusal::LinkConflict { link_page, .. }
                | Refusal::LinkRequired { link_page, .. } => {
                    Some((ctx.tr("page.go_to_account_settings"), link_page.as_str()))
                }
                _ => None,
            };
            Reply::html(
                status,
                pages::message(
                    ctx,
                    &ctx.tr(self.title()),
                    &what,
                    &advice,
                    who,
                    action.as_ref().map(|(l, h)| (l.as_str(), *h)),
                ),
            )
        } else {
            let mut body = json!({
                "error": self.code(),
                "message": what,
                "advice": advice,
            });
            match self {
                Refusal::LinkRequired { link_page, .. } => body["link_page"] = json!(link_page),
                Refusal::LinkConflict { link_page, .. } => {
                    body["link_page"] = json!(link_page);
                }
                Refusal::SignInFailed { retry, .. } => body["retry"] = json!(retry),
                _ => {}
            }
            Reply::json(status, &body)
        };
        match self {
            Refusal::Unauthenticated => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!("Bearer realm=\"{}\"", ctx.realm),
            ),
            Refusal::LinkRequired { .. } => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!(
                    "Bearer realm=\"{}\", error=\"insufficient_user_authentication\", error_description=\"link your account to {}\"",
                    ctx.realm, ctx.realm
                ),
            ),
            Refusal::InvalidToken(_) => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!("Bearer realm=\"{}\", error=\"invalid_token\"", ctx.realm),
            ),
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                reply.with_header(header::RETRY_AFTER, "5")
            }
            _ => reply,
        }
    }
}

#[cfg(test)]
mod tests;
