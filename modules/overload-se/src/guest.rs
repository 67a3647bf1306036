//! The `packet-module` world adapter: WIT types in, the plain logic of this
//! crate, WIT verdicts and counters out.

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed. The logic it calls is safe Rust.
#![allow(unsafe_code)]
// The generated glue flattens a `load-report` into 14 ABI arguments.
#![allow(clippy::too_many_arguments)]

use crate::{Algorithm, Config, Outcome, Report, Se, Shared};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

wit_bindgen::generate!({ path: "../wit", world: "packet-module" });

use netserv::module::types::{IpAddress, OverloadAlgorithm, SocketAddress};
use netserv::module::{clock, counters, limiter, recent};

/// What the host keeps for all of the module's instances.
struct HostShared;

impl Shared for HostShared {
    fn conform(&mut self, key: u32, interval_ns: u64, tolerance_ns: u64) -> bool {
        limiter::conform(key, interval_ns, tolerance_ns)
    }
    fn reset(&mut self, key: u32) {
        limiter::reset(key);
    }
    fn remember(&mut self, key: u64) {
        recent::remember(key);
    }
    fn contains(&mut self, key: u64) -> bool {
        recent::contains(key)
    }
}

thread_local! {
    static SE: RefCell<Option<Se<HostShared>>> = const { RefCell::new(None) };
    /// Each outcome's counter id, declared once in `init`.
    static COUNTERS: RefCell<Vec<Option<counters::CounterId>>> = const { RefCell::new(Vec::new()) };
}

fn socket_addr(a: &SocketAddress) -> SocketAddr {
    let ip = match a.address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    };
    SocketAddr::new(ip, a.port)
}

fn count(o: Outcome) {
    let id = COUNTERS.with_borrow(|c| o.counter_index().and_then(|i| c.get(i).copied().flatten()));
    if let Some(id) = id {
        counters::add(id, 1);
    }
}

struct OverloadSe;

impl Guest for OverloadSe {
    fn init(properties: Vec<(String, String)>) -> Result<(), String> {
        let cfg = Config::from_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
        COUNTERS.set(Outcome::COUNTERS.iter().map(|(_, name)| counters::declare(name)).collect());
        SE.set(Some(Se::new(cfg, HostShared)));
        Ok(())
    }

    fn on_packet(meta: PacketMeta, payload: Vec<u8>) -> Verdict {
        let now = clock::monotonic_now();
        let decided = SE.with_borrow_mut(|se| {
            se.as_mut().map(|se| se.packet(now, socket_addr(&meta.source), socket_addr(&meta.destination), &payload))
        });
        let Some((action, outcome)) = decided else { return Verdict::Accept };
        count(outcome);
        match action {
            crate::Action::Pass => Verdict::Accept,
            crate::Action::Replace(b) => Verdict::Replace(b),
            crate::Action::Absorb => Verdict::Drop,
            crate::Action::Reply(b) => Verdict::Reply(b),
        }
    }

    /// Validity runs out lazily, on the next request: no timer is needed.
    fn on_timer(_id: u32) {}

    fn on_feedback(report: LoadReport) {
        let now = clock::monotonic_now();
        let r = Report {
            algorithm: match report.algorithm {
                OverloadAlgorithm::Loss => Algorithm::Loss,
                OverloadAlgorithm::Rate => Algorithm::Rate,
            },
            oc: report.oc,
            validity_ms: report.validity_ms,
            seq: report.seq,
        };
        let server = socket_addr(&report.server);
        if let Some(outcome) = SE.with_borrow_mut(|se| se.as_mut().map(|se| se.report(now, server, r))) {
            count(outcome);
        }
    }
}

export!(OverloadSe);
