//! What the cache reads from response fields beyond `http-cache-semantics`:
//! the RFC 5861 extensions `stale-while-revalidate` and `stale-if-error`
//! (that crate implements RFC 9111 only), and the purge tags a content
//! provider attaches (`Cache-Tag`, as Cloudflare names it; `Surrogate-Key`,
//! as Fastly and Varnish's xkey do).

use std::time::Duration;

/// The RFC 5861 windows of one response, zero when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleWindows {
    pub while_revalidate: Duration,
    pub if_error: Duration,
}

/// The most a stale window may be: a year, as RFC 9111 §1.2.2 caps delta-seconds use.
const MAX_WINDOW: u64 = 365 * 24 * 3600;

/// Reads both windows from every `Cache-Control` field value given.
pub fn stale_windows<'a>(cache_control: impl IntoIterator<Item = &'a str>) -> StaleWindows {
    let mut w = StaleWindows::default();
    for value in cache_control {
        for directive in value.split(',') {
            let Some((name, arg)) = directive.split_once('=') else { continue };
            let arg = arg.trim().trim_matches('"');
            let Ok(secs) = arg.parse::<u64>() else { continue };
            let secs = Duration::from_secs(secs.min(MAX_WINDOW));
            match name.trim().to_ascii_lowercase().as_str() {
                "stale-while-revalidate" => w.while_revalidate = secs,
                "stale-if-error" => w.if_error = secs,
                _ => {}
            }
        }
    }
    w
}

/// The most tags one object keeps, and the longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 128;

/// Tags from `Cache-Tag` (comma-separated) and `Surrogate-Key` (space-separated) values.
pub fn tags<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for t in v.split([',', ' ', '\t']).filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN) {
            if out.len() == MAX_TAGS {
                return out;
            }
            if !out.iter().any(|o| o == t) {
                out.push(t.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5861 §3 and §4's examples.
    #[test]
    fn rfc5861_examples() {
        let w = stale_windows(["max-age=600, stale-while-revalidate=30"]);
        assert_eq!(w.while_revalidate, Duration::from_secs(30));
        assert_eq!(w.if_error, Duration::ZERO);
        let w = stale_windows(["max-age=600, stale-if-error=1200"]);
        assert_eq!(w.if_error, Duration::from_secs(1200));
    }

    #[test]
    fn several_fields_case_and_quotes() {
        let w = stale_windows(["max-age=1", "Stale-While-Revalidate=\"5\", STALE-IF-ERROR=7"]);
        assert_eq!(w, StaleWindows { while_revalidate: Duration::from_secs(5), if_error: Duration::from_secs(7) });
    }

    #[test]
    fn bad_arguments_are_ignored() {
        let w = stale_windows(["stale-while-revalidate=-1, stale-if-error=abc, stale-if-error, =5"]);
        assert_eq!(w, StaleWindows::default());
        let w = stale_windows(["stale-if-error=99999999999999999999999"]);
        assert_eq!(w.if_error, Duration::ZERO, "out of u64: ignored");
        let w = stale_windows(["stale-if-error=9999999999"]);
        assert_eq!(w.if_error, Duration::from_secs(MAX_WINDOW));
    }

    #[test]
    fn tags_from_both_fields_deduplicated_and_bounded() {
        assert_eq!(tags(["a,b", "b c  d"]), ["a", "b", "c", "d"]);
        let many = (0..100).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(tags([many.as_str()]).len(), MAX_TAGS);
        let long = "x".repeat(MAX_TAG_LEN + 1);
        assert!(tags([long.as_str()]).is_empty());
    }
}
