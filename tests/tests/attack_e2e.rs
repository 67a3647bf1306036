//! Attacks from the phone side of the edge, with real tools, while a real
//! phone keeps alive through it: SIPVicious (`svmap`, `svwar`, `svcrack`)
//! against the SIP server and the edge, a flood of forged GIST Queries
//! (carrying SETUPs no tenant signed), Confirms with made-up cookies and
//! junk to the appliance's GIST port, and forged HEP to the plugin claiming a
//! phone that does not exist. Nothing installs that the ITSP did not ask
//! for, nothing crashes, memory stays bounded, and the real phone is served
//! throughout.
//!
//! Needs root, iptables, sipp, kamailio and sipvicious.

use netserv_tests::appliance::{ADMIN_TOKEN, TempDir, test_config};
use netserv_tests::kamailio::{Kamailio, phone_scenario};
use netserv_tests::plugin::{self, PHONES, SERVER, metric};
use netserv_tests::{Appliance, Testbed, netns, paths, rss_kib, wait_for};
use std::time::Duration;

const KEEPALIVES: u32 = 50;

#[test]
fn attacks_from_the_phone_side_install_nothing_crash_nothing_and_the_phone_is_served() {
    if !netserv_tests::e2e_ready("attacks_from_the_phone_side_install_nothing_crash_nothing_and_the_phone_is_served") {
        return;
    }
    let tb = Testbed::new("atk").expect("testbed (run as root)");
    let dir = TempDir::new("attack").expect("tmp");
    // HEP on the server's address, where the phone side can reach it (and
    // Kamailio mirrors from its own address, which the plugin allows).
    let kam = Kamailio::start(&tb.core, SERVER, "sip:198.18.2.20:9060", &dir.0.join("kamailio")).expect("kamailio");
    let config = plugin::config(&dir.0).replace("hep_listen = \"127.0.0.1:9060\"", "hep_listen = \"198.18.2.20:9060\"");
    let plug = plugin::start_with(&tb, &dir.0, &config).expect("plugin starts");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    let logs = || {
        format!(
            "--- plugin\n{}\n--- appliance\n{}",
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default(),
            app.log()
        )
    };

    // The real phone: keep-alives every 400 ms for 20 s; the plugin deploys
    // the keepalive module to the edge after the first ones.
    let xml = dir.0.join("phone.xml");
    std::fs::write(&xml, phone_scenario("phone0", KEEPALIVES, 400, 5, 8)).expect("scenario");
    let phone = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", xml.to_str().expect("utf-8"), "-i", PHONES[0], "-p", "5070", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "60s", "-timeout_error", "-nostdin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp phone");
    wait_for("the plugin to deploy the keepalive module", Duration::from_secs(20), || {
        app.module("itsp-a", "keepalive").ok()
    });
    let (app_rss, plugin_rss) = (rss_kib(app.proc.pid()), rss_kib(plug.pid()));

    // The attacks, one after another, while the phone goes on.
    let edge = netserv_tests::netns::EDGE_UA_IP;
    let run = |what: &str, program: &str, args: &[&str]| {
        let out = netns::cmd(&tb.ua, "timeout")
            .arg("60")
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("{what}: exit {:?}\n{}", out.status.code(), text.trim());
    };
    run("svmap (server)", "svmap", &["-p5060", "198.18.2.20"]);
    run("svmap (edge)", "svmap", &["-p5060-5062", edge]);
    run("svwar", "svwar", &["-m", "REGISTER", "-e100-400", "198.18.2.20"]);
    run("svcrack", "svcrack", &["-u", "100", "-r", "1-400", "198.18.2.20"]);
    let forge = paths::bin("netserv-gist-forge");
    let forge = forge.to_str().expect("utf-8");
    let sent = tb
        .output(
            &tb.ua,
            forge,
            &[
                "--towards",
                "198.18.2.20",
                "--peer",
                edge,
                "--count",
                "3000",
                "--signed-count",
                "200",
                "--hep",
                "198.18.2.20:9060",
            ],
        )
        .expect("forged GIST and HEP");
    eprintln!("forged: {sent}");
    let sent: serde_json::Value = serde_json::from_str(sent.trim()).expect("the forger's JSON");

    let out = phone.wait_with_output().expect("sipp");
    assert!(
        out.status.success(),
        "the real phone lost a keep-alive answer or a registration under attack:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs()
    );

    // Nothing installed but what the ITSP asked for.
    let (_, modules) = app.api("GET", "/api/v1/modules", None, ADMIN_TOKEN).expect("modules");
    let ids: Vec<&str> = modules.as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["itsp-a/keepalive"], "{modules}");
    // Nothing crashed.
    assert_eq!(app.api("GET", "/healthz", None, ADMIN_TOKEN).expect("appliance alive").0, 200, "{}", logs());
    assert!(plugin::get(&tb, "/healthz").contains("ok"), "plugin alive\n{}", logs());
    assert!(kam.statistic("netserv_keepalives").is_ok(), "kamailio alive");
    // The forgeries were refused and counted: every handshaken SETUP at its
    // signature, every made-up Confirm at its cookie (no signature checked),
    // and the junk's Error replies throttled.
    let m = app.metrics().expect("metrics");
    assert!(sent["answers"].as_u64() >= Some(190), "{sent}");
    assert_eq!(sent["answers"], sent["all_refused"], "every forged SETUP refused: {sent}");
    assert!(metric(&m, "netserv_signaling_refused_total") >= 190, "forged SETUPs refused: {m}");
    assert!(metric(&m, "netserv_signaling_bad_cookies_total") >= 3000, "{m}");
    assert!(metric(&m, "netserv_signaling_errors_suppressed_total") > 0, "{m}");
    let pm = plugin::get(&tb, "/metrics");
    assert!(metric(&pm, "netserv_plugin_hep_refused_total") >= 1000, "forged HEP refused: {pm}");
    let status = plugin::get(&tb, "/status");
    assert!(!status.contains("198.18.1.99"), "a phone only forged HEP named is unknown: {status}");
    // Memory bounded (the flood left no state to speak of).
    let (app_after, plugin_after) = (rss_kib(app.proc.pid()), rss_kib(plug.pid()));
    eprintln!("RSS: appliance {app_rss} -> {app_after} KiB, plugin {plugin_rss} -> {plugin_after} KiB");
    assert!(app_after < app_rss + 64 * 1024, "appliance RSS {app_rss} -> {app_after} KiB");
    assert!(plugin_after < plugin_rss + 32 * 1024, "plugin RSS {plugin_rss} -> {plugin_after} KiB");
}
