//! SIP keep-alives: `NOTIFY` with `Event: keep-alive`, and `OPTIONS` pings.
//! The answer is built as the server would build it (RFC 3261 §8.2.6):
//! Via copied with `received` / `rport` (RFC 3261 §18.2.1, RFC 3581 §4), From,
//! Call-ID and CSeq copied, To copied with a tag added when absent.

use crate::{Config, Kind};
use netserv_sip_scan::keepalive::{self, KeepAlive, Server};
use netserv_sip_scan::{
    EMPTY_HEADER, Header, HeaderName, first_via, name_addr_tag, params_iter, parse_datagram, unfold,
};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Bound on header fields per message; keep-alives carry far fewer.
const MAX_HEADERS: usize = 48;

pub(crate) fn answer(
    cfg: &Config,
    source: SocketAddr,
    destination: SocketAddr,
    payload: &[u8],
) -> Option<(Vec<u8>, Kind)> {
    // Method names are case-sensitive (RFC 3261 §7.1): anything that does not
    // start like a candidate request passes without the full scan, which keeps
    // the cost of intercepting REGISTERs, INVITEs and responses low.
    if !(payload.starts_with(b"NOTIFY ") && cfg.notify || payload.starts_with(b"OPTIONS ") && cfg.options) {
        return None;
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let msg = parse_datagram(payload, &mut headers).ok()?;
    let server = Server { address: destination.ip(), domains: &cfg.domains };
    let kind = match keepalive::classify(&msg, &server)? {
        KeepAlive::Notify if cfg.notify => Kind::Notify,
        KeepAlive::Options if cfg.options => Kind::Options,
        _ => return None,
    };
    msg.check_semantics().ok()?;
    let mut out = Vec::with_capacity(payload.len().min(1024) + 64);
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let mut first = true;
    for via in msg.headers_named(HeaderName::Via) {
        out.extend_from_slice(b"Via: ");
        if first {
            write_top_via(&mut out, via.value, source)?;
            first = false;
        } else {
            unfold(via.value, &mut out);
        }
        out.extend_from_slice(b"\r\n");
    }
    copy(&mut out, "From", msg.header(HeaderName::From)?);
    let to = msg.header(HeaderName::To)?;
    out.extend_from_slice(b"To: ");
    unfold(to.value, &mut out);
    if name_addr_tag(to.value).is_none() {
        let from_tag = msg.header(HeaderName::From).and_then(|f| name_addr_tag(f.value)).unwrap_or_default();
        let call_id = msg.header(HeaderName::CallId)?.value;
        out.extend_from_slice(b";tag=ns");
        push_hex16(&mut out, fnv1a(&[call_id, from_tag]));
    }
    out.extend_from_slice(b"\r\n");
    copy(&mut out, "Call-ID", msg.header(HeaderName::CallId)?);
    copy(&mut out, "CSeq", msg.header(HeaderName::CSeq)?);
    if let Some(server) = &cfg.server {
        let _ = write!(Text(&mut out), "Server: {server}\r\n");
    }
    if kind == Kind::Options
        && let Some(allow) = &cfg.allow
    {
        let _ = write!(Text(&mut out), "Allow: {allow}\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some((out, kind))
}

/// The top Via, with `received` and a filled `rport` (RFC 3581 §4): the
/// answer must reach the phone's NAT binding, not the address it believes it has.
fn write_top_via(out: &mut Vec<u8>, value: &[u8], source: SocketAddr) -> Option<()> {
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

fn copy(out: &mut Vec<u8>, name: &str, h: &Header<'_>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    unfold(h.value, out);
    out.extend_from_slice(b"\r\n");
}

/// FNV-1a 64: a stable To-tag, so a retransmitted keep-alive gets the same answer.
fn fnv1a(parts: &[&[u8]]) -> u64 {
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
fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
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
fn push_hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX.get(((v >> (shift * 4)) & 0xf) as usize).copied().unwrap_or(b'0'));
    }
}

/// Writes an address as `Display` does (IPv4 dotted quad; IPv6 through
/// `fmt`, rarer on the path and with compression rules worth not redoing).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
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
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn push_decimal_for_tests(out: &mut Vec<u8>, v: u64) {
    push_decimal(out, v);
}

#[cfg(test)]
pub(crate) fn push_ip_for_tests(out: &mut Vec<u8>, ip: IpAddr) {
    push_ip(out, ip);
}
