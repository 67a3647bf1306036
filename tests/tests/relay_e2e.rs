//! The media relay end to end: the appliance in `edge` serves the TURN
//! module on 198.18.1.1:3478; coturn's own client (`turnutils_uclient`) in
//! `ua` allocates there and relays to coturn's `turnutils_peer` in `core`,
//! which echoes. Needs root and Debian's `coturn` package.

use netserv_tests::appliance::{ADMIN_TOKEN, TENANT_B_TOKEN};
use netserv_tests::netns::{CORE_IP, EDGE_CORE_IP, EDGE_UA_IP};
use netserv_tests::relay::{self, PASSWORD, REST_SECRET, USER};
use netserv_tests::{Appliance, Testbed, wait_for};
use serde_json::Value;
use std::time::Duration;

/// A testbed whose edge serves the relay (`extra`: more of tenant itsp-a's
/// config), its secrets set. (Bound in this order, the appliance goes
/// before its namespaces.)
fn relay_node(tag: &str, extra: &str) -> (Testbed, Appliance) {
    let tb = Testbed::new(tag).expect("testbed (run as root)");
    let app = Appliance::start(&tb, &relay::relay_config(extra)).expect("appliance starts");
    relay::set_secrets(&app).expect("secrets");
    if let Err(e) = app.install(&relay::relay_install()) {
        panic!("install the relay: {e}\n{}", app.log());
    }
    (tb, app)
}

fn relay_stats(app: &Appliance) -> Value {
    app.module("itsp-a", "relay").expect("the relay module")
}

#[test]
fn coturn_clients_relay_through_the_edge_in_every_mode_but_tcp_relaying() {
    if !netserv_tests::e2e_ready("coturn_clients_relay_through_the_edge_in_every_mode_but_tcp_relaying") {
        return;
    }
    let tb = Testbed::new("turn").expect("testbed (run as root)");
    let app = Appliance::start(&tb, &relay::relay_config("")).expect("appliance starts");
    relay::set_secrets(&app).expect("secrets");
    let installed = app.install(&relay::relay_install()).expect("install the relay");
    assert_eq!(installed["kind"], "server");
    assert_eq!(installed["relay"]["listening"][0], format!("{EDGE_UA_IP}:{}", relay::RELAY_PORT));
    assert_eq!(installed["relay"]["listening"][1], format!("{EDGE_UA_IP}:{}", relay::RELAY_PORT), "and TCP");
    let _peer = relay::peer(&tb).expect("turnutils_peer");
    std::thread::sleep(Duration::from_millis(200));

    let static_user = ["-u", USER, "-w", PASSWORD];
    // Channels (the default), Send indications, client to client, DONT-FRAGMENT,
    // no RTCP pair, several clients at once, and TURN REST credentials.
    let modes: [(&str, Vec<&str>); 9] = [
        ("channels", vec![]),
        ("TCP client transport (-t)", vec!["-t"]),
        ("TCP with Send indications (-t -s)", vec!["-t", "-s"]),
        ("send indications (-s)", vec!["-s"]),
        ("client to client (-y)", vec!["-y"]),
        ("DONT-FRAGMENT (-g)", vec!["-g"]),
        ("no RTCP (-c)", vec!["-c"]),
        ("4 clients (-m 4)", vec!["-m", "4"]),
        ("REST secret (-W)", vec!["-W", REST_SECRET, "-u", "phone-0001"]),
    ];
    for (what, flags) in modes {
        let mut args = vec!["-n", "30", "-l", "160", "-z", "5"];
        if !flags.contains(&"-W") {
            args.extend(static_user);
        }
        args.extend(flags.iter().copied());
        let run = relay::uclient(&tb, &args, CORE_IP).expect("turnutils_uclient");
        assert!(run.sent > 0, "{what}: nothing sent\n{}\n{}", run.output, app.log());
        assert_eq!(run.received, run.sent, "{what}: bytes received must equal bytes sent\n{}", run.output);
        assert_eq!(run.lost, 0, "{what}: lost packets\n{}", run.output);
        assert!(run.errors.is_empty(), "{what}: the client saw errors: {:?}", run.errors);
    }

    // The relayed bytes went through the host's fast path, counted per
    // module; the guest never faulted.
    let m = wait_for("the relay's counters", Duration::from_secs(3), || {
        let m = relay_stats(&app);
        (m["relay"]["usage"]["packets_to_peers"].as_u64().unwrap_or(0) > 0).then_some(m)
    });
    assert_eq!(m["counters"]["faults"], 0, "{m}");
    let usage = &m["relay"]["usage"];
    assert!(usage["bytes_to_peers"].as_u64().unwrap_or(0) >= 30 * 160, "{m}");
    assert!(usage["bytes_to_client"].as_u64().unwrap_or(0) >= 30 * 160, "{m}");
    assert!(m["module_counters"]["allocations"].as_u64().unwrap_or(0) >= 9, "{m}");
    assert!(m["module_counters"]["channel_bindings"].as_u64().unwrap_or(0) > 0, "{m}");
    let metrics = app.metrics().expect("metrics");
    assert!(
        metrics.contains("netserv_relay_bytes_total{tenant=\"itsp-a\",module=\"relay\",direction=\"to_peers\"}"),
        "{metrics}"
    );

    // Another tenant sees nothing of it.
    let (code, v) = app.api("GET", "/api/v1/modules", None, TENANT_B_TOKEN).expect("api");
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let (code, _) = app.api("GET", "/api/v1/tenants/itsp-a/secrets", None, TENANT_B_TOKEN).expect("api");
    assert_eq!(code, 404, "another tenant's secrets do not exist for it");
    let (code, v) = app.api("GET", "/api/v1/tenants/itsp-a/secrets", None, ADMIN_TOKEN).expect("api");
    assert_eq!(code, 200);
    assert!(!v.to_string().contains(REST_SECRET), "names only, never values: {v}");

    // Removed: the port closes, the client gets nowhere.
    let (code, _) = app.api("DELETE", "/api/v1/modules/itsp-a/relay", None, ADMIN_TOKEN).expect("api");
    assert_eq!(code, 200);
    let mut args = vec!["-n", "5"];
    args.extend(static_user);
    let run = relay::uclient(&tb, &args, CORE_IP).expect("turnutils_uclient");
    assert_eq!(run.received, 0, "{}", run.output);
}

/// TCP relaying (RFC 6062): coturn's client in its `-T` mode — two
/// clients, each with a TCP allocation; one Connects to the other's relayed
/// address, the other is offered the connection (ConnectionAttempt), both
/// bind data connections, and the bytes echo through natively.
#[test]
fn coturn_clients_relay_over_tcp_allocations() {
    if !netserv_tests::e2e_ready("coturn_clients_relay_over_tcp_allocations") {
        return;
    }
    let (tb, app) = relay_node("turntcp", "");
    std::thread::sleep(Duration::from_millis(200));
    let run = relay::uclient(&tb, &["-T", "-n", "30", "-l", "160", "-z", "5", "-u", USER, "-w", PASSWORD], CORE_IP)
        .expect("turnutils_uclient");
    assert!(run.sent > 0, "nothing sent\n{}\n{}", run.output, app.log());
    assert_eq!(run.received, run.sent, "bytes received must equal bytes sent\n{}\n{}", run.output, app.log());
    // The usage is a snapshot the relay thread publishes at each
    // housekeeping pass (four times a second): the last bytes echoed may not
    // be in it yet when the client exits.
    let m = wait_for("the relayed bytes in the usage", Duration::from_secs(3), || {
        let m = relay_stats(&app);
        (m["relay"]["usage"]["bytes_to_peers"].as_u64() >= Some(30 * 160)).then_some(m)
    });
    let c = &m["module_counters"];
    eprintln!("TCP relaying: sent {} received {}; counters {c}; usage {}", run.sent, run.received, m["relay"]["usage"]);
    assert!(c["connections"].as_u64() > Some(0), "a Connect succeeded: {m}");
    assert!(c["connection_attempts"].as_u64() > Some(0), "a peer connection was offered: {m}");
    assert!(c["connection_binds"].as_u64() >= Some(2), "both data connections bound: {m}");
    assert!(m["relay"]["usage"]["bytes_to_peers"].as_u64() >= Some(30 * 160), "{m}");
    assert_eq!(m["counters"]["faults"], 0, "{m}");
}

#[test]
fn the_peer_policy_refuses_forbidden_peers_with_403_and_counts_them() {
    if !netserv_tests::e2e_ready("the_peer_policy_refuses_forbidden_peers_with_403_and_counts_them") {
        return;
    }
    let (tb, app) = relay_node("turnpol", "");
    std::thread::sleep(Duration::from_millis(200));

    // DESIGN.md §4.3's deny-by-default list, as a client names the peer
    // (turnutils_uclient -e): CreatePermission and ChannelBind are refused,
    // and below, RFC 6062 Connect.
    let forbidden: [(&str, &str); 8] = [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link_local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        (EDGE_CORE_IP, "this_node"),
    ];
    for (peer, rule) in forbidden {
        for mode in [vec![], vec!["-s"]] {
            let mut args = vec!["-n", "3", "-u", USER, "-w", PASSWORD];
            args.extend(mode.iter().copied());
            let run = relay::uclient(&tb, &args, peer).expect("turnutils_uclient");
            assert_eq!(run.received, 0, "{peer}: nothing may come back\n{}", run.output);
            assert!(run.errors.iter().any(|e| e.contains("403")), "{peer} ({rule}) {mode:?}: no 403\n{}", run.output);
        }
    }
    // The Connect path (RFC 6062) from a TCP allocation, peer by peer, and
    // Send indications straight to each peer (no permission asked first).
    let peers: Vec<String> = forbidden.iter().map(|(p, _)| format!("{p}:80")).collect();
    let connects = peer_answers(&tb, "connect", &peers);
    for (peer, rule) in forbidden {
        assert_eq!(
            connects.get(&format!("{peer}:80")).map(String::as_str),
            Some("403"),
            "Connect to {peer} ({rule}): {connects:?}"
        );
    }
    let sends = peer_answers(&tb, "send", &peers);
    assert_eq!(sends.len(), peers.len(), "{sends:?}");
    let expected: Vec<(&str, &str)> = forbidden
        .iter()
        .flat_map(|(_, rule)| {
            // A Send indication gets no answer (RFC 8656 §11.2): refused
            // silently, and counted like the others.
            [("create_permission", *rule), ("channel_bind", *rule), ("send", *rule), ("connect", *rule)]
        })
        .collect();
    let counted = |m: &Value| {
        let refused = m["relay"]["refused"].as_array().cloned().unwrap_or_default();
        expected
            .iter()
            .filter(|(path, rule)| {
                !refused.iter().any(|r| r["path"] == *path && r["reason"] == *rule && r["count"].as_u64() > Some(0))
            })
            .copied()
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    let mut m = relay_stats(&app);
    while !counted(&m).is_empty() && started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        m = relay_stats(&app);
    }
    assert!(counted(&m).is_empty(), "not counted: {:?} in {}", counted(&m), m["relay"]["refused"]);
    assert_eq!(m["module_counters"]["refused_forbidden_peer"].as_u64().map(|n| n >= 16), Some(true), "{m}");
    let metrics = app.metrics().expect("metrics");
    assert!(metrics.contains("netserv_relay_peers_refused_total{tenant=\"itsp-a\",module=\"relay\",path=\"create_permission\",reason=\"loopback\"}"), "{metrics}");

    // The operator opens a prefix for this tenant: a private peer there is
    // allowed (10.9.9.9 on core, routed by the edge); the node's own
    // addresses stay closed even when the list covers them.
    drop(app);
    for args in [
        vec!["-n", &tb.core, "addr", "add", "10.9.9.9/32", "dev", "c0"],
        vec!["-n", &tb.edge, "route", "add", "10.9.9.9/32", "via", CORE_IP],
    ] {
        let ok = std::process::Command::new("ip").args(&args).status().expect("ip");
        assert!(ok.success(), "ip {args:?}");
    }
    let allow = format!("peer_allow = [\"10.9.9.0/24\", \"{EDGE_CORE_IP}/32\"]");
    let app = Appliance::start(&tb, &relay::relay_config(&allow)).expect("restart");
    relay::set_secrets(&app).expect("secrets");
    app.install(&relay::relay_install()).expect("install the relay");
    let _peer = netserv_tests::netns::spawn(&tb.core, "turnutils_peer", &["-L", "10.9.9.9", "-p", "3480"], None)
        .expect("peer at 10.9.9.9");
    std::thread::sleep(Duration::from_millis(200));
    let run = relay::uclient(&tb, &["-n", "5", "-u", USER, "-w", PASSWORD], "10.9.9.9").expect("turnutils_uclient");
    assert!(run.sent > 0 && run.received == run.sent, "allowed by peer_allow:\n{}", run.output);
    let run = relay::uclient(&tb, &["-n", "3", "-u", USER, "-w", PASSWORD], EDGE_CORE_IP).expect("turnutils_uclient");
    assert!(run.errors.iter().any(|e| e.contains("403")), "the node itself stays closed:\n{}", run.output);
    // So on the Connect path: the allowed peer is tried (it has no TCP
    // listener, so 447), the node itself refused.
    let connects = peer_answers(&tb, "connect", &["10.9.9.9:3480".into(), format!("{EDGE_CORE_IP}:3480")]);
    assert_eq!(connects.get("10.9.9.9:3480").map(String::as_str), Some("447"), "{connects:?}");
    assert_eq!(connects.get(&format!("{EDGE_CORE_IP}:3480")).map(String::as_str), Some("403"), "{connects:?}");
}

/// `netserv-turn-peers MODE` in `ua` naming `peers` to the relay (RFC 6062
/// Connects, or Send indications): what it printed per peer.
fn peer_answers(tb: &Testbed, mode: &str, peers: &[String]) -> std::collections::HashMap<String, String> {
    let server = format!("{EDGE_UA_IP}:{}", relay::RELAY_PORT);
    let out = netserv_tests::netns::cmd(&tb.ua, netserv_tests::paths::bin("netserv-turn-peers"))
        .args([mode, server.as_str(), REST_SECRET, "phone-0001"])
        .args(peers)
        .output()
        .expect("netserv-turn-peers");
    assert!(out.status.success(), "netserv-turn-peers {mode}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(p, c)| (p.to_owned(), c.to_owned())))
        .collect()
}

#[test]
fn malformed_turn_input_is_answered_or_dropped_and_the_relay_keeps_serving() {
    if !netserv_tests::e2e_ready("malformed_turn_input_is_answered_or_dropped_and_the_relay_keeps_serving") {
        return;
    }
    let (tb, app) = relay_node("turnbad", "");
    let _peer = relay::peer(&tb).expect("turnutils_peer");
    // coturn's negative protocol tests (-R: broken requests) and
    // negative tests (-N).
    for flag in ["-R", "-N"] {
        let _ = relay::uclient(&tb, &["-n", "5", "-u", USER, "-w", PASSWORD, flag], CORE_IP).expect("uclient");
    }
    // Random datagrams at the port, then a real client still gets through.
    let out = netserv_tests::netns::cmd(&tb.ua, "python3")
        .args([
            "-c",
            "import os,socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for i in range(300):\n  n=os.urandom(1)[0]\n  s.sendto(os.urandom(n), ('198.18.1.1', 3478))\n\
             s.sendto(b'\\x00\\x03\\x00\\x08\\x21\\x12\\xa4\\x42'+b'a'*12+b'\\x00\\x06\\x00\\x40', ('198.18.1.1', 3478))\n",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = relay::uclient(&tb, &["-n", "10", "-u", USER, "-w", PASSWORD], CORE_IP).expect("uclient");
    assert!(run.sent > 0 && run.received == run.sent, "{}\n{}", run.output, app.log());
    let m = relay_stats(&app);
    assert_eq!(m["counters"]["faults"], 0, "no input may fault the guest: {m}");
    assert_eq!(m["state"], "active");
}

/// Isolation: a flood of requests costs the tenant's guest at most its CPU
/// share (`server_cpu_percent`, here 1 %): past it, requests are dropped and
/// counted until the window ends, while the media of allocations already
/// made keeps flowing natively, every packet of it.
#[test]
fn a_request_flood_past_the_cpu_share_is_throttled_and_media_keeps_flowing() {
    if !netserv_tests::e2e_ready("a_request_flood_past_the_cpu_share_is_throttled_and_media_keeps_flowing") {
        return;
    }
    let (tb, app) = relay_node("turncpu", "limits = { server_cpu_percent = 1 }");
    let _peer = relay::peer(&tb).expect("turnutils_peer");
    std::thread::sleep(Duration::from_millis(200));
    // Binding requests (each one a guest call), ~40,000 a second for 1.5 s,
    // starting once the client below has its allocation and channel.
    let ua = tb.ua.clone();
    let flood = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        netserv_tests::netns::cmd(&ua, "python3")
            .args([
                "-c",
                "import os,socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 end=time.time()+1.5\n\
                 while time.time()<end:\n  for i in range(200):\n    s.sendto(b'\\x00\\x01\\x00\\x00\\x21\\x12\\xa4\\x42'+os.urandom(12), ('198.18.1.1', 3478))\n  time.sleep(0.005)\n",
            ])
            .output()
            .expect("python3")
    });
    let run = relay::uclient(&tb, &["-n", "150", "-l", "160", "-z", "20", "-u", USER, "-w", PASSWORD], CORE_IP)
        .expect("uclient");
    let out = flood.join().expect("flood");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run.sent > 0 && run.received == run.sent, "media kept flowing through the flood:\n{}", run.output);
    let m = relay_stats(&app);
    let throttled = m["relay"]["throttled_requests"].as_u64().unwrap_or(0);
    eprintln!(
        "throttled {throttled} requests in {} windows; {} guest calls",
        m["relay"]["throttled_windows"], m["relay"]["guest_calls"]
    );
    assert!(throttled > 1000, "the flood went past 1 % of a CPU: {m}");
    assert!(m["relay"]["throttled_windows"].as_u64() > Some(0), "{m}");
    assert_eq!(m["counters"]["faults"], 0, "{m}");
    let metrics = app.metrics().expect("metrics");
    assert!(
        metrics.contains("netserv_relay_throttled_requests_total{tenant=\"itsp-a\",module=\"relay\"}"),
        "{metrics}"
    );
    // Once it ends, requests are served again.
    let run = relay::uclient(&tb, &["-n", "5", "-u", USER, "-w", PASSWORD], CORE_IP).expect("uclient");
    assert!(run.sent > 0 && run.received == run.sent, "{}", run.output);
}

/// Wake-up coalescing (`servers.coalesce_us`): under dense ChannelData the
/// relay's thread pauses between looks instead of waking per datagram, and
/// relays every packet all the same.
#[test]
fn dense_media_with_coalesced_wake_ups_loses_nothing() {
    if !netserv_tests::e2e_ready("dense_media_with_coalesced_wake_ups_loses_nothing") {
        return;
    }
    let tb = Testbed::new("turncoal").expect("testbed (run as root)");
    let cfg = format!("{}coalesce_us = 200\n", relay::relay_config(""));
    let app = Appliance::start(&tb, &cfg).expect("appliance starts");
    relay::set_secrets(&app).expect("secrets");
    app.install(&relay::relay_install()).expect("install the relay");
    let peer = format!("{CORE_IP}:{}", relay::PEER_PORT);
    let echo = netserv_tests::paths::bin("netserv-echo");
    let _echo = netserv_tests::netns::spawn(&tb.core, &echo, &[&peer, "30000"], None).expect("echo");
    std::thread::sleep(Duration::from_millis(200));
    let load = netserv_tests::paths::bin("netserv-turn-load");
    let server = format!("{EDGE_UA_IP}:{}", relay::RELAY_PORT);
    let out = netserv_tests::netns::cmd(&tb.ua, &load)
        .args(["flow", "--server", &server, "--peer", &peer, "--local", netserv_tests::netns::UA_IP])
        .args(["--secret", REST_SECRET, "--clients", "8", "--pps", "8000", "--duration-ms", "1500"])
        .output()
        .expect("netserv-turn-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("flow JSON");
    let (sent, received) = (v["sent"].as_u64().unwrap_or(0), v["received"].as_u64().unwrap_or(0));
    assert!(sent > 8_000, "{v}");
    assert!(received * 1000 >= sent * 999, "< 0.1 % lost through the relay: {v}");
    let m = relay_stats(&app);
    let pauses = m["relay"]["coalesced_pauses"].as_u64().unwrap_or(0);
    eprintln!("{sent} sent, {received} echoed back; {pauses} coalescing pauses; round trip p50 {} µs", v["rtt_p50_us"]);
    assert!(pauses > 100, "dense traffic was served with coalesced wake-ups: {m}");
    assert!(m["relay"]["usage"]["packets_to_peers"].as_u64() >= Some(received), "{m}");
    assert!(app.metrics().expect("metrics").contains("netserv_relay_coalesced_pauses_total{tenant=\"itsp-a\""));
}

/// The plugin's part: a phone REGISTERs through Kamailio; the plugin
/// deploys the relay on the edge towards it by itself (on-path SETUP), and
/// `GET /turn` hands out credentials naming that relay, with which coturn's
/// client relays through it. A user no edge relay serves gets the ITSP's own.
#[test]
fn a_registration_deploys_the_relay_and_turn_credentials_name_it() {
    use netserv_tests::appliance::TempDir;
    use netserv_tests::kamailio::{Kamailio, phone_scenario};
    use netserv_tests::plugin::{self, SERVER};
    if !netserv_tests::e2e_ready("a_registration_deploys_the_relay_and_turn_credentials_name_it") {
        return;
    }
    let tb = Testbed::new("turnplug").expect("testbed (run as root)");
    let dir = TempDir::new("turnplug").expect("tmp");
    let kam =
        Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio")).expect("kamailio starts");
    let fallback = "turn:198.18.2.20:3478?transport=udp";
    let cfg = plugin::config_with_relay(&dir.0, REST_SECRET, fallback);
    let _plugin = plugin::start_with(&tb, &dir.0, &cfg).expect("plugin starts");
    let app = Appliance::start(&tb, &relay::relay_config("")).expect("appliance starts");
    relay::set_secrets(&app).expect("the tenant's TURN secret on its appliance");
    let _peer = relay::peer(&tb).expect("turnutils_peer");
    let logs = || {
        format!(
            "--- plugin\n{}\n--- appliance\n{}\n--- kamailio\n{}",
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default(),
            app.log(),
            std::fs::read_to_string(&kam.log).unwrap_or_default()
        )
    };

    // The phone registers (no keep-alives: only the relay is for it).
    let xml = dir.0.join("phone.xml");
    std::fs::write(&xml, phone_scenario("phone-0001", 0, 500, 4, 120)).expect("scenario");
    let out = netserv_tests::netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", xml.to_str().expect("utf-8"), "-i", netserv_tests::netns::UA_IP, "-p", "5070"])
        .args(["-m", "1", "-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp");
    assert!(out.status.success(), "the REGISTER failed: {}\n{}", String::from_utf8_lossy(&out.stderr), logs());

    let m = wait_for("the plugin to deploy the relay", Duration::from_secs(30), || app.module("itsp-a", "relay").ok());
    assert_eq!(m["kind"], "server", "{m}");
    let creds: Value = wait_for("credentials naming the edge relay", Duration::from_secs(10), || {
        let v: Value = serde_json::from_str(&plugin::get(&tb, "/turn?service=turn&username=phone-0001")).ok()?;
        (v["edge"] == true).then_some(v)
    });
    assert_eq!(creds["uris"][0], format!("turn:{EDGE_UA_IP}:{}?transport=udp", relay::RELAY_PORT), "{creds}");
    assert_eq!(creds["ttl"], 600);
    let (user, pass) = (creds["username"].as_str().expect("username"), creds["password"].as_str().expect("password"));
    assert!(user.ends_with(":phone-0001"), "{creds}");
    let run = relay::uclient(&tb, &["-n", "20", "-u", user, "-w", pass], CORE_IP).expect("turnutils_uclient");
    assert!(
        run.sent > 0 && run.received == run.sent,
        "relaying with the plugin's credentials:\n{}\n{}",
        run.output,
        logs()
    );

    // A user no edge relay serves gets the ITSP's own; a bad request, a 400.
    let other: Value = serde_json::from_str(&plugin::get(&tb, "/turn?service=turn&username=stranger")).expect("json");
    assert_eq!(
        (other["edge"].clone(), other["uris"][0].clone()),
        (Value::Bool(false), Value::from(fallback)),
        "{other}"
    );
    let bad = plugin::get(&tb, "/turn?service=turn&username=a%20b");
    assert!(bad.contains("error"), "{bad}");
    let status: Value = serde_json::from_str(&plugin::get(&tb, "/status")).expect("status");
    assert_eq!(status["relays"][0]["node_id"], "edge-test", "{status}");
}

/// A real call: two baresip phones behind a NAT register to Kamailio, which
/// makes the plugin deploy the relay on the edge; they take their TURN
/// credentials from the plugin's `/turn` and call each other. Each phone's
/// audio reaches the other only through the edge relay (the NAT drops the
/// straight path), and the relay's counters show it.
#[test]
fn two_baresip_phones_behind_nat_call_through_the_edge_relay() {
    use netserv_tests::appliance::TempDir;
    use netserv_tests::baresip::{self, NatPhones, PHONE_A, PHONE_B, Phone, Turn};
    use netserv_tests::kamailio::Kamailio;
    use netserv_tests::plugin::{self, SERVER};
    if !netserv_tests::e2e_ready("two_baresip_phones_behind_nat_call_through_the_edge_relay") {
        return;
    }
    let tb = Testbed::new("baresip").expect("testbed (run as root)");
    let phones = NatPhones::new(&tb).expect("the phones' namespaces behind the NAT");
    let dir = TempDir::new("baresip").expect("tmp");
    let kam =
        Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio")).expect("kamailio starts");
    let cfg = plugin::config_with_relay(&dir.0, REST_SECRET, "turn:198.18.2.20:3478?transport=udp");
    let _plugin = plugin::start_with(&tb, &dir.0, &cfg).expect("plugin starts");
    let app = Appliance::start(&tb, &relay::relay_config("")).expect("appliance starts");
    relay::set_secrets(&app).expect("the tenant's TURN secret on its appliance");
    let logs = |phones: &[&Phone]| {
        let mut s = format!(
            "--- plugin\n{}\n--- appliance\n{}\n--- kamailio\n{}",
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default(),
            app.log(),
            std::fs::read_to_string(&kam.log).unwrap_or_default()
        );
        for p in phones {
            s.push_str(&format!("\n--- {}\n{}", p.user, p.log()));
        }
        s
    };
    let (host, _) = SERVER.split_once(':').expect("host:port");

    // A third phone on the NAT's public address (sipp, registered for two
    // minutes): when Alice and Bob unregister at the end, the address stays
    // registered and the relay with it (their counters are read then).
    let carol = dir.0.join("carol.xml");
    std::fs::write(&carol, netserv_tests::kamailio::phone_scenario("carol", 0, 0, 0, 120)).expect("scenario");
    let out = netserv_tests::netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", carol.to_str().expect("utf-8"), "-i", netserv_tests::netns::UA_IP, "-p", "5080"])
        .args(["-m", "1", "-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp");
    assert!(out.status.success(), "carol's REGISTER: {}", String::from_utf8_lossy(&out.stdout));

    // The phones boot and register, no relay yet: the REGISTERs are what
    // make the plugin deploy one towards them (through the NAT's address).
    let a0 = Phone::configure(&dir.0.join("alice-boot"), &phones.a, "alice", PHONE_A, SERVER, None).expect("alice");
    let b0 = Phone::configure(&dir.0.join("bob-boot"), &phones.b, "bob", PHONE_B, SERVER, None).expect("bob");
    let booted = [a0.start(60, &[]).expect("baresip alice"), b0.start(60, &[]).expect("baresip bob")];
    let m = wait_for("the plugin to deploy the relay", Duration::from_secs(30), || app.module("itsp-a", "relay").ok());
    assert_eq!(m["kind"], "server", "{m}");
    let creds = |user: &str| -> Value {
        wait_for(&format!("{user}'s credentials naming the edge relay"), Duration::from_secs(15), || {
            let v: Value =
                serde_json::from_str(&plugin::get(&tb, &format!("/turn?service=turn&username={user}"))).ok()?;
            (v["edge"] == true).then_some(v)
        })
    };
    let (ca, cb) = (creds("alice"), creds("bob"));
    // The phones are provisioned with them and restart (killed: a phone that
    // loses power does not unregister).
    drop(booted);
    let turn_of = |c: &Value| -> (String, String, String) {
        let uri = c["uris"][0].as_str().expect("uri");
        let server = uri.trim_start_matches("turn:").split('?').next().expect("host:port").to_owned();
        (server, c["username"].as_str().expect("username").into(), c["password"].as_str().expect("password").into())
    };
    let ((sa, ua, pa), (sb, ub, pb)) = (turn_of(&ca), turn_of(&cb));
    assert_eq!(sa, format!("{EDGE_UA_IP}:{}", relay::RELAY_PORT), "{ca}");
    let ta = Turn { server: &sa, username: &ua, password: &pa };
    let tb_ = Turn { server: &sb, username: &ub, password: &pb };
    let alice = Phone::configure(&dir.0.join("alice"), &phones.a, "alice", PHONE_A, SERVER, Some(&ta)).expect("alice");
    let bob = Phone::configure(&dir.0.join("bob"), &phones.b, "bob", PHONE_B, SERVER, Some(&tb_)).expect("bob");

    // Bob answers by himself; Alice calls him, and both hang up when
    // baresip quits (Alice after 8 s, Bob after 10).
    let mut bob_p = bob.start(10, &[]).expect("baresip bob");
    wait_for("bob to register", Duration::from_secs(10), || bob.log().contains("200 OK").then_some(()));
    let dial = format!("/dial sip:bob@{host}");
    let mut alice_p = alice.start(8, &[&dial]).expect("baresip alice");
    for (p, who) in [(&mut alice_p, "alice"), (&mut bob_p, "bob")] {
        if let Err(e) = p.wait_exit(Duration::from_secs(25)) {
            panic!("{who}'s baresip: {e}\n{}", logs(&[&alice, &bob]));
        }
    }

    let (sa, sb) = (baresip::call_stats(&alice.log()), baresip::call_stats(&bob.log()));
    let all = || logs(&[&alice, &bob]);
    // 20 ms packets for several seconds each way; each side's media came
    // from the edge's relayed address.
    assert!(sa.sent >= 100 && sb.sent >= 100, "both phones sent audio: {sa:?} {sb:?}\n{}", all());
    assert!(sa.received >= 100 && sb.received >= 100, "both phones received audio: {sa:?} {sb:?}\n{}", all());
    for s in [&sa, &sb] {
        let from = s.media_from.as_deref().unwrap_or_default();
        assert!(from.starts_with(&format!("{EDGE_UA_IP}:")), "media must come from the edge relay: {s:?}\n{}", all());
    }
    // The relay forwarded it: two allocations, each one's packets to the
    // other (its peer is the other allocation), counted per module.
    let m = relay_stats(&app);
    assert!(m["module_counters"]["allocations"].as_u64().unwrap_or(0) >= 2, "{m}");
    let usage = &m["relay"]["usage"];
    let to_peers = usage["packets_to_peers"].as_u64().unwrap_or(0);
    let to_clients = usage["packets_to_client"].as_u64().unwrap_or(0);
    assert!(to_peers >= sa.received + sb.received, "every packet a phone got crossed the relay: {m}\n{sa:?} {sb:?}");
    assert!(to_clients >= sa.received + sb.received, "{m}\n{sa:?} {sb:?}");
    assert_eq!(m["counters"]["faults"], 0, "{m}");
}
