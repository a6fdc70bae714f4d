//! `[authz]`: who may pass once authenticated, which routes need no login, and where `rd`
//! may send a browser.
//!
//! Regexes are compiled here, so a bad one stops the load instead of a request. Matching is
//! the proxy's job; this module only produces well-formed lists.

use regex::Regex;

use super::names::is_dns_name;
use super::reader::{parse_url, Ctx, ListForm, Str, Table};

/// `[authz]`: authorisation rules.
#[derive(Debug, Clone)]
pub struct Authz {
    /// Allowed e-mail domains (`email_domains`, lower-cased); empty or `*` means any.
    pub email_domains: Vec<String>,
    /// Groups of which the user must be in at least one (`allowed_groups`); empty means any.
    pub allowed_groups: Vec<String>,
    /// The only e-mail addresses admitted (`allowed_emails`, lower-cased, verified by the
    /// provider); empty means any. Checked as well as `email_domains`, not instead.
    pub allowed_emails: Vec<String>,
    /// Claim holding the user's groups (`groups_claim`, default `groups`).
    pub groups_claim: String,
    /// Routes forwarded without authentication (`skip_auth_routes`: `"METHOD=regex"` or
    /// `"regex"`, matched against the normalised path only).
    pub skip_auth_routes: Vec<SkipRoute>,
    /// Accept `Authorization: Bearer <jwt>` (`bearer_tokens`, default false).
    pub bearer_tokens: bool,
    /// Further JWT issuers accepted for bearer tokens (`extra_jwt_issuers`, entries
    /// `"https://issuer=audience"`).
    pub extra_jwt_issuers: Vec<ExtraIssuer>,
    /// Hosts `rd` may redirect to besides our own (`redirect_domains`, lower-cased; a
    /// leading `.` means any subdomain).
    pub redirect_domains: Vec<String>,
}

/// One `skip_auth_routes` entry.
#[derive(Debug, Clone)]
pub struct SkipRoute {
    /// Only this method, or any method when `None`.
    pub method: Option<http::Method>,
    /// Regex matched against the request path.
    pub path: Regex,
}

/// One `extra_jwt_issuers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraIssuer {
    /// Expected `iss`, exactly as written (validated as an http(s) URL).
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
}

impl Authz {
    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Authz {
        let mut authz = Authz {
            email_domains: Vec::new(),
            allowed_groups: Vec::new(),
            allowed_emails: Vec::new(),
            groups_claim: "groups".to_string(),
            skip_auth_routes: Vec::new(),
            bearer_tokens: false,
            extra_jwt_issuers: Vec::new(),
            redirect_domains: Vec::new(),
        };
        let Some(mut t) = t else {
            return authz;
        };
        authz.email_domains = list(ctx, &mut t, "email_domains", email_domain);
        authz.allowed_groups = list(ctx, &mut t, "allowed_groups", |ctx, s| {
            nonempty_item(ctx, s).map(str::to_string)
        });
        authz.allowed_emails = list(ctx, &mut t, "allowed_emails", email_address);
        authz.groups_claim = t.string_or(ctx, "groups_claim", "groups");
        authz.skip_auth_routes = list(ctx, &mut t, "skip_auth_routes", skip_route);
        authz.bearer_tokens = t.bool_or(ctx, "bearer_tokens", false);
        authz.extra_jwt_issuers = list(ctx, &mut t, "extra_jwt_issuers", extra_issuer);
        authz.redirect_domains = list(ctx, &mut t, "redirect_domains", redirect_domain);
        t.finish(ctx);
        authz
    }
}

/// A route's own policy: set on an `[[upstreams]]` entry or one of its
/// `[[upstreams.rules]]`. A key left out inherits (the rule from its upstream, the upstream
/// from `[authz]`); `skip_auth_routes` add to the inherited ones.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `email_domains`, when set here.
    pub email_domains: Option<Vec<String>>,
    /// `allowed_groups`, when set here.
    pub allowed_groups: Option<Vec<String>>,
    /// `allowed_emails`, when set here.
    pub allowed_emails: Option<Vec<String>>,
    /// `require_link`: the link mode here (`"enforce"`, `"warn"`, `"off"`), overriding
    /// `link.mode`.
    pub require_link: Option<super::LinkMode>,
    /// `skip_auth_routes` of this route, on top of the inherited ones.
    pub skip_auth_routes: Vec<SkipRoute>,
    /// Where it was written (`upstreams[1].rules[0]`), for messages.
    pub path: String,
    /// Its span in the file, for `linkgate check`'s findings.
    pub span: std::ops::Range<usize>,
}

/// Reads the policy keys of a route table (the caller reads its other keys).
pub(crate) fn read_policy(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Policy {
    let present = |t: &mut Table<'_, '_>, key: &'static str| t.get(key).is_some();
    let email_domains =
        present(t, "email_domains").then(|| list(ctx, t, "email_domains", email_domain));
    let allowed_groups = present(t, "allowed_groups").then(|| {
        list(ctx, t, "allowed_groups", |ctx, s| {
            nonempty_item(ctx, s).map(str::to_string)
        })
    });
    let allowed_emails =
        present(t, "allowed_emails").then(|| list(ctx, t, "allowed_emails", email_address));
    let modes = [
        super::LinkMode::Enforce,
        super::LinkMode::Warn,
        super::LinkMode::Off,
    ]
    .map(|v| (v.as_str(), v));
    let require_link = t.choice_opt(ctx, "require_link", &modes);
    let skip_auth_routes = list(ctx, t, "skip_auth_routes", skip_route);
    Policy {
        email_domains,
        allowed_groups,
        allowed_emails,
        require_link,
        skip_auth_routes,
        path: t.path.clone(),
        span: t.span.clone(),
    }
}

fn email_address(ctx: &mut Ctx<'_>, s: &Str) -> Option<String> {
    let v = nonempty_item(ctx, s)?.to_ascii_lowercase();
    let mut parts = v.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) if !local.is_empty() && is_dns_name(domain) => {
            Some(v.clone())
        }
        _ => {
            s.error(
                ctx,
                format!("invalid e-mail address `{v}`: expected one such as \"ann@example.com\""),
            );
            None
        }
    }
}

fn list<T>(
    ctx: &mut Ctx<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
    item: impl Fn(&mut Ctx<'_>, &Str) -> Option<T>,
) -> Vec<T> {
    t.string_list(ctx, key, ListForm::Array)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| item(ctx, s))
        .collect()
}

fn nonempty_item<'s>(ctx: &mut Ctx<'_>, s: &'s Str) -> Option<&'s str> {
    let v = s.value.trim();
    if v.is_empty() {
        s.error(ctx, "must not be empty");
        return None;
    }
    Some(v)
}

fn email_domain(ctx: &mut Ctx<'_>, s: &Str) -> Option<String> {
    let v = nonempty_item(ctx, s)?
        .trim_start_matches('@')
        .to_ascii_lowercase();
    if v == "*" || is_dns_name(&v) {
        Some(v)
    } else {
        s.error(
            ctx,
            format!(
                "invalid e-mail domain `{v}`: expected a domain such as \"example.com\", or \"*\""
            ),
        );
        None
    }
}

/// Parses `"METHOD=regex"` or `"regex"`. The text before the first `=` is a method only when
/// it is all uppercase ASCII letters, so a regex containing `=` stays whole.
pub(crate) fn split_skip_route(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once('=') {
        Some((method, path))
            if !method.is_empty() && method.chars().all(|c| c.is_ascii_uppercase()) =>
        {
            (Some(method), path)
        }
        _ => (None, entry),
    }
}

fn skip_route(ctx: &mut Ctx<'_>, s: &Str) -> Option<SkipRoute> {
    let entry = nonempty_item(ctx, s)?;
    let (method, pattern) = split_skip_route(entry);
    let method = match method {
        Some(m) => match http::Method::from_bytes(m.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                s.error(ctx, format!("invalid HTTP method `{m}`"));
                return None;
            }
        },
        None => None,
    };
    if pattern.is_empty() {
        s.error(ctx, "missing path regex after `=`");
        return None;
    }
    match Regex::new(pattern) {
        Ok(path) => Some(SkipRoute { method, path }),
        Err(e) => {
            s.error(
                ctx,
                format!("invalid regex `{pattern}`: {}", regex_reason(&e)),
            );
            None
        }
    }
}

/// The one-line reason of a regex error (its Display spans several lines with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("error:")
                .map(|r| r.trim().to_string())
        })
        .unwrap_or_else(|| super::error::one_line(&text))
}

fn extra_issuer(ctx: &mut Ctx<'_>, s: &Str) -> Option<ExtraIssuer> {
    let entry = nonempty_item(ctx, s)?;
    let Some((issuer, audience)) = entry.rsplit_once('=') else {
        s.error(ctx, "expected \"https://issuer=audience\"");
        return None;
    };
    let (issuer, audience) = (issuer.trim(), audience.trim());
    if audience.is_empty() {
        s.error(
            ctx,
            "missing audience after `=` (expected \"https://issuer=audience\")",
        );
        return None;
    }
    let as_str = Str {
        value: issuer.to_string(),
        ..s.clone()
    };
    parse_url(ctx, &as_str, &["http", "https"])?;
    Some(ExtraIssuer {
        issuer: issuer.to_string(),
        audience: audience.to_string(),
    })
}

fn redirect_domain(ctx: &mut Ctx<'_>, s: &Str) -> Option<String> {
    let v = nonempty_item(ctx, s)?.to_ascii_lowercase();
    if v.contains("://") || v.contains(['/', '?', '#', '@']) {
        s.error(
            ctx,
            format!("`{v}` must be a bare domain such as \"example.com\" or \".example.com\" (no scheme or path)"),
        );
        return None;
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v.as_str(), None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if port_ok && is_dns_name(host.strip_prefix('.').unwrap_or(host)) {
        Some(v.clone())
    } else {
        s.error(
            ctx,
            format!("invalid redirect domain `{v}`: expected \"example.com\", \".example.com\" or \"example.com:8443\""),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::split_skip_route;

    #[test]
    fn skip_route_split_only_at_a_method() {
        assert_eq!(
            split_skip_route("GET=^/health$"),
            (Some("GET"), "^/health$")
        );
        assert_eq!(split_skip_route("^/public/"), (None, "^/public/"));
        assert_eq!(split_skip_route("^/q=1"), (None, "^/q=1"));
        assert_eq!(split_skip_route("get=^/x"), (None, "get=^/x"));
        assert_eq!(
            split_skip_route("PROPFIND=^/dav"),
            (Some("PROPFIND"), "^/dav")
        );
        assert_eq!(split_skip_route("POST=^/a=b"), (Some("POST"), "^/a=b"));
    }
}
