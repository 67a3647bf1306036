//! SIP keep-alives: `NOTIFY` with `Event: keep-alive`, and `OPTIONS` pings,
//! answered `200 OK` as the server would answer them (`netserv-sip-answer`).

use crate::{Config, Kind};
use netserv_sip_answer::{Text, response_head};
use netserv_sip_scan::keepalive::{self, KeepAlive, Server};
use netserv_sip_scan::{EMPTY_HEADER, parse_datagram};
use std::fmt::Write as _;
use std::net::SocketAddr;

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
    response_head(&mut out, b"200 OK", &msg, source)?;
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
