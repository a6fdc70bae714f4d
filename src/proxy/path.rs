//! Path normalisation for access decisions.
//!
//! Skip routes and the proxy prefix are matched against the *normalised* path only: the query
//! and anything after a `#` (raw or `%23`) are cut off, percent-escapes are decoded (repeatedly,
//! so `%252e` cannot hide a dot segment from us while an upstream decodes it twice), `\` counts
//! as `/`, `;` path parameters are dropped from each segment (so Tomcat-style `..;/` is a dot
//! segment here too), empty segments collapse and `.`/`..` are resolved.
//!
//! The normalised path is never sent upstream (the request goes on as the client wrote it); it
//! exists so that a protected path can never *look* public. When in doubt it makes a path look
//! less public, never more. This module must never read `X-Forwarded-Uri`, `X-Original-URL` or
//! any other header: the request line is the only truth.

use std::borrow::Cow;

/// How many rounds of percent-decoding are applied before giving up on a path.
const MAX_DECODE_ROUNDS: usize = 3;

/// Normalises the path of a request target (`/a/b?q` or the path alone) for matching.
///
/// Returns `None` for a path that cannot be a legitimate resource: one that still holds
/// percent-escapes after several rounds of decoding, or that decodes to control characters
/// (NUL, CR, LF...). Callers answer those with 400.
pub fn normalise(target: &str) -> Option<String> {
    let raw = target.split(['?', '#']).next().unwrap_or("");
    let mut decoded: Cow<'_, str> = Cow::Borrowed(raw);
    let mut rounds = 0;
    while decoded.contains('%') {
        if rounds == MAX_DECODE_ROUNDS {
            return None;
        }
        let next = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == *decoded {
            // A lone `%` that is no escape: nothing more to decode.
            break;
        }
        decoded = Cow::Owned(next);
        rounds += 1;
    }
    // Decoding may have revealed a `#` or `?` (`%23`, `%3F`): cut there too, as the upstream
    // might.
    let decoded = decoded.split(['?', '#']).next().unwrap_or("");
    if decoded.chars().any(|c| c.is_control()) {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with('\\');
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Some(out)
}

/// Whether `path` (normalised) is `prefix` itself or below it (`/oauth2`, `/oauth2/…`), and
/// not merely a path that begins with the same letters (`/oauth2x`).
pub fn under_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_and_fragment_never_count() {
        assert_eq!(normalise("/admin?x=/public").as_deref(), Some("/admin"));
        assert_eq!(normalise("/admin#/public").as_deref(), Some("/admin"));
        assert_eq!(normalise("/admin%23/public").as_deref(), Some("/admin"));
        assert_eq!(normalise("/admin%2523/public").as_deref(), Some("/admin"));
        assert_eq!(normalise("/admin%3F/public").as_deref(), Some("/admin"));
    }

    #[test]
    fn dot_segments_resolve_in_every_disguise() {
        assert_eq!(normalise("/public/../admin").as_deref(), Some("/admin"));
        assert_eq!(normalise("/public/%2e%2e/admin").as_deref(), Some("/admin"));
        assert_eq!(
            normalise("/public/%2E%2E%2Fadmin").as_deref(),
            Some("/admin")
        );
        assert_eq!(
            normalise("/public/%252e%252e/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalise("/public/..;/admin").as_deref(), Some("/admin"));
        assert_eq!(normalise("/public\\..\\admin").as_deref(), Some("/admin"));
        assert_eq!(
            normalise("/public/./../../../admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalise("//public//x//").as_deref(), Some("/public/x/"));
        assert_eq!(normalise("").as_deref(), Some("/"));
        assert_eq!(normalise("/..").as_deref(), Some("/"));
    }

    #[test]
    fn hostile_encodings_are_refused() {
        assert_eq!(normalise("/a%00b"), None);
        assert_eq!(normalise("/a%0d%0aSet-Cookie:x"), None);
        assert_eq!(normalise("/%25252525252e"), None);
        assert_eq!(normalise("/100%").as_deref(), Some("/100%"));
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        assert_eq!(under_prefix("/oauth2/start", "/oauth2"), Some("start"));
        assert_eq!(under_prefix("/oauth2", "/oauth2"), Some(""));
        assert_eq!(under_prefix("/oauth2x/start", "/oauth2"), None);
        assert_eq!(under_prefix("/app/oauth2/start", "/oauth2"), None);
    }

    proptest! {
        #[test]
        fn normalised_paths_are_canonical(s in "[/a-z.%0-9;#?\\\\]{0,40}") {
            if let Some(n) = normalise(&s) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains("//"));
                prop_assert!(!n.split('/').any(|seg| seg == ".." || seg == "."));
                prop_assert!(!n.contains('#') && !n.contains('?'));
                // Normalising again changes nothing, unless a literal `%` survives as text.
                if !n.contains('%') {
                    prop_assert_eq!(normalise(&n), Some(n.clone()));
                }
            }
        }
    }
}
