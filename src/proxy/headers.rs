//! Header hygiene between the client and the upstream.
//!
//! An identity header is *always* either set by linkgate or removed: every header of the
//! identity families that a client sends is stripped before the upstream sees the request, in
//! any letter case and with `_` in place of `-` (some servers fold `X_Forwarded_User` into
//! `X-Forwarded-User`). A stripped client copy is logged, because it is either a
//! misconfigured client or an attack. The `Forwarded`/`X-Forwarded-*` transport headers are
//! believed only from `server.trusted_proxies`. linkgate's own cookies never reach the
//! upstream.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, COOKIE};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::prelude::*;

/// Header names (lower case, `-` form) that are always linkgate's to set.
const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-remote-user",
    "remote-user",
];

/// Prefixes (lower case, `-` form) of header families that are linkgate's alone.
const IDENTITY_PREFIXES: &[&str] = &["x-linkgate-", "x-auth-request-"];

/// Headers that some frameworks (Symfony, Laminas/Zend and so Magento, IIS) take as the real
/// request URL. A client must never be able to make the upstream see another path than the
/// one linkgate authorised.
const URL_OVERRIDE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
];

/// Transport headers that only a trusted proxy may set.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that say where a request came from or how it arrived. Apps (Magento's
/// `RemoteAddress` among them, configured to) read some of them as the client's address or
/// scheme, so only a trusted proxy may send them; from anyone else they are removed, and
/// linkgate writes `X-Forwarded-For`/`-Proto`/`-Host` and `X-Real-IP` from what it saw.
const TRANSPORT_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-protocol",
    "x-forwarded-by",
    "x-real-ip",
    "x-real-port",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "akamai-origin-hop",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-original-host",
    "x-host",
    "x-http-host-override",
    "x-url-scheme",
    "front-end-https",
    "x-arr-ssl",
    "x-appengine-user-ip",
];

/// The set of header names to strip from client requests, precomputed at load.
#[derive(Debug, Clone)]
pub struct Hygiene {
    /// Extra exact names (operator-renamed identity headers), lower case, `-` form.
    extra: Vec<String>,
    /// The name of linkgate's cookies; every cookie named this or starting with it plus `_`
    /// is removed from the `Cookie` header.
    cookie_name: String,
    trusted: Vec<IpNet>,
}

/// An address as text on the stack, IPv4 without the formatting machinery (this runs on
/// every request).
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
                // At most 45 bytes (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
                let _ = write!(cursor, "{v6}");
                text.len = cursor.position() as usize;
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// As a header value (an address always is one: `None` never happens).
    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

/// Sends the upstream one framing, whatever list the client wrote. Pingora frames the body
/// it reads from the first agreeing `Content-Length` value (`3, 3`, or the same value on two
/// lines, RFC 9110 section 8.6) and refuses disagreeing ones, but forwards the header as it
/// came: an upstream that reads the list another way (the first digits, a sum, a refusal
/// midway through a pooled connection) would frame the body differently from linkgate. So
/// the upstream gets the single value Pingora used, and no `Content-Length` beside a
/// `Transfer-Encoding` (RFC 9112 section 6.3: an intermediary removes it).
pub fn normalize_framing(req: &mut RequestHeader) -> Result<()> {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    if req.headers.contains_key(TRANSFER_ENCODING) {
        req.remove_header(&CONTENT_LENGTH);
        return Ok(());
    }
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let (Some(first), more) = (values.next(), values.next().is_some()) else {
        return Ok(());
    };
    if !more && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    // Pingora checked the values agree (or refused the request): any one of them will do.
    let single = first
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = single else {
        return Error::e_explain(InvalidHTTPHeader, "Content-Length is not a number");
    };
    req.insert_header(CONTENT_LENGTH, length)?;
    Ok(())
}

#[cfg(test)]
fn ip_text(ip: IpAddr) -> String {
    String::from_utf8(IpText::new(ip).as_bytes().to_vec()).unwrap()
}

/// The folded form of a header name: lower case with `_` read as `-`. Header names from
/// the request are already lower case, so the common case borrows and allocates nothing.
fn fold(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(
            name.chars()
                .map(|c| match c {
                    '_' => '-',
                    c => c.to_ascii_lowercase(),
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

// === impl Hygiene ===

impl Hygiene {
    /// Builds the strip list from the configured header names, cookie name and trusted proxy
    /// networks.
    pub fn new<'a>(
        configured_names: impl IntoIterator<Item = &'a str>,
        cookie_name: &str,
        trusted: Vec<IpNet>,
    ) -> Self {
        Self {
            extra: configured_names
                .into_iter()
                .map(|n| fold(n).into_owned())
                .collect(),
            cookie_name: cookie_name.to_string(),
            trusted,
        }
    }

    /// Whether a header name (as the client wrote it) belongs to an identity family.
    pub fn is_identity(&self, name: &str) -> bool {
        let folded = fold(name);
        let folded: &str = &folded;
        IDENTITY_HEADERS.contains(&folded)
            || IDENTITY_PREFIXES.iter().any(|p| folded.starts_with(p))
            || URL_OVERRIDE_HEADERS.contains(&folded)
            || self.extra.iter().any(|e| e == folded)
    }

    /// Whether the direct peer may set `Forwarded`/`X-Forwarded-*`.
    pub fn is_trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip)))
    }

    /// Removes every identity header and, for an untrusted peer, every transport header,
    /// from the request going upstream. Returns the names it removed from the identity
    /// families (for the log line).
    pub fn strip(&self, req: &mut RequestHeader, peer_trusted: bool) -> Vec<String> {
        let mut identity = Vec::new();
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in req.headers.keys() {
            let n = name.as_str();
            if self.is_identity(n) {
                identity.push(n.to_string());
                doomed.push(name.clone());
            } else if !peer_trusted && TRANSPORT_HEADERS.contains(&&*fold(n)) {
                doomed.push(name.clone());
            } else if n.contains('_') && TRANSPORT_HEADERS.contains(&&*fold(n)) {
                // `X_Forwarded_For` from anyone: a server folding `_` would read it as the
                // real header. The trusted proxy sends the `-` form.
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            req.remove_header(&name);
        }
        identity
    }

    /// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` for the upstream. From a trusted proxy the
    /// incoming chain is kept and the peer appended; from anyone else they were stripped and
    /// are written fresh.
    pub fn set_forwarded(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        scheme: &'static str,
        host: Option<&str>,
        peer_trusted: bool,
    ) -> Result<()> {
        // One value for the peer's address, shared by `X-Forwarded-For` and `X-Real-IP`.
        let peer_value = peer.and_then(|ip| IpText::new(ip).value());
        let chain = req
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|chain| peer_trusted && !chain.is_empty());
        let xff = match (chain, &peer_value) {
            (Some(chain), Some(peer)) => {
                let mut joined = Vec::with_capacity(chain.len() + 2 + peer.len());
                joined.extend_from_slice(chain.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(peer.as_bytes());
                Some(
                    HeaderValue::from_bytes(&joined).explain_err(InvalidHTTPHeader, |_| {
                        "X-Forwarded-For from a trusted proxy"
                    })?,
                )
            }
            // A trusted proxy's chain without a peer address to add (not over TCP): as it was.
            (Some(_), None) => None,
            (None, peer) => peer.clone(),
        };
        // Names as `&'static str`: Pingora keeps them as the header's case without copying
        // (a `HeaderName` would be title-cased into a new buffer on every insert).
        if let Some(xff) = xff {
            req.insert_header("X-Forwarded-For", xff)?;
        }
        let keep_real_ip = peer_trusted && req.headers.contains_key(&X_REAL_IP);
        if let (false, Some(peer)) = (keep_real_ip, peer_value) {
            req.insert_header("X-Real-IP", peer)?;
        }
        if !(peer_trusted && req.headers.contains_key(&X_FORWARDED_PROTO)) {
            req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(scheme))?;
        }
        if !(peer_trusted && req.headers.contains_key(&X_FORWARDED_HOST)) {
            if let Some(host) = host {
                req.insert_header("X-Forwarded-Host", host)?;
            }
        }
        Ok(())
    }

    /// Removes linkgate's own cookies from the `Cookie` header(s), keeping every other cookie
    /// byte for byte. Drops the header when nothing is left.
    pub fn strip_own_cookies(&self, req: &mut RequestHeader) -> Result<()> {
        if !req.headers.contains_key(COOKIE) {
            return Ok(());
        }
        let mut kept: Vec<String> = Vec::new();
        let mut removed = false;
        for value in req.headers.get_all(COOKIE) {
            let Ok(text) = value.to_str() else {
                // Not text: keep untouched rather than mangle it.
                kept.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                continue;
            };
            for pair in text.split(';') {
                let name = pair.split('=').next().unwrap_or("").trim();
                if self.is_own_cookie(name) {
                    removed = true;
                } else if !pair.trim().is_empty() {
                    kept.push(pair.trim().to_string());
                }
            }
        }
        if !removed {
            return Ok(());
        }
        req.remove_header(&COOKIE);
        if !kept.is_empty() {
            req.insert_header(COOKIE, kept.join("; "))?;
        }
        Ok(())
    }

    /// Whether a cookie name is one of linkgate's (`_linkgate`, `_linkgate_bind_…`, ...).
    /// Both default names count too, whatever the configured one: after an upgrade that
    /// moved the session to `__Host-linkgate`, a browser still sends its `_linkgate` cookie
    /// for a while, and its value is a valid session id under the same secret.
    pub fn is_own_cookie(&self, name: &str) -> bool {
        let family = |root: &str| {
            name.strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        };
        family(&self.cookie_name)
            || family(crate::config::default_cookie_name(true))
            || family(crate::config::default_cookie_name(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.0.2.9",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    fn hygiene() -> Hygiene {
        Hygiene::new(
            ["X-Custom-User"],
            "_linkgate",
            vec!["10.0.0.0/8".parse().unwrap()],
        )
    }

    #[test]
    fn the_upstream_gets_one_content_length_and_none_beside_chunked() {
        let lengths = |req: &RequestHeader| -> Vec<String> {
            req.headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        for (sent, expected) in [
            (vec!["3, 3"], vec!["3"]),
            (vec!["3", "3"], vec!["3"]),
            (vec![" 7 ,7,7 "], vec!["7"]),
            (vec!["12"], vec!["12"]),
            (vec![], vec![]),
        ] {
            let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("content-length", *v)).collect();
            let mut req = request(&headers);
            normalize_framing(&mut req).unwrap();
            assert_eq!(lengths(&req), expected, "{sent:?}");
        }
        let mut req = request(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        normalize_framing(&mut req).unwrap();
        assert!(lengths(&req).is_empty());
        assert_eq!(req.headers["transfer-encoding"], "chunked");
        let mut req = request(&[("content-length", "x, x")]);
        assert!(normalize_framing(&mut req).is_err());
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn identity_families_are_stripped_in_any_spelling() {
        let h = hygiene();
        let mut req = request(&[
            ("X-Forwarded-User", "a"),
            ("x-forwarded-EMAIL", "b"),
            ("X_Forwarded_Groups", "c"),
            ("X-LINKGATE-LINK-STATUS", "linked"),
            ("x_linkgate_account_id", "d"),
            ("X-Custom_User", "e"),
            ("X-Original-URL", "/admin"),
            ("Accept", "text/html"),
        ]);
        let removed = h.strip(&mut req, false);
        assert_eq!(removed.len(), 7);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.contains_key("accept"));
    }

    #[test]
    fn transport_headers_only_from_trusted_peers() {
        let h = hygiene();
        let mut req = request(&[("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=1.2.3.4")]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let trusted = h.is_trusted(Some(peer));
        assert!(!trusted);
        h.strip(&mut req, trusted);
        h.set_forwarded(&mut req, Some(peer), "https", Some("app.test"), trusted)
            .unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "192.0.2.1");
        assert_eq!(req.headers["x-forwarded-proto"], "https");
        assert_eq!(req.headers["x-real-ip"], "192.0.2.1");
        assert!(!req.headers.contains_key("forwarded"));

        // Every client-address and scheme header of the family, in any spelling.
        let names = [
            "True-Client-IP",
            "X-Real-IP",
            "X-Client-IP",
            "Client-IP",
            "X-Cluster-Client-IP",
            "Forwarded",
            "X-Forwarded-Server",
            "X-Forwarded-Scheme",
            "X-Forwarded-Ssl",
            "X-Forwarded-Port",
            "X-Original-Host",
            "X_Real_IP",
            "cf-connecting-ip",
        ];
        let mut req = request(&names.map(|n| (n, "6.6.6.6")));
        h.strip(&mut req, false);
        h.set_forwarded(&mut req, Some(peer), "http", Some("app.test"), false)
            .unwrap();
        for (name, value) in req.headers.iter() {
            assert_ne!(value, "6.6.6.6", "{name} passed from an untrusted peer");
        }

        let mut req = request(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(h.is_trusted(Some(proxy)));
        h.strip(&mut req, true);
        h.set_forwarded(&mut req, Some(proxy), "http", Some("app.test"), true)
            .unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert_eq!(req.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn own_cookies_never_reach_the_upstream() {
        let h = hygiene();
        let mut req = request(&[
            ("Cookie", "a=1; _linkgate=secret; _linkgate_csrf=x"),
            ("Cookie", "_linkgatex=keep; b=2"),
        ]);
        h.strip_own_cookies(&mut req).unwrap();
        assert_eq!(req.headers["cookie"], "a=1; _linkgatex=keep; b=2");
        let mut req = request(&[("Cookie", "_linkgate=only")]);
        h.strip_own_cookies(&mut req).unwrap();
        assert!(!req.headers.contains_key("cookie"));
    }
}
