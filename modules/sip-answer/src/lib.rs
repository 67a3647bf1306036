//! Stateless SIP responses to a parsed request, built as the server itself
//! would build them (RFC 3261 §8.2.6): the Vias copied, the top one with
//! `received` / `rport` (RFC 3261 §18.2.1, RFC 3581 §4); From, Call-ID and
//! CSeq copied; To copied with a tag added when absent (a stable one, so a
//! retransmitted request gets the same answer). The keepalive module's
//! 200s and the overload-control module's 503s are made here, so that both
//! answer exactly as the ITSP's server would.
//!
//! No `fmt` machinery on the common path: formatting is a measurable share
//! of an answer's cost in the sandbox.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use netserv_sip_scan::{Header, HeaderName, Message, first_via, name_addr_tag, params_iter, unfold};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Writes the status line `status` (e.g. `b"503 Service Unavailable"`) and
/// the headers every response to `msg` carries (Via, From, To, Call-ID,
/// CSeq), each line ending CRLF. The caller adds its own headers, then
/// `Content-Length` and the blank line. `source`: where the request came
/// from (its NAT's address). None when `msg` lacks a header a response
/// needs.
pub fn response_head(out: &mut Vec<u8>, status: &[u8], msg: &Message<'_, '_>, source: SocketAddr) -> Option<()> {
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    let mut first = true;
    for via in msg.headers_named(HeaderName::Via) {
        out.extend_from_slice(b"Via: ");
        if first {
            write_top_via(out, via.value, source)?;
            first = false;
        } else {
            unfold(via.value, out);
        }
        out.extend_from_slice(b"\r\n");
    }
    if first {
        return None;
    }
    copy(out, "From", msg.header(HeaderName::From)?);
    let to = msg.header(HeaderName::To)?;
    out.extend_from_slice(b"To: ");
    unfold(to.value, out);
    if name_addr_tag(to.value).is_none() {
        let from_tag = msg.header(HeaderName::From).and_then(|f| name_addr_tag(f.value)).unwrap_or_default();
        let call_id = msg.header(HeaderName::CallId)?.value;
        out.extend_from_slice(b";tag=ns");
        push_hex16(out, fnv1a(&[call_id, from_tag]));
    }
    out.extend_from_slice(b"\r\n");
    copy(out, "Call-ID", msg.header(HeaderName::CallId)?);
    copy(out, "CSeq", msg.header(HeaderName::CSeq)?);
    Some(())
}

/// The top Via, with `received` and a filled `rport` (RFC 3581 §4): the
/// answer must reach the phone's NAT binding, not the address it believes it has.
pub fn write_top_via(out: &mut Vec<u8>, value: &[u8], source: SocketAddr) -> Option<()> {
    let (parm, len) = first_via(value)?;
    // The scanner checked the transport is a token (ASCII).
    out.extend_from_slice(b"SIP/2.0/");
    out.extend_from_slice(parm.transport);
    out.push(b' ');
    out.extend_from_slice(parm.host);
    if let Some(p) = parm.port {
        out.push(b':');
        push_decimal(out, u64::from(p));
    }
    let mut has_rport = false;
    let mut has_received = false;
    for (name, v) in params_iter(parm.params) {
        out.push(b';');
        out.extend_from_slice(name);
        if name.eq_ignore_ascii_case(b"rport") {
            has_rport = true;
            match v {
                Some(v) if !v.is_empty() => {
                    out.push(b'=');
                    out.extend_from_slice(v);
                }
                _ => {
                    out.push(b'=');
                    push_decimal(out, u64::from(source.port()));
                }
            }
            continue;
        }
        has_received |= name.eq_ignore_ascii_case(b"received");
        if let Some(v) = v {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    let host_is_source = std::str::from_utf8(parm.host)
        .ok()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        == Some(source.ip());
    if !has_received && (has_rport || !host_is_source) {
        out.extend_from_slice(b";received=");
        push_ip(out, source.ip());
    }
    // The remaining via-parms of this header, if it held a list.
    let rest = value.get(len..).unwrap_or_default();
    unfold(rest, out);
    Some(())
}

pub fn copy(out: &mut Vec<u8>, name: &str, h: &Header<'_>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    unfold(h.value, out);
    out.extend_from_slice(b"\r\n");
}

/// FNV-1a 64: a stable To-tag, so a retransmitted keep-alive gets the same answer.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
    }
    h
}

/// Writes `v` in decimal (the answer path formats with no `fmt` machinery:
/// it is a measurable share of a keep-alive's cost in the sandbox).
pub fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Writes `v` as 16 lowercase hex digits.
pub fn push_hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX.get(((v >> (shift * 4)) & 0xf) as usize).copied().unwrap_or(b'0'));
    }
}

/// Writes an address as `Display` does (IPv4 dotted quad; IPv6 through
/// `fmt`, rarer on the path and with compression rules worth not redoing).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(o));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(Text(out), "{v6}");
        }
    }
}

/// `fmt::Write` over a byte buffer.
pub struct Text<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netserv_sip_scan::{EMPTY_HEADER, parse_datagram};

    #[test]
    fn decimals_and_addresses_are_written_as_display_writes_them() {
        for v in [0u64, 7, 10, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        for ip in ["198.18.1.10", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::ffff:198.18.1.10"] {
            let mut out = Vec::new();
            let ip: IpAddr = ip.parse().expect("ip");
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn a_response_head_answers_the_request_as_the_server_would() {
        let req = b"INVITE sip:bob@198.18.2.20 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n\
            Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0\r\n\
            From: <sip:alice@example.com>;tag=a1\r\n\
            To: <sip:bob@example.com>\r\n\
            Call-ID: c1@10.0.0.5\r\n\
            CSeq: 1 INVITE\r\n\
            Max-Forwards: 70\r\n\
            Content-Length: 0\r\n\r\n";
        let mut headers = [EMPTY_HEADER; 16];
        let msg = parse_datagram(req, &mut headers).expect("parses");
        let mut out = Vec::new();
        response_head(&mut out, b"503 Service Unavailable", &msg, "198.18.1.10:40000".parse().expect("addr"))
            .expect("built");
        let text = String::from_utf8(out).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("SIP/2.0 503 Service Unavailable"));
        assert_eq!(
            lines.next(),
            Some("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=40000;received=198.18.1.10")
        );
        assert_eq!(lines.next(), Some("Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0"));
        assert_eq!(lines.next(), Some("From: <sip:alice@example.com>;tag=a1"));
        let to = lines.next().expect("To");
        assert!(
            to.starts_with("To: <sip:bob@example.com>;tag=ns")
                && to.len() == "To: <sip:bob@example.com>;tag=ns".len() + 16
        );
        assert_eq!(lines.next(), Some("Call-ID: c1@10.0.0.5"));
        assert_eq!(lines.next(), Some("CSeq: 1 INVITE"));
        assert_eq!(lines.next(), None);
    }
}
