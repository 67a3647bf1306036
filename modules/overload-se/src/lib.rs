//! Overload-control sending entity: RFC 7339 (loss-based) and RFC 7415
//! (rate-based) at the network edge.
//!
//! The appliance intercepts SIP requests on their way to the ITSP's server
//! (and, for in-band reports, the server's responses on their way back) and
//! hands them here. Under control, the excess is answered at the edge with
//! `503 Service Unavailable` as if the server had sent it, so it never
//! enters the ITSP's network. DESIGN.md §4.3 is the behaviour:
//!
//! - control per receiving entity (the request's destination address and
//!   port), from reports that come in-band (`oc`, `oc-algo`, `oc-validity`,
//!   `oc-seq` in the top Via of a response to a request this module passed)
//!   or through the appliance's feedback API;
//! - a report counts only when its `oc-seq` is greater than the last;
//!   `oc-validity` missing means 500 ms; `oc-validity=0` ends control;
//! - initial requests are shed first, in-dialog and emergency ones only when
//!   those are exhausted, ACK / CANCEL / BYE never (`classify`, `control`);
//! - a shed INVITE's ACK is absorbed, and a retransmission of a shed request
//!   is shed again: the edge answers as one stateful server would;
//! - a retransmission of a request it passed is never shed; under control
//!   the copies of one are absorbed for 1 to 2 s after the last that passed
//!   (the original waits in the overloaded server's queue), then one passes;
//! - `oc` and `oc-algo="loss"` are added to the top Via of what it
//!   passes, so that an RFC 7339 server knows to report (`advertise`:
//!   `loss,rate` offers both, `off` nothing; see [`Advertise`] for why the
//!   default leaves rate out).
//!
//! This crate is plain Rust and testable natively; `guest.rs` adapts it to
//! the `packet-module` WIT world when built for `wasm32-wasip2`.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod classify;
mod config;
mod control;
#[cfg(target_arch = "wasm32")]
mod guest;

pub use classify::{Category, parse_seq};
pub use config::{Advertise, Config, ConfigError};
pub use control::{Algorithm, Report, Shared, Taken};

use control::Control;
use netserv_sip_scan::{EMPTY_HEADER, parse_datagram};
use std::net::SocketAddr;

/// Bound on header fields per message.
const MAX_HEADERS: usize = 64;
/// Receiving entities one instance tracks.
pub const MAX_SERVERS: usize = 64;
/// `oc-validity` when a response names none (RFC 7339 §5.2).
pub const DEFAULT_VALIDITY_MS: u32 = 500;
/// Salts of the transactions remembered in the host's shared set: those
/// passed (whose responses may report) and those shed (whose ACK and
/// retransmissions are the edge's to answer). Shared, because a request
/// and its response may reach different workers' instances.
const PASSED: u64 = 0x5041_5353;
const SHED: u64 = 0x5348_4544_0000_0000;
/// How long, under control, the copies of a request are absorbed after one
/// passed. Kept as a key per 1 s epoch in the shared set, so a copy is
/// absorbed for 1 to 2 s after the last one that passed, and the next passes
/// (the original may have been lost, not queued: the edge keeps no
/// transaction and does not retransmit itself). With T1 = 500 ms that lets
/// through the copies sent at 3.5, 7.5, 15.5 s (INVITE) or every 4 s
/// (BYE, CANCEL) and absorbs those at 0.5 and 1.5 s.
const HOLD_NS: u64 = 1_000_000_000;

fn held_key(transaction: u64, now: u64) -> u64 {
    transaction ^ 0x484F_4C44_0000_0000 ^ (now / HOLD_NS).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// What to do with one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pass,
    /// Pass this payload instead (the request with `oc` in its top Via).
    Replace(Vec<u8>),
    /// Drop it silently (a shed INVITE's ACK).
    Absorb,
    /// Answer its source with this payload, from the server's address.
    Reply(Vec<u8>),
}

/// What happened, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AdmittedInitial,
    AdmittedPriority,
    ShedInitial,
    ShedPriority,
    NeverShed,
    /// A retransmission of a request it passed: passed again, not judged.
    Retransmission,
    /// A copy of a request it passed moments ago, under control: dropped
    /// (the original waits in the server's queue).
    RetransmissionAbsorbed,
    AckAbsorbed,
    /// Not a SIP request this module judges (not SIP, unparsable, a response).
    Other,
    Report(Taken),
    /// A response's report for a request this module never passed: ignored.
    Unsolicited,
}

impl Outcome {
    /// Every counted outcome and its counter name.
    pub const COUNTERS: [(Outcome, &'static str); 13] = [
        (Outcome::AdmittedInitial, "admitted_initial"),
        (Outcome::AdmittedPriority, "admitted_priority"),
        (Outcome::ShedInitial, "shed_initial"),
        (Outcome::ShedPriority, "shed_priority"),
        (Outcome::NeverShed, "passed_never_shed"),
        (Outcome::Retransmission, "passed_retransmission"),
        (Outcome::RetransmissionAbsorbed, "absorbed_retransmission"),
        (Outcome::AckAbsorbed, "absorbed_ack"),
        (Outcome::Other, "passed_other"),
        (Outcome::Report(Taken::Accepted), "reports_accepted"),
        (Outcome::Report(Taken::Stale), "reports_stale"),
        (Outcome::Report(Taken::Ended), "control_ended"),
        (Outcome::Unsolicited, "reports_unsolicited"),
    ];

    pub fn counter_index(self) -> Option<usize> {
        Self::COUNTERS.iter().position(|(o, _)| *o == self)
    }
}

/// One instance's sending entity.
pub struct Se<H: Shared> {
    cfg: Config,
    host: H,
    servers: Vec<(SocketAddr, Control)>,
}

/// The host bucket's key for a server: the same in every instance.
fn key_of(server: SocketAddr) -> u32 {
    let h = classify::fnv1a(&[server.to_string().as_bytes()]);
    (h ^ (h >> 32)) as u32
}

impl<H: Shared> Se<H> {
    pub fn new(cfg: Config, host: H) -> Self {
        Self { cfg, host, servers: Vec::new() }
    }

    /// The index of `server`'s control state, made if there is room (the
    /// oldest server without control in force gives its place).
    fn slot(&mut self, server: SocketAddr) -> Option<usize> {
        if let Some(i) = self.servers.iter().position(|(s, _)| *s == server) {
            return Some(i);
        }
        if self.servers.len() >= MAX_SERVERS {
            let idle = self.servers.iter().position(|(_, c)| c.active.is_none())?;
            self.servers.remove(idle);
        }
        self.servers.push((server, Control::new(key_of(server))));
        Some(self.servers.len() - 1)
    }

    /// A report for `server` at `now` (ns).
    pub fn report(&mut self, now: u64, server: SocketAddr, r: Report) -> Outcome {
        let Some(i) = self.slot(server) else { return Outcome::Other };
        let Some((_, c)) = self.servers.get_mut(i) else { return Outcome::Other };
        Outcome::Report(c.report(now, r, &mut self.host))
    }

    /// The report in force for `server`, with the ms left of it.
    pub fn current(&self, now: u64, server: SocketAddr) -> Option<(Report, u64)> {
        self.servers.iter().find(|(s, _)| *s == server).and_then(|(_, c)| c.current(now))
    }

    /// A packet from `source` to `destination` at `now` (ns): a request to a
    /// server, or a response from one.
    pub fn packet(
        &mut self,
        now: u64,
        source: SocketAddr,
        destination: SocketAddr,
        payload: &[u8],
    ) -> (Action, Outcome) {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(msg) = parse_datagram(payload, &mut headers) else { return (Action::Pass, Outcome::Other) };
        if let Some(inband) = classify::response(&msg) {
            return (Action::Pass, self.inband(now, source, inband));
        }
        let Some(facts) = classify::request(payload, &msg) else { return (Action::Pass, Outcome::Other) };
        if self.host.contains(facts.transaction ^ SHED) {
            // The ACK of a 503 the edge sent ends that transaction here; a
            // retransmission of a shed request gets the same answer.
            if facts.is_ack {
                return (Action::Absorb, Outcome::AckAbsorbed);
            }
            if facts.category != classify::Category::NeverShed {
                return self.reject(&msg, source, &facts);
            }
        }
        let copy = self.host.contains(facts.transaction ^ PASSED);
        if copy && !facts.is_ack && self.under_control(now, destination) && self.held(now, facts.transaction) {
            // A copy of a request it passed moments ago, while the server is
            // overloaded: the original waits in the server's queue, and the
            // copy would only lengthen it (RFC 6357 §3). Absorbed, as a
            // stateful proxy absorbs them; not answered (a 100 would stop an
            // INVITE's copies for good, and the edge does not resend).
            return (Action::Absorb, Outcome::RetransmissionAbsorbed);
        }
        if copy && facts.category != Category::NeverShed {
            // A retransmission of a request it let through: the server is at
            // work on it, and a 503 now would answer what the server answers too.
            self.hold(now, facts.transaction);
            return self.pass(payload, &facts, Outcome::Retransmission);
        }
        let shed = match self.slot(destination) {
            Some(i) => match self.servers.get_mut(i) {
                Some((_, c)) => c.shed(now, facts.category, &self.cfg, &mut self.host),
                None => false,
            },
            None => false,
        };
        if shed {
            self.host.remember(facts.transaction ^ SHED);
            return self.reject(&msg, source, &facts);
        }
        self.host.remember(facts.transaction ^ PASSED);
        if !facts.is_ack {
            self.hold(now, facts.transaction);
        }
        let outcome = match facts.category {
            Category::Initial => Outcome::AdmittedInitial,
            Category::Priority => Outcome::AdmittedPriority,
            Category::NeverShed => Outcome::NeverShed,
        };
        self.pass(payload, &facts, outcome)
    }

    /// Passes the request, with `oc` offered in its top Via unless told not to.
    fn pass(&self, payload: &[u8], facts: &classify::RequestFacts, outcome: Outcome) -> (Action, Outcome) {
        let advertised = self.cfg.advertise.params();
        if advertised.is_empty() || facts.client_does_oc {
            return (Action::Pass, outcome);
        }
        let mut out = Vec::with_capacity(payload.len() + advertised.len());
        out.extend_from_slice(payload.get(..facts.top_via_end).unwrap_or_default());
        out.extend_from_slice(advertised);
        out.extend_from_slice(payload.get(facts.top_via_end..).unwrap_or_default());
        (Action::Replace(out), outcome)
    }

    fn inband(&mut self, now: u64, server: SocketAddr, inband: classify::InBand) -> Outcome {
        let Some(oc) = inband.oc else { return Outcome::Other };
        if !self.host.contains(inband.transaction ^ PASSED) {
            return Outcome::Unsolicited;
        }
        // Without an `oc-seq` a report cannot be ordered: it counts as the
        // next one after the last.
        let seq = match inband.seq {
            Some(s) => s,
            None => self
                .servers
                .iter()
                .find(|(s, _)| *s == server)
                .and_then(|(_, c)| c.last_seq)
                .map_or(0, |s| s.saturating_add(1)),
        };
        let r = Report {
            algorithm: if inband.rate { Algorithm::Rate } else { Algorithm::Loss },
            oc: if inband.rate { oc } else { oc.min(100) },
            validity_ms: inband.validity_ms.unwrap_or(DEFAULT_VALIDITY_MS),
            seq,
        };
        self.report(now, server, r)
    }

    /// Whether a report that sheds is in force for `server` (a rate report
    /// always limits; the monitor sends none while it sheds nothing).
    fn under_control(&self, now: u64, server: SocketAddr) -> bool {
        self.current(now, server).is_some_and(|(r, left)| left > 0 && (r.algorithm == Algorithm::Rate || r.oc > 0))
    }

    /// Whether a copy of `transaction` passed within the hold.
    fn held(&mut self, now: u64, transaction: u64) -> bool {
        self.host.contains(held_key(transaction, now))
            || self.host.contains(held_key(transaction, now.saturating_sub(HOLD_NS)))
    }

    fn hold(&mut self, now: u64, transaction: u64) {
        self.host.remember(held_key(transaction, now));
    }

    fn reject(
        &self,
        msg: &netserv_sip_scan::Message<'_, '_>,
        source: SocketAddr,
        facts: &classify::RequestFacts,
    ) -> (Action, Outcome) {
        let outcome = if facts.category == Category::Priority { Outcome::ShedPriority } else { Outcome::ShedInitial };
        let mut out = Vec::with_capacity(512);
        if netserv_sip_answer::response_head(&mut out, b"503 Service Unavailable", msg, source).is_none() {
            // Not answerable (no From / To / Call-ID / CSeq): the server's to judge.
            return (Action::Pass, Outcome::Other);
        }
        if let Some(after) = self.cfg.retry_after.filter(|_| !facts.client_does_oc) {
            out.extend_from_slice(b"Retry-After: ");
            netserv_sip_answer::push_decimal(&mut out, u64::from(after));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        (Action::Reply(out), outcome)
    }
}

#[cfg(test)]
mod tests;
