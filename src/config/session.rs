//! `[session]` and `[redis]`: the session cookie and the store behind it.
//!
//! The cookie secret is decoded and length-checked here, once; nothing downstream handles
//! base64. Redis credentials are taken out of `redis.url` into `Redis::username` /
//! `Redis::password`, so the URL that remains is safe to print.

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use url::Url;

use super::reader::{parse_url, Ctx, ListForm, Str, Table};
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

/// `[redis]`: connection to the Redis store.
#[derive(Debug, Clone)]
pub struct Redis {
    /// Topology (`mode`, default `standalone`).
    pub mode: RedisMode,
    /// Server URL for `standalone` (`url`: `redis://`, `rediss://` or `redis+unix://`),
    /// with any credentials moved to `username` / `password`.
    pub url: Option<Url>,
    /// Seed nodes for `cluster`, sentinels for `sentinel` (`nodes`: `host:port` or
    /// `redis://` / `rediss://` URLs without credentials).
    pub nodes: Vec<String>,
    /// Master name to ask the sentinels for (`sentinel_master`).
    pub sentinel_master: Option<String>,
    /// ACL user name (`username`, or the user of `url`).
    pub username: Option<String>,
    /// Password (`password` / `password_file`, or the password of `url`).
    pub password: Option<Secret<String>>,
    /// Prefix of every key (`key_prefix`, default `linkgate:`).
    pub key_prefix: String,
    /// Connect timeout (`connect_timeout`, default `2s`).
    pub connect_timeout: Duration,
    /// Timeout of each command (`command_timeout`, default `1s`).
    pub command_timeout: Duration,
    /// Connections in the pool (`pool_size`, default 8).
    pub pool_size: usize,
}

/// Redis topology (`redis.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `"standalone"`: one server at `url`.
    Standalone,
    /// `"sentinel"`: sentinels at `nodes`, master `sentinel_master`.
    Sentinel,
    /// `"cluster"`: Redis Cluster seeded from `nodes`.
    Cluster,
}

impl RedisMode {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
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

// === impl Redis ===

impl Redis {
    pub(crate) fn read(ctx: &mut Ctx<'_>, mut t: Table<'_, '_>) -> Redis {
        let mode_node = t.get("mode");
        let mode = t.choice(
            ctx,
            "mode",
            &[
                RedisMode::Standalone,
                RedisMode::Sentinel,
                RedisMode::Cluster,
            ]
            .map(|v| (v.as_str(), v)),
            RedisMode::Standalone,
        );
        let mode_name = mode.as_str();
        let url_str = t.nonempty(ctx, "url");
        let mut url = url_str
            .as_ref()
            .and_then(|s| parse_url(ctx, s, &["redis", "rediss", "redis+unix"]));
        let nodes: Vec<String> = t
            .string_list(ctx, "nodes", ListForm::Array)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| redis_node(ctx, s))
            .collect();
        let sentinel_master = t.nonempty(ctx, "sentinel_master").map(|s| s.value);
        let mut username = t.nonempty(ctx, "username").map(|s| s.value);
        let password_keys_set = t.get("password").is_some() || t.get("password_file").is_some();
        let mut password = t
            .secret(ctx, "password", "password_file")
            .map(|s| Secret::new(s.value));
        let key_prefix = t
            .string(ctx, "key_prefix")
            .map(|s| s.value)
            .unwrap_or_else(|| "linkgate:".to_string());
        let connect_timeout = t.duration(ctx, "connect_timeout", Duration::from_secs(2), false);
        let command_timeout = t.duration(ctx, "command_timeout", Duration::from_secs(1), false);
        let pool_size = t
            .int_in(ctx, "pool_size", 1, 4096)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(8);

        // Credentials inside the URL move to their own fields so the URL can be printed.
        if let (Some(u), Some(s)) = (url.as_mut(), url_str.as_ref()) {
            if !u.username().is_empty() {
                if username.is_some() {
                    s.error(ctx, "user name given both in url and in redis.username");
                } else {
                    username = Some(percent_decode(u.username()));
                }
            }
            if let Some(p) = u.password() {
                if password_keys_set {
                    s.error(
                        ctx,
                        "password given both in url and in redis.password / password_file",
                    );
                } else {
                    if s.literal {
                        ctx.warn(
                            &s.span,
                            &s.path,
                            "literal secret in the config file; prefer ${ENV_VAR} or password_file",
                        );
                    }
                    password = Some(Secret::new(percent_decode(p)));
                }
            }
            // Ignored failures: URLs without a host carry no credentials to strip.
            let _ = u.set_username("");
            let _ = u.set_password(None);
        }

        // What each mode needs, and what it does not take.
        let mut only_for = |ctx: &mut Ctx<'_>, key: &'static str, modes: &str| {
            if let Some(n) = t.get(key) {
                ctx.error(
                    &n.key_span,
                    &n.path,
                    format!("`{key}` is only for mode = {modes}"),
                );
            }
        };
        match mode {
            RedisMode::Standalone => {
                only_for(ctx, "nodes", "\"cluster\" or \"sentinel\"");
                only_for(ctx, "sentinel_master", "\"sentinel\"");
            }
            RedisMode::Cluster => {
                only_for(ctx, "url", "\"standalone\"");
                only_for(ctx, "sentinel_master", "\"sentinel\"");
            }
            RedisMode::Sentinel => only_for(ctx, "url", "\"standalone\""),
        }
        let mut need = |ctx: &mut Ctx<'_>, key: &'static str, present: bool| {
            if !present && t.get(key).is_none() {
                let reason = format!("missing: mode = \"{mode_name}\" requires `{key}`");
                match &mode_node {
                    Some(n) => n.error(ctx, reason),
                    None => t.missing(ctx, key, &reason),
                }
            }
        };
        match mode {
            RedisMode::Standalone => need(ctx, "url", url.is_some()),
            RedisMode::Cluster => need(ctx, "nodes", !nodes.is_empty()),
            RedisMode::Sentinel => {
                need(ctx, "nodes", !nodes.is_empty());
                need(ctx, "sentinel_master", sentinel_master.is_some());
            }
        }
        if matches!(mode, RedisMode::Cluster | RedisMode::Sentinel) {
            if let Some(n) = t.get("nodes") {
                if nodes.is_empty()
                    && matches!(n.value, toml::de::DeValue::Array(a) if a.is_empty())
                {
                    n.error(ctx, "must list at least one node");
                }
            }
        }
        t.finish(ctx);
        Redis {
            mode,
            url: if mode == RedisMode::Standalone {
                url
            } else {
                None
            },
            nodes,
            sentinel_master,
            username,
            password,
            key_prefix,
            connect_timeout,
            command_timeout,
            pool_size,
        }
    }
}

/// A `nodes` entry: `host:port`, or a `redis://` / `rediss://` URL without credentials.
fn redis_node(ctx: &mut Ctx<'_>, s: &Str) -> Option<String> {
    let v = s.value.trim();
    if v.contains("://") {
        let url = parse_url(ctx, s, &["redis", "rediss"])?;
        if !url.username().is_empty() || url.password().is_some() {
            s.error(
                ctx,
                "credentials in node URLs are not allowed; use redis.username and redis.password",
            );
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            s.error(ctx, "URL has no host");
            return None;
        }
        return Some(v.to_string());
    }
    let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !host.is_empty()
            && port.parse::<u16>().is_ok_and(|p| p > 0)
            && (super::names::is_dns_name(host) || host.parse::<std::net::IpAddr>().is_ok())
    });
    if ok {
        Some(v.to_string())
    } else {
        s.error(
            ctx,
            format!("invalid node `{v}`: expected host:port or a redis:// URL"),
        );
        None
    }
}

/// Decodes `%XX` escapes of a URL user or password.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::names::is_cookie_token;

    #[test]
    fn cookie_tokens() {
        assert!(is_cookie_token("_linkgate"));
        assert!(is_cookie_token("__Host-linkgate"));
        assert!(!is_cookie_token("link gate"));
        assert!(!is_cookie_token("a;b"));
        assert!(!is_cookie_token(""));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2Fw"), "p@ss/w");
        assert_eq!(percent_decode("plain%"), "plain%");
    }
}
