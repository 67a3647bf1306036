//! What a SIP message is to the sending entity: a request's category
//! (RFC 7339 §5.10.1 and DESIGN.md §4.3), the facts about its top Via, and
//! in a response the overload parameters the server put there.

use netserv_sip_scan::{Header, HeaderName, Message, StartLine, first_via, name_addr_tag};

/// A request's treatment under control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Out-of-dialog requests other than emergency ones (INVITE, REGISTER,
    /// SUBSCRIBE …): shed first.
    Initial,
    /// In-dialog requests (To has a tag) and emergency ones (an `sos` service
    /// URN, RFC 5031; a Resource-Priority header, RFC 4412): shed only once
    /// the initial ones are exhausted.
    Priority,
    /// ACK, CANCEL, BYE: never shed (shedding them would only leave state
    /// hanging at the server and the phone).
    NeverShed,
}

/// The facts about a request the module acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    pub category: Category,
    pub is_ack: bool,
    /// The top Via already carries `oc`: the client is an RFC 7339 client
    /// itself (it gets no Retry-After; its Via is not rewritten).
    pub client_does_oc: bool,
    /// A hash of the top Via's branch and sent-by: the transaction.
    pub transaction: u64,
    /// Where in the payload the top Via's first via-parm ends: where `oc`
    /// is inserted.
    pub top_via_end: usize,
}

pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b.to_ascii_lowercase());
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
    }
    h
}

/// Offset of `inner` within `outer` (a header value borrowed from the payload).
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let o = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (o + inner.len() <= outer.len()).then_some(o)
}

fn is_sos_urn(uri: &[u8]) -> bool {
    const SOS: &[u8] = b"urn:service:sos";
    uri.len() >= SOS.len()
        && uri.get(..SOS.len()).is_some_and(|p| p.eq_ignore_ascii_case(SOS))
        && matches!(uri.get(SOS.len()), None | Some(b'.'))
}

fn named<'h, 'a>(headers: &'h [Header<'a>], name: &str) -> Option<&'h Header<'a>> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
}

/// The transaction of the message's top Via (branch and sent-by).
fn transaction(msg: &Message<'_, '_>) -> Option<u64> {
    let via = msg.header(HeaderName::Via)?;
    let (parm, _) = first_via(via.value)?;
    let branch = parm.param(b"branch").flatten().unwrap_or_default();
    Some(fnv1a(&[branch, parm.host]))
}

/// Classifies a request; None for a response or a request without a usable top Via.
pub fn request(payload: &[u8], msg: &Message<'_, '_>) -> Option<RequestFacts> {
    let StartLine::Request { method, uri, .. } = msg.start else { return None };
    let via = msg.header(HeaderName::Via)?;
    let (parm, len) = first_via(via.value)?;
    let start = offset_in(payload, via.value)?;
    // The via-parm ends before any blanks ahead of a comma or the line's end.
    let parm_text = via.value.get(..len)?;
    let trimmed = parm_text.len() - parm_text.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    let category = if matches!(method, b"ACK" | b"CANCEL" | b"BYE") {
        Category::NeverShed
    } else {
        let in_dialog = msg.header(HeaderName::To).and_then(|t| name_addr_tag(t.value)).is_some();
        let emergency = is_sos_urn(uri) || named(msg.headers, "Resource-Priority").is_some();
        if in_dialog || emergency { Category::Priority } else { Category::Initial }
    };
    Some(RequestFacts {
        category,
        is_ack: method == b"ACK",
        client_does_oc: parm.param(b"oc").is_some(),
        transaction: transaction(msg)?,
        top_via_end: start + trimmed,
    })
}

/// The overload-control parameters of a response's top Via (RFC 7339 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InBand {
    pub transaction: u64,
    /// `oc=` value; None: the server did not report (`oc` absent or without a value).
    pub oc: Option<u32>,
    /// `oc-algo`: true for rate, false for loss (its default).
    pub rate: bool,
    pub validity_ms: Option<u32>,
    /// `oc-seq` in units of 10^-5.
    pub seq: Option<u64>,
}

fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v)
}

fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `oc-seq = 1*12DIGIT ["." 1*5DIGIT]`, in units of 10^-5.
pub fn parse_seq(v: &[u8]) -> Option<u64> {
    let (int, frac) = match v.iter().position(|b| *b == b'.') {
        Some(i) => (v.get(..i)?, Some(v.get(i + 1..)?)),
        None => (v, None),
    };
    let mut scaled = number(int)?.checked_mul(100_000)?;
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > 5 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut f = 0u64;
        for i in 0..5 {
            f = f * 10 + frac.get(i).map_or(0, |d| u64::from(d - b'0'));
        }
        scaled += f;
    }
    Some(scaled)
}

/// A response's report, if it carries one in its top Via.
pub fn response(msg: &Message<'_, '_>) -> Option<InBand> {
    let StartLine::Response { .. } = msg.start else { return None };
    let via = msg.header(HeaderName::Via)?;
    let (parm, _) = first_via(via.value)?;
    let oc = parm.param(b"oc")?;
    let algo = parm.param(b"oc-algo").flatten().map(unquote).unwrap_or(b"loss");
    // The server names the one algorithm it chose; a list is not a choice.
    let rate = if algo.eq_ignore_ascii_case(b"rate") {
        true
    } else if algo.eq_ignore_ascii_case(b"loss") {
        false
    } else {
        return None;
    };
    Some(InBand {
        transaction: transaction(msg)?,
        oc: oc.and_then(number).and_then(|n| u32::try_from(n).ok()),
        rate,
        validity_ms: parm.param(b"oc-validity").flatten().and_then(number).and_then(|n| u32::try_from(n).ok()),
        seq: parm.param(b"oc-seq").flatten().and_then(parse_seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netserv_sip_scan::{EMPTY_HEADER, parse_datagram};

    fn req(start: &str, extra: &str, to_tag: bool) -> Vec<u8> {
        let tag = if to_tag { ";tag=b2" } else { "" };
        format!(
            "{start} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKx1 , SIP/2.0/UDP 10.0.0.1\r\n\
             From: <sip:a@x>;tag=a1\r\nTo: <sip:b@x>{tag}\r\nCall-ID: c1\r\nCSeq: 1 {}\r\n{extra}Content-Length: 0\r\n\r\n",
            start.split(' ').next().unwrap_or_default()
        )
        .into_bytes()
    }

    fn facts(p: &[u8]) -> RequestFacts {
        let mut h = [EMPTY_HEADER; 32];
        let m = parse_datagram(p, &mut h).expect("parses");
        request(p, &m).expect("a request")
    }

    #[test]
    fn requests_fall_into_the_categories_of_rfc_7339() {
        assert_eq!(facts(&req("INVITE sip:b@x", "", false)).category, Category::Initial);
        assert_eq!(facts(&req("REGISTER sip:x", "", false)).category, Category::Initial);
        assert_eq!(facts(&req("INVITE sip:b@x", "", true)).category, Category::Priority, "re-INVITE in a dialog");
        assert_eq!(facts(&req("INVITE urn:service:sos", "", false)).category, Category::Priority);
        assert_eq!(facts(&req("INVITE urn:service:sos.police", "", false)).category, Category::Priority);
        assert_eq!(facts(&req("INVITE urn:service:sosx", "", false)).category, Category::Initial);
        assert_eq!(facts(&req("INVITE sip:b@x", "Resource-Priority: esnet.0\r\n", false)).category, Category::Priority);
        for m in ["ACK sip:b@x", "CANCEL sip:b@x", "BYE sip:b@x"] {
            assert_eq!(facts(&req(m, "", true)).category, Category::NeverShed, "{m}");
        }
    }

    #[test]
    fn the_top_via_end_is_where_its_first_via_parm_ends() {
        let p = req("INVITE sip:b@x", "", false);
        let f = facts(&p);
        assert_eq!(&p[f.top_via_end - 12..f.top_via_end], b"branch=z9hG4bKx1".get(4..).unwrap_or_default());
        assert_eq!(p.get(f.top_via_end), Some(&b' '));
        assert!(!f.client_does_oc);
    }

    #[test]
    fn a_response_carries_the_servers_report() {
        let p = b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 198.18.1.10:5060;branch=z9hG4bKx1;oc=20;oc-algo=\"loss\";oc-validity=500;oc-seq=1282321615.781\r\n\
            From: <sip:a@x>;tag=a1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let mut h = [EMPTY_HEADER; 16];
        let m = parse_datagram(p, &mut h).expect("parses");
        let r = response(&m).expect("a report");
        assert_eq!(r.oc, Some(20));
        assert!(!r.rate);
        assert_eq!(r.validity_ms, Some(500));
        assert_eq!(r.seq, Some(128_232_161_578_100));
        assert_eq!(r.transaction, facts(&req("INVITE sip:b@x", "", false)).transaction, "the same transaction");
    }

    #[test]
    fn oc_seq_follows_its_grammar() {
        assert_eq!(parse_seq(b"7"), Some(700_000));
        assert_eq!(parse_seq(b"7.00001"), Some(700_001));
        assert_eq!(parse_seq(b"7."), None);
        assert_eq!(parse_seq(b"7.123456"), None);
        assert_eq!(parse_seq(b"1234567890123"), None);
        assert_eq!(parse_seq(b"x"), None);
    }
}
