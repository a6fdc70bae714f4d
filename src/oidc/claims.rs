//! Reading what a provider asserts: an [`Identity`] from verified claims, userinfo merged
//! into an id_token's claims, a refreshed id_token checked against the first, and the few
//! claims read from a JWT before it is verified (to pick its verifier, its expiry).

use serde_json::Value;

use super::verify::Claims;
use super::OidcError;
use crate::identity::Identity;

/// Which claims hold what.
pub(super) struct ClaimNames<'a> {
    pub(super) subject: &'a str,
    pub(super) email: &'a str,
    pub(super) groups: &'a str,
}

/// The identity a set of verified claims describes.
pub(super) fn identity_of(issuer: &str, claims: &Claims, names: &ClaimNames<'_>) -> Identity {
    let text = |k: &str| claims.get(k).and_then(claim_text);
    let groups = match claims.get(names.groups) {
        Some(Value::Array(items)) => items.iter().filter_map(claim_text).collect(),
        Some(Value::String(s)) => s
            .split([',', ' '])
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Identity {
        issuer: issuer.to_string(),
        subject: text(names.subject)
            .or_else(|| text("sub"))
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_default(),
        email: text(names.email),
        email_verified: claims
            .get("email_verified")
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true")),
        name: text("name"),
        preferred_username: text("preferred_username"),
        groups,
    }
}

/// Checks that a refreshed id_token (`after`, verified) names the same issuer, subject and
/// audience as the session's id_token (`before`, verified when it was stored).
pub(super) fn same_principal(before: &Claims, after: &Claims) -> Result<(), OidcError> {
    fn audiences(claims: &Claims) -> Vec<String> {
        let mut list: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        list.sort();
        list.dedup();
        list
    }
    for claim in ["iss", "sub"] {
        if before.get(claim) != after.get(claim) {
            return Err(OidcError::Refused(format!(
                "the refreshed id_token names another {claim}"
            )));
        }
    }
    if audiences(before) != audiences(after) {
        return Err(OidcError::Refused(
            "the refreshed id_token names another aud".into(),
        ));
    }
    Ok(())
}

/// Merges a userinfo answer into verified id_token claims.
///
/// Userinfo must name the id_token's `sub`, present and equal (OIDC Core 5.3.2: otherwise
/// its values must not be used; here the sign-in is refused). Its claims replace the
/// id_token's, except the registered ones that only the signed token may assert. An email
/// from userinfo that differs from the id_token's brings its own `email_verified` (absent:
/// unverified): the id_token vouched for another address, not for this one.
pub(super) fn merge_userinfo(
    mut claims: Claims,
    info: Claims,
    email_claim: &str,
) -> Result<Claims, OidcError> {
    match (info.get("sub"), claims.get("sub")) {
        (Some(Value::String(u)), Some(Value::String(t))) if u == t && !u.is_empty() => {}
        (None, _) => return Err(OidcError::Refused("userinfo names no subject".into())),
        _ => return Err(OidcError::Refused("userinfo names another subject".into())),
    }
    let email_changes = info
        .get(email_claim)
        .is_some_and(|e| Some(e) != claims.get(email_claim));
    if email_changes {
        claims.remove("email_verified");
    }
    for (k, v) in info {
        if !matches!(
            k.as_str(),
            "iss" | "aud" | "exp" | "iat" | "nbf" | "nonce" | "azp" | "sub"
        ) {
            claims.insert(k, v);
        }
    }
    Ok(claims)
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn unverified_claims(token: &str) -> Option<Claims> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The issuer a JWT claims, read without verifying anything (to pick the verifier).
pub fn unverified_issuer(token: &str) -> Option<String> {
    unverified_claims(token)?
        .get("iss")?
        .as_str()
        .map(str::to_string)
}

/// The `exp` of a JWT, read without verifying anything: only meaningful for a token that
/// has just been verified (verification requires `exp`).
pub fn unverified_expiry(token: &str) -> Option<i64> {
    unverified_claims(token)?.get("exp")?.as_i64()
}
