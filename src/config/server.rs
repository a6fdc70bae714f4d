//! `[server]` and `[server.tls]`: where linkgate listens and how it presents itself.
//!
//! The TLS certificate and key are read and checked here, at load, because Pingora would
//! panic on a bad file much later; this module never keeps the PEM contents, only the paths.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::reader::{parse_url, Ctx, ListForm, Str, Table};

/// `[server]`: listeners and process-level settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address of the proxy listener (`listen`, default `0.0.0.0:4180`).
    pub listen: SocketAddr,
    /// Address of the admin listener with `/healthz`, `/readyz`, `/metrics`
    /// (`admin_listen`, default none).
    pub admin_listen: Option<SocketAddr>,
    /// The externally visible base URL (`public_url`), used to build redirect URIs; without
    /// it they are derived from the request.
    pub public_url: Option<Url>,
    /// Path under which linkgate answers its own endpoints (`proxy_prefix`, default
    /// `/oauth2`): starts with `/`, no trailing slash, no `?` or `#`.
    pub proxy_prefix: String,
    /// Worker threads (`threads`, default: available parallelism).
    pub threads: usize,
    /// Peers allowed to set `X-Forwarded-*` (`trusted_proxies`; bare IPs become /32 or /128).
    pub trusted_proxies: Vec<IpNet>,
    /// `[server.tls]`: serve HTTPS with these files (checked at load).
    pub tls: Option<Tls>,
    /// How long in-flight requests may finish on shutdown (`graceful_shutdown_timeout`,
    /// default `10s`).
    pub graceful_shutdown_timeout: Duration,
    /// Unix socket for Pingora's graceful upgrade (`upgrade_sock`, default
    /// `/tmp/linkgate_upgrade.sock`).
    pub upgrade_sock: PathBuf,
    /// PID file (`pid_file`, default `/tmp/linkgate.pid`).
    pub pid_file: PathBuf,
    /// What to do with `%2F` in a path (`encoded_slashes`, default `"reject"`: 400; `"keep"`
    /// forwards it encoded). See src/proxy/path.rs.
    pub encoded_slashes: crate::proxy::path::EncodedSlashes,
    /// The largest request head (HTTP/1: request line and headers; HTTP/2: the decoded
    /// header list) a client may send (`max_header_size`, bytes, default 64 KiB); more is
    /// answered `431` (HTTP/1: and the connection closed).
    pub max_header_size: usize,
    /// The time a client has to send a whole request head, counted from the connection's
    /// start or from the first byte of a further request on it (`header_read_timeout`,
    /// default `10s`).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request, and an HTTP/2
    /// connection with no stream in flight for its next stream (`keepalive_timeout`,
    /// default `75s`).
    pub keepalive_timeout: Duration,
    /// How long one write to a client may wait for it to take the bytes (`send_timeout`,
    /// default `60s`, nginx's `send_timeout`): a client that stops reading a response (or,
    /// on HTTP/2, keeps its window shut) is cut then, and the upstream connection it held is
    /// freed.
    pub send_timeout: Duration,
}

/// Default `server.max_header_size`: Envoy's default (60 KiB) rounded up; browsers' largest
/// cookie sets fit, and a client can no longer make a connection hold Pingora's 1 MiB.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;

/// `[server.tls]`: certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain, leaf first (`cert`).
    pub cert: PathBuf,
    /// PEM private key matching the leaf certificate (`key`).
    pub key: PathBuf,
}

/// Default `server.listen`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 4180);
/// Default `server.proxy_prefix`.
pub const DEFAULT_PROXY_PREFIX: &str = "/oauth2";

impl Server {
    /// `keepalive_timeout` as Pingora takes it for HTTP/1 keep-alive: whole seconds, at
    /// least one (HTTP/2's idle timeout uses the same figure).
    pub fn keepalive_secs(&self) -> u64 {
        self.keepalive_timeout.as_secs().max(1)
    }

    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Server {
        let mut server = Server {
            listen: DEFAULT_LISTEN,
            admin_listen: None,
            public_url: None,
            proxy_prefix: DEFAULT_PROXY_PREFIX.to_string(),
            threads: default_threads(),
            trusted_proxies: Vec::new(),
            tls: None,
            graceful_shutdown_timeout: Duration::from_secs(10),
            upgrade_sock: PathBuf::from("/tmp/linkgate_upgrade.sock"),
            pid_file: PathBuf::from("/tmp/linkgate.pid"),
            encoded_slashes: crate::proxy::path::EncodedSlashes::Reject,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
        };
        let Some(mut t) = t else {
            return server;
        };
        if let Some(s) = t.nonempty(ctx, "listen") {
            server.listen = socket_addr(ctx, &s).unwrap_or(DEFAULT_LISTEN);
        }
        server.admin_listen = t
            .nonempty(ctx, "admin_listen")
            .and_then(|s| socket_addr(ctx, &s));
        if let (Some(admin), listen) = (server.admin_listen, server.listen) {
            if admin == listen {
                if let Some(n) = t.get("admin_listen") {
                    n.error(ctx, "must differ from server.listen");
                }
            }
        }
        if let Some(s) = t.nonempty(ctx, "public_url") {
            server.public_url = parse_url(ctx, &s, &["http", "https"]).filter(|u| {
                if u.query().is_some() {
                    s.error(ctx, "public_url must not have a ?query");
                    false
                } else {
                    true
                }
            });
        }
        if let Some(s) = t.string(ctx, "proxy_prefix") {
            match check_prefix(&s.value) {
                Ok(()) => server.proxy_prefix = s.value.clone(),
                Err(reason) => s.error(ctx, reason),
            }
        }
        if let Some(n) = t.int_in(ctx, "threads", 1, 1024) {
            server.threads = usize::try_from(n).unwrap_or(1);
        }
        if let Some(list) = t.string_list(ctx, "trusted_proxies", ListForm::Array) {
            server.trusted_proxies = list.iter().filter_map(|s| ip_net(ctx, s)).collect();
        }
        server.graceful_shutdown_timeout = t.duration(
            ctx,
            "graceful_shutdown_timeout",
            server.graceful_shutdown_timeout,
            true,
        );
        if let Some((p, _)) = t.path(ctx, "upgrade_sock") {
            server.upgrade_sock = p;
        }
        if let Some((p, _)) = t.path(ctx, "pid_file") {
            server.pid_file = p;
        }
        {
            use crate::proxy::path::EncodedSlashes;
            server.encoded_slashes = t.choice(
                ctx,
                "encoded_slashes",
                &[
                    ("reject", EncodedSlashes::Reject),
                    ("keep", EncodedSlashes::Keep),
                ],
                EncodedSlashes::Reject,
            );
        }
        if let Some(n) = t.int_in(ctx, "max_header_size", 4096, 1024 * 1024) {
            server.max_header_size = usize::try_from(n).unwrap_or(DEFAULT_MAX_HEADER_SIZE);
        }
        server.header_read_timeout = t.duration(
            ctx,
            "header_read_timeout",
            server.header_read_timeout,
            false,
        );
        server.keepalive_timeout =
            t.duration(ctx, "keepalive_timeout", server.keepalive_timeout, false);
        server.send_timeout = t.duration(ctx, "send_timeout", server.send_timeout, false);
        if let Some(tls) = t.table(ctx, "tls") {
            server.tls = Tls::read(ctx, tls);
        }
        t.finish(ctx);
        server
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn socket_addr(ctx: &mut Ctx<'_>, s: &Str) -> Option<SocketAddr> {
    match s.value.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            s.error(
                ctx,
                format!(
                    "invalid socket address `{}`; expected IP:PORT such as \"0.0.0.0:4180\" or \"[::1]:4180\"",
                    s.value
                ),
            );
            None
        }
    }
}

/// Checks a path prefix: starts with `/`, no trailing slash, no `?` or `#`.
pub(crate) fn check_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("must start with `/`, got `{p}`"));
    }
    if p.ends_with('/') {
        return Err(format!("must not end with `/`, got `{p}`"));
    }
    if p.contains(['?', '#']) || p.chars().any(char::is_whitespace) {
        return Err(format!(
            "must be a plain path without `?`, `#` or spaces, got `{p}`"
        ));
    }
    Ok(())
}

fn ip_net(ctx: &mut Ctx<'_>, s: &Str) -> Option<IpNet> {
    let v = s.value.trim();
    if let Ok(net) = v.parse::<IpNet>() {
        return Some(net.trunc());
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    s.error(
        ctx,
        format!("invalid CIDR or IP address `{v}` (examples: \"10.0.0.0/8\", \"192.0.2.1\", \"fd00::/8\")"),
    );
    None
}

// === impl Tls ===

impl Tls {
    fn read(ctx: &mut Ctx<'_>, mut t: Table<'_, '_>) -> Option<Tls> {
        let cert = t.path(ctx, "cert");
        let key = t.path(ctx, "key");
        if cert.is_none() && t.get("cert").is_none() {
            t.missing(ctx, "cert", "missing required key (PEM certificate chain)");
        }
        if key.is_none() && t.get("key").is_none() {
            t.missing(ctx, "key", "missing required key (PEM private key)");
        }
        t.finish(ctx);
        let ((cert_path, cert_str), (key_path, key_str)) = (cert?, key?);
        let chain = load_chain(ctx, &cert_path, &cert_str);
        let pkey = load_key(ctx, &key_path, &key_str);
        if let (Some(chain), Some(pkey)) = (chain, pkey) {
            check_pair(ctx, &chain, &pkey, &cert_path, &cert_str, &key_str);
        }
        Some(Tls {
            cert: cert_path,
            key: key_path,
        })
    }
}

fn load_chain(
    ctx: &mut Ctx<'_>,
    path: &std::path::Path,
    s: &Str,
) -> Option<Vec<openssl::x509::X509>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            s.error(
                ctx,
                format!("cannot read certificate file `{}`: {e}", path.display()),
            );
            return None;
        }
    };
    match openssl::x509::X509::stack_from_pem(&bytes) {
        Ok(chain) if !chain.is_empty() => Some(chain),
        Ok(_) => {
            s.error(
                ctx,
                format!("no PEM certificate found in `{}`", path.display()),
            );
            None
        }
        Err(e) => {
            s.error(
                ctx,
                format!("cannot parse PEM certificate in `{}`: {e}", path.display()),
            );
            None
        }
    }
}

fn load_key(
    ctx: &mut Ctx<'_>,
    path: &std::path::Path,
    s: &Str,
) -> Option<openssl::pkey::PKey<openssl::pkey::Private>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            s.error(
                ctx,
                format!("cannot read private key file `{}`: {e}", path.display()),
            );
            return None;
        }
    };
    match openssl::pkey::PKey::private_key_from_pem(&bytes) {
        Ok(k) => Some(k),
        Err(e) => {
            s.error(
                ctx,
                format!("cannot parse PEM private key in `{}`: {e}", path.display()),
            );
            None
        }
    }
}

fn check_pair(
    ctx: &mut Ctx<'_>,
    chain: &[openssl::x509::X509],
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    cert_path: &std::path::Path,
    cert_str: &Str,
    key_str: &Str,
) {
    let Some(leaf) = chain.first() else {
        return;
    };
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(key))
        .unwrap_or(false);
    if !matches {
        key_str.error(
            ctx,
            format!(
                "private key does not match the certificate in `{}`",
                cert_path.display()
            ),
        );
    }
    if let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) {
        if leaf.not_after() < now {
            ctx.warn(
                &cert_str.span,
                &cert_str.path,
                format!(
                    "certificate in `{}` expired on {}",
                    cert_path.display(),
                    leaf.not_after()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_prefix;

    #[test]
    fn prefixes() {
        assert!(check_prefix("/oauth2").is_ok());
        assert!(check_prefix("/a/b").is_ok());
        assert!(check_prefix("oauth2").is_err());
        assert!(check_prefix("/oauth2/").is_err());
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("/a?b").is_err());
        assert!(check_prefix("/a#b").is_err());
    }
}
