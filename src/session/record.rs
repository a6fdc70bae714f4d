//! What a session record holds: the identities, the tokens, the platform JWT its account
//! may follow; and what the intent of a sign-in is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::oidc::Tokens;
use crate::passport::Passport;

/// What a session knows: the SSO identity, the cloud account, or both (linked). `Debug`
/// leaves the tokens' values out.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The SSO (Magento.com) identity, once signed in there.
    #[serde(default)]
    pub sso: Option<Identity>,
    /// The cloud account, once known (its own sign-in, an account JWT, or the link).
    #[serde(default)]
    pub account: Option<Identity>,
    /// The SSO tokens (absent for a session built from a link record or an account JWT).
    #[serde(default)]
    pub tokens: Option<Tokens>,
    /// Unix seconds of the sign-in.
    pub created_at: i64,
    /// Unix seconds when the session ends.
    pub expires_at: i64,
    /// Set when `account` came from the platform's account JWT (`[account] source = "jwt"`):
    /// the session then follows that JWT. Every request compares the JWT it carries with this
    /// one; another account, no JWT, or an invalid or expired one ends the session (see
    /// `identify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_jwt: Option<JwtBinding>,
    /// The accounts provider's id_token, when this browser signed in there through linkgate
    /// (`[account] source = "oauth2"`): sign-out ends that provider's session too, with it
    /// as `id_token_hint` (src/endpoints/sign_out_chain.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id_token: Option<String>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("sso", &self.sso)
            .field("account", &self.account)
            .field("tokens", &self.tokens)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("account_jwt", &self.account_jwt)
            .field(
                "account_id_token",
                &self
                    .account_id_token
                    .as_ref()
                    .map(|_| crate::secret::Redacted),
            )
            .finish()
    }
}

/// The platform JWT a session's account identity came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtBinding {
    /// Lower-case hex SHA-256 of the JWT that was verified (a request carrying exactly this
    /// JWT needs no verification).
    pub sha256: String,
    /// Unix seconds until which that JWT verifies (its `exp` plus the configured leeway).
    pub valid_until: i64,
}

/// A verified platform account JWT, remembered by the SHA-256 of the token (see
/// [`Sessions::account_jwts`]): who it names, the link found for that account when it was
/// verified, and the passport a request carrying it gets (no session is written for it).
#[derive(Debug)]
pub struct AccountPass {
    /// The cloud account the JWT names.
    pub account: Identity,
    /// The Magento.com identity linked to it, if any.
    pub sso: Option<Identity>,
    /// Unix seconds until which the JWT verifies (`exp` plus the leeway).
    pub valid_until: i64,
    /// What a request carrying this JWT (and no session) gets.
    pub passport: Arc<Passport>,
}

/// Why a sign-in was started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Intent {
    /// Sign in.
    #[default]
    Login,
    /// Sign in to connect the session's other identity (Method 1 and 2).
    Connect,
}
