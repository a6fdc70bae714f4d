//! `[sso]` and `[account] source = "oauth2"`: the OpenID providers (`[account]` itself is
//! src/config/account.rs).
//!
//! `[sso]` is the Magento.com single sign-on (Adobe IMS, usually through
//! `preset = "adobe-ims"`); `[account]` is the cloud account (accounts.magento.cloud), either a
//! second OAuth2/OIDC login (`source = "oauth2"`, the same keys as `[sso]`) or a signed JWT
//! the platform already sets (`source = "jwt"`). This module fills presets and defaults and
//! refuses algorithm lists that would let anyone forge a token; it never fetches anything
//! (discovery and JWKS are the OIDC module's job at run time).
//!
//! This file reads a provider's table ([`Provider::read`]); a preset's values are
//! src/config/provider/preset.rs, and the keys whose values need checks of their own
//! (issuer, scopes, callback path, extra parameters, algorithms) src/config/provider/keys.rs.

mod keys;
mod preset;

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::reader::{Ctx, ListForm, Table};
use crate::secret::Secret;
use keys::{auth_params, redirect_path, scopes};
use preset::PresetValues;

pub(super) use keys::{algs, issuer};
pub use preset::Preset;

/// Signature algorithms an `id_token_algs` / `algs` list may name.
pub const ALLOWED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// An OAuth2 / OpenID Connect provider (`[sso]`, or `[account]` with `source = "oauth2"`).
///
/// Endpoints given explicitly win over the preset and over discovery.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name shown to users (`display_name`; "Magento.com" for `[sso]`,
    /// "accounts.magento.cloud" for `[account]`).
    pub display_name: String,
    /// The preset that filled unset keys (`preset`).
    pub preset: Option<Preset>,
    /// Expected `iss` of id_tokens (`issuer`), exactly as written (validated as an http(s)
    /// URL but not normalised, because `iss` is compared byte for byte).
    pub issuer: Option<String>,
    /// OIDC discovery document (`discovery_url`; default: issuer +
    /// `/.well-known/openid-configuration`; none without an issuer).
    pub discovery_url: Option<Url>,
    /// Authorization endpoint (`authorize_url`).
    pub authorize_url: Option<Url>,
    /// Token endpoint (`token_url`).
    pub token_url: Option<Url>,
    /// Userinfo endpoint (`userinfo_url`).
    pub userinfo_url: Option<Url>,
    /// JWKS endpoint for id_token signatures (`jwks_url`).
    pub jwks_url: Option<Url>,
    /// RP-initiated logout endpoint (`end_session_url`).
    pub end_session_url: Option<Url>,
    /// The preset's documented endpoints: used where discovery names none (the default,
    /// `preset_endpoints = "discovery"`), or instead of what discovery names
    /// (`preset_endpoints = "documented"`, then copied into the explicit fields above).
    pub documented: Documented,
    /// How the logout endpoint is called (`logout_params`, default `"oidc"`; the
    /// `adobe-ims` preset's default `"ims"`).
    pub logout_params: LogoutParams,
    /// What joins the scopes in an authorization request (`scope_separator`: `"space"`, the
    /// default, as OAuth 2.0 says; `"comma"`, the `adobe-ims` preset's default, as IMS
    /// documents).
    pub scope_separator: String,
    /// OAuth2 client id (`client_id`, required).
    pub client_id: String,
    /// OAuth2 client secret (`client_secret` / `client_secret_file`); none for public clients.
    pub client_secret: Option<Secret<String>>,
    /// How the client authenticates at the token endpoint (`token_auth_method`).
    pub token_auth_method: TokenAuthMethod,
    /// Requested scopes (`scopes`, default `openid email profile`).
    pub scopes: Vec<String>,
    /// Callback path, already resolved against `server.proxy_prefix` (`redirect_path`;
    /// default `{prefix}/callback` for `[sso]`, `{prefix}/account/callback` for `[account]`).
    pub redirect_path: String,
    /// Extra query parameters for the authorization request (`extra_auth_params`).
    pub extra_auth_params: BTreeMap<String, String>,
    /// Accepted id_token signature algorithms (`id_token_algs`, default `["RS256"]`), in
    /// canonical spelling (see [`ALLOWED_ALGS`]).
    pub id_token_algs: Vec<String>,
    /// Claim holding the stable user id (`subject_claim`, default `sub`; accounts.magento.cloud's
    /// `GET /users/me` answers with `id`).
    pub subject_claim: String,
    /// Claim holding the e-mail address (`email_claim`, default `email`).
    pub email_claim: String,
    /// Claim holding groups, overriding `authz.groups_claim` for this provider (`groups_claim`).
    pub groups_claim: Option<String>,
    /// Timeout of each HTTP call to the provider (`http_timeout`, default `10s`).
    pub http_timeout: Duration,
}

/// A preset's documented endpoints (all `None` without a preset).
#[derive(Debug, Clone, Default)]
pub struct Documented {
    /// Authorization endpoint.
    pub authorize: Option<Url>,
    /// Token endpoint.
    pub token: Option<Url>,
    /// Userinfo endpoint.
    pub userinfo: Option<Url>,
    /// JWKS.
    pub jwks: Option<Url>,
    /// Logout endpoint (IMS's `/ims/logout/v1`: its discovery document has no
    /// `end_session_endpoint`).
    pub end_session: Option<Url>,
}

/// The parameters of the logout redirect (`logout_params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutParams {
    /// `"oidc"`: RP-Initiated Logout 1.0 (`id_token_hint`, `client_id`,
    /// `post_logout_redirect_uri`).
    Oidc,
    /// `"ims"`: Adobe IMS's `/ims/logout/v1` (`client_id`, `redirect_uri`).
    Ims,
}

impl LogoutParams {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogoutParams::Oidc => "oidc",
            LogoutParams::Ims => "ims",
        }
    }
}

/// Client authentication at the token endpoint (`token_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    /// `"client_secret_basic"`: HTTP Basic with client id and secret (the default).
    ClientSecretBasic,
    /// `"client_secret_post"`: id and secret in the form body (the `adobe-ims` preset's default).
    ClientSecretPost,
    /// `"none"`: a public client (PKCE only, no secret).
    None,
}

impl TokenAuthMethod {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::None => "none",
        }
    }
}

/// Which section a provider is read for (defaults differ).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProviderKind {
    Sso,
    Account,
}

pub(super) const HTTP: &[&str] = &["http", "https"];

// === impl Provider ===

impl Provider {
    /// Reads the provider keys of `t` (the caller finishes the table).
    pub(crate) fn read(
        ctx: &mut Ctx<'_>,
        t: &mut Table<'_, '_>,
        kind: ProviderKind,
        proxy_prefix: &str,
    ) -> Option<Provider> {
        let display_name = t.string_or(
            ctx,
            "display_name",
            match kind {
                ProviderKind::Sso => "Magento.com",
                ProviderKind::Account => "accounts.magento.cloud",
            },
        );
        let preset = t.choice_opt(ctx, "preset", &[Preset::AdobeIms].map(|v| (v.as_str(), v)));
        let defaults = preset.map(PresetValues::of);

        let issuer_explicit = issuer(ctx, t);
        let discovery_explicit = t.url(ctx, "discovery_url", HTTP);
        let issuer = issuer_explicit
            .clone()
            .or_else(|| defaults.as_ref().map(|d| d.issuer.to_string()));
        // A preset's paths hang off the issuer (the real one, or a test double's).
        let at_issuer = |path: &str| {
            let base = issuer.as_deref()?.trim_end_matches('/');
            Url::parse(&format!("{base}{path}")).ok()
        };
        let d = defaults.as_ref();
        let discovery_url = discovery_explicit.or_else(|| match d {
            Some(d) => at_issuer(d.discovery),
            None => issuer.as_deref().and_then(discovery_for),
        });
        let documented = match d {
            Some(d) => Documented {
                authorize: at_issuer(d.authorize),
                token: at_issuer(d.token),
                userinfo: at_issuer(d.userinfo),
                jwks: at_issuer(d.jwks),
                end_session: at_issuer(d.end_session),
            },
            None => Documented::default(),
        };
        let prefer_documented = t.choice(
            ctx,
            "preset_endpoints",
            &[("discovery", false), ("documented", true)],
            false,
        );
        let mut endpoint = |ctx: &mut Ctx<'_>, key: &'static str, documented: &Option<Url>| {
            t.url(ctx, key, HTTP)
                .or_else(|| documented.clone().filter(|_| prefer_documented))
        };
        let authorize_url = endpoint(ctx, "authorize_url", &documented.authorize);
        let token_url = endpoint(ctx, "token_url", &documented.token);
        let userinfo_url = endpoint(ctx, "userinfo_url", &documented.userinfo);
        let jwks_url = endpoint(ctx, "jwks_url", &documented.jwks);
        let end_session_url = endpoint(ctx, "end_session_url", &documented.end_session);
        let logout_params = t.choice(
            ctx,
            "logout_params",
            &[LogoutParams::Oidc, LogoutParams::Ims].map(|v| (v.as_str(), v)),
            d.map_or(LogoutParams::Oidc, |d| d.logout_params),
        );
        let scope_separator = t
            .choice(
                ctx,
                "scope_separator",
                &[("space", " "), ("comma", ",")],
                d.map_or(" ", |d| d.scope_separator),
            )
            .to_string();

        let client_id = t.nonempty(ctx, "client_id").map(|s| s.value);
        if client_id.is_none() && t.get("client_id").is_none() {
            t.missing(ctx, "client_id", "missing required key");
        }
        let secret = t.secret(ctx, "client_secret", "client_secret_file");
        let method_node = t.get("token_auth_method");
        let token_auth_method = t.choice(
            ctx,
            "token_auth_method",
            &[
                TokenAuthMethod::ClientSecretBasic,
                TokenAuthMethod::ClientSecretPost,
                TokenAuthMethod::None,
            ]
            .map(|v| (v.as_str(), v)),
            d.map(|d| d.token_auth_method)
                .unwrap_or(TokenAuthMethod::ClientSecretBasic),
        );
        match (token_auth_method, &secret) {
            (TokenAuthMethod::None, Some(s)) => s.error(
                ctx,
                "a client secret is set but token_auth_method = \"none\"",
            ),
            (TokenAuthMethod::None, None) => {}
            (_, None)
                if t.get("client_secret").is_none() && t.get("client_secret_file").is_none() =>
            {
                let reason = "missing required key (or client_secret_file); use token_auth_method = \"none\" for a public client";
                match &method_node {
                    Some(n) => n.error(ctx, reason),
                    None => t.missing(ctx, "client_secret", reason),
                }
            }
            _ => {}
        }

        let scopes = match t.string_list(ctx, "scopes", ListForm::ArrayOrSplit) {
            Some(list) => scopes(ctx, list),
            None => d
                .map(|d| d.scopes)
                .unwrap_or(&["openid", "email", "profile"])
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let default_redirect = match kind {
            ProviderKind::Sso => format!("{proxy_prefix}/callback"),
            ProviderKind::Account => format!("{proxy_prefix}/account/callback"),
        };
        let redirect_path = match t.nonempty(ctx, "redirect_path") {
            Some(s) => redirect_path(ctx, &s, proxy_prefix).unwrap_or(default_redirect),
            None => default_redirect,
        };
        let extra_auth_params = match t.table(ctx, "extra_auth_params") {
            Some(params) => auth_params(ctx, params),
            None => BTreeMap::new(),
        };
        let id_token_algs = algs(ctx, t, "id_token_algs");
        let subject_claim = t.string_or(ctx, "subject_claim", "sub");
        let email_claim = t.string_or(ctx, "email_claim", "email");
        let groups_claim = t.nonempty(ctx, "groups_claim").map(|s| s.value);
        let http_timeout = t.duration(ctx, "http_timeout", Duration::from_secs(10), false);

        // Where the endpoints come from: discovery, or every one needed listed explicitly.
        if issuer.is_none() && discovery_url.is_none() {
            let mut missing = Vec::new();
            if authorize_url.is_none() {
                missing.push("authorize_url");
            }
            if token_url.is_none() {
                missing.push("token_url");
            }
            let oidc = scopes.iter().any(|s| s == "openid");
            if oidc && jwks_url.is_none() {
                missing.push("jwks_url");
            }
            if !oidc && userinfo_url.is_none() {
                missing.push("userinfo_url");
            }
            if !missing.is_empty() {
                ctx.error(
                    &t.span.clone(),
                    &t.path.clone(),
                    format!(
                        "set `issuer` (OIDC discovery) or `preset`, or list the endpoints explicitly; missing: {}",
                        missing.join(", ")
                    ),
                );
            }
        }

        Some(Provider {
            display_name,
            preset,
            issuer,
            discovery_url,
            authorize_url,
            token_url,
            userinfo_url,
            jwks_url,
            end_session_url,
            documented,
            logout_params,
            scope_separator,
            client_id: client_id?,
            client_secret: secret.map(|s| Secret::new(s.value)),
            token_auth_method,
            scopes,
            redirect_path,
            extra_auth_params,
            id_token_algs,
            subject_claim,
            email_claim,
            groups_claim,
            http_timeout,
        })
    }
}

/// `issuer + /.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4).
fn discovery_for(issuer: &str) -> Option<Url> {
    Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
    .ok()
}
