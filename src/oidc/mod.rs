//! OpenID Connect against one provider (`[sso]`, and later `[account]`): discovery, the
//! authorization request (PKCE S256, state, nonce), the code exchange and refresh with the
//! `oauth2` crate, id_token verification against the provider's JWKS, and userinfo.
//!
//! Everything network-bound is lazy and happens inside the serving runtime: discovery on
//! first use (retried on later requests if it failed), JWKS per [`jwks`]. The HTTP client
//! follows no redirects and has timeouts: a token endpoint that redirects is an error, not
//! an invitation.

pub mod jwks;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    StandardRevocableToken, StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use url::Url;

use crate::config::{LogoutParams, Provider as ProviderConfig, TokenAuthMethod};
use jwks::Jwks;
use verify::{Claims, Expect, VerifyError};

/// The extra field every OIDC token response carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    /// The id_token, when the provider sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdTokenFields {}

type TokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

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

    /// Remembers a failure (and when).
    fn arm(&self, e: &OidcError) {
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

struct Ready {
    endpoints: Endpoints,
    client: OAuthClient,
    jwks: Arc<Jwks>,
}

/// Why talking to the provider failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused the code or the refresh token.
    #[error("the provider refused: {0}")]
    Refused(String),
    /// The tokens did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// A signed-in identity as the provider asserts it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub` (or the configured subject claim).
    pub subject: String,
    /// Email, if given.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider says the email is verified (absent counts as unverified).
    #[serde(default)]
    pub email_verified: bool,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `preferred_username`.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Groups, from the configured claim.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity for tests: `sub@example.test`, verified, no name or groups.
    #[cfg(test)]
    pub fn sample(issuer: &str, sub: &str) -> Self {
        Identity {
            issuer: issuer.into(),
            subject: sub.into(),
            email: Some(format!("{sub}@example.test")),
            email_verified: true,
            name: None,
            preferred_username: None,
            groups: vec![],
        }
    }

    /// The stable key of this identity: issuer and subject.
    pub fn key(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }

    /// What to show a person: email, else username, else subject.
    pub fn display(&self) -> &str {
        self.email
            .as_deref()
            .or(self.preferred_username.as_deref())
            .unwrap_or(&self.subject)
    }
}

/// Tokens from a code exchange or a refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A new authorization request: the URL to send the browser to and the secrets to keep.
#[derive(Debug)]
pub struct AuthRequest {
    /// Where to send the browser.
    pub url: Url,
    /// The PKCE verifier (kept in the flow record).
    pub verifier: String,
    /// The nonce (kept in the flow record).
    pub nonce: String,
}

/// One OpenID provider.
pub struct Provider {
    /// `sso` or `account` (metrics, logs).
    pub label: &'static str,
    config: ProviderConfig,
    http: reqwest::Client,
    algs: Vec<Algorithm>,
    ready: OnceCell<Ready>,
    failed: Cooldown,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("label", &self.label)
            .field("display_name", &self.config.display_name)
            .finish()
    }
}

/// Sends a GET that must answer 2xx with JSON, and parses it. The error says which step
/// failed, in one line.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, String> {
    let resp = request
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

/// Fetches a discovery document; when `issuer` is given, the document must name it.
async fn discover(
    http: &reqwest::Client,
    url: Url,
    issuer: Option<&str>,
) -> Result<Discovery, OidcError> {
    let fail = |what: String| OidcError::Unavailable(format!("discovery at {url}: {what}"));
    let doc: Discovery = get_json(http.get(url.clone())).await.map_err(fail)?;
    if let Some(issuer) = issuer {
        if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(fail(format!(
                "names issuer {:?}, not the configured {issuer:?}",
                doc.issuer
            )));
        }
    }
    Ok(doc)
}

/// Which claims hold what.
struct ClaimNames<'a> {
    subject: &'a str,
    email: &'a str,
    groups: &'a str,
}

/// The identity a set of verified claims describes.
fn identity_of(issuer: &str, claims: &Claims, names: &ClaimNames<'_>) -> Identity {
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

fn unavailable(e: impl std::fmt::Display) -> OidcError {
    OidcError::Unavailable(e.to_string())
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

impl Provider {
    /// A provider from its configuration; nothing is fetched yet.
    pub fn new(label: &'static str, config: ProviderConfig) -> Result<Self, String> {
        let http = http_client(config.http_timeout)?;
        let algs = verify::algorithms(&config.id_token_algs);
        Ok(Self {
            label,
            config,
            http,
            algs,
            ready: OnceCell::new(),
            failed: Cooldown::default(),
        })
    }

    /// The configured display name ("Magento.com").
    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    /// The configured callback path.
    pub fn redirect_path(&self) -> &str {
        &self.config.redirect_path
    }

    /// The client id (the audience of its id_tokens).
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algs
    }

    /// Whether discovery and the first JWKS load have succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some_and(|r| r.jwks.is_loaded())
    }

    /// Discovers (once) and loads the keys; the readiness probe and start-up call this.
    pub async fn prepare(&self) -> Result<(), OidcError> {
        let ready = self.ready().await?;
        if !ready.jwks.is_loaded() {
            ready.jwks.load().await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The resolved endpoints.
    pub async fn endpoints(&self) -> Result<Endpoints, OidcError> {
        Ok(self.ready().await?.endpoints.clone())
    }

    /// The JWKS cache (bearer-token verification shares it).
    pub async fn jwks(&self) -> Result<Arc<Jwks>, OidcError> {
        Ok(self.ready().await?.jwks.clone())
    }

    async fn ready(&self) -> Result<&Ready, OidcError> {
        if let Some(ready) = self.ready.get() {
            return Ok(ready);
        }
        self.failed.check()?;
        let result = self.ready.get_or_try_init(|| self.resolve()).await;
        if let Err(e) = &result {
            self.failed.arm(e);
        }
        result
    }

    async fn resolve(&self) -> Result<Ready, OidcError> {
        let c = &self.config;
        let discovered = match (&c.discovery_url, &c.issuer) {
            (Some(url), _) => Some(self.discover(url.clone()).await?),
            (None, Some(issuer))
                if c.authorize_url.is_none() || c.token_url.is_none() || c.jwks_url.is_none() =>
            {
                let url = Url::parse(&format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                ))
                .map_err(unavailable)?;
                Some(self.discover(url).await?)
            }
            _ => None,
        };
        // Explicit settings, then discovery, then the preset's documented endpoints.
        let pick =
            |explicit: &Option<Url>, found: Option<Url>, documented: &Option<Url>, what: &str| {
                explicit
                    .clone()
                    .or(found)
                    .or_else(|| documented.clone())
                    .ok_or_else(|| OidcError::Unavailable(format!("no {what} endpoint")))
            };
        let doc = &c.documented;
        let d = discovered.as_ref();
        let endpoints = Endpoints {
            issuer: c
                .issuer
                .clone()
                .or_else(|| d.map(|d| d.issuer.clone()))
                .ok_or_else(|| OidcError::Unavailable("no issuer".into()))?,
            authorize: pick(
                &c.authorize_url,
                d.map(|d| d.authorization_endpoint.clone()),
                &doc.authorize,
                "authorization",
            )?,
            token: pick(
                &c.token_url,
                d.map(|d| d.token_endpoint.clone()),
                &doc.token,
                "token",
            )?,
            userinfo: c
                .userinfo_url
                .clone()
                .or(d.and_then(|d| d.userinfo_endpoint.clone()))
                .or_else(|| doc.userinfo.clone()),
            jwks: pick(
                &c.jwks_url,
                d.map(|d| d.jwks_uri.clone()),
                &doc.jwks,
                "jwks",
            )?,
            end_session: c
                .end_session_url
                .clone()
                .or(d.and_then(|d| d.end_session_endpoint.clone()))
                .or_else(|| doc.end_session.clone()),
            iss_in_response: d.is_some_and(|d| d.authorization_response_iss_parameter_supported),
        };
        let mut client = oauth2::Client::new(ClientId::new(c.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(endpoints.authorize.clone()))
            .set_token_uri(TokenUrl::from_url(endpoints.token.clone()))
            .set_auth_type(match c.token_auth_method {
                TokenAuthMethod::ClientSecretPost | TokenAuthMethod::None => AuthType::RequestBody,
                TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            });
        if let Some(secret) = &c.client_secret {
            if !matches!(c.token_auth_method, TokenAuthMethod::None) {
                client = client.set_client_secret(ClientSecret::new(secret.expose().clone()));
            }
        }
        let jwks = Jwks::new(endpoints.jwks.clone(), self.http.clone());
        tracing::info!(provider = self.label, issuer = %endpoints.issuer, "provider ready");
        Ok(Ready {
            endpoints,
            client,
            jwks,
        })
    }

    async fn discover(&self, url: Url) -> Result<Discovery, OidcError> {
        discover(&self.http, url, self.config.issuer.as_deref()).await
    }

    /// Builds an authorization request for `state`, returning to `redirect_uri`.
    pub async fn authorize(
        &self,
        state: &str,
        redirect_uri: &str,
    ) -> Result<AuthRequest, OidcError> {
        let ready = self.ready().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random().secret().clone();
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(unavailable)?;
        let mut request = ready
            .client
            .authorize_url(|| CsrfToken::new(state.to_string()))
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.clone());
        if !self.config.scopes.is_empty() {
            // Joined here, not by the OAuth2 client (which always uses a space): IMS
            // documents comma-separated scopes (`scope_separator`).
            let scope = self.config.scopes.join(&self.config.scope_separator);
            request = request.add_extra_param("scope", scope);
        }
        for (k, v) in &self.config.extra_auth_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, _) = request.url();
        Ok(AuthRequest {
            url,
            verifier: verifier.secret().clone(),
            nonce,
        })
    }

    /// Exchanges an authorization code and verifies the id_token against `nonce`.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<(Identity, Tokens), OidcError> {
        let ready = self.ready().await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(unavailable)?;
        let response = ready
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .set_redirect_uri(std::borrow::Cow::Owned(redirect))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let tokens = tokens_of(&response, None);
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or_else(|| OidcError::Refused("the token response has no id_token".into()))?;
        let claims = self
            .verify_id_token(&ready.jwks, &ready.endpoints, id_token, Some(nonce))
            .await?;
        let identity = self
            .identity(&ready.endpoints, claims, &tokens.access_token)
            .await?;
        Ok((identity, tokens))
    }

    /// Uses a refresh token. The provider may rotate it; a new id_token, if any, must verify
    /// and be about the same person for the same client as the one it replaces (OIDC Core
    /// 12.2: same `iss`, `sub` and `aud`). A refusal ends the session (the caller's rule for
    /// every error but [`OidcError::Unavailable`]).
    pub async fn refresh(&self, previous: &Tokens) -> Result<Tokens, OidcError> {
        let ready = self.ready().await?;
        let refresh = previous
            .refresh_token
            .as_ref()
            .ok_or_else(|| OidcError::Refused("no refresh token".into()))?;
        let token = RefreshToken::new(refresh.clone());
        let response = ready
            .client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let tokens = tokens_of(&response, Some(previous));
        if let Some(id_token) = &response.extra_fields().id_token {
            let claims = self
                .verify_id_token(&ready.jwks, &ready.endpoints, id_token, None)
                .await?;
            let before = previous.id_token.as_deref().and_then(unverified_claims);
            if let Some(before) = before {
                same_principal(&before, &claims)?;
            }
        }
        Ok(tokens)
    }

    /// Verifies an id_token of this provider.
    async fn verify_id_token(
        &self,
        jwks: &Jwks,
        endpoints: &Endpoints,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<Claims, VerifyError> {
        let audiences = [self.config.client_id.clone()];
        verify::verify(
            jwks,
            token,
            &Expect {
                issuer: &endpoints.issuer,
                audiences: &audiences,
                algs: &self.algs,
                nonce,
                authorized_party: Some(&self.config.client_id),
                leeway: 60,
            },
        )
        .await
    }

    /// Verifies a bearer JWT issued by this provider for `audiences`.
    pub async fn verify_bearer(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Identity, OidcError> {
        let ready = self.ready().await?;
        let claims = verify::verify(
            &ready.jwks,
            token,
            &Expect {
                issuer: &ready.endpoints.issuer,
                audiences,
                algs: &self.algs,
                nonce: None,
                authorized_party: None,
                leeway: 60,
            },
        )
        .await?;
        Ok(self.identity_from_claims(&ready.endpoints.issuer, &claims))
    }

    /// Builds the identity from id_token claims, merged with userinfo when the provider has
    /// it.
    async fn identity(
        &self,
        endpoints: &Endpoints,
        claims: Claims,
        access_token: &str,
    ) -> Result<Identity, OidcError> {
        let claims = match &endpoints.userinfo {
            Some(userinfo) => {
                let info: Claims =
                    get_json(self.http.get(userinfo.clone()).bearer_auth(access_token))
                        .await
                        .map_err(|e| OidcError::Unavailable(format!("userinfo: {e}")))?;
                merge_userinfo(claims, info, &self.config.email_claim)?
            }
            None => claims,
        };
        let identity = self.identity_from_claims(&endpoints.issuer, &claims);
        if identity.subject.is_empty() {
            return Err(OidcError::Refused(format!(
                "no {} claim",
                self.config.subject_claim
            )));
        }
        Ok(identity)
    }

    fn identity_from_claims(&self, issuer: &str, claims: &Claims) -> Identity {
        let names = ClaimNames {
            subject: &self.config.subject_claim,
            email: &self.config.email_claim,
            groups: self.config.groups_claim.as_deref().unwrap_or("groups"),
        };
        identity_of(issuer, claims, &names)
    }

    /// The RP-initiated logout URL, when the provider has an end-session endpoint. `state`
    /// comes back to `post_logout_redirect` with OpenID's logout; IMS's takes no `state` (see
    /// [`Provider::logout_returns_state`]) and is not sent one.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect: &str,
        state: &str,
    ) -> Option<Url> {
        let endpoints = self.ready().await.ok()?.endpoints.clone();
        let mut url = endpoints.end_session?;
        {
            let mut q = url.query_pairs_mut();
            match self.config.logout_params {
                LogoutParams::Oidc => {
                    if let Some(hint) = id_token_hint {
                        q.append_pair("id_token_hint", hint);
                    }
                    q.append_pair("client_id", &self.config.client_id);
                    q.append_pair("post_logout_redirect_uri", post_logout_redirect);
                    q.append_pair("state", state);
                }
                // Adobe IMS's `/ims/logout/v1`.
                LogoutParams::Ims => {
                    q.append_pair("client_id", &self.config.client_id);
                    q.append_pair("redirect_uri", post_logout_redirect);
                }
            }
        }
        Some(url)
    }

    /// Whether the provider's logout returns `state` to the post-logout redirect (OpenID
    /// RP-initiated logout), or returns to it exactly (IMS's `/ims/logout/v1`).
    pub fn logout_returns_state(&self) -> bool {
        self.config.logout_params == LogoutParams::Oidc
    }
}

/// Checks that a refreshed id_token (`after`, verified) names the same issuer, subject and
/// audience as the session's id_token (`before`, verified when it was stored).
fn same_principal(before: &Claims, after: &Claims) -> Result<(), OidcError> {
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
fn merge_userinfo(
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

fn tokens_of(response: &TokenResponse, previous: Option<&Tokens>) -> Tokens {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Tokens {
        access_token: response.access_token().secret().clone(),
        refresh_token: response
            .refresh_token()
            .map(|t| t.secret().clone())
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        id_token: response
            .extra_fields()
            .id_token
            .clone()
            .or_else(|| previous.and_then(|p| p.id_token.clone())),
        expires_at: response
            .expires_in()
            .map(|d| now + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        issued_at: Some(now),
    }
}

fn token_error<RE: std::error::Error + 'static>(
    e: oauth2::RequestTokenError<RE, BasicErrorResponse>,
) -> OidcError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => OidcError::Refused(r.to_string()),
        oauth2::RequestTokenError::Request(e) => {
            OidcError::Unavailable(format!("token endpoint: {e}"))
        }
        oauth2::RequestTokenError::Parse(e, _) => {
            OidcError::Unavailable(format!("token endpoint answered nonsense: {e}"))
        }
        oauth2::RequestTokenError::Other(e) => OidcError::Unavailable(e),
    }
}

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

fn unverified_claims(token: &str) -> Option<Claims> {
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
                let mut values =
                    crate::session::cookie::cookies(req, name).filter(|v| !v.is_empty());
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
                let v = v.trim();
                let v = match v.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => v,
                };
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
