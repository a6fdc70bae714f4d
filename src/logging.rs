//! Log setup: `tracing` with text or JSON lines on stderr, level from `[log] level` unless
//! `RUST_LOG` overrides it. The access line (src/proxy/access.rs) is written in the same
//! format without going through the subscriber, so it needs to know that format.

use std::sync::OnceLock;

use tracing_subscriber::fmt::format::{DefaultFields, Format};
use tracing_subscriber::fmt::SubscriberBuilder;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// How the installed subscriber writes lines: what the access line must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessFormat {
    /// `[log] format = "json"`.
    pub json: bool,
    /// Text with ANSI colours (tracing-subscriber's default unless `NO_COLOR` is set).
    pub ansi: bool,
}

static ACCESS: OnceLock<AccessFormat> = OnceLock::new();

/// The format of the subscriber [`init`] installed, or `None` when it installed none (another
/// subscriber was there first: then the access line goes through `tracing`).
pub fn access_format() -> Option<AccessFormat> {
    ACCESS.get().copied()
}

/// tracing-subscriber's builder as linkgate sets it up (the writer aside).
pub(crate) fn builder(
    filter: EnvFilter,
    ansi: bool,
) -> SubscriberBuilder<DefaultFields, Format, EnvFilter> {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tracing-subscriber's own default, made explicit so the access line can follow it.
    let ansi = std::env::var("NO_COLOR").map_or(true, |v| v.is_empty());
    let builder = builder(filter, ansi).with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        let _ = ACCESS.set(AccessFormat {
            json: log.format == LogFormat::Json,
            ansi: ansi && log.format == LogFormat::Text,
        });
    }
}
