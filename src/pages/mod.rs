//! The HTML pages a person meets at linkgate: one layout, self-contained (no assets from the
//! internet), readable without JavaScript, responsive down to a phone.
//!
//! Pages are rendered with minijinja from the templates in `src/pages/templates/`, compiled
//! into the binary. Operators may replace any of them with a file of the same name in
//! `[pages] templates_dir` (oauth2-proxy's `custom_templates_dir` habit); every template is
//! compiled at start, so a broken one stops linkgate with its error rather than failing a
//! user later. Autoescaping is on for every template: callers pass plain text.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use minijinja::{context, Environment};
use serde::Serialize;

/// The built-in templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("message.html", include_str!("templates/message.html")),
    ("account.html", include_str!("templates/account.html")),
    (
        "link_required.html",
        include_str!("templates/link_required.html"),
    ),
    ("sign_out.html", include_str!("templates/sign_out.html")),
];

/// What every page needs to know about the deployment, and the compiled templates.
#[derive(Clone)]
pub struct PageContext {
    /// The name of the sign-in provider as users know it ("Magento.com"); also the
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// `server.proxy_prefix`, for links to linkgate's own endpoints.
    pub prefix: String,
    /// The operator's logo, as a `data:` URL (or an URL given as such).
    pub logo: Option<String>,
    /// The operator's banner text.
    pub banner: Option<String>,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for PageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageContext")
            .field("realm", &self.realm)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for PageContext {
    fn default() -> Self {
        Self {
            realm: "Magento.com".to_string(),
            prefix: "/oauth2".to_string(),
            logo: None,
            banner: None,
            // The built-in templates compile; a test proves it.
            env: Arc::new(environment(None).unwrap_or_default()),
        }
    }
}

/// Builds the template environment: the built-ins, then the operator's overrides.
fn environment(dir: Option<&Path>) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    // minijinja's HTML escaping also escapes `/`, which makes every URL in an attribute
    // unreadable in the page source; escape exactly what HTML needs, nothing more.
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == minijinja::AutoEscape::None || value.is_safe() {
            return minijinja::escape_formatter(out, state, value);
        }
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        write!(out, "{}", escape(&value.to_string())).map_err(minijinja::Error::from)
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|e| format!("built-in template {name}: {e}"))?;
    }
    if let Some(dir) = dir {
        for (name, _) in TEMPLATES {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let source =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    // Render each template once so a broken override fails now, not for a user.
    for (name, _) in TEMPLATES {
        let template = env.get_template(name).map_err(|e| format!("{name}: {e}"))?;
        template
            .render(context! { title => "check", site => "check", v => AccountView::default(), s => SignOutView::default() })
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(env)
}

impl PageContext {
    /// Compiles the pages for a deployment: built-in templates overridden from
    /// `templates_dir`, the logo file read into a `data:` URL.
    pub fn load(realm: &str, prefix: &str, pages: &crate::config::Pages) -> Result<Self, String> {
        let env = environment(pages.templates_dir.as_deref())?;
        let logo = match &pages.logo {
            None => None,
            Some(logo) if logo.starts_with("data:") || logo.starts_with("https://") => {
                Some(logo.clone())
            }
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("pages.logo {path}: {e}"))?;
                let mime = match Path::new(path).extension().and_then(|e| e.to_str()) {
                    Some("svg") => "image/svg+xml",
                    Some("png") => "image/png",
                    Some("jpg" | "jpeg") => "image/jpeg",
                    Some("gif") => "image/gif",
                    Some("webp") => "image/webp",
                    _ => {
                        return Err(format!(
                            "pages.logo {path}: use an .svg, .png, .jpg, .gif or .webp file"
                        ))
                    }
                };
                Some(format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ))
            }
        };
        Ok(Self {
            realm: realm.to_string(),
            prefix: prefix.to_string(),
            logo,
            banner: pages.banner.clone(),
            env: Arc::new(env),
        })
    }

    fn render(&self, name: &str, title: &str, extra: minijinja::Value) -> String {
        let ctx = context! {
            title => title,
            site => format!("{} sign-in", self.realm),
            realm => &self.realm,
            prefix => &self.prefix,
            logo => &self.logo,
            banner => &self.banner,
            ..extra
        };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => html,
            Err(e) => {
                // Templates were rendered once at start; this is a bug, never a blank page.
                tracing::error!(template = name, error = %e, "page rendering failed");
                format!(
                    "<!doctype html><title>{}</title><h1>{}</h1>",
                    escape(title),
                    escape(title)
                )
            }
        }
    }
}

/// Escapes text for HTML element content and double-quoted attribute values (used where
/// no template is involved).
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

/// A page that tells what happened, why, and what to do next.
pub fn message(
    ctx: &PageContext,
    title: &str,
    what: &str,
    advice: &str,
    signed_in_as: Option<&str>,
    action: Option<(&str, &str)>,
) -> String {
    ctx.render(
        "message.html",
        title,
        context! {
            what => what,
            advice => advice,
            signed_in_as => signed_in_as,
            action => action.map(|(label, href)| context! { label => label, href => href }),
        },
    )
}

/// What the account page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountView {
    /// Where the person stands: `nothing`, `cloud_only`, `sso_only`, `both_unlinked`
    /// (both proven, not yet connected), `linked`, `linked_to_someone_else`.
    pub state: String,
    /// How the rule applies: `enforce`, `grace` (before `required_from`), `warn`, `off`.
    pub mode: String,
    /// The SSO provider's name ("Magento.com").
    pub sso_name: String,
    /// The cloud account provider's name ("accounts.magento.cloud").
    pub account_name: String,
    /// The cloud account signed in (email or id), if any: the session's, or the one the
    /// platform's JWT names (`account_from_jwt`).
    pub account: Option<String>,
    /// Whether `account` comes from the platform's JWT, not yet connected to the session.
    pub account_from_jwt: bool,
    /// The linked Magento.com account (email or id), when connected.
    pub connected_as: Option<String>,
    /// The Magento.com account signed in but not linked, if any.
    pub sso_unlinked: Option<String>,
    /// The Magento.com account signed in, linked or not.
    pub signed_in_sso: Option<String>,
    /// A notice when unlinked sessions are still let through (grace, warn).
    pub grace_notice: Option<String>,
    /// Why connecting cannot work as things stand (the other side is linked to someone else).
    pub conflict: Option<String>,
    /// What to do about `conflict`, with the operator's command.
    pub conflict_fix: Option<String>,
    /// Whether "Disconnect" is offered.
    pub allow_disconnect: bool,
    /// The CSRF token for the forms.
    pub csrf: String,
    /// Where to sign in to the cloud account (oauth2 source), when that is needed.
    pub account_sign_in: Option<String>,
    /// Where the cloud account sign-in happens instead (jwt source), when that is needed.
    pub account_hint: Option<String>,
    /// This page again, to look for the platform's JWT after signing in there (jwt source).
    pub check_again: Option<String>,
    /// The page being looked at (where a connect from it returns).
    pub here: String,
}

/// The account page: "Account Settings" with its "Single Sign-On" section, as users know it
/// from accounts.magento.cloud.
pub fn account_page(ctx: &PageContext, v: &AccountView) -> String {
    ctx.render("account.html", "Account Settings", context! { v => v })
}

/// The page for a Magento.com sign-in that has no linked cloud account while the rule is
/// enforced: what the rule is, and how to connect.
pub fn link_required(ctx: &PageContext, v: &AccountView) -> String {
    ctx.render(
        "link_required.html",
        &format!("Connect your account with {}", v.sso_name),
        context! { v => v },
    )
}

/// What the sign-out confirmation page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignOutView {
    /// Who is signed in (email or id), when known.
    pub signed_in_as: Option<String>,
    /// Where the form posts (`{prefix}/sign_out?rd=…`).
    pub action: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// Where "Stay signed in" goes (the validated `rd`).
    pub back: String,
    /// Whether the provider's session ends too.
    pub provider_too: bool,
    /// Whether every session of this identity ends (`sign_out?everywhere=1`).
    pub everywhere: bool,
}

/// The page `GET sign_out` answers: a button that signs out (a POST with the CSRF token),
/// so that a link or an image from another site never signs anyone out.
pub fn sign_out_page(ctx: &PageContext, v: &SignOutView) -> String {
    ctx.render("sign_out.html", "Sign out", context! { s => v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_templates_compile() {
        environment(None).unwrap();
    }

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
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img src=x>"));
        assert!(html.contains("Access &lt;denied&gt;"));
        assert!(html.contains("do &amp; retry"));
        assert!(html.contains("href=\"/oauth2/sign_out\""));
        assert!(
            html.contains("<title>Access &lt;denied&gt; · Magento.com sign-in</title>"),
            "{html}"
        );
    }

    #[test]
    fn the_account_page_shows_the_single_sign_on_section() {
        let v = AccountView {
            sso_name: "Magento.com".into(),
            account_name: "accounts.magento.cloud".into(),
            account: Some("ann".into()),
            connected_as: Some("ann@example.com".into()),
            allow_disconnect: true,
            csrf: "tok".into(),
            ..AccountView::default()
        };
        let html = account_page(&PageContext::default(), &v);
        assert!(html.contains("<h2 id=\"sso\">Single Sign-On</h2>"));
        assert!(html.contains("<dd id=\"status\">Connected</dd>"));
        assert!(html.contains("Disconnect from Magento.com"));
        assert!(html.contains("value=\"tok\""));
    }

    #[test]
    fn operators_override_templates_and_broken_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("message.html"),
            "{% extends \"base.html\" %}{% block main %}<p class=custom>{{ what }}</p>{% endblock %}",
        )
        .unwrap();
        let pages = crate::config::Pages {
            templates_dir: Some(dir.path().to_path_buf()),
            logo: None,
            banner: Some("Staging <env>".into()),
        };
        let ctx = PageContext::load("Magento.com", "/oauth2", &pages).unwrap();
        let html = message(&ctx, "T", "custom text", "a", None, None);
        assert!(html.contains("<p class=custom>custom text</p>"), "{html}");
        assert!(html.contains("Staging &lt;env&gt;"));
        std::fs::write(dir.path().join("account.html"), "{% if %}").unwrap();
        let err = PageContext::load("Magento.com", "/oauth2", &pages).unwrap_err();
        assert!(err.contains("account.html"), "{err}");
    }
}
