//! Which language a page is written in: `Accept-Language` (RFC 9110 §12.5.4) among the
//! languages the operator offers (`[pages] languages`), else the configured default
//! (`[pages] language`).
//!
//! Ranges are tried by falling `q` (ties keep the browser's order); a range matches a
//! language exactly, or by its primary subtag (`sv-SE` → `sv`: RFC 4647 lookup, one step);
//! `*` or nothing that matches gives the default; `q=0` means "not this one". The header
//! is read only so far (its first 32 ranges, 1 KiB): it is the client's.

/// How many ranges of `Accept-Language` are considered.
const MAX_RANGES: usize = 32;
/// How much of `Accept-Language` is read.
const MAX_HEADER: usize = 1024;

/// The language to answer in: the position in `offered` (language codes, lower case) of
/// the best match for `accept`, or `None` for the default.
pub fn negotiate(accept: Option<&str>, offered: &[&str]) -> Option<usize> {
    let accept = accept?;
    let accept = match accept.char_indices().nth(MAX_HEADER) {
        Some((cut, _)) => &accept[..cut],
        None => accept,
    };
    let mut ranges: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',').take(MAX_RANGES) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if tag.is_empty() {
            continue;
        }
        let mut q = 1.0_f32;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = match v.trim().parse::<f32>() {
                    Ok(q) if (0.0..=1.0).contains(&q) => q,
                    _ => 0.0,
                };
            }
        }
        if q > 0.0 {
            ranges.push((tag, q));
        }
    }
    // Stable: equal weights keep the order the browser sent.
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (tag, _) in &ranges {
        if tag == "*" {
            return None;
        }
        if let Some(i) = offered.iter().position(|o| o.eq_ignore_ascii_case(tag)) {
            return Some(i);
        }
        let primary = tag.split('-').next().unwrap_or_default();
        if let Some(i) = offered.iter().position(|o| o.eq_ignore_ascii_case(primary)) {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::negotiate;

    const OFFERED: &[&str] = &["en", "sv"];

    #[test]
    fn the_first_language_the_browser_ranks_highest_wins() {
        assert_eq!(negotiate(Some("sv"), OFFERED), Some(1));
        assert_eq!(negotiate(Some("sv-SE,sv;q=0.9,en;q=0.8"), OFFERED), Some(1));
        assert_eq!(negotiate(Some("en-GB,en;q=0.9,sv;q=0.8"), OFFERED), Some(0));
        assert_eq!(negotiate(Some("en;q=0.5, sv;q=0.7"), OFFERED), Some(1));
        assert_eq!(negotiate(Some("de-DE, sv;q=0.3"), OFFERED), Some(1));
        assert_eq!(negotiate(Some("SV-se"), OFFERED), Some(1));
    }

    #[test]
    fn nothing_that_matches_is_the_default() {
        assert_eq!(negotiate(None, OFFERED), None);
        assert_eq!(negotiate(Some(""), OFFERED), None);
        assert_eq!(negotiate(Some("de, fr;q=0.8"), OFFERED), None);
        assert_eq!(negotiate(Some("*"), OFFERED), None);
        assert_eq!(negotiate(Some("de, *;q=0.5, sv;q=0.1"), OFFERED), None);
        // q=0: not acceptable at all.
        assert_eq!(negotiate(Some("sv;q=0, en;q=0"), OFFERED), None);
        assert_eq!(negotiate(Some("sv;q=0, en"), OFFERED), Some(0));
        // Nonsense weights count as q=0.
        assert_eq!(negotiate(Some("sv;q=2, en;q=abc"), OFFERED), None);
        // A language not offered is never chosen, whatever the browser asks.
        assert_eq!(negotiate(Some("sv"), &["en"]), None);
    }

    #[test]
    fn a_huge_header_is_read_only_so_far() {
        let long = format!("{}sv", "xx;q=0.1,".repeat(5000));
        assert_eq!(negotiate(Some(&long), OFFERED), None);
        let many = format!("{}, sv", "de".repeat(2000));
        assert_eq!(negotiate(Some(&many), OFFERED), None);
        assert_eq!(negotiate(Some(&"é".repeat(4000)), OFFERED), None);
    }
}
