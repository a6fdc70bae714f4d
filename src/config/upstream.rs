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
    let (name, (url, host, port, tls, sni, base_path)) = (name?, url?);
    Some(Upstream {
        name,
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
    })
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
            || is_dns_name(name));
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

/// True for a plausible DNS name: dot-separated labels of letters, digits and `-`.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::is_dns_name;

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
