//! The HTML pages a person meets at linkgate: one layout, self-contained (no assets from the
//! internet), readable without JavaScript. Every dynamic value is HTML-escaped here; callers
//! pass plain text.

use std::fmt::Write as _;

/// What every page needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct PageContext {
    /// The name of the sign-in provider as users know it ("Magento.com"); also the
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// `server.proxy_prefix`, for links to linkgate's own endpoints.
    pub prefix: String,
}

impl Default for PageContext {
    fn default() -> Self {
        Self {
            realm: "Magento.com".to_string(),
            prefix: "/oauth2".to_string(),
        }
    }
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
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

/// Wraps already-escaped `main` HTML in the common layout.
pub fn layout(title: &str, main_html: &str) -> String {
    let title = escape(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · linkgate</title><style>{STYLE}</style></head>\
<body><main><h1>{title}</h1>{main_html}</main></body></html>\n"
    )
}

/// A page that tells what happened, why, and what to do next.
pub fn message(
    ctx: &PageContext,
    title: &str,
    what: &str,
    advice: &str,
    signed_in_as: Option<&str>,
    action: Option<(&str, &str)>,
) -> String {
    let mut main = String::new();
    let _ = write!(main, "<p>{}</p>", escape(what));
    if let Some(who) = signed_in_as {
        let _ = write!(
            main,
            "<p>You are signed in as <strong>{}</strong>.</p>",
            escape(who)
        );
    }
    let _ = write!(main, "<p>{}</p>", escape(advice));
    if let Some((label, href)) = action {
        let _ = write!(
            main,
            "<p><a class=\"button\" href=\"{}\">{}</a></p>",
            escape(href),
            escape(label)
        );
    }
    if signed_in_as.is_some() {
        let _ = write!(
            main,
            "<form method=\"post\" action=\"{}/sign_out\"><button type=\"submit\">Sign out</button></form>",
            escape(&ctx.prefix)
        );
    }
    layout(title, &main)
}

const STYLE: &str = "body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
color:#1a1a1a;background:#f4f4f4;margin:0}main{max-width:36rem;margin:3rem auto;padding:2rem;\
background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.15)}h1{font-size:1.5rem;\
margin-top:0}button,.button{font:inherit;background:#0b5fab;color:#fff;border:0;border-radius:4px;\
padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;display:inline-block}\
button:focus,.button:focus,a:focus{outline:3px solid #f0a000;outline-offset:2px}\
a{color:#0b5fab}@media(max-width:40rem){main{margin:0;border-radius:0;padding:1.25rem}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_escapes_everything_dynamic() {
        let html = message(
            &PageContext::default(),
            "Access <denied>",
            "x\"><script>alert(1)</script>",
            "do & retry",
            Some("<img src=x>"),
            Some(("Try <again>", "/oauth2/start?rd=%2F&x=\"")),
        );
        assert!(html.contains("href=\"/oauth2/start?rd=%2F&amp;x=&quot;\""));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img src=x>"));
        assert!(html.contains("Access &lt;denied&gt;"));
        assert!(html.contains("do &amp; retry"));
        assert!(html.contains("action=\"/oauth2/sign_out\""));
    }
}
