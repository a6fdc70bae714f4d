//! JWTs that are not a sign-in with the SSO provider: bearer tokens of further issuers
//! (`authz.extra_jwt_issuers`, keys found through their discovery) and the platform's
//! account JWT (`[account] source = "jwt"`).

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use tokio::sync::OnceCell;
use url::Url;

use super::claims::{identity_of, ClaimNames};
use super::error::unavailable;
use super::jwks::Jwks;
use super::verify::{self, Expect};
use super::{discover, http_client, Cooldown, OidcError};
use crate::identity::Identity;

/// A further issuer whose JWTs are accepted as bearer tokens (`authz.extra_jwt_issuers`):
/// its keys are found through its discovery document.
pub struct Issuer {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    algs: Vec<Algorithm>,
    jwks: OnceCell<Arc<Jwks>>,
    failed: Cooldown,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Issuer {
    /// An issuer expecting `audience`; nothing is fetched yet.
    pub fn new(issuer: &str, audience: &str, http: reqwest::Client, algs: Vec<Algorithm>) -> Self {
        Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            http,
            algs,
            jwks: OnceCell::new(),
            failed: Cooldown::default(),
        }
    }

    /// The `iss` this issuer's tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn jwks(&self) -> Result<Arc<Jwks>, OidcError> {
        if let Some(jwks) = self.jwks.get() {
            return Ok(jwks.clone());
        }
        self.failed.check()?;
        let result = self
            .jwks
            .get_or_try_init(|| async {
                let url = Url::parse(&format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                ))
                .map_err(unavailable)?;
                let doc = discover(&self.http, url, Some(&self.issuer)).await?;
                Ok(Jwks::new(doc.jwks_uri, self.http.clone()))
            })
            .await
            .cloned();
        if let Err(e) = &result {
            self.failed.arm(e);
        }
        result
    }

    /// Finds the issuer's keys through its discovery document and loads them (readiness).
    pub async fn prepare(&self) -> Result<(), OidcError> {
        let jwks = self.jwks().await?;
        if jwks.is_loaded() {
            return Ok(());
        }
        jwks.load().await.map_err(unavailable)
    }

    /// Verifies a bearer JWT of this issuer.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let jwks = self.jwks().await?;
        let audiences = [self.audience.clone()];
        let claims = verify::verify(
            &jwks,
            token,
            &Expect {
                issuer: &self.issuer,
                audiences: &audiences,
                algs: &self.algs,
                nonce: None,
                authorized_party: None,
                leeway: 60,
            },
        )
        .await?;
        let names = ClaimNames {
            subject: "sub",
            email: "email",
            groups: "groups",
        };
        Ok(identity_of(&self.issuer, &claims, &names))
    }
}

/// The platform's account JWT (`[account] source = "jwt"`): found in a cookie or header,
/// verified like an id_token against the accounts provider's JWKS.
pub struct AccountJwt {
    source: crate::config::JwtSource,
    jwks: Arc<Jwks>,
    algs: Vec<Algorithm>,
}

impl std::fmt::Debug for AccountJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountJwt")
            .field("issuer", &self.source.issuer)
            .finish()
    }
}

impl AccountJwt {
    /// The verifier for `[account]` with `source = "jwt"`.
    pub fn new(source: crate::config::JwtSource) -> Result<Self, String> {
        let http = http_client(source.http_timeout)?;
        let jwks = Jwks::new(source.jwks_url.clone(), http);
        let algs = verify::algorithms(&source.algs);
        Ok(Self { source, jwks, algs })
    }

    /// The JWT a request carries where the platform puts it. `Err` when the request carries
    /// two different values (two cookies of the platform's name: one may have been planted
    /// by a sibling subdomain, and which one the platform meant cannot be told), which is
    /// treated as an invalid JWT.
    pub fn token_of<'a>(
        &self,
        req: &'a pingora::http::RequestHeader,
    ) -> Result<Option<&'a str>, OidcError> {
        match &self.source.location {
            crate::config::JwtLocation::Cookie(name) => {
                let mut values = crate::credentials::cookies(req, name).filter(|v| !v.is_empty());
                let first = values.next();
                if values.any(|v| Some(v) != first) {
                    return Err(OidcError::Refused(format!(
                        "more than one `{name}` cookie with different values"
                    )));
                }
                Ok(first)
            }
            crate::config::JwtLocation::Header(name) => {
                let mut all = req.headers.get_all(name).iter();
                let Some(v) = all.next() else {
                    return Ok(None);
                };
                if all.next().is_some() {
                    return Err(OidcError::Refused(format!("more than one `{name}` header")));
                }
                let v = v
                    .to_str()
                    .map_err(|_| OidcError::Refused(format!("the `{name}` header is not text")))?;
                let v = crate::credentials::without_bearer_scheme(v);
                Ok((!v.is_empty()).then_some(v))
            }
        }
    }

    /// The clock skew allowed on `exp` (seconds).
    pub fn leeway_secs(&self) -> i64 {
        i64::try_from(self.source.leeway.as_secs()).unwrap_or(i64::MAX / 4)
    }

    /// Whether the signing keys were loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.jwks.is_loaded()
    }

    /// Loads the signing keys (readiness, start-up).
    pub async fn prepare(&self) -> Result<(), OidcError> {
        if self.jwks.is_loaded() {
            return Ok(());
        }
        self.jwks.load().await.map_err(unavailable)
    }

    /// Verifies an account JWT and returns the cloud account it names.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let claims = verify::verify(
            &self.jwks,
            token,
            &Expect {
                issuer: &self.source.issuer,
                audiences: &self.source.audience,
                algs: &self.algs,
                nonce: None,
                authorized_party: None,
                leeway: self.source.leeway.as_secs(),
            },
        )
        .await?;
        let names = ClaimNames {
            subject: &self.source.subject_claim,
            email: &self.source.email_claim,
            groups: "groups",
        };
        let account = identity_of(&self.source.issuer, &claims, &names);
        if account.subject.is_empty() {
            return Err(OidcError::Refused(format!(
                "no {} claim",
                self.source.subject_claim
            )));
        }
        Ok(account)
    }
}
