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
use minijinja::value::Kwargs;
use minijinja::{context, Environment};
use serde::Serialize;

pub mod catalogue;
pub mod lang;

use catalogue::Catalogues;
pub use catalogue::Text;

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

/// What every page needs to know about the deployment, the compiled templates and the
/// catalogues; and the language this context writes in ([`PageContext::for_request`]).
#[derive(Clone)]
pub struct PageContext {
    /// The name of the sign-in provider as users know it ("Magento.com"); also the
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// `server.proxy_prefix`, for links to linkgate's own endpoints.
    pub prefix: String,
    shared: Arc<Shared>,
    /// The language (a position in the catalogues).
    lang: usize,
}

/// What every language shares.
struct Shared {
    /// The operator's logo, as a `data:` URL (or an URL given as such).
    logo: Option<String>,
    /// The operator's banner text.
    banner: Option<String>,
    env: Environment<'static>,
    catalogues: Arc<Catalogues>,
    /// `[pages] language`.
    default_lang: usize,
    /// `[pages] languages`: what `Accept-Language` may choose, as codes and positions.
    offered: Vec<(String, usize)>,
}

impl std::fmt::Debug for PageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageContext")
            .field("realm", &self.realm)
            .field("prefix", &self.prefix)
            .field("lang", &self.lang())
            .finish()
    }
}

impl Default for PageContext {
    fn default() -> Self {
        // The built-in templates and catalogues load; tests prove it.
        let catalogues = Arc::new(Catalogues::shipped());
        Self::build(
            "Magento.com",
            "/oauth2",
            environment(None, catalogues.clone()).unwrap_or_default(),
            catalogues,
            None,
            None,
            "en",
            &[],
        )
    }
}

/// Builds the template environment: the built-ins, then the operator's overrides, and the
/// `t(key, name=value...)` function that writes a catalogue text in the page's language.
fn environment(
    dir: Option<&Path>,
    catalogues: Arc<Catalogues>,
) -> Result<Environment<'static>, String> {
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
    let cats = catalogues.clone();
    env.add_function(
        "t",
        move |state: &minijinja::State, key: String, kwargs: Kwargs| {
            let lang = state
                .lookup("lang")
                .and_then(|v| v.as_str().and_then(|c| cats.index(c)))
                .unwrap_or(0);
            if cats.get(lang, &key).is_none() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("unknown catalogue key `{key}`"),
                ));
            }
            let mut text = Text::new(&key);
            for name in kwargs.args() {
                let value: minijinja::Value = kwargs.get(name)?;
                let value = if value.is_none() || value.is_undefined() {
                    String::new()
                } else {
                    value.to_string()
                };
                text = text.arg(name, value);
            }
            let realm = state
                .lookup("realm")
                .map(|v| v.to_string())
                .unwrap_or_default();
            Ok(minijinja::Value::from_safe_string(text.html(
                &|k| cats.get(lang, k).map(str::to_string),
                &[("realm", &realm)],
            )))
        },
    );
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
    // Render each template once in every language so a broken override (or an unknown
    // catalogue key) fails now, not for a user.
    for code in catalogues.codes() {
        for (name, _) in TEMPLATES {
            let template = env.get_template(name).map_err(|e| format!("{name}: {e}"))?;
            template
                .render(context! { title => "check", site => "check", lang => code, realm => "check", v => AccountView::default(), s => SignOutView::default() })
                .map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(env)
}

impl PageContext {
    /// Compiles the pages for a deployment: built-in templates overridden from
    /// `templates_dir`, the catalogues with `catalogue_dir` over them, the logo file read
    /// into a `data:` URL.
    pub fn load(realm: &str, prefix: &str, pages: &crate::config::Pages) -> Result<Self, String> {
        let catalogues = Arc::new(Catalogues::load(pages.catalogue_dir.as_deref())?);
        let env = environment(pages.templates_dir.as_deref(), catalogues.clone())?;
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
        let languages: Vec<&str> = pages.languages.iter().map(String::as_str).collect();
        if catalogues.index(&pages.language).is_none() {
            return Err(format!(
                "pages.language: unknown language `{}`",
                pages.language
            ));
        }
        Ok(Self::build(
            realm,
            prefix,
            env,
            catalogues,
            logo,
            pages.banner.clone(),
            &pages.language,
            &languages,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        realm: &str,
        prefix: &str,
        env: Environment<'static>,
        catalogues: Arc<Catalogues>,
        logo: Option<String>,
        banner: Option<String>,
        language: &str,
        languages: &[&str],
    ) -> Self {
        let default_lang = catalogues.index(language).unwrap_or(0);
        let offered = if languages.is_empty() {
            catalogues.codes().map(str::to_string).collect::<Vec<_>>()
        } else {
            languages.iter().map(|c| c.to_string()).collect()
        };
        let offered = offered
            .into_iter()
            .filter_map(|c| catalogues.index(&c).map(|i| (c, i)))
            .collect();
        Self {
            realm: realm.to_string(),
            prefix: prefix.to_string(),
            shared: Arc::new(Shared {
                logo,
                banner,
                env,
                catalogues,
                default_lang,
                offered,
            }),
            lang: default_lang,
        }
    }

    /// This context in the language the request asks for (`Accept-Language` among
    /// `[pages] languages`), else the configured one.
    pub fn for_request(&self, req: &http::request::Parts) -> Self {
        let accept = req
            .headers
            .get(http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        let codes: Vec<&str> = self
            .shared
            .offered
            .iter()
            .map(|(c, _)| c.as_str())
            .collect();
        let lang = match lang::negotiate(accept, &codes) {
            Some(i) => self.shared.offered[i].1,
            None => self.shared.default_lang,
        };
        Self {
            lang,
            ..self.clone()
        }
    }

    /// The language code this context writes in (`<html lang>`).
    pub fn lang(&self) -> &str {
        self.shared.catalogues.code(self.lang)
    }

    /// `text` in this context's language, as plain words (pages escape it when shown).
    pub fn text(&self, text: &Text) -> String {
        let cats = &self.shared.catalogues;
        text.plain(
            &|k| cats.get(self.lang, k).map(str::to_string),
            &[("realm", &self.realm)],
        )
    }

    /// The catalogue text `key` (without values but the realm) in this context's language.
    pub fn tr(&self, key: &str) -> String {
        self.text(&Text::new(key))
    }

    fn render(&self, name: &str, title: &str, extra: minijinja::Value) -> String {
        let ctx = context! {
            title => title,
            site => self.text(&Text::new("page.site")),
            lang => self.lang(),
            realm => &self.realm,
            prefix => &self.prefix,
            logo => &self.shared.logo,
            banner => &self.shared.banner,
            ..extra
        };
        match self
            .shared
            .env
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
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
    ctx.render(
        "account.html",
        &ctx.tr("account.title"),
        context! { v => v },
    )
}

/// The page for a Magento.com sign-in that has no linked cloud account while the rule is
/// enforced: what the rule is, and how to connect.
pub fn link_required(ctx: &PageContext, v: &AccountView) -> String {
    ctx.render(
        "link_required.html",
        &ctx.text(&Text::new("link_required.title").arg("sso", &v.sso_name)),
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
    /// The accounts provider's name, when its session ends too.
    pub account_too: Option<String>,
    /// Whether every session of this identity ends (`sign_out?everywhere=1`).
    pub everywhere: bool,
}

/// The page `GET sign_out` answers: a button that signs out (a POST with the CSRF token),
/// so that a link or an image from another site never signs anyone out.
pub fn sign_out_page(ctx: &PageContext, v: &SignOutView) -> String {
    ctx.render(
        "sign_out.html",
        &ctx.tr("sign_out.title"),
        context! { s => v },
    )
}

#[cfg(test)]
mod tests;
