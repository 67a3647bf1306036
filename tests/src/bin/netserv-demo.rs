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
//! coturn's own client relays through it. Last, a busy hour: Kamailio,
//! capped to a tenth of a CPU, is offered several times the calls it can
//! take; the plugin, watching its receive queue, deploys the overload
//! control module on the edge and steers it, the edge answers the excess
//! with 503, and control ends (and the module goes) when the surge does.

use netserv_tests::appliance::{TENANT_A_TOKEN, TempDir};
use netserv_tests::cdn;
use netserv_tests::cgroup::CpuCap;
use netserv_tests::kamailio::{Kamailio, phone_scenario, start_callee};
use netserv_tests::plugin::{self, PHONES, SERVER, call_through, metric};
use netserv_tests::relay;
use netserv_tests::{Appliance, Testbed, netns, paths, sipp};
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
    // The plugin is also the server's load monitor ([overload]): it reads
    // Kamailio's receive queue and needs no capacity configured.
    let plugin_cfg = format!(
        "{}\n[overload]\nfile = {:?}\nrpc_socket = {:?}\nrelease_after_secs = 3\nappliance_token = \"{TENANT_A_TOKEN}\"\n",
        plugin::config_with_relay(&dir.0, relay::REST_SECRET, "turn:198.18.2.20:3478?transport=udp"),
        paths::module("netserv_overload_se"),
        kam.rpc_socket(),
    );
    let _plugin = plugin::start_with(&tb, &dir.0, &plugin_cfg)?;
    // The appliance takes the plugin's load reports on its API, at the
    // address it advertises towards the core.
    // A content provider (tenant cdn-a) may run its edge cache here too.
    let app_cfg = relay::relay_config("").replacen(
        "listen = \"127.0.0.1:8270\"",
        "listen = \"0.0.0.0:8270\"\nadvertise = \"198.18.2.1:8270\"",
        1,
    ) + &cdn::tenant_block();
    let app = Appliance::start(&tb, &app_cfg)?;
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

    step(
        6,
        "a busy hour: Kamailio, capped to a tenth of a CPU, offered 600 calls a second (several times what it takes)",
    );
    let overload_ok = overload_story(&tb, &app, &kam, &dir.0);

    step(
        7,
        "ActiveCDN: a content provider's origin and director in core; clients its GeoIP database places in New York, Boston and Tokyo",
    );
    let cdn_ok = cdn_story(&tb, &app, &dir.0).unwrap_or_else(|e| {
        println!("   the edge cache story failed: {e:#}");
        false
    });

    println!("\nDone; the namespaces and every process are removed on exit.");
    if !(ok && call_ok && gone && relay_ok && overload_ok && cdn_ok) {
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

/// The ActiveCDN story: the first client is served by the origin and the
/// director deploys the provider's cache on the edge; the next client of
/// the region is redirected there and gets the page with the provider's
/// banner, a miss and then a hit; a client far away stays on the origin.
fn cdn_story(tb: &Testbed, app: &Appliance, dir: &std::path::Path) -> anyhow::Result<bool> {
    use netserv_tests::cdn::{BANNER, DIRECTOR, FAR, NEAR_1, NEAR_2, curl};
    tb.add_ua_address(FAR)?;
    let _origin = cdn::start_origin(tb, dir)?;
    let _director = cdn::start_director(tb, dir)?;
    let front = format!("http://{DIRECTOR}/page.html");
    let g = curl(tb, NEAR_1, &front, &[])?;
    println!("   New York client ({NEAR_1}) GET {front}: {} from the origin (no edge cache near it yet)", g.status);
    let deployed = (0..300).find_map(|_| {
        let m = app.module("cdn-a", "active-cdn").ok();
        if m.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    });
    let Some(m) = deployed else {
        println!("   the director's SETUP did NOT install the cache on the edge");
        return Ok(false);
    };
    println!(
        "   the director signaled a SETUP towards that client: the edge now serves cdn-a's cache on {}",
        m["cache"]["listening"]
    );
    // The director learns the node from its PROBE, just after the SETUP.
    let mut redirect = curl(tb, NEAR_2, &front, &[])?;
    for _ in 0..50 {
        if redirect.status == 302 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        redirect = curl(tb, NEAR_2, &front, &[])?;
    }
    println!(
        "   Boston client ({NEAR_2}) GET {front}: {} Location: {}",
        redirect.status,
        redirect.header("location").unwrap_or("-")
    );
    let first = curl(tb, NEAR_2, &front, &["-L"])?;
    let again = curl(tb, NEAR_2, &front, &["-L"])?;
    let banner = first.text().contains(BANNER);
    println!(
        "   following it: {} x-cache {}, then {} x-cache {}; the page {} the provider's banner",
        first.status,
        first.header("x-cache").unwrap_or("-"),
        again.status,
        again.header("x-cache").unwrap_or("-"),
        if banner { "carries" } else { "does NOT carry" }
    );
    let far = curl(tb, FAR, &front, &[])?;
    println!("   Tokyo client ({FAR}): {} from the origin (no node within 500 km)", far.status);
    if let Ok(m) = app.module("cdn-a", "active-cdn") {
        let c = &m["cache"];
        println!(
            "   the edge cache: {} hits, {} misses, {} objects, {} bytes of its {} byte budget",
            c["hits"], c["misses"], c["objects"], c["stored_bytes"], c["budget_bytes"]
        );
    }
    Ok(redirect.status == 302
        && first.status == 200
        && banner
        && again.header("x-cache") == Some("HIT")
        && far.status == 200)
}

/// The overload story: a callee behind Kamailio, Kamailio capped, callers
/// who hang up after 5 s without progress offering far more than it takes;
/// once a second, what the plugin sees and what the edge sheds; then the
/// end of control and the module's removal. True when control engaged, the
/// edge shed, calls still completed and the module went away.
fn overload_story(tb: &Testbed, app: &Appliance, kam: &Kamailio, dir: &std::path::Path) -> bool {
    let run = || -> anyhow::Result<bool> {
        let cap = CpuCap::new("demo", 10)?;
        cap.add_matching(kam.config_path().to_str().unwrap_or_default())?;
        let _uas = start_callee(&tb.core, SERVER, dir)?;
        println!("   Kamailio capped (cgroup v1 CFS quota); a sipp callee registered behind it");
        let (ua, logs) = (tb.ua.clone(), dir.to_path_buf());
        let callers = std::thread::spawn(move || sipp::callers_to(&ua, SERVER, "uas", 5061, 4800, 600, &logs));
        let start = Instant::now();
        // The edge's counters as last seen (the module goes once control ends).
        let (mut counters, mut removed) = (None::<serde_json::Value>, false);
        while !callers.is_finished() {
            std::thread::sleep(Duration::from_millis(1000));
            let s: serde_json::Value = serde_json::from_str(&plugin::get(tb, "/status")).unwrap_or_default();
            let o = &s["overload"];
            let t = start.elapsed().as_secs_f64();
            match app.module("itsp-a", "overload") {
                Ok(m) => {
                    if counters.is_none() {
                        println!("   t={t:>5.1} s  the plugin deployed overload control on the edge");
                    }
                    counters = Some(m["module_counters"].clone());
                }
                Err(_) if counters.is_some() && !removed => {
                    removed = true;
                    println!("   t={t:>5.1} s  control ended; the plugin removed the module from the edge");
                }
                Err(_) => {}
            }
            if removed {
                // The callers are finishing their last calls: nothing more to see.
                continue;
            }
            let shed = counters.as_ref().map_or(0, |c| c["shed_initial"].as_u64().unwrap_or(0));
            println!(
                "   t={t:>5.1} s  Kamailio's queue {:>7} bytes  plugin: {:<11} shed share {:>4}   503s from the edge so far {shed:>6}",
                o["queue_bytes"].to_string(),
                o["state"].as_str().unwrap_or("?"),
                o["shed"].as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
            );
        }
        let calls = callers.join().map_err(|_| anyhow::anyhow!("the callers' thread panicked"))??;
        let (byes_sent, byes_answered) = calls.byes.unwrap_or((0, 0));
        let s: serde_json::Value = serde_json::from_str(&plugin::get(tb, "/status")).unwrap_or_default();
        println!(
            "   calls completed (answered, talked, BYE answered): {} of 4800 offered in 8 s; BYEs answered {byes_answered} of {byes_sent}",
            calls.successful
        );
        println!(
            "   the plugin learned that the server takes {} requests a second",
            s["overload"]["learned_capacity"].as_f64().map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"))
        );
        if let Some(c) = &counters {
            println!("   edge module counters, last seen: {c}");
        }
        let shed = counters.as_ref().and_then(|c| c["shed_initial"].as_u64()).unwrap_or(0);
        let waiting = Instant::now();
        while app.module("itsp-a", "overload").is_ok() && waiting.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(250));
        }
        let gone = app.module("itsp-a", "overload").is_err();
        if !removed {
            println!(
                "   {}",
                if gone {
                    "control ended; the module was removed from the edge"
                } else {
                    "control DID NOT END: the module is STILL INSTALLED"
                }
            );
        }
        Ok(counters.is_some() && shed > 0 && calls.successful > 0 && gone)
    };
    run().unwrap_or_else(|e| {
        println!("   FAILED: {e:#}");
        false
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.exists())
}
