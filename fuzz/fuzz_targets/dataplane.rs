//! The dataplane's packet path as a worker runs it: `packet::parse` and
//! `decide` with the keepalive module installed. The first byte picks the
//! input's shape — raw bytes as an IP packet (the parser, fragments, other
//! protocols), or the rest as the UDP payload of a packet to the module's
//! server (the module and the host's verdict path) — and whether the queue
//! marked it GSO. Nothing panics; a reply the host builds is a packet that
//! parses, from the server to the sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_appliance::config::Limits;
use netserv_appliance::dataplane::{Buffers, Decision, WorkerModules, decide, packet};
use netserv_appliance::runtime::Runtime;
use std::cell::RefCell;
use std::net::SocketAddr;

const PHONE: &str = "198.18.1.10:5061";
const SERVER: &str = "198.18.2.20:5060";

struct Worker {
    modules: WorkerModules,
    out: Buffers,
}

fn worker() -> Worker {
    let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/release/netserv_keepalive.wasm");
    let bytes = std::fs::read(wasm).expect("the keepalive module (scripts/build.sh builds it)");
    let runtime = Runtime::new().expect("runtime");
    let limits = Limits { cpu_budget_percent: 100, ..Limits::default() };
    let server: SocketAddr = SERVER.parse().expect("address");
    let (module, modules) =
        netserv_appliance::try_module::standalone(&runtime, &bytes, &[], server, &limits).expect("module");
    // Kept for the life of the process, with the runtime it came from.
    std::mem::forget((module, runtime));
    Worker { modules, out: Buffers::new() }
}

thread_local! {
    static WORKER: RefCell<Worker> = RefCell::new(worker());
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let (phone, server): (SocketAddr, SocketAddr) = (PHONE.parse().expect("address"), SERVER.parse().expect("address"));
    let ip = if shape & 1 == 0 {
        rest.to_vec()
    } else {
        match packet::build_udp(phone, server, 64, rest) {
            Some(p) => p,
            None => return,
        }
    };
    let _ = packet::parse(&ip);
    WORKER.with_borrow_mut(|w| check(w, &ip, shape & 2 != 0, server));
});

fn check(w: &mut Worker, ip: &[u8], gso: bool, server: SocketAddr) {
    let Worker { modules, out } = w;
    match decide(modules, ip, gso, out) {
        Decision::Reply { to } => {
            let parsed = packet::parse(&out.packet).expect("a reply the host built parses");
            assert_eq!(parsed.source, server, "a reply comes from the intercepted destination");
            assert_eq!(parsed.destination.ip(), to);
        }
        Decision::AcceptModified => {
            packet::parse(&out.packet).expect("a rewritten packet parses");
        }
        Decision::Accept | Decision::Drop => {}
    }
}
