//! The configuration: `config.toml` parsed once into types.
//!
//! [`Config::load`] reads the file and [`Config::parse`] turns its text into a [`Config`]
//! where durations are durations, URLs are URLs, regexes are compiled, secrets are decoded,
//! length-checked and wrapped in [`Secret`](crate::secret::Secret), and TLS files are read and
//! matched. Nothing downstream re-validates. `linkgate check` and `linkgate run` share this
//! code path.
//!
//! Every problem found is reported, not just the first: all TOML syntax errors, then every
//! unknown key and bad value of every section, each as one line
//! `file:line:col: key.path: reason` ([`ConfigError`]). Warnings (such as a literal secret in
//! the file) use the same form and land in [`Config::warnings`].
//!
//! File rules that hold for every section:
//! - any string may contain `${ENV_VAR}` (several per string; `$${` is a literal `${`);
//!   integers and booleans may be given as strings so they can come from the environment;
//! - each secret has a `*_file` form, read at load with trailing whitespace trimmed;
//! - relative paths are relative to the directory of the config file;
//! - array elements are named with 0-based indices (`upstreams[0].url`).
//!
//! Submodules own one section each; `reader` holds the shared mechanics.

mod account;
mod assertion;
mod authz;
mod error;
mod headers;
mod link;
mod log;
pub mod names;
mod pages;
mod provider;
mod reader;
mod redis;
mod server;
mod session;
mod upstream;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use toml::de::DeTable;

pub use self::redis::{Redis, RedisMode};
pub use account::{Account, AccountSource, JwtLocation, JwtSource};
pub use assertion::{Algorithm, Assertion};
pub use authz::{Authz, ExtraIssuer, Policy, SkipRoute};
pub use error::{ConfigError, ConfigErrors};
pub use headers::{HeaderNames, Headers};
pub use link::{default_required_from, Link, LinkMode};
pub use log::{Log, LogConfig, LogFormat};
pub use pages::Pages;
pub use provider::{Documented, LogoutParams, Preset, Provider, TokenAuthMethod, ALLOWED_ALGS};
pub use server::{Server, Tls, DEFAULT_LISTEN, DEFAULT_PROXY_PREFIX};
pub use session::{default_cookie_name, SameSite, Session, StoreKind};
pub use upstream::{PathRule, Upstream};

use provider::ProviderKind;
use reader::{Ctx, Env, Table};

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[[upstreams]]`, at least one, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[sso]`: the Magento.com login; without it linkgate cannot authenticate browsers.
    pub sso: Option<Provider>,
    /// `[account]`: the cloud account identity; without it linkgate is a plain OIDC proxy.
    pub account: Option<Account>,
    /// `[link]`.
    pub link: Link,
    /// `[session]`.
    pub session: Session,
    /// `[redis]`, present when configured (required by `session.store = "redis"`).
    pub redis: Option<Redis>,
    /// `[authz]`.
    pub authz: Authz,
    /// `[headers]`.
    pub headers: Headers,
    /// `[pages]`.
    pub pages: Pages,
    /// `[log]`.
    pub log: Log,
    /// `[assertion]`: the signed identity assertion, when configured.
    pub assertion: Option<Assertion>,
    /// Warnings, one line each (`file:line:col: key: reason`), for the operator to see.
    pub warnings: Vec<String>,
    /// The file this configuration came from (as named to `load` / `parse`).
    pub path: PathBuf,
}

/// Top-level sections, in the order they are documented.
const SECTIONS: &[&str] = &[
    "server",
    "upstreams",
    "sso",
    "account",
    "link",
    "session",
    "redis",
    "authz",
    "headers",
    "pages",
    "log",
    "assertion",
];

impl Config {
    /// Reads and validates the file at `path`, taking `${VAR}`s from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            errors: vec![ConfigError {
                file: label.clone(),
                line: 1,
                col: 1,
                key: "(file)".to_string(),
                reason: format!("cannot read the configuration file: {e}"),
            }],
            warnings: Vec::new(),
        })?;
        Config::parse(&text, &label, &|name| std::env::var(name).ok())
    }

    /// Validates configuration text. `file_label` names the file in messages and is the
    /// base for relative paths; `env` answers `${VAR}` lookups.
    pub fn parse(
        text: &str,
        file_label: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut ctx = Ctx::new(text, file_label, env as Env<'_>);
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // A document that did not parse would only produce misleading value errors.
            ctx.syntax_errors(&syntax);
            return Err(finish_errors(ctx));
        }
        let mut root = Table::root(&doc);
        // Listed first so an unknown section is answered with the documented order.
        for key in SECTIONS {
            root.get(key);
        }
        let mut section = |ctx: &mut Ctx<'_>, key: &'static str| root_table(ctx, &mut root, key);

        let t = section(&mut ctx, "server");
        let server = Server::read(&mut ctx, t);
        let prefix = server.proxy_prefix.clone();
        let sso_table = section(&mut ctx, "sso");
        let has_sso = sso_table.is_some();
        let sso = sso_table.and_then(|mut t| {
            let p = Provider::read(&mut ctx, &mut t, ProviderKind::Sso, &prefix);
            t.finish(&mut ctx);
            p
        });
        let t = section(&mut ctx, "account");
        let account = t.and_then(|t| Account::read(&mut ctx, t, &prefix));
        let t = section(&mut ctx, "link");
        let link = Link::read(&mut ctx, t);
        let t = section(&mut ctx, "redis");
        let redis = t.map(|t| Redis::read(&mut ctx, t));
        let t = section(&mut ctx, "session");
        let session = Session::read(&mut ctx, t, has_sso, redis.is_some());
        let t = section(&mut ctx, "authz");
        let authz = Authz::read(&mut ctx, t);
        let t = section(&mut ctx, "headers");
        let headers = Headers::read(&mut ctx, t);
        let t = section(&mut ctx, "pages");
        let pages = Pages::read(&mut ctx, t);
        let t = section(&mut ctx, "log");
        let log = Log::read(&mut ctx, t);
        let t = section(&mut ctx, "assertion");
        let assertion_span = t.as_ref().map(|t| t.span.clone());
        let assertion = t.map(|t| Assertion::read(&mut ctx, t));
        let upstreams_node = root.get("upstreams");
        let upstreams = upstream::read_all(&mut ctx, upstreams_node);
        root.finish(&mut ctx);
        upstream::lint(&mut ctx, &authz, &upstreams, account.is_some());
        if let (Some(a), Some(span)) = (&assertion, &assertion_span) {
            if server.public_url.is_none() {
                ctx.error(
                    span,
                    "assertion",
                    "needs server.public_url: it is the assertion's `iss`",
                );
            }
            if a.key_file.is_none() && session.cookie_secret.is_none() {
                ctx.error(
                    span,
                    "assertion",
                    "a key kept in the store is sealed with session.cookie_secret: set it, or assertion.key_file",
                );
            }
        }

        cross_checks(
            &mut ctx,
            &doc,
            sso.as_ref(),
            account.as_ref(),
            &session,
            redis.is_some(),
        );

        if !ctx.errors.is_empty() {
            return Err(finish_errors(ctx));
        }
        let warnings = sorted_lines(ctx.warnings);
        Ok(Config {
            server,
            upstreams,
            sso,
            account,
            link,
            session,
            redis,
            authz,
            headers,
            pages,
            log,
            assertion,
            warnings,
            path: PathBuf::from(file_label),
        })
    }
}

/// A top-level section as a table (a type error if it is something else).
fn root_table<'d, 'i>(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'d, 'i>,
    key: &'static str,
) -> Option<Table<'d, 'i>> {
    root.get(key)?.table(ctx)
}

/// Rules that span sections.
fn cross_checks(
    ctx: &mut Ctx<'_>,
    doc: &toml::Spanned<DeTable<'_>>,
    sso: Option<&Provider>,
    account: Option<&Account>,
    session: &Session,
    has_redis: bool,
) {
    let span_of = |path: &[&str]| -> std::ops::Range<usize> {
        let mut table = doc.get_ref();
        let mut span = 0..0;
        for key in path {
            let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *key) else {
                break;
            };
            span = v.span();
            match v.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        span
    };
    if let (
        Some(sso),
        Some(Account {
            source: AccountSource::OAuth2(acct),
            ..
        }),
    ) = (sso, account)
    {
        if sso.redirect_path == acct.redirect_path {
            ctx.error(
                &span_of(&["account", "redirect_path"]),
                "account.redirect_path",
                format!(
                    "same callback path as sso.redirect_path (`{}`); the two logins need distinct callbacks",
                    acct.redirect_path
                ),
            );
        }
    }
    if account.is_some() && sso.is_none() {
        ctx.error(
            &span_of(&["account"]),
            "account",
            "[account] needs an [sso] section: linking connects the account to the SSO identity",
        );
    }
    if has_redis && session.store == StoreKind::Memory {
        ctx.warn(
            &span_of(&["redis"]),
            "redis",
            "[redis] is configured but session.store = \"memory\"; Redis is not used",
        );
    }
}

fn sorted_lines(mut items: Vec<ConfigError>) -> Vec<String> {
    items.sort_by_key(|e| (e.line, e.col));
    items.iter().map(ToString::to_string).collect()
}

fn finish_errors(ctx: Ctx<'_>) -> ConfigErrors {
    let mut errors = ctx.errors;
    errors.sort_by_key(|e| (e.line, e.col));
    errors.dedup();
    ConfigErrors {
        errors,
        warnings: sorted_lines(ctx.warnings),
    }
}
