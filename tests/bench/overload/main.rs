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
//! The testbed: sipp in `ua` places calls through the appliance in `edge`
//! to Kamailio in `core`, which relays them to a sipp UAS beside it.
//! Kamailio has a CPU of its own (`BENCH_SERVER_CPU`, default 0; the tester,
//! the appliance and the plugin run on the others) and a cgroup v1 CFS quota
//! of `BENCH_CPU_PERCENT` (default 10) of it, so that one tester can
//! overload it; its receive buffer is its own default unless
//! `BENCH_SERVER_BUFFER` raises its `maxbuffer`, as operators do to ride
//! out bursts (a deep queue is what makes a UDP server collapse: requests
//! wait past T1 and come back as retransmissions, callers hang up on calls
//! the server still works on). The plugin runs in every mode (Kamailio
//! mirrors INVITEs to it as HEP, which costs the server CPU in all of them);
//! only in the SE modes has it an `[overload]` section, without a capacity,
//! with `standby = true` (`BENCH_SE_STANDBY=0`: deployed only on overload)
//! and `queue_target_bytes` 32 KiB (`BENCH_SE_QUEUE_TARGET`).
//!
//! The callers (`fixtures/sipp/caller_uac.xml`) behave as people do: they
//! hang up (CANCEL) once 5 s pass without progress, talk a second, and a
//! call counts only if its BYE is answered. First the server's capacity is
//! found with no control (the highest rate it completes 95 % of, over a
//! ladder ×1.25, each step after `BENCH_LADDER_WARMUP` s, default 12, not
//! counted; `BENCH_CAPACITY` skips it); then each mode is offered 0.5,
//! 1, 2, 5 and 10 × that capacity, after `BENCH_PRELUDE` s (default 3) of
//! normal traffic (0.3 × capacity): `BENCH_WARMUP` s (default 4) not
//! counted, then `BENCH_SECONDS` (default 8) counted, then `BENCH_COOLDOWN`
//! (default 4) not counted, the modes alternating at each load,
//! `BENCH_PAIRS` times (default 3; each figure the median, with min and
//! max). Goodput is the calls completed per
//! second over the counted seconds (2 s later, as calls take that long),
//! while the surge still goes on. `BENCH_MODES` and `BENCH_LOADS` (comma lists) run a
//! part of the curve; `BENCH_TRACE=1` prints, once a second, what the
//! server, the plugin and the edge see; `BENCH_CAPTURE=<dir>` keeps a pcap
//! of `ua` and of `core` per mode (tcpdump). Progress on stderr; the curve is
//! drawn into a PNG (`BENCH_PLOT`, default
//! `target/netserv-bench-overload.png`; `BENCH_REPLOT=<the JSON of a run>`
//! draws a past run's again, with the same `BENCH_SERVER_BUFFER`); the last
//! line on stdout is JSON.
//!
//! Run: `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-overload`
//! (and again with `BENCH_SERVER_BUFFER=4194304`).

mod plot;
mod response;
mod tracer;

use netserv_tests::appliance::{ADMIN_TOKEN, TENANT_A_TOKEN, TempDir, node_config};
use netserv_tests::bench::{env_u64, progress, round3};
use netserv_tests::cgroup::CpuCap;
use netserv_tests::kamailio::{Kamailio, start_callee};
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
    /// How the plot's legend names it.
    fn label(self) -> &'static str {
        match self {
            Mode::None => "no control",
            Mode::Ratelimit => "Kamailio ratelimit at the core",
            Mode::SeLoss => "edge SE, loss (RFC 7339)",
            Mode::SeRate => "edge SE, rate (RFC 7415)",
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
    _capture: Vec<Proc>,
    mode: Mode,
}

impl Drop for Bed {
    /// With `BENCH_CAPTURE`, the plugin's log goes beside the captures (run
    /// with `RUST_LOG=netserv_sip_plugin=debug` for every tick's view).
    fn drop(&mut self) {
        if let Ok(dir) = std::env::var("BENCH_CAPTURE") {
            let _ = std::fs::copy(self.dir.0.join("plugin.log"), format!("{dir}/{}-plugin.log", self.mode.name()));
        }
    }
}

/// `BENCH_CAPTURE=<dir>`: every UDP datagram in `ua` and in `core`, into
/// `<dir>/<mode>-ua.pcap` and `<dir>/<mode>-core.pcap` (tcpdump), to find
/// out afterwards what became of a call that failed.
fn capture(tb: &Testbed, mode: Mode) -> anyhow::Result<Vec<Proc>> {
    let Ok(dir) = std::env::var("BENCH_CAPTURE") else { return Ok(Vec::new()) };
    std::fs::create_dir_all(&dir)?;
    [(&tb.ua, "ua"), (&tb.core, "core")]
        .into_iter()
        .map(|(ns, side)| {
            let file = format!("{dir}/{}-{side}.pcap", mode.name());
            // -U: each packet written at once (the capture ends with a kill).
            tb.spawn(
                ns,
                "tcpdump",
                &["-U", "-Z", "root", "-i", "any", "-s", "0", "-B", "65536", "-w", &file, "udp"],
                None,
            )
        })
        .collect()
}

fn bed(mode: Mode, capacity_cps: f64, cpu_percent: u32, server_cpu: usize) -> anyhow::Result<Bed> {
    let tb = Testbed::new("ocb")?;
    let dir = TempDir::new("ocbench")?;
    let capture = capture(&tb, mode)?;
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
            // Emergency calls are not rate-limited (an operator exempts them).
            "if (is_method(\"INVITE\") && !has_totag() && !($ru =~ \"^urn:service:sos\")) { $var(pipe) = 0; if (!rl_check(\"$var(pipe)\")) { sl_send_reply(\"503\", \"Service Unavailable\"); exit; } }".to_owned(),
        )
    } else {
        (String::new(), String::new())
    };
    // Emergency calls (`urn:service:sos`) go to the callee too.
    let route = format!("{route}\n{}", netserv_tests::kamailio::emergency_to_callee(SERVER));
    // BENCH_SERVER_BUFFER=<bytes>: Kamailio's `maxbuffer` (the receive
    // buffer its start-up probing may reach; its own default is 256 KiB,
    // which the kernel doubles), as an operator raises it to ride out bursts.
    let modules = match env_u64("BENCH_SERVER_BUFFER", 0) {
        0 => modules,
        n => format!("maxbuffer={n}\n{modules}"),
    };
    let kamailio =
        Kamailio::start_with(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio"), &modules, &route)?;
    let cap = CpuCap::new("ocb", cpu_percent)?;
    cap.add_matching(kamailio.config_path().to_str().unwrap_or_default())?;
    cap.pin(server_cpu)?;
    let uas = start_callee(&tb.core, SERVER, &dir.0)?;
    // The plugin runs in every mode, as it does wherever NetServ is
    // deployed: Kamailio mirrors INVITEs to it as HEP in all of them, and
    // delivering those costs the capped server CPU. Only in the SE modes
    // does it have an [overload] section.
    let overload = match mode {
        Mode::SeLoss | Mode::SeRate => {
            let algorithm = if mode == Mode::SeLoss { "loss" } else { "rate" };
            // No capacity: the plugin goes by Kamailio's receive queue alone,
            // as an operator who never measured the server would run it.
            format!(
                "\n[overload]\nfile = {:?}\nrpc_socket = {:?}\nalgorithm = \"{algorithm}\"\nrelease_after_secs = 3\nstandby = {}\nqueue_target_bytes = {}\nappliance_token = \"{TENANT_A_TOKEN}\"\n{}",
                paths::module("netserv_overload_se"),
                kamailio.rpc_socket(),
                env_u64("BENCH_SE_STANDBY", 1) == 1,
                env_u64("BENCH_SE_QUEUE_TARGET", 32_768),
                std::env::var("BENCH_SE_PROPERTIES").map(|p| format!("properties = {{ {p} }}\n")).unwrap_or_default(),
            )
        }
        _ => String::new(),
    };
    let plugin = Some(plugin::start_with(&tb, &dir.0, &format!("{}{overload}", plugin::config(&dir.0)))?);
    Ok(Bed { tb, dir, app, _kamailio: kamailio, _cap: cap, _uas: uas, _plugin: plugin, _capture: capture, mode })
}

/// What one point of the curve measured.
struct Point {
    /// Calls completed per counted second (see [`offer`]).
    goodput: f64,
    /// The appliance's CPU seconds meanwhile.
    cpu: f64,
    /// BYEs of the counted callers: sent, answered.
    byes: (u64, u64),
    /// Emergency calls placed beside them (5 a second): completed, placed.
    sos: (u64, u64),
}

/// How long after the counted callers start the counted window of
/// completions opens: a call completes a second of talk and a BYE after
/// it is answered, so completions trail the offer by that much.
const COMPLETION_LAG_SECS: f64 = 2.0;

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Offers `cps` calls a second on top of a day's normal traffic: first
/// `prelude` = (seconds, calls a second) of that normal load alone (a surge
/// comes on top of traffic, not out of silence: a plugin standing by has
/// its entities deployed by then), then the surge, from three callers one
/// after the other with no gap: `warmup` seconds (every mode's queues
/// fill, the plugin engages), `secs` seconds (the counted callers, whose
/// BYEs and whose CPU are measured) and `BENCH_COOLDOWN` seconds (default
/// 4) after them; beside the counted ones, 5 emergency calls a second.
///
/// Goodput counts the calls of all three that complete within `secs`
/// seconds of wall time starting [`COMPLETION_LAG_SECS`] after the counted
/// callers do, while the surge still goes on: a server that worked off its
/// backlog after the offer ended (a busy hour that goes on leaves it no
/// such time) gets no credit for it, and one that completes a warm-up call
/// in the window does.
fn offer(b: &Bed, cps: f64, prelude: (u64, f64), warmup: u64, secs: u64) -> anyhow::Result<Point> {
    if prelude.0 > 0 {
        let n = (prelude.1 * prelude.0 as f64).round().max(1.0) as u32;
        let r = prelude.1.round().max(1.0) as u32;
        sipp::callers_to(&b.tb.ua, SERVER, "uas", 5064, n, r, &b.dir.0)?;
    }
    let rate = cps.round().max(1.0) as u32;
    let cooldown = env_u64("BENCH_COOLDOWN", 4).clamp(COMPLETION_LAG_SECS as u64 + 1, 60);
    // One surge caller on `port`, placing `span` seconds' worth of calls.
    let callers = |port: u16, span: u64| {
        let (ua, dir) = (b.tb.ua.clone(), b.dir.0.clone());
        let n = (cps * span as f64).round().max(1.0) as u32;
        std::thread::spawn(move || sipp::callers_to(&ua, SERVER, "uas", port, n, rate, &dir))
    };
    let warm = (warmup > 0).then(|| callers(5062, warmup));
    std::thread::sleep(std::time::Duration::from_secs(warmup));
    let sos = {
        let (ua, dir) = (b.tb.ua.clone(), b.dir.0.clone());
        let n = u32::try_from(secs * 5).unwrap_or(u32::MAX);
        std::thread::spawn(move || sipp::calls(&ua, SERVER, Some("sipp/emergency_uac.xml"), 5063, n, 5, &dir))
    };
    let cpu0 = netserv_tests::bench::cpu_secs(b.app.proc.pid());
    let start = unix_now();
    let counted = callers(5061, secs);
    std::thread::sleep(std::time::Duration::from_secs(secs));
    // The appliance's CPU over exactly the counted seconds.
    let cpu = netserv_tests::bench::cpu_secs(b.app.proc.pid()) - cpu0;
    let cool = callers(5065, cooldown);
    let run = counted.join().map_err(|_| anyhow::anyhow!("the counted callers panicked"))??;
    let mut runs = vec![cool.join().map_err(|_| anyhow::anyhow!("the last callers panicked"))??];
    if let Some(w) = warm {
        runs.push(w.join().map_err(|_| anyhow::anyhow!("the first callers panicked"))??);
    }
    let sos = sos.join().map_err(|_| anyhow::anyhow!("the emergency caller panicked"))??;
    let (from, to) = (start + COMPLETION_LAG_SECS, start + COMPLETION_LAG_SECS + secs as f64);
    let completed: f64 = runs.iter().chain([&run]).map(|r| r.completed_between(from, to)).sum();
    Ok(Point {
        goodput: completed / secs as f64,
        cpu,
        byes: run.byes.unwrap_or((0, 0)),
        sos: (sos.successful, sos.successful + sos.failed),
    })
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The curves into a PNG: `BENCH_PLOT`, by default
/// `target/netserv-bench-overload.png`.
fn draw(curves: &serde_json::Map<String, Value>, capacity: f64) {
    let plotted: Vec<plot::Curve> = curves
        .iter()
        .map(|(name, points)| plot::Curve {
            name: Mode::ALL.iter().find(|m| m.name() == name).map_or(name.as_str(), |m| m.label()).to_owned(),
            points: points
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let median = p["goodput"].as_f64()?;
                    Some(plot::Point {
                        load: p["load"].as_f64()?,
                        median,
                        // A run of one pair has its median for both.
                        min: p["min"].as_f64().unwrap_or(median),
                        max: p["max"].as_f64().unwrap_or(median),
                    })
                })
                .collect(),
        })
        .collect();
    let buffer = match env_u64("BENCH_SERVER_BUFFER", 0) {
        0 => "Kamailio's own receive buffer".to_owned(),
        b => format!("{} KiB receive buffer", b / 1024),
    };
    let png = std::env::var_os("BENCH_PLOT")
        .map_or_else(|| paths::repo().join("target/netserv-bench-overload.png"), std::path::PathBuf::from);
    let subtitle = format!("capacity {capacity:.0} calls/s, {buffer}");
    match plot::goodput(&png, &subtitle, &plotted) {
        Ok(()) => progress(&format!("the curve: {}", png.display())),
        Err(e) => progress(&format!("no plot: {e:#}")),
    }
}

fn main() -> anyhow::Result<()> {
    // BENCH_REPLOT=<a run's JSON line>: draw that run's curve again, run nothing.
    if let Some(file) = std::env::var_os("BENCH_REPLOT") {
        let text = std::fs::read_to_string(&file)?;
        let run: Value = serde_json::from_str(text.lines().last().unwrap_or_default())?;
        let curves = run["goodput_over_capacity"].as_object().cloned().unwrap_or_default();
        draw(&curves, run["capacity_calls_per_s"].as_f64().unwrap_or(0.0));
        return Ok(());
    }
    let secs = env_u64("BENCH_SECONDS", 8).clamp(2, 60);
    let warmup = env_u64("BENCH_WARMUP", 4).clamp(0, 60);
    let prelude = env_u64("BENCH_PRELUDE", 3).clamp(0, 60);
    let pairs = env_u64("BENCH_PAIRS", 3).clamp(1, 10) as usize;
    let cpu_percent = u32::try_from(env_u64("BENCH_CPU_PERCENT", 10).clamp(1, 100)).unwrap_or(10);
    // For a closer look at one part of the curve: BENCH_MODES=se-loss,none
    // BENCH_LOADS=2,5 BENCH_CAPACITY=150 (calls/s: no ladder).
    let listed = |name: &str| -> Option<Vec<String>> {
        std::env::var(name).ok().map(|v| v.split(',').map(|x| x.trim().to_owned()).collect())
    };
    let modes: Vec<Mode> = match listed("BENCH_MODES") {
        Some(names) => Mode::ALL.iter().copied().filter(|m| names.iter().any(|n| n == m.name())).collect(),
        None => Mode::ALL.to_vec(),
    };
    let loads: Vec<f64> = match listed("BENCH_LOADS") {
        Some(v) => v.iter().filter_map(|x| x.parse().ok()).collect(),
        None => LOADS.to_vec(),
    };

    // The server's capacity: the highest rate it completes (nearly) all of,
    // over a ladder ×1.25, no control.
    // How fast the edge follows a report and lets go of it (BENCH_RESPONSE=0 skips it).
    let response = if env_u64("BENCH_RESPONSE", 1) == 1 { response::measure()? } else { Value::Null };
    progress(&format!("Kamailio capped at {cpu_percent} % of a CPU; finding its capacity (no control)"));
    // The server gets a CPU of its own; the tester, the edge and the plugin
    // (this process's children) the others.
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let server_cpu = env_u64("BENCH_SERVER_CPU", 0) as usize;
    let others: Vec<String> = (0..cpus).filter(|c| *c != server_cpu).map(|c| c.to_string()).collect();
    if !others.is_empty() {
        let me = std::process::id().to_string();
        std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &others.join(","), &me])
            .stdout(std::process::Stdio::null())
            .status()?;
    }
    let b = bed(Mode::None, 0.0, cpu_percent, server_cpu)?;
    let mut capacity: f64 = env_u64("BENCH_CAPACITY", 0) as f64;
    let mut offered = if capacity > 0.0 { f64::INFINITY } else { 20.0 };
    // Each step is offered `BENCH_LADDER_WARMUP` s (default 12) before the
    // counted seconds: a deep receive buffer holds a growing backlog for as
    // long as callers wait (5 s), so a rate the server cannot sustain would
    // otherwise pass a short step (with 4 MiB and no warm-up, 364 calls/s
    // "completed" where the server sustains some 250). With it, a step
    // passes only below (1 + 5 / (warm-up + counted)) × what it sustains.
    let ladder_warmup = env_u64("BENCH_LADDER_WARMUP", 12).clamp(0, 60);
    while offered <= 2000.0 {
        let good = offer(&b, offered, (0, 0.0), ladder_warmup, secs)?.goodput;
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

    let trace = std::env::var_os("BENCH_TRACE").is_some();
    let mut goodput: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); loads.len()]; modes.len()];
    let mut byes = goodput.clone();
    let mut sos = goodput.clone();
    let mut se_cpu_at_10x: Vec<f64> = Vec::new();
    for pair in 0..pairs {
        for (li, load) in loads.iter().enumerate() {
            // The modes' order turns with every load and pair.
            for k in 0..modes.len() {
                let mi = (k + li + pair) % modes.len();
                let mode = modes[mi];
                let b = bed(mode, capacity, cpu_percent, server_cpu)?;
                let tracer = trace.then(|| tracer::Tracer::start(&b.tb, &b.dir.0, b._plugin.is_some()));
                let p = offer(&b, load * capacity, (prelude, 0.3 * capacity), warmup, secs)?;
                let (good, cpu) = (p.goodput, p.cpu);
                let share = |(a, b): (u64, u64)| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
                drop(tracer);
                let shed = b
                    .app
                    .api("GET", "/api/v1/modules/itsp-a/overload", None, ADMIN_TOKEN)
                    .ok()
                    .filter(|(c, _)| *c == 200)
                    .map(|(_, v)| v["module_counters"]["shed_initial"].as_u64().unwrap_or(0));
                progress(&format!(
                    "pair {} · {load}× ({:.0} calls/s) · {}: {good:.1} completed/s = {:.2} × capacity; BYEs answered {:.4}; emergency {}/{}{}",
                    pair + 1,
                    load * capacity,
                    mode.name(),
                    good / capacity,
                    share((p.byes.1, p.byes.0)),
                    p.sos.0,
                    p.sos.1,
                    shed.map_or(String::new(), |s| format!(" (edge shed {s})"))
                ));
                if let Some(v) = byes.get_mut(mi).and_then(|m| m.get_mut(li)) {
                    v.push(share((p.byes.1, p.byes.0)));
                }
                if let Some(v) = sos.get_mut(mi).and_then(|m| m.get_mut(li)) {
                    v.push(share(p.sos));
                }
                if let Some(g) = goodput.get_mut(mi).and_then(|m| m.get_mut(li)) {
                    g.push(good / capacity);
                }
                if (mode == Mode::SeLoss || mode == Mode::SeRate) && *load == 10.0 {
                    se_cpu_at_10x.push(cpu / secs as f64);
                }
            }
        }
    }
    let curves: serde_json::Map<String, Value> = modes
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let points: Vec<Value> = loads
                .iter()
                .enumerate()
                .map(|(li, l)| {
                    let mut v = goodput[mi][li].clone();
                    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    json!({
                        "load": l, "goodput": round3(median(&mut v)), "min": round3(min), "max": round3(max), "n": v.len(),
                        "byes_answered": round4(median(&mut byes[mi][li].clone())),
                        "emergency_completed": round4(median(&mut sos[mi][li].clone())),
                    })
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
    draw(&curves, capacity);
    println!(
        "{}",
        json!({
            "capacity_calls_per_s": round3(capacity), "cpu_percent": cpu_percent, "seconds": secs, "pairs": pairs,
            "goodput_over_capacity": curves,
            "response": response,
            "se_appliance_cpu_cores_at_10x": round3(median(&mut se_cpu_at_10x)),
            "targets": { "se_2x": 0.9, "se_5x": 0.85, "se_10x": 0.8, "none_5x_below": 0.5, "se_cores_at_10x": 1.0,
                         "byes_answered": 0.999, "emergency_completed": 0.99 },
        })
    );
    Ok(())
}
