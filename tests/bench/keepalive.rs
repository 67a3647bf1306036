//! `netserv-bench-keepalive`: the KeepAlive responder's figures, measured side
//! by side in one run on the namespace testbed (ua ⇄ edge ⇄ core):
//!
//! 1. throughput: the same keep-alive load from `ua` (a) delivered by the plain
//!    kernel through `edge` to a UDP sink in `core`, and (b) answered by the
//!    appliance's keepalive module in `edge`; the figure is (b)/(a);
//! 2. added latency: request/response round trips from `ua` to an echo server
//!    in `core` whose port the module intercepts (and accepts), alternating
//!    with round trips to a second echo server no filter matches; p50 and p99,
//!    with the tester pinned to one CPU (the figure) and floating, then with
//!    flow steering and with busy polling for comparison;
//! 3. idle memory: appliance RSS growth per tenant while 1,000 tenants each
//!    get their own keepalive instance.
//!
//! Progress goes to stderr; the last line on stdout is a JSON object with the
//! figures. Needs root. Every load is bounded in time and count.
//!
//! Run: `cargo build --release --workspace && cargo build --release --target
//! wasm32-wasip2 -p netserv-keepalive && sudo target/release/netserv-bench-keepalive`

use netserv_e2e::appliance::{TempDir, keepalive_install, test_config, test_config_with};
use netserv_e2e::netns::UA_IP;
use netserv_e2e::{Appliance, Testbed, paths, rss_kib};
use serde_json::{Value, json};
use std::time::Duration;

const SERVER: &str = "198.18.2.20:5060";
/// An echo server on a port no filter matches: the latency baseline.
const BASELINE: &str = "198.18.2.20:5062";
/// The busy-poll window of the second latency run.
const BUSY_POLL_US: u32 = 300;

/// Added round-trip latency, in µs.
struct Latency {
    added_p50: f64,
    added_p99: f64,
    without_p50: f64,
    answered_p50: f64,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Where the tester (phone and echo servers) runs during a latency run: on
/// one CPU, like a separate test set whose scheduling does not move between
/// runs, or wherever the scheduler puts it.
#[derive(Clone, Copy)]
enum Tester {
    Pinned(u16),
    Floating,
}

impl Tester {
    /// `program args` as a command line, behind `taskset` when pinned.
    fn argv<'a>(self, cpu: &'a str, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = match self {
            Tester::Pinned(_) => vec!["taskset", "-c", cpu, program],
            Tester::Floating => vec![program],
        };
        v.extend_from_slice(args);
        v
    }
}

/// Alternating round trips (see `netserv-probe rtt --baseline`): a REGISTER the
/// module inspects and passes, and a NOTIFY keep-alive the module answers.
/// Echo servers on the intercepted and on the baseline port are started for
/// the run, placed like the probe.
fn latency(tb: &Testbed, payloads: (&str, &str), count: u64, tester: Tester, mode: &str) -> anyhow::Result<Latency> {
    let (register, notify) = payloads;
    progress(&format!(
        "latency, {mode}: {count} round trips each to {SERVER} (intercepted) and {BASELINE} (not), alternating"
    ));
    let cpu = match tester {
        Tester::Pinned(c) => c.to_string(),
        Tester::Floating => String::new(),
    };
    let (probe, echo) = (paths::bin("netserv-probe"), paths::bin("netserv-echo"));
    let (probe, echo) = (probe.to_str().unwrap_or_default(), echo.to_str().unwrap_or_default());
    let mut echoes = Vec::new();
    for at in [SERVER, BASELINE] {
        let argv = tester.argv(&cpu, echo, &[at, "120000"]);
        echoes.push(tb.spawn(&tb.core, argv[0], &argv[1..], None)?);
    }
    std::thread::sleep(Duration::from_millis(200));
    let count = count.to_string();
    let rtt = |payload: &str| -> anyhow::Result<Value> {
        let args = ["rtt", "--to", SERVER, "--baseline", BASELINE, "--payload", payload, "--count", &count];
        let argv = tester.argv(&cpu, probe, &args);
        Ok(json_line(&tb.output(&tb.ua, argv[0], &argv[1..])?))
    };
    let inspected = rtt(register)?;
    let answered = rtt(notify)?;
    drop(echoes);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (with, without) = (&inspected, &inspected["baseline"]);
    anyhow::ensure!(f(with, "count") > 0.0 && f(without, "count") > 0.0, "no round trips completed: {inspected}");
    let l = Latency {
        added_p50: round1(f(with, "p50_us") - f(without, "p50_us")),
        added_p99: round1(f(with, "p99_us") - f(without, "p99_us")),
        without_p50: round1(f(without, "p50_us")),
        answered_p50: round1(f(&answered, "p50_us")),
    };
    progress(&format!(
        "  p50 {:.1} µs with vs {:.1} µs without (+{:.1}); p99 {:.1} vs {:.1} (+{:.1}); keep-alive answered by the edge: p50 {:.1} µs (by the server itself: {:.1})",
        f(with, "p50_us"),
        f(without, "p50_us"),
        l.added_p50,
        f(with, "p99_us"),
        f(without, "p99_us"),
        l.added_p99,
        l.answered_p50,
        f(&answered["baseline"], "p50_us"),
    ));
    Ok(l)
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn json_line(out: &str) -> Value {
    out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
}

fn write(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write payload");
    p.to_str().expect("utf-8").to_owned()
}

fn main() -> anyhow::Result<()> {
    let secs = env_u64("BENCH_SECONDS", 3).clamp(1, 30);
    let tenants = env_u64("BENCH_TENANTS", 1000).clamp(10, 5000);
    let rtt_count = env_u64("BENCH_RTT_COUNT", 5000).clamp(100, 100_000);
    let dir = TempDir::new("bench")?;
    let notify = write(
        &dir.0,
        "notify.sip",
        "NOTIFY sip:198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-bench-0001;rport\r\n\
         From: <sip:phone-0001@198.18.1.10>;tag=bench0001\r\nTo: <sip:198.18.2.20:5060>\r\nCall-ID: bench-0001@198.18.1.10\r\n\
         CSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    );
    // Passes through the module (it is not a keep-alive): measures the cost of
    // interception itself, not of answering.
    let register = write(
        &dir.0,
        "register.sip",
        "REGISTER sip:198.18.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5061;branch=z9hG4bK-bench-reg;rport\r\n\
         From: <sip:phone-0001@198.18.2.20>;tag=bench0001\r\nTo: <sip:phone-0001@198.18.2.20>\r\nCall-ID: bench-reg@198.18.1.10\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:phone-0001@198.18.1.10:5061>\r\nExpires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    );
    let probe = paths::bin("netserv-probe");
    let dur_ms = (secs * 1000).to_string();

    let tb = Testbed::new("bench")?;
    // Keep-alives come from many phones; here from PHONES addresses in `ua`, so
    // that the kernel's --queue-balance (a hash of the addresses) spreads them
    // over the queues as it would in the field.
    let phone_count = env_u64("BENCH_PHONES", 4).clamp(1, 200);
    let mut phone_ips = vec![UA_IP.to_owned()];
    for i in 1..phone_count {
        let ip = format!("198.18.1.{}", 10 + i);
        tb.add_ua_address(&ip)?;
        phone_ips.push(ip);
    }
    let phones = phone_ips.join(",");
    let app = Appliance::start(&tb, &test_config(""))?;
    let flood = |tb: &Testbed| -> anyhow::Result<Value> {
        let out = tb.output(
            &tb.ua,
            &probe,
            &[
                "flood",
                "--to",
                SERVER,
                "--bind-ip",
                &phones,
                "--payload",
                &notify,
                "--ports",
                "32",
                "--duration-ms",
                &dur_ms,
            ],
        )?;
        Ok(json_line(&out))
    };

    // 1a. Plain kernel delivery of the same packets to a sink in core.
    progress(&format!("throughput: plain kernel delivery to a UDP sink, {secs} s"));
    let sink_log = dir.0.join("sink.json");
    let mut sink = tb.spawn(
        &tb.core,
        &probe,
        &["sink", "--bind", SERVER, "--duration-ms", &((secs + 3) * 1000).to_string()],
        Some(&sink_log),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let plain_flood = flood(&tb)?;
    sink.signal_and_wait("0", Duration::from_secs(secs + 10))?;
    let sink_out = json_line(&std::fs::read_to_string(&sink_log)?);
    let plain_pps = sink_out["received"].as_f64().unwrap_or(0.0) / plain_flood["elapsed_s"].as_f64().unwrap_or(1.0);
    progress(&format!(
        "  plain: sent {:.0} pps, delivered {plain_pps:.0} pps",
        plain_flood["sent_pps"].as_f64().unwrap_or(0.0)
    ));

    // 1b. The same load answered by the appliance.
    app.install(&keepalive_install(None))?;
    progress(&format!("throughput: answered by the keepalive module, {secs} s"));
    let ka_flood = flood(&tb)?;
    let answered_pps = ka_flood["answered_pps"].as_f64().unwrap_or(0.0);
    progress(&format!(
        "  appliance: sent {:.0} pps, answered {answered_pps:.0} pps",
        ka_flood["sent_pps"].as_f64().unwrap_or(0.0)
    ));
    let ratio = if plain_pps > 0.0 { answered_pps / plain_pps } else { 0.0 };

    // 2. Added latency for traffic the module inspects and passes on. Round
    // trips alternate between the intercepted server port and an echo server
    // on a port no filter matches, on the same path at the same time, so the
    // difference is what the appliance adds (not what the machine did
    // meanwhile). The tester (probe and echo servers) runs on one CPU, as a
    // separate test set would: left floating, where the scheduler happens to
    // put it moves the baseline by ±20 µs from run to run on this VM. The
    // floating figure is reported too, and the two other dataplane modes.
    let payloads = (register.as_str(), notify.as_str());
    let tester_cpu = u16::try_from(env_u64("BENCH_TESTER_CPU", 0)).unwrap_or(0);
    let pinned = Tester::Pinned(tester_cpu);
    let default = latency(
        &tb,
        payloads,
        rtt_count,
        pinned,
        &format!("default (steering = \"cpu\", blocking workers), tester on CPU {tester_cpu}"),
    )?;
    let floating = latency(&tb, payloads, rtt_count, Tester::Floating, "default, tester floating")?;
    drop(app);
    let with_dataplane = |lines: &str| -> anyhow::Result<Appliance> {
        let app = Appliance::start(&tb, &test_config_with(lines, ""))?;
        app.install(&keepalive_install(None))?;
        Ok(app)
    };
    let app = with_dataplane("steering = \"flow\"")?;
    let flow = latency(&tb, payloads, rtt_count, pinned, "steering = \"flow\" (hashed queues, workers float)")?;
    drop(app);
    let app = with_dataplane(&format!("steering = \"flow\"\nbusy_poll_us = {BUSY_POLL_US}"))?;
    let polling =
        latency(&tb, payloads, rtt_count, pinned, &format!("steering = \"flow\", busy_poll_us = {BUSY_POLL_US}"))?;
    drop(app);

    // 3. Idle memory per tenant.
    progress(&format!("memory: {tenants} tenants, one keepalive instance each"));
    let mut extra = String::new();
    for i in 0..tenants {
        extra.push_str(&format!(
            "\n[[tenants]]\nname = \"t{i}\"\npublic_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\napi_token = \"bench-tenant-token-{i:06}\"\nfilter_prefixes = [\"198.18.2.20/32\"]\nlisten_ports = [{}]\n",
            10_000 + i
        ));
    }
    let app = Appliance::start(&tb, &test_config(&extra))?;
    let install = |i: u64| -> anyhow::Result<()> {
        let mut body = keepalive_install(None);
        body["tenant"] = format!("t{i}").into();
        body["filter"]["ports"] = json!([10_000 + i]);
        app.install(&body).map(drop)
    };
    // The first install compiles the module; measure growth after it, so the
    // figure is what each further tenant costs.
    install(0)?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = app.proc.pid();
    let rss_one = rss_kib(pid);
    for i in 1..tenants {
        install(i)?;
        if i % 200 == 0 {
            progress(&format!("  {i}/{tenants} tenants installed, RSS {} MiB", rss_kib(pid) / 1024));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_all = rss_kib(pid);
    let per_tenant_kib = (rss_all.saturating_sub(rss_one)) as f64 / (tenants - 1) as f64;
    progress(&format!(
        "  RSS {} MiB with one tenant, {} MiB with {tenants}: {per_tenant_kib:.1} KiB per tenant",
        rss_one / 1024,
        rss_all / 1024
    ));
    drop(app);

    let figures = json!({
        "plain_delivery_pps": plain_pps.round(),
        "answered_keepalive_pps": answered_pps.round(),
        "throughput_ratio": (ratio * 1000.0).round() / 1000.0,
        "target_throughput_ratio": 0.6,
        "added_latency_p50_us": default.added_p50,
        "added_latency_p99_us": default.added_p99,
        "rtt_without_module_p50_us": default.without_p50,
        "keepalive_answered_by_edge_p50_us": default.answered_p50,
        "tester_cpu": tester_cpu,
        "floating_tester_added_latency_p50_us": floating.added_p50,
        "floating_tester_added_latency_p99_us": floating.added_p99,
        "flow_steering_added_latency_p50_us": flow.added_p50,
        "flow_steering_added_latency_p99_us": flow.added_p99,
        "busy_poll_us": BUSY_POLL_US,
        "busy_poll_added_latency_p50_us": polling.added_p50,
        "busy_poll_added_latency_p99_us": polling.added_p99,
        "busy_poll_keepalive_answered_by_edge_p50_us": polling.answered_p50,
        "target_added_latency_p50_us": 20,
        "tenants": tenants,
        "rss_one_tenant_kib": rss_one,
        "rss_all_tenants_kib": rss_all,
        "idle_memory_per_tenant_kib": (per_tenant_kib * 10.0).round() / 10.0,
        "target_idle_memory_per_tenant_kib": 1024,
    });
    println!("{figures}");
    Ok(())
}
