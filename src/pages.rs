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
a{color:#0b5fab}button.secondary{background:#fff;color:#0b5fab;border:1px solid #0b5fab}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}\
.notice{background:#fff4d6;border-left:4px solid #f0a000;padding:.5rem .75rem}@media(max-width:40rem){main{margin:0;border-radius:0;padding:1.25rem}}";

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

/// What the account page shows.
#[derive(Debug, Clone, Default)]
pub struct AccountView {
    /// The SSO provider's name ("Magento.com").
    pub sso_name: String,
    /// The cloud account provider's name ("accounts.magento.cloud").
    pub account_name: String,
    /// The cloud account signed in (email or id), if any.
    pub account: Option<String>,
    /// The linked Magento.com account (email or id), when connected.
    pub connected_as: Option<String>,
    /// The Magento.com account signed in but not linked, if any.
    pub sso_unlinked: Option<String>,
    /// A notice when unlinked sessions are still let through (grace).
    pub grace_notice: Option<String>,
    /// Whether "Disconnect" is offered.
    pub allow_disconnect: bool,
    /// The CSRF token for the forms.
    pub csrf: String,
    /// Where to sign in to the cloud account (oauth2 source), when that is needed.
    pub account_sign_in: Option<String>,
    /// Where the cloud account sign-in happens instead (jwt source), when that is needed.
    pub account_hint: Option<String>,
}

/// The account page: "Account Settings" with its "Single Sign-On" section, as users know it
/// from accounts.magento.cloud.
pub fn account_page(ctx: &PageContext, v: &AccountView) -> String {
    let p = escape(&ctx.prefix);
    let sso = escape(&v.sso_name);
    let mut main = String::new();
    if let Some(account) = &v.account {
        let _ = write!(
            main,
            "<p>Signed in to {} as <strong>{}</strong>.</p>",
            escape(&v.account_name),
            escape(account)
        );
    }
    if let Some(notice) = &v.grace_notice {
        let _ = write!(
            main,
            "<p class=\"notice\" role=\"status\">{}</p>",
            escape(notice)
        );
    }
    let _ = write!(
        main,
        "<section aria-labelledby=\"sso\"><h2 id=\"sso\">Single Sign-On</h2>\
         <dl><dt>Provider</dt><dd>{sso}</dd><dt>Status</dt><dd id=\"status\">{}</dd></dl>",
        if v.connected_as.is_some() {
            "Connected"
        } else {
            "Not Connected"
        }
    );
    let csrf = escape(&v.csrf);
    match (&v.connected_as, &v.account) {
        (Some(email), _) => {
            let _ = write!(
                main,
                "<p>Your {} login is <strong>{}</strong>: it is now the primary login for both accounts.</p>",
                sso,
                escape(email)
            );
            if v.allow_disconnect {
                let _ = write!(
                    main,
                    "<form method=\"post\" action=\"{p}/link/disconnect\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" class=\"secondary\">Disconnect from {sso}</button></form>"
                );
            }
        }
        (None, Some(_)) => {
            let _ = write!(
                main,
                "<p>Connect your cloud account with your {sso} account. You will sign in at {sso} \
                 (or create an account there); if you are already signed in there, no password is asked.</p>\
                 <form method=\"post\" action=\"{p}/link/connect\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Connect with {sso}</button></form>"
            );
        }
        (None, None) => {
            if let Some(who) = &v.sso_unlinked {
                let _ = write!(
                    main,
                    "<p>You are signed in with {sso} as <strong>{}</strong>, but no {} account is connected to it.</p>",
                    escape(who),
                    escape(&v.account_name)
                );
            }
            if let Some(url) = &v.account_sign_in {
                let _ = write!(
                    main,
                    "<p><a class=\"button\" href=\"{}\">Sign in to {}</a></p>",
                    escape(url),
                    escape(&v.account_name)
                );
            } else if let Some(hint) = &v.account_hint {
                let _ = write!(main, "<p>{}</p>", escape(hint));
            }
        }
    }
    main.push_str("</section>");
    let _ = write!(
        main,
        "<form method=\"post\" action=\"{p}/sign_out\"><button type=\"submit\" class=\"secondary\">Sign out</button></form>"
    );
    layout("Account Settings", &main)
}

/// The page for a Magento.com sign-in that has no linked cloud account while the rule is
/// enforced: what the rule is, and how to connect.
pub fn link_required(ctx: &PageContext, v: &AccountView) -> String {
    let sso = escape(&v.sso_name);
    let account = escape(&v.account_name);
    let mut main = String::new();
    let _ = write!(
        main,
        "<p>Since 1 April 2020 every {account} account must be connected to a {sso} account, \
         and the {sso} login is the primary login for both.</p>"
    );
    if let Some(who) = &v.sso_unlinked {
        let _ = write!(
            main,
            "<p>You are signed in with {sso} as <strong>{}</strong>, but no {account} account is connected to it yet.</p>",
            escape(who)
        );
    }
    if let Some(url) = &v.account_sign_in {
        let _ = write!(
            main,
            "<p>Sign in to your {account} account to connect it.</p>\
             <p><a class=\"button\" href=\"{}\">Sign in to {account}</a></p>",
            escape(url)
        );
    } else if let Some(hint) = &v.account_hint {
        let _ = write!(main, "<p>{}</p>", escape(hint));
    }
    let _ = write!(
        main,
        "<p><a href=\"{}/link\">Account Settings</a></p>\
         <form method=\"post\" action=\"{}/sign_out\"><button type=\"submit\" class=\"secondary\">Sign out</button></form>",
        escape(&ctx.prefix),
        escape(&ctx.prefix)
    );
    layout(&format!("Connect your account with {}", v.sso_name), &main)
}
