//! A development OpenID provider for `linkgate demo`: small, in memory, and honest.
//!
//! One type serves both demo providers, "Magento.com (development)" and
//! "accounts.magento.cloud (development)", told apart by their [`ProviderSpec`]. It speaks
//! the parts of OpenID Connect that linkgate uses, and refuses what a real provider refuses:
//! - discovery (`/.well-known/openid-configuration`) and its signing keys (`/jwks`): an RSA
//!   key generated at start; id_tokens are signed RS256;
//! - the authorization code flow: the `redirect_uri` must be registered exactly, PKCE S256
//!   is required (a missing, `plain` or wrong verifier is refused), `state` comes back,
//!   `nonce` is echoed in the id_token, `iss` is in the answer (RFC 9207); codes are
//!   single-use and live [`CODE_TTL`], and a replayed code revokes the token it gave;
//! - client authentication at the token endpoint, as the client registered it
//!   (`client_secret_basic`, `client_secret_post`, or none for a public client);
//! - `userinfo`, and RP-initiated logout (`end_session_endpoint`) with
//!   `post_logout_redirect_uri` and `state`;
//! - a sign-in form with "Create account" (Method 1 of the Adobe knowledge base lets a user
//!   create a Magento.com account while linking); a provider session cookie makes the next
//!   authorization password-less (Method 2).
//!
//! Its pages are marked as a development provider and list the demo users. Only
//! `linkgate demo` constructs it, on loopback: nothing in `linkgate run` can. Users, sessions,
//! codes and tokens live in memory and are gone when the demo stops.
//!
//! This file holds the provider's description ([`ProviderSpec`]), its setup and its routing.
//! Beside it: what it remembers (state.rs), the OAuth, PKCE and HTTP pieces the endpoints
//! share (protocol.rs), and the endpoints themselves (sign_in.rs, tokens.rs, pages.rs).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{Method, Response, StatusCode};
use jsonwebtoken::{DecodingKey, EncodingKey};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::web::{read_body, Answer, Params};

mod pages;
mod protocol;
mod sign_in;
mod state;
mod tokens;

// Through these the endpoint files (`use super::*`) reach the state and the shared pieces.
use protocol::*;
use state::*;

/// How long an authorization code may wait for its token request.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a sign-in form stays valid (the authorization request behind it).
pub const REQUEST_TTL: Duration = Duration::from_secs(600);
/// How long an access token (and an id_token) is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long a provider session (the password-less second sign-in) lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

const AUTHORIZE: &str = "/auth/authorize";
const LOGIN: &str = "/auth/login";
const REGISTER: &str = "/auth/register";
const LOGOUT: &str = "/auth/logout";
const ACCOUNT: &str = "/auth/account";
/// The session cookie's path: only the interactive pages need it, and nothing else on
/// 127.0.0.1 (cookies ignore ports) should receive it.
const COOKIE_PATH: &str = "/auth";
const TOKEN: &str = "/token";
const USERINFO: &str = "/userinfo";
const JWKS: &str = "/jwks";
const DISCOVERY: &str = "/.well-known/openid-configuration";

/// What users type to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// An e-mail address (Magento.com).
    Email,
    /// A user name (accounts.magento.cloud).
    Username,
}

impl LoginKind {
    fn label(self) -> &'static str {
        match self {
            LoginKind::Email => "Email",
            LoginKind::Username => "Username",
        }
    }
}

/// A user known from the start and listed on every page.
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// What to type in the first field.
    pub login: String,
    /// The password.
    pub password: String,
    /// The e-mail address in the tokens.
    pub email: String,
    /// The display name.
    pub name: String,
    /// Which flow this user shows.
    pub hint: String,
}

/// How a client authenticates at the token endpoint.
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the id and this secret.
    SecretBasic(String),
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    SecretPost(String),
    /// `none`: a public client; PKCE is its only protection.
    None,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::None => "none",
        }
    }
}

/// A registered OAuth2 client.
#[derive(Debug)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Shown on the sign-in form ("… wants you to sign in").
    pub name: String,
    /// How it authenticates at the token endpoint.
    pub auth: ClientAuth,
    /// Where codes may be sent, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Where the browser may be sent after logout, compared exactly.
    pub post_logout_redirect_uris: Vec<String>,
}

/// Everything that tells one development provider from the other.
#[derive(Debug)]
pub struct ProviderSpec {
    /// The name on every page and in every `<title>` ("Magento.com (development)").
    pub label: String,
    /// The issuer, `http://127.0.0.1:PORT`; endpoints hang below it.
    pub issuer: String,
    /// What users sign in with.
    pub login_kind: LoginKind,
    /// Whether the sign-in form offers "Create account".
    pub registration: bool,
    /// The session cookie's name (both providers share 127.0.0.1, and cookies ignore ports).
    pub cookie_name: String,
    /// Prefix of generated subjects (`mage-` gives `mage-0001`, ...).
    pub subject_prefix: String,
    /// The page accent colour (CSS), dark enough for white text.
    pub accent: String,
    /// The demo users, in order; their subjects are numbered from 1.
    pub users: Vec<DemoUser>,
    /// The registered clients.
    pub clients: Vec<Client>,
}

/// One development OpenID provider (a Pingora [`ServeHttp`] app).
pub struct DevProvider {
    spec: ProviderSpec,
    keys: Keys,
    state: Mutex<State>,
}

impl std::fmt::Debug for DevProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevProvider")
            .field("label", &self.spec.label)
            .field("issuer", &self.spec.issuer)
            .finish()
    }
}

/// The signing key, made at start.
struct Keys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

// === impl DevProvider ===

impl DevProvider {
    /// A provider with a fresh signing key and its demo users.
    pub fn new(spec: ProviderSpec) -> anyhow::Result<Self> {
        let rsa = openssl::rsa::Rsa::generate(2048)?;
        let (n, e) = (
            URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        );
        let encoding = EncodingKey::from_rsa_pem(&rsa.private_key_to_pem()?)?;
        let decoding = DecodingKey::from_rsa_components(&n, &e)?;
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(n.as_bytes())[..12]);
        let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
        let users = spec
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| User {
                subject: format!("{}{:04}", spec.subject_prefix, i + 1),
                login: u.login.clone(),
                password: u.password.clone(),
                email: u.email.clone(),
                name: u.name.clone(),
                hint: Some(u.hint.clone()),
            })
            .collect();
        Ok(Self {
            spec,
            keys: Keys {
                kid,
                encoding,
                decoding,
                jwk,
            },
            state: Mutex::new(State {
                users,
                ..State::default()
            }),
        })
    }

    /// The state, with everything expired forgotten. A poisoned lock is taken over: every
    /// change below is a single map operation, so nothing is left half-done.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sweep(Instant::now());
        state
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.spec.issuer.trim_end_matches('/'))
    }

    fn client(&self, id: &str) -> Option<&Client> {
        self.spec.clients.iter().find(|c| c.id == id)
    }

    /// Answers one request.
    async fn handle(&self, session: &mut ServerSession) -> Answer {
        let req = session.req_header().clone();
        let query = Params::parse(req.uri.query().unwrap_or("").as_bytes());
        let post = req.method == Method::POST;
        let form = if post {
            match read_body(session).await {
                Some(body) => Params::parse(&body),
                None => {
                    return self.error_page(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Request too large",
                        "The form sent was too large or could not be read.",
                    )
                }
            }
        } else {
            Params::default()
        };
        let get = req.method == Method::GET || req.method == Method::HEAD;
        match req.uri.path() {
            DISCOVERY if get => self.discovery(),
            JWKS if get => Answer::json(StatusCode::OK, &json!({ "keys": [self.keys.jwk] })),
            AUTHORIZE if get => self.authorize(&req, &query),
            LOGIN if get => self.sign_in_again(query.nonempty("request")),
            LOGIN if post => self.login(&req, &form),
            REGISTER if get && self.spec.registration => {
                self.register_page(query.get("request"), &Params::default(), &[])
            }
            REGISTER if post && self.spec.registration => self.register(&req, &form),
            LOGOUT if get => self.end_session(&req, &query, false),
            LOGOUT if post => self.end_session(&req, &form, true),
            ACCOUNT if get => self.account_page(&req),
            "/" if get => Answer::see_other(ACCOUNT),
            TOKEN if post => self
                .token(&req, &form)
                .unwrap_or_else(|e| e.answer(&self.spec.label)),
            USERINFO if get || post => self
                .userinfo(&req)
                .unwrap_or_else(|e| e.answer(&self.spec.label)),
            DISCOVERY | JWKS | AUTHORIZE | LOGIN | REGISTER | LOGOUT | ACCOUNT | TOKEN
            | USERINFO | "/"
                if self.spec.registration || req.uri.path() != REGISTER =>
            {
                Answer::json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({ "error": "method_not_allowed" }),
                )
            }
            _ => self.error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page at this provider.",
            ),
        }
    }

    fn discovery(&self) -> Answer {
        Answer::json(
            StatusCode::OK,
            &json!({
                "issuer": self.spec.issuer,
                "authorization_endpoint": self.url(AUTHORIZE),
                "token_endpoint": self.url(TOKEN),
                "userinfo_endpoint": self.url(USERINFO),
                "jwks_uri": self.url(JWKS),
                "end_session_endpoint": self.url(LOGOUT),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp",
                    "email", "email_verified", "name", "preferred_username"],
                "token_endpoint_auth_methods_supported":
                    ["client_secret_basic", "client_secret_post", "none"],
                "code_challenge_methods_supported": ["S256"],
                "prompt_values_supported": ["none", "login"],
                "authorization_response_iss_parameter_supported": true,
                "service_documentation": self.url(ACCOUNT),
            }),
        )
    }
}

#[async_trait]
impl ServeHttp for DevProvider {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let answer = self.handle(session).await;
        if answer.status().is_server_error() {
            tracing::warn!(provider = %self.spec.label, status = %answer.status(), "demo provider error");
        }
        answer.into_response()
    }
}
