//! The development provider's pages: sign-in, create account, confirm logout, the account
//! overview, messages and errors, each marked as a development provider listing the demo
//! users.

use std::fmt::Write as _;

use http::StatusCode;
use pingora::http::RequestHeader;

use super::*;
use crate::web::{escape, page, Answer, Params};

impl DevProvider {
    pub(super) fn page(&self, status: StatusCode, title: &str, main: &str) -> Answer {
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

    pub(super) fn message_page(&self, title: &str, main: &str) -> Answer {
        self.page(
            StatusCode::OK,
            title,
            &format!("<h1>{}</h1>{main}", escape(title)),
        )
    }

    pub(super) fn error_page(&self, status: StatusCode, title: &str, text: &str) -> Answer {
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

    pub(super) fn demo_users(&self) -> String {
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
    pub(super) fn sign_in_page(
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

    pub(super) fn register_page(
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

    pub(super) fn confirm_logout_page(&self, req: &RequestHeader, params: &Params) -> Answer {
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
    pub(super) fn account_page(&self, req: &RequestHeader) -> Answer {
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

pub(super) fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
