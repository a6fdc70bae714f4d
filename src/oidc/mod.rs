//! OpenID Connect and the JWTs linkgate verifies: [`Provider`] (one OpenID provider, `[sso]`
//! or `[account] source = "oauth2"`: discovery, the authorization request with PKCE S256,
//! state and nonce, the code exchange and refresh with the `oauth2` crate, id_token
//! verification against its JWKS, userinfo), [`Issuer`] and [`AccountJwt`] (bearer tokens of
//! further issuers, the platform's account JWT), what claims say (`claims`), key sets
//! ([`jwks`]), verification ([`verify`]) and why a provider failed ([`OidcError`]).
//!
//! Everything network-bound is lazy and happens inside the serving runtime: discovery on
//! first use (retried on later requests if it failed), JWKS per [`jwks`]. The HTTP client
//! follows no redirects and has timeouts: a token endpoint that redirects is an error, not
//! an invitation.

mod claims;
mod error;
mod issuers;
pub mod jwks;
mod provider;
pub mod verify;

pub use crate::identity::Identity;
pub use claims::{unverified_expiry, unverified_issuer};
pub use error::{OidcError, Unreachable};
pub use issuers::{AccountJwt, Issuer};
pub use provider::Provider;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// The extra field every OIDC token response carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    /// The id_token, when the provider sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdTokenFields {}

/// The last failure to reach a provider's discovery document: requests do not retry it
/// before [`jwks::COOLDOWN`] has passed, so that anonymous requests cannot make linkgate
/// hammer a provider that is down (they get the same error without a fetch).
#[derive(Default)]
struct Cooldown(std::sync::Mutex<Option<(std::time::Instant, OidcError)>>);

// === impl Cooldown ===

impl Cooldown {
    /// The remembered error while the cooldown runs.
    fn check(&self) -> Result<(), OidcError> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((at, e)) if at.elapsed() < jwks::COOLDOWN => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Remembers a failure (and when), and says in the log what failed: this is where a
    /// provider's outage is first seen, once per cooldown.
    fn arm(&self, e: &OidcError) {
        tracing::warn!(error = %e, cooldown = ?jwks::COOLDOWN, "provider unreachable; not asked again before the cooldown ends");
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some((std::time::Instant::now(), e.clone()));
    }
}

/// The provider's endpoints, from discovery or from the configuration.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `iss` of its tokens.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorize: Url,
    /// Token endpoint.
    pub token: Url,
    /// Userinfo endpoint, if any.
    pub userinfo: Option<Url>,
    /// JWKS.
    pub jwks: Url,
    /// RP-initiated logout, if any.
    pub end_session: Option<Url>,
    /// Whether the provider puts `iss` in its authorization responses (RFC 9207, from
    /// discovery's `authorization_response_iss_parameter_supported`).
    pub iss_in_response: bool,
}

// === impl Endpoints ===

impl Endpoints {
    /// Checks the `iss` parameter of an authorization response (RFC 9207, against mix-up
    /// attacks): when present it must name this provider; when the provider advertises that
    /// it sends one, it must be present.
    pub fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), OidcError> {
        match iss {
            Some(iss) if iss.trim_end_matches('/') == self.issuer.trim_end_matches('/') => Ok(()),
            Some(_) => Err(OidcError::Refused(
                "the authorization response names another issuer".into(),
            )),
            None if self.iss_in_response => Err(OidcError::Refused(
                "the authorization response has no iss, and the provider promises one".into(),
            )),
            None => Ok(()),
        }
    }
}

/// Tokens from a code exchange or a refresh. `Debug` shows which tokens are present, never
/// their values.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token, when issued.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The id_token, when issued.
    #[serde(default)]
    pub id_token: Option<String>,
    /// Unix seconds when the access token expires, when known.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds when these tokens were received (absent in sessions stored before it
    /// was recorded): with `expires_at`, the access token's lifetime, which schedules the
    /// next refresh (see `session::refresh_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &crate::secret::Redacted)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| crate::secret::Redacted),
            )
            .field(
                "id_token",
                &self.id_token.as_ref().map(|_| crate::secret::Redacted),
            )
            .field("expires_at", &self.expires_at)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// A new authorization request: the URL to send the browser to and the secrets to keep.
/// `Debug` leaves the secrets out.
pub struct AuthRequest {
    /// Where to send the browser.
    pub url: Url,
    /// The PKCE verifier (kept in the flow record).
    pub verifier: String,
    /// The nonce (kept in the flow record).
    pub nonce: String,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("url", &self.url.as_str())
            .field("verifier", &crate::secret::Redacted)
            .field("nonce", &crate::secret::Redacted)
            .finish()
    }
}

/// Sends a GET that must answer 2xx with JSON, and parses it. The error says which step
/// failed, in one line.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, Unreachable> {
    let resp = request
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| Unreachable::because("request", e))?;
    if !resp.status().is_success() {
        return Err(Unreachable::new(format!("status {}", resp.status())));
    }
    resp.json()
        .await
        .map_err(|e| Unreachable::because("answer", e))
}

/// Fetches a discovery document; when `issuer` is given, the document must name it.
async fn discover(
    http: &reqwest::Client,
    url: Url,
    issuer: Option<&str>,
) -> Result<Discovery, OidcError> {
    let fail = |e: Unreachable| OidcError::Unavailable(e.within(format!("discovery at {url}")));
    let doc: Discovery = get_json(http.get(url.clone())).await.map_err(fail)?;
    if let Some(issuer) = issuer {
        if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(fail(Unreachable::new(format!(
                "names issuer {:?}, not the configured {issuer:?}",
                doc.issuer
            ))));
        }
    }
    Ok(doc)
}

/// The HTTP client for provider calls: no redirects, bounded time.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("linkgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    #[serde(default)]
    userinfo_endpoint: Option<Url>,
    jwks_uri: Url,
    #[serde(default)]
    end_session_endpoint: Option<Url>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

// === impl Provider ===
