//! The small pieces of OAuth 2.0, PKCE and HTTP the endpoints share: the OAuth error
//! answer, random tokens, constant-time comparison, the code verifier and challenge checks,
//! client credentials from `Authorization: Basic`, a request's cookie, and the same-origin
//! check of the sign-in forms.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{header, StatusCode};
use pingora::http::RequestHeader;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::web::Answer;

/// An OAuth 2.0 error at the token or userinfo endpoint (RFC 6749 5.2, RFC 6750 3.1).
#[derive(Debug)]
pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: String,
}

impl OAuthError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" | "invalid_token" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    pub(super) fn answer(&self, realm: &str) -> Answer {
        let body = json!({ "error": self.error, "error_description": self.description });
        let answer = Answer::json(self.status, &body).header(header::PRAGMA, "no-cache");
        match self.error {
            "invalid_client" => answer.header(
                header::WWW_AUTHENTICATE,
                &format!("Basic realm=\"{realm}\""),
            ),
            "invalid_token" => answer.header(
                header::WWW_AUTHENTICATE,
                &format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    self.description
                ),
            ),
            _ => answer,
        }
    }
}

pub(super) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub(super) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether `s` is 43 to 128 characters of RFC 7636's unreserved set (a code verifier).
pub(super) fn is_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Whether `s` can be an S256 code challenge: BASE64URL(SHA-256(verifier)), 43 characters.
pub(super) fn is_s256_challenge(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 4.6: BASE64URL(SHA-256(ASCII(code_verifier))) == code_challenge.
pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    same(
        &URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        challenge,
    )
}

/// The client id and secret of an `Authorization: Basic` header. RFC 6749 2.3.1: both are
/// form-urlencoded before base64.
pub(super) fn basic_credentials(req: &RequestHeader) -> Option<Result<(String, String), ()>> {
    let value = req.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Some(Err(()));
    };
    let unform = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    match (unform(id), unform(secret)) {
        (Ok(id), Ok(secret)) => Some(Ok((id, secret))),
        _ => Some(Err(())),
    }
}

/// The value of cookie `name` in the request.
pub(super) fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A form POST from another site is refused: the sign-in forms change who is signed in.
pub(super) fn same_origin(req: &RequestHeader) -> bool {
    if let Some(site) = req
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match req
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("null") => true,
        Some(origin) => req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin == format!("http://{host}")),
    }
}

#[cfg(test)]
mod tests;
