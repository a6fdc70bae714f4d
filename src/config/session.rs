//! `[session]`: the session cookie, the session lifetime and which store keeps sessions
//! (the `[redis]` store itself is src/config/redis.rs).
//!
//! The cookie secret is decoded and length-checked here, once; nothing downstream handles
//! base64.

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::reader::{Ctx, Str, Table};
use crate::secret::Secret;

/// The longest `refresh_before` that `linkgate check` takes without a warning: beyond it,
/// the margin is out of proportion with the access tokens providers usually issue (5 minutes
/// for Keycloak, an hour for most others), and the half-lifetime rule decides instead.
pub const REFRESH_BEFORE_SENSIBLE: Duration = Duration::from_secs(15 * 60);

/// `[session]`: the session cookie and where sessions live.
#[derive(Debug, Clone)]
pub struct Session {
    /// Cookie name (`cookie_name`; default `__Host-linkgate` with `cookie_secure`, which
    /// browsers accept only with `Secure`, `Path=/` and no `Domain`, so neither a sibling
    /// subdomain nor a plain-HTTP man in the middle can plant one; `_linkgate` without).
    /// The flow cookies are named after it: `{cookie_name}_bind_{short state}`.
    pub cookie_name: String,
    /// 32-byte key for the cookie HMAC and the session encryption (`cookie_secret` /
    /// `cookie_secret_file`, base64); required when `[sso]` is configured.
    pub cookie_secret: Option<Secret<[u8; 32]>>,
    /// Cookie `Domain` attribute (`cookie_domain`, lower-cased; default: host-only).
    pub cookie_domain: Option<String>,
    /// Cookie `Secure` attribute (`cookie_secure`, default true).
    pub cookie_secure: bool,
    /// Cookie `SameSite` attribute (`cookie_samesite`, default `lax`).
    pub cookie_samesite: SameSite,
    /// Session lifetime (`ttl`, default `8h`).
    pub ttl: Duration,
    /// Refresh provider tokens this long before they expire (`refresh_before`, default `5m`),
    /// but never before half their lifetime (see `session::refresh_at`); `linkgate check`
    /// warns above [`REFRESH_BEFORE_SENSIBLE`].
    pub refresh_before: Duration,
    /// Where sessions, flows and links are kept (`store`, default `memory`).
    pub store: StoreKind,
    /// Lifetime of the in-process cache in front of the store (`cache_ttl`, default `30s`;
    /// zero turns the cache off).
    pub cache_ttl: Duration,
    /// Maximum entries of that cache (`cache_capacity`, default 100000).
    pub cache_capacity: u64,
    /// How long past `cache_ttl` a cached session may still be served while the store cannot
    /// be read (`cache_stale_if_error`, default `60s`; zero: never). Covers a Redis failover
    /// or restart for sessions this instance served recently; a sign-out reaching the cache
    /// removes the entry, so it is never served stale.
    pub cache_stale_if_error: Duration,
}

/// Cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `"lax"` (the default).
    Lax,
    /// `"strict"`.
    Strict,
    /// `"none"` (requires `cookie_secure = true`).
    None,
}

impl SameSite {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "lax",
            SameSite::Strict => "strict",
            SameSite::None => "none",
        }
    }
}

/// The session store backend (`session.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `"memory"`: embedded, single node, lost on restart (the default).
    Memory,
    /// `"redis"`: the `[redis]` section.
    Redis,
}

impl StoreKind {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        }
    }
}

/// The session cookie's name when `cookie_name` is not set.
pub fn default_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-linkgate"
    } else {
        "_linkgate"
    }
}

// === impl Session ===

impl Session {
    /// Reads `[session]`; `needs_secret` when `[sso]` is configured, `has_redis` when
    /// `[redis]` is.
    pub(crate) fn read(
        ctx: &mut Ctx<'_>,
        t: Option<Table<'_, '_>>,
        needs_secret: bool,
        has_redis: bool,
    ) -> Session {
        let mut session = Session {
            cookie_name: "_linkgate".to_string(),
            cookie_secret: None,
            cookie_domain: None,
            cookie_secure: true,
            cookie_samesite: SameSite::Lax,
            ttl: Duration::from_secs(8 * 3600),
            refresh_before: Duration::from_secs(5 * 60),
            store: StoreKind::Memory,
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            cache_stale_if_error: Duration::from_secs(60),
        };
        let Some(mut t) = t else {
            session.cookie_name = default_cookie_name(true).to_string();
            if needs_secret {
                ctx.error(
                    &(0..0),
                    "session.cookie_secret",
                    "missing: [sso] needs a [session] cookie_secret (or cookie_secret_file); `linkgate secret` prints one",
                );
            }
            return session;
        };
        if let Some(s) = t.nonempty(ctx, "cookie_name") {
            let name = s.value.trim();
            if super::names::is_cookie_token(name) {
                session.cookie_name = name.to_string();
            } else {
                s.error(
                    ctx,
                    format!(
                        "invalid cookie name `{name}`: use letters, digits and !#$%&'*+-.^_`|~"
                    ),
                );
            }
        }
        let secret_present =
            t.get("cookie_secret").is_some() || t.get("cookie_secret_file").is_some();
        if let Some(s) = t.secret(ctx, "cookie_secret", "cookie_secret_file") {
            session.cookie_secret = decode_cookie_secret(ctx, &s).map(Secret::new);
        } else if needs_secret && !secret_present {
            t.missing(
                ctx,
                "cookie_secret",
                "missing: [sso] needs cookie_secret (or cookie_secret_file); `linkgate secret` prints one",
            );
        }
        if let Some(s) = t.nonempty(ctx, "cookie_domain") {
            let d = s.value.trim().to_ascii_lowercase();
            if super::names::is_dns_name(d.trim_start_matches('.')) {
                session.cookie_domain = Some(d);
            } else {
                s.error(
                    ctx,
                    format!(
                        "invalid cookie domain `{d}`: expected a domain such as \"example.com\""
                    ),
                );
            }
        }
        session.cookie_secure = t.bool_or(ctx, "cookie_secure", true);
        let explicit_name = t.get("cookie_name").is_some();
        if !explicit_name {
            session.cookie_name = default_cookie_name(session.cookie_secure).to_string();
        }
        session.cookie_samesite = t.choice(
            ctx,
            "cookie_samesite",
            &[SameSite::Lax, SameSite::Strict, SameSite::None].map(|v| (v.as_str(), v)),
            SameSite::Lax,
        );
        if session.cookie_samesite == SameSite::None && !session.cookie_secure {
            if let Some(n) = t.get("cookie_samesite") {
                n.error(
                    ctx,
                    "cookie_samesite = \"none\" requires cookie_secure = true (browsers drop such cookies otherwise)",
                );
            }
        }
        let name = session.cookie_name.clone();
        if (name.starts_with("__Secure-") || name.starts_with("__Host-")) && !session.cookie_secure
        {
            if let Some(n) = t.get("cookie_secure") {
                n.error(
                    ctx,
                    format!("cookie name `{name}` requires cookie_secure = true"),
                );
            }
        }
        if name.starts_with("__Host-") && session.cookie_domain.is_some() {
            if let Some(n) = t.get("cookie_domain") {
                let hint = if explicit_name {
                    ""
                } else {
                    " (the default name with cookie_secure = true); to share the session across subdomains set cookie_name, e.g. \"__Secure-linkgate\", and know that a sibling subdomain can then plant cookies"
                };
                n.error(
                    ctx,
                    format!("cookie name `{name}` forbids cookie_domain{hint}"),
                );
            }
        }
        session.ttl = t.duration(ctx, "ttl", session.ttl, false);
        session.refresh_before = t.duration(ctx, "refresh_before", session.refresh_before, true);
        if session.refresh_before >= session.ttl {
            if let Some(n) = t.get("refresh_before") {
                n.error(ctx, "must be shorter than session.ttl");
            }
        } else if session.refresh_before > REFRESH_BEFORE_SENSIBLE {
            if let Some(n) = t.get("refresh_before") {
                ctx.warn(
                    &n.span,
                    &n.path,
                    format!(
                        "{}s is long next to typical access-token lifetimes (5 minutes to 1 hour); tokens are refreshed at half their lifetime at the earliest anyway, so this only moves refreshes of tokens living longer than twice as long; a few minutes is usual",
                        session.refresh_before.as_secs()
                    ),
                );
            }
        }
        let store_node = t.get("store");
        session.store = t.choice(
            ctx,
            "store",
            &[StoreKind::Memory, StoreKind::Redis].map(|v| (v.as_str(), v)),
            StoreKind::Memory,
        );
        if session.store == StoreKind::Redis && !has_redis {
            if let Some(n) = &store_node {
                n.error(ctx, "store = \"redis\" requires a [redis] section");
            }
        }
        session.cache_ttl = t.duration(ctx, "cache_ttl", session.cache_ttl, true);
        session.cache_stale_if_error = t.duration(
            ctx,
            "cache_stale_if_error",
            session.cache_stale_if_error,
            true,
        );
        if let Some(n) = t.int_in(ctx, "cache_capacity", 0, i64::MAX) {
            session.cache_capacity = u64::try_from(n).unwrap_or(0);
        }
        t.finish(ctx);
        session
    }
}

/// Decodes a base64 cookie secret (standard or URL-safe alphabet, padding optional) and
/// checks it is exactly 32 bytes. The error never shows the value.
fn decode_cookie_secret(ctx: &mut Ctx<'_>, s: &Str) -> Option<[u8; 32]> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let text = s.value.trim();
    let Some(bytes) = standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .ok()
    else {
        s.error(
            ctx,
            "not valid base64 (standard or URL-safe alphabet); `linkgate secret` prints a fresh 32-byte secret",
        );
        return None;
    };
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(key) => Some(key),
        Err(_) => {
            s.error(
                ctx,
                format!(
                    "must decode to exactly 32 bytes, got {}; `linkgate secret` prints a fresh one",
                    bytes.len()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::names::is_cookie_token;

    #[test]
    fn cookie_tokens() {
        assert!(is_cookie_token("_linkgate"));
        assert!(is_cookie_token("__Host-linkgate"));
        assert!(!is_cookie_token("link gate"));
        assert!(!is_cookie_token("a;b"));
        assert!(!is_cookie_token(""));
    }
}
