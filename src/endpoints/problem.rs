//! A link conflict at a URL of its own, `GET link/problem?p=`: the details are sealed into
//! the URL, so a reload shows the page again without a store write and a crafted URL cannot
//! put words on it.

use pingora::http::RequestHeader;
use serde_json::json;

use super::request::query_param;
use crate::app::App;
use crate::respond::{self, Refusal, Reply};

/// How long a problem page's URL shows its details.
const PROBLEM_TTL_SECS: i64 = 24 * 3600;

/// `{prefix}/link/problem?p=…`: the details sealed into the URL (see [`problem_page`]).
pub(super) fn problem_url(app: &App, why: &str, what_to_do: &str) -> String {
    let note = json!({
        "why": why,
        "what_to_do": what_to_do,
        "until": crate::session::now() + PROBLEM_TTL_SECS,
    });
    match &app.sessions {
        Some(sessions) => format!(
            "{}/link/problem?p={}",
            app.prefix(),
            sessions.seal_note("link-problem", note.to_string().as_bytes())
        ),
        None => app.link_page_url(),
    }
}

/// `GET link/problem?p=`: a link conflict, at its own URL (a reload shows it again; the
/// callback that found it is not shown twice). The details were sealed by linkgate, so a
/// crafted URL cannot put words on this page; past a day, or altered, it sends the browser
/// to the account page.
pub(super) fn problem_page(app: &App, req: &RequestHeader) -> Reply {
    let html = respond::is_navigation(req) || respond::prefers_html(req);
    let note = app.sessions.as_ref().and_then(|s| {
        let sealed = query_param(req, "p")?;
        let bytes = s.open_note("link-problem", &sealed)?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    });
    match note {
        Some(note) if note["until"].as_i64().unwrap_or(0) > crate::session::now() => {
            Refusal::LinkConflict {
                why: note["why"].as_str().unwrap_or_default().to_string(),
                what_to_do: note["what_to_do"].as_str().unwrap_or_default().to_string(),
                link_page: app.link_page_url(),
            }
            .reply(html, &app.pages)
        }
        _ => Reply::redirect(&app.link_page_url()),
    }
}
