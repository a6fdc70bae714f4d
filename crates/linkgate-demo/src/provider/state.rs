//! What a development provider remembers, in memory: its users, the authorization requests
//! waiting for a sign-in, the codes granted, the codes already used, the access tokens and
//! the provider sessions, each forgotten when it expires.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) subject: String,
    pub(super) login: String,
    pub(super) password: String,
    pub(super) email: String,
    pub(super) name: String,
    pub(super) hint: Option<String>,
}

/// An authorization request waiting for its user to sign in, or granted as a code.
#[derive(Debug, Clone)]
pub(super) struct AuthRequest {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) nonce: Option<String>,
    pub(super) challenge: String,
    pub(super) scopes: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) request: AuthRequest,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct Grant {
    pub(super) request: AuthRequest,
    pub(super) subject: String,
    pub(super) auth_time: i64,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct AccessToken {
    pub(super) subject: String,
    pub(super) scopes: Vec<String>,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct ProviderSession {
    pub(super) subject: String,
    pub(super) auth_time: i64,
    pub(super) expires: Instant,
}

/// A code that was exchanged (or tried): a second use revokes what the first one gave.
#[derive(Debug)]
pub(super) struct UsedCode {
    pub(super) access_token: Option<String>,
    pub(super) forget_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) users: Vec<User>,
    pub(super) pending: HashMap<String, Pending>,
    pub(super) codes: HashMap<String, Grant>,
    pub(super) used_codes: HashMap<String, UsedCode>,
    pub(super) tokens: HashMap<String, AccessToken>,
    pub(super) sessions: HashMap<String, ProviderSession>,
}

impl State {
    /// Forgets everything that expired (the maps stay small: a demo has a handful of users).
    pub(super) fn sweep(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.expires > now);
        self.codes.retain(|_, g| g.expires > now);
        self.used_codes.retain(|_, u| u.forget_at > now);
        self.tokens.retain(|_, t| t.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }

    pub(super) fn user(&self, subject: &str) -> Option<&User> {
        self.users.iter().find(|u| u.subject == subject)
    }
}

/// What a page needs to know about a provider session.
pub(super) struct SessionView {
    pub(super) subject: String,
    pub(super) display: String,
    pub(super) auth_time: i64,
}
