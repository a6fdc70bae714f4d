//! Sign-in to the cloud account (`[account] source = "oauth2"`): `GET account/start` and
//! `GET account/callback`, the same flow as the Magento.com sign-in against the accounts
//! provider. A Magento.com session waiting for its account is linked to it here.

use pingora::http::RequestHeader;

use super::link::link;
use super::request::{current, replace_session_proven, Proven};
use super::sign_in::{asked_by_current, begin, finish, may_replace, not_this_session, started_by};
use super::RequestInfo;
use crate::app::{App, SignIn};
use crate::link::Registry;
use crate::respond::{Refusal, Reply};
use crate::session::Intent;

/// `GET account/start?rd=`: sign in to the cloud account (`[account] source = "oauth2"`).
/// A Magento.com session waiting for its account is recorded: the callback links for it only.
pub(super) async fn account_start(
    app: &App,
    accounts: SignIn<'_>,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let asked_by = asked_by_current(app, req).await?;
    begin(app, accounts, Intent::Login, asked_by, req, info).await
}

/// `GET account/callback`: back from the cloud account's sign-in. With a Magento.com
/// session waiting for its account, this links them, when that session started this
/// sign-in (otherwise nothing is linked and the session is left alone); without one, it
/// starts an account session, which the link rule then sends on to Magento.com.
pub(super) async fn account_callback(
    app: &App,
    accounts: SignIn<'_>,
    registry: &Registry,
    req: &RequestHeader,
) -> Result<Reply, Refusal> {
    let (flow, account, account_tokens) = finish(app, accounts, req).await?;
    let account_id_token = account_tokens.id_token;
    let old = current(app, req).await?;
    let waiting_sso = old
        .as_ref()
        .filter(|(_, r)| r.account.is_none())
        .and_then(|(_, r)| r.sso.clone().map(|s| (s, r.tokens.clone())));
    let cookie = match waiting_sso {
        Some((sso, tokens)) => {
            if !old.as_ref().is_some_and(|old| started_by(&flow, old)) {
                tracing::warn!("account callback for another session refused; nothing linked");
                return Err(not_this_session(app));
            }
            link(app, registry, &account, &sso).await?;
            let proven = Proven {
                sso: Some(sso),
                account: Some(account),
                tokens,
                account_jwt: None,
                account_id_token,
            };
            replace_session_proven(accounts.sessions, old.as_ref(), proven).await?
        }
        None if !may_replace(&flow, old.as_ref(), &account.key()) => {
            tracing::warn!("sign-in into another session's browser refused; session kept");
            return Err(not_this_session(app));
        }
        None => {
            let proven = Proven {
                sso: None,
                account: Some(account),
                tokens: None,
                account_jwt: None,
                account_id_token,
            };
            replace_session_proven(accounts.sessions, old.as_ref(), proven).await?
        }
    };
    Ok(Reply::redirect(&flow.rd).with_cookie(&cookie))
}
