//! `[pages]`: operator customisation of the HTML pages.

use std::path::PathBuf;

use super::reader::{Ctx, ListForm, Table};
use crate::pages::catalogue::Catalogues;

/// `[pages]`: templates, branding and language.
#[derive(Debug, Clone)]
pub struct Pages {
    /// Directory whose templates override the built-in ones (`templates_dir`; must exist).
    pub templates_dir: Option<PathBuf>,
    /// Logo URL or path shown on the pages (`logo`).
    pub logo: Option<String>,
    /// Short text shown at the top of every page (`banner`).
    pub banner: Option<String>,
    /// The language of a page when `Accept-Language` names none of `languages`
    /// (`language`, default `"en"`).
    pub language: String,
    /// The languages `Accept-Language` may choose (`languages`; empty, the default: every
    /// catalogue).
    /// `["sv"]` with `language = "sv"` fixes the language.
    pub languages: Vec<String>,
    /// Directory of `LANG.toml` catalogues over the shipped ones (`catalogue_dir`).
    pub catalogue_dir: Option<PathBuf>,
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            templates_dir: None,
            logo: None,
            banner: None,
            language: "en".to_string(),
            languages: Vec::new(),
            catalogue_dir: None,
        }
    }
}

impl Pages {
    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Pages {
        let mut pages = Pages::default();
        let Some(mut t) = t else {
            return pages;
        };
        if let Some((dir, s)) = t.path(ctx, "templates_dir") {
            if dir.is_dir() {
                pages.templates_dir = Some(dir);
            } else {
                s.error(
                    ctx,
                    format!("`{}` is not an existing directory", dir.display()),
                );
            }
        }
        pages.logo = t.nonempty(ctx, "logo").map(|s| s.value);
        pages.banner = t.nonempty(ctx, "banner").map(|s| s.value);
        // The languages there are: the shipped catalogues and the operator's.
        let mut catalogues = Catalogues::load(None).ok();
        if let Some((dir, s)) = t.path(ctx, "catalogue_dir") {
            if !dir.is_dir() {
                s.error(
                    ctx,
                    format!("`{}` is not an existing directory", dir.display()),
                );
            } else {
                match Catalogues::load(Some(&dir)) {
                    Ok(c) => catalogues = Some(c),
                    Err(e) => s.error(ctx, e),
                }
                pages.catalogue_dir = Some(dir);
            }
        }
        let known: Vec<String> = catalogues
            .as_ref()
            .map(|c| c.codes().map(str::to_string).collect())
            .unwrap_or_default();
        let check = |ctx: &mut Ctx<'_>, s: &super::reader::Str| -> Option<String> {
            let code = s.value.trim().to_ascii_lowercase();
            if known.contains(&code) {
                return Some(code);
            }
            let names: Vec<String> = known.iter().map(|c| format!("\"{c}\"")).collect();
            s.error(
                ctx,
                format!(
                    "unknown language `{}`; expected one of {} (or add its catalogue in catalogue_dir)",
                    s.value,
                    names.join(", ")
                ),
            );
            None
        };
        let language = t.nonempty(ctx, "language");
        if let Some(s) = &language {
            if let Some(code) = check(ctx, s) {
                pages.language = code;
            }
        }
        if let Some(list) = t.string_list(ctx, "languages", ListForm::Array) {
            for s in &list {
                if let Some(code) = check(ctx, s) {
                    if !pages.languages.contains(&code) {
                        pages.languages.push(code);
                    }
                }
            }
            if !pages.languages.is_empty() && !pages.languages.contains(&pages.language) {
                list[0].error(
                    ctx,
                    format!(
                        "must include the default language `{}` (pages.language)",
                        pages.language
                    ),
                );
            }
        }
        t.finish(ctx);
        pages
    }
}
