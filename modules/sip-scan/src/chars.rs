//! Byte classes of RFC 3261 §25.1.

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`
const fn token_class(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// Byte-class tables, built at compile time from the predicates above and
/// below (httparse's approach): one load per byte instead of a chain of
/// comparisons, which matters most inside the wasm sandbox.
macro_rules! table {
    ($f:ident) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $f(i as u8);
            i += 1;
        }
        t
    }};
}

// Compile-time only: `i < 256` bounds every index of the builder loop.
#[allow(clippy::indexing_slicing)]
static TOKEN: [bool; 256] = table!(token_class);
#[allow(clippy::indexing_slicing)]
static URI: [bool; 256] = table!(uri_class);
#[allow(clippy::indexing_slicing)]
static HOST: [bool; 256] = table!(host_class);

#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    // A u8 always indexes a 256-entry table.
    TOKEN.get(usize::from(b)).copied().unwrap_or(false)
}

/// `WSP = SP / HTAB`
pub(crate) const fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Linear white space inside an already framed header value. Framing guarantees
/// that a CR or LF inside a value is part of a fold (`CRLF 1*WSP`), so within a
/// value all four bytes are LWS.
pub(crate) const fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Characters allowed in a URI as we scan it (RFC 3261 §25.1 `SIP-URI` and
/// RFC 3986 `absoluteURI`): any visible ASCII except the delimiters that
/// would end it in a header (`<`, `>`, `"`) and no white space or controls.
#[inline]
pub(crate) fn is_uri_char(b: u8) -> bool {
    // A u8 always indexes a 256-entry table.
    URI.get(usize::from(b)).copied().unwrap_or(false)
}

const fn uri_class(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'<' | b'>' | b'"')
}

/// `host` characters: hostname, IPv4 or the inside of an IPv6 reference.
#[inline]
pub(crate) fn is_host_char(b: u8) -> bool {
    // A u8 always indexes a 256-entry table.
    HOST.get(usize::from(b)).copied().unwrap_or(false)
}

const fn host_class(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b':' | b'[' | b']' | b'_')
}

pub(crate) fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_lws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_lws(*last) {
            break;
        }
        s = rest;
    }
    s
}

pub(crate) fn all_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Parses `1*DIGIT` into a u64, refusing overflow.
pub(crate) fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}
