//! `netserv-demo`: the whole system on its embedded defaults, in network
//! namespaces it creates and removes.
//!
//! ```text
//!   ua   198.18.1.10, .11   sipp phones: REGISTER, NOTIFY keep-alives, a call
//!   edge 198.18.1.1 | 198.18.2.1   NetServ appliance (forwarding, NFQUEUE, GIST)
//!   core 198.18.2.20   Kamailio (the ITSP's SIP server) + the NetServ SIP server plugin
//! ```
//! Kamailio mirrors REGISTERs and keep-alives to the plugin (HEP); the plugin
//! deploys the KeepAlive module towards the phones by on-path signaling,
//! signed with the ITSP's key; the appliance installs it and answers the
//! keep-alives as the server. Prints, from Kamailio's own statistics, how
//! many keep-alives reached it before and after deployment, a call through
//! the edge, and the plugin retiring the module once the phones stop. The
//! phones' REGISTERs also make the plugin deploy the media relay (TURN) on
//! the edge; its `/turn` endpoint hands out credentials naming it, and
//! coturn's own client relays through it.

use netserv_tests::appliance::TempDir;
use netserv_tests::kamailio::{Kamailio, phone_scenario};
use netserv_tests::plugin::{self, PHONES, SERVER, call_through, metric};
use netserv_tests::relay;
use netserv_tests::{Appliance, Testbed, netns};
use std::time::{Duration, Instant};

const KEEPALIVES: u32 = 12;
const INTERVAL_MS: u32 = 1000;

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn main() -> anyhow::Result<()> {
    println!("NetServ demo: a SIP server that offloads its phones' keep-alives to the network edge");
    println!("  ua   198.18.1.10, 198.18.1.11   phones (sipp)");
    println!("  edge 198.18.1.1 | 198.18.2.1    NetServ appliance");
    println!("  core 198.18.2.20:5060           Kamailio + NetServ SIP server plugin");

    step(1, "building the testbed; starting Kamailio, the plugin and the appliance (no module installed)");
    let tb = Testbed::new("demo")?;
    let dir = TempDir::new("demo")?;
    let kam = Kamailio::start(&tb.core, SERVER, "sip:127.0.0.1:9060", &dir.0.join("kamailio"))?;
    let plugin_cfg = plugin::config_with_relay(&dir.0, relay::REST_SECRET, "turn:198.18.2.20:3478?transport=udp");
    let _plugin = plugin::start_with(&tb, &dir.0, &plugin_cfg)?;
    let app = Appliance::start(&tb, &relay::relay_config(""))?;
    // The ITSP, as tenant itsp-a, sets its TURN REST secret on the appliance
    // over its own API (a secret never travels in signaling).
    relay::set_secrets(&app)?;
    println!("   Kamailio up (keep-alives counted in its statistic netserv_keepalives), plugin and appliance healthy");

    step(
        2,
        &format!(
            "{} phones register and send a keep-alive every {INTERVAL_MS} ms ({KEEPALIVES} each, re-registering every 4)",
            PHONES.len()
        ),
    );
    let start = Instant::now();
    let phones: Vec<_> = PHONES
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let xml = dir.0.join(format!("phone{i}.xml"));
            std::fs::write(&xml, phone_scenario(&format!("phone{i}"), KEEPALIVES, INTERVAL_MS, 4, 10))?;
            Ok(netns::cmd(&tb.ua, "sipp")
                .args([SERVER, "-sf", xml.to_str().unwrap_or_default(), "-i", ip, "-p", "5070", "-m", "1"])
                .args(["-recv_timeout", "3000", "-timeout", "60s", "-timeout_error", "-nostdin"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?)
        })
        .collect::<anyhow::Result<_>>()?;
    // The first keep-alives leave after one interval; the target counts what
    // reaches the server from two intervals after them on.
    let first = Duration::from_millis(u64::from(INTERVAL_MS));
    let window_end = first + 2 * first;
    let mut at_window = None;
    let mut deployed_at = None;
    let mut last_print = Duration::ZERO;
    while start.elapsed() < first * (KEEPALIVES + 1) + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(100));
        let t = start.elapsed();
        let at_server = kam.statistic("netserv_keepalives").unwrap_or(0);
        if at_window.is_none() && t >= window_end {
            at_window = Some(at_server);
        }
        let installed = app.module("itsp-a", "keepalive").is_ok();
        if installed && deployed_at.is_none() {
            deployed_at = Some(t);
            println!("   t={:>5.1} s  the plugin deployed the KeepAlive module on the edge", t.as_secs_f64());
        }
        if t - last_print >= first {
            last_print = t;
            println!(
                "   t={:>5.1} s  keep-alives that reached Kamailio so far: {at_server:>3}   module on the edge: {}",
                t.as_secs_f64(),
                if installed { "yes" } else { "no" }
            );
        }
    }
    let mut ok = true;
    for p in phones {
        ok &= p.wait_with_output()?.status.success();
    }
    let sent = KEEPALIVES * PHONES.len() as u32;
    let total = kam.statistic("netserv_keepalives")?;
    let at_window = at_window.unwrap_or(total);
    // Keep-alives sent from the end of the window on: the rest of each phone's run.
    let after_window_sent = (KEEPALIVES - 2) * PHONES.len() as u32;
    let after_window_reached = total - at_window;
    let absorbed_after = 1.0 - after_window_reached as f64 / f64::from(after_window_sent);
    println!("   phones: {}", if ok { "every REGISTER and keep-alive answered" } else { "SOME REQUESTS FAILED" });
    println!(
        "   keep-alives reaching Kamailio: {at_window} in the first two intervals (before deployment) vs {after_window_reached} of the {after_window_sent} sent after"
    );
    println!(
        "   absorbed at the edge from two intervals after the first keep-alive on: {:.1} % (target ≥ 95 %); overall {} of {sent}",
        absorbed_after * 100.0,
        sent as u64 - total
    );
    let m = app.module("itsp-a", "keepalive");
    if let Ok(m) = m {
        println!("   edge module counters: {}", m["module_counters"]);
    }

    step(3, "a call between two phones, through the edge and Kamailio");
    let (call_ok, _) = call_through(&tb, &dir.0);
    println!("   INVITE / 200 / ACK / BYE: {}", if call_ok { "completed" } else { "FAILED" });

    // What the plugin learned from the appliance at its last refresh.
    let metrics = plugin::get(&tb, "/metrics");
    println!(
        "   the plugin's view: {} keep-alives offloaded (reported by the edge at the last refresh), {} reached the server",
        metric(&metrics, "netserv_plugin_keepalives_offloaded"),
        metric(&metrics, "netserv_plugin_keepalives_at_server_total")
    );

    step(4, "the phones' media relay: deployed by the plugin on their REGISTERs, credentials from GET /turn");
    let relay_ok = relay_story(&tb, &app);

    step(5, "the phones have stopped: their registrations lapse and the plugin retires the module");
    let retire_start = Instant::now();
    while app.module("itsp-a", "keepalive").is_ok() && retire_start.elapsed() < Duration::from_secs(45) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let gone = app.module("itsp-a", "keepalive").is_err();
    let metrics = plugin::get(&tb, "/metrics");
    println!(
        "   module {} after {:.1} s",
        if gone { "removed from the edge" } else { "STILL INSTALLED" },
        retire_start.elapsed().as_secs_f64()
    );
    println!("   plugin metrics:");
    for name in [
        "netserv_plugin_keepalives_at_server_total",
        "netserv_plugin_registers_total",
        "netserv_plugin_deployments_total",
        "netserv_plugin_joined_total",
        "netserv_plugin_refreshes_total",
        "netserv_plugin_removals_total",
        "netserv_plugin_failures_total",
    ] {
        println!("     {name} {}", metric(&metrics, name));
    }
    println!("\nDone; the namespaces and every process are removed on exit.");
    if !(ok && call_ok && gone && relay_ok) {
        anyhow::bail!("the demo did not go as it should");
    }
    Ok(())
}

/// The relay on the edge, deployed by the plugin when the phones
/// registered: the credentials `/turn` hands phone0, and coturn's client
/// relaying through it with them. True when it all worked.
fn relay_story(tb: &Testbed, app: &Appliance) -> bool {
    let Ok(m) = app.module("itsp-a", "relay") else {
        println!("   the relay was NOT deployed");
        return false;
    };
    println!("   relay on the edge, listening on {} (deployed by on-path SETUP)", m["relay"]["listening"]);
    let creds: serde_json::Value =
        serde_json::from_str(&plugin::get(tb, "/turn?service=turn&username=phone0")).unwrap_or_default();
    println!("   GET /turn?service=turn&username=phone0 -> {creds}");
    let (Some(user), Some(pass)) = (creds["username"].as_str(), creds["password"].as_str()) else { return false };
    if which("turnutils_peer").is_none() {
        println!("   coturn's clients are not installed (scripts/setup.sh installs them): skipping the relayed flow");
        return creds["edge"] == true;
    }
    let Ok(_peer) = relay::peer(tb) else { return false };
    std::thread::sleep(Duration::from_millis(200));
    let run = relay::uclient(tb, &["-n", "50", "-u", user, "-w", pass], netserv_tests::netns::CORE_IP);
    let Ok(run) = run else { return false };
    println!(
        "   turnutils_uclient in ua -> edge relay -> turnutils_peer in core: {} sent, {} came back, {} lost",
        run.sent, run.received, run.lost
    );
    if let Ok(m) = app.module("itsp-a", "relay") {
        let u = &m["relay"]["usage"];
        println!(
            "   relayed natively by the edge (never entering wasm): {} packets / {} bytes to the peer, {} / {} back",
            u["packets_to_peers"], u["bytes_to_peers"], u["packets_to_client"], u["bytes_to_client"]
        );
    }
    creds["edge"] == true && run.sent > 0 && run.received == run.sent
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.exists())
}
