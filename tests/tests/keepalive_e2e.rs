//! The KeepAlive responder end to end, on real processes in network namespaces:
//! sipp phone in `ua`, the appliance forwarding in `edge` with NFQUEUE, a sipp
//! UAS standing in for the SIP server in `core`. Needs root, iptables and sipp.

use netserv_tests::appliance::{
    ADMIN_TOKEN, TENANT_A_TOKEN, TempDir, keepalive_install, test_config, test_config_with,
};
use netserv_tests::netns::CORE_IP;
use netserv_tests::{Appliance, Testbed, paths, sipp, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

const SERVER: &str = "198.18.2.20:5060";

fn notify_payload(dir: &std::path::Path) -> String {
    let p = dir.join("notify.sip");
    std::fs::write(
        &p,
        "NOTIFY sip:198.18.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5099;branch=z9hG4bK-probe;rport\r\n\
         From: <sip:probe@198.18.1.10>;tag=p1\r\nTo: <sip:198.18.2.20:5060>\r\nCall-ID: probe-1\r\nCSeq: 1 NOTIFY\r\n\
         Event: keep-alive\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("write payload");
    p.to_str().expect("utf-8").to_owned()
}

fn ask(tb: &Testbed, to: &str, payload: &str, count: u32, timeout_ms: u32) -> Value {
    let out = tb
        .output(
            &tb.ua,
            paths::bin("netserv-probe"),
            &[
                "ask",
                "--to",
                to,
                "--payload",
                payload,
                "--count",
                &count.to_string(),
                "--timeout-ms",
                &timeout_ms.to_string(),
            ],
        )
        .expect("probe ask");
    serde_json::from_str(out.trim()).expect("probe json")
}

#[test]
fn keepalives_are_answered_at_the_edge_and_faults_stay_contained() {
    if !netserv_tests::e2e_ready("keepalives_are_answered_at_the_edge_and_faults_stay_contained") {
        return;
    }
    let tb = Testbed::new("ka").expect("testbed (run as root)");
    let logs = TempDir::new("ka-logs").expect("tmp");
    let uas_log = logs.0.join("uas_messages.log");
    let _uas = sipp::uas(&tb, &uas_log).expect("sipp UAS");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    std::thread::sleep(Duration::from_millis(300));

    // Baseline: no module, the server answers everything itself.
    let (ok, out) = sipp::keepalive_uac(&tb, SERVER, 10, 50, &logs.0).expect("uac");
    assert!(ok, "baseline run failed:\n{out}");
    let base = wait_for("baseline NOTIFYs at the UAS", Duration::from_secs(5), || {
        (sipp::received(&uas_log, "NOTIFY") == 10).then_some(10)
    });
    assert_eq!(sipp::received(&uas_log, "OPTIONS"), 10);

    // Install: every keep-alive is answered, none reaches the server.
    let installed = app.install(&keepalive_install(None)).expect("install keepalive");
    assert_eq!(installed["state"], "active");
    assert_eq!(tb.nfqueue_rules(), 1, "one NFQUEUE rule for the module");
    let (ok, out) = sipp::keepalive_uac(&tb, SERVER, 50, 100, &logs.0).expect("uac");
    assert!(ok, "keep-alives not all answered with the module installed:\n{out}\n{}", app.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sipp::received(&uas_log, "NOTIFY"), base, "the server saw NOTIFYs the edge should have absorbed");
    assert_eq!(sipp::received(&uas_log, "OPTIONS"), base, "the server saw OPTIONS the edge should have absorbed");

    // Each answer comes from the server's own address and port.
    let payload = notify_payload(&logs.0);
    let a = ask(&tb, SERVER, &payload, 5, 1000);
    assert_eq!(a["answered"], 5, "{a}");
    assert_eq!(a["sources"], json!([SERVER]), "answers must look as if the server sent them: {a}");
    assert!(a["last_answer"].as_str().unwrap_or_default().starts_with("SIP/2.0 200 OK\r\n"), "{a}");
    assert!(a["last_answer"].as_str().unwrap_or_default().contains(";rport="), "{a}");
    let m = app.module("itsp-a", "keepalive").expect("module info");
    assert!(m["counters"]["replied"].as_u64().unwrap_or(0) >= 105, "{m}");
    assert!(m["module_counters"]["answered_notify"].as_u64().unwrap_or(0) >= 55, "{m}");
    assert!(m["module_counters"]["answered_options"].as_u64().unwrap_or(0) >= 50, "{m}");

    // A second tenant's module traps on every packet: its packets fail open
    // (reach core), it ends up quarantined, and tenant A never notices.
    let sink_log = logs.0.join("sink.json");
    let mut sink = tb
        .spawn(
            &tb.core,
            paths::bin("netserv-probe"),
            &["sink", "--bind", &format!("{CORE_IP}:5070"), "--duration-ms", "8000"],
            Some(&sink_log),
        )
        .expect("sink");
    app.install(&json!({
        "tenant": "itsp-b", "name": "faulty",
        "source": { "path": paths::module("netserv_fault_injector") },
        "filter": { "transport": "udp", "destination": "198.18.2.20/32", "ports": [5070] },
        "properties": { "mode": "trap" },
    }))
    .expect("install fault injector");
    wait_for("sink ready", Duration::from_secs(5), || {
        std::fs::read_to_string(&sink_log).ok().filter(|s| s.contains("ready"))
    });
    let to_b = format!("{CORE_IP}:5070");
    // 40 packets over ~2 s: enough for the reload backoff (50, 100, 200,
    // 400 ms) to run out and the fifth fault to quarantine the module.
    let b = ask(&tb, &to_b, &payload, 40, 50);
    assert_eq!(b["answered"], 0, "nothing answers on 5070: {b}");
    let (ok, out) = sipp::keepalive_uac(&tb, SERVER, 20, 100, &logs.0).expect("uac");
    assert!(ok, "tenant A's keep-alives failed while tenant B's module trapped:\n{out}");
    sink.signal_and_wait("0", Duration::from_secs(10)).ok();
    let sink_out = std::fs::read_to_string(&sink_log).unwrap_or_default();
    let received: u64 = sink_out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["received"].as_u64())
        .unwrap_or(0);
    assert_eq!(received, 40, "every packet of the trapping module must fail open to core: {sink_out}");
    let faulty = app.module("itsp-b", "faulty").expect("faulty info");
    assert_eq!(faulty["state"], "quarantined", "{faulty}");
    assert!(faulty["counters"]["faults"].as_u64().unwrap_or(0) >= 5, "{faulty}");
    // Every packet it saw failed open; once quarantined, its rule goes and
    // the rest bypass the appliance altogether.
    assert_eq!(faulty["counters"]["fail_open"], faulty["counters"]["packets"], "{faulty}");
    assert!(faulty["counters"]["packets"].as_u64().is_some_and(|p| p <= 40), "{faulty}");
    let ka = app.module("itsp-a", "keepalive").expect("keepalive info");
    assert_eq!(ka["counters"]["faults"], 0, "{ka}");
    assert_eq!(ka["state"], "active");
    let metrics = app.metrics().expect("metrics");
    assert!(metrics.contains("netserv_module_quarantined{tenant=\"itsp-b\",module=\"faulty\"} 1"), "{metrics}");
    // Request/response traffic keeps every pinned worker at home.
    for queue in [270, 271] {
        assert!(metrics.contains(&format!("netserv_queue_spilled{{queue=\"{queue}\"}} 0")), "{metrics}");
    }
    // Quarantined: its rule goes, so its traffic no longer detours through the appliance.
    let t = std::time::Instant::now();
    while tb.nfqueue_rules() != 1 {
        assert!(t.elapsed() < Duration::from_secs(3), "the quarantined module's rule stayed:\n{}", app.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Tenant A's token sees only its own module.
    let (code, list) = app.api("GET", "/api/v1/modules", None, TENANT_A_TOKEN).expect("list");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Removal: requests reach the server again.
    let (code, _) = app.api("DELETE", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).expect("delete");
    assert_eq!(code, 200);
    assert_eq!(tb.nfqueue_rules(), 0, "no rule left: one module removed, the other quarantined");
    let (ok, out) = sipp::keepalive_uac(&tb, SERVER, 10, 50, &logs.0).expect("uac");
    assert!(ok, "after removal the server must answer:\n{out}");
    wait_for("NOTIFYs at the UAS after removal", Duration::from_secs(5), || {
        (sipp::received(&uas_log, "NOTIFY") == base + 10).then_some(())
    });

    // SIGKILL: rules stay, --queue-bypass lets traffic flow to the server.
    app.install(&keepalive_install(None)).expect("reinstall");
    let mut app = app;
    app.proc.signal_and_wait("KILL", Duration::from_secs(5)).expect("kill -9");
    assert_eq!(tb.nfqueue_rules(), 1, "the rule remains after SIGKILL");
    let (ok, out) = sipp::keepalive_uac(&tb, SERVER, 10, 50, &logs.0).expect("uac");
    assert!(ok, "traffic must flow with the appliance dead (fail-open):\n{out}");
    wait_for("NOTIFYs at the UAS after SIGKILL", Duration::from_secs(5), || {
        (sipp::received(&uas_log, "NOTIFY") == base + 20).then_some(())
    });
}

#[test]
fn sigterm_drains_and_removes_every_rule() {
    if !netserv_tests::e2e_ready("sigterm_drains_and_removes_every_rule") {
        return;
    }
    let tb = Testbed::new("term").expect("testbed (run as root)");
    let mut app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&keepalive_install(None)).expect("install");
    assert_eq!(tb.nfqueue_rules(), 1);
    let status = app.proc.signal_and_wait("TERM", Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", app.log());
    assert_eq!(tb.nfqueue_rules(), 0, "SIGTERM must remove the rules");
    let chains = tb.output(&tb.edge, "iptables", &["-S"]).expect("iptables -S");
    assert!(!chains.contains("NETSERV"), "chain left behind:\n{chains}");
}

#[test]
fn stale_rules_from_a_killed_run_are_removed_at_start_up() {
    if !netserv_tests::e2e_ready("stale_rules_from_a_killed_run_are_removed_at_start_up") {
        return;
    }
    let tb = Testbed::new("stale").expect("testbed (run as root)");
    let mut app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&keepalive_install(None)).expect("install");
    app.proc.signal_and_wait("KILL", Duration::from_secs(5)).expect("kill -9");
    assert_eq!(tb.nfqueue_rules(), 1);
    drop(app);
    let _app = Appliance::start(&tb, &test_config("")).expect("restarts");
    assert_eq!(tb.nfqueue_rules(), 0, "stale rule survived the restart");
}

#[test]
fn ttl_expiry_removes_the_module_without_any_request() {
    if !netserv_tests::e2e_ready("ttl_expiry_removes_the_module_without_any_request") {
        return;
    }
    let tb = Testbed::new("ttl").expect("testbed (run as root)");
    // Workers that always block (busy polling off): the same answers as the
    // default adaptive polling ones, from the server's address.
    let app = Appliance::start(&tb, &test_config_with("busy_poll_us = 0", "")).expect("appliance starts");
    let m = app.install(&keepalive_install(Some(2))).expect("install");
    assert!(m["ttl_remaining_secs"].as_u64().is_some_and(|t| t <= 2), "{m}");
    assert_eq!(tb.nfqueue_rules(), 1);
    let dir = TempDir::new("ttl").expect("tmp");
    let answers = ask(&tb, SERVER, &notify_payload(&dir.0), 20, 500);
    assert_eq!(answers["answered"], 20, "{answers}\n{}", app.log());
    assert_eq!(answers["sources"], json!([SERVER]), "{answers}");
    wait_for("TTL expiry", Duration::from_secs(6), || (tb.nfqueue_rules() == 0).then_some(()));
    let (code, _) = app.api("GET", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).expect("get");
    assert_eq!(code, 404);
}

/// Each hostile mode of the fault injector, misbehaving on every packet of
/// tenant B's own traffic (a steady stream to its port), while tenant A's
/// phone keeps alive through the same appliance and the same worker: every
/// one of A's keep-alives is answered, B's packets all pass (never lost),
/// and B's module ends as its mode deserves — quarantined for faults and
/// CPU overruns, refused and counted for floods and oversized replies.
#[test]
fn hostile_modules_cost_the_neighbour_nothing() {
    if !netserv_tests::e2e_ready("hostile_modules_cost_the_neighbour_nothing") {
        return;
    }
    let tb = Testbed::new("hostile").expect("testbed (run as root)");
    tb.add_ua_address("198.18.1.50").expect("hostile phone address");
    let dir = TempDir::new("hostile").expect("tmp");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&keepalive_install(None)).expect("install keepalive");
    let payload = notify_payload(&dir.0);
    let hostile_to = format!("{CORE_IP}:5070");
    // (mode, extra properties, how the module must end)
    type Mode<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let modes: [Mode<'_>; 9] = [
        ("trap-alternate", &[], "quarantined"),
        ("spin", &[], "quarantined"),
        ("spin-under", &[("spin_us", "1800")], "quarantined"),
        ("grow", &[], "quarantined"),
        ("recurse", &[], "quarantined"),
        ("max-reply", &[("reply_bytes", "65000")], "active"),
        // Ten host calls a packet: within the deadline even in a debug build.
        ("log-flood", &[("burst", "10")], "active"),
        ("counter-flood", &[("burst", "10")], "active"),
        ("state-flood", &[("burst", "10")], "active"),
    ];
    for (mode, extra, ends) in modes {
        let mut props = json!({ "mode": mode });
        for (k, v) in extra {
            props[*k] = (*v).into();
        }
        app.install(&json!({
            "tenant": "itsp-b", "name": "hostile",
            "source": { "path": paths::module("netserv_fault_injector") },
            "filter": { "transport": "udp", "destination": "198.18.2.20/32", "ports": [5070] },
            "properties": props,
        }))
        .expect("install the hostile module");
        let sink_log = dir.0.join(format!("sink-{mode}.json"));
        let mut sink = tb
            .spawn(
                &tb.core,
                paths::bin("netserv-probe"),
                &["sink", "--bind", &hostile_to, "--duration-ms", "6000"],
                Some(&sink_log),
            )
            .expect("sink");
        wait_for("sink ready", Duration::from_secs(5), || {
            std::fs::read_to_string(&sink_log).ok().filter(|s| s.contains("ready"))
        });
        let flood_log = dir.0.join(format!("flood-{mode}.json"));
        let mut hostile_traffic = tb
            .spawn(
                &tb.ua,
                paths::bin("netserv-probe"),
                &[
                    "flood",
                    "--to",
                    &hostile_to,
                    "--bind-ip",
                    "198.18.1.50",
                    "--payload",
                    &payload,
                    "--ports",
                    "4",
                    "--duration-ms",
                    "3000",
                    "--rate-pps",
                    "1000",
                ],
                Some(&flood_log),
            )
            .expect("hostile traffic");
        // Tenant A's phone keeps alive all along B's three seconds.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(200));
            let a = ask(&tb, SERVER, &payload, 100, 1000);
            if a["answered"] != 100 {
                let ka = app.module("itsp-a", "keepalive").expect("keepalive info");
                let q: Vec<String> = app
                    .metrics()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("netserv_queue") || l.starts_with("netserv_module_packets"))
                    .map(str::to_owned)
                    .collect();
                panic!("{mode}: tenant A's keep-alives beside it: {a}\n{ka}\n{}\n{}", q.join("\n"), app.log());
            }
            assert_eq!(a["sources"], json!([SERVER]), "{mode}: {a}");
            std::thread::sleep(Duration::from_millis(400));
        }
        hostile_traffic.signal_and_wait("0", Duration::from_secs(10)).expect("hostile traffic ends");
        sink.signal_and_wait("0", Duration::from_secs(10)).ok();
        let m = app.module("itsp-b", "hostile").expect("hostile info");
        assert_eq!(m["state"], ends, "{mode}: {m}");
        let c = &m["counters"];
        assert_eq!(c["replied"], 0, "{mode}: {m}");
        assert_eq!(c["dropped"], 0, "{mode}: {m}");
        match mode {
            "spin-under" => {
                assert_eq!(c["faults"], 0, "{mode}: {m}");
                assert!(c["throttled_windows"].as_u64() >= Some(3), "{mode}: {m}");
                assert!(m["quarantine_reason"].as_str().unwrap_or_default().contains("CPU budget"), "{mode}: {m}");
            }
            "max-reply" => assert!(c["verdict_errors"].as_u64() > Some(100), "{mode}: {m}"),
            m_ if ends == "quarantined" => {
                assert!(c["faults"].as_u64() >= Some(5), "{m_}: {m}");
            }
            // A flood is capped, not punished: the module stays in service.
            // (In a debug build, a host call that rehashes the tenant's state
            // can take one call past its deadline: a fault, far from the
            // five that quarantine.)
            _ => assert!(c["faults"].as_u64() < Some(3), "{mode}: {m}"),
        }
        let ka = app.module("itsp-a", "keepalive").expect("keepalive info");
        assert_eq!(
            (&ka["state"], &ka["counters"]["faults"], &ka["counters"]["throttled"]),
            (&json!("active"), &json!(0), &json!(0)),
            "{mode}: {ka}"
        );
        let (code, _) = app.api("DELETE", "/api/v1/modules/itsp-b/hostile", None, ADMIN_TOKEN).expect("delete");
        assert_eq!(code, 200, "{mode}");
    }
    // What the floods were refused is counted against tenant B alone.
    let (code, usage) = app.api("GET", "/api/v1/usage", None, ADMIN_TOKEN).expect("usage");
    assert_eq!(code, 200, "{usage}");
    let of = |t: &str| usage.as_array().and_then(|a| a.iter().find(|u| u["tenant"] == t).cloned()).unwrap_or_default();
    let (a, b) = (of("itsp-a"), of("itsp-b"));
    for k in ["log_dropped", "counter_refused", "state_refused", "memory_refused"] {
        assert!(b[k].as_u64() > Some(0), "{k}: {usage}");
        assert_eq!(a[k], 0, "{k}: {usage}");
    }
    let (code, own) = app.api("GET", "/api/v1/usage", None, TENANT_A_TOKEN).expect("usage as tenant A");
    assert_eq!(code, 200);
    assert_eq!(own.as_array().map(Vec::len), Some(1), "a tenant sees only its own usage: {own}");
    // B's instances are all torn down (off the packet threads): its memory
    // comes back to nothing.
    wait_for("tenant B's instances torn down", Duration::from_secs(5), || {
        let (_, u) = app.api("GET", "/api/v1/usage", None, ADMIN_TOKEN).ok()?;
        let b = u.as_array()?.iter().find(|t| t["tenant"] == "itsp-b")?.clone();
        (b["memory_bytes"] == 0).then_some(())
    });
}
