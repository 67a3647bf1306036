//! The SIP server plugin end to end, with real processes: Kamailio and the
//! plugin in `core`, the appliance in `edge`, sipp phones in `ua` (two phone
//! addresses). The phones register and send keep-alives; after the first
//! ones the plugin deploys the KeepAlive module to `edge` by itself, and
//! Kamailio's own statistics show the keep-alives stop reaching it while the
//! phones keep getting answers, registrations keep working and a call goes
//! through. When the phones stop, the deployment is removed.
//!
//! Needs root, iptables, sipp and kamailio.

use netserv_e2e::appliance::{ADMIN_TOKEN, TempDir, test_config};
use netserv_e2e::kamailio::{Kamailio, phone_scenario};
use netserv_e2e::path::SEED_A;
use netserv_e2e::{Appliance, Testbed, netns, paths, wait_for};
use serde_json::Value;
use std::time::Duration;

const SERVER: &str = "198.18.2.20:5060";
const PHONES: [&str; 2] = ["198.18.1.10", "198.18.1.11"];
const KEEPALIVES: u32 = 30;

fn plugin_config(dir: &std::path::Path) -> String {
    format!(
        r#"tenant = "itsp-a"
key_file = {key:?}
server = "{SERVER}"
hep_listen = "127.0.0.1:9060"
http_listen = "198.18.2.20:8280"
registry = {registry:?}

[module]
file = {module:?}
http_advertise = "198.18.2.20:8280"
properties = {{ server = "Kamailio (NetServ edge)" }}

[policy]
keepalive_threshold = 1
ttl_secs = 16
refresh_before_secs = 6
idle_after_secs = 4
retry_after_secs = 2

[signaling]
query_attempts = 2
timeout_ms = 8000
"#,
        key = dir.join("itsp-a.key"),
        registry = dir.join("registry.json"),
        module = paths::module("netserv_keepalive"),
    )
}

/// Registers `callee` at 198.18.1.11:5071, answers as a sipp UAS there, and
/// calls it from 198.18.1.10:5072 (INVITE, 200, ACK, BYE). Returns whether the
/// caller's call succeeded, and what the two sipps printed.
fn call_through(tb: &Testbed, dir: &std::path::Path) -> (bool, String) {
    let reg = dir.join("callee-register.xml");
    std::fs::write(&reg, phone_scenario("callee", 0, 0, 0, 120)).expect("scenario");
    let r = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", reg.to_str().expect("utf-8"), "-i", PHONES[1], "-p", "5071", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp register");
    if !r.status.success() {
        return (false, format!("callee REGISTER failed: {}", String::from_utf8_lossy(&r.stdout)));
    }
    let uas = netns::cmd(&tb.ua, "sipp")
        .args(["-sn", "uas", "-i", PHONES[1], "-p", "5071", "-m", "1", "-timeout", "20s", "-nostdin"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    let uac = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sn", "uac", "-s", "callee", "-i", PHONES[0], "-p", "5072", "-m", "1", "-d", "500"])
        .args(["-recv_timeout", "5000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp uac");
    let uas = uas.wait_with_output().expect("uas");
    (
        uac.status.success() && uas.status.success(),
        format!("--- caller\n{}\n--- callee\n{}", String::from_utf8_lossy(&uac.stdout), String::from_utf8_lossy(&uas.stdout)),
    )
}

fn plugin_get(tb: &Testbed, path: &str) -> String {
    tb.output(&tb.core, "curl", &["-s", "-m", "5", &format!("http://198.18.2.20:8280{path}")]).unwrap_or_default()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn kamailio_and_the_plugin_deploy_refresh_and_retire_on_their_own() {
    let tb = Testbed::new("plug").expect("testbed (run as root)");
    tb.add_ua_address(PHONES[1]).expect("second phone address");
    let dir = TempDir::new("plugin").expect("tmp");
    std::fs::write(dir.0.join("itsp-a.key"), SEED_A).expect("key");
    let kam =
        Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio")).expect("kamailio starts");
    let cfg = dir.0.join("plugin.toml");
    std::fs::write(&cfg, plugin_config(&dir.0)).expect("plugin config");
    let _plugin = tb
        .spawn(
            &tb.core,
            paths::bin("netserv-sip-plugin"),
            &["run", "--config", cfg.to_str().expect("utf-8")],
            Some(&dir.0.join("plugin.log")),
        )
        .expect("plugin starts");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    wait_for("the plugin", Duration::from_secs(10), || plugin_get(&tb, "/healthz").contains("ok").then_some(()));
    let logs = || {
        format!(
            "--- plugin\n{}\n--- appliance\n{}\n--- kamailio\n{}",
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default(),
            app.log(),
            std::fs::read_to_string(&kam.log).unwrap_or_default()
        )
    };

    // Two phones: 30 keep-alives every 500 ms, re-registering every 4.
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
    eprintln!("keep-alives: {sent} sent, {at_server} reached Kamailio, {:.1} % absorbed at the edge", absorbed * 100.0);
    assert!(absorbed >= 0.8, "only {:.1} % absorbed\n{}", absorbed * 100.0, logs());
    let m = app.module("itsp-a", "keepalive").expect("deployed by the plugin");
    assert!(m["counters"]["replied"].as_u64().unwrap_or(0) >= u64::from(sent) - at_server);

    // One deployment, shared: the second phone joined it (learned by PROBE) or
    // came with the first SETUP; the plugin reports it.
    let metrics = plugin_get(&tb, "/metrics");
    assert_eq!(metric(&metrics, "netserv_plugin_appliances_known"), 1, "{metrics}");
    assert!(metric(&metrics, "netserv_plugin_deployments_total") >= 1, "{metrics}");
    let status: Value = serde_json::from_str(&plugin_get(&tb, "/status")).expect("status json");
    assert_eq!(status["appliances"][0]["node_id"], "edge-test", "{status}");
    assert!(metric(&metrics, "netserv_plugin_refreshes_total") >= 1, "refreshed while registered: {metrics}");

    // The phones stopped: their registrations lapse, the plugin retires the module.
    wait_for("the module to be retired", Duration::from_secs(40), || {
        (app.api("GET", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).ok()?.0 == 404).then_some(())
    });
    let metrics = plugin_get(&tb, "/metrics");
    assert!(metric(&metrics, "netserv_plugin_removals_total") + metric(&metrics, "netserv_plugin_expiries_total") >= 1);
}
