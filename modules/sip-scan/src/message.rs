//! Message framing (RFC 3261 §7, §18.3): start line, header fields with folds,
//! body bounded by Content-Length.

use crate::chars::{is_token, is_wsp};
use crate::error::{Error, SemanticError};
use crate::grammar;
use crate::header::{Header, HeaderName};
use crate::start_line::{self, StartLine};

/// The httparse result shape: a stream may not hold the whole message yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The message is complete; the value, and how many bytes it used.
    Complete(T, usize),
    /// More bytes are needed. Not an error.
    Partial,
}

/// A parsed message borrowing the input and the caller's header array.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a, 'h> {
    pub start: StartLine<'a>,
    pub headers: &'h [Header<'a>],
    pub body: &'a [u8],
}

impl<'a> Message<'a, '_> {
    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The first header field with this name (long or compact form).
    pub fn header(&self, name: HeaderName) -> Option<&Header<'a>> {
        self.headers_named(name).next()
    }

    /// All header fields with this name, in order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header<'a>> {
        self.headers.iter().filter(move |h| h.known() == Some(name))
    }

    /// Rules RFC 4475 §3.3 leaves above the parser: the headers RFC 3261 §8.1.1
    /// requires are present, singletons appear once, Content-Length agrees.
    pub fn check_semantics(&self) -> Result<(), SemanticError> {
        use HeaderName::*;
        if self.header(Via).is_none() {
            return Err(SemanticError::Missing("Via"));
        }
        for name in [From, To, CallId, CSeq] {
            match self.headers_named(name).count() {
                0 => return Err(SemanticError::Missing(name.as_str())),
                1 => {}
                _ => return Err(SemanticError::Repeated(name.as_str())),
            }
        }
        if self.method().is_some() && self.headers_named(MaxForwards).count() > 1 {
            return Err(SemanticError::Repeated("Max-Forwards"));
        }
        let mut lengths = self
            .headers_named(ContentLength)
            .filter_map(|h| grammar::bounded_number(h.value, u64::from(u32::MAX)).ok());
        if let Some(first) = lengths.next()
            && lengths.any(|l| l != first)
        {
            return Err(SemanticError::ConflictingContentLength);
        }
        Ok(())
    }
}

/// Parses one message from a datagram (UDP): the whole message is in `buf`.
/// A Content-Length larger than the remaining bytes is an error (RFC 3261
/// §18.3); a smaller one truncates the body.
pub fn parse_datagram<'a, 'h>(buf: &'a [u8], headers: &'h mut [Header<'a>]) -> Result<Message<'a, 'h>, Error> {
    match parse(buf, headers, true)? {
        Status::Complete(msg, _) => Ok(msg),
        Status::Partial => Err(Error::HeaderLine("message ends before the blank line")),
    }
}

/// Parses one message from a byte stream (TCP, TLS): `Partial` until the
/// headers and Content-Length bytes of body have arrived. A message without
/// Content-Length has an empty body (stream transports require the header).
pub fn parse_stream<'a, 'h>(buf: &'a [u8], headers: &'h mut [Header<'a>]) -> Result<Status<Message<'a, 'h>>, Error> {
    parse(buf, headers, false)
}

/// Position of the first CRLF. memchr finds LF candidates a word at a time
/// (SIMD natively, SWAR in wasm); a lone LF is skipped.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find(|&i| i > 0 && buf.get(i - 1) == Some(&b'\r')).map(|i| i - 1)
}

fn parse<'a, 'h>(
    buf: &'a [u8],
    headers: &'h mut [Header<'a>],
    datagram: bool,
) -> Result<Status<Message<'a, 'h>>, Error> {
    let Some(line_end) = find_crlf(buf) else {
        return Ok(Status::Partial);
    };
    let start = start_line::parse(buf.get(..line_end).unwrap_or_default())?;
    let method = match start {
        StartLine::Request { method, .. } => Some(method),
        StartLine::Response { .. } => None,
    };

    let mut pos = line_end + 2;
    let mut count = 0;
    let mut content_length: Option<u64> = None;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        if rest.starts_with(b"\r\n") {
            pos += 2;
            break;
        }
        let Some((len, folded)) = header_line_len(rest)? else {
            return Ok(Status::Partial);
        };
        let line = rest.get(..len).unwrap_or_default();
        let header = split_header(line, folded)?;
        check_header(&header, method, &mut content_length)?;
        let slot = headers.get_mut(count).ok_or(Error::TooManyHeaders)?;
        *slot = header;
        count += 1;
        pos += len + 2;
    }

    let available = buf.get(pos..).unwrap_or_default();
    let body_len = match content_length {
        Some(cl) => usize::try_from(cl).unwrap_or(usize::MAX),
        None if datagram => available.len(),
        None => 0,
    };
    if body_len > available.len() {
        if datagram {
            // RFC 4475 §3.1.2.2 (clerr).
            return Err(Error::ContentLengthExceedsBody);
        }
        return Ok(Status::Partial);
    }
    let body = available.get(..body_len).unwrap_or_default();
    let headers: &'h [Header<'a>] = headers.get(..count).unwrap_or_default();
    Ok(Status::Complete(Message { start, headers, body }, pos + body_len))
}

/// Length of one header field line up to (not including) its final CRLF,
/// following folds, and whether it was folded. `None` when the final CRLF has
/// not arrived.
fn header_line_len(rest: &[u8]) -> Result<Option<(usize, bool)>, Error> {
    if rest.first().copied().is_some_and(is_wsp) {
        return Err(Error::HeaderLine("continuation line without a header field"));
    }
    let mut at = 0;
    let mut folded = false;
    loop {
        let Some(crlf) = find_crlf(rest.get(at..).unwrap_or_default()) else {
            return Ok(None);
        };
        let end = at + crlf;
        // A fold is CRLF followed by SP or HTAB (RFC 3261 §7.3.1).
        match rest.get(end + 2) {
            Some(&b) if is_wsp(b) => {
                at = end + 2;
                folded = true;
            }
            Some(_) => return Ok(Some((end, folded))),
            None => return Ok(None),
        }
    }
}

/// `header = field-name SWS ":" SWS field-value`
fn split_header(line: &[u8], folded: bool) -> Result<Header<'_>, Error> {
    let name_len = line.iter().take_while(|&&b| is_token(b)).count();
    if name_len == 0 {
        return Err(Error::HeaderLine("field name is not a token"));
    }
    let (name, rest) = line.split_at(name_len);
    let ws = rest.iter().take_while(|&&b| crate::chars::is_lws(b)).count();
    let Some(b':') = rest.get(ws).copied() else {
        return Err(Error::HeaderLine("field name is not followed by a colon"));
    };
    let value = rest.get(ws + 1..).unwrap_or_default();
    let lead = value.iter().take_while(|&&b| crate::chars::is_lws(b)).count();
    let value = value.get(lead..).unwrap_or_default();
    // A bare CR or LF inside a line (not part of CRLF) is malformed. Lines
    // without folds hold no CRLF, so one scan for either byte suffices.
    let bare = if folded { !folds_are_wellformed(value) } else { memchr::memchr2(b'\r', b'\n', value).is_some() };
    if bare {
        return Err(Error::HeaderLine("bare CR or LF in a field value"));
    }
    Ok(Header { name, value, kind: HeaderName::from_bytes(name) })
}

/// Every CR and LF in a folded value belongs to a fold: CRLF followed by
/// SP or HTAB. Each one is looked at where it stands — also the last two
/// bytes, which a window of three would not start at (the long fuzz run
/// found `…;\r3` at a value's end accepted).
fn folds_are_wellformed(value: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', value).all(|i| {
        let next_is_wsp = |at: usize| value.get(at).copied().is_some_and(is_wsp);
        if value.get(i) == Some(&b'\r') {
            value.get(i + 1) == Some(&b'\n') && next_is_wsp(i + 2)
        } else {
            i > 0 && value.get(i - 1) == Some(&b'\r') && next_is_wsp(i + 1)
        }
    })
}

fn check_header(h: &Header<'_>, method: Option<&[u8]>, content_length: &mut Option<u64>) -> Result<(), Error> {
    let Some(name) = h.known() else {
        return Ok(());
    };
    let fail = |reason| Error::HeaderValue { header: name.as_str(), reason };
    use HeaderName::*;
    match name {
        Via => grammar::via(h.value).map_err(fail),
        From | To => grammar::name_addrs(h.value, false, false, false).map_err(fail),
        Contact => grammar::name_addrs(h.value, true, true, false).map_err(fail),
        Route | RecordRoute => grammar::name_addrs(h.value, true, false, true).map_err(fail),
        CallId => grammar::call_id(h.value).map_err(fail),
        CSeq => {
            let (_, cseq_method) = grammar::cseq(h.value).map_err(fail)?;
            match method {
                // RFC 4475 §3.1.2.17-18 (mismatch01, mismatch02).
                Some(m) if m != cseq_method => Err(Error::CSeqMethodMismatch),
                _ => Ok(()),
            }
        }
        MaxForwards => grammar::bounded_number(h.value, 255).map(drop).map_err(fail),
        ContentLength => {
            let v = grammar::bounded_number(h.value, u64::from(u32::MAX)).map_err(fail)?;
            // With several (RFC 4475 §3.3.10 mcl01, judged above the parser),
            // frame by the largest so that none exceeds the message.
            *content_length = Some(content_length.map_or(v, |c| c.max(v)));
            Ok(())
        }
        Date => grammar::date(h.value).map_err(fail),
        Event => grammar::event(h.value).map_err(fail),
        _ => Ok(()),
    }
}
