//! The SIP server plugin end to end, with real processes: Kamailio and the
//! plugin in `core`, the appliance in `edge`, sipp phones in `ua` (two phone
//! addresses). The phones register and send keep-alives; after the first
//! ones the plugin deploys the KeepAlive module to `edge` by itself, and
//! Kamailio's own statistics show the keep-alives stop reaching it while the
//! phones keep getting answers, registrations keep working and a call goes
//! through. When the phones stop, the deployment is removed.
//!
//! Needs root, iptables, sipp and kamailio.

use netserv_tests::appliance::{ADMIN_TOKEN, TempDir, test_config};
use netserv_tests::kamailio::{Kamailio, phone_scenario};
use netserv_tests::plugin::{self, PHONES, SERVER, call_through, metric};
use netserv_tests::{Appliance, Testbed, netns, wait_for};
use serde_json::Value;
use std::time::Duration;

const KEEPALIVES: u32 = 30;

#[test]
fn kamailio_and_the_plugin_deploy_refresh_and_retire_on_their_own() {
    if !netserv_tests::e2e_ready("kamailio_and_the_plugin_deploy_refresh_and_retire_on_their_own") {
        return;
    }
    let tb = Testbed::new("plug").expect("testbed (run as root)");
    let dir = TempDir::new("plugin").expect("tmp");
    let kam =
        Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio")).expect("kamailio starts");
    let _plugin = plugin::start(&tb, &dir.0).expect("plugin starts");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    let logs = || {
        format!(
            "--- plugin\n{}\n--- appliance\n{}\n--- kamailio\n{}",
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default(),
            app.log(),
            std::fs::read_to_string(&kam.log).unwrap_or_default()
        )
    };

    // Two phones: 30 keep-alives every 500 ms, re-registering every 4.
    let started = std::time::Instant::now();
    let phones: Vec<_> = PHONES
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let xml = dir.0.join(format!("phone{i}.xml"));
            std::fs::write(&xml, phone_scenario(&format!("phone{i}"), KEEPALIVES, 500, 4, 6)).expect("scenario");
            netns::cmd(&tb.ua, "sipp")
                .args([SERVER, "-sf", xml.to_str().expect("utf-8"), "-i", ip, "-p", "5070", "-m", "1"])
                .args(["-recv_timeout", "3000", "-timeout", "60s", "-timeout_error", "-nostdin"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("sipp phone")
        })
        .collect();
    // Meanwhile, a call from the first phone to a third, registered one,
    // through the appliance and Kamailio.
    let call = call_through(&tb, &dir.0);
    // Halfway through the phones' run the module is long in place (in a
    // debug build it takes ~2-3 s): from here on nothing should reach Kamailio.
    let halfway = started + Duration::from_millis(u64::from(KEEPALIVES) * 250);
    std::thread::sleep(halfway.saturating_duration_since(std::time::Instant::now()));
    let at_halfway = kam.statistic("netserv_keepalives").expect("statistic");
    for p in phones {
        let out = p.wait_with_output().expect("sipp");
        assert!(
            out.status.success(),
            "a phone lost a keep-alive answer or a registration:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
    }

    assert!(call.0, "the call failed:\n{}\n{}", call.1, logs());

    // Kamailio's own count: keep-alives that still reached it.
    let sent = KEEPALIVES * PHONES.len() as u32;
    let at_server = kam.statistic("netserv_keepalives").expect("statistic");
    let absorbed = 1.0 - at_server as f64 / f64::from(sent);
    eprintln!(
        "keep-alives: {sent} sent, {at_server} reached Kamailio ({at_halfway} by halfway), {:.1} % absorbed at the edge",
        absorbed * 100.0
    );
    assert!(at_server - at_halfway <= 1, "keep-alives still reached Kamailio in the second half\n{}", logs());
    assert!(absorbed >= 0.5, "only {:.1} % absorbed\n{}", absorbed * 100.0, logs());
    let m = app.module("itsp-a", "keepalive").expect("deployed by the plugin");
    assert!(m["counters"]["replied"].as_u64().unwrap_or(0) >= u64::from(sent) - at_server);

    // One deployment, shared: the second phone joined it (learned by PROBE) or
    // came with the first SETUP; the plugin reports it.
    let metrics = plugin::get(&tb, "/metrics");
    assert_eq!(metric(&metrics, "netserv_plugin_appliances_known"), 1, "{metrics}");
    assert!(metric(&metrics, "netserv_plugin_deployments_total") >= 1, "{metrics}");
    let status: Value = serde_json::from_str(&plugin::get(&tb, "/status")).expect("status json");
    assert_eq!(status["appliances"][0]["node_id"], "edge-test", "{status}");
    assert!(metric(&metrics, "netserv_plugin_refreshes_total") >= 1, "refreshed while registered: {metrics}");
    assert!(
        metric(&metrics, "netserv_plugin_keepalives_offloaded") >= 1,
        "the edge reports what it answered: {metrics}"
    );

    // The phones stopped: their registrations lapse, the plugin retires the module.
    wait_for("the module to be retired", Duration::from_secs(40), || {
        (app.api("GET", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).ok()?.0 == 404).then_some(())
    });
    // The plugin publishes its registry once a tick (500 ms).
    wait_for("the retirement counted", Duration::from_secs(3), || {
        let metrics = plugin::get(&tb, "/metrics");
        (metric(&metrics, "netserv_plugin_removals_total") + metric(&metrics, "netserv_plugin_expiries_total") >= 1)
            .then_some(())
    });
}

/// An appliance no trusted ISP certified — as good as the phone at the end
/// of the path answering the plugin's Query itself — installs what it is
/// asked to, but the plugin counts none of its answers: no deployment, no
/// phone served, each entry a hint in `netserv_plugin_unverified_entries`.
#[test]
fn answers_of_an_appliance_no_trusted_isp_certified_are_never_counted() {
    if !netserv_tests::e2e_ready("answers_of_an_appliance_no_trusted_isp_certified_are_never_counted") {
        return;
    }
    let tb = Testbed::new("plugu").expect("testbed (run as root)");
    let dir = TempDir::new("plugin-uncert").expect("tmp");
    let kam =
        Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio")).expect("kamailio starts");
    let _plugin = plugin::start(&tb, &dir.0).expect("plugin starts");
    let config = format!("# NETSERV_TEST_UNCERTIFIED\n{}", test_config(""));
    let app = Appliance::start(&tb, &config).expect("appliance starts");
    let xml = dir.0.join("phone.xml");
    std::fs::write(&xml, phone_scenario("phone0", 12, 500, 4, 6)).expect("scenario");
    let phone = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", xml.to_str().expect("utf-8"), "-i", PHONES[0], "-p", "5070", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "30s", "-timeout_error", "-nostdin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp phone");
    let metrics = wait_for("an answer the plugin would not count", Duration::from_secs(20), || {
        let m = plugin::get(&tb, "/metrics");
        (metric(&m, "netserv_plugin_unverified_entries_total") >= 1).then_some(m)
    });
    let _ = phone.wait_with_output();
    // The appliance took the plugin's requests: only the plugin's trust in
    // its answers is withheld.
    assert!(app.log().contains("NSLP request verified"), "{}", app.log());
    let metrics = format!("{metrics}\n--- at the end\n{}", plugin::get(&tb, "/metrics"));
    let end = plugin::get(&tb, "/metrics");
    assert_eq!(metric(&end, "netserv_plugin_appliances_known"), 0, "{metrics}");
    assert_eq!(metric(&end, "netserv_plugin_phones_served"), 0, "{metrics}");
    assert_eq!(metric(&end, "netserv_plugin_keepalives_offloaded"), 0, "{metrics}");
    let log = std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default();
    assert!(log.contains("not a certified appliance"), "{log}");
    drop(kam);
}
