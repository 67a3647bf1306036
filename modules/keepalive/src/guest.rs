//! The `packet-module` world adapter: WIT types in, plain Rust logic, WIT verdict out.

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed. The logic it calls is safe Rust.
#![allow(unsafe_code)]
// The generated glue flattens a `load-report` into 14 ABI arguments.
#![allow(clippy::too_many_arguments)]

use crate::{Action, Config, Kind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

wit_bindgen::generate!({ path: "../wit", world: "packet-module" });

use netserv::module::counters;
use netserv::module::types::{IpAddress, SocketAddress};

static CONFIG: OnceLock<Config> = OnceLock::new();
/// The id of each kind's counter, declared once in `init`.
static COUNTERS: OnceLock<[Option<counters::CounterId>; Kind::ALL.len()]> = OnceLock::new();

struct KeepAlive;

fn socket_addr(a: &SocketAddress) -> SocketAddr {
    let ip = match a.address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    };
    SocketAddr::new(ip, a.port)
}

impl Guest for KeepAlive {
    fn init(properties: Vec<(String, String)>) -> Result<(), String> {
        let cfg = Config::from_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
        let _ = COUNTERS.set(Kind::ALL.map(|k| counters::declare(k.counter())));
        CONFIG.set(cfg).map_err(|_| "init called twice".to_owned())
    }

    /// Keep-alives need no clock of their own.
    fn on_timer(_id: u32) {}

    /// Nor load reports.
    fn on_feedback(_report: LoadReport) {}

    fn on_packet(meta: PacketMeta, payload: Vec<u8>) -> Verdict {
        let Some(cfg) = CONFIG.get() else {
            return Verdict::Accept;
        };
        let (action, kind) = crate::handle(cfg, socket_addr(&meta.source), socket_addr(&meta.destination), &payload);
        if let Some(id) = COUNTERS.get().and_then(|ids| ids.get(kind as usize).copied().flatten()) {
            counters::add(id, 1);
        }
        match action {
            Action::Pass => Verdict::Accept,
            Action::Absorb => Verdict::Drop,
            Action::Reply(bytes) => Verdict::Reply(bytes),
        }
    }
}

export!(KeepAlive);
