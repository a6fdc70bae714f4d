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
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use url::Url;

use super::error::{one_line, ConfigError, LineIndex};

/// Looks up an environment variable (`std::env::var` in production, a map in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The warning given for a secret written literally in the file.
fn literal_secret_warning(file_key: &str) -> String {
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

/// A string value after interpolation, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Str {
    /// The expanded text.
    pub(crate) value: String,
    /// Byte span of the value in the file.
    pub(crate) span: Range<usize>,
    /// Dotted key path of the value.
    pub(crate) path: String,
    /// True when the text was written in the file as is (no `${VAR}`, no `*_file`).
    pub(crate) literal: bool,
}

impl Str {
    /// Records an error at this value.
    pub(crate) fn error(&self, ctx: &mut Ctx<'_>, reason: impl Into<String>) {
        ctx.error(&self.span, &self.path, reason);
    }
}

// === Node ===

/// One value of the document with its key path and spans.
#[derive(Clone)]
pub(crate) struct Node<'d, 'i> {
    pub(crate) path: String,
    pub(crate) key_span: Range<usize>,
    pub(crate) span: Range<usize>,
    pub(crate) value: &'d DeValue<'i>,
}

impl<'d, 'i> Node<'d, 'i> {
    /// Records an error at this value.
    pub(crate) fn error(&self, ctx: &mut Ctx<'_>, reason: impl Into<String>) {
        ctx.error(&self.span, &self.path, reason);
    }

    fn mismatch(&self, ctx: &mut Ctx<'_>, expected: &str) {
        self.error(
            ctx,
            format!("expected {expected}, found {}", self.value.type_str()),
        );
    }

    /// The value as a string, with `${VAR}` expanded.
    pub(crate) fn str(&self, ctx: &mut Ctx<'_>) -> Option<Str> {
        let DeValue::String(raw) = self.value else {
            self.mismatch(ctx, "a string");
            return None;
        };
        match ctx.interpolate(raw) {
            Ok((value, used_env)) => Some(Str {
                value,
                span: self.span.clone(),
                path: self.path.clone(),
                literal: !used_env,
            }),
            Err(problems) => {
                for p in problems {
                    self.error(ctx, p);
                }
                None
            }
        }
    }

    /// A boolean, or a string `"true"` / `"false"` (so it can come from `${VAR}`).
    pub(crate) fn bool(&self, ctx: &mut Ctx<'_>) -> Option<bool> {
        match self.value {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(_) => {
                let s = self.str(ctx)?;
                match s.value.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    other => {
                        self.error(ctx, format!("expected true or false, found `{other}`"));
                        None
                    }
                }
            }
            _ => {
                self.mismatch(ctx, "a boolean");
                None
            }
        }
    }

    /// An integer, or a string of digits (so it can come from `${VAR}`).
    pub(crate) fn int(&self, ctx: &mut Ctx<'_>) -> Option<i64> {
        match self.value {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(ctx, "integer out of range");
                    None
                }
            },
            DeValue::String(_) => {
                let s = self.str(ctx)?;
                match s.value.trim().parse::<i64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.error(ctx, format!("expected an integer, found `{}`", s.value));
                        None
                    }
                }
            }
            _ => {
                self.mismatch(ctx, "an integer");
                None
            }
        }
    }

    /// A table, to read with its own allowed keys.
    pub(crate) fn table(&self, ctx: &mut Ctx<'_>) -> Option<Table<'d, 'i>> {
        match self.value {
            DeValue::Table(map) => Some(Table {
                path: self.path.clone(),
                span: self.span.clone(),
                map,
                known: Vec::new(),
                open: false,
            }),
            _ => {
                self.mismatch(ctx, "a table");
                None
            }
        }
    }

    /// The elements of an array, each named `path[i]`.
    pub(crate) fn array(&self, ctx: &mut Ctx<'_>) -> Option<Vec<Node<'d, 'i>>> {
        match self.value {
            DeValue::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Node {
                        path: format!("{}[{i}]", self.path),
                        key_span: v.span(),
                        span: v.span(),
                        value: v.get_ref(),
                    })
                    .collect(),
            ),
            _ => {
                self.mismatch(ctx, "an array");
                None
            }
        }
    }

    /// The text of a TOML datetime value (for keys that also accept a string).
    pub(crate) fn datetime_text(&self) -> Option<String> {
        self.value.as_datetime().map(|d| d.to_string())
    }
}

// === Table ===

/// How a list key may be written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListForm {
    /// Only a TOML array of strings.
    Array,
    /// An array, or a single string meaning a one-element list.
    ArrayOrOne,
    /// An array, or one string split at commas and whitespace.
    ArrayOrSplit,
}

/// A table being read. Every getter records its key as allowed; [`Table::finish`] reports
/// the keys nobody asked for as unknown.
pub(crate) struct Table<'d, 'i> {
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
    map: &'d DeTable<'i>,
    known: Vec<&'static str>,
    /// A free-form table (any key allowed), see [`Table::entries`].
    open: bool,
}

impl<'d, 'i> Table<'d, 'i> {
    /// The document's root table.
    pub(crate) fn root(doc: &'d Spanned<DeTable<'i>>) -> Self {
        Table {
            path: String::new(),
            span: 0..0,
            map: doc.get_ref(),
            known: Vec::new(),
            open: false,
        }
    }

    /// The dotted path of a key of this table.
    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn entry(
        &self,
        key: &str,
    ) -> Option<(
        &'d Spanned<toml::de::DeString<'i>>,
        &'d Spanned<DeValue<'i>>,
    )> {
        self.map.iter().find(|(k, _)| k.get_ref().as_ref() == key)
    }

    /// The value of `key`, if present; marks the key as allowed.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<Node<'d, 'i>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let (k, v) = self.entry(key)?;
        Some(Node {
            path: self.key_path(key),
            key_span: k.span(),
            span: v.span(),
            value: v.get_ref(),
        })
    }

    /// Every entry of a free-form table (such as `extra_auth_params`), whose keys are data;
    /// the table then reports no unknown key.
    pub(crate) fn entries(&mut self) -> Vec<(String, Node<'d, 'i>)> {
        self.open = true;
        self.map
            .iter()
            .map(|(k, v)| {
                let key: &str = k.get_ref().as_ref();
                (
                    key.to_string(),
                    Node {
                        path: self.key_path(key),
                        key_span: k.span(),
                        span: v.span(),
                        value: v.get_ref(),
                    },
                )
            })
            .collect()
    }

    /// Records an error "missing required key" for `key`, at the table's header.
    pub(crate) fn missing(&self, ctx: &mut Ctx<'_>, key: &str, reason: &str) {
        ctx.error(&self.span, &self.key_path(key), reason);
    }

    /// Reports every key that no getter asked for.
    pub(crate) fn finish(self, ctx: &mut Ctx<'_>) {
        if self.open {
            return;
        }
        for (k, _) in self.map.iter() {
            let name: &str = k.get_ref().as_ref();
            if self.known.contains(&name) {
                continue;
            }
            let mut reason = String::from("unknown key");
            if let Some(s) = closest(name, &self.known) {
                reason.push_str(&format!(" (did you mean `{s}`?)"));
            }
            reason.push_str("; allowed keys: ");
            reason.push_str(&self.known.join(", "));
            ctx.error(&k.span(), &self.key_path(name), reason);
        }
    }

    // --- typed getters: each records its own errors and returns None on a bad value ---

    /// A string (interpolated).
    pub(crate) fn string(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Str> {
        self.get(key)?.str(ctx)
    }

    /// A string that must not be empty (after trimming).
    pub(crate) fn nonempty(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Str> {
        let s = self.string(ctx, key)?;
        if s.value.trim().is_empty() {
            s.error(ctx, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A string that must not be empty, or `default`.
    pub(crate) fn string_or(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        default: &str,
    ) -> String {
        self.nonempty(ctx, key)
            .map(|s| s.value)
            .unwrap_or_else(|| default.to_string())
    }

    /// A boolean, or `default`.
    pub(crate) fn bool_or(&mut self, ctx: &mut Ctx<'_>, key: &'static str, default: bool) -> bool {
        self.get(key).and_then(|n| n.bool(ctx)).unwrap_or(default)
    }

    /// An integer within `min..=max`.
    pub(crate) fn int_in(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let node = self.get(key)?;
        let n = node.int(ctx)?;
        if n < min || n > max {
            node.error(ctx, format!("must be between {min} and {max}, got {n}"));
            return None;
        }
        Some(n)
    }

    /// A sub-table.
    pub(crate) fn table(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Table<'d, 'i>> {
        self.get(key)?.table(ctx)
    }

    /// A duration string such as `"8h"`, or `default`. Zero is an error unless `zero_ok`.
    pub(crate) fn duration(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(node) = self.get(key) else {
            return default;
        };
        if !matches!(node.value, DeValue::String(_)) {
            node.error(
                ctx,
                format!(
                    "expected a duration string such as \"30s\" or \"8h\", found {}",
                    node.value.type_str()
                ),
            );
            return default;
        }
        let Some(s) = node.str(ctx) else {
            return default;
        };
        match humantime::parse_duration(s.value.trim()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                s.error(ctx, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                s.error(
                    ctx,
                    format!(
                        "invalid duration `{}`: {e} (examples: \"500ms\", \"30s\", \"8h\")",
                        s.value
                    ),
                );
                default
            }
        }
    }

    /// A URL whose scheme is one of `schemes`.
    pub(crate) fn url(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        schemes: &[&str],
    ) -> Option<Url> {
        let s = self.nonempty(ctx, key)?;
        parse_url(ctx, &s, schemes)
    }

    /// One of a fixed set of words, or `default`.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        self.choice_opt(ctx, key, options).unwrap_or(default)
    }

    /// One of a fixed set of words, if present and valid.
    pub(crate) fn choice_opt<T: Copy>(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(ctx, key)?;
        let wanted = s.value.trim();
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == wanted) {
            return Some(*v);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        s.error(
            ctx,
            format!(
                "unknown value `{wanted}`; expected one of {}",
                names.join(", ")
            ),
        );
        None
    }

    /// A list of strings. Array elements are named `key[i]`.
    pub(crate) fn string_list(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        form: ListForm,
    ) -> Option<Vec<Str>> {
        let node = self.get(key)?;
        match node.value {
            DeValue::Array(_) => {
                let items = node.array(ctx)?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(s) = item.str(ctx) {
                        out.push(s);
                    }
                }
                Some(out)
            }
            DeValue::String(_) if form != ListForm::Array => {
                let s = node.str(ctx)?;
                if form == ListForm::ArrayOrOne {
                    return Some(vec![s]);
                }
                Some(
                    s.value
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|p| !p.is_empty())
                        .map(|p| Str {
                            value: p.to_string(),
                            ..s.clone()
                        })
                        .collect(),
                )
            }
            _ => {
                let expected = match form {
                    ListForm::Array => "an array of strings",
                    ListForm::ArrayOrOne => "a string or an array of strings",
                    ListForm::ArrayOrSplit => "an array of strings or a comma-separated string",
                };
                node.mismatch(ctx, expected);
                None
            }
        }
    }

    /// A file-system path, resolved against the config file's directory.
    pub(crate) fn path(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<(PathBuf, Str)> {
        let s = self.nonempty(ctx, key)?;
        Some((ctx.resolve_path(&s.value), s))
    }

    /// A secret given either as `key` (literal or `${VAR}`) or as `file_key` (a file whose
    /// content, minus trailing whitespace, is the secret). Setting both is an error; a
    /// literal secret is a warning.
    pub(crate) fn secret(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        file_key: &'static str,
    ) -> Option<Str> {
        let value = self.get(key);
        let file = self.get(file_key);
        match (value, file) {
            (Some(_), Some(f)) => {
                ctx.error(
                    &f.key_span,
                    &f.path,
                    format!("set either `{key}` or `{file_key}`, not both"),
                );
                None
            }
            (Some(v), None) => {
                let s = v.str(ctx)?;
                if s.value.trim().is_empty() {
                    s.error(ctx, "must not be empty");
                    return None;
                }
                if s.literal {
                    ctx.warn(&s.span, &s.path, literal_secret_warning(file_key));
                }
                Some(s)
            }
            (None, Some(f)) => {
                let p = f.str(ctx)?;
                if p.value.trim().is_empty() {
                    p.error(ctx, "must not be empty");
                    return None;
                }
                let path = ctx.resolve_path(&p.value);
                match std::fs::read_to_string(&path) {
                    Ok(content) => {
                        let trimmed = content.trim_end();
                        if trimmed.is_empty() {
                            p.error(ctx, format!("secret file `{}` is empty", path.display()));
                            return None;
                        }
                        Some(Str {
                            value: trimmed.to_string(),
                            literal: false,
                            ..p
                        })
                    }
                    Err(e) => {
                        p.error(
                            ctx,
                            format!("cannot read secret file `{}`: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

/// Parses a URL and checks its scheme (no fragment allowed).
pub(crate) fn parse_url(ctx: &mut Ctx<'_>, s: &Str, schemes: &[&str]) -> Option<Url> {
    let url = match Url::parse(s.value.trim()) {
        Ok(u) => u,
        Err(e) => {
            s.error(ctx, format!("invalid URL: {e}"));
            return None;
        }
    };
    if !schemes.contains(&url.scheme()) {
        s.error(
            ctx,
            format!(
                "URL scheme must be {}, got `{}`",
                schemes.join(" or "),
                url.scheme()
            ),
        );
        return None;
    }
    if url.fragment().is_some() {
        s.error(ctx, "URL must not have a #fragment");
        return None;
    }
    if matches!(url.scheme(), "http" | "https") && url.host_str().is_none_or(str::is_empty) {
        s.error(ctx, "URL has no host");
        return None;
    }
    Some(url)
}

/// The allowed key closest to a misspelt one, if it is close.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

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
