//! Request-Line and Status-Line (RFC 3261 §7.1, §7.2, §25.1).

use crate::chars::{all_token, is_uri_char};
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Sip20,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a [u8], uri: &'a [u8], version: Version },
    Response { version: Version, code: u16, reason: &'a [u8] },
}

const SIP_VERSION: &[u8] = b"SIP/2.0";

/// Parses one start line, without its CRLF.
pub(crate) fn parse(line: &[u8]) -> Result<StartLine<'_>, Error> {
    if line.len() >= SIP_VERSION.len() && line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        return parse_status(line);
    }
    parse_request(line)
}

fn version(v: &[u8]) -> Result<Version, Error> {
    // RFC 3261 §7.1: the version string is case-insensitive, but sent upper-case.
    if v.eq_ignore_ascii_case(SIP_VERSION) { Ok(Version::Sip20) } else { Err(Error::Version) }
}

/// `Request-Line = Method SP Request-URI SP SIP-Version CRLF`: exactly two SP.
fn parse_request(line: &[u8]) -> Result<StartLine<'_>, Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(uri), Some(ver), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        // RFC 4475 §3.1.2.8-10 (lwsruri, lwsstart, trws) land here.
        return Err(Error::StartLine("Request-Line needs exactly two single SP separators"));
    };
    if !all_token(method) {
        return Err(Error::StartLine("method is not a token"));
    }
    let version = version(ver)?;
    check_request_uri(uri)?;
    Ok(StartLine::Request { method, uri, version })
}

fn check_request_uri(uri: &[u8]) -> Result<(), Error> {
    if uri.first() == Some(&b'<') {
        // RFC 4475 §3.1.2.7 (ltgtruri).
        return Err(Error::RequestUri("must not be enclosed in <>"));
    }
    if uri.is_empty() || !uri.iter().all(|&b| is_uri_char(b)) {
        return Err(Error::RequestUri("contains white space, controls or delimiters"));
    }
    let Some(colon) = uri.iter().position(|&b| b == b':') else {
        return Err(Error::RequestUri("has no scheme"));
    };
    let scheme = uri.get(..colon).unwrap_or_default();
    if !scheme.first().is_some_and(u8::is_ascii_alphabetic)
        || !scheme.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(Error::RequestUri("scheme is malformed"));
    }
    let is_sip = scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips");
    // `user-unreserved` allows `?` in the user part, so headers begin only
    // after the host (the part after the first `@`, if any).
    let after_user = uri.iter().position(|&b| b == b'@').map_or(uri, |at| uri.get(at..).unwrap_or_default());
    if is_sip && after_user.contains(&b'?') {
        // RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI;
        // RFC 4475 §3.1.2.11 (escruri).
        return Err(Error::RequestUri("SIP Request-URI must not carry headers"));
    }
    Ok(())
}

/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF`.
fn parse_status(line: &[u8]) -> Result<StartLine<'_>, Error> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(ver), Some(code)) = (parts.next(), parts.next()) else {
        return Err(Error::StartLine("Status-Line needs a status code"));
    };
    let version = version(ver)?;
    // The reason phrase may be empty (RFC 4475 §3.1.1.13 noreason); it is
    // TEXT-UTF8 but we keep it opaque.
    let reason = parts.next().unwrap_or_default();
    let [a, b, c] = code else {
        // RFC 4475 §3.1.2.19 (bigcode).
        return Err(Error::StatusCode);
    };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) {
        return Err(Error::StatusCode);
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    if !(100..=699).contains(&code) {
        return Err(Error::StatusCode);
    }
    Ok(StartLine::Response { version, code, reason })
}
