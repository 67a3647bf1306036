//! `netserv-bench-relay`: the edge relay (the media-relay module on the
//! appliance) and coturn's `turnserver` (Debian's 4.6.1, its defaults but
//! for the testbed's addresses and the same TURN REST secret, realm and
//! relay ports) side by side on the namespace testbed, alternating, in one
//! run. The client is `netserv-turn-load` in `ua` (channels to an echo peer
//! in `core`); each server gets CPU 0 to itself, the client and the echo
//! the last CPU.
//!
//! Per server, every figure the median of `BENCH_PAIRS` (default 3)
//! alternating pairs with min and max:
//! 1. capacity: the highest delivered rate with < 0.1 % loss, over a ladder
//!    of offered rates (`BENCH_SECONDS` per step, x1.25, then three halvings
//!    of the step that failed);
//! 2. packets relayed per server CPU-second at one fixed offered rate
//!    (`BENCH_CPU_PPS`, default 20,000; both directions counted), from
//!    `/proc/<pid>/stat`;
//! 3. p50 / p99 round trip through the relay at half of its capacity;
//!
//! and once per server: the allocation rate and resident memory with
//! `BENCH_ALLOCS` (default 16,384) allocations refreshed, and after they
//! expire. `BENCH_COALESCE_US` sets the edge relay's `servers.coalesce_us`
//! (default: the appliance's). Ratios are edge / coturn. Progress on stderr; the last line on
//! stdout is JSON. Needs root and the `coturn` package.
//!
//! Run: `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-relay`

use netserv_tests::appliance::{TENANT_A_TOKEN, node_config};
use netserv_tests::bench::{Summary, cpu_secs, env_u64, progress, round1, round3};
use netserv_tests::netns::{CORE_IP, EDGE_UA_IP, UA_IP};
use netserv_tests::{Appliance, Proc, Testbed, paths, rss_kib};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-turn-rest-shared-secret";
const REALM: &str = "itsp-a.example";
const PORTS: (u16, u16) = (49152, 65535);
const PEER_PORT: u16 = 3480;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Edge,
    Coturn,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Edge => "edge",
            Server::Coturn => "coturn",
        }
    }
}

/// A running server: its process (for CPU and memory) and what keeps it alive.
struct Running {
    pid: u32,
    _app: Option<Appliance>,
    _proc: Option<Proc>,
}

fn start(tb: &Testbed, server: Server, lifetime_s: u32) -> anyhow::Result<Running> {
    match server {
        Server::Edge => {
            let ports = format!("{}-{}", PORTS.0, PORTS.1);
            let extra = format!("relay_ports = \"{ports}\"\n");
            let cfg = node_config("enabled = false", "").replacen(
                "listen_ports = [5060]",
                &format!("listen_ports = [5060, 3478]\n{extra}"),
                1,
            );
            // The appliance's default unless `BENCH_COALESCE_US` names another window.
            let coalesce =
                std::env::var("BENCH_COALESCE_US").map(|v| format!("coalesce_us = {v}\n")).unwrap_or_default();
            let cfg = format!("{cfg}\n[servers]\naddress = \"{EDGE_UA_IP}\"\n{coalesce}");
            let app = Appliance::start_with(&tb.edge, &cfg, Some("0"))?;
            let (code, v) = app.api(
                "PUT",
                "/api/v1/tenants/itsp-a/secrets/turn-secret",
                Some(&json!({ "value": SECRET })),
                TENANT_A_TOKEN,
            )?;
            anyhow::ensure!(code == 204, "secret: {code} {v}");
            app.install(&json!({
                "tenant": "itsp-a", "name": "relay",
                "source": { "path": paths::module("netserv_media_relay") },
                "listen": [{ "transport": "udp", "port": 3478 }],
                "properties": {
                    "realm": REALM, "default_lifetime_s": lifetime_s.to_string(), "max_lifetime_s": "3600",
                    // All the load comes from one address; coturn limits no 401s.
                    "unauthorized_per_s": "1000000",
                },
            }))?;
            Ok(Running { pid: app.proc.pid(), _app: Some(app), _proc: None })
        }
        Server::Coturn => {
            let (min, max) = (PORTS.0.to_string(), PORTS.1.to_string());
            let lifetime = lifetime_s.to_string();
            let args = [
                "-c",
                "0",
                "turnserver",
                "-n",
                "--listening-ip",
                EDGE_UA_IP,
                "--relay-ip",
                EDGE_UA_IP,
                "--listening-port",
                "3478",
                "--min-port",
                &min,
                "--max-port",
                &max,
                "--use-auth-secret",
                "--static-auth-secret",
                SECRET,
                "--realm",
                REALM,
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--fingerprint",
                "--max-allocate-lifetime",
                &lifetime,
                "--log-file",
                "stdout",
                "--simple-log",
                "--no-stdout-log",
            ];
            let p = netserv_tests::netns::spawn(&tb.edge, "taskset", &args, None)?;
            let pid = p.pid();
            std::thread::sleep(Duration::from_millis(700));
            Ok(Running { pid, _app: None, _proc: Some(p) })
        }
    }
}

struct Bench {
    tb: Testbed,
    tester_cpu: String,
    load: String,
    step_ms: u64,
    clients: u64,
}

impl Bench {
    /// One `flow` run at `pps`: its JSON.
    fn flow(&self, pps: f64) -> anyhow::Result<Value> {
        let (server, peer) = (format!("{EDGE_UA_IP}:3478"), format!("{CORE_IP}:{PEER_PORT}"));
        let (pps, ms, clients) = (format!("{pps:.0}"), self.step_ms.to_string(), self.clients.to_string());
        let args = [
            "-c",
            &self.tester_cpu,
            &self.load,
            "flow",
            "--server",
            &server,
            "--peer",
            &peer,
            "--local",
            UA_IP,
            "--secret",
            SECRET,
            "--clients",
            &clients,
            "--pps",
            &pps,
            "--duration-ms",
            &ms,
        ];
        let out = netserv_tests::netns::cmd(&self.tb.ua, "taskset").args(args).output()?;
        anyhow::ensure!(out.status.success(), "turn-load flow: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
    }

    /// The highest delivered rate with < 0.1 % loss: a rising ladder (x1.25
    /// a step), then three halvings of the step it failed at, so that two
    /// servers are told apart by more than the ladder's 25 %.
    fn capacity(&self) -> anyhow::Result<f64> {
        let mut best = 0.0;
        let (mut good, mut offered) = (0.0, 10_000.0);
        let step = |offered: f64| -> anyhow::Result<(bool, f64)> {
            let v = self.flow(offered)?;
            let (loss, delivered) = (v["loss"].as_f64().unwrap_or(1.0), v["delivered_pps"].as_f64().unwrap_or(0.0));
            progress(&format!("    offered {offered:.0} pps: delivered {delivered:.0}, loss {:.3} %", loss * 100.0));
            Ok((loss < 0.001, delivered))
        };
        while offered <= 400_000.0 {
            let (ok, delivered) = step(offered)?;
            if !ok {
                break;
            }
            (best, good) = (delivered, offered);
            offered *= 1.25;
        }
        let mut bad = offered;
        for _ in 0..3 {
            let mid = (good + bad) / 2.0;
            match step(mid)? {
                (true, delivered) => (best, good) = (delivered, mid),
                (false, _) => bad = mid,
            }
        }
        Ok(best)
    }
}

fn main() -> anyhow::Result<()> {
    let pairs = env_u64("BENCH_PAIRS", 3).clamp(1, 20) as usize;
    let step_ms = env_u64("BENCH_SECONDS", 2).clamp(1, 30) * 1000;
    let cpu_pps = env_u64("BENCH_CPU_PPS", 20_000).clamp(1000, 500_000) as f64;
    let allocs = env_u64("BENCH_ALLOCS", 16_384).clamp(100, 16_384);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let tester_cpu = (cpus.saturating_sub(1)).to_string();
    progress(&format!("servers on CPU 0, client and echo on CPU {tester_cpu}; {pairs} pairs"));
    let tb = Testbed::new("relaybench")?;
    let load = paths::bin("netserv-turn-load").to_str().unwrap_or_default().to_owned();
    let echo_bin = paths::bin("netserv-echo").to_str().unwrap_or_default().to_owned();
    let peer = format!("{CORE_IP}:{PEER_PORT}");
    let _echo =
        netserv_tests::netns::spawn(&tb.core, "taskset", &["-c", &tester_cpu, &echo_bin, &peer, "1800000"], None)?;
    let b = Bench { tb, tester_cpu, load, step_ms, clients: env_u64("BENCH_CLIENTS", 16) };

    let mut cap: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut per_cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut p50: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut p99: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for pair in 0..pairs {
        let order = if pair % 2 == 0 { [Server::Edge, Server::Coturn] } else { [Server::Coturn, Server::Edge] };
        for s in order {
            let i = s as usize;
            progress(&format!("pair {}: {}", pair + 1, s.name()));
            let r = start(&b.tb, s, 600)?;
            let c = b.capacity()?;
            let before = cpu_secs(r.pid);
            let v = b.flow(cpu_pps)?;
            let used = cpu_secs(r.pid) - before;
            let relayed = 2.0 * v["received"].as_f64().unwrap_or(0.0);
            let eff = relayed / used.max(0.01);
            let half = b.flow((c / 2.0).max(1000.0))?;
            progress(&format!(
                "  {}: capacity {c:.0} pps; {relayed:.0} packets relayed in {used:.2} CPU-s ({eff:.0}/CPU-s); at half load p50 {:.1} µs, p99 {:.1} µs",
                s.name(),
                half["rtt_p50_us"].as_f64().unwrap_or(f64::NAN),
                half["rtt_p99_us"].as_f64().unwrap_or(f64::NAN),
            ));
            cap[i].push(c);
            per_cpu[i].push(eff);
            p50[i].push(half["rtt_p50_us"].as_f64().unwrap_or(f64::NAN));
            p99[i].push(half["rtt_p99_us"].as_f64().unwrap_or(f64::NAN));
            drop(r);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // Allocations: made one after another, refreshed, then left to expire.
    let lifetime: u32 = 20;
    let mut mem = serde_json::Map::new();
    for s in [Server::Edge, Server::Coturn] {
        progress(&format!("{}: {allocs} allocations", s.name()));
        let r = start(&b.tb, s, lifetime)?;
        std::thread::sleep(Duration::from_millis(500));
        let rss0 = rss_kib(r.pid);
        let (count, hold) = (allocs.to_string(), "12000".to_owned());
        let log = std::env::temp_dir().join(format!("netserv-turn-allocs-{}.log", std::process::id()));
        let server = format!("{EDGE_UA_IP}:3478");
        let lt = lifetime.to_string();
        let child = netserv_tests::netns::cmd(&b.tb.ua, "taskset")
            .args(["-c", &b.tester_cpu, &b.load, "allocs", "--server", &server, "--local", UA_IP, "--secret", SECRET])
            .args(["--count", &count, "--hold-ms", &hold, "--refresh-every-ms", "5000", "--lifetime", &lt])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let started = Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("allocated ") {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "allocations took over 300 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(6000));
        let rss_held = rss_kib(r.pid);
        let out = child.wait_with_output()?;
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("{}"))?;
        let n = v["allocated"].as_f64().unwrap_or(0.0);
        progress(&format!("  waiting {} s for them to expire", lifetime + 15));
        std::thread::sleep(Duration::from_secs(u64::from(lifetime) + 15));
        let rss_after = rss_kib(r.pid);
        let per = (rss_held.saturating_sub(rss0)) as f64 / n.max(1.0);
        progress(&format!(
            "  {}: {n:.0} allocated at {:.0}/s; RSS {rss0} KiB before, {rss_held} held ({per:.2} KiB each), {rss_after} after expiry",
            s.name(),
            v["alloc_rate"].as_f64().unwrap_or(0.0)
        ));
        mem.insert(
            s.name().into(),
            json!({
                "allocated": n, "alloc_rate": round1(v["alloc_rate"].as_f64().unwrap_or(0.0)),
                "refresh_failed": v["refresh_failed"], "rss_before_kib": rss0, "rss_held_kib": rss_held,
                "rss_after_expiry_kib": rss_after, "kib_per_allocation": round3(per),
                "rss_after_over_before": round3(rss_after as f64 / (rss0 as f64).max(1.0)),
            }),
        );
        drop(r);
        let _ = std::fs::remove_file(&log);
    }

    let ratio = |a: &[f64], b: &[f64]| {
        let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        Summary::of(&r)
    };
    let (e, c) = (Server::Edge as usize, Server::Coturn as usize);
    let per_cpu_ratio = ratio(&per_cpu[e], &per_cpu[c]);
    let cap_ratio = ratio(&cap[e], &cap[c]);
    let p99_ratio = ratio(&p99[e], &p99[c]);
    progress(&format!("relayed per CPU-second, edge / coturn: {}", per_cpu_ratio.show(3)));
    progress(&format!("capacity at < 0.1 % loss, edge / coturn: {}", cap_ratio.show(3)));
    progress(&format!("p99 at half load, edge / coturn: {}", p99_ratio.show(3)));
    let figures = json!({
        "pairs": pairs,
        "capacity_pps": { "edge": Summary::of(&cap[e]).json(0), "coturn": Summary::of(&cap[c]).json(0) },
        "relayed_per_cpu_second": { "edge": Summary::of(&per_cpu[e]).json(0), "coturn": Summary::of(&per_cpu[c]).json(0) },
        "rtt_half_load_p50_us": { "edge": Summary::of(&p50[e]).json(1), "coturn": Summary::of(&p50[c]).json(1) },
        "rtt_half_load_p99_us": { "edge": Summary::of(&p99[e]).json(1), "coturn": Summary::of(&p99[c]).json(1) },
        "per_cpu_ratio": per_cpu_ratio.json(3), "target_per_cpu_ratio": 1.5,
        "capacity_ratio": cap_ratio.json(3), "target_capacity_ratio": 1.0,
        "p99_ratio": p99_ratio.json(3), "target_p99_ratio": 1.0,
        "allocations": mem, "target_kib_per_allocation": 2.0, "target_rss_after_over_before": 1.1,
    });
    println!("{figures}");
    Ok(())
}
