//! The assertion's signing keys: generated or read from a file, kept sealed in the store as
//! a set (current and previous), and published as a JWK set with RFC 7638 thumbprints as
//! key ids.

use crate::config::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One key as kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredKey {
    pub(super) kid: String,
    pub(super) alg: Algorithm,
    /// PKCS#8 PEM.
    pub(super) pem: String,
    pub(super) created: i64,
    pub(super) signs_from: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct StoredSet {
    pub(super) keys: Vec<StoredKey>,
}

/// A key ready to sign.
pub(super) struct SigningKey {
    pub(super) kid: String,
    pub(super) alg: Algorithm,
    pub(super) key: PKey<Private>,
    pub(super) signs_from: i64,
    /// `base64url({"alg":..,"kid":..,"typ":"JWT"}) + "."`, once.
    pub(super) header: String,
    pub(super) jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("signs_from", &self.signs_from)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub(super) fn new(stored: &StoredKey) -> Result<Self, String> {
        let key = PKey::private_key_from_pem(stored.pem.as_bytes())
            .map_err(|e| format!("assertion key {}: {e}", stored.kid))?;
        let jwk = jwk(&key, stored.alg, &stored.kid)?;
        let header =
            serde_json::json!({"alg": stored.alg.as_str(), "kid": stored.kid, "typ": "JWT"});
        Ok(SigningKey {
            kid: stored.kid.clone(),
            alg: stored.alg,
            key,
            signs_from: stored.signs_from,
            header: format!("{}.", B64.encode(header.to_string())),
            jwk,
        })
    }

    /// The JWS signature of `input`, base64url.
    pub(super) fn sign(&self, input: &[u8]) -> Result<String, String> {
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)
            .map_err(|e| e.to_string())?;
        signer.update(input).map_err(|e| e.to_string())?;
        let der = signer.sign_to_vec().map_err(|e| e.to_string())?;
        match self.alg {
            Algorithm::RS256 => Ok(B64.encode(der)),
            Algorithm::ES256 => {
                // JWS wants r || s, 32 bytes each, not DER.
                let sig = openssl::ecdsa::EcdsaSig::from_der(&der).map_err(|e| e.to_string())?;
                let mut raw = sig.r().to_vec_padded(32).map_err(|e| e.to_string())?;
                raw.extend(sig.s().to_vec_padded(32).map_err(|e| e.to_string())?);
                Ok(B64.encode(raw))
            }
        }
    }
}

/// The public JWK of `key`.
pub(super) fn jwk(
    key: &PKey<Private>,
    alg: Algorithm,
    kid: &str,
) -> Result<serde_json::Value, String> {
    let e = |e: openssl::error::ErrorStack| e.to_string();
    match alg {
        Algorithm::ES256 => {
            let ec = key.ec_key().map_err(e)?;
            let mut ctx = BigNumContext::new().map_err(e)?;
            let mut x = openssl::bn::BigNum::new().map_err(e)?;
            let mut y = openssl::bn::BigNum::new().map_err(e)?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(e)?;
            Ok(serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": B64.encode(x.to_vec_padded(32).map_err(e)?),
                "y": B64.encode(y.to_vec_padded(32).map_err(e)?),
            }))
        }
        Algorithm::RS256 => {
            let rsa = key.rsa().map_err(e)?;
            Ok(serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": B64.encode(rsa.n().to_vec()),
                "e": B64.encode(rsa.e().to_vec()),
            }))
        }
    }
}

/// A fresh private key for `alg`, as PKCS#8 PEM, and its RFC 7638 thumbprint as `kid`.
pub(super) fn generate(alg: Algorithm) -> Result<(String, String), String> {
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let key = match alg {
        Algorithm::ES256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?
        }
        Algorithm::RS256 => {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).map_err(e)?).map_err(e)?
        }
    };
    let pem =
        String::from_utf8(key.private_key_to_pem_pkcs8().map_err(e)?).map_err(|e| e.to_string())?;
    Ok((pem, thumbprint(&key, alg)?))
}

/// RFC 7638: SHA-256 of the required members in lexicographic order.
pub(super) fn thumbprint(key: &PKey<Private>, alg: Algorithm) -> Result<String, String> {
    let j = jwk(key, alg, "")?;
    let canonical = match alg {
        Algorithm::ES256 => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap_or(""),
            j["y"].as_str().unwrap_or("")
        ),
        Algorithm::RS256 => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            j["e"].as_str().unwrap_or(""),
            j["n"].as_str().unwrap_or("")
        ),
    };
    Ok(B64.encode(Sha256::digest(canonical.as_bytes())))
}

/// The keys an instance holds: which may sign, and the JWKS that publishes all of them.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Ordered by `signs_from`.
    pub(super) keys: Vec<SigningKey>,
    pub(super) jwks: Bytes,
}

impl Loaded {
    pub(super) fn new(mut keys: Vec<SigningKey>) -> Self {
        keys.sort_by_key(|k| k.signs_from);
        let jwks = serde_json::json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() });
        Loaded {
            keys,
            jwks: Bytes::from(jwks.to_string()),
        }
    }

    /// The key that signs at `now`: the newest whose `signs_from` has come.
    pub(super) fn active(&self, now: i64) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.signs_from <= now)
    }
}
