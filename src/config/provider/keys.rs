//! The provider keys whose values need checks of their own: `issuer` (kept as written),
//! `scopes`, `redirect_path` (under `server.proxy_prefix`), `extra_auth_params` (never one
//! linkgate sets itself) and the algorithm allow-lists (never `none` or HMAC).

use std::collections::BTreeMap;

use super::{ALLOWED_ALGS, HTTP};
use crate::config::reader::{parse_url, Ctx, ListForm, Str, Table};

/// Authorization-request parameters linkgate sets itself.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// An `issuer`: an http(s) URL, kept exactly as written.
pub(in crate::config) fn issuer(ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>) -> Option<String> {
    let s = t.nonempty(ctx, "issuer")?;
    let url = parse_url(ctx, &s, HTTP)?;
    if url.query().is_some() {
        s.error(ctx, "issuer must not have a ?query");
        return None;
    }
    Some(s.value.trim().to_string())
}

pub(super) fn scopes(ctx: &mut Ctx<'_>, list: Vec<Str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in list {
        let v = s.value.trim();
        if v.is_empty() || v.contains(char::is_whitespace) {
            s.error(ctx, "a scope must be one non-empty word");
        } else if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

pub(super) fn redirect_path(ctx: &mut Ctx<'_>, s: &Str, proxy_prefix: &str) -> Option<String> {
    let v = s.value.trim();
    if !v.starts_with('/') || v.contains(['?', '#']) {
        s.error(
            ctx,
            format!("must be a path starting with `/` (no `?` or `#`), got `{v}`"),
        );
        return None;
    }
    if !v.starts_with(&format!("{proxy_prefix}/")) {
        s.error(
            ctx,
            format!(
                "must be under server.proxy_prefix (`{proxy_prefix}/...`): linkgate only answers its own endpoints there"
            ),
        );
        return None;
    }
    Some(v.to_string())
}

pub(super) fn auth_params(ctx: &mut Ctx<'_>, mut t: Table<'_, '_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, node) in t.entries() {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) {
            ctx.error(
                &node.key_span,
                &node.path,
                format!("`{key}` is set by linkgate and cannot be overridden"),
            );
            continue;
        }
        if let Some(s) = node.str(ctx) {
            out.insert(key, s.value);
        }
    }
    t.finish(ctx);
    out
}

/// Reads an algorithm allow-list, refusing `none` and HMAC algorithms.
pub(in crate::config) fn algs(
    ctx: &mut Ctx<'_>,
    t: &mut Table<'_, '_>,
    key: &'static str,
) -> Vec<String> {
    let default = vec!["RS256".to_string()];
    let Some(node) = t.get(key) else {
        return default;
    };
    let Some(list) = t.string_list(ctx, key, ListForm::ArrayOrOne) else {
        return default;
    };
    if list.is_empty() {
        node.error(ctx, "must list at least one algorithm");
        return default;
    }
    let mut out: Vec<String> = Vec::new();
    for s in list {
        let v = s.value.trim();
        if let Some(canonical) = ALLOWED_ALGS.iter().find(|a| a.eq_ignore_ascii_case(v)) {
            if !out.iter().any(|o| o == canonical) {
                out.push(canonical.to_string());
            }
        } else if v.eq_ignore_ascii_case("none") {
            s.error(
                ctx,
                "`none` is refused: unsigned tokens would let anyone forge an identity",
            );
        } else if v.to_ascii_uppercase().starts_with("HS") {
            s.error(
                ctx,
                format!(
                    "`{v}` is refused: HMAC algorithms are keyed with the shared client secret, so anyone holding it could forge tokens; use an asymmetric algorithm such as RS256 or ES256"
                ),
            );
        } else {
            s.error(
                ctx,
                format!(
                    "unknown algorithm `{v}`; allowed: {}",
                    ALLOWED_ALGS.join(", ")
                ),
            );
        }
    }
    if out.is_empty() {
        default
    } else {
        out
    }
}
