//! `netserv-bench-keepalive`: the KeepAlive responder and the dataplane,
//! side by side with plain kernel delivery on the namespace testbed
//! (ua ⇄ edge ⇄ core), in one run. Every figure is the median of
//! `BENCH_PAIRS` (default 5) alternating pairs, with min and max:
//!
//! 1. throughput: the same keep-alive flood from `ua` (32 ports on 4 phone
//!    addresses) (a) delivered by the plain kernel through `edge` to a UDP
//!    sink in `core` on a port no filter matches, and (b) answered by the
//!    appliance's keepalive module; the figure is (b)/(a). Both counted at
//!    the receiving kernel; the server and the phones read what they get.
//!    Then the same with nothing reading (capacity: the sender is limited
//!    by nothing but its CPU, so each side runs at what it can do);
//! 2. added latency, default configuration: round trips alternating
//!    between the intercepted port (the module inspects and passes a
//!    REGISTER to an echo server) and a port no filter matches, p50 and
//!    p99; and a NOTIFY keep-alive answered by the edge against the server
//!    answering it itself;
//! 3. hostile neighbour: while tenant `itsp-b`'s module spins just under
//!    its deadline (or traps on every other packet) on its own traffic,
//!    tenant `itsp-a`'s keep-alive rate at capacity (nothing reading, so the
//!    appliance is what limits it) and answer p99, against the mean of the
//!    same with `itsp-b`'s traffic but no module of its own just before and
//!    just after;
//! 4. 1,000 tenants, each with its own filter: the answered rate at
//!    capacity against the mean of one tenant's just before the 999 are
//!    installed and just after they are removed, in alternating pairs
//!    (install, measure, remove, measure, …);
//! 5. idle memory per tenant while those tenants get their instances.
//!
//! The tester (flood, sinks, the round-trip prober with its own echo
//! servers, the hostile traffic) runs on a CPU of its own
//! (`BENCH_TESTER_CPU`, default the last), the appliance on the others, as
//! two boxes would: the tester never competes with a worker for a CPU. The
//! prober spins instead of sleeping, so no wake-up of the tester's is in
//! the latency figures; what is measured is the appliance's path.
//!
//! Progress goes to stderr; the last line on stdout is a JSON object with
//! the figures. Needs root. Every load is bounded in time and count.
//!
//! Run: `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-keepalive`

mod floods;

use floods::{Bench, HOSTILE_IP, HOSTILE_PPS, Neighbour, queue_sum, write};
use netserv_tests::appliance::{TempDir, extra_tenants, keepalive_install, node_config};
use netserv_tests::bench::{Summary, env_u64, num, progress, round1, round3};
use netserv_tests::netns::UA_IP;
use netserv_tests::{Appliance, Testbed, paths, rss_kib};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let pairs = env_u64("BENCH_PAIRS", 5).clamp(1, 50) as usize;
    let flood_ms = env_u64("BENCH_SECONDS", 2).clamp(1, 30) * 1000;
    let tenants = env_u64("BENCH_TENANTS", 1000).clamp(10, 5000);
    let rtt_count = env_u64("BENCH_RTT_COUNT", 3000).clamp(100, 100_000);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let tester_cpu = env_u64("BENCH_TESTER_CPU", cpus.saturating_sub(1) as u64).to_string();
    let app_cpus: Vec<String> = (0..cpus).map(|c| c.to_string()).filter(|c| *c != tester_cpu).collect();
    let app_cpus = if app_cpus.is_empty() { tester_cpu.clone() } else { app_cpus.join(",") };
    progress(&format!("tester on CPU {tester_cpu}, appliance on CPUs {app_cpus}; {pairs} pairs per figure"));

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
    let tb = Testbed::new("bench")?;
    // Keep-alives come from many phones; here from 4 addresses in `ua`.
    let phone_count = env_u64("BENCH_PHONES", 4).clamp(1, 200);
    let mut phone_ips = vec![UA_IP.to_owned()];
    for i in 1..phone_count {
        let ip = format!("198.18.1.{}", 10 + i);
        tb.add_ua_address(&ip)?;
        phone_ips.push(ip);
    }
    tb.add_ua_address(HOSTILE_IP)?;
    let b = Bench {
        tb,
        dir,
        tester_cpu,
        phones: phone_ips.join(","),
        notify,
        register,
        probe: paths::bin("netserv-probe").to_str().unwrap_or_default().to_owned(),
        flood_ms,
        rtt_count,
    };

    // The default configuration (no [dataplane] settings), with the tenants
    // of phase 4 configured from the start (configured is not installed).
    let config = node_config("", &extra_tenants(tenants - 1, 10_000));
    let app = Appliance::start_with(&b.tb.edge, &config, Some(&app_cpus))?;
    app.install(&keepalive_install(None))?;
    std::thread::sleep(Duration::from_millis(300));

    // 1. Throughput.
    progress(&format!("throughput: plain delivery vs answered, {} ms floods", b.flood_ms));
    let (plain, answered_one, ratio) = b.pairs(pairs, true, "")?;

    // 1b. Capacity: the same with nobody reading (the kernel counts what it
    // delivered), so the sender is limited by nothing but its CPU and each
    // side runs at what it can do: the kernel forwarding every packet, the
    // appliance answering them.
    progress("capacity: the same floods with nothing reading what arrives");
    let (plain_cap, answered_cap, ratio_cap) = b.pairs(pairs, false, "")?;

    // 2. Latency.
    progress(&format!("latency: {} round trips each way per run, alternating intercepted / not", b.rtt_count));
    let wakeups_before = queue_sum(&app.metrics()?, "netserv_queue_wakeups_total");
    let batches_before = queue_sum(&app.metrics()?, "netserv_queue_batches_total");
    let (mut p50, mut p99, mut edge, mut server, mut base50, mut base99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let r = b.rtt(&b.register)?;
        let k = b.rtt(&b.notify)?;
        let (a50, a99) =
            (num(&r, "p50_us") - num(&r["baseline"], "p50_us"), num(&r, "p99_us") - num(&r["baseline"], "p99_us"));
        progress(&format!(
            "  run {}: inspected p50 {:.1} µs vs {:.1} (+{a50:.1}), p99 {:.1} vs {:.1} (+{a99:.1}); keep-alive answered by the edge p50 {:.1} µs (by the server {:.1})",
            i + 1,
            num(&r, "p50_us"),
            num(&r["baseline"], "p50_us"),
            num(&r, "p99_us"),
            num(&r["baseline"], "p99_us"),
            num(&k, "p50_us"),
            num(&k["baseline"], "p50_us"),
        ));
        p50.push(a50);
        p99.push(a99);
        base50.push(num(&r["baseline"], "p50_us"));
        base99.push(num(&r["baseline"], "p99_us"));
        edge.push(num(&k, "p50_us"));
        server.push(num(&k["baseline"], "p50_us"));
    }
    let (p50, p99, edge, server) = (Summary::of(&p50), Summary::of(&p99), Summary::of(&edge), Summary::of(&server));
    // How many of those packets woke a sleeping worker (the rest were found
    // by busy polling): a wake-up is what costs tens of µs on these VMs.
    let metrics = app.metrics()?;
    let wakeups = queue_sum(&metrics, "netserv_queue_wakeups_total") - wakeups_before;
    let batches = queue_sum(&metrics, "netserv_queue_batches_total") - batches_before;
    let wakeup_share = wakeups / batches.max(1.0);
    progress(&format!("  {wakeups:.0} of {batches:.0} batches woke a sleeping worker ({:.1} %)", wakeup_share * 100.0));
    let (base50, base99) = (Summary::of(&base50), Summary::of(&base99));

    // 3. Hostile neighbour.
    let modes: [(&str, Value); 2] = [
        ("spin-under", json!({ "mode": "spin-under", "spin_us": "1800" })),
        ("trap-alternate", json!({ "mode": "trap-alternate" })),
    ];
    let mut neighbour = serde_json::Map::new();
    for (mode, props) in &modes {
        progress(&format!(
            "hostile neighbour: itsp-b's module `{mode}` on its own {HOSTILE_PPS} pps, itsp-a's keep-alives beside it"
        ));
        let (mut rate, mut tail, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let measure = |b: &Bench| -> anyhow::Result<Neighbour> {
            let traffic = b.hostile_traffic(b.flood_ms + 3000)?;
            std::thread::sleep(Duration::from_millis(100));
            // Nothing reads the answers: the appliance, not the tester, is
            // then what limits the rate, so whatever the neighbour costs the
            // worker shows in it (with readers, both halves measure the
            // tester's CPU).
            let pps = b.answered_pps_with(false)?;
            let p99 = num(&b.rtt(&b.notify)?, "p99_us");
            drop(traffic);
            Ok(Neighbour { pps, p99 })
        };
        // Alone, beside, alone, beside, …, alone: each pair's "beside" is
        // set against the mean of the two "alone" around it, so that the
        // machine's drift over the seconds of a pair cancels.
        let mut before = measure(&b)?;
        for i in 0..pairs {
            app.install(&json!({
                "tenant": "itsp-b", "name": "hostile",
                "source": { "path": paths::module("netserv_fault_injector") },
                "filter": { "transport": "udp", "destination": "198.18.2.20/32", "ports": [5070] },
                "properties": props,
            }))?;
            let with = measure(&b)?;
            let m = app.module("itsp-b", "hostile")?;
            let (code, v) =
                app.api("DELETE", "/api/v1/modules/itsp-b/hostile", None, netserv_tests::appliance::ADMIN_TOKEN)?;
            anyhow::ensure!(code == 200, "remove hostile: {code} {v}");
            let after = measure(&b)?;
            let alone = Neighbour { pps: (before.pps + after.pps) / 2.0, p99: (before.p99 + after.p99) / 2.0 };
            progress(&format!(
                "  pair {}: itsp-a {:.0} pps alone (mean of {:.0} before, {:.0} after), {:.0} beside (x{:.3}); p99 {:.1} µs alone, {:.1} beside (x{:.2}); itsp-b ended {} ({} throttled packets, {} faults{})",
                i + 1,
                alone.pps,
                before.pps,
                after.pps,
                with.pps,
                with.pps / alone.pps,
                alone.p99,
                with.p99,
                with.p99 / alone.p99,
                m["state"].as_str().unwrap_or("?"),
                m["counters"]["throttled"],
                m["counters"]["faults"],
                m["quarantine_reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default(),
            ));
            rate.push(with.pps / alone.pps);
            tail.push(with.p99 / alone.p99);
            ends.push(json!({ "state": m["state"], "counters": m["counters"] }));
            before = after;
        }
        neighbour.insert(
            mode.to_string(),
            json!({
                "rate_ratio": Summary::of(&rate).json(3),
                "p99_ratio": Summary::of(&tail).json(2),
                "hostile_module_ended": ends,
            }),
        );
    }

    // 4 and 5. Many tenants, at capacity (nothing reading: what the
    // appliance can answer is what 999 more filters could cost), in
    // alternating pairs: one tenant, the 999 installed, one tenant again
    // once they are removed, … Each pair's figure sets the rate with 1,000
    // tenants against the mean of the one-tenant rates just before and just
    // after it, so the machine's drift over the minute a pair takes cancels
    // (single runs here move by ±15 %; a 5 % target needs the pairing).
    // Each rate is the median of 3 floods.
    let tenant_rate = |label: &str| -> anyhow::Result<f64> { Ok(b.answered_runs(3, label)?.median) };
    let pid = app.proc.pid();
    let (mut rss_one, mut rss_all) = (0, 0);
    let (mut many_ratios, mut alone_rates, mut many_rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut workers = 0;
    progress(&format!("{tenants} tenants: one tenant's rate first"));
    let mut before = tenant_rate(" with 1 tenant")?;
    alone_rates.push(before);
    for pair in 0..pairs {
        progress(&format!(
            "{tenants} tenants, pair {}: installing {} more keepalive modules, one filter each",
            pair + 1,
            tenants - 1
        ));
        let rss = rss_kib(pid);
        let started = Instant::now();
        for i in 0..tenants - 1 {
            let mut body = keepalive_install(None);
            body["tenant"] = format!("t{i}").into();
            body["filter"]["ports"] = json!([10_000 + i]);
            app.install(&body)?;
            if (i + 1) % 250 == 0 {
                progress(&format!("  {}/{} installed, RSS {} MiB", i + 2, tenants, rss_kib(pid) / 1024));
            }
        }
        progress(&format!("  installed in {:.1} s", started.elapsed().as_secs_f64()));
        std::thread::sleep(Duration::from_millis(500));
        if pair == 0 {
            // Idle memory: measured on the first install, before the
            // allocator holds freed pages of earlier rounds.
            (rss_one, rss_all) = (rss, rss_kib(pid));
            let metrics = app.metrics()?;
            workers = metrics.lines().filter(|l| l.starts_with("netserv_queue_batches_total{")).count();
        }
        let many = tenant_rate(&format!(" with {tenants} tenants"))?;
        progress(&format!("{tenants} tenants, pair {}: removing the {} again", pair + 1, tenants - 1));
        for i in 0..tenants - 1 {
            let (code, v) = app.api(
                "DELETE",
                &format!("/api/v1/modules/t{i}/keepalive"),
                None,
                netserv_tests::appliance::ADMIN_TOKEN,
            )?;
            anyhow::ensure!(code == 200, "remove t{i}: {code} {v}");
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = tenant_rate(" with 1 tenant")?;
        let alone = (before + after) / 2.0;
        progress(&format!(
            "  pair {}: {many:.0} pps with {tenants} tenants, {alone:.0} with one (mean of {before:.0} before, {after:.0} after): x{:.3}",
            pair + 1,
            many / alone
        ));
        many_ratios.push(many / alone);
        many_rates.push(many);
        alone_rates.push(after);
        before = after;
    }
    let per_tenant_kib = rss_all.saturating_sub(rss_one) as f64 / (tenants - 1) as f64;
    let many_ratio = Summary::of(&many_ratios);
    drop(app);

    progress(&format!("throughput ratio {}", ratio.show(3)));
    progress(&format!("capacity ratio {} (answered {} pps)", ratio_cap.show(3), answered_cap.show(0)));
    progress(&format!("added latency p50 {} µs, p99 {} µs", p50.show(1), p99.show(1)));
    progress(&format!("{tenants} tenants: {} of one tenant's rate (before and after)", many_ratio.show(3)));
    progress(&format!("memory: {per_tenant_kib:.1} KiB per tenant ({workers} workers, one instance each)"));

    let figures = json!({
        "pairs": pairs,
        "tester_cpu": b.tester_cpu,
        "appliance_cpus": app_cpus,
        "plain_delivery_pps": plain.json(0),
        "answered_keepalive_pps": answered_one.json(0),
        "throughput_ratio": ratio.json(3),
        "target_throughput_ratio": 0.9,
        "capacity_plain_pps": plain_cap.json(0),
        "capacity_answered_pps": answered_cap.json(0),
        "capacity_ratio": ratio_cap.json(3),
        "added_latency_p50_us": p50.json(1),
        "added_latency_p99_us": p99.json(1),
        "rtt_without_module_p50_us": base50.json(1),
        "rtt_without_module_p99_us": base99.json(1),
        "target_added_latency_p50_us": 20,
        "target_added_latency_p99_us": 100,
        "latency_batches_waking_a_worker": round3(wakeup_share),
        "keepalive_answered_by_edge_p50_us": edge.json(1),
        "keepalive_answered_by_server_p50_us": server.json(1),
        "hostile_neighbour": neighbour,
        "target_hostile_rate_ratio": 0.9,
        "target_hostile_p99_ratio": 2.0,
        "tenants": tenants,
        "answered_pps_one_tenant": Summary::of(&alone_rates).json(0),
        "answered_pps_many_tenants": Summary::of(&many_rates).json(0),
        "many_tenants_rate_ratio": many_ratio.json(3),
        "target_many_tenants_rate_ratio": 0.95,
        "workers": workers,
        "rss_one_tenant_kib": rss_one,
        "rss_all_tenants_kib": rss_all,
        "idle_memory_per_tenant_kib": round1(per_tenant_kib),
        "target_idle_memory_per_tenant_kib": 1024,
    });
    println!("{figures}");
    Ok(())
}
