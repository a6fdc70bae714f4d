//! `[account]`: where the cloud account (accounts.magento.cloud) comes from, either a second
//! OAuth2/OIDC sign-in (`source = "oauth2"`, the keys of `[sso]`) or the signed JWT the
//! platform already sets (`source = "jwt"`, in a cookie or header). Keys of the other
//! source are refused by name.

use std::time::Duration;

use url::Url;

use super::names::is_cookie_token;
use super::provider::{algs, issuer, ProviderKind, HTTP};
use super::reader::{Ctx, ListForm, Table};
use super::Provider;

/// `[account]`: where the cloud account identity comes from.
#[derive(Debug, Clone)]
pub struct Account {
    /// Name shown to users (`display_name`, default "accounts.magento.cloud").
    pub display_name: String,
    /// `source = "oauth2"` or `"jwt"` with its settings.
    pub source: AccountSource,
}

/// The two ways the account identity arrives.
// Built once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AccountSource {
    /// `source = "oauth2"`: linkgate runs a second login against the accounts provider.
    OAuth2(Provider),
    /// `source = "jwt"`: the platform sets a signed JWT that linkgate verifies.
    Jwt(JwtSource),
}

/// `[account]` with `source = "jwt"`.
#[derive(Debug, Clone)]
pub struct JwtSource {
    /// Where the token is read from (`cookie` or `header`, exactly one).
    pub location: JwtLocation,
    /// Required `iss` (`issuer`), exactly as written.
    pub issuer: String,
    /// Accepted `aud` values (`audience`, a string or an array; at least one).
    pub audience: Vec<String>,
    /// JWKS endpoint (`jwks_url`, required).
    pub jwks_url: Url,
    /// Claim holding the account id (`subject_claim`, default `sub`).
    pub subject_claim: String,
    /// Claim holding the e-mail address (`email_claim`, default `email`).
    pub email_claim: String,
    /// Accepted signature algorithms (`algs`, default `["RS256"]`).
    pub algs: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf` (`leeway`, default `60s`).
    pub leeway: Duration,
    /// Timeout of JWKS fetches (`http_timeout`, default `10s`).
    pub http_timeout: Duration,
}

/// Where a `source = "jwt"` token is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtLocation {
    /// A cookie of this name (`cookie`).
    Cookie(String),
    /// A request header (`header`); for `Authorization` the `Bearer ` scheme is expected.
    Header(http::HeaderName),
}

/// Keys only `source = "oauth2"` accepts in `[account]`.
const OAUTH2_ONLY_KEYS: &[&str] = &[
    "preset",
    "discovery_url",
    "authorize_url",
    "token_url",
    "userinfo_url",
    "end_session_url",
    "client_id",
    "client_secret",
    "client_secret_file",
    "token_auth_method",
    "scopes",
    "redirect_path",
    "extra_auth_params",
    "id_token_algs",
    "groups_claim",
    "logout_params",
    "scope_separator",
    "preset_endpoints",
];

/// Keys only `source = "jwt"` accepts in `[account]`.
const JWT_ONLY_KEYS: &[&str] = &["cookie", "header", "audience", "algs", "leeway"];

impl Account {
    pub(crate) fn read(
        ctx: &mut Ctx<'_>,
        mut t: Table<'_, '_>,
        proxy_prefix: &str,
    ) -> Option<Account> {
        let source = t.choice_opt(ctx, "source", &[("oauth2", "oauth2"), ("jwt", "jwt")]);
        if source.is_none() && t.get("source").is_none() {
            t.missing(
                ctx,
                "source",
                "missing required key; expected \"oauth2\" or \"jwt\"",
            );
        }
        let display_name = t.string_or(ctx, "display_name", "accounts.magento.cloud");
        let account = match source {
            Some("oauth2") => {
                wrong_source_keys(ctx, &mut t, JWT_ONLY_KEYS, "jwt");
                Provider::read(ctx, &mut t, ProviderKind::Account, proxy_prefix).map(|mut p| {
                    p.display_name = display_name.clone();
                    AccountSource::OAuth2(p)
                })
            }
            Some(_) => {
                wrong_source_keys(ctx, &mut t, OAUTH2_ONLY_KEYS, "oauth2");
                JwtSource::read(ctx, &mut t).map(AccountSource::Jwt)
            }
            None => {
                // Without a valid source the other keys cannot be judged; accept them all
                // silently rather than report noise.
                for key in OAUTH2_ONLY_KEYS.iter().chain(JWT_ONLY_KEYS) {
                    t.get(key);
                }
                for key in [
                    "issuer",
                    "jwks_url",
                    "subject_claim",
                    "email_claim",
                    "http_timeout",
                ] {
                    t.get(key);
                }
                None
            }
        };
        t.finish(ctx);
        account.map(|source| Account {
            display_name,
            source,
        })
    }
}

fn wrong_source_keys(
    ctx: &mut Ctx<'_>,
    t: &mut Table<'_, '_>,
    keys: &[&'static str],
    belongs_to: &str,
) {
    for key in keys {
        if let Some(n) = t.get(key) {
            ctx.error(
                &n.key_span,
                &n.path,
                format!("`{key}` is only for source = \"{belongs_to}\""),
            );
        }
    }
}

impl JwtSource {
    fn read(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<JwtSource> {
        let cookie = t.nonempty(ctx, "cookie");
        let header = t.nonempty(ctx, "header");
        let location = match (cookie, header) {
            (Some(_), Some(h)) => {
                h.error(ctx, "set either `cookie` or `header`, not both");
                None
            }
            (Some(c), None) => {
                let name = c.value.trim().to_string();
                if is_cookie_token(&name) {
                    Some(JwtLocation::Cookie(name))
                } else {
                    c.error(ctx, format!("invalid cookie name `{name}`"));
                    None
                }
            }
            (None, Some(h)) => match http::HeaderName::from_bytes(h.value.trim().as_bytes()) {
                Ok(name) => Some(JwtLocation::Header(name)),
                Err(_) => {
                    h.error(ctx, format!("invalid header name `{}`", h.value.trim()));
                    None
                }
            },
            (None, None) => {
                if t.get("cookie").is_none() && t.get("header").is_none() {
                    t.missing(
                        ctx,
                        "cookie",
                        "source = \"jwt\" needs `cookie` or `header` (where the token is)",
                    );
                }
                None
            }
        };
        let issuer_value = issuer(ctx, t);
        if issuer_value.is_none() && t.get("issuer").is_none() {
            t.missing(ctx, "issuer", "missing required key for source = \"jwt\"");
        }
        let audience = t.string_list(ctx, "audience", ListForm::ArrayOrOne);
        let audience: Option<Vec<String>> = match audience {
            Some(list) => {
                let mut out = Vec::new();
                for s in &list {
                    if s.value.trim().is_empty() {
                        s.error(ctx, "must not be empty");
                    } else {
                        out.push(s.value.trim().to_string());
                    }
                }
                if list.is_empty() {
                    if let Some(n) = t.get("audience") {
                        n.error(ctx, "must list at least one audience");
                    }
                }
                (!out.is_empty()).then_some(out)
            }
            None => {
                if t.get("audience").is_none() {
                    t.missing(ctx, "audience", "missing required key for source = \"jwt\"");
                }
                None
            }
        };
        let jwks_url = t.url(ctx, "jwks_url", HTTP);
        if jwks_url.is_none() && t.get("jwks_url").is_none() {
            t.missing(ctx, "jwks_url", "missing required key for source = \"jwt\"");
        }
        let subject_claim = t.string_or(ctx, "subject_claim", "sub");
        let email_claim = t.string_or(ctx, "email_claim", "email");
        let algs = algs(ctx, t, "algs");
        let leeway = t.duration(ctx, "leeway", Duration::from_secs(60), true);
        let http_timeout = t.duration(ctx, "http_timeout", Duration::from_secs(10), false);
        Some(JwtSource {
            location: location?,
            issuer: issuer_value?,
            audience: audience?,
            jwks_url: jwks_url?,
            subject_claim,
            email_claim,
            algs,
            leeway,
            http_timeout,
        })
    }
}
