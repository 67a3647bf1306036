//! One packet through the tenant modules: the decision, as a value. The NFQUEUE
//! worker and the `module try` command both call [`decide`].

use super::packet::{self, Parsed};
use super::table::{ActiveModule, Table};
use crate::runtime::{CallOutcome, IpAddress, PacketMeta, SocketAddress, Transport, Verdict};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

/// What to do with the intercepted packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No module matched, or all accepted: let the original through.
    Accept,
    /// Let through this rewritten IP packet.
    AcceptModified(Vec<u8>),
    /// Drop the original.
    Drop,
    /// Drop the original and send this IP packet (from the original destination
    /// back to the original source) through a raw socket.
    Reply { packet: Vec<u8>, to: IpAddr },
}

fn wit_addr(a: SocketAddr) -> SocketAddress {
    let address = match a.ip() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    };
    SocketAddress { address, port: a.port() }
}

pub fn meta_of(p: &Parsed<'_>) -> PacketMeta {
    PacketMeta { source: wit_addr(p.source), destination: wit_addr(p.destination), transport: p.transport }
}

/// Runs the matching modules in install order. Accept passes to the next
/// module; replace passes the new payload on; drop and reply end the chain.
/// Anything the host cannot carry out fails open.
pub fn decide(table: &Table, ip_packet: &[u8]) -> Decision {
    let Ok(parsed) = packet::parse(ip_packet) else {
        // Not ours to judge (a fragment, another protocol): fail open.
        return Decision::Accept;
    };
    let mut payload: Option<Vec<u8>> = None;
    for m in table.modules.iter().filter(|m| m.filter.matches(parsed.transport, parsed.source, parsed.destination)) {
        let current = payload.as_deref().unwrap_or(parsed.payload);
        match run_one(m, &parsed, current) {
            Step::Continue => {}
            Step::Replace(p) => payload = Some(p),
            Step::End(d) => return d,
        }
    }
    match payload {
        None => Decision::Accept,
        Some(p) => match parsed.transport {
            Transport::Udp => packet::build_udp(parsed.source, parsed.destination, parsed.hop_limit, &p)
                .map_or(Decision::Accept, Decision::AcceptModified),
            // Rewriting TCP payloads would need sequence-number repair; the
            // replace verdict is refused at the last step for TCP (see run_one).
            Transport::Tcp => Decision::Accept,
        },
    }
}

enum Step {
    Continue,
    Replace(Vec<u8>),
    End(Decision),
}

fn run_one(m: &ActiveModule, parsed: &Parsed<'_>, payload: &[u8]) -> Step {
    m.stats.packets.fetch_add(1, Relaxed);
    let outcome = m.instance.lock().on_packet(meta_of(parsed), payload);
    match outcome {
        CallOutcome::FailOpen(_) => {
            m.stats.fail_open.fetch_add(1, Relaxed);
            Step::Continue
        }
        CallOutcome::Verdict(Verdict::Accept) => {
            m.stats.accepted.fetch_add(1, Relaxed);
            Step::Continue
        }
        CallOutcome::Verdict(Verdict::Drop) => {
            m.stats.dropped.fetch_add(1, Relaxed);
            Step::End(Decision::Drop)
        }
        CallOutcome::Verdict(Verdict::Replace(p)) => {
            if parsed.transport == Transport::Tcp || p.len() > 65_000 {
                m.stats.verdict_errors.fetch_add(1, Relaxed);
                return Step::Continue;
            }
            m.stats.replaced.fetch_add(1, Relaxed);
            Step::Replace(p)
        }
        CallOutcome::Verdict(Verdict::Reply(p)) => {
            // The answer leaves from the intercepted destination (the server's
            // address and port) towards the packet's source.
            let built = (parsed.transport == Transport::Udp)
                .then(|| packet::build_udp(parsed.destination, parsed.source, 64, &p))
                .flatten();
            match built {
                Some(packet) => {
                    m.stats.replied.fetch_add(1, Relaxed);
                    Step::End(Decision::Reply { packet, to: parsed.source.ip() })
                }
                None => {
                    m.stats.verdict_errors.fetch_add(1, Relaxed);
                    Step::Continue
                }
            }
        }
    }
}
