//! `[assertion]`: the signed identity assertion (a short-lived JWT) given to upstreams.
//!
//! Present means on. The key is either the operator's (`key_file`, PEM, never rotated by
//! linkgate) or generated and kept in the store, sealed under the cookie secret, so that every
//! instance signs with the same key set and rotates it together.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use super::reader::{Ctx, Table};

/// The default header name.
pub const DEFAULT_HEADER: &str = "x-linkgate-jwt-assertion";

/// `[assertion]`.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// The request header that carries it (`header`, default `X-Linkgate-Jwt-Assertion`);
    /// any copy a client sends is removed like every identity header.
    pub header: HeaderName,
    /// The signature algorithm (`algorithm`, `"ES256"` default or `"RS256"`).
    pub algorithm: Algorithm,
    /// A PEM private key of that algorithm (`key_file`); without it the key is generated and
    /// kept in the store.
    pub key_file: Option<PathBuf>,
    /// How long an assertion is valid (`lifetime`, default `60s`, at most `1h`).
    pub lifetime: Duration,
    /// How often a stored key is replaced (`rotate_every`, default `7d`; `"0s"` never).
    pub rotate_every: Duration,
    /// How long a new key is published in the JWKS before it signs (`publish_ahead`,
    /// default `10m`): longer than any verifier caches the JWKS.
    pub publish_ahead: Duration,
}

/// `assertion.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys when generated).
    RS256,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }
}

impl Assertion {
    pub(crate) fn read(ctx: &mut Ctx<'_>, mut t: Table<'_, '_>) -> Assertion {
        let mut header = HeaderName::from_static(DEFAULT_HEADER);
        if let Some(s) = t.nonempty(ctx, "header") {
            match HeaderName::from_bytes(s.value.trim().as_bytes()) {
                Ok(name) => header = name,
                Err(_) => s.error(ctx, format!("invalid header name `{}`", s.value)),
            }
        }
        let algorithm = t.choice(
            ctx,
            "algorithm",
            &[("ES256", Algorithm::ES256), ("RS256", Algorithm::RS256)],
            Algorithm::ES256,
        );
        let key_file = t.path(ctx, "key_file").map(|(path, s)| {
            match std::fs::read(&path) {
                Ok(pem) => {
                    if let Err(e) = check_key(algorithm, &pem) {
                        s.error(ctx, format!("`{}`: {e}", path.display()));
                    }
                }
                Err(e) => s.error(ctx, format!("cannot read `{}`: {e}", path.display())),
            }
            path
        });
        let lifetime_node = t.get("lifetime").map(|n| n.span.clone());
        let lifetime = t.duration(ctx, "lifetime", Duration::from_secs(60), false);
        if lifetime > Duration::from_secs(3600) {
            if let Some(span) = lifetime_node {
                ctx.error(
                    &span,
                    "assertion.lifetime",
                    "at most 1h: an assertion is a per-request proof, not a session",
                );
            }
        }
        let rotate_every = t.duration(
            ctx,
            "rotate_every",
            Duration::from_secs(7 * 24 * 3600),
            true,
        );
        let publish_ahead = t.duration(ctx, "publish_ahead", Duration::from_secs(600), false);
        if !rotate_every.is_zero() && rotate_every <= publish_ahead + lifetime {
            ctx.error(
                &t.span.clone(),
                "assertion.rotate_every",
                "must be longer than publish_ahead + lifetime (a key signs for rotate_every minus publish_ahead)",
            );
        }
        t.finish(ctx);
        Assertion {
            header,
            algorithm,
            key_file,
            lifetime,
            rotate_every,
            publish_ahead,
        }
    }
}

/// Whether `pem` is a private key usable for `algorithm`.
fn check_key(algorithm: Algorithm, pem: &[u8]) -> Result<(), String> {
    let key = openssl::pkey::PKey::private_key_from_pem(pem)
        .map_err(|_| "not a PEM private key".to_string())?;
    match (algorithm, key.id()) {
        (Algorithm::ES256, openssl::pkey::Id::EC) => {
            let ec = key.ec_key().map_err(|e| e.to_string())?;
            if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                return Err("ES256 needs a P-256 key".into());
            }
            Ok(())
        }
        (Algorithm::RS256, openssl::pkey::Id::RSA) if key.bits() >= 2048 => Ok(()),
        (Algorithm::RS256, openssl::pkey::Id::RSA) => Err("RS256 needs at least 2048 bits".into()),
        (a, _) => Err(format!("not a key for {}", a.as_str())),
    }
}
