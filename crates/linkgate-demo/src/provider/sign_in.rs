//! The browser's side of the development provider: the authorization request, its sign-in
//! and "Create account" forms, the provider's own session, and RP-initiated logout.

use std::time::Instant;

use http::{header, StatusCode};
use pingora::http::RequestHeader;
use url::Url;

use super::*;
use crate::web::{escape, Answer, Params};

impl DevProvider {
    /// The redirect back to the client with `params`, `state` and `iss`.
    pub(super) fn back_to_client(
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
    pub(super) fn authorize(&self, req: &RequestHeader, q: &Params) -> Answer {
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
    pub(super) fn grant(&self, request: AuthRequest, subject: &str, auth_time: i64) -> Answer {
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
    pub(super) fn session_of(&self, req: &RequestHeader) -> Option<SessionView> {
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
    pub(super) fn start_session(&self, req: &RequestHeader, subject: &str) -> String {
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

    pub(super) fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Lax",
            self.spec.cookie_name
        )
    }

    /// After a successful sign-in: back to the application when a request waits, else to
    /// the provider's own account page.
    pub(super) fn continue_signed_in(
        &self,
        request_id: Option<&str>,
        subject: &str,
        cookie: &str,
    ) -> Answer {
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

    pub(super) fn expired_request(&self) -> Answer {
        self.error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in form has expired or was already used. Go back to the application and start again.",
        )
    }

    pub(super) fn forged_form(&self) -> Answer {
        self.error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form was sent from another site, so it was ignored.",
        )
    }

    /// Whether a sign-in form's request is still waiting (a form without one signs in to
    /// the provider itself).
    pub(super) fn request_waiting(&self, id: Option<&str>) -> bool {
        id.is_none_or(|id| self.state().pending.contains_key(id))
    }

    /// `GET /auth/login?request=`: the sign-in form of a waiting request again (the way back
    /// from "Create account").
    pub(super) fn sign_in_again(&self, request_id: Option<&str>) -> Answer {
        match request_id {
            Some(id) => match self.client_name_of(id) {
                Some(client) => self.sign_in_page(StatusCode::OK, Some((id, &client)), "", None),
                None => self.expired_request(),
            },
            None => Answer::see_other(ACCOUNT),
        }
    }

    /// `POST /auth/login`: checks the password; a wrong one shows the form again.
    pub(super) fn login(&self, req: &RequestHeader, form: &Params) -> Answer {
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

    pub(super) fn client_name_of(&self, request_id: &str) -> Option<String> {
        let client_id = self
            .state()
            .pending
            .get(request_id)
            .map(|p| p.request.client_id.clone())?;
        self.client(&client_id).map(|c| c.name.clone())
    }

    /// `POST /auth/register`: creates an account (in memory) and signs it in.
    pub(super) fn register(&self, req: &RequestHeader, form: &Params) -> Answer {
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

    /// `GET|POST /auth/logout`: RP-initiated logout. With a valid `id_token_hint` the session
    /// ends at once; otherwise the user confirms (so a link on another site cannot sign
    /// anyone out). `post_logout_redirect_uri` must be registered by the client.
    pub(super) fn end_session(&self, req: &RequestHeader, params: &Params, post: bool) -> Answer {
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
}
