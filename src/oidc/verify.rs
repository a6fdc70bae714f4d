//! Verifying signed JWTs (id_tokens, bearer tokens, account JWTs) against a JWKS.
//!
//! The order matters and each step refuses on its own: the header's `alg` must be on the
//! operator's allow-list (never `none`, never HMAC: a public key is no shared secret); the
//! key comes from the issuer's JWKS by `kid` and must be of the family the `alg` claims (an
//! RSA key never verifies an `ES256` token, a key that names its own `alg` only that one);
//! then signature, `iss`, `aud`, `exp`, `nbf` and `iat` with a small leeway, `azp` when the
//! audience is shared, and the `nonce` of the login that asked for the token. A token whose
//! `sub` is empty (or not a string) is refused: it names nobody.
//!
//! The signature arithmetic is jsonwebtoken's `aws_lc_rs` backend (AWS-LC): ~23 µs for an
//! RS256 token where the `rust_crypto` backend took ~190 µs. AWS-LC verifies RSA signatures
//! only with keys of 2048 to 8192 bits (RFC 7518 asks for at least 2048), so a provider
//! still signing with a smaller RSA key is refused.

use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, JwksError};

/// Verified claims.
pub type Claims = Map<String, Value>;

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// `aud` must contain one of these.
    pub audiences: &'a [String],
    /// The algorithm allow-list.
    pub algs: &'a [Algorithm],
    /// The `nonce` the token must carry (id_tokens of a login).
    pub nonce: Option<&'a str>,
    /// When set, `azp` (if present, and required when `aud` has several entries) must equal it.
    pub authorized_party: Option<&'a str>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or a header linkgate does not accept (including `alg: none`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The algorithm is not on the allow-list.
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(Algorithm),
    /// The key set could not be used.
    #[error(transparent)]
    Keys(#[from] JwksError),
    /// The key does not fit the algorithm.
    #[error("key {kid:?} cannot verify {alg:?} tokens")]
    KeyMismatch {
        /// The key id.
        kid: Option<String>,
        /// The token's algorithm.
        alg: Algorithm,
    },
    /// Signature or a registered claim failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The nonce is missing or not the one this login sent.
    #[error("nonce mismatch")]
    Nonce,
    /// `azp` names another client.
    #[error("authorized party mismatch")]
    AuthorizedParty,
}

/// Parses the configured algorithm names; unknown or forbidden names were refused by the
/// configuration already and are skipped here.
pub fn algorithms(names: &[String]) -> Vec<Algorithm> {
    names
        .iter()
        .filter_map(|n| n.parse::<Algorithm>().ok())
        .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        .collect()
}

fn family_fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        _ => false,
    }
}

/// Verifies `token` and returns its claims.
pub async fn verify(jwks: &Jwks, token: &str, expect: &Expect<'_>) -> Result<Claims, VerifyError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let alg = header.alg;
    if !expect.algs.contains(&alg) {
        return Err(VerifyError::AlgorithmNotAllowed(alg));
    }
    let key = jwks.key(header.kid.as_deref()).await?;
    let named_alg_differs = key
        .jwk
        .common
        .key_algorithm
        .is_some_and(|ka| ka.to_string() != format!("{alg:?}"));
    if !family_fits(&key.jwk.algorithm, alg) || named_alg_differs {
        return Err(VerifyError::KeyMismatch {
            kid: header.kid.clone(),
            alg,
        });
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(expect.audiences);
    validation.leeway = expect.leeway;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    let claims = data.claims;
    // `sub` names who the token is about: a token about nobody (an empty or non-string
    // `sub`) must never become an identity, whatever its signature.
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
    {
        return Err(VerifyError::Invalid("empty or missing sub".into()));
    }

    let now = jsonwebtoken::get_current_timestamp();
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| iat > now + expect.leeway)
    {
        return Err(VerifyError::Invalid("issued in the future".into()));
    }
    if let Some(nonce) = expect.nonce {
        let got = claims.get("nonce").and_then(Value::as_str);
        let same = got.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            g.len() == nonce.len() && bool::from(g.as_bytes().ct_eq(nonce.as_bytes()))
        });
        if !same {
            return Err(VerifyError::Nonce);
        }
    }
    if let Some(client) = expect.authorized_party {
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != client => return Err(VerifyError::AuthorizedParty),
            None if several => return Err(VerifyError::AuthorizedParty),
            _ => {}
        }
    }
    Ok(claims)
}
