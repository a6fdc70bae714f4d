//! `[redis]`: where the Redis store is and how to reach it.
//!
//! The topology (`mode`) decides which keys are required and which are refused.
//! Credentials are taken out of `redis.url` into `Redis::username` / `Redis::password`, so
//! the URL that remains is safe to print. `[session] store = "redis"` is what uses it
//! (src/config/session.rs).

use std::time::Duration;

use url::Url;

use super::reader::{parse_url, Ctx, ListForm, Str, Table};
use crate::secret::Secret;

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

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2Fw"), "p@ss/w");
        assert_eq!(percent_decode("plain%"), "plain%");
    }
}
