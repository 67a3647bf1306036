//! Which SIP requests are NAT keep-alives: the one rule, shared by the
//! keepalive module (which answers them at the edge) and the SIP server
//! plugin's observer (which sees them reach the server and deploys that
//! module). Two copies of it drifted once; there is one now.
//!
//! - `NOTIFY` whose `Event` type is `keep-alive` (the NetServ thesis's form);
//! - `OPTIONS` whose Request-URI names the server itself — its address, or
//!   one of the domains it answers for — not a user behind it (an OPTIONS to
//!   a user is a real request a proxy forwards).

use crate::{HeaderName, Message, StartLine};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Notify,
    Options,
}

/// The server the requests are addressed to.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a, S: AsRef<str>> {
    /// The address the request was sent to.
    pub address: IpAddr,
    /// Hosts the server answers OPTIONS for, besides its address.
    pub domains: &'a [S],
}

/// The keep-alive `msg` is, if it is one.
pub fn classify<S: AsRef<str>>(msg: &Message<'_, '_>, server: &Server<'_, S>) -> Option<KeepAlive> {
    let StartLine::Request { method, uri, .. } = msg.start else {
        return None;
    };
    match method {
        b"NOTIFY" if msg.header(HeaderName::Event).is_some_and(|h| is_keepalive_event(h.value)) => {
            Some(KeepAlive::Notify)
        }
        b"OPTIONS" if names_server(uri, server) => Some(KeepAlive::Options),
        _ => None,
    }
}

/// Whether an `Event` header value's type is `keep-alive` (RFC 6665 §8.2.1:
/// the type ends at a parameter or whitespace; compared case-insensitively).
pub fn is_keepalive_event(value: &[u8]) -> bool {
    let ty = value.split(|&b| b == b';' || b == b' ' || b == b'\t').next().unwrap_or_default();
    ty.eq_ignore_ascii_case(b"keep-alive")
}

/// Whether a Request-URI's host is the server: its address or one of its domains.
pub fn names_server<S: AsRef<str>>(uri: &[u8], server: &Server<'_, S>) -> bool {
    let Some(rest) = strip_scheme(uri) else {
        return false;
    };
    let hostport = match rest.iter().position(|&b| b == b'@') {
        Some(at) => rest.get(at + 1..).unwrap_or_default(),
        None => rest,
    };
    let host = if hostport.first() == Some(&b'[') {
        let end = hostport.iter().position(|&b| b == b']').unwrap_or(hostport.len());
        hostport.get(1..end).unwrap_or_default()
    } else {
        let end = hostport.iter().position(|&b| matches!(b, b':' | b';' | b'?')).unwrap_or(hostport.len());
        hostport.get(..end).unwrap_or_default()
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    if host.parse::<IpAddr>().is_ok_and(|ip| ip == server.address) {
        return true;
    }
    server.domains.iter().any(|d| d.as_ref().eq_ignore_ascii_case(host))
}

/// A `domains` setting as both the module's properties and the plugin's
/// config write it: comma-separated, blanks ignored.
pub fn domain_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|d| !d.is_empty())
}

/// An on/off setting as the module's properties write it.
pub fn flag_value(v: &str) -> Option<bool> {
    match v {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn strip_scheme(uri: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"sip:"[..], b"sips:"] {
        if uri.len() >= scheme.len() && uri.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)) {
            return uri.get(scheme.len()..);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EMPTY_HEADER, parse_datagram};

    const SERVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 2, 20));

    fn kind(raw: &str, domains: &[&str]) -> Option<KeepAlive> {
        let mut headers = [EMPTY_HEADER; 16];
        let msg = parse_datagram(raw.as_bytes(), &mut headers).expect("parses");
        classify(&msg, &Server { address: SERVER, domains })
    }

    fn request(start: &str, extra: &str) -> String {
        let method = start.split(' ').next().unwrap_or_default();
        format!(
            "{start} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn notify_keepalive_by_its_event_type() {
        assert_eq!(kind(&request("NOTIFY sip:198.18.2.20", "Event: keep-alive\r\n"), &[]), Some(KeepAlive::Notify));
        assert_eq!(kind(&request("NOTIFY sip:x", "Event: Keep-Alive;id=1\r\n"), &[]), Some(KeepAlive::Notify));
        // The type ends at whitespace of either kind (the two copies differed here).
        assert_eq!(kind(&request("NOTIFY sip:x", "Event: keep-alive\t;id=1\r\n"), &[]), Some(KeepAlive::Notify));
        assert_eq!(kind(&request("NOTIFY sip:x", "Event: presence\r\n"), &[]), None);
        assert_eq!(kind(&request("NOTIFY sip:x", "Event: keep-alive-ish\r\n"), &[]), None);
        assert_eq!(kind(&request("NOTIFY sip:x", ""), &[]), None, "no Event header");
    }

    #[test]
    fn options_only_when_it_names_the_server() {
        assert_eq!(kind(&request("OPTIONS sip:198.18.2.20", ""), &[]), Some(KeepAlive::Options));
        assert_eq!(kind(&request("OPTIONS sip:198.18.2.20:5060;transport=udp", ""), &[]), Some(KeepAlive::Options));
        assert_eq!(kind(&request("OPTIONS sips:ping@198.18.2.20", ""), &[]), Some(KeepAlive::Options));
        assert_eq!(kind(&request("OPTIONS sip:Example.COM", ""), &["example.com"]), Some(KeepAlive::Options));
        // A user behind the server: a real request, forwarded by a proxy.
        assert_eq!(kind(&request("OPTIONS sip:alice@198.18.9.9", ""), &["example.com"]), None);
        assert_eq!(kind(&request("OPTIONS sip:other.org", ""), &["example.com"]), None);
        assert_eq!(kind(&request("OPTIONS tel:+15551234", ""), &[]), None);
        assert_eq!(kind(&request("INVITE sip:198.18.2.20", ""), &[]), None);
        let v6 = Server { address: "2001:db8::20".parse().expect("v6"), domains: &[] as &[&str] };
        assert!(names_server(b"sip:[2001:db8::20]:5060", &v6));
        assert!(!names_server(b"sip:[2001:db8::21]", &v6));
    }

    #[test]
    fn responses_are_never_keepalives() {
        let mut headers = [EMPTY_HEADER; 16];
        let raw =
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n\
Call-ID: c\r\nCSeq: 1 OPTIONS\r\nEvent: keep-alive\r\nContent-Length: 0\r\n\r\n";
        let msg = parse_datagram(raw, &mut headers).expect("parses");
        assert_eq!(classify(&msg, &Server { address: SERVER, domains: &[] as &[&str] }), None);
    }

    #[test]
    fn flags() {
        assert_eq!([flag_value("on"), flag_value("0"), flag_value("maybe")], [Some(true), Some(false), None]);
    }

    #[test]
    fn domain_lists() {
        assert_eq!(domain_list(" a.example, ,B.example,").collect::<Vec<_>>(), ["a.example", "B.example"]);
    }
}
