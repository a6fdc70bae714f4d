//! Configuration errors: one line each, `file:line:col: key.path: reason`.
//!
//! `linkgate check` prints these lines as they are, so every reason is a single line and
//! never contains a secret value.

use std::fmt;

/// One problem in the configuration file, located at a line and column.
///
/// Displays as exactly one line: `file:line:col: key.path: reason` (line and column are
/// 1-based; the column counts characters). Array elements are named with 0-based indices, as
/// in `upstreams[1].url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {key}: {reason}")]
pub struct ConfigError {
    /// The configuration file as named to `Config::load` / `Config::parse`.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Dotted key path, e.g. `session.cookie_secret` or `upstreams[1].url`.
    pub key: String,
    /// What is wrong, on one line.
    pub reason: String,
}

/// Every error found in one pass over the configuration, in file order.
///
/// Displays as one `ConfigError` line per error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors {
    /// The errors, sorted by position.
    pub errors: Vec<ConfigError>,
    /// Warnings found before the errors stopped the load (same one-line form).
    pub warnings: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Squeezes a possibly multi-line message from a library into one line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Maps byte offsets of the file to 1-based (line, column) pairs.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        (line + 1, col + 1)
    }

    /// The text of a 0-based line, without its newline.
    pub(crate) fn line_text(&self, line0: usize) -> &'a str {
        let start = self
            .line_starts
            .get(line0)
            .copied()
            .unwrap_or(self.text.len());
        let end = self
            .line_starts
            .get(line0 + 1)
            .map(|e| e.saturating_sub(1))
            .unwrap_or(self.text.len());
        self.text.get(start..end.max(start)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let idx = LineIndex::new("a = 1\nbé = \"x\"\n");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(4), (1, 5));
        assert_eq!(idx.position(6), (2, 1));
        // 'é' is two bytes, one column.
        assert_eq!(idx.position(9), (2, 3));
        assert_eq!(idx.line_text(1), "bé = \"x\"");
    }

    #[test]
    fn error_displays_on_one_line() {
        let e = ConfigError {
            file: "c.toml".into(),
            line: 3,
            col: 7,
            key: "session.ttl".into(),
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "c.toml:3:7: session.ttl: bad");
        assert_eq!(
            one_line("regex parse error:\n   (\n   ^\nerror: x"),
            "regex parse error:; (; ^; error: x"
        );
    }
}
