//! `netserv-bench-overload`: the goodput curve of a SIP server under
//! overload, in one run, with four ways of handling the excess:
//!
//! - `none`: no control;
//! - `ratelimit`: Kamailio's own `ratelimit` module at the core (a
//!   TAILDROP pipe at the server's capacity answering 503 — what operators
//!   use today);
//! - `se-loss` / `se-rate`: the edge's sending entity (modules/overload-se)
//!   deployed and steered by the plugin as the server's load monitor.
//!
//! The testbed: sipp in `ua` places calls (INVITE, ACK, BYE) through the
//! appliance in `edge` to Kamailio in `core`, capped to `BENCH_CPU_PERCENT`
//! (default 10) of one CPU with a cgroup v1 CFS quota, which relays them to
//! a sipp UAS beside it. First the server's capacity is found with no
//! control (the highest rate it completes 95 % of, over a ladder); then each
//! mode is offered 0.5, 1, 2, 5 and 10 × that capacity for `BENCH_SECONDS`
//! (default 6), the modes alternating at each load, `BENCH_PAIRS` times
//! (default 1). Goodput is calls completed (BYE answered) per second of
//! offering. Progress on stderr; the last line on stdout is JSON.
//!
//! Run: `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-overload`

use netserv_tests::appliance::{ADMIN_TOKEN, TENANT_A_TOKEN, TempDir, node_config};
use netserv_tests::bench::{env_u64, progress, round3};
use netserv_tests::cgroup::CpuCap;
use netserv_tests::kamailio::{Kamailio, phone_scenario};
use netserv_tests::netns::CORE_IP;
use netserv_tests::{Appliance, Proc, Testbed, paths, plugin, sipp};
use serde_json::{Value, json};

const SERVER: &str = "198.18.2.20:5060";
const LOADS: [f64; 5] = [0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Ratelimit,
    SeLoss,
    SeRate,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::None, Mode::Ratelimit, Mode::SeLoss, Mode::SeRate];
    fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Ratelimit => "ratelimit",
            Mode::SeLoss => "se-loss",
            Mode::SeRate => "se-rate",
        }
    }
}

/// Everything one mode runs on; dropped (and cleaned up) between runs.
struct Bed {
    tb: Testbed,
    dir: TempDir,
    app: Appliance,
    _kamailio: Kamailio,
    _cap: CpuCap,
    _uas: Proc,
    _plugin: Option<Proc>,
}

fn bed(mode: Mode, capacity_cps: f64, cpu_percent: u32) -> anyhow::Result<Bed> {
    let tb = Testbed::new("ocb")?;
    let dir = TempDir::new("ocbench")?;
    let cfg = node_config("", "").replacen(
        "listen = \"127.0.0.1:8270\"",
        "listen = \"0.0.0.0:8270\"\nadvertise = \"198.18.2.1:8270\"",
        1,
    );
    let app = Appliance::start(&tb, &cfg)?;
    let (modules, route) = if mode == Mode::Ratelimit {
        (
            format!(
                "loadmodule \"ratelimit.so\"\nmodparam(\"ratelimit\", \"timer_interval\", 1)\nmodparam(\"ratelimit\", \"pipe\", \"0:TAILDROP:{}\")\n",
                capacity_cps.round().max(1.0)
            ),
            "if (is_method(\"INVITE\") && !has_totag()) { $var(pipe) = 0; if (!rl_check(\"$var(pipe)\")) { sl_send_reply(\"503\", \"Service Unavailable\"); exit; } }".to_owned(),
        )
    } else {
        (String::new(), String::new())
    };
    let kamailio =
        Kamailio::start_with(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio"), &modules, &route)?;
    let cap = CpuCap::new("ocb", cpu_percent)?;
    cap.add_matching(kamailio.config_path().to_str().unwrap_or_default())?;
    let reg = dir.0.join("uas-register.xml");
    std::fs::write(&reg, phone_scenario("uas", 0, 0, 0, 3600))?;
    let r = tb
        .cmd(&tb.core, "sipp")
        .args([SERVER, "-sf", reg.to_str().unwrap_or_default(), "-i", CORE_IP, "-p", "5070", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()?;
    anyhow::ensure!(r.status.success(), "the UAS did not register");
    let uas = tb.spawn(&tb.core, "sipp", &["-sn", "uas", "-i", CORE_IP, "-p", "5070", "-nostdin"], None)?;
    let plugin = match mode {
        Mode::SeLoss | Mode::SeRate => {
            let algorithm = if mode == Mode::SeLoss { "loss" } else { "rate" };
            // Kamailio counts every request: INVITE, ACK and BYE per call.
            let overload = format!(
                "\n[overload]\nfile = {:?}\nrpc_socket = {:?}\ncapacity = {}\nalgorithm = \"{algorithm}\"\nrelease_after_secs = 3\nappliance_token = \"{TENANT_A_TOKEN}\"\n",
                paths::module("netserv_overload_se"),
                kamailio.rpc_socket(),
                (capacity_cps * 3.0).round()
            );
            Some(plugin::start_with(&tb, &dir.0, &format!("{}{overload}", plugin::config(&dir.0)))?)
        }
        _ => None,
    };
    Ok(Bed { tb, dir, app, _kamailio: kamailio, _cap: cap, _uas: uas, _plugin: plugin })
}

/// Offers `cps` calls a second for `secs`: calls completed per second, and
/// the appliance's CPU seconds meanwhile.
fn offer(b: &Bed, cps: f64, secs: u64) -> anyhow::Result<(f64, f64)> {
    let calls = (cps * secs as f64).round().max(1.0) as u32;
    let cpu0 = netserv_tests::bench::cpu_secs(b.app.proc.pid());
    let run = sipp::calls_to(&b.tb.ua, SERVER, "uas", 5061, calls, cps.round().max(1.0) as u32, &b.dir.0)?;
    let cpu = netserv_tests::bench::cpu_secs(b.app.proc.pid()) - cpu0;
    Ok((run.successful as f64 / secs as f64, cpu))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let secs = env_u64("BENCH_SECONDS", 6).clamp(2, 60);
    let pairs = env_u64("BENCH_PAIRS", 1).clamp(1, 10) as usize;
    let cpu_percent = u32::try_from(env_u64("BENCH_CPU_PERCENT", 10).clamp(1, 100)).unwrap_or(10);

    // The server's capacity: the highest rate it completes (nearly) all of,
    // over a ladder ×1.25, no control.
    progress(&format!("Kamailio capped at {cpu_percent} % of a CPU; finding its capacity (no control)"));
    let b = bed(Mode::None, 0.0, cpu_percent)?;
    let mut capacity: f64 = 0.0;
    let mut offered = 20.0;
    while offered <= 2000.0 {
        let (good, _) = offer(&b, offered, secs)?;
        progress(&format!("  offered {offered:.0} calls/s: {good:.1} completed/s"));
        if good < 0.95 * offered {
            break;
        }
        capacity = capacity.max(good);
        offered *= 1.25;
    }
    drop(b);
    anyhow::ensure!(capacity > 0.0, "no call completed: the testbed does not work");
    progress(&format!("capacity: {capacity:.1} calls/s"));

    let mut goodput: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); LOADS.len()]; Mode::ALL.len()];
    let mut se_cpu_at_10x: Vec<f64> = Vec::new();
    for pair in 0..pairs {
        for (li, load) in LOADS.iter().enumerate() {
            // The modes' order turns with every load and pair.
            for k in 0..Mode::ALL.len() {
                let mi = (k + li + pair) % Mode::ALL.len();
                let mode = Mode::ALL[mi];
                let b = bed(mode, capacity, cpu_percent)?;
                let (good, cpu) = offer(&b, load * capacity, secs)?;
                let shed = b
                    .app
                    .api("GET", "/api/v1/modules/itsp-a/overload", None, ADMIN_TOKEN)
                    .ok()
                    .filter(|(c, _)| *c == 200)
                    .map(|(_, v)| v["module_counters"]["shed_initial"].as_u64().unwrap_or(0));
                progress(&format!(
                    "pair {} · {load}× ({:.0} calls/s) · {}: {good:.1} completed/s = {:.2} × capacity{}",
                    pair + 1,
                    load * capacity,
                    mode.name(),
                    good / capacity,
                    shed.map_or(String::new(), |s| format!(" (edge shed {s})"))
                ));
                if let Some(g) = goodput.get_mut(mi).and_then(|m| m.get_mut(li)) {
                    g.push(good / capacity);
                }
                if (mode == Mode::SeLoss || mode == Mode::SeRate) && *load == 10.0 {
                    se_cpu_at_10x.push(cpu / secs as f64);
                }
            }
        }
    }
    let curves: serde_json::Map<String, Value> = Mode::ALL
        .iter()
        .zip(goodput.iter_mut())
        .map(|(m, loads)| {
            let points: Vec<Value> = LOADS
                .iter()
                .zip(loads.iter_mut())
                .map(|(l, v)| {
                    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    json!({ "load": l, "goodput": round3(median(v)), "min": round3(min), "max": round3(max), "n": v.len() })
                })
                .collect();
            (m.name().to_owned(), Value::Array(points))
        })
        .collect();
    for (name, points) in &curves {
        let line: Vec<String> =
            points.as_array().into_iter().flatten().map(|p| format!("{}×: {}", p["load"], p["goodput"])).collect();
        progress(&format!("{name}: {}", line.join(", ")));
    }
    println!(
        "{}",
        json!({
            "capacity_calls_per_s": round3(capacity), "cpu_percent": cpu_percent, "seconds": secs, "pairs": pairs,
            "goodput_over_capacity": curves,
            "se_appliance_cpu_cores_at_10x": round3(median(&mut se_cpu_at_10x)),
            "targets": { "se_2x": 0.9, "se_5x": 0.85, "se_10x": 0.8, "none_5x_below": 0.5, "se_cores_at_10x": 1.0 },
        })
    );
    Ok(())
}
