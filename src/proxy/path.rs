//! The request target as linkgate decides on it and as the upstream receives it.
//!
//! The rule this module owns: **the upstream gets exactly the path the decision was made on.**
//! A gate that decides on one reading of a path while the upstream acts on another is open to
//! anyone who can find a path that the two read differently (`/public/x%3F/../../admin`: a
//! skip route for linkgate, `/admin` for nginx). So linkgate does not guess how an upstream
//! reads a path. It refuses (400) every target that has more than one plausible reading, and
//! forwards the rest in one canonical spelling whose every common reading is the path the
//! decision used:
//!
//! - refused: bytes outside visible ASCII; `\`; `;` path parameters (Tomcat/Jetty drop them,
//!   others do not); malformed escapes (`%zz`, `%u002f`); escapes of `/ \ ? # % ;` and of
//!   control characters (an upstream that decodes them sees another structure, or decodes
//!   twice); dot segments in any spelling (`..`, `%2e%2E`, `.. `, `...`); escapes that decode
//!   to invalid UTF-8 (overlong `/` and friends); segments ending in `.` or a space (IIS
//!   trims them: `admin.` is `admin`) or to look-alikes of separators that Windows
//!   "best fit" maps to them (`／`, `＼`, `．`, `∕`...); `*` and any non-`http(s)` or
//!   userinfo-carrying absolute-form target (`GET x:/admin`);
//! - canonical: escapes of unreserved characters decoded, other escapes in upper case, empty
//!   segments merged, absolute-form reduced to origin-form. After this, decoding the path
//!   once, twice or not at all, reading `;` or `\` specially or not, gives the same segments:
//!   the decision's.
//!
//! `server.encoded_slashes = "keep"` lets `%2F` through for apps that need it, kept encoded
//! for the upstream and read as part of its segment by the decision; dot segments are still
//! refused across it. Its risk: an upstream that decodes `%2F` before routing sees more
//! segments than the decision did (README, SECURITY.md).
//!
//! This module must never read `X-Forwarded-Uri`, `X-Original-URL` or any other header: the
//! request line (and `Host`) is the only truth.

use std::borrow::Cow;

/// How `%2F` (an encoded `/`) in a path is treated (`server.encoded_slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlashes {
    /// Refuse the request with 400 (the default).
    #[default]
    Reject,
    /// Keep `%2F` encoded for the upstream; the decision reads it as text inside a segment.
    Keep,
}

/// Why a request target was refused. Each variant is one class of ambiguity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `*`, authority-form, a non-`http(s)` scheme, or userinfo in the authority.
    TargetForm,
    /// A byte outside visible ASCII (space, control, non-ASCII) in the path.
    Byte,
    /// A `%` not followed by two hex digits.
    Escape,
    /// An escaped `/`, `\`, `?`, `#`, `%`, `;` or control character.
    EncodedDelimiter,
    /// A `.` or `..` segment, in any spelling.
    DotSegment,
    /// A segment ending in `.` or a space, which Windows servers trim away.
    TrailingDot,
    /// A `;` path parameter.
    Parameter,
    /// A `\` in the path.
    Backslash,
    /// Escapes that do not decode to UTF-8, or decode to a look-alike of a delimiter.
    Text,
    /// A `Host` that is not a host name or address, several `Host`s, or a `Host` that
    /// disagrees with the absolute-form target.
    Host,
}

impl Refused {
    /// The stable label (`linkgate_refused_targets_total{reason}`).
    pub fn code(self) -> &'static str {
        match self {
            Refused::TargetForm => "target_form",
            Refused::Byte => "byte",
            Refused::Escape => "escape",
            Refused::EncodedDelimiter => "encoded_delimiter",
            Refused::DotSegment => "dot_segment",
            Refused::TrailingDot => "trailing_dot",
            Refused::Parameter => "parameter",
            Refused::Backslash => "backslash",
            Refused::Text => "text",
            Refused::Host => "host",
        }
    }

    /// A short reason for the 400 reply and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::TargetForm => "request target form not accepted",
            Refused::Byte => "path holds a byte outside visible ASCII",
            Refused::Escape => "malformed percent-escape in path",
            Refused::EncodedDelimiter => "path holds an encoded delimiter",
            Refused::DotSegment => "path holds a dot segment",
            Refused::TrailingDot => "a path segment ends in a dot or space",
            Refused::Parameter => "path holds a ; parameter",
            Refused::Backslash => "path holds a backslash",
            Refused::Text => "path decodes to invalid or look-alike text",
            Refused::Host => "ambiguous or malformed Host",
        }
    }
}

/// A request target, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path the decision reads: decoded, empty segments merged, always starting with `/`.
    pub decision: Cow<'a, str>,
    /// The path and query the upstream must get, when they differ from the client's bytes
    /// (`None`: forward the request line as it came).
    pub upstream: Option<String>,
    /// The authority of an absolute-form target (`http://host/...`).
    pub authority: Option<&'a str>,
}

/// Unicode characters that some platforms fold into a delimiter (Windows "best fit"
/// mappings, NFKC): refused wherever they appear decoded.
const LOOKALIKES: &[char] = &[
    '\u{FF0F}', // fullwidth solidus
    '\u{FF3C}', // fullwidth reverse solidus
    '\u{FF0E}', // fullwidth full stop
    '\u{FF1F}', // fullwidth question mark
    '\u{FF03}', // fullwidth number sign
    '\u{FF05}', // fullwidth percent sign
    '\u{FF1B}', // fullwidth semicolon
    '\u{2215}', // division slash
    '\u{2216}', // set minus
    '\u{2044}', // fraction slash
    '\u{29F8}', // big solidus
    '\u{29F9}', // big reverse solidus
    '\u{FE68}', // small reverse solidus
    '\u{FE52}', // small full stop
    '\u{2024}', // one dot leader
    '\u{2025}', // two dot leader
];

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Splits and checks a raw request target (`Session::req_header().raw_path()`).
pub fn parse(raw: &[u8], slashes: EncodedSlashes) -> Result<Target<'_>, Refused> {
    let (authority, rest) = split_form(raw)?;
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if let Some(q) = query {
        // The query is forwarded as it came; it must still be URI text so that no upstream
        // reads a request line other than ours.
        if q.iter().any(|&b| !(0x21..=0x7e).contains(&b) || b == b'#') {
            return Err(Refused::Byte);
        }
    }
    if authority.is_none() && is_plain(path) {
        // The common case: nothing to decode, merge or refuse. No allocation.
        let decision = std::str::from_utf8(path).map_err(|_| Refused::Byte)?;
        return Ok(Target {
            decision: Cow::Borrowed(decision),
            upstream: None,
            authority: None,
        });
    }
    let canon = canonical_path(path, slashes)?;
    let path_changed = canon.upstream.as_bytes() != path;
    let upstream = if path_changed || authority.is_some() {
        let q = query.map_or("", |q| std::str::from_utf8(q).unwrap_or(""));
        Some(format!("{}{q}", canon.upstream))
    } else {
        None
    };
    let decision = if canon.decision.as_bytes() == path {
        // SAFETY of the borrow: the path is visible ASCII, checked in canonical_path.
        Cow::Borrowed(std::str::from_utf8(path).map_err(|_| Refused::Byte)?)
    } else {
        Cow::Owned(canon.decision)
    };
    Ok(Target {
        decision,
        upstream,
        authority,
    })
}

/// Whether a path is already canonical and unambiguous without decoding: visible ASCII with
/// no `%`, `\\`, `;`, `#`, no empty segment (`//`) and no segment that is dots or ends in a
/// dot. [`canonical_path`] gives the same answer for these, only slower.
fn is_plain(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for &b in &path[1..] {
        match b {
            b'/' => {
                if prev == b'/' || prev == b'.' {
                    return false; // `//`, or a segment ending in a dot (`..`, `a.`)
                }
            }
            b'%' | b'\\' | b';' | b'#' => return false,
            0x21..=0x7e => {}
            _ => return false,
        }
        prev = b;
    }
    // The last segment: `/a/..` or `/a.` end in a dot.
    prev != b'.'
}

/// Origin-form, or `http(s)` absolute-form reduced to its authority and path.
fn split_form(raw: &[u8]) -> Result<(Option<&str>, &[u8]), Refused> {
    if raw.first() == Some(&b'/') {
        return Ok((None, raw));
    }
    let lower: Vec<u8> = raw.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let after = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        return Err(Refused::TargetForm);
    };
    let rest = &raw[after..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = std::str::from_utf8(&rest[..end]).map_err(|_| Refused::TargetForm)?;
    if authority.is_empty() || authority.contains(['@', '\\', '%']) {
        return Err(Refused::TargetForm);
    }
    let path = &rest[end..];
    if path.first() == Some(&b'?') {
        // `http://host?q`: the path is `/`; keep the query.
        return Err(Refused::TargetForm);
    }
    Ok((Some(authority), if path.is_empty() { b"/" } else { path }))
}

struct Canonical {
    decision: String,
    upstream: String,
}

/// The decision's and the upstream's spelling of a raw path (no query), or why it is refused.
fn canonical_path(path: &[u8], slashes: EncodedSlashes) -> Result<Canonical, Refused> {
    let mut decision = String::with_capacity(path.len() + 1);
    let mut upstream = String::with_capacity(path.len() + 1);
    let mut any_segment = false;
    for raw in path.split(|&b| b == b'/') {
        if raw.is_empty() {
            continue; // empty segments merge (and the leading one is not a segment)
        }
        let (shown, sent) = segment(raw, slashes)?;
        decision.push('/');
        decision.push_str(&shown);
        upstream.push('/');
        upstream.push_str(&sent);
        any_segment = true;
    }
    if !any_segment || path.ends_with(b"/") {
        decision.push('/');
        upstream.push('/');
    }
    Ok(Canonical { decision, upstream })
}

/// One segment: its decoded text (for the decision) and its canonical spelling (upstream).
fn segment(raw: &[u8], slashes: EncodedSlashes) -> Result<(String, String), Refused> {
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut sent = String::with_capacity(raw.len());
    // Pieces between kept `%2F`s, for the dot-segment check (`keep` mode).
    let mut piece_start = 0;
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Refused::Escape);
                };
                let d = h << 4 | l;
                match d {
                    b'/' if slashes == EncodedSlashes::Keep => {
                        pieces.push((piece_start, decoded.len()));
                        decoded.extend_from_slice(b"%2F");
                        piece_start = decoded.len();
                        sent.push_str("%2F");
                    }
                    b'/' | b'\\' | b'?' | b'#' | b'%' | b';' => {
                        return Err(Refused::EncodedDelimiter)
                    }
                    0..=0x1f | 0x7f => return Err(Refused::EncodedDelimiter),
                    d if unreserved(d) => {
                        decoded.push(d);
                        sent.push(char::from(d));
                    }
                    d => {
                        decoded.push(d);
                        sent.push('%');
                        sent.push(char::from(HEX_UPPER[usize::from(d >> 4)]));
                        sent.push(char::from(HEX_UPPER[usize::from(d & 0xf)]));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(Refused::Backslash),
            // Pingora cuts fragments off before us; a `#` here is no URI text.
            b'#' => return Err(Refused::Byte),
            b';' => return Err(Refused::Parameter),
            0x21..=0x7e => {
                decoded.push(b);
                sent.push(char::from(b));
            }
            _ => return Err(Refused::Byte),
        }
        i += 1;
    }
    pieces.push((piece_start, decoded.len()));
    if pieces.len() > 1 && pieces.iter().any(|&(start, end)| start == end) {
        // A kept `%2F` at a segment's edge or next to another: an upstream that decodes and
        // merges slashes would see other segments than the decision.
        return Err(Refused::EncodedDelimiter);
    }
    for &(start, end) in &pieces {
        let piece = &decoded[start..end];
        // `.`, `..`, and what Windows trims to them (`...`, `.. `); and any segment that
        // Windows would trim at all (`admin.`, `admin%20` are `admin` to IIS).
        if piece.contains(&b'.') && piece.iter().all(|&c| c == b'.' || c == b' ') {
            return Err(Refused::DotSegment);
        }
        if matches!(piece.last(), Some(b'.' | b' ')) {
            return Err(Refused::TrailingDot);
        }
    }
    let text = String::from_utf8(decoded).map_err(|_| Refused::Text)?;
    if text.contains(LOOKALIKES) {
        return Err(Refused::Text);
    }
    Ok((text, sent))
}

/// The host a request is for, canonical (lower case, no trailing dot, port kept), from its
/// `Host` headers and the authority of an absolute-form or HTTP/2 target. Refused when it is
/// not a plain host name or address, when several `Host`s are sent, or when `Host` and the
/// target's authority disagree (RFC 9112 §3.2.2 lets the target win; an upstream may not).
pub fn host<'h>(
    mut hosts: impl Iterator<Item = &'h [u8]>,
    authority: Option<&str>,
) -> Result<Option<String>, Refused> {
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::Host);
    }
    let header = match header {
        Some(h) => Some(canonical_host(h).ok_or(Refused::Host)?),
        None => None,
    };
    let authority = match authority {
        Some(a) => Some(canonical_host(a.as_bytes()).ok_or(Refused::Host)?),
        None => None,
    };
    match (header, authority) {
        (Some(h), Some(a)) if h != a => Err(Refused::Host),
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

/// A host and optional port in canonical form, or `None` when it is no such thing.
pub fn canonical_host(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || text.len() > 255 + 6 {
        return None;
    }
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        let (name, port) = match text.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let labels_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !labels_ok {
            return None;
        }
        let mut lower = String::with_capacity(text.len());
        lower.extend(name.chars().map(|c| c.to_ascii_lowercase()));
        (lower, port)
    };
    match port {
        None => Some(name),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok()?;
            let mut host = name;
            host.push(':');
            host.push_str(p);
            Some(host)
        }
        Some(_) => None,
    }
}

/// Whether `path` (as the decision reads it) is `prefix` itself or below it (`/oauth2`,
/// `/oauth2/…`), and not merely a path that begins with the same letters (`/oauth2x`).
pub fn under_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

pub use crate::config::names::prefix_covers;

#[cfg(test)]
mod tests;
