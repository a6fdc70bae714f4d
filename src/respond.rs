//! The one way linkgate answers a request itself: redirects, pages and JSON errors.
//!
//! Every response that does not come from an upstream is built here, so that each one carries
//! `Content-Length` (Pingora hangs or closes a connection whose self-written response lacks it),
//! `Cache-Control: no-store` (auth answers must never be cached by a shared cache) and the
//! same security headers. Nothing in this module decides *whether* to answer; it only knows
//! *how*: [`Reply`] builds and sends a response, [`is_navigation`] / [`prefers_html`] tell
//! a page from JSON, and [`Refusal`] (src/respond/refusal.rs) is the catalogue of errors
//! each with its reply.

mod refusal;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

pub use refusal::Refusal;

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

#[cfg(test)]
mod tests;
