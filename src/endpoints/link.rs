//! Making and removing a link from the account page: `POST link/connect`,
//! `POST link/disconnect`, and [`link`] itself (used by the callbacks too), whose conflicts
//! are told with the other side masked.

use std::collections::HashMap;

use pingora::http::RequestHeader;

use super::request::{checked_session, current, replace_session};
use crate::app::{App, Linking};
use crate::identity::Identity;
use crate::link::{LinkOutcome, Registry};
use crate::redirect::encode;
use crate::respond::{Refusal, Reply};
use crate::session::flow;
use crate::session::Intent;
use crate::session::Sessions;

/// Links `account` and `sso`; a conflict is a page that says who holds the other side.
pub(super) async fn link(
    app: &App,
    registry: &Registry,
    account: &Identity,
    sso: &Identity,
) -> Result<(), Refusal> {
    let outcome = registry.create(account, sso).await?;
    if let (LinkOutcome::Created(_), Some(sessions)) = (&outcome, &app.sessions) {
        // The remembered account JWTs hold the link they found.
        sessions.links_changed().await;
    }
    let (result, refusal) = match outcome {
        LinkOutcome::Created(_) => ("created", None),
        LinkOutcome::AlreadyLinked(_) => ("unchanged", None),
        LinkOutcome::SsoTaken(existing) => (
            "conflict_sso",
            Some(Refusal::LinkConflict {
                why: format!(
                    "The {} account {} is already connected to another {} account ({}).",
                    app.sso_name(),
                    sso.display(),
                    app.account_name(),
                    masked(existing.account.display())
                ),
                what_to_do: format!(
                    "This happens after a project ownership transfer. Sign in to the other {} account, \
                     open Account Settings and choose \"Disconnect from {}\", then connect this one again. \
                     The site's operator can also remove the old link: linkgate links unlink '{}'.",
                    app.account_name(),
                    app.sso_name(),
                    sso.key()
                ),
                link_page: app.link_page_url(),
            }),
        ),
        LinkOutcome::AccountTaken(existing) => (
            "conflict_account",
            Some(Refusal::LinkConflict {
                why: format!(
                    "Your {} account {} is already connected to another {} account ({}).",
                    app.account_name(),
                    account.display(),
                    app.sso_name(),
                    masked(existing.sso.display())
                ),
                what_to_do: format!(
                    "This happens after an email change. Sign in with the {} account that is connected ({}), \
                     or disconnect it on the Account Settings page while signed in with it, then connect again. \
                     If you signed in to the wrong {} account, sign out of {} only and try again. \
                     The site's operator can also remove the old link: linkgate links unlink '{}'.",
                    app.sso_name(),
                    masked(existing.sso.display()),
                    app.sso_name(),
                    app.sso_name(),
                    account.key()
                ),
                link_page: app.link_page_url(),
            }),
        ),
    };
    app.metrics.links.with_label_values(&[result]).inc();
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// `POST link/connect`: starts connecting the two accounts.
pub(super) async fn connect(
    app: &App,
    sessions: &Sessions,
    req: &RequestHeader,
    form: &HashMap<String, String>,
) -> Result<Reply, Refusal> {
    let (id, record) = checked_session(sessions, current(app, req).await?, form)?;
    // Back to the page the form was on (the link-required page stands on the page asked for).
    let back = match form.get("rd") {
        Some(rd) if rd.len() <= flow::MAX_RD => app.redirects.resolve(Some(rd)),
        _ => app.link_page_url(),
    };
    match (&record.sso, &record.account) {
        (Some(_), Some(_)) => Ok(Reply::redirect(&back)),
        (None, Some(_)) => Ok(Reply::redirect(&app.start_url(&back, Intent::Connect))),
        (Some(sso), None) => {
            let registry = match &app.linking {
                Linking::OAuth2 { .. } => {
                    return Ok(Reply::redirect(&format!(
                        "{}/account/start?rd={}",
                        app.prefix(),
                        encode(&back)
                    )))
                }
                Linking::Jwt { registry, .. } => registry,
                Linking::Off => return Err(Refusal::NotFound),
            };
            let (account, binding) = crate::proxy::identify::account_of_jwt(app, req)
                .await?
                .ok_or_else(|| Refusal::SignInFailed {
                    why: format!("Sign in to {} in this browser first.", app.account_name()),
                    retry: back.clone(),
                })?;
            link(app, registry, &account, sso).await?;
            let old = Some((id, record.clone()));
            let cookie = replace_session(
                sessions,
                old.as_ref(),
                record.sso.clone(),
                Some(account),
                record.tokens.clone(),
                Some(binding),
            )
            .await?;
            Ok(Reply::redirect(&back).with_cookie(&cookie))
        }
        (None, None) => Err(Refusal::Unauthenticated),
    }
}

/// `POST link/disconnect`: removes the link and ends every session that relied on it; this
/// browser keeps a cloud-account session and lands on the account page.
pub(super) async fn disconnect(
    app: &App,
    sessions: &Sessions,
    registry: &Registry,
    req: &RequestHeader,
    form: &HashMap<String, String>,
) -> Result<Reply, Refusal> {
    if !app.config.link.allow_disconnect {
        return Err(Refusal::Forbidden {
            who: String::new(),
            reason: "Disconnecting is disabled on this site.".into(),
        });
    }
    let (id, record) = checked_session(sessions, current(app, req).await?, form)?;
    let (Some(sso), Some(account)) = (&record.sso, &record.account) else {
        return Ok(Reply::redirect(&app.link_page_url()));
    };
    if let Some(existing) = registry.by_sso(&sso.key()).await? {
        registry.unlink(&existing).await?;
        app.metrics.links.with_label_values(&["disconnected"]).inc();
    }
    let ended = sessions.destroy_all_for(&sso.key()).await?;
    let _ = sessions.destroy(&id, Some(&record)).await;
    tracing::info!(ended, "link disconnected; sessions that relied on it ended");
    let cookie = replace_session(
        sessions,
        None,
        None,
        Some(account.clone()),
        None,
        record.account_jwt.clone(),
    )
    .await?;
    Ok(Reply::redirect(&app.link_page_url()).with_cookie(&cookie))
}

/// Shows an email (or a name) of someone who may not be the person looking: the first
/// letter of the local part and the domain, `a***@example.com`.
pub fn masked(text: &str) -> String {
    let (local, domain) = match text.split_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (text, None),
    };
    let first: String = local.chars().take(1).collect();
    match domain {
        Some(domain) => format!("{first}***@{domain}"),
        None => format!("{first}***"),
    }
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn the_other_side_is_masked() {
        assert_eq!(masked("ann@example.com"), "a***@example.com");
        assert_eq!(masked("cloud-gus"), "c***");
        assert_eq!(masked(""), "***");
        assert_eq!(masked("émile@exemple.fr"), "é***@exemple.fr");
    }
}
