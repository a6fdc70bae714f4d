//! Troubleshooting pages at URLs of their own: `{prefix}/link/problem?p=…`.
//!
//! A browser that meets a problem while finishing a sign-in or a link is redirected here
//! instead of being shown the page at the callback URL, so a reload shows the page again
//! (the callback's code and flow are used once and would only fail differently), the
//! address can be shared with the operator, and nothing is written to the store. The
//! problems:
//!
//! - `conflict`: one side of a link is already linked elsewhere (who to whom, masked; what
//!   to do; the operator's `linkgate links unlink` command);
//! - `expired`: the sign-in's flow cookie is missing, expired, doubled or used (the session
//!   expired mid-way, or another browser);
//! - `refused`: the provider answered `error=` (`access_denied`: cancelled or refused);
//! - `unreachable`: the provider did not answer (or answered nonsense) when the code was
//!   exchanged;
//! - `failed`: any other sign-in that could not complete (another session's flow, an answer
//!   that did not verify).
//!
//! Each says what happened and what to do, and offers the one next step ("Sign in again").
//! The details are sealed into `p` (XChaCha20-Poly1305 under the cookie secret's record key,
//! with an expiry of a day), so a crafted URL cannot put words or a link on the page; texts
//! travel as catalogue keys and values, so the page is written in the reader's language.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::pages::{self, Text};
use crate::respond::{self, Refusal, Reply};
use pingora::http::RequestHeader;

/// How long a problem page's URL shows its details.
const PROBLEM_TTL_SECS: i64 = 24 * 3600;
/// The sealing purpose of problem notes.
const PURPOSE: &str = "link-problem";

/// What kind of problem a page tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A link conflict.
    Conflict,
    /// The sign-in's flow was missing, expired or used: start again.
    Expired,
    /// The provider refused or the person cancelled.
    Refused,
    /// The provider could not be reached.
    Unreachable,
    /// Any other sign-in that did not complete.
    Failed,
}

impl Kind {
    /// The word API clients read (`problem` in the JSON twin).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Conflict => "conflict",
            Kind::Expired => "expired",
            Kind::Refused => "refused",
            Kind::Unreachable => "unreachable",
            Kind::Failed => "failed",
        }
    }

    /// The kind of a failed sign-in, by what it says.
    fn of(why: &Text) -> Kind {
        match why.key() {
            "sign_in.unknown_flow" | "sign_in.duplicate" | "sign_in.expired" => Kind::Expired,
            "sign_in.cancelled" | "sign_in.login_required" | "sign_in.provider_error" => {
                Kind::Refused
            }
            _ => Kind::Failed,
        }
    }
}

/// What a problem URL carries, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    kind: Kind,
    why: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    what_to_do: Option<Text>,
    /// Where the page's action goes (a URL linkgate built: `start`, `account/start`, the
    /// account page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<String>,
    /// The provider's name, for the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    until: i64,
}

/// The answer of endpoint `name`, with a problem a person should see at a URL of its own
/// turned into a redirect there: a link conflict anywhere, and a sign-in that failed (or
/// whose provider was unreachable) at a callback. APIs get their JSON where they asked.
pub fn to_problem_page(
    app: &App,
    name: &str,
    html: bool,
    result: Result<Reply, Refusal>,
) -> Result<Reply, Refusal> {
    if !html || app.sessions.is_none() {
        return result;
    }
    let callback = matches!(name, "callback" | "account/callback");
    let provider = if name == "account/callback" {
        app.account_name()
    } else {
        app.sso_name()
    };
    let note = match result {
        Err(Refusal::LinkConflict {
            why, what_to_do, ..
        }) => Note {
            kind: Kind::Conflict,
            why,
            what_to_do: Some(what_to_do),
            retry: None,
            provider: None,
            until: 0,
        },
        Err(Refusal::SignInFailed { why, retry }) if callback => Note {
            kind: Kind::of(&why),
            provider: why.value("provider").map(str::to_string),
            why,
            what_to_do: None,
            retry: Some(retry),
            until: 0,
        },
        Err(Refusal::ProviderUnavailable(detail)) if callback => {
            tracing::warn!(detail = %detail, "sign-in provider unavailable at the callback");
            let retry = if name == "account/callback" {
                format!("{}/account/start?rd=%2F", app.prefix())
            } else {
                app.start_url("/", crate::session::Intent::Login)
            };
            Note {
                kind: Kind::Unreachable,
                why: Text::new("problem.unreachable_what").arg("provider", provider),
                what_to_do: None,
                retry: Some(retry),
                provider: Some(provider.to_string()),
                until: 0,
            }
        }
        other => return other,
    };
    Ok(Reply::redirect(&url(app, note)))
}

/// `{prefix}/link/problem?p=…` for `note`, sealed.
fn url(app: &App, mut note: Note) -> String {
    note.until = crate::session::now() + PROBLEM_TTL_SECS;
    let Some(sessions) = &app.sessions else {
        return format!("{}/link", app.prefix());
    };
    let plain = serde_json::to_vec(&note).unwrap_or_default();
    format!(
        "{}/link/problem?p={}",
        app.prefix(),
        sessions.seal_note(PURPOSE, &plain)
    )
}

/// Reads a note: this format, or the one before texts had keys (`why`/`what_to_do` as
/// English sentences, always a conflict).
fn read(bytes: &[u8]) -> Option<Note> {
    if let Ok(note) = serde_json::from_slice::<Note>(bytes) {
        return Some(note);
    }
    let old: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(Note {
        kind: Kind::Conflict,
        why: Text::raw(old["why"].as_str()?),
        what_to_do: Some(Text::raw(old["what_to_do"].as_str()?)),
        retry: None,
        provider: None,
        until: old["until"].as_i64()?,
    })
}

/// `GET link/problem?p=`: the page the note describes, in the reader's language. An
/// altered note, or one older than a day, sends the browser to the account page (or `/`
/// on a gate without `[account]`).
pub fn page(app: &App, req: &RequestHeader) -> Reply {
    let html = respond::is_navigation(req) || respond::prefers_html(req);
    let ctx = app.pages.for_request(req);
    let note = app.sessions.as_ref().and_then(|s| {
        let sealed = super::query_param(req, "p")?;
        read(&s.open_note(PURPOSE, &sealed)?)
    });
    let link_page = format!("{}/link", app.prefix());
    let note = match note {
        Some(note) if note.until > crate::session::now() => note,
        _ if app.linking.is_on() => return Reply::redirect(&link_page),
        _ => return Reply::redirect("/"),
    };
    if note.kind == Kind::Conflict {
        return Refusal::LinkConflict {
            why: note.why,
            what_to_do: note.what_to_do.unwrap_or_else(|| Text::raw("")),
            link_page,
        }
        .reply(html, &ctx);
    }
    let provider = note.provider.clone().unwrap_or_else(|| ctx.realm.clone());
    let (title, advice) = match note.kind {
        Kind::Expired => ("problem.expired_title", "problem.expired_advice"),
        Kind::Refused => ("problem.refused_title", "problem.refused_advice"),
        Kind::Unreachable => ("problem.unreachable_title", "problem.unreachable_advice"),
        Kind::Failed | Kind::Conflict => ("problem.failed_title", "problem.failed_advice"),
    };
    let title = ctx.text(&Text::new(title).arg("provider", &provider));
    let what = ctx.text(&note.why);
    let advice = ctx.text(&Text::new(advice).arg("provider", &provider));
    let retry = note
        .retry
        .unwrap_or_else(|| app.start_url("/", crate::session::Intent::Login));
    let label = if retry == link_page {
        ctx.tr("page.go_to_account_settings")
    } else {
        ctx.tr("page.sign_in_again")
    };
    let (status, code) = match note.kind {
        Kind::Unreachable => (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable"),
        _ => (StatusCode::BAD_REQUEST, "sign_in_failed"),
    };
    let reply = if html {
        Reply::html(
            status,
            pages::message(&ctx, &title, &what, &advice, None, Some((&label, &retry))),
        )
    } else {
        Reply::json(
            status,
            &json!({
                "error": code,
                "problem": note.kind.as_str(),
                "message": what,
                "advice": advice,
                "retry": retry,
            }),
        )
    };
    match note.kind {
        Kind::Unreachable => reply.with_header(http::header::RETRY_AFTER, "5"),
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_are_sorted_by_what_they_say() {
        assert_eq!(Kind::of(&Text::new("sign_in.expired")), Kind::Expired);
        assert_eq!(Kind::of(&Text::new("sign_in.unknown_flow")), Kind::Expired);
        assert_eq!(Kind::of(&Text::new("sign_in.duplicate")), Kind::Expired);
        assert_eq!(Kind::of(&Text::new("sign_in.cancelled")), Kind::Refused);
        assert_eq!(
            Kind::of(&Text::new("sign_in.provider_error")),
            Kind::Refused
        );
        assert_eq!(Kind::of(&Text::new("sign_in.not_verified")), Kind::Failed);
    }

    #[test]
    fn notes_of_the_previous_format_still_open() {
        let old = br#"{"why":"The x is taken.","what_to_do":"Unlink it.","until":99}"#;
        let note = read(old).unwrap();
        assert_eq!(note.kind, Kind::Conflict);
        assert_eq!(note.why.to_string(), "The x is taken.");
        assert_eq!(note.until, 99);
        let new = Note {
            kind: Kind::Refused,
            why: Text::new("sign_in.cancelled").arg("provider", "Magento.com"),
            what_to_do: None,
            retry: Some("/oauth2/start?rd=%2F".into()),
            provider: Some("Magento.com".into()),
            until: 5,
        };
        let back = read(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert_eq!(back.kind, Kind::Refused);
        assert_eq!(back.why, new.why);
        assert_eq!(back.retry, new.retry);
    }
}
