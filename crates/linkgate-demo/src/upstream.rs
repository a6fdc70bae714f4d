//! The demo's sample application: the upstream behind linkgate, showing what it receives.
//!
//! Every path answers "Sample application": the request's `X-Forwarded-*` and `X-Linkgate-*`
//! headers, with the link status highlighted, and links to linkgate's account page and
//! sign-out; a JSON twin answers `Accept: application/json`. `/welcome` is the demo guide,
//! which linkgate lets through without sign-in (`authz.skip_auth_routes`), so it shows that
//! such a request carries no identity at all.
//!
//! It trusts nothing it receives: it only displays it. It is reachable directly on its own
//! port too, on loopback; then it simply shows that no identity came with the request.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::web::{escape, page, prefers_html, read_body, Answer};
use crate::{ACCOUNTS_LABEL, DEMO_PASSWORD, PUBLIC_CLIENT_CALLBACK, SSO_LABEL};

const TITLE: &str = "Sample application";
const SITE: &str = "linkgate demo";
const ACCENT: &str = "#3d4b5c";
/// The header linkgate sets to `linked` or `grace`.
const LINK_STATUS: &str = "x-linkgate-link-status";

/// The sample upstream application.
#[derive(Debug, Clone)]
pub struct SampleApp {
    prefix: String,
    sso: String,
    accounts: String,
}

impl SampleApp {
    /// An app whose links point at linkgate's endpoints under `prefix` and at the two
    /// providers (their base URLs).
    pub fn new(prefix: &str, sso: &str, accounts: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            sso: sso.to_string(),
            accounts: accounts.to_string(),
        }
    }

    /// The headers this app shows: `X-Forwarded-*` and `X-Linkgate-*`, by lower-case name
    /// (several values joined with `, `).
    pub fn shown_headers(req: &RequestHeader) -> BTreeMap<String, String> {
        let mut shown: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in req.headers.iter() {
            let name = name.as_str();
            if !(name.starts_with("x-forwarded-") || name.starts_with("x-linkgate-")) {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            shown
                .entry(name.to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        shown
    }

    fn answer(&self, req: &RequestHeader) -> Answer {
        let path = req.uri.path();
        if path == "/welcome" {
            return Answer::html(StatusCode::OK, self.welcome(req));
        }
        let headers = Self::shown_headers(req);
        let wants_json = req
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"))
            && !prefers_html(req);
        if wants_json {
            return Answer::json(
                StatusCode::OK,
                &json!({
                    "application": TITLE,
                    "method": req.method.as_str(),
                    "path": path,
                    "query": req.uri.query(),
                    "link_status": headers.get(LINK_STATUS),
                    "headers": headers,
                }),
            );
        }
        Answer::html(StatusCode::OK, self.received(req, &headers))
    }

    /// "Sample application": what came with this request.
    fn received(&self, req: &RequestHeader, headers: &BTreeMap<String, String>) -> String {
        let p = escape(&self.prefix);
        let mut main = format!("<h1>{TITLE}</h1>");
        main.push_str(
            "<p>This page is the application behind linkgate. It shows what linkgate sent \
             along with your request: the identity headers, set by linkgate only (a copy sent \
             by a client is always removed first).</p>",
        );
        match headers.get(LINK_STATUS) {
            Some(status) => {
                let class = match status.as_str() {
                    "linked" => "linked",
                    "grace" => "grace",
                    _ => "none",
                };
                let _ = write!(
                    main,
                    "<p class=\"status {class}\" role=\"status\">Link status: \
                     <strong id=\"link-status\">{}</strong></p>",
                    escape(status)
                );
            }
            None => main.push_str(
                "<p class=\"status none\" role=\"status\">Link status: <strong id=\"link-status\">none</strong> \
                 (no <code>X-Linkgate-Link-Status</code> header: this request did not come \
                 through linkgate with a session)</p>",
            ),
        }
        main.push_str(&headers_table(headers));
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let _ = write!(
            main,
            "<p>Request: <code>{} {}</code></p>",
            escape(req.method.as_str()),
            escape(target)
        );
        if req.uri.path() == PUBLIC_CLIENT_CALLBACK {
            main.push_str(
                "<p>This is the return address of the <code>demo-public</code> client: the \
                 <code>code</code> above can be exchanged at the provider's token endpoint with \
                 its <code>code_verifier</code>.</p>",
            );
        }
        let _ = write!(
            main,
            "<nav aria-label=\"linkgate\"><p><a class=\"button\" href=\"{p}/link\">Account Settings</a> \
             <a class=\"button secondary\" href=\"{p}/sign_out?rd=%2Fwelcome\">Sign out</a></p>\
             <p><a href=\"/welcome\">The demo guide</a></p></nav>"
        );
        page(TITLE, SITE, ACCENT, &main)
    }

    /// `/welcome`: the guide through the flows, public.
    fn welcome(&self, req: &RequestHeader) -> String {
        let p = escape(&self.prefix);
        let sso = escape(&self.sso);
        let accounts = escape(&self.accounts);
        let headers = Self::shown_headers(req);
        let identity = headers.keys().any(|k| {
            !matches!(
                k.as_str(),
                "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
            )
        });
        let mut main = String::from("<h1>linkgate demo</h1>");
        let _ = write!(
            main,
            "<p>Everything here runs on this machine, in one process: linkgate, in front of this \
             sample application, and two development OpenID providers standing in for Magento.com \
             and accounts.magento.cloud. Since 1 April 2020 every accounts.magento.cloud account \
             must be connected to a Magento.com account; linkgate lets a request through only when \
             that link exists.</p>\
             <p>This guide is public (<code>authz.skip_auth_routes</code>), so linkgate passed it \
             {}.</p>",
            if identity {
                "on, yet with identity headers: that should never happen"
            } else {
                "on with no identity headers at all"
            }
        );
        let _ = write!(
            main,
            "<section aria-labelledby=\"users\"><h2 id=\"users\">Demo users</h2>\
             <p>Every password is <code>{DEMO_PASSWORD}</code>.</p><table><thead><tr>\
             <th scope=\"col\">Provider</th><th scope=\"col\">Users</th></tr></thead><tbody>\
             <tr><td>{}</td><td>alice@example.com, bob@example.com, or create one on the sign-in form</td></tr>\
             <tr><td>{}</td><td>alice (not linked yet), carol, dave</td></tr></tbody></table></section>",
            escape(SSO_LABEL),
            escape(ACCOUNTS_LABEL),
        );
        let sso_name = escape(SSO_LABEL);
        let _ = write!(
            main,
            "<section aria-labelledby=\"try\"><h2 id=\"try\">Try, in this order</h2><ol>\
             <li><strong>Method 1.</strong> <a href=\"{p}/account/start?rd=%2F\">Sign in to \
             accounts.magento.cloud</a> as alice. She is not linked yet, so linkgate sends you to \
             Magento.com: sign in as alice@example.com, or choose “Create account”. You land on \
             the sample application, linked.</li>\
             <li><strong>Primary login.</strong> Choose “Sign out” there (this ends the Magento.com \
             session too), then <a href=\"/\">open the application</a> and sign in at Magento.com \
             alone with the account you linked: linkgate finds the link and opens the cloud account \
             too.</li>\
             <li><strong>Method 2.</strong> <a href=\"{sso}/auth/account\">Sign in at Magento.com</a> \
             on its own page as bob@example.com, and <a href=\"{accounts}/auth/account\">sign out of \
             accounts.magento.cloud</a> if you are still signed in there as alice. Then \
             <a href=\"{p}/account/start?rd=%2F\">sign in to accounts.magento.cloud</a> \
             as carol: linkgate sends you on to Magento.com, which knows you already, so no \
             password is asked and you come back linked.</li>\
             <li><strong>Magento.com first.</strong> Sign out, <a href=\"/\">open the application</a> \
             and on Magento.com's form choose “Create account” (any new email). No cloud account is \
             connected to it, so linkgate shows “Connect your account with {sso_name}” with \
             “Sign in to accounts.magento.cloud”: sign in as dave and you come back linked, without a \
             second Magento.com password.</li>\
             <li><strong>Disconnect.</strong> On <a href=\"{p}/link\">Account Settings</a>, choose \
             “Disconnect from {sso_name}”: the link and every session that relied on it end, and \
             the next page asks you to connect again.</li>\
             <li><strong>Sign out.</strong> The application's “Sign out” ends the linkgate session, \
             the accounts.magento.cloud session when you signed in there through linkgate, and the \
             Magento.com session (RP-initiated logout), and brings you back here.</li>\
             </ol></section>"
        );
        page("Welcome", SITE, ACCENT, &main)
    }
}

fn headers_table(headers: &BTreeMap<String, String>) -> String {
    if headers.is_empty() {
        return "<p>No <code>X-Forwarded-*</code> or <code>X-Linkgate-*</code> header came with \
                this request.</p>"
            .to_string();
    }
    let mut rows = String::new();
    for (name, value) in headers {
        let class = if name == LINK_STATUS {
            " class=\"highlight\""
        } else {
            ""
        };
        let _ = write!(
            rows,
            "<tr{class}><th scope=\"row\"><code>{}</code></th><td>{}</td></tr>",
            escape(&display_name(name)),
            escape(value)
        );
    }
    format!(
        "<table><caption>Headers received (<code>X-Forwarded-*</code>, <code>X-Linkgate-*</code>)</caption>\
         <thead><tr><th scope=\"col\">Header</th><th scope=\"col\">Value</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

/// `x-linkgate-link-status` as people write it: `X-Linkgate-Link-Status`.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[async_trait]
impl ServeHttp for SampleApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Drain any body so the connection can be reused; the app never reads it.
        let _ = read_body(session).await;
        let req = session.req_header().clone();
        self.answer(&req).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], accept: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/projects?x=1", None).expect("request");
        req.insert_header("accept", accept).expect("accept");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        req
    }

    #[test]
    fn shows_only_the_forwarded_and_linkgate_families() {
        let req = request(
            &[
                ("X-Linkgate-Link-Status", "linked"),
                ("X-Forwarded-Email", "a@example.com"),
                ("Cookie", "secret=1"),
            ],
            "text/html",
        );
        let shown = SampleApp::shown_headers(&req);
        assert_eq!(shown.len(), 2, "{shown:?}");
        let html = SampleApp::new("/oauth2", "http://s", "http://a").received(&req, &shown);
        assert!(
            html.contains("<strong id=\"link-status\">linked</strong>"),
            "{html}"
        );
        assert!(html.contains("X-Linkgate-Link-Status"));
        assert!(html.contains("<title>Sample application · linkgate demo</title>"));
        assert!(!html.contains("secret=1"));
    }

    #[test]
    fn the_json_twin_answers_json_clients() {
        let req = request(&[("x-linkgate-link-status", "grace")], "application/json");
        let answer = SampleApp::new("/oauth2", "http://s", "http://a").answer(&req);
        let resp = answer.into_response();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(v["link_status"], "grace");
        assert_eq!(v["query"], "x=1");
    }

    #[test]
    fn values_are_escaped() {
        let req = request(&[("x-forwarded-user", "<script>")], "text/html");
        let shown = SampleApp::shown_headers(&req);
        let html = SampleApp::new("/oauth2", "http://s", "http://a").received(&req, &shown);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn header_names_read_as_written() {
        assert_eq!(display_name("x-forwarded-for"), "X-Forwarded-For");
    }
}
