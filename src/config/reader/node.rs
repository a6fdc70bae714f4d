//! A value of the document with where it was written: [`Str`] (text and its span) and
//! [`Node`] (any value, read as the type a key expects, or an error at its place).

use std::ops::Range;

use toml::de::DeValue;

use super::Ctx;

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

    pub(super) fn mismatch(&self, ctx: &mut Ctx<'_>, expected: &str) {
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
