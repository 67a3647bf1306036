//! `netserv-demo`: the whole system on its embedded defaults, in network
//! namespaces it creates and removes: sipp phones in `ua` keep their NAT
//! bindings alive towards a SIP server (a sipp UAS) in `core`; the appliance
//! in `edge` gets the KeepAlive module through its admin API and from then on
//! answers the keep-alives itself, as the server. Prints what reached the
//! server before and after, what the module answered, and where it came from.

use netserv_e2e::appliance::{ADMIN_TOKEN, TempDir, keepalive_install, test_config};
use netserv_e2e::{Appliance, Testbed, sipp};
use std::time::Duration;

const SERVER: &str = "198.18.2.20:5060";
const ROUNDS: u32 = 200;

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn main() -> anyhow::Result<()> {
    println!("NetServ demo: KeepAlive offload at the network edge");
    println!("  ua   198.18.1.10  phones (sipp UAC: NOTIFY keep-alive + OPTIONS ping per round)");
    println!("  edge 198.18.1.1 | 198.18.2.1  NetServ appliance (forwarding, NFQUEUE)");
    println!("  core 198.18.2.20:5060  SIP server (sipp UAS)");

    step(1, "building the testbed and starting the SIP server and the appliance");
    let tb = Testbed::new("demo")?;
    let logs = TempDir::new("demo")?;
    let uas_log = logs.0.join("server_messages.log");
    let _uas = sipp::uas(&tb, &uas_log)?;
    let app = Appliance::start(&tb, &test_config(""))?;
    std::thread::sleep(Duration::from_millis(300));
    println!("   appliance healthy; no module installed");

    step(2, &format!("{ROUNDS} keep-alive rounds with no module: the server answers them"));
    let (ok, _) = sipp::keepalive_uac(&tb, SERVER, ROUNDS, 200, &logs.0)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = (sipp::received(&uas_log, "NOTIFY"), sipp::received(&uas_log, "OPTIONS"));
    println!(
        "   phones: {}; keep-alives that reached the server: {} NOTIFY + {} OPTIONS",
        if ok { "all answered" } else { "SOME FAILED" },
        before.0,
        before.1
    );

    step(3, "installing the KeepAlive module for tenant itsp-a (POST /api/v1/modules)");
    let m = app.install(&keepalive_install(Some(3600)))?;
    println!(
        "   installed {} sha256 {}… filter udp {} ports {}",
        m["id"],
        &m["sha256"].as_str().unwrap_or("")[..16],
        m["filter"]["destination"],
        m["filter"]["ports"]
    );

    step(4, &format!("the same {ROUNDS} rounds again: the edge answers on the server's behalf"));
    let (ok, _) = sipp::keepalive_uac(&tb, SERVER, ROUNDS, 200, &logs.0)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = (sipp::received(&uas_log, "NOTIFY") - before.0, sipp::received(&uas_log, "OPTIONS") - before.1);
    let info = app.module("itsp-a", "keepalive")?;
    println!(
        "   phones: {}; keep-alives that reached the server: {} NOTIFY + {} OPTIONS",
        if ok { "all answered" } else { "SOME FAILED" },
        after.0,
        after.1
    );
    println!(
        "   absorbed at the edge: {} packets answered ({} NOTIFY, {} OPTIONS), {} faults",
        info["counters"]["replied"],
        info["module_counters"]["answered_notify"],
        info["module_counters"]["answered_options"],
        info["counters"]["faults"]
    );
    println!("   answers were sent from {SERVER} (the server's own address and port) to the phones' NAT bindings");

    step(5, "Prometheus metrics (GET /metrics), module lines");
    for line in app.metrics()?.lines().filter(|l| l.starts_with("netserv_module_") && !l.ends_with(" 0")) {
        println!("   {line}");
    }

    step(6, "removing the module: keep-alives reach the server again");
    let (code, _) = app.api("DELETE", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN)?;
    anyhow::ensure!(code == 200, "remove failed: {code}");
    let (ok, _) = sipp::keepalive_uac(&tb, SERVER, 20, 200, &logs.0)?;
    std::thread::sleep(Duration::from_millis(300));
    let again = sipp::received(&uas_log, "NOTIFY") - before.0 - after.0;
    println!("   phones: {}; NOTIFYs at the server: {again}", if ok { "all answered" } else { "SOME FAILED" });

    let offloaded = 100.0 * (1.0 - (after.0 + after.1) as f64 / (2 * ROUNDS) as f64);
    println!(
        "\nSummary: with the module, {offloaded:.1}% of keep-alives were answered at the edge and never reached the SIP server."
    );
    anyhow::ensure!(ok && after == (0, 0), "the demo did not show full offload");
    Ok(())
}
