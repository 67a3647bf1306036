//! Grammar checks for the header fields we know (RFC 3261 §25.1), over borrowed
//! bytes through a cursor: no indexing of peer bytes, every step returns a result.
//!
//! Errors are `&'static str` reasons; [`crate::message`] wraps them with the
//! header name.

use crate::chars::{is_host_char, is_lws, is_token, is_uri_char, parse_digits, trim_lws};

type R<T> = Result<T, &'static str>;

/// A read cursor over a header value (the rustls `Reader` shape).
#[derive(Clone, Copy)]
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Self { rest: s }
    }
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }
    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }
    fn bump(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.rest = self.rest.get(1..).unwrap_or_default();
            true
        } else {
            false
        }
    }
    /// Skips LWS; returns whether any was skipped.
    fn lws(&mut self) -> bool {
        let n = self.rest.iter().take_while(|&&b| is_lws(b)).count();
        self.rest = self.rest.get(n..).unwrap_or_default();
        n > 0
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().take_while(|&&b| f(b)).count();
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }
    fn token(&mut self) -> &'a [u8] {
        self.take_while(is_token)
    }
    /// `quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE`, cursor on DQUOTE.
    fn quoted_string(&mut self) -> R<&'a [u8]> {
        let start = self.rest;
        if !self.eat(b'"') {
            return Err("expected a quoted string");
        }
        loop {
            match self.bump() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    match self.bump() {
                        Some(b'\r' | b'\n') | None => return Err("bad quoted-pair"),
                        Some(_) => {}
                    }
                }
                Some(_) => {}
            }
        }
        let used = start.len() - self.rest.len();
        Ok(start.get(..used).unwrap_or_default())
    }
}

/// `generic-param = token [ EQUAL gen-value ]`, repeated after `SEMI`, until the
/// end or a comma. Parameters must not be empty (RFC 4475 §3.1.2.1 badinv01).
fn params(c: &mut Cursor<'_>) -> R<()> {
    loop {
        c.lws();
        if !c.eat(b';') {
            return Ok(());
        }
        c.lws();
        if c.token().is_empty() {
            return Err("empty or malformed parameter");
        }
        c.lws();
        if c.eat(b'=') {
            c.lws();
            if c.peek() == Some(b'"') {
                c.quoted_string()?;
            } else if c.take_while(|b| is_token(b) || is_host_char(b)).is_empty() {
                return Err("parameter value is empty");
            }
        }
    }
}

/// One element of a Via header (RFC 3261 §20.42), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaParm<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The raw parameter text after `sent-by`, from its first `;` (may be empty).
    pub params: &'a [u8],
}

impl<'a> ViaParm<'a> {
    /// Looks up a Via parameter: `Some(None)` when present without a value.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        param_lookup(self.params, name)
    }
}

fn param_lookup<'a>(params: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    params_iter(params).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`
fn via_parm<'a>(c: &mut Cursor<'a>) -> R<ViaParm<'a>> {
    c.lws();
    let name = c.token();
    if !name.eq_ignore_ascii_case(b"SIP") {
        return Err("protocol name is not SIP");
    }
    c.lws();
    if !c.eat(b'/') {
        return Err("expected / after protocol name");
    }
    c.lws();
    if c.token() != b"2.0" {
        // RFC 4475 §3.1.2.16 (badvers).
        return Err("protocol version is not 2.0");
    }
    c.lws();
    if !c.eat(b'/') {
        return Err("expected / after protocol version");
    }
    c.lws();
    let transport = c.token();
    if transport.is_empty() {
        return Err("transport is missing");
    }
    if !c.lws() {
        return Err("expected LWS before sent-by");
    }
    let host_start = c.rest;
    if c.eat(b'[') {
        // IPv6reference = "[" IPv6address "]"; the slice keeps the brackets.
        let _ = c.take_while(|b| b != b']');
        if !c.eat(b']') {
            return Err("unterminated IPv6 reference");
        }
    } else {
        let _ = c.take_while(|b| is_host_char(b) && b != b':');
    }
    let host = host_start.get(..host_start.len() - c.rest.len()).unwrap_or_default();
    if host.is_empty() {
        return Err("sent-by host is missing");
    }
    let mut probe = *c;
    probe.lws();
    let port = if probe.eat(b':') {
        probe.lws();
        let digits = probe.take_while(|b| b.is_ascii_digit());
        let port = parse_digits(digits)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("sent-by port is not a number in 0..=65535")?;
        *c = probe;
        Some(port)
    } else {
        None
    };
    let params_start = c.rest;
    params(c)?;
    let used = params_start.len() - c.rest.len();
    Ok(ViaParm { transport, host, port, params: params_start.get(..used).unwrap_or_default() })
}

/// `Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)`
pub(crate) fn via(value: &[u8]) -> R<()> {
    let mut c = Cursor::new(value);
    loop {
        via_parm(&mut c)?;
        c.lws();
        if c.at_end() {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err("unexpected characters after via-parm");
        }
    }
}

/// The first via-parm of a Via header value (the one a response is routed by),
/// and how many bytes of `value` it spans.
pub fn first_via(value: &[u8]) -> Option<(ViaParm<'_>, usize)> {
    let mut c = Cursor::new(value);
    let parm = via_parm(&mut c).ok()?;
    Some((parm, value.len() - c.rest.len()))
}

/// Iterates `;name[=value]` parameters in raw parameter text (as found in
/// [`ViaParm::params`]). Stops at the first malformed one.
pub fn params_iter(raw: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut c = Cursor::new(raw);
    std::iter::from_fn(move || {
        c.lws();
        if !c.eat(b';') {
            return None;
        }
        c.lws();
        let name = c.token();
        if name.is_empty() {
            return None;
        }
        c.lws();
        let value = if c.eat(b'=') {
            c.lws();
            if c.peek() == Some(b'"') {
                Some(c.quoted_string().ok()?)
            } else {
                Some(c.take_while(|b| is_token(b) || is_host_char(b)))
            }
        } else {
            None
        };
        Some((name, value))
    })
}

/// `addr-spec` inside `<>` or bare. Bare ones end at `;`, `,` or LWS and must not
/// hold `?` (RFC 3261 §20: such URIs must be enclosed; RFC 4475 §3.1.2.13).
fn addr_spec(c: &mut Cursor<'_>, enclosed: bool) -> R<()> {
    let scheme = c.token();
    if scheme.is_empty() || !c.eat(b':') {
        return Err("URI has no scheme");
    }
    let body =
        if enclosed { c.take_while(is_uri_char) } else { c.take_while(|b| is_uri_char(b) && b != b';' && b != b',') };
    if body.is_empty() {
        return Err("URI is empty after the scheme");
    }
    if !enclosed && body.contains(&b'?') {
        return Err("URI with headers must be enclosed in <>");
    }
    Ok(())
}

/// `(name-addr / addr-spec) *(SEMI param)`. Returns the raw header-parameter
/// text (from its first `;`).
fn name_addr_element<'a>(c: &mut Cursor<'a>, require_brackets: bool) -> R<&'a [u8]> {
    c.lws();
    let mut display = false;
    if c.peek() == Some(b'"') {
        // RFC 4475 §3.1.2.6 (quotbal) fails here.
        c.quoted_string()?;
        display = true;
    } else {
        // `display-name = *(token LWS)`: tokens followed by `<` form a display
        // name; otherwise this is a bare addr-spec and we rewind.
        let mut probe = *c;
        let mut words = 0;
        loop {
            if probe.token().is_empty() {
                break;
            }
            words += 1;
            probe.lws();
        }
        if words > 0 && probe.peek() == Some(b'<') {
            *c = probe;
            display = true;
        }
    }
    c.lws();
    if c.eat(b'<') {
        if c.peek().is_some_and(is_lws) {
            // RFC 4475 §3.1.2.14 (badaspec).
            return Err("white space inside <>");
        }
        addr_spec(c, true)?;
        if !c.eat(b'>') {
            return Err("expected > after URI");
        }
    } else if display {
        return Err("display name without <URI>");
    } else if require_brackets {
        return Err("URI must be enclosed in <>");
    } else {
        // RFC 4475 §3.1.2.15 (baddn): `Bell, Alexander <...>` ends up here
        // and fails for want of a scheme.
        addr_spec(c, false)?;
    }
    let start = c.rest;
    params(c)?;
    Ok(start.get(..start.len() - c.rest.len()).unwrap_or_default())
}

/// A list of name-addr / addr-spec elements (Contact, Route, ...), or a single
/// one (From, To). Contact may also be `*`.
pub(crate) fn name_addrs(value: &[u8], list: bool, star_ok: bool, require_brackets: bool) -> R<()> {
    if star_ok && trim_lws(value) == b"*" {
        return Ok(());
    }
    let mut c = Cursor::new(value);
    loop {
        name_addr_element(&mut c, require_brackets)?;
        c.lws();
        if c.at_end() {
            return Ok(());
        }
        if !list || !c.eat(b',') {
            return Err("unexpected characters after the address");
        }
    }
}

/// The `tag` parameter of a From/To value (RFC 3261 §19.3): `None` when the
/// value is malformed or has no tag.
pub fn name_addr_tag(value: &[u8]) -> Option<&[u8]> {
    let params = name_addr_element(&mut Cursor::new(value), false).ok()?;
    param_lookup(params, b"tag").map(Option::unwrap_or_default)
}

/// `CSeq = "CSeq" HCOLON 1*DIGIT LWS Method`; the number is below 2**31
/// (RFC 3261 §8.1.1.5; RFC 4475 §3.1.2.4 scalar02, §3.1.2.5 scalarlg).
pub(crate) fn cseq(value: &[u8]) -> R<(u32, &[u8])> {
    let mut c = Cursor::new(value);
    c.lws();
    let n = c.take_while(|b| b.is_ascii_digit());
    let n = parse_digits(n).filter(|&n| n < 1 << 31).ok_or("sequence number is not a number below 2**31")?;
    if !c.lws() {
        return Err("expected LWS before method");
    }
    let method = c.token();
    c.lws();
    if method.is_empty() || !c.at_end() {
        return Err("method is not a token");
    }
    Ok((n as u32, method))
}

/// `1*DIGIT` with an upper bound.
pub(crate) fn bounded_number(value: &[u8], max: u64) -> R<u64> {
    parse_digits(trim_lws(value)).filter(|&v| v <= max).ok_or("not a number in range")
}

/// `Call-ID = word [ "@" word ]`: visible characters, no white space.
pub(crate) fn call_id(value: &[u8]) -> R<()> {
    let v = trim_lws(value);
    if v.is_empty() || !v.iter().all(|&b| matches!(b, 0x21..=0x7e)) {
        return Err("not a word [@ word]");
    }
    Ok(())
}

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"` (RFC 3261 §20.17;
/// RFC 4475 §3.1.2.12 baddate).
pub(crate) fn date(value: &[u8]) -> R<()> {
    const WKDAY: [&[u8]; 7] = [b"Mon,", b"Tue,", b"Wed,", b"Thu,", b"Fri,", b"Sat,", b"Sun,"];
    const MONTH: [&[u8]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let mut parts = trim_lws(value).split(|&b| b == b' ');
    let ok = (|| {
        let wk = parts.next()?;
        let day = parts.next()?;
        let mon = parts.next()?;
        let year = parts.next()?;
        let time = parts.next()?;
        let zone = parts.next()?;
        let good = WKDAY.contains(&wk)
            && day.len() == 2
            && day.iter().all(u8::is_ascii_digit)
            && MONTH.contains(&mon)
            && year.len() == 4
            && year.iter().all(u8::is_ascii_digit)
            && time.len() == 8
            && time.iter().enumerate().all(|(i, b)| if i == 2 || i == 5 { *b == b':' } else { b.is_ascii_digit() })
            && zone == b"GMT"
            && parts.next().is_none();
        Some(good)
    })();
    if ok == Some(true) { Ok(()) } else { Err("not an RFC 1123 date in GMT") }
}

/// `Event = event-type *( SEMI event-param )` (RFC 6665 §8.4).
pub(crate) fn event(value: &[u8]) -> R<()> {
    let mut c = Cursor::new(value);
    c.lws();
    if c.token().is_empty() {
        return Err("event type is not a token");
    }
    params(&mut c)?;
    c.lws();
    if c.at_end() { Ok(()) } else { Err("unexpected characters after the event") }
}

/// Writes `value` on one line: each fold (`CRLF 1*WSP`) becomes one SP.
pub fn unfold(value: &[u8], out: &mut Vec<u8>) {
    let mut rest = value;
    while let Some(pos) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        let (head, tail) = rest.split_at(pos);
        out.extend_from_slice(head);
        let skip = tail.iter().take_while(|&&b| is_lws(b)).count();
        rest = tail.get(skip..).unwrap_or_default();
        if !head.ends_with(b" ") {
            out.push(b' ');
        }
    }
    out.extend_from_slice(rest);
}
