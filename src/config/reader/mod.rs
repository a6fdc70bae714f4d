//! Reading the parsed TOML document into values, with a position for every problem.
//!
//! This module owns the mechanics every section shares: walking tables while remembering
//! which keys are allowed (so unknown keys are reported with the list of allowed ones),
//! `${ENV_VAR}` interpolation in strings, `*_file` secrets, durations, URLs, lists, and the
//! error and warning sinks with `file:line:col` positions. Section modules describe *what* a
//! section contains; this one knows *how* to read it. It never aborts on the first problem:
//! a getter that fails records an error and returns `None`, and reading goes on.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{one_line, ConfigError, LineIndex};
pub(crate) use node::{Node, Str};
#[cfg(test)]
use table::closest;
pub(crate) use table::{parse_url, ListForm, Table};

mod node;
mod table;

/// Looks up an environment variable (`std::env::var` in production, a map in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The warning given for a secret written literally in the file.
pub(super) fn literal_secret_warning(file_key: &str) -> String {
    format!("literal secret in the config file; prefer ${{ENV_VAR}} or {file_key}")
}

// === Ctx ===

/// Everything a getter needs besides the value: where relative paths start, the
/// environment, and the error and warning sinks.
pub(crate) struct Ctx<'a> {
    pub(crate) file: String,
    pub(crate) base_dir: PathBuf,
    lines: LineIndex<'a>,
    env: Env<'a>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(text: &'a str, file: &str, env: Env<'a>) -> Self {
        let base_dir = Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ctx {
            file: file.to_string(),
            base_dir,
            lines: LineIndex::new(text),
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn located(&self, span: &Range<usize>, key: &str, reason: String) -> ConfigError {
        let (line, col) = self.lines.position(span.start);
        ConfigError {
            file: self.file.clone(),
            line,
            col,
            key: if key.is_empty() {
                "(document)".to_string()
            } else {
                key.to_string()
            },
            reason: one_line(&reason),
        }
    }

    /// Records an error at the start of `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, key: &str, reason: impl Into<String>) {
        let e = self.located(span, key, reason.into());
        self.errors.push(e);
    }

    /// Records a warning at the start of `span`.
    pub(crate) fn warn(&mut self, span: &Range<usize>, key: &str, reason: impl Into<String>) {
        let w = self.located(span, key, reason.into());
        self.warnings.push(w);
    }

    /// Resolves a path from the file: relative paths are relative to the config file's
    /// directory, so the file means the same thing whatever the working directory.
    pub(crate) fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() || self.base_dir.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Records every TOML syntax error, naming the key it is in as well as the text allows.
    pub(crate) fn syntax_errors(&mut self, errors: &[toml::de::Error]) {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let (line, _) = self.lines.position(span.start);
            let key = syntax_error_key(&self.lines, line - 1);
            let message = match e.message().strip_suffix(", expected nothing") {
                // toml's phrase for text after a value, typically an unquoted string.
                Some(m) => format!("{m}: unexpected text after the value (are quotes missing?)"),
                None => e.message().to_string(),
            };
            self.error(&span, &key, format!("invalid TOML: {message}"));
        }
    }

    /// Expands `${VAR}` (and `$${` as a literal `${`) in a string value.
    ///
    /// Returns the expanded text and whether any variable was used, or one reason per
    /// problem (each missing variable is its own error).
    pub(crate) fn interpolate(&self, raw: &str) -> Result<(String, bool), Vec<String>> {
        interpolate(raw, self.env)
    }
}

/// Expands `${VAR}` references; `$${` is a literal `${`.
pub(crate) fn interpolate(raw: &str, env: Env<'_>) -> Result<(String, bool), Vec<String>> {
    let mut out = String::with_capacity(raw.len());
    let mut used_env = false;
    let mut problems = Vec::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                problems.push("unterminated `${` (write `$${` for a literal `${`)".to_string());
                rest = "";
                break;
            };
            let name = &after[..end];
            if !is_env_name(name) {
                problems.push(format!(
                    "invalid environment variable name `{name}` in `${{...}}` (letters, digits and _; write `$${{` for a literal `${{`)"
                ));
            } else {
                used_env = true;
                match (env)(name) {
                    Some(v) => out.push_str(&v),
                    None => problems.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok((out, used_env))
    } else {
        Err(problems)
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Best-effort key path for a syntax error on a 0-based line: the table header in force
/// (with the array index for `[[tables]]`) and the key being assigned.
fn syntax_error_key(lines: &LineIndex<'_>, line0: usize) -> String {
    let mut header = String::new();
    let mut header_line = None;
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for l in 0..=line0 {
        if let Some((name, is_array)) = parse_header(lines.line_text(l)) {
            header_line = Some(l);
            header = if is_array {
                let n = match array_counts.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        array_counts.push((name.clone(), 0));
                        0
                    }
                };
                format!("{name}[{n}]")
            } else {
                // A sub-table of the latest array element belongs to that element.
                match array_counts
                    .iter()
                    .find(|(k, _)| name.starts_with(&format!("{k}.")))
                {
                    Some((k, n)) => format!("{k}[{n}]{}", &name[k.len()..]),
                    None => name,
                }
            };
        }
    }
    if header_line == Some(line0) {
        return header;
    }
    let stop = header_line.map(|h| h + 1).unwrap_or(0);
    let mut key = None;
    for l in (stop..=line0).rev() {
        if let Some(k) = assigned_key(lines.line_text(l)) {
            key = Some(k);
            break;
        }
    }
    match (header.is_empty(), key) {
        (true, Some(k)) => k,
        (false, Some(k)) => format!("{header}.{k}"),
        (_, None) => header,
    }
}

fn parse_header(line: &str) -> Option<(String, bool)> {
    let t = line.trim_start();
    let (inner, is_array) = if let Some(r) = t.strip_prefix("[[") {
        (r.split("]]").next().unwrap_or(r), true)
    } else if let Some(r) = t.strip_prefix('[') {
        (r.split(']').next().unwrap_or(r), false)
    } else {
        return None;
    };
    let name: String = inner
        .split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".");
    Some((name, is_array))
}

fn assigned_key(line: &str) -> Option<String> {
    let t = line.trim_start();
    let eq = t.find('=')?;
    let key = t[..eq].trim();
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    ok.then(|| {
        key.split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
            .collect::<Vec<_>>()
            .join(".")
    })
}

// === Str ===

// === Node ===

// === Table ===

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "PORT" => Some("6379".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolates_several_variables_and_escapes() {
        assert_eq!(
            interpolate("redis://${HOST}:${PORT}/0", &env),
            Ok(("redis://db.internal:6379/0".to_string(), true))
        );
        assert_eq!(
            interpolate("cost $5 and $${HOST} and $$", &env),
            Ok(("cost $5 and ${HOST} and $$".to_string(), false))
        );
        assert_eq!(interpolate("${EMPTY}", &env), Ok((String::new(), true)));
    }

    #[test]
    fn interpolation_reports_each_missing_variable() {
        assert_eq!(
            interpolate("${NOPE}-${HOST}-${ALSO_NOPE}", &env),
            Err(vec![
                "environment variable NOPE is not set".to_string(),
                "environment variable ALSO_NOPE is not set".to_string(),
            ])
        );
        let unterminated = interpolate("x${HOST", &env).unwrap_err();
        assert!(unterminated[0].contains("unterminated"), "{unterminated:?}");
        let bad = interpolate("${1X}", &env).unwrap_err();
        assert!(
            bad[0].contains("invalid environment variable name `1X`"),
            "{bad:?}"
        );
    }

    #[test]
    fn syntax_error_keys_follow_headers_and_array_tables() {
        let text = "top = 1\n[server]\nlisten = 0.0.0.0:4180\n[[upstreams]]\nname = \"a\"\n[[upstreams]]\nurl = nope\n[server.tls]\ncert = \n[\"quoted\".x\n";
        let idx = LineIndex::new(text);
        assert_eq!(syntax_error_key(&idx, 0), "top");
        assert_eq!(syntax_error_key(&idx, 2), "server.listen");
        assert_eq!(syntax_error_key(&idx, 6), "upstreams[1].url");
        assert_eq!(syntax_error_key(&idx, 8), "server.tls.cert");
        assert_eq!(syntax_error_key(&idx, 9), "quoted.x");
    }

    #[test]
    fn suggests_close_keys() {
        assert_eq!(
            closest("lisen", &["listen", "admin_listen"]),
            Some("listen")
        );
        assert_eq!(closest("zzzzzz", &["listen"]), None);
    }
}
