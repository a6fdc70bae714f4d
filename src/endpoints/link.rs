//! Making and removing a link from the account page: `POST link/connect`,
//! `POST link/disconnect`, and [`link`] itself (used by the callbacks too), whose conflicts
//! are told with the other side masked.

use std::collections::HashMap;

use pingora::http::RequestHeader;

use super::request::{checked_session, current, replace_session, replace_session_proven, Proven};
use crate::app::{App, Linking};
use crate::identity::Identity;
use crate::link::{LinkOutcome, Registry};
use crate::pages::Text;
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
                why: Text::new("link.sso_taken")
                    .arg("sso", app.sso_name())
                    .arg("sso_as", sso.display())
                    .arg("account_name", app.account_name())
                    .arg("other", masked(existing.account.display())),
                what_to_do: Text::new("link.sso_taken_fix")
                    .arg("account_name", app.account_name())
                    .arg("sso", app.sso_name())
                    .arg("key", sso.key()),
                link_page: app.link_page_url(),
            }),
        ),
        LinkOutcome::AccountTaken(existing) => (
            "conflict_account",
            Some(Refusal::LinkConflict {
                why: Text::new("link.account_taken")
                    .arg("account_name", app.account_name())
                    .arg("account", account.display())
                    .arg("sso", app.sso_name())
                    .arg("other", masked(existing.sso.display())),
                what_to_do: Text::new("link.account_taken_fix")
                    .arg("sso", app.sso_name())
                    .arg("other", masked(existing.sso.display()))
                    .arg("key", account.key()),
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
            let (account, binding) = crate::identify::account_of_jwt(app, req)
                .await?
                .ok_or_else(|| Refusal::SignInFailed {
                    why: Text::new("sign_in.account_in_browser_first")
                        .arg("account_name", app.account_name()),
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
            reason: Text::new("link.disconnect_disabled"),
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
    let proven = Proven {
        sso: None,
        account: Some(account.clone()),
        tokens: None,
        account_jwt: record.account_jwt.clone(),
        account_id_token: record.account_id_token.clone(),
    };
    let cookie = replace_session_proven(sessions, None, proven).await?;
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
