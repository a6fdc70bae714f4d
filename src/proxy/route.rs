//! Upstream routing: `[[upstreams]]` compiled once at load into a table that picks a route by
//! `Host` and the longest `path_prefix` of the normalised path.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config;

/// One compiled `[[upstreams]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// The operator's name for the upstream (logs, metrics).
    pub name: String,
    hosts: Vec<HostPattern>,
    prefix: String,
    /// The resolved address to connect to.
    pub addr: SocketAddr,
    /// The upstream URL's path (no trailing slash, `""` for the root), prepended to the
    /// request path.
    pub base_path: String,
    /// Whether to speak TLS to the upstream.
    pub tls: bool,
    /// The SNI / certificate name for a TLS upstream.
    pub sni: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one read from the upstream may take.
    pub read_timeout: Duration,
    /// Whether WebSocket upgrades are passed through.
    pub websockets: bool,
    /// How long an upgraded (WebSocket) connection may sit idle.
    pub websocket_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
}

impl HostPattern {
    fn parse(pattern: &str) -> Self {
        match pattern.strip_prefix("*.") {
            Some(rest) => HostPattern::Suffix(format!(".{}", rest.to_ascii_lowercase())),
            None => HostPattern::Exact(pattern.to_ascii_lowercase()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// All routes, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// Why the routing table could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstreams[{index}] ({name}): cannot resolve {host}:{port}: {reason}")]
pub struct RouteError {
    index: usize,
    name: String,
    host: String,
    port: u16,
    reason: String,
}

// === impl Router ===

impl Router {
    /// Compiles `[[upstreams]]`, resolving each upstream host once.
    pub fn new(upstreams: &[config::Upstream]) -> Result<Self, RouteError> {
        let mut routes = Vec::with_capacity(upstreams.len());
        for (index, up) in upstreams.iter().enumerate() {
            let fail = |reason: String| RouteError {
                index,
                name: up.name.clone(),
                host: up.host.clone(),
                port: up.port,
                reason,
            };
            let addr = (up.host.as_str(), up.port)
                .to_socket_addrs()
                .map_err(|e| fail(e.to_string()))?
                .next()
                .ok_or_else(|| fail("no address".to_string()))?;
            routes.push(Route {
                name: up.name.clone(),
                hosts: up.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
                prefix: up.path_prefix.clone(),
                addr,
                base_path: up.base_path.clone(),
                tls: up.tls,
                sni: up.sni.clone(),
                connect_timeout: up.connect_timeout,
                read_timeout: up.read_timeout,
                websockets: up.websockets,
                websocket_idle_timeout: up.websocket_timeout,
            });
        }
        Ok(Self { routes })
    }

    /// Picks the route for a request: among routes whose hosts match (a route without hosts
    /// matches any host) and whose prefix covers the path, the longest prefix wins, and at
    /// equal length a route naming the host beats one that does not.
    pub fn pick(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        let host = host.map(strip_port).map(str::to_ascii_lowercase);
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.hosts.is_empty()
                    || host
                        .as_deref()
                        .is_some_and(|h| r.hosts.iter().any(|p| p.matches(h)))
            })
            .filter(|(_, r)| prefix_covers(&r.prefix, path))
            .max_by_key(|(i, r)| (r.prefix.len(), !r.hosts.is_empty(), usize::MAX - i))
    }

    /// Whether `host` (a `Host` value, port allowed) is named by some upstream's `hosts`
    /// (exactly or by a `*.` pattern). A route without `hosts` names no host: it serves
    /// any, which is not the same as vouching for one.
    pub fn names_host(&self, host: &str) -> bool {
        let host = strip_port(host).to_ascii_lowercase();
        self.routes
            .iter()
            .any(|r| r.hosts.iter().any(|p| p.matches(&host)))
    }

    /// The route at `index` (as returned by [`Router::pick`]).
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }
}

/// `Host` without its port (`[::1]:8080` keeps the brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

pub use super::path::prefix_covers;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], prefix: &str) -> Route {
        Route {
            name: name.to_string(),
            hosts: hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            prefix: prefix.to_string(),
            addr: "127.0.0.1:1".parse().unwrap(),
            base_path: String::new(),
            tls: false,
            sni: String::new(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            websockets: true,
            websocket_idle_timeout: Duration::from_secs(1),
        }
    }

    fn picked(router: &Router, host: Option<&str>, path: &str) -> Option<String> {
        router.pick(host, path).map(|(_, r)| r.name.clone())
    }

    #[test]
    fn only_configured_hosts_are_named() {
        let router = Router {
            routes: vec![
                route("default", &[], "/"),
                route("shop", &["shop.test", "*.shop.test"], "/"),
            ],
        };
        for named in ["shop.test", "SHOP.test:8443", "www.shop.test"] {
            assert!(router.names_host(named), "{named}");
        }
        for other in ["evil.test", "shop.test.evil", "xshop.test", "", "[::1]:80"] {
            assert!(!router.names_host(other), "{other}");
        }
    }

    #[test]
    fn longest_prefix_and_host_specific_routes_win() {
        let router = Router {
            routes: vec![
                route("default", &[], "/"),
                route("api", &[], "/api"),
                route("shop", &["shop.test", "*.shop.test"], "/"),
                route("shop-api", &["shop.test"], "/api/"),
            ],
        };
        assert_eq!(
            picked(&router, Some("x.test"), "/").as_deref(),
            Some("default")
        );
        assert_eq!(
            picked(&router, Some("x.test"), "/api/v1").as_deref(),
            Some("api")
        );
        assert_eq!(
            picked(&router, Some("x.test"), "/apix").as_deref(),
            Some("default")
        );
        assert_eq!(
            picked(&router, Some("SHOP.test:8443"), "/").as_deref(),
            Some("shop")
        );
        assert_eq!(
            picked(&router, Some("eu.shop.test"), "/").as_deref(),
            Some("shop")
        );
        assert_eq!(
            picked(&router, Some("shop.test"), "/api/v1").as_deref(),
            Some("shop-api")
        );
        assert_eq!(picked(&router, None, "/api").as_deref(), Some("api"));
    }

    #[test]
    fn no_route_when_nothing_covers_the_path() {
        let router = Router {
            routes: vec![route("only", &["a.test"], "/app")],
        };
        assert!(router.pick(Some("b.test"), "/app").is_none());
        assert!(router.pick(Some("a.test"), "/other").is_none());
    }

    #[test]
    fn ports_are_not_part_of_the_host() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.test"), "a.test");
    }
}
