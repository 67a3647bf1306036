//! What a mirrored SIP message tells the plugin about a phone.

use crate::hep::{Hep, PROTO_SIP};
use netserv_sip_scan::keepalive::{self, KeepAlive, Server};
use netserv_sip_scan::{EMPTY_HEADER, HeaderName, StartLine, params_iter, parse_datagram};
use std::net::SocketAddr;

/// RFC 3261 §10.2.1.1: the registrar's default when a REGISTER names no expiry.
const DEFAULT_EXPIRES: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A NAT keep-alive that reached the server, by the rule the keepalive
    /// module answers by ([`keepalive::classify`]).
    KeepAlive { phone: SocketAddr },
    /// A REGISTER; `expires` 0 is an unregistration. `user`: the user part
    /// of its To URI (the address of record), which the TURN credentials
    /// endpoint is asked by.
    Register { phone: SocketAddr, expires: u32, user: Option<String> },
    /// An out-of-dialog INVITE (no To tag): a source of the load that
    /// overload control sheds at the edge.
    Invite { source: SocketAddr },
    /// Anything else (in-dialog requests, responses, unparseable messages).
    Other,
}

/// What the deployed keepalive module answers, so that the plugin deploys
/// it for exactly those keep-alives: the server address the phones reach
/// (the module's filter; not the address Kamailio sees, which differs
/// behind a NAT), the module's `domains`, and its `notify` / `options`
/// switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveRule {
    pub server: std::net::IpAddr,
    pub domains: Vec<String>,
    pub notify: bool,
    pub options: bool,
}

/// Classifies one mirrored message; `phone` is where it came from as the
/// server saw it (the phone's NAT binding).
pub fn classify(hep: &Hep<'_>, rule: &KeepaliveRule) -> Observation {
    if hep.proto_type != PROTO_SIP {
        return Observation::Other;
    }
    let mut headers = [EMPTY_HEADER; 48];
    let Ok(msg) = parse_datagram(hep.payload, &mut headers) else {
        return Observation::Other;
    };
    let StartLine::Request { method, .. } = msg.start else {
        return Observation::Other;
    };
    let phone = hep.source;
    let server = Server { address: rule.server, domains: &rule.domains };
    match keepalive::classify(&msg, &server) {
        Some(KeepAlive::Notify) if rule.notify => return Observation::KeepAlive { phone },
        Some(KeepAlive::Options) if rule.options => return Observation::KeepAlive { phone },
        _ => {}
    }
    match method {
        b"REGISTER" => Observation::Register {
            phone,
            expires: register_expires(&msg),
            user: msg.header(HeaderName::To).and_then(|h| uri_user(h.value)),
        },
        b"INVITE" if msg.header(HeaderName::To).and_then(|t| netserv_sip_scan::name_addr_tag(t.value)).is_none() => {
            Observation::Invite { source: phone }
        }
        _ => Observation::Other,
    }
}

/// The user part of a To / From value's SIP URI (`<sip:alice@host>;tag=…`),
/// when it is a plain token (letters, digits, `-_.+!~*'()`, at most 64).
pub fn uri_user(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let uri = text.split(['<', '>']).find(|p| p.contains("sip:") || p.contains("sips:")).unwrap_or(text);
    let after = uri.split_once("sips:").or_else(|| uri.split_once("sip:"))?.1;
    let (user, _) = after.split_once('@')?;
    let user = user.split(';').next()?;
    let ok = !user.is_empty()
        && user.len() <= 64
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+!~*'()".contains(&b));
    ok.then(|| user.to_owned())
}

/// The lifetime a REGISTER asks for: the first Contact's `expires` parameter,
/// else the Expires header, else the default.
fn register_expires(msg: &netserv_sip_scan::Message<'_, '_>) -> u32 {
    let number = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(c) = msg.header(HeaderName::Contact) {
        if c.value.trim_ascii() == b"*" {
            return 0;
        }
        let params = c.value.iter().rposition(|&b| b == b'>').and_then(|i| c.value.get(i + 1..)).unwrap_or(c.value);
        let params = params.iter().position(|&b| b == b';').and_then(|i| params.get(i..)).unwrap_or_default();
        for (name, value) in params_iter(params) {
            if name.eq_ignore_ascii_case(b"expires")
                && let Some(n) = value.and_then(number)
            {
                return n;
            }
        }
    }
    msg.header(HeaderName::Expires).and_then(|h| number(h.value)).unwrap_or(DEFAULT_EXPIRES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hep(payload: &[u8]) -> Hep<'_> {
        Hep {
            source: "198.18.1.10:5099".parse().expect("addr"),
            destination: "198.18.2.20:5060".parse().expect("addr"),
            ip_protocol: 17,
            proto_type: PROTO_SIP,
            timestamp: None,
            payload,
        }
    }

    const NOTIFY: &[u8] = b"NOTIFY sip:198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5099;branch=z9hG4bK-1\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:198.18.2.20>\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nContent-Length: 0\r\n\r\n";

    fn register(extra: &str) -> Vec<u8> {
        format!(
            "REGISTER sip:198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5099;branch=z9hG4bK-2\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:a@x>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn rule() -> KeepaliveRule {
        KeepaliveRule { server: "198.18.2.20".parse().expect("ip"), domains: Vec::new(), notify: true, options: true }
    }

    fn observed(h: &Hep<'_>) -> Observation {
        classify(h, &rule())
    }

    #[test]
    fn the_address_of_record_user() {
        assert_eq!(uri_user(b"<sip:phone-0001@198.18.2.20>;tag=x").as_deref(), Some("phone-0001"));
        assert_eq!(uri_user(b"\"Alice\" <sips:alice@example.com>").as_deref(), Some("alice"));
        assert_eq!(uri_user(b"sip:bob@host;transport=udp").as_deref(), Some("bob"));
        assert_eq!(uri_user(b"<sip:198.18.2.20>"), None, "no user part");
        assert_eq!(uri_user(b"<sip:a b@x>"), None, "not a token");
        assert_eq!(uri_user(&[0xff, b'@']), None);
    }

    #[test]
    fn keepalives_and_registrations() {
        let phone: SocketAddr = "198.18.1.10:5099".parse().expect("addr");
        assert_eq!(observed(&hep(NOTIFY)), Observation::KeepAlive { phone });
        let r = register("Contact: <sip:a@198.18.1.10:5099>;expires=120\r\nExpires: 600\r\n");
        assert_eq!(observed(&hep(&r)), Observation::Register { phone, expires: 120, user: Some("a".into()) });
        let r = register("Contact: <sip:a@198.18.1.10:5099>\r\nExpires: 600\r\n");
        assert_eq!(observed(&hep(&r)), Observation::Register { phone, expires: 600, user: Some("a".into()) });
        let r = register("Contact: *\r\nExpires: 0\r\n");
        assert_eq!(observed(&hep(&r)), Observation::Register { phone, expires: 0, user: Some("a".into()) });
        let r = register("Contact: <sip:a@198.18.1.10:5099>\r\n");
        assert_eq!(
            observed(&hep(&r)),
            Observation::Register { phone, expires: DEFAULT_EXPIRES, user: Some("a".into()) }
        );
        let other_event = String::from_utf8_lossy(NOTIFY).replace("keep-alive", "presence");
        assert_eq!(observed(&hep(other_event.as_bytes())), Observation::Other);
        assert_eq!(observed(&hep(b"SIP/2.0 200 OK\r\n\r\n")), Observation::Other);
        assert_eq!(observed(&hep(b"garbage")), Observation::Other);
        // OPTIONS: a keep-alive when it names the server (by the HEP
        // destination's address, or a configured domain), not a user.
        let options = |uri: &str| {
            String::from_utf8_lossy(NOTIFY)
                .replace("NOTIFY sip:198.18.2.20", &format!("OPTIONS {uri}"))
                .replace("1 NOTIFY", "1 OPTIONS")
        };
        assert_eq!(observed(&hep(options("sip:198.18.2.20").as_bytes())), Observation::KeepAlive { phone });
        assert_eq!(observed(&hep(options("sip:bob@198.18.9.9").as_bytes())), Observation::Other);
        let for_domain = options("sip:voip.example");
        let with_domain = KeepaliveRule { domains: vec!["voip.example".into()], ..rule() };
        assert_eq!(classify(&hep(for_domain.as_bytes()), &with_domain), Observation::KeepAlive { phone });
        assert_eq!(observed(&hep(for_domain.as_bytes())), Observation::Other);
        // What the module is told not to answer is not deployed for.
        let no_options = KeepaliveRule { options: false, ..rule() };
        assert_eq!(classify(&hep(options("sip:198.18.2.20").as_bytes()), &no_options), Observation::Other);
        let no_notify = KeepaliveRule { notify: false, ..rule() };
        assert_eq!(classify(&hep(NOTIFY), &no_notify), Observation::Other);
        // The server as the phones reach it, not as Kamailio sees itself
        // (behind a NAT the HEP destination is the private address).
        let ping = options("sip:198.18.2.20");
        let mut natted = hep(ping.as_bytes());
        natted.destination = "10.0.0.5:5060".parse().expect("addr");
        assert_eq!(classify(&natted, &rule()), Observation::KeepAlive { phone });
    }
}
