//! `[[upstreams]]`: where authorised requests go.
//!
//! The upstream URL is taken apart here (host, port, TLS, SNI, base path) so the proxy can
//! build its peer without parsing anything per request. Routing itself (host and path
//! matching) belongs to the proxy; this module only guarantees the routes are well-formed and
//! unambiguous.

use std::time::Duration;

use url::{Host, Url};

use super::reader::{parse_url, Ctx, ListForm, Node, Str, Table};

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Unique, non-empty name (`name`), used in logs and metrics.
    pub name: String,
    /// The upstream base URL as written (`url`, http or https, no query or fragment).
    pub url: Url,
    /// Host to connect to: a DNS name or an IP address, IPv6 without brackets (so
    /// `(host.as_str(), port)` resolves with `ToSocketAddrs`).
    pub host: String,
    /// Port to connect to (the URL's, or 80 / 443).
    pub port: u16,
    /// True for `https` upstreams.
    pub tls: bool,
    /// Server name for TLS SNI and certificate checks: the host name, or empty for IP
    /// literals (SNI never carries an IP address).
    pub sni: String,
    /// The URL's path without its trailing slash (`""` for the root), to prepend to the
    /// request path.
    pub base_path: String,
    /// Request hosts this upstream serves (`hosts`), lower-cased; `*.example.com` matches
    /// any subdomain; empty means any host.
    pub hosts: Vec<String>,
    /// Request path prefix this upstream serves (`path_prefix`, default `/`).
    pub path_prefix: String,
    /// TCP/TLS connect timeout (`connect_timeout`, default `5s`).
    pub connect_timeout: Duration,
    /// Read timeout between bytes of the response (`read_timeout`, default `60s`).
    pub read_timeout: Duration,
    /// Whether WebSocket upgrades are forwarded (`websockets`, default true).
    pub websockets: bool,
    /// How long an upgraded (WebSocket) connection may stay silent before it is closed
    /// (`websocket_timeout`, default `1h`); replaces `read_timeout` once upgraded.
    pub websocket_timeout: Duration,
    /// The `aud` of the identity assertions this upstream gets (`audience`, default the
    /// upstream's `name`).
    pub audience: String,
    /// This upstream's own policy keys (`allowed_groups`, `email_domains`, `allowed_emails`,
    /// `require_link`, `skip_auth_routes`).
    pub policy: super::authz::Policy,
    /// Path rules inside it (`[[upstreams.rules]]`), each with its `path_prefix` and policy.
    pub rules: Vec<PathRule>,
}

/// One `[[upstreams.rules]]` entry: a policy for the paths under `path_prefix` (the
/// canonical path the decision reads, at a segment boundary; the longest prefix wins).
#[derive(Debug, Clone)]
pub struct PathRule {
    /// The paths it covers (`path_prefix`, required).
    pub path_prefix: String,
    /// Its policy; keys left out are the upstream's.
    pub policy: super::authz::Policy,
}

/// Reads `[[upstreams]]`; at least one is required, names unique, routes distinct.
pub(crate) fn read_all(ctx: &mut Ctx<'_>, node: Option<Node<'_, '_>>) -> Vec<Upstream> {
    let Some(node) = node else {
        ctx.error(
            &(0..0),
            "upstreams",
            "at least one [[upstreams]] table is required",
        );
        return Vec::new();
    };
    if matches!(node.value, toml::de::DeValue::Table(_)) {
        node.error(
            ctx,
            "expected an array of tables: write [[upstreams]] with double brackets",
        );
        return Vec::new();
    }
    let Some(items) = node.array(ctx) else {
        return Vec::new();
    };
    if items.is_empty() {
        node.error(ctx, "at least one [[upstreams]] table is required");
    }
    // (name, route key, where) of the upstreams read so far, for duplicate checks.
    let mut seen: Vec<(String, (Vec<String>, String), String)> = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let Some(mut t) = item.table(ctx) else {
            continue;
        };
        let upstream = read_one(ctx, &mut t);
        if let Some(u) = upstream {
            let route = route_key(&u);
            if let Some((_, _, other)) = seen.iter().find(|(n, _, _)| *n == u.name) {
                let reason = format!("duplicate upstream name `{}` (also {other})", u.name);
                at(ctx, &mut t, "name", reason);
            } else if let Some((other_name, _, other)) = seen.iter().find(|(_, r, _)| *r == route) {
                let reason = format!(
                    "same hosts and path_prefix as upstream `{other_name}` ({other}); requests could not be routed"
                );
                let key = if t.get("path_prefix").is_some() {
                    "path_prefix"
                } else {
                    "hosts"
                };
                at(ctx, &mut t, key, reason);
            }
            seen.push((u.name.clone(), route, t.path.clone()));
            out.push(u);
        }
        t.finish(ctx);
    }
    out
}

/// `linkgate check`'s findings on the route policies: rules that can never match or never
/// admit anyone. Warnings, not errors: the configuration still runs as written.
pub(crate) fn lint(ctx: &mut Ctx<'_>, authz: &super::Authz, upstreams: &[Upstream], linking: bool) {
    use super::names::prefix_covers;
    for (i, up) in upstreams.iter().enumerate() {
        let inherited = Effective::of(authz, &up.policy);
        lint_policy(ctx, &up.policy, &inherited, linking);
        for rule in &up.rules {
            let p = &rule.policy;
            if !prefix_covers(&up.path_prefix, &rule.path_prefix) {
                ctx.warn(
                    &p.span,
                    &p.path,
                    format!(
                        "never applies: `{}` is outside this upstream's path_prefix `{}`",
                        rule.path_prefix, up.path_prefix
                    ),
                );
                continue;
            }
            // Another upstream with a longer prefix over the same hosts takes these paths.
            let shadow = upstreams.iter().enumerate().find(|(j, other)| {
                *j != i
                    && other.path_prefix.len() > up.path_prefix.len()
                    && prefix_covers(&other.path_prefix, &rule.path_prefix)
                    && (other.hosts.is_empty() || other.hosts == up.hosts)
            });
            if let Some((_, other)) = shadow {
                ctx.warn(
                    &p.span,
                    &p.path,
                    format!(
                        "never applies: requests under `{}` go to upstream `{}` (path_prefix `{}`)",
                        rule.path_prefix, other.name, other.path_prefix
                    ),
                );
                continue;
            }
            let sets_nothing = p.email_domains.is_none()
                && p.allowed_groups.is_none()
                && p.allowed_emails.is_none()
                && p.require_link.is_none()
                && p.skip_auth_routes.is_empty();
            if sets_nothing {
                ctx.warn(
                    &p.span,
                    &p.path,
                    "sets no policy key: the upstream's policy applies",
                );
            }
            lint_policy(ctx, p, &inherited.with(p), linking);
        }
    }
}

/// A policy with every inherited key resolved (for the lint only).
struct Effective {
    email_domains: Vec<String>,
    allowed_emails: Vec<String>,
}

impl Effective {
    fn of(authz: &super::Authz, p: &super::authz::Policy) -> Self {
        Effective {
            email_domains: authz.email_domains.clone(),
            allowed_emails: authz.allowed_emails.clone(),
        }
        .with(p)
    }

    fn with(&self, p: &super::authz::Policy) -> Self {
        Effective {
            email_domains: p
                .email_domains
                .clone()
                .unwrap_or_else(|| self.email_domains.clone()),
            allowed_emails: p
                .allowed_emails
                .clone()
                .unwrap_or_else(|| self.allowed_emails.clone()),
        }
    }
}

fn lint_policy(ctx: &mut Ctx<'_>, p: &super::authz::Policy, effective: &Effective, linking: bool) {
    if p.require_link.is_some() && !linking {
        ctx.warn(
            &p.span,
            &format!("{}.require_link", p.path),
            "has no effect without an [account] section",
        );
    }
    if p.email_domains.is_none() && p.allowed_emails.is_none() {
        return;
    }
    let domains = &effective.email_domains;
    if domains.is_empty() || domains.iter().any(|d| d == "*") {
        return;
    }
    let admitted = |email: &str| {
        let domain = email.rsplit('@').next().unwrap_or("");
        domains.iter().any(|d| match d.strip_prefix('.') {
            Some(apex) => domain == apex || domain.ends_with(d.as_str()),
            None => domain == d,
        })
    };
    let never: Vec<&str> = effective
        .allowed_emails
        .iter()
        .map(String::as_str)
        .filter(|e| !admitted(e))
        .collect();
    if never.is_empty() {
        return;
    }
    let reason = if never.len() == effective.allowed_emails.len() {
        format!(
            "no one can pass: no allowed e-mail ({}) is in the e-mail domains ({})",
            never.join(", "),
            domains.join(", ")
        )
    } else {
        format!(
            "can never pass: {} (not in the e-mail domains {})",
            never.join(", "),
            domains.join(", ")
        )
    };
    ctx.warn(&p.span, &format!("{}.allowed_emails", p.path), reason);
}

/// Records an error at `key` of the table, or at the table if the key is absent.
fn at(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>, key: &'static str, reason: String) {
    match t.get(key) {
        Some(n) => n.error(ctx, reason),
        None => ctx.error(&t.span.clone(), &t.path.clone(), reason),
    }
}

fn route_key(u: &Upstream) -> (Vec<String>, String) {
    let mut hosts = u.hosts.clone();
    hosts.sort();
    hosts.dedup();
    (hosts, u.path_prefix.clone())
}

fn read_one(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<Upstream> {
    let name = t.nonempty(ctx, "name").map(|s| s.value.trim().to_string());
    if name.is_none() && t.get("name").is_none() {
        t.missing(ctx, "name", "missing required key");
    }
    let url = t.nonempty(ctx, "url").and_then(|s| upstream_url(ctx, &s));
    if url.is_none() && t.get("url").is_none() {
        t.missing(
            ctx,
            "url",
            "missing required key (e.g. \"http://127.0.0.1:8080\")",
        );
    }
    let hosts = t
        .string_list(ctx, "hosts", ListForm::ArrayOrOne)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| host_pattern(ctx, s))
        .collect();
    let mut path_prefix = "/".to_string();
    if let Some(s) = t.string(ctx, "path_prefix") {
        if !s.value.starts_with('/') {
            s.error(ctx, format!("must start with `/`, got `{}`", s.value));
        } else if s.value.contains(['?', '#']) {
            s.error(ctx, "must be a plain path without `?` or `#`");
        } else {
            path_prefix = s.value.clone();
        }
    }
    let connect_timeout = t.duration(ctx, "connect_timeout", Duration::from_secs(5), false);
    let read_timeout = t.duration(ctx, "read_timeout", Duration::from_secs(60), false);
    let websockets = t.bool_or(ctx, "websockets", true);
    let websocket_timeout = t.duration(ctx, "websocket_timeout", Duration::from_secs(3600), false);
    let audience = t
        .nonempty(ctx, "audience")
        .map(|s| s.value.trim().to_string());
    let policy = super::authz::read_policy(ctx, t);
    let rules = read_rules(ctx, t);
    let (name, (url, host, port, tls, sni, base_path)) = (name?, url?);
    Some(Upstream {
        url,
        host,
        port,
        tls,
        sni,
        base_path,
        hosts,
        path_prefix,
        connect_timeout,
        read_timeout,
        websockets,
        websocket_timeout,
        audience: audience.unwrap_or_else(|| name.clone()),
        name,
        policy,
        rules,
    })
}

fn read_rules(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Vec<PathRule> {
    let Some(items) = t.get("rules").and_then(|n| n.array(ctx)) else {
        return Vec::new();
    };
    let mut out: Vec<PathRule> = Vec::new();
    for item in items {
        let Some(mut r) = item.table(ctx) else {
            continue;
        };
        let prefix = r.nonempty(ctx, "path_prefix");
        if prefix.is_none() && r.get("path_prefix").is_none() {
            r.missing(ctx, "path_prefix", "missing required key (e.g. \"/admin\")");
        }
        let policy = super::authz::read_policy(ctx, &mut r);
        if let Some(s) = prefix {
            let v = s.value.trim().to_string();
            if !v.starts_with('/') || v.contains(['?', '#']) {
                s.error(ctx, "must be a plain path starting with `/`");
            } else if out.iter().any(|o| o.path_prefix == v) {
                s.error(ctx, format!("two rules for `{v}` in one upstream"));
            } else {
                out.push(PathRule {
                    path_prefix: v,
                    policy,
                });
            }
        }
        r.finish(ctx);
    }
    out
}

type UrlParts = (Url, String, u16, bool, String, String);

fn upstream_url(ctx: &mut Ctx<'_>, s: &Str) -> Option<UrlParts> {
    let url = parse_url(ctx, s, &["http", "https"])?;
    if url.query().is_some() {
        s.error(ctx, "upstream URL must not have a ?query");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        s.error(ctx, "upstream URL must not contain credentials");
        return None;
    }
    let tls = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let (host, sni) = match url.host() {
        Some(Host::Domain(d)) => (d.to_string(), d.to_string()),
        Some(Host::Ipv4(ip)) => (ip.to_string(), String::new()),
        Some(Host::Ipv6(ip)) => (ip.to_string(), String::new()),
        None => {
            s.error(ctx, "URL has no host");
            return None;
        }
    };
    let base_path = url.path().trim_end_matches('/').to_string();
    Some((url, host, port, tls, sni, base_path))
}

/// Validates and lower-cases a `hosts` entry: a host name, an IP address, or `*.domain`.
fn host_pattern(ctx: &mut Ctx<'_>, s: &Str) -> Option<String> {
    let v = s.value.trim().to_ascii_lowercase();
    let name = v.strip_prefix("*.").unwrap_or(&v);
    let valid = !name.is_empty()
        && ((name.parse::<std::net::IpAddr>().is_ok() && !v.starts_with("*."))
            || super::names::is_dns_name(name));
    if !valid {
        s.error(
            ctx,
            format!(
                "invalid host `{}`: expected a host name such as \"app.example.com\" or \"*.example.com\" (no scheme, port or path)",
                s.value
            ),
        );
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use crate::config::names::is_dns_name;

    #[test]
    fn dns_names() {
        assert!(is_dns_name("app.example.com"));
        assert!(is_dns_name("localhost"));
        assert!(!is_dns_name("app.example.com:8080"));
        assert!(!is_dns_name("https://x"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("-a.b"));
    }
}
