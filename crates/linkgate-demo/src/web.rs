//! What the demo's services share: complete answers with the security headers, query and
//! form parameters, a bounded body, HTML escaping, and the page layout.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;

/// A complete answer of a demo service. Every one carries `Content-Length`,
/// `Cache-Control: no-store` and the security headers, like linkgate's own answers.
#[derive(Debug)]
pub(crate) struct Answer {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Answer {
    /// An HTML page.
    pub(crate) fn html(status: StatusCode, body: String) -> Self {
        Self::new(status, "text/html; charset=utf-8", body.into_bytes())
    }

    /// A JSON document.
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        Self::new(
            status,
            "application/json",
            serde_json::to_vec_pretty(body).unwrap_or_default(),
        )
    }

    /// A `303 See Other` to `location`: the browser follows with a `GET`, whatever the method
    /// that led here.
    pub(crate) fn see_other(location: &str) -> Self {
        Self::new(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            Vec::new(),
        )
        .header(header::LOCATION, location)
    }

    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header; an invalid value is dropped (and logged), never sent half-formed.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(v) => self.headers.push((name, v)),
            Err(_) => tracing::error!(header = %name, "demo: refusing an invalid header value"),
        }
        self
    }

    /// The status it will be sent with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The response for Pingora.
    pub(crate) fn into_response(self) -> Response<Vec<u8>> {
        let len = self.body.len();
        let html = self.content_type.starts_with("text/html");
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Codes and states travel in URLs: never leak them in a Referer.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if html {
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            // No `form-action`: a sign-in form's answer redirects to the application, and
            // browsers check redirects after a form against it.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
        }
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }
}

/// Query or form parameters, in order; a repeated name is kept so it can be refused
/// (OAuth 2.0 forbids repeating a parameter).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text (a query string or a form body).
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, when present and not empty.
    pub(crate) fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The first parameter name that appears more than once, if any.
    pub(crate) fn repeated(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (k, _))| {
            self.0[..i]
                .iter()
                .any(|(earlier, _)| earlier == k)
                .then_some(k.as_str())
        })
    }
}

/// The largest request body a demo service reads.
const MAX_BODY: usize = 64 * 1024;

/// Reads the whole request body (bounded); `None` when it is too large or unreadable.
pub(crate) async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return None;
                }
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

/// Wraps already-escaped `main` HTML in the demo's layout: self-contained (inline CSS, no
/// assets from the internet), readable without JavaScript. `title` and `site` are plain text;
/// the document title reads "{title} · {site}" so a person always knows where they are.
pub(crate) fn page(title: &str, site: &str, accent: &str, main_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {site}</title><style>:root{{--accent:{accent}}}{STYLE}</style></head>\
<body><header class=\"site\"><p>{site}</p></header><main>{main_html}</main></body></html>\n",
        title = escape(title),
        site = escape(site),
        accent = escape(accent),
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
color:#1a1a1a;background:#f4f4f4;margin:0}header.site{background:var(--accent);color:#fff;\
padding:.5rem 1rem;font-weight:600}header.site p{margin:0;max-width:44rem;margin:0 auto}\
main{max-width:44rem;margin:2rem auto;padding:2rem;background:#fff;border-radius:8px;\
box-shadow:0 1px 3px rgba(0,0,0,.15)}h1{font-size:1.5rem;margin-top:0}h2{font-size:1.15rem}\
label{display:block;font-weight:600;margin-top:1rem}input{font:inherit;width:100%;\
box-sizing:border-box;padding:.5rem;border:1px solid #767676;border-radius:4px}\
button,.button{font:inherit;background:var(--accent);color:#fff;border:0;border-radius:4px;\
padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;display:inline-block;margin-top:1rem}\
button.secondary{background:#fff;color:var(--accent);border:1px solid var(--accent)}\
button:focus,.button:focus,a:focus,input:focus{outline:3px solid #f0a000;outline-offset:2px}\
a{color:var(--accent)}.dev{background:#fff4d6;border-left:4px solid #f0a000;padding:.5rem .75rem}\
.error{background:#fde7e7;border-left:4px solid #b00020;padding:.5rem .75rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .5rem;\
border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:break-word}caption{text-align:left;\
font-weight:600;padding:.25rem 0}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.95em}\
tr.highlight{background:#e6f4ea}.status{font-size:1.2rem;padding:.5rem .75rem;border-radius:4px;\
border:2px solid #767676}.status.linked{border-color:#1e7b34;background:#e6f4ea}\
.status.grace{border-color:#f0a000;background:#fff4d6}.status.none{background:#f4f4f4}\
form.inline{display:inline}li{margin:.4rem 0}\
@media(max-width:40rem){main{margin:0;border-radius:0;padding:1.25rem}}";

/// `text` with the five HTML-special characters escaped.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `Accept` ranks `text/html` above `application/json`. Missing `Accept` means no
/// preference: not HTML.
pub(crate) fn prefers_html(req: &http::request::Parts) -> bool {
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
mod tests {
    use super::*;

    #[test]
    fn params_find_repeats() {
        let p = Params::parse(b"a=1&b=2&a=3");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.repeated(), Some("a"));
        assert_eq!(Params::parse(b"a=1&b=").nonempty("b"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
