//! Measures what one packet costs in the pure part of the data path: parsing,
//! filter lookup, the module call and building the reply, with no NFQUEUE.
//! `cargo run --release --example call_cost -- <module.wasm> <payload-file>`
//! (`NEIGHBOURS=999`: with that many other tenants' modules installed after it).

use netserv_appliance::config::Limits;
use netserv_appliance::dataplane::{Buffers, decide, packet};
use netserv_appliance::runtime::Runtime;
use netserv_appliance::try_module::standalone_among;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(module), Some(payload)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: call_cost <module.wasm> <payload-file>");
    };
    let bytes = std::fs::read(module)?;
    let payload = std::fs::read(payload)?;
    let runtime = Runtime::new()?;
    let from = "198.18.1.10:5061".parse()?;
    let to: std::net::SocketAddr = "198.18.2.20:5060".parse()?;
    // A benchmark loop is the module at 100 % of a worker: lift the CPU
    // budget, which would (rightly) throttle it.
    let limits = Limits { cpu_budget_percent: 100, ..Limits::default() };
    let neighbours: u16 = std::env::var("NEIGHBOURS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let (module, mut worker) = standalone_among(&runtime, &bytes, to, &limits, neighbours)?;
    let ip = packet::build_udp(from, to, 64, &payload).ok_or_else(|| anyhow::anyhow!("build"))?;
    let mut out = Buffers::new();
    let n: u32 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    for _ in 0..(n / 20) {
        std::hint::black_box(decide(&mut worker, &ip, false, &mut out));
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(decide(&mut worker, &ip, false, &mut out));
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    let stats = module.stats();
    anyhow::ensure!(
        stats.fail_open == 0 && stats.throttled == 0 && stats.faults == 0,
        "the module did not run every packet: {stats:?}"
    );
    println!("decide(): {per:.2} µs per packet ({:.0} packets/s on one core), {neighbours} neighbours", 1e6 / per);
    Ok(())
}
