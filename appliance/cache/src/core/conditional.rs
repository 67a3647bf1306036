//! Conditional requests a cache answers itself from a stored variant
//! (RFC 9110 §13): `If-None-Match` / `If-Modified-Since` → 304, and
//! `If-Range`, which decides whether a `Range` is honoured.

use http::HeaderMap;
use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED};
use std::time::SystemTime;

/// RFC 9110 §13.2.2 steps 3–4 for GET/HEAD: true when the client's copy is
/// current and a 304 answers it.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else { return false };
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || weak_eq(tag.trim(), etag));
    }
    match (date(request, IF_MODIFIED_SINCE), date(stored, LAST_MODIFIED)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// RFC 9110 §13.1.5: whether a `Range` applies to the stored representation.
/// No `If-Range`: yes. An entity-tag: only a strong match. A date: only the
/// exact `Last-Modified`.
pub fn range_applies(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(cond) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return request.get(IF_RANGE).is_none();
    };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        let etag = stored.get(ETAG).and_then(|v| v.to_str().ok());
        return etag.is_some_and(|e| strong_eq(cond, e));
    }
    match (httpdate::parse_http_date(cond).ok(), date(stored, LAST_MODIFIED)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn date(h: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    h.get(name).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Weak comparison (RFC 9110 §8.8.3.2): opaque tags equal, `W/` ignored.
fn weak_eq(a: &str, b: &str) -> bool {
    let a = a.trim().trim_start_matches("W/");
    let b = b.trim().trim_start_matches("W/");
    a.starts_with('"') && a == b
}

/// Strong comparison: neither weak, opaque tags equal.
fn strong_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    !a.starts_with("W/") && !b.starts_with("W/") && a.starts_with('"') && a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn if_none_match_weak_comparison_and_star() {
        let stored = h(&[("etag", "\"xyzzy\"")]);
        assert!(not_modified(&h(&[("if-none-match", "\"xyzzy\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "W/\"xyzzy\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "\"a\", \"xyzzy\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&h(&[("if-none-match", "\"other\"")]), &stored));
        // If-None-Match present: If-Modified-Since is not looked at (§13.1.3).
        let both = h(&[("if-none-match", "\"other\""), ("if-modified-since", LM)]);
        assert!(!not_modified(&both, &h(&[("etag", "\"xyzzy\""), ("last-modified", LM)])));
    }

    #[test]
    fn if_modified_since() {
        let stored = h(&[("last-modified", LM)]);
        assert!(not_modified(&h(&[("if-modified-since", LM)]), &stored));
        assert!(not_modified(&h(&[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")]), &stored));
        assert!(!not_modified(&h(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]), &stored));
        assert!(!not_modified(&h(&[("if-modified-since", "garbage")]), &stored));
        assert!(!not_modified(&h(&[]), &stored));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let stored = h(&[("etag", "\"v1\""), ("last-modified", LM)]);
        assert!(range_applies(&h(&[]), &stored));
        assert!(range_applies(&h(&[("if-range", "\"v1\"")]), &stored));
        assert!(!range_applies(&h(&[("if-range", "W/\"v1\"")]), &stored));
        assert!(!range_applies(&h(&[("if-range", "\"v2\"")]), &stored));
        assert!(range_applies(&h(&[("if-range", LM)]), &stored));
        assert!(!range_applies(&h(&[("if-range", "Mon, 07 Nov 1994 08:49:37 GMT")]), &stored));
        assert!(!range_applies(&h(&[("if-range", "\"v1\"")]), &h(&[("etag", "W/\"v1\"")])));
    }
}
