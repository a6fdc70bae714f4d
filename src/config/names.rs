//! Shapes of names the configuration checks (DNS names, cookie names) and how a path
//! prefix covers a path. A leaf: every section's reader, the router and the policies may
//! use it.

/// True for a plausible DNS name: dot-separated labels of letters, digits and `-`.
pub fn is_dns_name(name: &str) -> bool {
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

/// True when `name` is a valid cookie name (an RFC 6265 / RFC 9110 token).
pub fn is_cookie_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Whether `prefix` covers `path` at a segment boundary: `/api` covers `/api` and `/api/x`,
/// not `/apix`; `/api/` covers `/api/x`; `/` covers everything.
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}
