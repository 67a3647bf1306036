//! `netserv-appliance module try`: one packet through one module, exactly as the
//! dataplane would run it (same runtime, same limits, same `decide`), printed.

use crate::config::Limits;
use crate::dataplane::table::{ActiveModule, Filter};
use crate::dataplane::{Decision, Table, decide, packet};
use crate::runtime::host::TenantState;
use crate::runtime::{FaultPolicy, GuestCounters, HostSpec, ModuleInstance, Runtime, Transport};
use anyhow::Context as _;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The outcome, for printing and for tests.
#[derive(Debug)]
pub struct TryReport {
    pub verdict: String,
    pub reply: Option<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub replaced: Option<Vec<u8>>,
    pub faults: u64,
    pub counters: Vec<(String, u64)>,
}

pub fn run(
    module: &Path,
    props: &[(String, String)],
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> anyhow::Result<TryReport> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let runtime = Runtime::new()?;
    let compiled = runtime.compile(&bytes)?;
    let limits = Limits::default();
    let counters = Arc::new(GuestCounters::default());
    let state = Arc::new(TenantState::new(limits.state_max_entries, limits.state_max_bytes));
    let host = HostSpec {
        tenant: "try".into(),
        module: "try".into(),
        memory_bytes: limits.memory_bytes,
        counters: counters.clone(),
        state,
    };
    let policy = FaultPolicy {
        deadline_ticks: Limits::default().cpu_deadline_ms,
        quarantine_after: 1,
        backoff: Duration::from_secs(1),
    };
    let instance = ModuleInstance::new(runtime.engine(), compiled.clone(), props.to_vec(), policy, host)?;
    let filter = Filter {
        transport: Transport::Udp,
        destination: ipnet::IpNet::from(to.ip()),
        ports: vec![to.port()],
        source: None,
    };
    let module = Arc::new(ActiveModule {
        id: "try/try".into(),
        tenant: "try".into(),
        name: "try".into(),
        hash: compiled.hash,
        filter,
        instance: Mutex::new(instance),
        stats: Default::default(),
        guest_counters: counters.clone(),
    });
    let table = Table { modules: vec![module.clone()] };
    let ip = packet::build_udp(from, to, 64, payload).context("--from and --to must be the same IP family")?;
    let decision = decide(&table, &ip);
    let faults = module.instance.lock().total_faults;
    let (verdict, reply, replaced) = match decision {
        Decision::Accept if module.stats.fail_open.load(Relaxed) > 0 => {
            ("accept (fail-open: the module faulted)".to_owned(), None, None)
        }
        Decision::Accept => ("accept".to_owned(), None, None),
        Decision::Drop => ("drop".to_owned(), None, None),
        Decision::AcceptModified(p) => {
            let parsed = packet::parse(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("replace".to_owned(), None, Some(parsed.payload.to_vec()))
        }
        Decision::Reply { packet: p, .. } => {
            let parsed = packet::parse(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("reply".to_owned(), Some((parsed.source, parsed.destination, parsed.payload.to_vec())), None)
        }
    };
    Ok(TryReport { verdict, reply, replaced, faults, counters: counters.snapshot() })
}

/// Prints bytes as text when they are text, else as hex.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\r' || c == '\n' || c == '\t') => {
            s.replace("\r\n", "\n").lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        }
        _ => bytes.chunks(16).map(|c| format!("    {}", hex::encode(c))).collect::<Vec<_>>().join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str) -> std::path::PathBuf {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/wasm32-wasip2/release/{name}.wasm"));
        assert!(p.exists(), "build the wasm modules first (scripts/build.sh)");
        p
    }

    #[test]
    fn a_keepalive_is_answered_from_the_server_address() {
        let payload = b"OPTIONS sip:198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:198.18.2.20>\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let (from, to) = ("198.18.1.10:40000".parse().expect("from"), "198.18.2.20:5060".parse().expect("to"));
        let r = run(&module("netserv_keepalive"), &[], from, to, payload).expect("runs");
        assert_eq!(r.verdict, "reply");
        let (src, dst, bytes) = r.reply.expect("a reply");
        assert_eq!((src, dst), (to, from));
        assert!(bytes.starts_with(b"SIP/2.0 200 OK\r\n"));
        assert!(r.counters.contains(&("answered_options".to_owned(), 1)));
    }

    #[test]
    fn a_trapping_module_fails_open() {
        let (from, to) = ("198.18.1.10:40000".parse().expect("from"), "198.18.2.20:5070".parse().expect("to"));
        for mode in ["trap", "spin"] {
            let props = [("mode".to_owned(), mode.to_owned())];
            let r = run(&module("netserv_fault_injector"), &props, from, to, b"anything").expect("runs");
            assert!(r.verdict.starts_with("accept (fail-open"), "{mode}: {}", r.verdict);
            assert_eq!(r.faults, 1, "{mode}");
        }
    }
}
