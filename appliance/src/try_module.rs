//! `netserv-appliance module try`: one packet through one module, exactly as the
//! dataplane would run it (same runtime, same limits, same `decide`), printed.

use crate::config::{Config, Limits};
use crate::controller::{ModuleSpec, assemble};
use crate::dataplane::Filter;
use crate::dataplane::Transport;
use crate::dataplane::{Buffers, Decision, Table, WorkerModules, decide, packet};
use crate::installed::ActiveModule;
use crate::runtime::{Runtime, TenantState, TenantUsage};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The outcome, for printing and for tests.
#[derive(Debug)]
pub struct TryReport {
    pub verdict: String,
    pub reply: Option<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub replaced: Option<Vec<u8>>,
    pub faults: u64,
    pub counters: Vec<(String, u64)>,
}

/// One module installed for one worker with `limits` (and the default
/// runtime policy), outside any node: what the `call_cost` example and the
/// allocation and hostile-module tests run. Its filter takes UDP to `to`.
pub fn standalone(
    runtime: &Runtime,
    bytes: &[u8],
    props: &[(String, String)],
    to: SocketAddr,
    limits: &Limits,
) -> anyhow::Result<(Arc<ActiveModule>, WorkerModules)> {
    standalone_with(runtime, bytes, props, to, limits, &crate::config::Runtime::default())
}

/// [`standalone`] with a node's runtime policy (fault window, CPU budget
/// window, quarantine thresholds) instead of the default one.
pub fn standalone_with(
    runtime: &Runtime,
    bytes: &[u8],
    props: &[(String, String)],
    to: SocketAddr,
    limits: &Limits,
    policy: &crate::config::Runtime,
) -> anyhow::Result<(Arc<ActiveModule>, WorkerModules)> {
    let compiled = runtime.compile(bytes)?;
    let spec = try_spec("try", to, props, limits);
    let module = Arc::new(assemble(runtime.engine(), compiled, policy, spec)?);
    let mut worker = WorkerModules::new(0, None);
    worker.sync(Arc::new(Table::new(vec![module.clone()])));
    Ok((module, worker))
}

/// Module `try` of `tenant`, for one worker, filtering UDP to `to`, with
/// a key-value state and usage of its own.
fn try_spec(tenant: &str, to: SocketAddr, props: &[(String, String)], limits: &Limits) -> ModuleSpec {
    ModuleSpec {
        id: format!("{tenant}/try"),
        tenant: tenant.into(),
        name: "try".into(),
        filter: Filter {
            transport: Transport::Udp,
            destination: ipnet::IpNet::from(to.ip()),
            ports: vec![to.port()],
            source: None,
            responses: false,
        },
        properties: props.to_vec(),
        limits: limits.clone(),
        shared: (
            Arc::new(TenantState::new(limits.state_max_entries, limits.state_max_bytes)),
            Arc::new(TenantUsage::default()),
        ),
        workers: 1,
        quarantines: None,
    }
}

/// [`standalone`], installed first, with
/// `neighbours` more tenants' instances of the same module behind it, each
/// filtering its own port (10000 + i) on the same address, as the
/// 1,000-tenant benchmark installs them: what a worker pays per packet for
/// the modules it holds but does not run.
pub fn standalone_among(
    runtime: &Runtime,
    bytes: &[u8],
    to: SocketAddr,
    limits: &Limits,
    neighbours: u16,
) -> anyhow::Result<(Arc<ActiveModule>, WorkerModules)> {
    let (module, mut worker) = standalone(runtime, bytes, &[], to, limits)?;
    let compiled = runtime.compile(bytes)?;
    let mut modules = vec![module.clone()];
    for i in 0..neighbours {
        let port = SocketAddr::new(to.ip(), 10_000u16.saturating_add(i));
        let spec = try_spec(&format!("n{i}"), port, &[], limits);
        modules.push(Arc::new(assemble(runtime.engine(), compiled.clone(), &crate::config::Runtime::default(), spec)?));
    }
    worker.sync(Arc::new(Table::new(modules)));
    Ok((module, worker))
}

pub fn run(
    module: &Path,
    props: &[(String, String)],
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    node: Option<(&Config, &str)>,
) -> anyhow::Result<TryReport> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let runtime = Runtime::new()?;
    // A node's config: that tenant's limits and the node's runtime policy,
    // as its dataplane would run the module; else the defaults.
    let (limits, policy) = match node {
        Some((cfg, tenant)) => {
            let t = cfg
                .tenant(tenant)
                .ok_or_else(|| anyhow::anyhow!("--tenant `{tenant}` is not a tenant of that config"))?;
            (t.limits.clone(), cfg.runtime.clone())
        }
        None => (Limits::default(), crate::config::Runtime::default()),
    };
    let (module, mut worker) = standalone_with(&runtime, &bytes, props, to, &limits, &policy)?;
    let ip = packet::build_udp(from, to, 64, payload).context("--from and --to must be the same IP family")?;
    let mut out = Buffers::new();
    let decision = decide(&mut worker, &ip, false, &mut out);
    let stats = module.stats();
    let (verdict, reply, replaced) = match decision {
        Decision::Accept if stats.fail_open > 0 => ("accept (fail-open: the module faulted)".to_owned(), None, None),
        Decision::Accept => ("accept".to_owned(), None, None),
        Decision::Drop => ("drop".to_owned(), None, None),
        Decision::AcceptModified => {
            let parsed = packet::parse(&out.packet).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("replace".to_owned(), None, Some(parsed.payload.to_vec()))
        }
        Decision::Reply { .. } => {
            let parsed = packet::parse(&out.packet).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("reply".to_owned(), Some((parsed.source, parsed.destination, parsed.payload.to_vec())), None)
        }
    };
    Ok(TryReport { verdict, reply, replaced, faults: stats.faults, counters: module.counters.snapshot() })
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
        let r = run(&module("netserv_keepalive"), &[], from, to, payload, None).expect("runs");
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
            let r = run(&module("netserv_fault_injector"), &props, from, to, b"anything", None).expect("runs");
            assert!(r.verdict.starts_with("accept (fail-open"), "{mode}: {}", r.verdict);
            assert_eq!(r.faults, 1, "{mode}");
        }
    }

    #[test]
    fn a_node_config_brings_its_tenant_limits() {
        // A 1,000-byte reply: within the default 1,400 bytes, over this
        // tenant's 500.
        let cfg =
            Config::parse(&crate::config::tests::base("[tenants.limits]\nreply_max_bytes = 500")).expect("config");
        let (from, to) = ("198.18.1.10:40000".parse().expect("from"), "198.18.2.20:5070".parse().expect("to"));
        let props = [("mode".to_owned(), "max-reply".to_owned()), ("reply_bytes".to_owned(), "1000".to_owned())];
        let m = module("netserv_fault_injector");
        let default = run(&m, &props, from, to, b"x", None).expect("runs");
        assert_eq!(default.verdict, "reply");
        let tight = run(&m, &props, from, to, b"x", Some((&cfg, "itsp-a"))).expect("runs");
        assert_eq!(tight.verdict, "accept", "the reply is refused and the original passes");
        let e = run(&m, &props, from, to, b"x", Some((&cfg, "nobody"))).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--tenant `nobody`")));
    }
}
