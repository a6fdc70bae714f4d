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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{header, Method, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use crate::web::{escape, page, read_body, Answer, Params};

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

#[derive(Debug, Clone)]
struct User {
    subject: String,
    login: String,
    password: String,
    email: String,
    name: String,
    hint: Option<String>,
}

/// An authorization request waiting for its user to sign in, or granted as a code.
#[derive(Debug, Clone)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: String,
    scopes: Vec<String>,
}

#[derive(Debug)]
struct Pending {
    request: AuthRequest,
    expires: Instant,
}

#[derive(Debug)]
struct Grant {
    request: AuthRequest,
    subject: String,
    auth_time: i64,
    expires: Instant,
}

#[derive(Debug)]
struct AccessToken {
    subject: String,
    scopes: Vec<String>,
    expires: Instant,
}

#[derive(Debug)]
struct ProviderSession {
    subject: String,
    auth_time: i64,
    expires: Instant,
}

/// A code that was exchanged (or tried): a second use revokes what the first one gave.
#[derive(Debug)]
struct UsedCode {
    access_token: Option<String>,
    forget_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    users: Vec<User>,
    pending: HashMap<String, Pending>,
    codes: HashMap<String, Grant>,
    used_codes: HashMap<String, UsedCode>,
    tokens: HashMap<String, AccessToken>,
    sessions: HashMap<String, ProviderSession>,
}

impl State {
    /// Forgets everything that expired (the maps stay small: a demo has a handful of users).
    fn sweep(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.expires > now);
        self.codes.retain(|_, g| g.expires > now);
        self.used_codes.retain(|_, u| u.forget_at > now);
        self.tokens.retain(|_, t| t.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }

    fn user(&self, subject: &str) -> Option<&User> {
        self.users.iter().find(|u| u.subject == subject)
    }
}

/// An OAuth 2.0 error at the token or userinfo endpoint (RFC 6749 5.2, RFC 6750 3.1).
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
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

    fn answer(&self, realm: &str) -> Answer {
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

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether `s` is 43 to 128 characters of RFC 7636's unreserved set (a code verifier).
fn is_verifier(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Whether `s` can be an S256 code challenge: BASE64URL(SHA-256(verifier)), 43 characters.
fn is_s256_challenge(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 4.6: BASE64URL(SHA-256(ASCII(code_verifier))) == code_challenge.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    same(
        &URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        challenge,
    )
}

/// The client id and secret of an `Authorization: Basic` header. RFC 6749 2.3.1: both are
/// form-urlencoded before base64.
fn basic_credentials(req: &RequestHeader) -> Option<Result<(String, String), ()>> {
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
fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
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
fn same_origin(req: &RequestHeader) -> bool {
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

    // --- discovery ---

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

    // --- authorization ---

    /// The redirect back to the client with `params`, `state` and `iss`.
    fn back_to_client(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> Answer {
        let Ok(mut url) = Url::parse(redirect_uri) else {
            return self.error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "The application's return address is not a URL.",
            );
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.spec.issuer);
        }
        Answer::see_other(url.as_str())
    }

    /// `GET /auth/authorize`: checks the request; with a provider session answers at once
    /// (no password: Method 2), otherwise shows the sign-in form.
    fn authorize(&self, req: &RequestHeader, q: &Params) -> Answer {
        // Until client and redirect_uri are known good, errors are pages: never redirect
        // anyone to an address the client did not register.
        let Some(client) = q.get("client_id").and_then(|id| self.client(id)) else {
            return self.error_page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                &format!(
                    "The application that sent you here is not registered with {} (unknown or missing client_id).",
                    self.spec.label
                ),
            );
        };
        let Some(redirect_uri) = q
            .get("redirect_uri")
            .filter(|u| client.redirect_uris.iter().any(|r| r == u))
        else {
            return self.error_page(
                StatusCode::BAD_REQUEST,
                "Unregistered return address",
                &format!(
                    "{} asked to return to an address it did not register (redirect_uri), so you are not sent there.",
                    client.name
                ),
            );
        };
        let state = q.get("state");
        let refuse = |error: &str, description: &str| {
            self.back_to_client(
                redirect_uri,
                &[("error", error), ("error_description", description)],
                state,
            )
        };
        if let Some(name) = q.repeated() {
            return refuse("invalid_request", &format!("parameter {name} is repeated"));
        }
        if q.get("response_type") != Some("code") {
            return refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        let scopes: Vec<String> = q
            .get("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            return refuse("invalid_scope", "the openid scope is required");
        }
        match q.get("code_challenge_method") {
            Some("S256") => {}
            Some("plain") => {
                return refuse(
                    "invalid_request",
                    "code_challenge_method=plain is not accepted: use S256",
                )
            }
            Some(_) => return refuse("invalid_request", "unsupported code_challenge_method"),
            None => {
                return refuse(
                    "invalid_request",
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                )
            }
        }
        let Some(challenge) = q.get("code_challenge").filter(|c| is_s256_challenge(c)) else {
            return refuse(
                "invalid_request",
                "code_challenge must be BASE64URL(SHA-256(code_verifier)), 43 characters",
            );
        };
        let prompts: Vec<&str> = q
            .get("prompt")
            .unwrap_or("")
            .split(' ')
            .filter(|p| !p.is_empty())
            .collect();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return refuse("invalid_request", "prompt=none cannot be combined");
        }
        let request = AuthRequest {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_string(),
            state: state.map(str::to_string),
            nonce: q.get("nonce").map(str::to_string),
            challenge: challenge.to_string(),
            scopes,
        };
        let signed_in = if prompts.contains(&"login") {
            None
        } else {
            self.session_of(req)
        };
        match signed_in {
            Some(session) => self.grant(request, &session.subject, session.auth_time),
            None if prompts.contains(&"none") => refuse(
                "login_required",
                &format!("nobody is signed in at {}", self.spec.label),
            ),
            None => {
                let id = random_token();
                let client_name = client.name.clone();
                self.state().pending.insert(
                    id.clone(),
                    Pending {
                        request,
                        expires: Instant::now() + REQUEST_TTL,
                    },
                );
                self.sign_in_page(StatusCode::OK, Some((&id, &client_name)), "", None)
            }
        }
    }

    /// Issues a single-use code for `request` and sends the browser back with it.
    fn grant(&self, request: AuthRequest, subject: &str, auth_time: i64) -> Answer {
        let code = random_token();
        let (redirect_uri, state) = (request.redirect_uri.clone(), request.state.clone());
        self.state().codes.insert(
            code.clone(),
            Grant {
                request,
                subject: subject.to_string(),
                auth_time,
                expires: Instant::now() + CODE_TTL,
            },
        );
        self.back_to_client(&redirect_uri, &[("code", &code)], state.as_deref())
    }

    /// The provider session of this browser, if it is still valid and its user exists.
    fn session_of(&self, req: &RequestHeader) -> Option<SessionView> {
        let sid = cookie(req, &self.spec.cookie_name)?;
        let state = self.state();
        let session = state.sessions.get(sid)?;
        let user = state.user(&session.subject)?;
        Some(SessionView {
            subject: user.subject.clone(),
            display: user.login.clone(),
            auth_time: session.auth_time,
        })
    }

    /// Starts a provider session for `subject` (a new id at every sign-in, the old one ended)
    /// and returns its `Set-Cookie`.
    fn start_session(&self, req: &RequestHeader, subject: &str) -> String {
        let sid = random_token();
        let mut state = self.state();
        if let Some(old) = cookie(req, &self.spec.cookie_name) {
            state.sessions.remove(old);
        }
        state.sessions.insert(
            sid.clone(),
            ProviderSession {
                subject: subject.to_string(),
                auth_time: unix_now(),
                expires: Instant::now() + SESSION_TTL,
            },
        );
        format!(
            "{}={sid}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Lax",
            self.spec.cookie_name,
            SESSION_TTL.as_secs()
        )
    }

    fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Lax",
            self.spec.cookie_name
        )
    }

    /// After a successful sign-in: back to the application when a request waits, else to
    /// the provider's own account page.
    fn continue_signed_in(&self, request_id: Option<&str>, subject: &str, cookie: &str) -> Answer {
        let answer = match request_id {
            Some(id) => {
                // Taken out first: the lock must be released before `grant` takes it.
                let pending = self.state().pending.remove(id);
                match pending {
                    Some(p) => self.grant(p.request, subject, unix_now()),
                    None => self.expired_request(),
                }
            }
            None => Answer::see_other(ACCOUNT),
        };
        answer.header(header::SET_COOKIE, cookie)
    }

    fn expired_request(&self) -> Answer {
        self.error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in form has expired or was already used. Go back to the application and start again.",
        )
    }

    fn forged_form(&self) -> Answer {
        self.error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form was sent from another site, so it was ignored.",
        )
    }

    /// Whether a sign-in form's request is still waiting (a form without one signs in to
    /// the provider itself).
    fn request_waiting(&self, id: Option<&str>) -> bool {
        id.is_none_or(|id| self.state().pending.contains_key(id))
    }

    /// `GET /auth/login?request=`: the sign-in form of a waiting request again (the way back
    /// from "Create account").
    fn sign_in_again(&self, request_id: Option<&str>) -> Answer {
        match request_id {
            Some(id) => match self.client_name_of(id) {
                Some(client) => self.sign_in_page(StatusCode::OK, Some((id, &client)), "", None),
                None => self.expired_request(),
            },
            None => Answer::see_other(ACCOUNT),
        }
    }

    /// `POST /auth/login`: checks the password; a wrong one shows the form again.
    fn login(&self, req: &RequestHeader, form: &Params) -> Answer {
        if !same_origin(req) {
            return self.forged_form();
        }
        let request_id = form.nonempty("request");
        if !self.request_waiting(request_id) {
            return self.expired_request();
        }
        let login = form.get("login").unwrap_or("").trim();
        let password = form.get("password").unwrap_or("");
        let subject = {
            let state = self.state();
            state
                .users
                .iter()
                .find(|u| u.login.eq_ignore_ascii_case(login))
                .filter(|u| same(&u.password, password))
                .map(|u| u.subject.clone())
        };
        let Some(subject) = subject else {
            let client = request_id.and_then(|id| self.client_name_of(id));
            let error = format!(
                "Wrong {} or password. The demo users are listed below.",
                self.spec.login_kind.label().to_ascii_lowercase()
            );
            return self.sign_in_page(
                StatusCode::OK,
                request_id.zip(client.as_deref()),
                login,
                Some(&error),
            );
        };
        let cookie = self.start_session(req, &subject);
        self.continue_signed_in(request_id, &subject, &cookie)
    }

    fn client_name_of(&self, request_id: &str) -> Option<String> {
        let client_id = self
            .state()
            .pending
            .get(request_id)
            .map(|p| p.request.client_id.clone())?;
        self.client(&client_id).map(|c| c.name.clone())
    }

    /// `POST /auth/register`: creates an account (in memory) and signs it in.
    fn register(&self, req: &RequestHeader, form: &Params) -> Answer {
        if !same_origin(req) {
            return self.forged_form();
        }
        let request_id = form.nonempty("request");
        if !self.request_waiting(request_id) {
            return self.expired_request();
        }
        let kind = self.spec.login_kind;
        let login = form.get("login").unwrap_or("").trim();
        let email = match kind {
            LoginKind::Email => login,
            LoginKind::Username => form.get("email").unwrap_or("").trim(),
        };
        let name = form.get("name").unwrap_or("").trim();
        let password = form.get("password").unwrap_or("");
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        let looks_like_email = |e: &str| {
            e.len() <= 254
                && !e.chars().any(char::is_whitespace)
                && e.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && !domain.is_empty() && !domain.contains('@')
                })
        };
        if !looks_like_email(email) {
            errors.push((
                if kind == LoginKind::Email {
                    "login"
                } else {
                    "email"
                },
                "Enter an email address, such as dana@example.com.".into(),
            ));
        }
        if kind == LoginKind::Username
            && (login.is_empty()
                || login.len() > 64
                || !login
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            errors.push((
                "login",
                "Choose a username of letters, digits, '.', '_' or '-'.".into(),
            ));
        }
        if password.chars().count() < 4 {
            errors.push((
                "password",
                "Choose a password of at least 4 characters.".into(),
            ));
        }
        if !errors.is_empty() {
            return self.register_page(request_id, form, &errors);
        }
        let subject = {
            let mut state = self.state();
            if state
                .users
                .iter()
                .any(|u| u.login.eq_ignore_ascii_case(login))
            {
                None
            } else {
                let subject = format!("{}{:04}", self.spec.subject_prefix, state.users.len() + 1);
                state.users.push(User {
                    subject: subject.clone(),
                    login: login.to_string(),
                    password: password.to_string(),
                    email: email.to_string(),
                    name: if name.is_empty() {
                        email.split('@').next().unwrap_or(email).to_string()
                    } else {
                        name.to_string()
                    },
                    hint: None,
                });
                Some(subject)
            }
        };
        let Some(subject) = subject else {
            let errors = [(
                "login",
                format!(
                    "An account with this {} exists already: sign in instead.",
                    kind.label().to_ascii_lowercase()
                ),
            )];
            return self.register_page(request_id, form, &errors);
        };
        tracing::info!(provider = %self.spec.label, %subject, "demo: account created");
        let cookie = self.start_session(req, &subject);
        self.continue_signed_in(request_id, &subject, &cookie)
    }

    // --- token and userinfo ---

    /// Authenticates the client as it registered (RFC 6749 2.3.1; one method per request).
    fn authenticate(&self, req: &RequestHeader, form: &Params) -> Result<&Client, OAuthError> {
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
    fn token(&self, req: &RequestHeader, form: &Params) -> Result<Answer, OAuthError> {
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
    fn claims(user: &User, scopes: &[String], claims: &mut Map<String, Value>) {
        if scopes.iter().any(|s| s == "email") {
            claims.insert("email".into(), json!(user.email));
            claims.insert("email_verified".into(), json!(true));
        }
        if scopes.iter().any(|s| s == "profile") {
            claims.insert("name".into(), json!(user.name));
            claims.insert("preferred_username".into(), json!(user.login));
        }
    }

    fn id_token(&self, user: &User, grant: &Grant) -> Result<String, jsonwebtoken::errors::Error> {
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
    fn userinfo(&self, req: &RequestHeader) -> Result<Answer, OAuthError> {
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

    // --- logout ---

    /// The client an `id_token_hint` was issued to, if it is a token of this provider
    /// (expired ones count: a hint is usually old).
    fn hint_audience(&self, hint: &str) -> Option<String> {
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

    /// `GET|POST /auth/logout`: RP-initiated logout. With a valid `id_token_hint` the session
    /// ends at once; otherwise the user confirms (so a link on another site cannot sign
    /// anyone out). `post_logout_redirect_uri` must be registered by the client.
    fn end_session(&self, req: &RequestHeader, params: &Params, post: bool) -> Answer {
        if post && !same_origin(req) {
            return self.forged_form();
        }
        let bad = |why: &str| self.error_page(StatusCode::BAD_REQUEST, "Sign-out refused", why);
        let hint = match params.nonempty("id_token_hint") {
            Some(token) => match self.hint_audience(token) {
                Some(aud) => Some(aud),
                None => return bad("The id_token_hint is not a token of this provider."),
            },
            None => None,
        };
        let client_id = match (params.nonempty("client_id"), hint.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                return bad("client_id and id_token_hint name different applications.")
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        let client = match client_id {
            Some(id) => match self.client(id) {
                Some(c) => Some(c),
                None => return bad("The application asking to sign you out is not registered."),
            },
            None => None,
        };
        let after = params.nonempty("post_logout_redirect_uri");
        if let Some(uri) = after {
            if !client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri)) {
                return bad("The address to return to after sign-out (post_logout_redirect_uri) is not registered by the application.");
            }
        }
        let confirmed = hint.is_some() || (post && params.get("confirm") == Some("yes"));
        if !confirmed {
            return self.confirm_logout_page(req, params);
        }
        if let Some(sid) = cookie(req, &self.spec.cookie_name) {
            self.state().sessions.remove(sid);
        }
        let answer = match after {
            Some(uri) => match Url::parse(uri) {
                Ok(mut url) => {
                    if let Some(state) = params.get("state") {
                        url.query_pairs_mut().append_pair("state", state);
                    }
                    Answer::see_other(url.as_str())
                }
                Err(_) => bad("The address to return to is not a URL."),
            },
            None => self.message_page(
                "Signed out",
                &format!("<p>You are signed out of {}.</p>", escape(&self.spec.label)),
            ),
        };
        answer.header(header::SET_COOKIE, &self.clear_cookie())
    }

    // --- pages ---

    fn page(&self, status: StatusCode, title: &str, main: &str) -> Answer {
        let mut html = String::new();
        let _ = write!(
            html,
            "<p class=\"dev\" role=\"note\"><strong>Development provider.</strong> {label} is \
             started by <code>linkgate demo</code> on this machine to stand in for the real one; \
             accounts live in memory and vanish when the demo stops.</p>{main}",
            label = escape(&self.spec.label)
        );
        html.push_str(&self.demo_users());
        Answer::html(
            status,
            page(title, &self.spec.label, &self.spec.accent, &html),
        )
    }

    fn message_page(&self, title: &str, main: &str) -> Answer {
        self.page(
            StatusCode::OK,
            title,
            &format!("<h1>{}</h1>{main}", escape(title)),
        )
    }

    fn error_page(&self, status: StatusCode, title: &str, text: &str) -> Answer {
        self.page(
            status,
            title,
            &format!(
                "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
                escape(title),
                escape(text)
            ),
        )
    }

    fn demo_users(&self) -> String {
        let state = self.state();
        let mut rows = String::new();
        for u in &state.users {
            let (password, hint) = match &u.hint {
                Some(hint) => (u.password.as_str(), hint.as_str()),
                None => ("(chosen at creation)", "created in this demo run"),
            };
            let _ = write!(
                rows,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escape(&u.login),
                escape(password),
                escape(hint)
            );
        }
        format!(
            "<section aria-labelledby=\"demo-users\"><h2 id=\"demo-users\">Demo users</h2>\
             <table><thead><tr><th scope=\"col\">{}</th><th scope=\"col\">Password</th>\
             <th scope=\"col\">What it shows</th></tr></thead><tbody>{rows}</tbody></table></section>",
            self.spec.login_kind.label()
        )
    }

    /// The sign-in form; `request` is the waiting authorization request and its client's name
    /// (none: signing in to the provider itself).
    fn sign_in_page(
        &self,
        status: StatusCode,
        request: Option<(&str, &str)>,
        login: &str,
        error: Option<&str>,
    ) -> Answer {
        let label = escape(&self.spec.label);
        let kind = self.spec.login_kind;
        let mut main = format!("<h1>Sign in to {label}</h1>");
        if let Some((_, client)) = request {
            let _ = write!(
                main,
                "<p><strong>{}</strong> asks you to sign in with your {label} account.</p>",
                escape(client)
            );
        }
        if let Some(error) = error {
            let _ = write!(
                main,
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                escape(error)
            );
        }
        let hidden = request
            .map(|(id, _)| {
                format!(
                    "<input type=\"hidden\" name=\"request\" value=\"{}\">",
                    escape(id)
                )
            })
            .unwrap_or_default();
        let described = if error.is_some() {
            " aria-describedby=\"error\" aria-invalid=\"true\""
        } else {
            ""
        };
        let _ = write!(
            main,
            "<form method=\"post\" action=\"{LOGIN}\">{hidden}\
             <label for=\"login\">{field}</label>\
             <input id=\"login\" name=\"login\" type=\"{input}\" autocomplete=\"username\" required value=\"{login}\"{described}>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{described}>\
             <button type=\"submit\">Sign in</button></form>",
            field = kind.label(),
            input = if kind == LoginKind::Email { "email" } else { "text" },
            login = escape(login),
        );
        if self.spec.registration {
            let href = match request {
                Some((id, _)) => format!("{REGISTER}?request={}", url_encode(id)),
                None => REGISTER.to_string(),
            };
            let _ = write!(
                main,
                "<p>New to {label}? <a href=\"{}\">Create account</a></p>",
                escape(&href)
            );
        }
        self.page(status, "Sign in", &main)
    }

    fn register_page(
        &self,
        request: Option<&str>,
        values: &Params,
        errors: &[(&'static str, String)],
    ) -> Answer {
        if !self.request_waiting(request) {
            return self.expired_request();
        }
        let label = escape(&self.spec.label);
        let kind = self.spec.login_kind;
        let mut main = format!("<h1>Create your {label} account</h1>");
        if !errors.is_empty() {
            main.push_str(
                "<p class=\"error\" role=\"alert\">The account was not created: please correct the fields below.</p>",
            );
        }
        let field = |id: &str, label: &str, input: &str, autocomplete: &str, value: &str| {
            let error = errors.iter().find(|(f, _)| *f == id).map(|(_, e)| e);
            let mut html = format!("<label for=\"{id}\">{}</label>", escape(label));
            let mut extra = String::new();
            if let Some(e) = error {
                let _ = write!(
                    html,
                    "<p class=\"error\" id=\"{id}-error\">{}</p>",
                    escape(e)
                );
                extra = format!(" aria-describedby=\"{id}-error\" aria-invalid=\"true\"");
            }
            let required = if id == "name" { "" } else { " required" };
            let _ = write!(
                html,
                "<input id=\"{id}\" name=\"{id}\" type=\"{input}\" autocomplete=\"{autocomplete}\"{required} value=\"{}\"{extra}>",
                escape(value)
            );
            html
        };
        let _ = write!(main, "<form method=\"post\" action=\"{REGISTER}\">");
        if let Some(id) = request {
            let _ = write!(
                main,
                "<input type=\"hidden\" name=\"request\" value=\"{}\">",
                escape(id)
            );
        }
        let value = |k: &str| values.get(k).unwrap_or("");
        main.push_str(&match kind {
            LoginKind::Email => field("login", "Email", "email", "email", value("login")),
            LoginKind::Username => field("login", "Username", "text", "username", value("login")),
        });
        if kind == LoginKind::Username {
            main.push_str(&field("email", "Email", "email", "email", value("email")));
        }
        main.push_str(&field(
            "name",
            "Name (optional)",
            "text",
            "name",
            value("name"),
        ));
        main.push_str(&field(
            "password",
            "Password (at least 4 characters)",
            "password",
            "new-password",
            "",
        ));
        main.push_str("<button type=\"submit\">Create account</button></form>");
        // Back to the sign-in form of the same request.
        let back = match request {
            Some(id) => format!("{LOGIN}?request={}", url_encode(id)),
            None => ACCOUNT.to_string(),
        };
        let _ = write!(
            main,
            "<p>Have an account? <a href=\"{}\">Sign in instead</a></p>",
            escape(&back)
        );
        self.page(StatusCode::OK, "Create account", &main)
    }

    fn confirm_logout_page(&self, req: &RequestHeader, params: &Params) -> Answer {
        let who = self.session_of(req).map(|s| s.display);
        let mut main = format!("<h1>Sign out of {}?</h1>", escape(&self.spec.label));
        match &who {
            Some(who) => {
                let _ = write!(
                    main,
                    "<p>You are signed in as <strong>{}</strong>.</p>",
                    escape(who)
                );
            }
            None => main.push_str("<p>Nobody is signed in here in this browser.</p>"),
        }
        let _ = write!(main, "<form method=\"post\" action=\"{LOGOUT}\">");
        for name in ["client_id", "post_logout_redirect_uri", "state"] {
            if let Some(v) = params.get(name) {
                let _ = write!(
                    main,
                    "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                    escape(v)
                );
            }
        }
        main.push_str(
            "<input type=\"hidden\" name=\"confirm\" value=\"yes\"><button type=\"submit\">Sign out</button></form>",
        );
        self.page(StatusCode::OK, "Sign out", &main)
    }

    /// `GET /auth/account`: the provider's own page: who is signed in here, or a sign-in form.
    fn account_page(&self, req: &RequestHeader) -> Answer {
        let Some(session) = self.session_of(req) else {
            return self.sign_in_page(StatusCode::OK, None, "", None);
        };
        let label = escape(&self.spec.label);
        let main = format!(
            "<h1>Your {label} account</h1>\
             <p>You are signed in as <strong>{who}</strong>. Applications that send you here \
             get an answer without a password until you sign out.</p>\
             <form method=\"post\" action=\"{LOGOUT}\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
             <button type=\"submit\" class=\"secondary\">Sign out of {label}</button></form>",
            who = escape(&session.display),
        );
        self.page(StatusCode::OK, "Your account", &main)
    }
}

/// What a page needs to know about a provider session.
struct SessionView {
    subject: String,
    display: String,
    auth_time: i64,
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_verifier(verifier));
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        // `plain` would send the verifier itself as the challenge: it never matches.
        assert!(!pkce_matches(verifier, verifier));
    }

    #[test]
    fn verifiers_are_43_to_128_unreserved_characters() {
        assert!(!is_verifier(&"a".repeat(42)));
        assert!(is_verifier(&"a".repeat(128)));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(42))));
    }

    fn with_header(name: &str, value: &str) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/token", None).expect("request");
        req.insert_header(name.to_string(), value).expect("header");
        req
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // RFC 6749 2.3.1: "a b" and "p:w%" are form-urlencoded before base64.
        let raw = STANDARD.encode("a+b:p%3Aw%25");
        let req = with_header("authorization", &format!("Basic {raw}"));
        assert_eq!(
            basic_credentials(&req),
            Some(Ok(("a b".to_string(), "p:w%".to_string())))
        );
        let req = with_header("authorization", "Basic !!!");
        assert_eq!(basic_credentials(&req), Some(Err(())));
        let req = with_header("authorization", "Bearer x");
        assert_eq!(basic_credentials(&req), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let req = with_header("cookie", "x_session=1; session=2; other=3");
        assert_eq!(cookie(&req, "session"), Some("2"));
        assert_eq!(cookie(&req, "sess"), None);
    }

    #[test]
    fn cross_site_forms_are_refused() {
        let mut req = with_header("host", "127.0.0.1:4181");
        assert!(same_origin(&req));
        req.insert_header("origin", "http://127.0.0.1:4181")
            .expect("origin");
        assert!(same_origin(&req));
        req.insert_header("origin", "http://evil.example")
            .expect("origin");
        assert!(!same_origin(&req));
        let mut req = with_header("sec-fetch-site", "cross-site");
        req.insert_header("host", "127.0.0.1:4181").expect("host");
        assert!(!same_origin(&req));
    }
}
