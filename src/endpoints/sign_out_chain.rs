//! Sign-out that ends every session linkgate started: linkgate's own, then the accounts
//! provider's (`[account] source = "oauth2"`, when this browser signed in there through
//! linkgate and its discovery offers `end_session_endpoint`), then Magento.com's
//! (RP-initiated logout, or Adobe IMS's own logout URL). Each hop is an RP-initiated logout
//! with `id_token_hint` (the id_token that provider issued to this session), `client_id`,
//! `post_logout_redirect_uri = {base}{prefix}/signed_out` and a `state`; the provider sends
//! the browser back to `signed_out`, which takes the next hop, and after the last one goes on
//! to `rd`.
//!
//! SECURITY: the chain (where to go next, the id_tokens for the hints, the final `rd`) never
//! travels in a URL: it waits in this browser's `signed_out` cookie (src/session/signed_out.rs:
//! sealed with XChaCha20-Poly1305 under the cookie secret's record key, HttpOnly, ten
//! minutes), and each hop's `state` is only a fresh random value the provider's return must
//! bring back. So a provider, its logs or a Referer see no other provider's id_token, a
//! `state` copied from a URL opens nothing in another browser (no logout CSRF by replay), a
//! crafted `state` cannot name a URL (hops are built from discovery, never from the request),
//! and `rd` is validated again when used. Adobe IMS's logout hands back no `state` (it
//! returns to `redirect_uri` exactly): the cookie alone is followed; Magento.com's hop comes
//! last, so after it only `rd` is left. A provider without an end-session endpoint is
//! skipped.

use serde::{Deserialize, Serialize};

use crate::app::App;

/// How long a sign-out chain is honoured.
const CHAIN_TTL_SECS: i64 = 600;

/// Which provider a hop signs out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Provider {
    /// The accounts provider (`[account] source = "oauth2"`).
    Account,
    /// Magento.com (`[sso]`).
    Sso,
}

/// One provider's logout still to come.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hop {
    provider: Provider,
    /// The id_token that provider issued to the ended session, for `id_token_hint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// What the browser's `signed_out` cookie carries between hops, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chain {
    /// The `state` sent with the current hop: the provider's return must bring it back
    /// (providers that return none, IMS, are followed by the cookie alone).
    nonce: String,
    /// Where the browser ends (validated when the chain began and again at the end).
    rd: String,
    /// `{base}{prefix}/signed_out`, where every provider sends the browser back.
    back: String,
    /// The hops still to take, in order.
    hops: Vec<Hop>,
    until: i64,
}

/// What the ended session knew, for its providers' logouts.
#[derive(Debug, Default)]
pub struct Ended {
    /// Whether there was a session to end (no session: no provider is asked).
    pub had_session: bool,
    /// Magento.com's id_token, when the session still had one.
    pub sso_id_token: Option<String>,
    /// The accounts provider's id_token, when this browser signed in there.
    pub account_id_token: Option<String>,
}

/// Where the browser goes next, and the rest of the chain, which waits in this browser's
/// `signed_out` cookie (src/session/signed_out.rs), never in a URL.
#[derive(Debug)]
pub struct Step {
    /// The next provider's logout URL, or the validated `rd`.
    pub location: String,
    /// The rest of the chain (JSON, sealed by the cookie), when a provider's logout is next.
    pub keep: Option<String>,
}

impl Step {
    fn to(location: String) -> Self {
        Step {
            location,
            keep: None,
        }
    }
}

/// Where `POST sign_out` sends the browser once linkgate's session is ended: the first
/// provider logout of the chain, or `rd` when no provider is to be asked. `base` is this
/// gate's `scheme://host` (none: the providers are not asked, there is no way back).
pub async fn begin(app: &App, base: Option<&str>, rd: &str, ended: Ended) -> Step {
    let Some(base) = base.filter(|_| ended.had_session) else {
        return Step::to(rd.to_string());
    };
    let mut hops = Vec::new();
    if let (Some(_), Some(token)) = (app.linking.provider(), ended.account_id_token) {
        hops.push(Hop {
            provider: Provider::Account,
            id_token: Some(token),
        });
    }
    if app.sso.is_some() {
        hops.push(Hop {
            provider: Provider::Sso,
            id_token: ended.sso_id_token,
        });
    }
    let chain = Chain {
        nonce: String::new(),
        rd: rd.to_string(),
        back: format!("{base}{}/signed_out", app.prefix()),
        hops,
        until: crate::session::now() + CHAIN_TTL_SECS,
    };
    next(app, chain).await
}

/// `GET signed_out`: the next hop of the chain this browser's cookie keeps (`kept`), when
/// the provider's return brings back that hop's `state` (or none, as IMS's logout). Without
/// a matching chain, a `state` (an older gate's plain `rd`, or made up) is taken as an `rd`
/// and validated like one: the worst it can do is land on a page of this site or of
/// `authz.redirect_domains`. `None`: neither, the "Signed out" page.
pub async fn resume(app: &App, state: Option<&str>, kept: Option<&str>) -> Option<Step> {
    let chain = kept
        .and_then(|json| serde_json::from_str::<Chain>(json).ok())
        .filter(|chain| state.is_none_or(|state| state == chain.nonce));
    Some(match (chain, state) {
        (Some(chain), _) if chain.until > crate::session::now() => next(app, chain).await,
        (Some(chain), _) => Step::to(app.redirects.resolve(Some(&chain.rd))),
        (None, Some(state)) => Step::to(app.redirects.resolve(Some(state))),
        (None, None) => return None,
    })
}

/// Takes the first hop whose provider has a logout URL, with the rest of the chain in
/// [`Step::keep`] and a fresh random `state` that the provider's return must bring back;
/// `rd` when none is left.
async fn next(app: &App, mut chain: Chain) -> Step {
    while !chain.hops.is_empty() {
        let hop = chain.hops.remove(0);
        let provider = match hop.provider {
            Provider::Account => app.linking.provider(),
            Provider::Sso => app.sso.as_ref(),
        };
        let Some(provider) = provider else {
            continue;
        };
        chain.nonce = crate::identity::OpaqueId::random().to_hex();
        let Some(url) = provider
            .end_session_url(hop.id_token.as_deref(), &chain.back, &chain.nonce)
            .await
        else {
            continue;
        };
        return Step {
            location: url.to_string(),
            keep: serde_json::to_string(&chain).ok(),
        };
    }
    Step::to(app.redirects.resolve(Some(&chain.rd)))
}
