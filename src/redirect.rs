//! Where `rd` may send a user after sign-in or sign-out.
//!
//! `rd` is followed only to a path on this host, or to an `http(s)` URL whose host is in
//! `authz.redirect_domains` (an exact host, or `.example.com` for the domain and its
//! subdomains). Everything else becomes `/`. This module must stay conservative: a value a
//! browser might read differently from us (backslashes, whitespace or control characters
//! anywhere, a leading `//`, user info, encoded slashes) is refused outright rather than
//! repaired. oauth2-proxy's open-redirect advisories (CVE-2017-1000070, CVE-2020-5233,
//! CVE-2020-11053, CVE-2020-4037, CVE-2021-21291) are each a test below.

use url::Url;

/// The fallback when `rd` is missing or refused.
pub const HOME: &str = "/";

/// Redirect policy compiled from the configuration.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    /// Lower-case hosts; a leading `.` allows the domain and its subdomains.
    domains: Vec<String>,
}

impl RedirectPolicy {
    /// A policy over `authz.redirect_domains` (plus the host of `server.public_url`).
    pub fn new(domains: impl IntoIterator<Item = String>) -> Self {
        Self {
            domains: domains
                .into_iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    /// The place to redirect to for a requested `rd` (already percent-decoded once as a query
    /// value): the value itself when it is safe, [`HOME`] otherwise.
    pub fn resolve(&self, rd: Option<&str>) -> String {
        match rd {
            Some(rd) if self.is_safe(rd) => rd.to_string(),
            _ => HOME.to_string(),
        }
    }

    /// Whether `rd` is a local path or an allowed absolute URL.
    pub fn is_safe(&self, rd: &str) -> bool {
        if rd.is_empty() || rd.len() > 4096 {
            return false;
        }
        // Whatever a browser would strip or fold (tabs, newlines, backslashes) is refused,
        // raw or percent-encoded, anywhere in the value.
        let decoded = percent_encoding::percent_decode_str(rd).decode_utf8_lossy();
        for text in [rd, decoded.as_ref()] {
            if text
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
            {
                return false;
            }
        }
        if rd.starts_with('/') {
            // A path: never scheme-relative (`//host`), in raw or decoded form, nor one that
            // becomes so once a browser removes its dot segments (`/.//host`, `/a/..//host`):
            // same host then, but a path that any later redirect echoing it, or a proxy that
            // normalises first, reads as another host.
            let Ok(base) = Url::parse(LOCAL_BASE) else {
                return false;
            };
            // (`//host` itself resolves to that host, so the host check refuses it.)
            return [rd, decoded.as_ref()].iter().all(|text| {
                base.join(text)
                    .is_ok_and(|u| u.host_str() == Some(LOCAL_HOST) && !u.path().starts_with("//"))
            });
        }
        let Ok(url) = Url::parse(rd) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        // `https:host` and `https:/host` are accepted by URL parsers but read variously by
        // browsers: only the canonical `scheme://` form is followed.
        let after_scheme = &rd[url.scheme().len()..];
        if !after_scheme.starts_with("://") {
            return false;
        }
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        self.host_allowed(&host.to_ascii_lowercase())
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.domains.iter().any(|d| match d.strip_prefix('.') {
            Some(apex) => {
                host == apex
                    || host
                        .strip_suffix(d.as_str())
                        .is_some_and(|sub| !sub.is_empty())
            }
            None => host == d,
        })
    }
}

/// The host paths are resolved against to see where a browser takes them.
const LOCAL_HOST: &str = "gate.invalid";
const LOCAL_BASE: &str = "https://gate.invalid/";

/// `text` percent-encoded for a query value (everything but letters and digits escaped).
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new([".example.com".to_string(), "shop.test".to_string()])
    }

    #[test]
    fn local_paths_and_allowed_hosts_are_followed() {
        let p = policy();
        for ok in [
            "/",
            "/orders?id=7",
            "/a/b#frag",
            "https://example.com/x",
            "https://app.example.com/x?y=1",
            "http://deep.sub.example.com:8443/",
            "https://shop.test/cart",
            "https://SHOP.test/cart",
        ] {
            assert_eq!(p.resolve(Some(ok)), ok, "{ok} should be followed");
        }
    }

    #[test]
    fn the_open_redirect_corpus_falls_back_home() {
        let p = policy();
        let corpus = [
            // scheme-relative and its disguises (CVE-2017-1000070, CVE-2020-5233)
            "//evil.com",
            "///evil.com",
            "////evil.com/",
            "/\\evil.com",
            "\\\\evil.com",
            "\\/evil.com",
            "/%2F%2Fevil.com",
            "/%2f/evil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%5c%5cevil.com",
            // whitespace and control characters between the slashes (CVE-2020-11053, CVE-2020-4037)
            "/\t/evil.com",
            "/%09/evil.com",
            "/\n/evil.com",
            "/%0a/evil.com",
            "/%0d%0a/evil.com",
            "/ /evil.com",
            "/%20/evil.com",
            " //evil.com",
            "/\u{3000}/evil.com",
            "/%E3%80%80/evil.com",
            "/%00/evil.com",
            // dot segments a browser removes, leaving `//evil.com` as the path
            "/.//evil.com",
            "/./%2Fevil.com",
            "/%2e//evil.com",
            "/a/..//evil.com",
            "/a/%2e%2e//evil.com",
            "/..//evil.com",
            "/././/evil.com",
            // absolute URLs to other hosts
            "https://evil.com",
            "http://evil.com/",
            "https:evil.com",
            "https:/evil.com",
            "https:\\\\evil.com",
            "HTTPS://evil.com",
            "https://example.com@evil.com",
            "https://example.com:x@evil.com",
            "https://user@example.com/",
            "https://evil.com\\@example.com",
            "https://evil.com#.example.com",
            "https://evil.com?.example.com",
            "https://evil.com/.example.com",
            "https://evil.com%2F.example.com",
            "https://evil.com%5C.example.com",
            "https://evil.com%23.example.com",
            // suffix tricks on the allow-list (CVE-2021-21291)
            "https://evilexample.com",
            "https://example.com.evil.com",
            "https://shop.test.evil.com",
            "https://evilshop.test",
            "https://sub.shop.test",
            // other schemes
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "ftp://example.com/",
            "file:///etc/passwd",
            // nothing
            "",
        ];
        for bad in corpus {
            assert_eq!(p.resolve(Some(bad)), HOME, "{bad:?} must not be followed");
        }
        assert_eq!(p.resolve(None), HOME);
    }

    #[test]
    fn without_allowed_domains_only_paths_pass() {
        let p = RedirectPolicy::default();
        assert_eq!(p.resolve(Some("/x")), "/x");
        assert_eq!(p.resolve(Some("https://example.com/")), HOME);
    }

    /// Pieces an attacker strings together: separators and their encodings (once and
    /// twice), whitespace and control characters, user info, schemes, hosts.
    const PIECES: &[&str] = &[
        "/",
        "//",
        "\\",
        "/\\",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%252f",
        "%255c",
        "%2e",
        ".",
        "..",
        "%2e%2e",
        "?",
        "#",
        "%3f",
        "%23",
        "@",
        "%40",
        ":",
        "%3a",
        "\t",
        "\n",
        "\r",
        " ",
        "%09",
        "%0a",
        "%0d",
        "%00",
        "%20",
        "\u{3000}",
        "%E3%80%80",
        "\u{200b}",
        "\u{ff0f}",
        "evil.com",
        "example.com",
        "app.example.com",
        "shop.test",
        "x",
        "https:",
        "http:",
        "https://",
        "HTTPS://",
        "javascript:",
        "data:",
        "user:pw@",
        "%ff",
        "%",
        "\u{0}",
        "\u{7f}",
    ];

    fn pieces() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(PIECES), 1..8).prop_map(|v| v.concat())
    }

    /// Where a browser on `https://gate.test/` goes for `out`, as the WHATWG URL parser
    /// (the `url` crate) reads it, raw and after one more decoding by an application.
    fn lands_on_allowed_ground(out: &str) -> bool {
        let base = Url::parse("https://gate.test/start").unwrap();
        let allowed = |u: &Url| {
            matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.password().is_none()
                && u.host_str().is_some_and(|h| {
                    h == "gate.test"
                        || h == "shop.test"
                        || h == "example.com"
                        || h.ends_with(".example.com")
                })
        };
        let decoded = percent_encoding::percent_decode_str(out)
            .decode_utf8_lossy()
            .into_owned();
        [out, decoded.as_str()].iter().all(|text| {
            base.join(text).is_ok_and(|u| {
                allowed(&u) && !(u.host_str() == Some("gate.test") && u.path().starts_with("//"))
            })
        })
    }

    proptest! {
        #[test]
        fn tricky_pieces_never_leave_allowed_ground(rd in pieces()) {
            let p = policy();
            let out = p.resolve(Some(&rd));
            if out != HOME {
                prop_assert_eq!(&out, &rd, "a value is followed as it is, or not at all");
                prop_assert!(lands_on_allowed_ground(&out), "{:?}", out);
                let local = out.starts_with('/') && !out.starts_with("//") && !out.starts_with("/\\");
                let lower = out.to_ascii_lowercase();
                // Schemes are case-insensitive (`HTTPS://example.com` is fine, and allowed).
                prop_assert!(local || lower.starts_with("http://") || lower.starts_with("https://"), "{:?}", out);
                prop_assert!(!out.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\'));
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_never_leaves(rd in "\\PC{0,80}") {
            let out = policy().resolve(Some(&rd));
            prop_assert!(out == HOME || lands_on_allowed_ground(&out), "{:?}", out);
        }

        #[test]
        fn whatever_is_followed_stays_on_allowed_ground(rd in "[ -~\\t\\n]{0,40}") {
            let p = policy();
            let out = p.resolve(Some(&rd));
            if out != HOME {
                let local = out.starts_with('/') && !out.starts_with("//");
                let allowed = Url::parse(&out).ok().and_then(|u| u.host_str().map(str::to_string))
                    .is_some_and(|h| h == "shop.test" || h == "example.com" || h.ends_with(".example.com"));
                prop_assert!(local || allowed, "{out}");
                prop_assert!(!out.contains('\\') && !out.chars().any(char::is_whitespace));
            }
        }
    }
}
