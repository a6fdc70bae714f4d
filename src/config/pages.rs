//! `[pages]`: operator customisation of the HTML pages.

use std::path::PathBuf;

use super::reader::{Ctx, Table};

/// `[pages]`: templates and branding.
#[derive(Debug, Clone, Default)]
pub struct Pages {
    /// Directory whose templates override the built-in ones (`templates_dir`; must exist).
    pub templates_dir: Option<PathBuf>,
    /// Logo URL or path shown on the pages (`logo`).
    pub logo: Option<String>,
    /// Short text shown at the top of every page (`banner`).
    pub banner: Option<String>,
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
        t.finish(ctx);
        pages
    }
}
