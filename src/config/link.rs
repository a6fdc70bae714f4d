//! `[link]`: whether and from when an account must be linked to a Magento.com account.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::reader::{Ctx, Table};

/// `[link]`: the linking rule.
#[derive(Debug, Clone)]
pub struct Link {
    /// How the rule is applied (`mode`, default `enforce`).
    pub mode: LinkMode,
    /// Linking is required from this instant; before it unlinked sessions pass in grace
    /// (`required_from`, RFC 3339, default `2020-04-01T00:00:00Z`).
    pub required_from: OffsetDateTime,
    /// Whether users may disconnect a link themselves (`allow_disconnect`, default true).
    pub allow_disconnect: bool,
}

/// `link.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// `"enforce"`: unlinked sessions are sent to link (the default).
    Enforce,
    /// `"warn"`: unlinked sessions pass with `X-Linkgate-Link-Status: grace`.
    Warn,
    /// `"off"`: linking is never asked.
    Off,
}

impl LinkMode {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Enforce => "enforce",
            LinkMode::Warn => "warn",
            LinkMode::Off => "off",
        }
    }
}

/// 2020-04-01T00:00:00Z, the date from which Magento Commerce Cloud requires the link.
const DEFAULT_REQUIRED_FROM_UNIX: i64 = 1_585_699_200;

/// Default `link.required_from`.
pub fn default_required_from() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(DEFAULT_REQUIRED_FROM_UNIX)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Link {
    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Link {
        let mut link = Link {
            mode: LinkMode::Enforce,
            required_from: default_required_from(),
            allow_disconnect: true,
        };
        let Some(mut t) = t else {
            return link;
        };
        link.mode = t.choice(
            ctx,
            "mode",
            &[LinkMode::Enforce, LinkMode::Warn, LinkMode::Off].map(|v| (v.as_str(), v)),
            LinkMode::Enforce,
        );
        if let Some(node) = t.get("required_from") {
            // A TOML datetime (unquoted) or a string, both RFC 3339 with an offset.
            let text = match node.datetime_text() {
                Some(text) => Some(text),
                None => node.str(ctx).map(|s| s.value),
            };
            if let Some(text) = text {
                match OffsetDateTime::parse(text.trim(), &Rfc3339) {
                    Ok(when) => link.required_from = when,
                    Err(e) => node.error(
                        ctx,
                        format!(
                            "invalid RFC 3339 date-time `{text}`: {e} (example: \"2020-04-01T00:00:00Z\")"
                        ),
                    ),
                }
            }
        }
        link.allow_disconnect = t.bool_or(ctx, "allow_disconnect", true);
        t.finish(ctx);
        link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_first_of_april_2020() {
        let d = default_required_from();
        assert_eq!(
            d.format(&Rfc3339).unwrap(),
            "2020-04-01T00:00:00Z".to_string()
        );
    }
}
