//! The client's side of the development provider: client authentication, the token
//! endpoint (code and refresh grants), id_tokens and userinfo.

use std::time::Instant;

use http::{header, StatusCode};
use jsonwebtoken::{Algorithm, Header, Validation};
use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};

use super::*;
use crate::web::{Answer, Params};

impl DevProvider {
    /// Authenticates the client as it registered (RFC 6749 2.3.1; one method per request).
    pub(super) fn authenticate(
        &self,
        req: &RequestHeader,
        form: &Params,
    ) -> Result<&Client, OAuthError> {
        let unknown = || OAuthError::new("invalid_client", "client authentication failed");
        let form_id = form.get("client_id");
        let (client, presented) = match (basic_credentials(req), form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::new(
                    "invalid_request",
                    "use one client authentication method, not two",
                ))
            }
            (Some(Err(())), None) => return Err(unknown()),
            (Some(Ok((id, secret))), None) => {
                if form_id.is_some_and(|f| f != id) {
                    return Err(OAuthError::new(
                        "invalid_request",
                        "client_id differs from the authenticated client",
                    ));
                }
                let client = self.client(&id).ok_or_else(unknown)?;
                (client, Some(("client_secret_basic", secret)))
            }
            (None, secret) => {
                let id = form_id.ok_or_else(unknown)?;
                let client = self.client(id).ok_or_else(unknown)?;
                (
                    client,
                    secret.map(|s| ("client_secret_post", s.to_string())),
                )
            }
        };
        let ok = match (&client.auth, &presented) {
            (ClientAuth::SecretBasic(s), Some(("client_secret_basic", given)))
            | (ClientAuth::SecretPost(s), Some(("client_secret_post", given))) => same(s, given),
            (ClientAuth::None, None) => true,
            _ => false,
        };
        if !ok {
            tracing::info!(
                provider = %self.spec.label,
                client = %client.id,
                registered = client.auth.method(),
                "demo: client authentication failed"
            );
            return Err(unknown());
        }
        Ok(client)
    }

    /// `POST /token`: the authorization code grant, with PKCE.
    pub(super) fn token(&self, req: &RequestHeader, form: &Params) -> Result<Answer, OAuthError> {
        let client = self.authenticate(req, form)?;
        if let Some(name) = form.repeated() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter {name} is repeated"),
            ));
        }
        match form.get("grant_type") {
            Some("authorization_code") => {}
            None => return Err(OAuthError::new("invalid_request", "grant_type is missing")),
            Some(_) => {
                return Err(OAuthError::new(
                    "unsupported_grant_type",
                    "only authorization_code is supported",
                ))
            }
        }
        let code = form
            .nonempty("code")
            .ok_or_else(|| OAuthError::new("invalid_request", "code is missing"))?;
        // The code is spent by this request whatever happens next: a failed attempt cannot
        // be followed by a guess at the verifier.
        let grant = {
            let mut state = self.state();
            match state.codes.remove(code) {
                Some(grant) => {
                    state.used_codes.insert(
                        code.to_string(),
                        UsedCode {
                            access_token: None,
                            forget_at: Instant::now() + REQUEST_TTL,
                        },
                    );
                    grant
                }
                None => {
                    if let Some(used) = state.used_codes.get_mut(code) {
                        if let Some(token) = used.access_token.take() {
                            state.tokens.remove(&token);
                        }
                        return Err(OAuthError::new(
                            "invalid_grant",
                            "this code was used already; the token it gave is revoked",
                        ));
                    }
                    return Err(OAuthError::new("invalid_grant", "unknown or expired code"));
                }
            }
        };
        if grant.request.client_id != client.id {
            return Err(OAuthError::new(
                "invalid_grant",
                "the code was issued to another client",
            ));
        }
        if form.get("redirect_uri") != Some(grant.request.redirect_uri.as_str()) {
            return Err(OAuthError::new(
                "invalid_grant",
                "redirect_uri differs from the authorization request",
            ));
        }
        let Some(verifier) = form.get("code_verifier") else {
            return Err(OAuthError::new(
                "invalid_grant",
                "PKCE verification failed: code_verifier is missing",
            ));
        };
        if !is_verifier(verifier) {
            return Err(OAuthError::new(
                "invalid_grant",
                "PKCE verification failed: code_verifier must be 43 to 128 unreserved characters",
            ));
        }
        if !pkce_matches(verifier, &grant.request.challenge) {
            return Err(OAuthError::new(
                "invalid_grant",
                "PKCE verification failed: code_verifier does not match code_challenge",
            ));
        }
        let user = self
            .state()
            .user(&grant.subject)
            .cloned()
            .ok_or_else(|| OAuthError::new("invalid_grant", "the user no longer exists"))?;
        let id_token = self
            .id_token(&user, &grant)
            .map_err(|e| OAuthError::new("server_error", format!("cannot sign: {e}")))?;
        let access_token = random_token();
        {
            let mut state = self.state();
            state.tokens.insert(
                access_token.clone(),
                AccessToken {
                    subject: user.subject.clone(),
                    scopes: grant.request.scopes.clone(),
                    expires: Instant::now() + TOKEN_TTL,
                },
            );
            if let Some(used) = state.used_codes.get_mut(code) {
                used.access_token = Some(access_token.clone());
            }
        }
        Ok(Answer::json(
            StatusCode::OK,
            &json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL.as_secs(),
                "id_token": id_token,
                "scope": grant.request.scopes.join(" "),
            }),
        )
        .header(header::PRAGMA, "no-cache"))
    }

    /// The claims `scopes` allow about `user`, beyond `sub`.
    pub(super) fn claims(user: &User, scopes: &[String], claims: &mut Map<String, Value>) {
        if scopes.iter().any(|s| s == "email") {
            claims.insert("email".into(), json!(user.email));
            claims.insert("email_verified".into(), json!(true));
        }
        if scopes.iter().any(|s| s == "profile") {
            claims.insert("name".into(), json!(user.name));
            claims.insert("preferred_username".into(), json!(user.login));
        }
    }

    pub(super) fn id_token(
        &self,
        user: &User,
        grant: &Grant,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.spec.issuer));
        claims.insert("sub".into(), json!(user.subject));
        claims.insert("aud".into(), json!(grant.request.client_id));
        claims.insert("azp".into(), json!(grant.request.client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_TTL.as_secs() as i64));
        claims.insert("auth_time".into(), json!(grant.auth_time));
        if let Some(nonce) = &grant.request.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        Self::claims(user, &grant.request.scopes, &mut claims);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.keys.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.keys.encoding)
    }

    /// `GET|POST /userinfo` with `Authorization: Bearer <access token>`.
    pub(super) fn userinfo(&self, req: &RequestHeader) -> Result<Answer, OAuthError> {
        let invalid = || {
            OAuthError::new(
                "invalid_token",
                "the access token is missing, unknown or expired",
            )
        };
        let token = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(invalid)?;
        let state = self.state();
        let access = state.tokens.get(token).ok_or_else(invalid)?;
        let user = state.user(&access.subject).ok_or_else(invalid)?;
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.subject));
        Self::claims(user, &access.scopes, &mut claims);
        Ok(Answer::json(StatusCode::OK, &Value::Object(claims)))
    }

    /// The client an `id_token_hint` was issued to, if it is a token of this provider
    /// (expired ones count: a hint is usually old).
    pub(super) fn hint_audience(&self, hint: &str) -> Option<String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.spec.issuer]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(hint, &self.keys.decoding, &validation)
                .ok()?;
        match data.claims.get("aud")? {
            Value::String(aud) => Some(aud.clone()),
            Value::Array(auds) => auds.first()?.as_str().map(str::to_string),
            _ => None,
        }
    }
}
