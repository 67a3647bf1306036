//! KeepAlive responder: answers SIP NAT keep-alives on the SIP server's behalf.
//!
//! The appliance intercepts packets addressed to the ITSP's SIP server and
//! hands them here. What is answered (each can be switched off by property):
//!
//! | keep-alive | answer |
//! |---|---|
//! | `NOTIFY` with `Event: keep-alive` (the NetServ thesis's form) | `200 OK` |
//! | `OPTIONS` addressed to the server itself (Request-URI host is the server's address or one of `domains`) | `200 OK` |
//! | CRLFCRLF ping (RFC 5626 §4.4.1) | CRLF pong |
//! | STUN Binding request on the SIP port (RFC 5626 §4.4.2, RFC 8489) | Binding success with XOR-MAPPED-ADDRESS |
//!
//! Empty datagrams and datagrams of at most four bytes (NAT probes; no SIP
//! message or STUN message is that short) are absorbed. Everything else,
//! including every message the scanner rejects, passes to the server untouched:
//! an invalid keep-alive is the server's to judge, never ours to answer.
//!
//! This crate is plain Rust and testable natively; `guest.rs` adapts it to the
//! `packet-module` WIT world when built for `wasm32-wasip2`.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod config;
#[cfg(target_arch = "wasm32")]
mod guest;
mod sip;
mod stun;

pub use config::{Config, ConfigError};

use std::net::SocketAddr;

/// What to do with one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it reach the server.
    Pass,
    /// Drop it silently.
    Absorb,
    /// Drop it and send this payload back to its source, from the server's address.
    Reply(Vec<u8>),
}

/// Which rule decided, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Notify,
    Options,
    CrlfPing,
    Stun,
    Probe,
    Other,
}

impl Kind {
    /// Every kind, in declaration order (`kind as usize` indexes this).
    pub const ALL: [Kind; 6] = [Kind::Notify, Kind::Options, Kind::CrlfPing, Kind::Stun, Kind::Probe, Kind::Other];

    /// Counter name exported through the host's `counters` interface.
    pub fn counter(self) -> &'static str {
        match self {
            Kind::Notify => "answered_notify",
            Kind::Options => "answered_options",
            Kind::CrlfPing => "answered_crlf",
            Kind::Stun => "answered_stun",
            Kind::Probe => "absorbed_probe",
            Kind::Other => "passed",
        }
    }
}

/// Decides on one UDP payload from `source` to `destination` (the server).
pub fn handle(cfg: &Config, source: SocketAddr, destination: SocketAddr, payload: &[u8]) -> (Action, Kind) {
    // RFC 5626 §4.4.1: the CRLFCRLF ping is answered with a single CRLF pong.
    if payload == b"\r\n\r\n" {
        return if cfg.crlf { (Action::Reply(b"\r\n".to_vec()), Kind::CrlfPing) } else { (Action::Pass, Kind::Other) };
    }
    if payload.len() <= 4 {
        return if cfg.probes { (Action::Absorb, Kind::Probe) } else { (Action::Pass, Kind::Other) };
    }
    if netserv_stun_wire::looks_like_stun(payload) {
        if cfg.stun
            && let Some(reply) = stun::answer_binding(source, payload)
        {
            return (Action::Reply(reply), Kind::Stun);
        }
        return (Action::Pass, Kind::Other);
    }
    match sip::answer(cfg, source, destination, payload) {
        Some((reply, kind)) => (Action::Reply(reply), kind),
        None => (Action::Pass, Kind::Other),
    }
}

#[cfg(test)]
mod tests;
