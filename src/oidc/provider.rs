//! One OpenID provider (`[sso]`, or `[account] source = "oauth2"`): discovery on first use,
//! the authorization request, the code exchange and refresh, id_token verification, userinfo
//! and RP-initiated logout.

use std::sync::Arc;

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
use tokio::sync::OnceCell;
use url::Url;

use super::claims::{identity_of, merge_userinfo, same_principal, unverified_claims, ClaimNames};
use super::error::{unavailable, Unreachable};
use super::jwks::Jwks;
use super::verify::{self, Claims, Expect, VerifyError};
use super::{
    discover, get_json, http_client, AuthRequest, Cooldown, Discovery, Endpoints, IdTokenFields,
    OidcError, Tokens,
};
use crate::config::{LogoutParams, Provider as ProviderConfig, TokenAuthMethod};
use crate::identity::Identity;

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

struct Ready {
    endpoints: Endpoints,
    client: OAuthClient,
    jwks: Arc<Jwks>,
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
                    .ok_or_else(|| OidcError::from(Unreachable::new(format!("no {what} endpoint"))))
            };
        let doc = &c.documented;
        let d = discovered.as_ref();
        let endpoints = Endpoints {
            issuer: c
                .issuer
                .clone()
                .or_else(|| d.map(|d| d.issuer.clone()))
                .ok_or_else(|| OidcError::from(Unreachable::new("no issuer")))?,
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
                        .map_err(|e| OidcError::Unavailable(e.within("userinfo")))?;
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

fn token_error<RE: std::error::Error + Send + Sync + 'static>(
    e: oauth2::RequestTokenError<RE, BasicErrorResponse>,
) -> OidcError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => OidcError::Refused(r.to_string()),
        oauth2::RequestTokenError::Request(e) => Unreachable::because("token endpoint", e).into(),
        oauth2::RequestTokenError::Parse(e, _) => {
            Unreachable::because("token endpoint answered nonsense", e).into()
        }
        oauth2::RequestTokenError::Other(e) => Unreachable::new(e).into(),
    }
}
