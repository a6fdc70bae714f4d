//! `[log]`: log level and format.

use super::reader::{Ctx, Table};

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A tracing `EnvFilter` directive (`level`, default `info`), e.g. `"info,linkgate=debug"`.
    pub level: String,
    /// Output format (`format`, default `text`).
    pub format: LogFormat,
}

/// Another name for [`Log`], for code that reads better with it.
pub type LogConfig = Log;

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `"text"`: human-readable lines (the default).
    Text,
    /// `"json"`: one JSON object per line.
    Json,
}

impl LogFormat {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Log {
    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Log {
        let mut log = Log::default();
        let Some(mut t) = t else {
            return log;
        };
        if let Some(s) = t.nonempty(ctx, "level") {
            log.level = s.value.trim().to_string();
        }
        log.format = t.choice(
            ctx,
            "format",
            &[LogFormat::Text, LogFormat::Json].map(|v| (v.as_str(), v)),
            LogFormat::Text,
        );
        t.finish(ctx);
        log
    }
}
