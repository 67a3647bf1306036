//! One packet through a worker's tenant modules: the decision, as a value.
//! The NFQUEUE worker, the `module try` command and the benchmarks all call
//! [`decide`]. No I/O, and no heap allocation once the caller's buffers
//! have grown: the packet is parsed in place, the candidates come from the
//! table's index, a reply or replacement is built into the caller's buffer.

use super::builder::Builder;
use super::guard::Admit;
use super::local::{LocalParts, WorkerModules};
use super::packet::Transport;
use super::packet::{self, Parsed};
use crate::runtime::{self, CallVerdict, IpAddress, LiftedBytes, PacketMeta, SocketAddress};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// What to do with the intercepted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No module matched, or all accepted: let the original through.
    Accept,
    /// Let through the rewritten IP packet now in `Buffers::packet`.
    AcceptModified,
    /// Drop the original.
    Drop,
    /// Drop the original and send the IP packet now in `Buffers::packet`
    /// (from the original destination back to its source) to `to`.
    Reply { to: IpAddr },
}

/// Caller-owned output: the replacement or reply packet, reused per packet.
#[derive(Debug, Default)]
pub struct Buffers {
    pub packet: Vec<u8>,
}

impl Buffers {
    pub fn new() -> Self {
        Self { packet: Vec::with_capacity(2048) }
    }
}

/// The guest's view of the transport (the WIT contract's type).
fn wit_transport(t: Transport) -> runtime::Transport {
    match t {
        Transport::Udp => runtime::Transport::Udp,
        Transport::Tcp => runtime::Transport::Tcp,
    }
}

/// An address as the WIT contract spells it.
pub fn wit_addr(a: SocketAddr) -> SocketAddress {
    let address = match a.ip() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    };
    SocketAddress { address, port: a.port() }
}

pub fn meta_of(p: &Parsed<'_>) -> PacketMeta {
    PacketMeta {
        source: wit_addr(p.source),
        destination: wit_addr(p.destination),
        transport: wit_transport(p.transport),
    }
}

/// Runs the modules whose filter matches, in install order. Accept passes to
/// the next module; replace passes the new payload on; drop and reply end
/// the chain. Anything the host cannot carry out fails open. `gso`: the
/// packet is a GSO super-packet (several UDP datagrams behind one header),
/// which no module can judge as one datagram: it passes.
pub fn decide(w: &mut WorkerModules, ip_packet: &[u8], gso: bool, out: &mut Buffers) -> Decision {
    let Ok(parsed) = packet::parse(ip_packet) else {
        // Not ours to judge (a fragment, another protocol): fail open.
        return Decision::Accept;
    };
    if gso && parsed.transport == Transport::Udp {
        return Decision::Accept;
    }
    let WorkerModules { worker, table, locals, builder, replaced: carried, preempted } = w;
    let mut replaced = false;
    // Requests to the tenants' servers, then (for filters that ask) their
    // servers' responses; a module is called once per packet.
    let to = table.candidates(parsed.transport, parsed.destination.port());
    let from = table.response_candidates(parsed.transport, parsed.source.port());
    let calls = to.iter().map(|&i| (i, false)).chain(from.iter().filter(|i| !to.contains(i)).map(|&i| (i, true)));
    for (i, response) in calls {
        let Some(local) = locals.get_mut(i as usize) else { continue };
        let f = &local.module.filter;
        let matched = if response {
            f.matches_response(parsed.transport, parsed.source, parsed.destination)
        } else {
            f.matches(parsed.transport, parsed.source, parsed.destination)
        };
        if !matched {
            continue;
        }
        let payload = if replaced { &carried[..] } else { parsed.payload };
        match run_one(local.parts(), *worker, builder.as_ref(), *preempted, &parsed, payload, response, out) {
            Step::Continue => {}
            Step::Replaced => {
                LiftedBytes::with(|b| {
                    carried.clear();
                    carried.extend_from_slice(b);
                });
                replaced = true;
            }
            Step::End(d) => return d,
        }
    }
    if !replaced {
        return Decision::Accept;
    }
    // Rewriting TCP payloads would need sequence-number repair; run_one
    // refuses a replace on TCP, so only UDP gets here.
    out.packet.clear();
    if packet::write_udp(&mut out.packet, parsed.source, parsed.destination, parsed.hop_limit, carried) {
        Decision::AcceptModified
    } else {
        Decision::Accept
    }
}

enum Step {
    Continue,
    /// The module replaced the payload (its bytes are in the lift buffer).
    Replaced,
    End(Decision),
}

/// Whether the module may run a call now, by its guard (quarantining it
/// when it has been over budget too long).
pub(super) fn admit(local: &mut LocalParts<'_>, worker: usize, now: Instant) -> Admit {
    let module = local.module;
    let admit = local.guard.admit(now);
    match admit {
        Admit::Run => {
            if let Some(slot) = module.slot(worker) {
                slot.throttled_now.store(false, Relaxed);
            }
        }
        Admit::Throttled => {}
        Admit::Quarantine => {
            let p = module.policy.guard;
            module.quarantine(format!(
                "over its CPU budget ({} µs per {} ms) in {} windows in a row",
                p.cpu_budget.as_micros(),
                p.window.as_millis(),
                p.throttle_quarantine_windows
            ));
        }
    }
    admit
}

/// After a call that started at `t0`: its time charged to the module's
/// budget and counters; a fault handled. None: it faulted.
pub(super) fn charge<T>(
    local: &mut LocalParts<'_>,
    worker: usize,
    builder: Option<&Builder>,
    preempted: f64,
    t0: Instant,
    result: Result<T, String>,
) -> Option<T> {
    let module = local.module;
    let t1 = Instant::now();
    let spent = t1.saturating_duration_since(t0);
    if let Some(slot) = module.slot(worker) {
        slot.stats.cpu_ns.fetch_add(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        if local.guard.charge(spent, preempted) {
            slot.stats.throttled_windows.fetch_add(1, Relaxed);
            slot.throttled_now.store(true, Relaxed);
            tracing::debug!(tenant = %module.tenant, module = %module.name, worker, "module over its CPU budget: throttled for the rest of the window");
        }
    }
    match result {
        Ok(v) => Some(v),
        Err(why) => {
            local.fault(worker, builder, t1, why);
            None
        }
    }
}

// The packet path's state, passed apart so that no struct is built per packet.
#[allow(clippy::too_many_arguments)]
fn run_one(
    mut local: LocalParts<'_>,
    worker: usize,
    builder: Option<&Builder>,
    preempted: f64,
    parsed: &Parsed<'_>,
    payload: &[u8],
    response: bool,
    out: &mut Buffers,
) -> Step {
    let module = local.module;
    let Some(slot) = module.slot(worker) else { return Step::Continue };
    let stats = &slot.stats;
    stats.packets.fetch_add(1, Relaxed);
    if module.is_quarantined() {
        stats.fail_open.fetch_add(1, Relaxed);
        return Step::Continue;
    }
    let t0 = Instant::now();
    match admit(&mut local, worker, t0) {
        Admit::Run => {}
        Admit::Throttled => {
            stats.throttled.fetch_add(1, Relaxed);
            return Step::Continue;
        }
        Admit::Quarantine => {
            stats.fail_open.fetch_add(1, Relaxed);
            return Step::Continue;
        }
    }
    let Some(instance) = local.instance(worker, builder, t0) else {
        stats.fail_open.fetch_add(1, Relaxed);
        return Step::Continue;
    };
    let result = instance.on_packet(meta_of(parsed), payload);
    let verdict = match charge(&mut local, worker, builder, preempted, t0, result) {
        Some(v) => v,
        None => {
            stats.fail_open.fetch_add(1, Relaxed);
            return Step::Continue;
        }
    };
    match verdict {
        CallVerdict::Accept => {
            stats.accepted.fetch_add(1, Relaxed);
            Step::Continue
        }
        CallVerdict::Drop => {
            stats.dropped.fetch_add(1, Relaxed);
            Step::End(Decision::Drop)
        }
        CallVerdict::Replace(len) => {
            // The rewritten packet travels back in one netlink attribute
            // (at most 65,531 bytes): header room for IPv6 and UDP included.
            if parsed.transport == Transport::Tcp || len > packet::MAX_REPLACED_PAYLOAD {
                stats.verdict_errors.fetch_add(1, Relaxed);
                return Step::Continue;
            }
            stats.replaced.fetch_add(1, Relaxed);
            Step::Replaced
        }
        CallVerdict::Reply(len) => {
            // A reply leaves from the packet's destination: for a server's
            // response that is a phone's address, which no module may speak as.
            if response || parsed.transport != Transport::Udp || len > module.policy.reply_max {
                stats.verdict_errors.fetch_add(1, Relaxed);
                return Step::Continue;
            }
            // The answer leaves from the intercepted destination (the
            // server's address and port) towards the packet's source.
            out.packet.clear();
            let built =
                LiftedBytes::with(|b| packet::write_udp(&mut out.packet, parsed.destination, parsed.source, 64, b));
            if built {
                stats.replied.fetch_add(1, Relaxed);
                Step::End(Decision::Reply { to: parsed.source.ip() })
            } else {
                stats.verdict_errors.fetch_add(1, Relaxed);
                Step::Continue
            }
        }
    }
}
