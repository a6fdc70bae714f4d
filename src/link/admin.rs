//! Operator tools over the link registry, behind `linkgate links list|show|unlink|export|import`.
//!
//! This module owns what those commands do and what they tell the operator; `src/main.rs` only
//! parses arguments, opens files and turns [`AdminError::exit_code`] into the process status.
//! Every tool writes its output to a `&mut dyn Write` it is given and never prints on its own.
//!
//! The tools work on the configured store only. With `session.store = "memory"` the links
//! live inside the running gate's process, out of reach of a separate command: the tools
//! refuse rather than show an empty, unrelated registry. They never write a link except
//! through [`Registry`], so every change is as atomic as the gate's own (both directions and
//! the index at once), and an import never overwrites an existing link.

use std::io::{BufRead, Write};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{LinkOutcome, LinkRecord, Registry};
use crate::config::{Config, RedisMode, StoreKind};
use crate::metrics::Metrics;
use crate::oidc::Identity;
use crate::session::Sessions;
use crate::store::redis::RedisBackend;
use crate::store::{Store, StoreError};

/// Why a links tool could not do its job. Each variant knows its exit status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `session.store = "memory"`: the links are in the running gate's memory.
    #[error(
        "the links tools need session.store = \"redis\": with store = \"memory\" the links live \
         inside the running gate's process and cannot be reached from this command"
    )]
    MemoryStore,
    /// The store could not be set up from the configuration.
    #[error("cannot set up the link store: {0}")]
    Setup(String),
    /// The store did not answer.
    #[error("cannot reach the link store at {target}: {source}")]
    Unreachable {
        /// Where the store was looked for (no credentials).
        target: String,
        /// What the store said.
        source: StoreError,
    },
    /// A store operation failed part-way.
    #[error("{context}: {source}")]
    Store {
        /// What was being done, and what is already done.
        context: String,
        /// What the store said.
        source: StoreError,
    },
    /// No link has this key on either side.
    #[error(
        "no link found for `{0}` (looked up as an account key and as an SSO key; keys are \
         `issuer|subject`, as `linkgate links list` shows them)"
    )]
    NotFound(String),
    /// Reading the input or writing the output failed.
    #[error("{context}: {source}")]
    Io {
        /// Which file or stream.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AdminError {
    /// The process exit status: 1 when the thing asked for does not exist, 2 when the tool
    /// could not run (configuration, store, files).
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::NotFound(_) => 1,
            _ => 2,
        }
    }

    fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> AdminError {
        let context = context.into();
        move |source| AdminError::Store { context, source }
    }

    /// An I/O error on `context` (a file name, `stdout`...).
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AdminError {
        let context = context.into();
        move |source| AdminError::Io { context, source }
    }
}

/// The registry and sessions the tools act on.
#[derive(Debug, Clone)]
pub struct Tools {
    registry: Registry,
    /// Present when the configuration has a cookie secret (as in the gate).
    sessions: Option<Sessions>,
}

// === impl Tools ===

impl Tools {
    /// The tools over the store `config` names, once it answers. Refuses the memory store.
    pub async fn connect(config: &Config) -> Result<Tools, AdminError> {
        let (store, target) = store_from_config(config)?;
        store
            .ping()
            .await
            .map_err(|source| AdminError::Unreachable { target, source })?;
        Ok(Tools::over(store, config))
    }

    /// The tools over a given store (the unit tests use a memory store this way).
    pub fn over(store: Store, config: &Config) -> Tools {
        let sessions =
            config.session.cookie_secret.as_ref().map(|secret| {
                Sessions::new(secret.expose(), store.clone(), config.session.clone())
            });
        Tools {
            registry: Registry::new(store),
            sessions,
        }
    }
}

/// The store as the gate builds it (`src/app.rs`): same backend, key prefix and deadline, so
/// the tools see exactly the keys the gate writes. Also returns where it points, for errors.
fn store_from_config(config: &Config) -> Result<(Store, String), AdminError> {
    let redis = match (&config.session.store, &config.redis) {
        (StoreKind::Redis, Some(redis)) => redis,
        (StoreKind::Memory, _) => return Err(AdminError::MemoryStore),
        (StoreKind::Redis, None) => {
            return Err(AdminError::Setup(
                "store = \"redis\" requires a [redis] section".into(),
            ))
        }
    };
    let target = match redis.mode {
        RedisMode::Standalone => redis
            .url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default(),
        RedisMode::Cluster | RedisMode::Sentinel => {
            format!("{} ({})", redis.nodes.join(", "), redis.mode.as_str())
        }
    };
    let backend = RedisBackend::new(redis).map_err(AdminError::Setup)?;
    let metrics = Metrics::new().map_err(|e| AdminError::Setup(format!("metrics: {e}")))?;
    let store = Store::new(
        Arc::new(backend),
        &redis.key_prefix,
        redis.command_timeout + redis.connect_timeout,
        Arc::new(metrics),
    );
    Ok((store, target))
}

// === the tools ===

/// `list`: one line per link, sorted by account key: account key, SSO key, account email,
/// SSO email, created (RFC 3339), separated by tabs. A missing email shows as `-`. Returns
/// how many links there are.
pub async fn list(tools: &Tools, out: &mut dyn Write) -> Result<usize, AdminError> {
    let links = all_links(tools).await?;
    for link in &links {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            field(&link.account.key()),
            field(&link.sso.key()),
            field(link.account.email.as_deref().unwrap_or("-")),
            field(link.sso.email.as_deref().unwrap_or("-")),
            created(link.created_at),
        )
        .map_err(AdminError::io("stdout"))?;
    }
    Ok(links.len())
}

/// `show ID`: the link whose account key or SSO key is `id` (the account side is tried
/// first), as pretty JSON.
pub async fn show(tools: &Tools, id: &str, out: &mut dyn Write) -> Result<LinkRecord, AdminError> {
    let link = find(tools, id).await?;
    serde_json::to_writer_pretty(&mut *out, &link)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .map_err(AdminError::io("stdout"))?;
    Ok(link)
}

/// What `unlink` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlinked {
    /// The link that was removed.
    pub link: LinkRecord,
    /// How many sessions of its SSO identity were ended (`None`: no cookie secret is
    /// configured, so the gate keeps no sessions to end).
    pub sessions_ended: Option<usize>,
}

/// `unlink ID`: removes the link found as in [`show`], both directions at once, then ends
/// every session of its SSO identity (they were built on the link, and must not outlive it).
pub async fn unlink(tools: &Tools, id: &str, out: &mut dyn Write) -> Result<Unlinked, AdminError> {
    let link = find(tools, id).await?;
    let removed = tools
        .registry
        .unlink(&link)
        .await
        .map_err(AdminError::store(format!("removing the link of `{id}`")))?;
    if !removed {
        // Changed or removed by someone else between the lookup and now.
        return Err(AdminError::NotFound(id.to_string()));
    }
    writeln!(
        out,
        "unlinked account {} from SSO identity {}",
        who(&link.account),
        who(&link.sso)
    )
    .map_err(AdminError::io("stdout"))?;
    let sso_key = link.sso.key();
    let sessions_ended = match &tools.sessions {
        Some(sessions) => {
            let n = sessions.destroy_all_for(&sso_key).await.map_err(AdminError::store(
                format!("the link was removed, but ending the sessions of {sso_key} failed (they stay valid until they expire)"),
            ))?;
            writeln!(
                out,
                "ended {n} session{} of {sso_key}",
                if n == 1 { "" } else { "s" }
            )
            .map_err(AdminError::io("stdout"))?;
            Some(n)
        }
        None => {
            writeln!(
                out,
                "no sessions ended: the configuration has no session.cookie_secret"
            )
            .map_err(AdminError::io("stdout"))?;
            None
        }
    };
    Ok(Unlinked {
        link,
        sessions_ended,
    })
}

/// `export`: every link as JSON Lines (one [`LinkRecord`] per line), sorted by account key.
/// The output is exactly what [`import`] reads. Returns how many links were written.
pub async fn export(tools: &Tools, out: &mut dyn Write) -> Result<usize, AdminError> {
    let links = all_links(tools).await?;
    for link in &links {
        serde_json::to_writer(&mut *out, link)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .map_err(AdminError::io("the export"))?;
    }
    Ok(links.len())
}

/// What `import` did, line by line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// New links.
    pub created: usize,
    /// Links that already existed exactly (importing twice changes nothing).
    pub unchanged: usize,
    /// Records whose account or SSO identity is linked to someone else: not imported.
    pub conflicts: usize,
    /// Lines that are not a link record: skipped.
    pub invalid: usize,
}

impl ImportReport {
    /// True when every line was imported or already there (exit 0).
    pub fn is_clean(&self) -> bool {
        self.conflicts == 0 && self.invalid == 0
    }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "created {}, unchanged {}, conflicts {}, invalid {}",
            self.created, self.unchanged, self.conflicts, self.invalid
        )
    }
}

/// `import`: reads JSON Lines of [`LinkRecord`] (as [`export`] writes them) and inserts each
/// record, keeping its `created_at`. An existing identical link is left as it is; a record
/// whose account or SSO identity is linked to someone else is a conflict and changes nothing;
/// a line that is not a record is skipped. Each problem is one line on `out` naming its line
/// number; the last line is the summary. Blank lines are ignored.
pub async fn import(
    tools: &Tools,
    input: &mut dyn BufRead,
    input_name: &str,
    out: &mut dyn Write,
) -> Result<ImportReport, AdminError> {
    let mut report = ImportReport::default();
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(AdminError::io(format!("reading {input_name}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = match parse_record(&line) {
            Ok(record) => record,
            Err(reason) => {
                report.invalid += 1;
                writeln!(out, "line {number}: invalid, skipped: {reason}")
                    .map_err(AdminError::io("stdout"))?;
                continue;
            }
        };
        let (account, sso) = (record.account.key(), record.sso.key());
        let outcome = tools.registry.insert(record).await.map_err(|source| {
            // Whatever was done before this line stays done; the operator can re-run the
            // same file once the store answers (done lines then count as unchanged).
            let _ = writeln!(out, "stopped at line {number}: {report} so far");
            AdminError::Store {
                context: format!("importing line {number} of {input_name}"),
                source,
            }
        })?;
        match outcome {
            LinkOutcome::Created(_) => report.created += 1,
            LinkOutcome::AlreadyLinked(_) => report.unchanged += 1,
            LinkOutcome::AccountTaken(existing) => {
                report.conflicts += 1;
                writeln!(
                    out,
                    "line {number}: conflict, not imported: account {account} is already linked to SSO identity {} (record links it to SSO identity {sso})",
                    existing.sso.key()
                )
                .map_err(AdminError::io("stdout"))?;
            }
            LinkOutcome::SsoTaken(existing) => {
                report.conflicts += 1;
                writeln!(
                    out,
                    "line {number}: conflict, not imported: SSO identity {sso} is already linked to account {} (record links it to account {account})",
                    existing.account.key()
                )
                .map_err(AdminError::io("stdout"))?;
            }
        }
    }
    writeln!(out, "{report}").map_err(AdminError::io("stdout"))?;
    Ok(report)
}

// === helpers ===

/// A link record from one line, or why it is not one.
fn parse_record(line: &[u8]) -> Result<LinkRecord, String> {
    let record: LinkRecord = serde_json::from_slice(line).map_err(|e| {
        // serde's own "at line 1 column N" would read as a line of the file: keep the column.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        match e.classify() {
            serde_json::error::Category::Data => format!("not a link record: {message}"),
            _ => format!("not JSON: {message} (column {})", e.column()),
        }
    })?;
    for (side, identity) in [("account", &record.account), ("sso", &record.sso)] {
        if identity.issuer.is_empty() || identity.subject.is_empty() {
            return Err(format!("{side}: issuer and subject must not be empty"));
        }
    }
    Ok(record)
}

/// Every link, sorted by account key.
async fn all_links(tools: &Tools) -> Result<Vec<LinkRecord>, AdminError> {
    let mut links = tools
        .registry
        .list()
        .await
        .map_err(AdminError::store("reading the links"))?;
    links.sort_by_key(|l| l.account.key());
    Ok(links)
}

/// The link with `id` as its account key, else as its SSO key.
async fn find(tools: &Tools, id: &str) -> Result<LinkRecord, AdminError> {
    let context = format!("looking up `{id}`");
    if let Some(link) = tools
        .registry
        .by_account(id)
        .await
        .map_err(AdminError::store(context.clone()))?
    {
        return Ok(link);
    }
    tools
        .registry
        .by_sso(id)
        .await
        .map_err(AdminError::store(context))?
        .ok_or_else(|| AdminError::NotFound(id.to_string()))
}

/// `key (email)`, or just the key.
fn who(identity: &Identity) -> String {
    match &identity.email {
        Some(email) => format!("{} ({email})", identity.key()),
        None => identity.key(),
    }
}

/// A value made safe for one tab-separated field: tabs, line breaks and backslashes escaped.
fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as RFC 3339 (the number itself if out of range).
fn created(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests;
