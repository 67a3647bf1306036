//! Byte classes of RFC 3261 §25.1.

/// `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`
pub(crate) const fn is_token(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
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
pub(crate) const fn is_uri_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'<' | b'>' | b'"')
}

/// `host` characters: hostname, IPv4 or the inside of an IPv6 reference.
pub(crate) const fn is_host_char(b: u8) -> bool {
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
