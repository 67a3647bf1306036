//! Measures what one packet costs in the pure part of the data path: parsing,
//! filter match, the module call and building the reply, with no NFQUEUE.
//! `cargo run --release --example call_cost -- <module.wasm> <payload-file>`

use netserv_appliance::config::Limits;
use netserv_appliance::dataplane::{ActiveModule, Filter, Table, decide, packet};
use netserv_appliance::runtime::host::TenantState;
use netserv_appliance::runtime::{FaultPolicy, GuestCounters, HostSpec, ModuleInstance, Runtime, Transport};
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(module), Some(payload)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: call_cost <module.wasm> <payload-file>");
    };
    let bytes = std::fs::read(module)?;
    let payload = std::fs::read(payload)?;
    let runtime = Runtime::new()?;
    let compiled = runtime.compile(&bytes)?;
    let limits = Limits::default();
    let counters = Arc::new(GuestCounters::default());
    let state = Arc::new(TenantState::new(limits.state_max_entries, limits.state_max_bytes));
    let host = HostSpec {
        tenant: "bench".into(),
        module: "bench".into(),
        memory_bytes: limits.memory_bytes,
        counters: counters.clone(),
        state,
    };
    let policy = FaultPolicy { deadline_ticks: 10, quarantine_after: 5, backoff: std::time::Duration::from_millis(50) };
    let instance = ModuleInstance::new(runtime.engine(), compiled.clone(), vec![], policy, host)?;
    let from = "198.18.1.10:5061".parse()?;
    let to: std::net::SocketAddr = "198.18.2.20:5060".parse()?;
    let m = Arc::new(ActiveModule {
        id: "bench/bench".into(),
        tenant: "bench".into(),
        name: "bench".into(),
        hash: compiled.hash,
        filter: Filter {
            transport: Transport::Udp,
            destination: ipnet::IpNet::from(to.ip()),
            ports: vec![to.port()],
            source: None,
        },
        instance: parking_lot::Mutex::new(instance),
        stats: Default::default(),
        guest_counters: counters,
    });
    let table = Table { modules: vec![m] };
    let ip = packet::build_udp(from, to, 64, &payload).ok_or_else(|| anyhow::anyhow!("build"))?;
    let n: u32 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    for _ in 0..(n / 20) {
        std::hint::black_box(decide(&table, &ip));
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(decide(&table, &ip));
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    println!("decide(): {per:.2} µs per packet ({:.0} packets/s on one core)", 1e6 / per);
    Ok(())
}
