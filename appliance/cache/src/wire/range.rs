//! The `Range` request field (RFC 9110 §14.1.1–14.2) and `Content-Range`.
//!
//! ```text
//! Range            = ranges-specifier
//! ranges-specifier = range-unit "=" range-set
//! range-set        = 1#range-spec
//! range-spec       = int-range / suffix-range / other-range
//! int-range        = first-pos "-" [ last-pos ]
//! suffix-range     = "-" suffix-length
//! ```
//!
//! A field we cannot read is ignored (the full representation is served),
//! as §14.2 lets a server do; so is one with more than [`MAX_RANGES`]
//! specs, against the many-small-ranges amplification of §17.15.

use std::fmt;

/// The most range-specs one request may name before the field is ignored.
pub const MAX_RANGES: usize = 16;

/// One `range-spec`, before the representation's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (inclusive) or `first-` (`last` = `None`).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Why a `Range` field is ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("range unit is not `bytes`")]
    Unit,
    #[error("malformed range-set")]
    Syntax,
    #[error("last-pos before first-pos")]
    Inverted,
    #[error("more than {MAX_RANGES} ranges")]
    TooMany,
}

/// Parses a `Range` field value into its specs, in order.
pub fn parse_range(value: &str) -> Result<Vec<RangeSpec>, RangeError> {
    let (unit, set) = value.split_once('=').ok_or(RangeError::Syntax)?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Err(RangeError::Unit);
    }
    let mut specs = Vec::new();
    // `1#element`: empty list elements are allowed and skipped (RFC 9110 §5.6.1.2).
    for part in set.split(',').map(|p| p.trim_matches([' ', '\t'])).filter(|p| !p.is_empty()) {
        if specs.len() == MAX_RANGES {
            return Err(RangeError::TooMany);
        }
        let (first, last) = part.split_once('-').ok_or(RangeError::Syntax)?;
        let spec = if first.is_empty() {
            RangeSpec::Suffix(digits(last)?)
        } else {
            let first = digits(first)?;
            let last = if last.is_empty() { None } else { Some(digits(last)?) };
            if last.is_some_and(|l| l < first) {
                return Err(RangeError::Inverted);
            }
            RangeSpec::From { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(RangeError::Syntax);
    }
    Ok(specs)
}

/// `1*DIGIT`, nothing else (no sign, no space), within `u64`.
fn digits(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Syntax);
    }
    s.parse().map_err(|_| RangeError::Syntax)
}

/// A satisfiable byte range `[start, end)` of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// The outcome of a `Range` against a representation of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// 206 with these ranges, in the order asked.
    Partial(Vec<ByteRange>),
    /// 416: no spec overlaps the representation.
    Unsatisfiable,
}

/// Resolves `specs` against `len` (RFC 9110 §14.1.2): specs that start past
/// the end are dropped; when none is left, 416.
pub fn plan(specs: &[RangeSpec], len: u64) -> RangePlan {
    let ranges: Vec<ByteRange> = specs
        .iter()
        .filter_map(|s| match *s {
            RangeSpec::From { first, .. } if first >= len => None,
            RangeSpec::From { first, last } => {
                Some(ByteRange { start: first, end: last.map_or(len, |l| l.saturating_add(1).min(len)) })
            }
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(_) if len == 0 => None,
            RangeSpec::Suffix(n) => Some(ByteRange { start: len - n.min(len), end: len }),
        })
        .collect();
    if ranges.is_empty() { RangePlan::Unsatisfiable } else { RangePlan::Partial(ranges) }
}

/// `Content-Range: bytes first-last/complete-length` of one range.
pub struct ContentRange {
    pub range: ByteRange,
    pub complete: u64,
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}/{}", self.range.start, self.range.end - 1, self.complete)
    }
}

/// `Content-Range: bytes */complete-length` of a 416.
pub fn unsatisfied(complete: u64) -> String {
    format!("bytes */{complete}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;

    fn br(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    /// RFC 9110 §14.1.2's examples, against its 10000-byte representation.
    #[test]
    fn rfc9110_examples() {
        let cases: &[(&str, Vec<ByteRange>)] = &[
            ("bytes=0-499", vec![br(0, 500)]),
            ("bytes=500-999", vec![br(500, 1000)]),
            ("bytes=-500", vec![br(9500, 10000)]),
            ("bytes=9500-", vec![br(9500, 10000)]),
            ("bytes=0-0,-1", vec![br(0, 1), br(9999, 10000)]),
            ("bytes= 0-999, 4500-5499, -1000", vec![br(0, 1000), br(4500, 5500), br(9000, 10000)]),
            ("bytes=500-600,601-999", vec![br(500, 601), br(601, 1000)]),
            ("bytes=500-700,601-999", vec![br(500, 701), br(601, 1000)]),
        ];
        for (field, want) in cases {
            let specs = parse_range(field).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(plan(&specs, 10_000), RangePlan::Partial(want.clone()), "{field}");
        }
    }

    #[test]
    fn lengths_clip_and_unsatisfiable() {
        assert_eq!(plan(&[From { first: 0, last: Some(u64::MAX) }], 10), RangePlan::Partial(vec![br(0, 10)]));
        assert_eq!(plan(&[Suffix(50)], 10), RangePlan::Partial(vec![br(0, 10)]));
        assert_eq!(plan(&[From { first: 10, last: None }], 10), RangePlan::Unsatisfiable);
        assert_eq!(plan(&[Suffix(0)], 10), RangePlan::Unsatisfiable);
        assert_eq!(plan(&[Suffix(5)], 0), RangePlan::Unsatisfiable);
        assert_eq!(
            plan(&[From { first: 20, last: None }, From { first: 2, last: Some(3) }], 10),
            RangePlan::Partial(vec![br(2, 4)]),
            "an unsatisfiable spec among others is dropped"
        );
    }

    #[test]
    fn malformed_fields_are_errors_not_panics() {
        for (field, err) in [
            ("items=0-1", RangeError::Unit),
            ("bytes", RangeError::Syntax),
            ("bytes=", RangeError::Syntax),
            ("bytes=,", RangeError::Syntax),
            ("bytes=-", RangeError::Syntax),
            ("bytes=1", RangeError::Syntax),
            ("bytes=+1-2", RangeError::Syntax),
            ("bytes=1-+2", RangeError::Syntax),
            ("bytes=0x1-2", RangeError::Syntax),
            ("bytes=1 -2", RangeError::Syntax),
            ("bytes=99999999999999999999-", RangeError::Syntax),
            ("bytes=5-4", RangeError::Inverted),
            ("bytes=1-2-3", RangeError::Syntax),
        ] {
            assert_eq!(parse_range(field), Err(err), "{field}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse_range(&many), Err(RangeError::TooMany));
        let max = format!("bytes={}", vec!["0-0"; MAX_RANGES].join(","));
        assert_eq!(parse_range(&max).map(|v| v.len()), Ok(MAX_RANGES));
    }

    #[test]
    fn unit_is_case_insensitive_and_empty_elements_are_skipped() {
        assert_eq!(parse_range("Bytes=,1-2,,"), Ok(vec![From { first: 1, last: Some(2) }]));
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(ContentRange { range: br(0, 500), complete: 1234 }.to_string(), "bytes 0-499/1234");
        assert_eq!(unsatisfied(1234), "bytes */1234");
    }

    proptest::proptest! {
        #[test]
        fn planned_ranges_lie_inside_the_representation(field in "\\PC{0,40}", len in 0u64..100_000) {
            if let Ok(RangePlan::Partial(rs)) = parse_range(&field).map(|specs| plan(&specs, len)) {
                for r in rs {
                    proptest::prop_assert!(r.start < r.end && r.end <= len);
                }
            }
        }
    }
}
