//! Overload control at the edge, end to end: sipp's UAS in `core` stands
//! in for the SIP server, the appliance in `edge` runs the overload-control
//! sending entity (modules/overload-se) on its NFQUEUE path, sipp UACs in
//! `ua` place calls. A load report through the feedback API sheds its share
//! of INVITEs with 503s from the edge; calls admitted complete (their ACKs
//! and BYEs are never shed); emergency calls pass while ordinary ones are
//! shed; a report with validity 0 ends control.

use netserv_tests::appliance::{TENANT_A_TOKEN, TENANT_B_TOKEN, TempDir, test_config};
use netserv_tests::netns::CORE_IP;
use netserv_tests::{Appliance, Testbed, paths, sipp, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

const SERVER: &str = "198.18.2.20:5060";
const FEEDBACK: &str = "/api/v1/modules/itsp-a/overload/feedback";

fn report(app: &Appliance, body: Value, token: &str) -> (u16, Value) {
    app.api("POST", FEEDBACK, Some(&body), token).expect("feedback API")
}

fn counter(m: &Value, name: &str) -> u64 {
    m["module_counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_load_report_sheds_invites_at_the_edge_while_dialogs_and_emergency_calls_complete() {
    if !netserv_tests::e2e_ready("a_load_report_sheds_invites_at_the_edge_while_dialogs_and_emergency_calls_complete") {
        return;
    }
    let tb = Testbed::new("oc").expect("testbed (run as root)");
    let logs = TempDir::new("oc-logs").expect("tmp");
    let uas_log = logs.0.join("uas_messages.log");
    let _uas = sipp::call_uas(&tb, &uas_log).expect("sipp UAS");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&json!({
        "tenant": "itsp-a", "name": "overload",
        "source": { "path": paths::module("netserv_overload_se") },
        "filter": { "transport": "udp", "destination": format!("{CORE_IP}/32"), "ports": [5060] },
    }))
    .expect("install overload-se");
    std::thread::sleep(Duration::from_millis(300));

    // No report: every call completes, and the INVITEs offer overload control.
    let base = sipp::calls(&tb.ua, SERVER, None, 5061, 20, 20, &logs.0).expect("sipp");
    assert_eq!((base.successful, base.failed), (20, 0), "{}", base.output);
    let seen = std::fs::read_to_string(&uas_log).unwrap_or_default();
    assert!(seen.contains(";oc;oc-algo=\"loss\""), "the server was offered oc in the top Via");

    // Another tenant cannot steer this module; a bad report names its field.
    let r = json!({ "server": SERVER, "algorithm": "loss", "oc": 50, "validity_ms": 60_000, "seq": 1 });
    assert_eq!(report(&app, r.clone(), TENANT_B_TOKEN).0, 404);
    let (code, v) = report(&app, json!({ "server": SERVER, "algorithm": "loss", "oc": 500, "seq": 1 }), TENANT_A_TOKEN);
    assert_eq!(code, 400);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("`oc`")), "{v}");

    // Shed half: ordinary calls and, beside them, emergency calls.
    let (code, v) = report(&app, r, TENANT_A_TOKEN);
    assert_eq!(code, 202, "{v}");
    let ua = tb.ua.clone();
    let dir = logs.0.clone();
    let sos = std::thread::spawn(move || sipp::calls(&ua, SERVER, Some("sipp/emergency_uac.xml"), 5062, 20, 5, &dir));
    let run = sipp::calls(&tb.ua, SERVER, None, 5061, 200, 50, &logs.0).expect("sipp");
    let sos = sos.join().expect("thread").expect("sipp emergency");
    let m = app.module("itsp-a", "overload").expect("module");
    eprintln!(
        "ordinary {} ok / {} failed; emergency {} ok / {} failed; {}",
        run.successful, run.failed, sos.successful, sos.failed, m["module_counters"]
    );
    assert_eq!(run.successful + run.failed, 200, "{}", run.output);
    // 50 % of the 220 controllable INVITEs, all of them from the 200 ordinary ones.
    assert!((90..=130).contains(&run.failed), "shed {} of 200 ordinary calls\n{}", run.failed, run.output);
    assert_eq!(counter(&m, "shed_initial"), run.failed, "each failed call is one INVITE shed at the edge: {m}");
    assert_eq!(
        (sos.successful, sos.failed),
        (20, 0),
        "emergency calls pass while ordinary ones are shed\n{}",
        sos.output
    );
    assert_eq!(counter(&m, "shed_priority"), 0, "{m}");
    assert!(counter(&m, "passed_never_shed") >= 2 * (run.successful + 20), "ACKs and BYEs all passed: {m}");
    // Every admitted call, baseline, ordinary and emergency, ended with its BYE at the server.
    let byes = wait_for("the BYEs at the server", Duration::from_secs(5), || {
        let n = sipp::received_start(&uas_log, "BYE ");
        (n as u64 == 20 + run.successful + 20).then_some(n)
    });
    assert_eq!(byes as u64, 20 + run.successful + 20);
    let metrics = app.metrics().expect("metrics");
    assert!(metrics.contains("name=\"shed_initial\""), "the module's counters are in /metrics");

    // Validity 0 ends control at once.
    let (code, v) = report(
        &app,
        json!({ "server": SERVER, "algorithm": "loss", "oc": 0, "validity_ms": 0, "seq": 2 }),
        TENANT_A_TOKEN,
    );
    assert_eq!(code, 202);
    // Every worker's instance gets each report, and counts it.
    let workers = v["workers"].as_u64().expect("workers");
    std::thread::sleep(Duration::from_millis(200));
    let after = sipp::calls(&tb.ua, SERVER, None, 5061, 30, 30, &logs.0).expect("sipp");
    assert_eq!((after.successful, after.failed), (30, 0), "{}", after.output);
    let m = app.module("itsp-a", "overload").expect("module");
    assert_eq!(counter(&m, "control_ended"), workers, "{m}");
    // An instance rebuilt after a fault (a call preempted past its deadline
    // on a loaded machine) is given the reports still in force again.
    assert!(counter(&m, "reports_accepted") >= workers, "{m}");
    assert_eq!(m["state"], "active", "{m}");
}

/// In-band reports (RFC 7339 §5.2): the module's filter also sees the
/// server's responses; a server that reports `oc=50` in the top Via of its
/// answers (sipp playing an RFC 7339 server) gets half its INVITEs shed at
/// the edge, steered by nothing but its own responses.
#[test]
fn in_band_reports_in_the_servers_responses_steer_the_edge() {
    if !netserv_tests::e2e_ready("in_band_reports_in_the_servers_responses_steer_the_edge") {
        return;
    }
    let tb = Testbed::new("ocib").expect("testbed (run as root)");
    let logs = TempDir::new("ocib-logs").expect("tmp");
    let uas_log = logs.0.join("uas_messages.log");
    let _uas = sipp::scenario_uas(&tb, "sipp/oc_uas.xml", &uas_log).expect("sipp UAS");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&json!({
        "tenant": "itsp-a", "name": "overload",
        "source": { "path": paths::module("netserv_overload_se") },
        "filter": { "transport": "udp", "destination": format!("{CORE_IP}/32"), "ports": [5060], "responses": true },
    }))
    .expect("install overload-se");
    assert_eq!(tb.nfqueue_rules(), 2, "a rule each way");
    std::thread::sleep(Duration::from_millis(300));
    let run = sipp::calls(&tb.ua, SERVER, None, 5061, 200, 50, &logs.0).expect("sipp");
    let m = app.module("itsp-a", "overload").expect("module");
    eprintln!("{} ok / {} failed; {}", run.successful, run.failed, m["module_counters"]);
    assert_eq!(run.successful + run.failed, 200, "{}", run.output);
    assert!(counter(&m, "reports_accepted") > 0, "{m}");
    assert_eq!(counter(&m, "reports_unsolicited"), 0, "every report answered a request it passed: {m}");
    // The first answers come before control starts; then half are shed.
    assert!((70..=110).contains(&run.failed), "shed {} of 200\n{}", run.failed, run.output);
    assert_eq!(counter(&m, "shed_initial"), run.failed, "{m}");
    assert_eq!(m["counters"]["faults"], 0, "{m}");
    // Removed: both rules go.
    let (code, _) =
        app.api("DELETE", "/api/v1/modules/itsp-a/overload", None, netserv_tests::appliance::ADMIN_TOKEN).expect("api");
    assert_eq!(code, 200);
    assert_eq!(tb.nfqueue_rules(), 0);
}

/// The whole loop: Kamailio in `core`, capped to a tenth of a CPU, with a
/// sipp UAS registered behind it; sipp in `ua` offers more calls than it
/// can take. The plugin, reading Kamailio's own statistics, deploys the
/// sending entity on the edge by on-path signaling and steers it through
/// the feedback API: the excess gets 503s from the edge, every admitted call
/// completes with its BYE, emergency calls get through, and control ends
/// once the load stops.
#[test]
fn the_plugin_deploys_overload_control_when_kamailio_is_overloaded() {
    use netserv_tests::appliance::{ADMIN_TOKEN, node_config};
    use netserv_tests::{cgroup::CpuCap, kamailio::Kamailio, plugin};
    if !netserv_tests::e2e_ready("the_plugin_deploys_overload_control_when_kamailio_is_overloaded") {
        return;
    }
    let tb = Testbed::new("ocplug").expect("testbed (run as root)");
    let dir = TempDir::new("ocplug").expect("tmp");
    let cfg = node_config("queues = 2", "").replacen(
        "listen = \"127.0.0.1:8270\"",
        "listen = \"0.0.0.0:8270\"\nadvertise = \"198.18.2.1:8270\"",
        1,
    );
    let app = Appliance::start(&tb, &cfg).expect("appliance starts");
    // Emergency calls (`urn:service:sos`) go to the callee too.
    let sos_route = netserv_tests::kamailio::emergency_to_callee(SERVER);
    let kam = Kamailio::start_with(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio"), "", &sos_route)
        .expect("kamailio");
    let cap = CpuCap::new("ocplug", 10).expect("cgroup");
    let capped = cap.add_matching(kam.config_path().to_str().expect("utf-8")).expect("cap kamailio");
    assert!(capped >= 2, "kamailio's processes are capped: {capped}");
    // The callee: a sipp UAS beside the server, registered as `uas`.
    let _uas = netserv_tests::kamailio::start_callee(&tb.core, SERVER, &dir.0).expect("the callee");
    let overload = format!(
        // The entity offers `oc` in the Via (advertise = loss), so Kamailio
        // must parse what the edge passes: the test reads its log for it.
        "\n[overload]\nfile = {:?}\nrpc_socket = {:?}\ncapacity = 150\nrelease_after_secs = 8\nappliance_token = \"{}\"\nproperties = {{ advertise = \"loss\" }}\n",
        paths::module("netserv_overload_se"),
        kam.rpc_socket(),
        TENANT_A_TOKEN
    );
    let _plugin = plugin::start_with(&tb, &dir.0, &format!("{}{overload}", plugin::config(&dir.0))).expect("plugin");

    // 10 s of calls at 150 a second: some 450 requests a second offered;
    // beside them, 2 emergency calls a second for the first 7 s (RFC 7339
    // sheds priority requests once no ordinary ones are left to shed, as in
    // the last moments of a run). Meanwhile the edge's entity is watched
    // while it serves.
    let (ua, logs) = (tb.ua.clone(), dir.0.clone());
    let caller = std::thread::spawn(move || sipp::calls_to(&ua, SERVER, "uas", 5061, 1500, 150, &logs));
    let (ua, logs) = (tb.ua.clone(), dir.0.clone());
    let sos = std::thread::spawn(move || sipp::calls(&ua, SERVER, Some("sipp/emergency_uac.xml"), 5062, 14, 2, &logs));
    let mut seen: Option<Value> = None;
    while !caller.is_finished() {
        if let Ok(m) = app.module("itsp-a", "overload") {
            seen = Some(m);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = caller.join().expect("thread").expect("sipp");
    let sos = sos.join().expect("thread").expect("sipp emergency calls");
    let status: Value = serde_json::from_str(&plugin::get(&tb, "/status")).unwrap_or_default();
    let Some(m) = seen else {
        panic!(
            "the plugin deployed no sending entity on the edge; sipp {} ok / {} failed; plugin {status}\n{}",
            run.successful,
            run.failed,
            std::fs::read_to_string(dir.0.join("plugin.log")).unwrap_or_default()
        )
    };
    eprintln!(
        "{} ok / {} failed, BYEs sent / answered {:?}, emergency {} ok / {} failed; plugin {}; edge {}",
        run.successful, run.failed, run.byes, sos.successful, sos.failed, status["overload"], m["module_counters"]
    );
    // What the edge passes, Kamailio parses: an offer in the Via that its
    // parser rejects would make it drop every request the entity admits.
    let kam_log = std::fs::read_to_string(&kam.log).unwrap_or_default();
    assert!(!kam_log.contains("bad header"), "Kamailio rejected requests the edge passed");
    assert!(status["overload"]["engaged"].as_u64() >= Some(1), "{status}");
    assert!(counter(&m, "reports_accepted") > 0, "the plugin's reports reached the edge: {m}");
    assert!(counter(&m, "shed_initial") > 0, "503s from the edge: {m}");
    assert_eq!(counter(&m, "shed_priority"), 0, "no in-dialog request was shed: {m}");
    assert!(run.successful > 0, "calls still complete under control");
    // Every call that got a dialog hangs up: the edge never sheds a BYE,
    // and the server answers each one (sipp retransmits it as RFC 3261 does).
    let (byes_sent, byes_answered) = run.byes.expect("sipp's per-message counts");
    assert!(byes_sent > 0, "calls were set up");
    assert_eq!(byes_answered, byes_sent, "every in-dialog BYE is answered");
    // Emergency calls are admitted while there are ordinary INVITEs to shed.
    assert!(sos.successful > 0, "an emergency call completed under control: {} failed", sos.failed);
    // The load stopped: control ends and the entity is removed.
    let released = wait_for("control to end", Duration::from_secs(20), || {
        let s: Value = serde_json::from_str(&plugin::get(&tb, "/status")).unwrap_or_default();
        (s["overload"]["released"].as_u64() >= Some(1)).then_some(s)
    });
    assert_eq!(released["overload"]["state"], "normal", "{released}");
    wait_for("the entity's removal", Duration::from_secs(20), || {
        let (code, _) = app.api("GET", "/api/v1/modules/itsp-a/overload", None, ADMIN_TOKEN).ok()?;
        (code == 404).then_some(())
    });
    drop(cap);
}
