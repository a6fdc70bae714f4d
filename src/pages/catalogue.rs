//! The page texts, one catalogue per language (`src/pages/catalogue/{lang}.toml`, compiled
//! in), and [`Text`]: a text named by its catalogue key, with the values linkgate fills in,
//! rendered in the reader's language only when a page (or a JSON twin) is written.
//!
//! A catalogue is a TOML file of tables of strings; `[account] title = "..."` is the key
//! `account.title`. `{name}` in a text is replaced by a value (escaped on pages); `<strong>`
//! and `</strong>` are the only markup a text may hold, everything else in it is escaped.
//! English is the reference: every shipped catalogue has exactly its keys and, for each
//! key, the same `{names}` (a test holds both). An operator's catalogue
//! (`[pages] catalogue_dir`) may override some texts of a shipped language or bring a new
//! language, which must then have every key; a key it lacks at run time falls back to
//! English.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// The catalogues compiled into linkgate, English first.
pub const SHIPPED: &[(&str, &str)] = &[
    ("en", include_str!("catalogue/en.toml")),
    ("sv", include_str!("catalogue/sv.toml")),
];

/// The English catalogue, for [`Text`]'s `Display` (logs, error messages).
static ENGLISH: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| parse(SHIPPED[0].1).unwrap_or_default());

/// A text of the catalogue, by key, with its values. Language-free until rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The catalogue key (`sign_in.expired`); empty for a [`Text::raw`] text.
    #[serde(rename = "k")]
    key: String,
    /// The values for the text's `{names}`.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<(String, String)>,
}

impl Text {
    /// The text `key` of the catalogue.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            args: Vec::new(),
        }
    }

    /// A text that is the same in every language: a technical detail (a configuration
    /// rule's name, a refused target's reason), shown as is.
    pub fn raw(text: impl Into<String>) -> Self {
        Self {
            key: String::new(),
            args: vec![(String::new(), text.into())],
        }
    }

    /// Fills `{name}` with `value`.
    pub fn arg(mut self, name: &str, value: impl fmt::Display) -> Self {
        self.args.push((name.to_string(), value.to_string()));
        self
    }

    /// The catalogue key (empty for a raw text).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value given for `{name}`, if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The text in plain words from `catalogue` (markup left out), `extra` values filling
    /// what the text's own values do not.
    pub fn plain(
        &self,
        catalogue: &dyn Fn(&str) -> Option<String>,
        extra: &[(&str, &str)],
    ) -> String {
        if self.key.is_empty() {
            return self.value("").unwrap_or_default().to_string();
        }
        let message = catalogue(&self.key).unwrap_or_else(|| self.key.clone());
        let message = message.replace("<strong>", "").replace("</strong>", "");
        fill(&message, &|name| self.lookup(name, extra), &|v| {
            v.to_string()
        })
    }

    /// The text as HTML from `catalogue`: escaped, `<strong>` kept, values escaped.
    pub fn html(
        &self,
        catalogue: &dyn Fn(&str) -> Option<String>,
        extra: &[(&str, &str)],
    ) -> String {
        if self.key.is_empty() {
            return super::escape(self.value("").unwrap_or_default());
        }
        let message = catalogue(&self.key).unwrap_or_else(|| self.key.clone());
        let message = super::escape(&message)
            .replace("&lt;strong&gt;", "<strong>")
            .replace("&lt;/strong&gt;", "</strong>");
        fill(&message, &|name| self.lookup(name, extra), &super::escape)
    }

    fn lookup(&self, name: &str, extra: &[(&str, &str)]) -> Option<String> {
        self.value(name)
            .or_else(|| extra.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
            .map(str::to_string)
    }
}

impl fmt::Display for Text {
    /// English, for logs and `Display`-based messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plain(&|k| ENGLISH.get(k).cloned(), &[]))
    }
}

/// Replaces each `{name}` of `message` with `value(name)` passed through `escape`; a name
/// without a value stays as written (a test keeps the shipped texts from having any).
fn fill(
    message: &str,
    value: &dyn Fn(&str) -> Option<String>,
    escape: &dyn Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(message.len() + 32);
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_name(&after[..close]) => {
                let name = &after[..close];
                match value(name) {
                    Some(v) => out.push_str(&escape(&v)),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The `{names}` a text uses.
pub fn placeholders(message: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_name(&after[..close]) => {
                names.insert(after[..close].to_string());
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    names
}

/// Reads a catalogue: tables of strings, flattened to dotted keys.
pub fn parse(source: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = toml::from_str(source).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(s) => {
                out.insert(path, s.clone());
            }
            toml::Value::Table(t) => flatten(&path, t, out)?,
            other => {
                return Err(format!(
                    "{path}: expected a string, found {}",
                    other.type_str()
                ))
            }
        }
    }
    Ok(())
}

/// The catalogues a deployment speaks: the shipped ones, with an operator's directory
/// (`LANG.toml` files) over them.
#[derive(Debug, Clone)]
pub struct Catalogues {
    /// `(language code, texts)`, English first.
    list: Vec<(String, BTreeMap<String, String>)>,
}

impl Catalogues {
    /// The shipped catalogues, then every `LANG.toml` of `dir`: a shipped language's texts
    /// are overridden key by key (an unknown key is an error: a typo would silently do
    /// nothing); a new language must have every English key.
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut list = Self::shipped().list;
        let Some(dir) = dir else {
            return Ok(Self { list });
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let code = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !is_language_code(&code) {
                return Err(format!(
                    "{}: name the file by its language code (sv.toml, pt-br.toml)",
                    path.display()
                ));
            }
            let source =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let texts = parse(&source).map_err(|e| format!("{}: {e}", path.display()))?;
            let english = list[0].1.clone();
            for (key, text) in &texts {
                let Some(reference) = english.get(key) else {
                    return Err(format!("{}: unknown key `{key}`", path.display()));
                };
                if placeholders(text) != placeholders(reference) {
                    return Err(format!(
                        "{}: `{key}` must use exactly {:?}",
                        path.display(),
                        placeholders(reference)
                    ));
                }
            }
            match list.iter_mut().find(|(c, _)| *c == code) {
                Some((_, shipped)) => shipped.extend(texts),
                None => {
                    if let Some(missing) = english.keys().find(|k| !texts.contains_key(*k)) {
                        return Err(format!(
                            "{}: a new language needs every key; `{missing}` is missing",
                            path.display()
                        ));
                    }
                    list.push((code, texts));
                }
            }
        }
        Ok(Self { list })
    }

    /// The shipped catalogues (they parse: a test holds it).
    pub fn shipped() -> Self {
        let list = SHIPPED
            .iter()
            .map(|(code, source)| (code.to_string(), parse(source).unwrap_or_default()))
            .collect();
        Self { list }
    }

    /// The language codes, English first.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(c, _)| c.as_str())
    }

    /// The position of language `code`.
    pub fn index(&self, code: &str) -> Option<usize> {
        self.list
            .iter()
            .position(|(c, _)| c.eq_ignore_ascii_case(code))
    }

    /// The code of language `lang`.
    pub fn code(&self, lang: usize) -> &str {
        self.list.get(lang).map_or("en", |(c, _)| c.as_str())
    }

    /// The text `key` in language `lang`, else in English.
    pub fn get(&self, lang: usize, key: &str) -> Option<&str> {
        self.list
            .get(lang)
            .and_then(|(_, t)| t.get(key))
            .or_else(|| self.list.first().and_then(|(_, t)| t.get(key)))
            .map(String::as_str)
    }
}

/// A language code as catalogues are named: `sv`, `pt-br`.
pub fn is_language_code(code: &str) -> bool {
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Vec<(&'static str, BTreeMap<String, String>)> {
        SHIPPED
            .iter()
            .map(|(code, source)| (*code, parse(source).expect(code)))
            .collect()
    }

    #[test]
    fn every_shipped_catalogue_has_exactly_the_english_keys_and_names() {
        let all = shipped();
        let english = &all[0].1;
        assert!(english.len() > 100, "{}", english.len());
        for (code, texts) in &all[1..] {
            let missing: Vec<_> = english.keys().filter(|k| !texts.contains_key(*k)).collect();
            let extra: Vec<_> = texts.keys().filter(|k| !english.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{code} lacks {missing:?}");
            assert!(extra.is_empty(), "{code} has keys English lacks: {extra:?}");
            for (key, text) in texts {
                assert_eq!(
                    placeholders(text),
                    placeholders(&english[key]),
                    "{code}: {key} uses other {{names}} than English"
                );
                assert_ne!(text.trim(), "", "{code}: {key} is empty");
            }
        }
    }

    #[test]
    fn markup_is_strong_only() {
        for (code, texts) in shipped() {
            for (key, text) in texts {
                let stripped = text.replace("<strong>", "").replace("</strong>", "");
                assert!(
                    !stripped.contains('<'),
                    "{code}: {key} holds markup: {text}"
                );
            }
        }
    }

    #[test]
    fn every_key_the_code_and_templates_use_exists_in_english() {
        let english = &shipped()[0].1;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Every source file and template under src/, however deep.
        let mut sources = vec![];
        let mut dirs = vec![root.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs" || x == "html") {
                    sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let pattern = regex::Regex::new(r#"(?:Text::new|\bt)\("([a-z_]+\.[a-z_]+)""#).unwrap();
        let mut used = 0;
        for (path, source) in &sources {
            for cap in pattern.captures_iter(source) {
                used += 1;
                assert!(
                    english.contains_key(&cap[1]),
                    "{}: unknown catalogue key {}",
                    path.display(),
                    &cap[1]
                );
            }
        }
        assert!(used > 80, "found only {used} uses");
    }

    #[test]
    fn values_are_escaped_and_strong_is_kept() {
        let en = |k: &str| ENGLISH.get(k).cloned();
        let t = Text::new("page.signed_in_as").arg("who", "<b>eve</b>");
        assert_eq!(
            t.html(&en, &[]),
            "You are signed in as <strong>&lt;b&gt;eve&lt;/b&gt;</strong>."
        );
        assert_eq!(t.to_string(), "You are signed in as <b>eve</b>.");
        let raw = Text::raw("a <b>");
        assert_eq!(raw.html(&en, &[]), "a &lt;b&gt;");
        assert_eq!(
            Text::new("signed_out.what").plain(&en, &[("sso", "Magento.com")]),
            "You are signed out of this site and of Magento.com."
        );
        // A value that looks like a name is not filled twice.
        assert_eq!(
            Text::new("page.site")
                .arg("realm", "{realm}")
                .plain(&en, &[]),
            "{realm} sign-in"
        );
    }

    #[test]
    fn texts_survive_a_round_trip_through_json() {
        let t = Text::new("sign_in.cancelled").arg("provider", "Magento.com");
        let back: Text = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn an_operator_catalogue_overrides_texts_or_brings_a_language() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sv.toml"),
            "[account]\ntitle = \"Kontot\"\n",
        )
        .unwrap();
        let c = Catalogues::load(Some(dir.path())).unwrap();
        assert_eq!(
            c.get(c.index("sv").unwrap(), "account.title"),
            Some("Kontot")
        );
        assert_eq!(
            c.get(c.index("sv").unwrap(), "account.connected"),
            Some("Ansluten")
        );
        std::fs::write(dir.path().join("de.toml"), "[account]\ntitle = \"Konto\"\n").unwrap();
        let err = Catalogues::load(Some(dir.path())).unwrap_err();
        assert!(
            err.contains("de.toml") && err.contains("every key"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("de.toml")).unwrap();
        std::fs::write(dir.path().join("sv.toml"), "[account]\ntitel = \"x\"\n").unwrap();
        let err = Catalogues::load(Some(dir.path())).unwrap_err();
        assert!(err.contains("unknown key `account.titel`"), "{err}");
        std::fs::write(
            dir.path().join("sv.toml"),
            "[account]\nsigned_in_as = \"Inloggad\"\n",
        )
        .unwrap();
        let err = Catalogues::load(Some(dir.path())).unwrap_err();
        assert!(err.contains("account.signed_in_as"), "{err}");
    }
}
