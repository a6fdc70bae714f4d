//! The path rule held against the ways upstreams read paths.
//!
//! The property: whatever the client sends, a target that linkgate forwards reads, for every
//! common upstream reading of the forwarded bytes, as exactly the path the decision used.

use super::*;
use proptest::prelude::*;

fn ok(raw: &str) -> Target<'_> {
    parse(raw.as_bytes(), EncodedSlashes::Reject).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
}

fn refused(raw: &str) -> Refused {
    match parse(raw.as_bytes(), EncodedSlashes::Reject) {
        Ok(t) => panic!("{raw} was accepted as {t:?}"),
        Err(e) => e,
    }
}

/// The bytes the upstream receives for `raw` (path and query).
fn forwarded(raw: &str, slashes: EncodedSlashes) -> Option<(String, String)> {
    let t = parse(raw.as_bytes(), slashes).ok()?;
    let sent = t.upstream.clone().unwrap_or_else(|| raw.to_string());
    Some((t.decision.into_owned(), sent))
}

// --- How upstreams read a path (the readers of the differential test) ---

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// RFC 3986 dot-segment removal with merged slashes, on `/`-separated text.
fn resolve(s: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::new();
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    let last = s.rsplit('/').next().unwrap_or("");
    if path.is_empty() || s.ends_with('/') || last == "." || last == ".." {
        path.push('/');
    }
    path
}

/// nginx: decode once, merge slashes, resolve dots.
fn nginx(p: &str) -> String {
    resolve(&decode(p))
}
/// An app that decodes twice (a proxy chain, or a framework that decodes again).
fn twice(p: &str) -> String {
    resolve(&decode(&decode(p)))
}
/// Tomcat/Jetty: `;` parameters dropped from each raw segment, then decoded and resolved.
fn tomcat(p: &str) -> String {
    let stripped: Vec<&str> = p
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect();
    resolve(&decode(&stripped.join("/")))
}
/// IIS and Windows frameworks: decoded, `\` is `/`, trailing dots and spaces trimmed.
fn iis(p: &str) -> String {
    let d = decode(p).replace('\\', "/");
    let trimmed: Vec<&str> = d
        .split('/')
        .map(|seg| {
            let t = seg.trim_end_matches(['.', ' ']);
            if t.is_empty() && !seg.is_empty() && seg.chars().all(|c| c == '.') {
                seg
            } else if t.is_empty() {
                ""
            } else {
                t
            }
        })
        .collect();
    resolve(&trimmed.join("/"))
}
/// A router that cuts the decoded path at the first `?` or `#`.
fn cutter(p: &str) -> String {
    let d = decode(p);
    resolve(d.split(['?', '#']).next().unwrap_or(""))
}

fn path_of(sent: &str) -> &str {
    sent.split('?').next().unwrap_or("")
}

// --- Examples: one of each class of the issue, and more ---

#[test]
fn the_reported_attacks_are_refused() {
    for raw in [
        "/public/x%3F/../../admin/secret.txt",
        "/public/x%3f/%2e%2e/%2e%2e/admin",
        "/public/x%23/../../admin",
        "/public/x%253F/../../admin",
        "/admin/..;/public/x",
        "/public/..;/admin",
        "/admin\\..\\public\\x",
        "/public%5c..%5cadmin",
        "/public%2f..%2fadmin",
        "/public/%2e%2e/admin",
        "/public/%252e%252e/admin",
        "/public/.%2e/admin",
        "/public/.. /admin",
        "/public/.../admin",
        "/public/x%00",
        "/public/x%0d%0aSet-Cookie:a",
        "/public/%c0%af..%c0%afadmin",
        "/public/%ef%bc%8f..%ef%bc%8fadmin",
        "/public/%e2%88%95admin",
        "/public/%u002e%u002e/admin",
        "/public/x%",
        "/public/x%zz",
        "/public/x;jsessionid=1",
        "/public/x%3bjsessionid=1",
        "/public/x y",
        "/public/\u{e9}",
        "x:/admin",
        "*",
        "ftp://host/admin",
        "http://user@host/admin",
        "//",
    ] {
        if raw == "//" {
            // Merged, not refused: a harmless spelling of `/`.
            assert_eq!(ok(raw).decision, "/");
            continue;
        }
        refused(raw);
    }
}

#[test]
fn canonical_paths_pass_untouched_and_cost_nothing() {
    let t = ok("/public/app.css");
    assert_eq!(t.decision, "/public/app.css");
    assert!(matches!(t.decision, Cow::Borrowed(_)));
    assert_eq!(t.upstream, None);
    let t = ok("/search?q=a/../b&x=%2F");
    assert_eq!(t.decision, "/search");
    assert_eq!(t.upstream, None, "the query is the app's business");
    assert_eq!(ok("/").decision, "/");
    assert_eq!(ok("/a/").decision, "/a/");
}

#[test]
fn other_spellings_are_forwarded_canonically() {
    let t = ok("//public//x%41%7e/?q=1");
    assert_eq!(t.decision, "/public/xA~/");
    assert_eq!(t.upstream.as_deref(), Some("/public/xA~/?q=1"));
    let t = ok("/caf%c3%a9/a%20b/%2a");
    assert_eq!(t.decision, "/caf\u{e9}/a b/*");
    assert_eq!(t.upstream.as_deref(), Some("/caf%C3%A9/a%20b/%2A"));
    let t = ok("HTTP://Shop.Test:8080/a?b");
    assert_eq!(t.authority, Some("Shop.Test:8080"));
    assert_eq!(t.upstream.as_deref(), Some("/a?b"));
    let t = ok("https://shop.test");
    assert_eq!(t.upstream.as_deref(), Some("/"));
}

#[test]
fn encoded_slashes_can_be_kept_but_never_hide_dots() {
    let keep = EncodedSlashes::Keep;
    let t = parse(b"/repo/a%2fb/raw", keep).unwrap();
    assert_eq!(t.decision, "/repo/a%2Fb/raw");
    assert_eq!(t.upstream.as_deref(), Some("/repo/a%2Fb/raw"));
    for raw in [
        "/public/x%2f..%2f..%2fadmin",
        "/public/a%2f.%2fx",
        "/a%2F%2e%2e",
    ] {
        assert_eq!(
            parse(raw.as_bytes(), keep),
            Err(Refused::DotSegment),
            "{raw}"
        );
    }
    for raw in ["/%2fadmin", "/public/%2f%2fx", "/a%2f/b", "/a/b%2f"] {
        assert_eq!(
            parse(raw.as_bytes(), keep),
            Err(Refused::EncodedDelimiter),
            "{raw}: an upstream that merges slashes would see other segments"
        );
    }
    assert_eq!(
        parse(b"/a%5cb", keep),
        Err(Refused::EncodedDelimiter),
        "backslashes are never kept"
    );
}

#[test]
fn hosts_are_canonical_or_refused() {
    let one = |h: &str| host([h.as_bytes()].into_iter(), None);
    assert_eq!(one("Shop.Test.:8080"), Ok(Some("shop.test:8080".into())));
    assert_eq!(one("[::1]:4180"), Ok(Some("[::1]:4180".into())));
    assert_eq!(one("127.0.0.1"), Ok(Some("127.0.0.1".into())));
    for bad in [
        "",
        "a b",
        "a@b",
        "a/b",
        "a\\b",
        "shop.test:",
        "shop.test:99999",
        "shop.test:80:80",
        "shop..test",
        "sh%6fp.test",
        "a,b",
        "[::1",
        "[zz]:80",
    ] {
        assert_eq!(one(bad), Err(Refused::Host), "{bad:?}");
    }
    assert_eq!(
        host([b"a.test".as_slice(), b"b.test"].into_iter(), None),
        Err(Refused::Host),
        "two Host headers"
    );
    assert_eq!(
        host([b"a.test".as_slice()].into_iter(), Some("b.test")),
        Err(Refused::Host),
        "Host disagrees with the absolute-form target"
    );
    assert_eq!(
        host([b"A.test".as_slice()].into_iter(), Some("a.test.")),
        Ok(Some("a.test".into()))
    );
    assert_eq!(
        host(std::iter::empty(), Some("a.test")),
        Ok(Some("a.test".into()))
    );
}

#[test]
fn prefix_matches_whole_segments_only() {
    assert_eq!(under_prefix("/oauth2/start", "/oauth2"), Some("start"));
    assert_eq!(under_prefix("/oauth2", "/oauth2"), Some(""));
    assert_eq!(under_prefix("/oauth2x/start", "/oauth2"), None);
    assert_eq!(under_prefix("/app/oauth2/start", "/oauth2"), None);
}

// --- Properties ---

/// Pieces that attackers combine: separators, dots and their spellings, parameters, escapes
/// of every kind, look-alikes and plain names.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/",
        "//",
        "a",
        "public",
        "admin",
        "x.css",
        ".",
        "..",
        "...",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "\\",
        "%3f",
        "%3F",
        "?",
        "%23",
        "#",
        "%25",
        "%252e",
        "%252f",
        "%253F",
        "%2525",
        ";",
        ";x=1",
        "%3b",
        "%00",
        "%0a",
        "%09",
        " ",
        "%20",
        "%41",
        "%7e",
        "~",
        "%ef%bc%8f",
        "%ef%bc%8e",
        "%c0%af",
        "%c0%ae",
        "%e2%88%95",
        "%",
        "%z",
        "%u002f",
        "\u{e9}",
        "%c3%a9",
        "%2a",
        "&",
        "=",
        "+",
        "%2b",
        ":",
        "@",
        "%40",
        "!",
        "'",
        "(",
        "*",
        "{",
        "|",
    ])
}

fn target() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Every reader of what linkgate forwards sees the decision's path, exactly.
    #[test]
    fn every_reading_of_a_forwarded_path_is_the_decision(raw in target()) {
        if let Some((decision, sent)) = forwarded(&raw, EncodedSlashes::Reject) {
            let p = path_of(&sent);
            for (name, reader) in [
                ("nginx", nginx as fn(&str) -> String),
                ("twice", twice),
                ("tomcat", tomcat),
                ("iis", iis),
                ("cutter", cutter),
            ] {
                prop_assert_eq!(&reader(p), &decision, "{} read {:?} (from {:?})", name, p, raw);
            }
            // A reader that decodes nothing sees the same segments.
            prop_assert_eq!(resolve(p).split('/').count(), decision.split('/').count());
            // Forwarding is idempotent: what we send is canonical by our own rule.
            let again = parse(p.as_bytes(), EncodedSlashes::Reject);
            prop_assert!(again.as_ref().is_ok_and(|t| t.upstream.is_none() && t.decision == decision.as_str()),
                "{:?} -> {:?}", p, again);
        }
    }

    /// With `%2F` kept, every reader still lands under the decision's first segment, so a
    /// skip route like `^/public/` can never open another tree.
    #[test]
    fn kept_encoded_slashes_never_leave_the_decided_tree(raw in target()) {
        if let Some((decision, sent)) = forwarded(&raw, EncodedSlashes::Keep) {
            let p = path_of(&sent);
            let first = |s: &str| s.split('/').nth(1).unwrap_or("").split("%2F").next().unwrap_or("").to_string();
            for reader in [nginx as fn(&str) -> String, twice, tomcat, iis, cutter] {
                let read = reader(p);
                prop_assert!(!read.split('/').any(|s| s == ".." || s == "."));
                prop_assert_eq!(first(&read), first(&decision), "{:?} read as {:?}", p, read);
            }
        }
    }

    /// The allocation-free fast path agrees with the full canonicalisation.
    #[test]
    fn the_fast_path_agrees_with_the_slow_one(raw in target()) {
        let path = raw.split('?').next().unwrap_or("").as_bytes();
        if is_plain(path) {
            let slow = canonical_path(path, EncodedSlashes::Reject);
            prop_assert!(slow.as_ref().is_ok_and(|c| c.decision.as_bytes() == path && c.upstream.as_bytes() == path),
                "{:?}", raw);
        }
    }

    /// Hostile bytes never panic, and whatever is accepted is visible ASCII with no dots.
    #[test]
    fn any_bytes_are_handled(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(t) = parse(&raw, EncodedSlashes::Reject) {
            prop_assert!(t.decision.starts_with('/'));
            prop_assert!(!t.decision.split('/').any(|s| s == "." || s == ".."));
            if let Some(u) = &t.upstream {
                prop_assert!(u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            }
        }
    }

    #[test]
    fn any_host_is_handled(raw in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Some(h) = canonical_host(&raw) {
            prop_assert_eq!(canonical_host(h.as_bytes()), Some(h.clone()));
            prop_assert!(!h.contains(['@', '/', '\\', ' ', ',', '%']));
        }
    }
}
