//! A table of the document, read key by key: typed getters with defaults and bounds
//! (durations, URLs, choices, lists, paths, secrets), and at the end the keys nobody read,
//! each an error with the closest known key suggested.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use url::Url;

use super::node::{Node, Str};
use super::{literal_secret_warning, Ctx};

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
    pub(super) map: &'d DeTable<'i>,
    pub(super) known: Vec<&'static str>,
    /// A free-form table (any key allowed), see [`Table::entries`].
    pub(super) open: bool,
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
pub(super) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
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

// Reading a value as a table lives here, with the table, so that `node` needs nothing
// of `table`.
impl<'d, 'i> Node<'d, 'i> {
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
}
