//! `netserv-bench-plugin-scale`: the SIP server plugin watching 100,000
//! phones keep alive (issue #14, finding 4's figure). HEP datagrams as
//! Kamailio's siptrace mirrors them — a NOTIFY keep-alive from each phone
//! every `BENCH_PERIOD_SECS` (default 30 s: 3,333 a second for 100,000) —
//! go to a plugin on loopback whose threshold is out of reach, so what is
//! measured is the observation path itself: the registry of every phone,
//! kept, published and saved. The first period fills the registry; the
//! following ones are measured: the plugin's CPU (user + system, of one
//! core), registry saves a second and bytes written a second, and the
//! keep-alives it counted against those sent.
//!
//! `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-plugin-scale`
//! (`BENCH_PHONES`, `BENCH_PERIOD_SECS`, `BENCH_PERIODS` change the load; every
//! loop is bounded by them.)

use netserv_tests::bench::{cpu_secs, env_u64, progress, round1, round3};
use netserv_tests::{paths, rss_kib};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const HEP: &str = "127.0.0.1:19060";
const HTTP: &str = "127.0.0.1:18280";
const SERVER: &str = "127.0.0.1:5060";

fn get(path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&HTTP.parse().expect("address"), Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {HTTP}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(name: &str) -> f64 {
    let page = get("/metrics");
    page.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// Phone `i`'s address: 10.x.y.z, distinct for up to 16 million phones.
fn phone(i: u64) -> IpAddr {
    let [_, a, b, c] = (i as u32 + 1).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, a, b, c))
}

fn keepalive(i: u64, cseq: u64) -> Vec<u8> {
    let p = phone(i);
    let sip = format!(
        "NOTIFY sip:{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {p}:5060;branch=z9hG4bK-{i}-{cseq};rport\r\n\
         From: <sip:u{i}@{p}>;tag={i}\r\nTo: <sip:{SERVER}>\r\nCall-ID: ka-{i}@{p}\r\nCSeq: {cseq} NOTIFY\r\n\
         Event: keep-alive\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    netserv_sip_plugin::hep::encode(&netserv_sip_plugin::hep::Hep {
        source: SocketAddr::new(p, 5060),
        destination: SERVER.parse().expect("address"),
        ip_protocol: 17,
        proto_type: 1,
        timestamp: None,
        payload: sip.as_bytes(),
    })
}

fn main() -> anyhow::Result<()> {
    let phones = env_u64("BENCH_PHONES", 100_000).clamp(1, 1_000_000);
    let period = Duration::from_secs(env_u64("BENCH_PERIOD_SECS", 30).clamp(2, 600));
    let periods = env_u64("BENCH_PERIODS", 2).clamp(2, 20);
    let dir = netserv_tests::appliance::TempDir::new("plugin-scale")?;
    std::fs::write(dir.0.join("itsp-a.key"), netserv_tests::path::SEED_A)?;
    let registry = dir.0.join("registry.json");
    let config = format!(
        r#"tenant = "itsp-a"
key_file = {key:?}
server = "{SERVER}"
hep_listen = "{HEP}"
http_listen = "{HTTP}"
registry = {registry:?}

[module]
file = {module:?}
http_advertise = "{HTTP}"

[policy]
keepalive_threshold = 4000000000
max_phones = {max}
"#,
        key = dir.0.join("itsp-a.key"),
        module = paths::module("netserv_keepalive"),
        max = phones * 2,
    );
    let cfg = dir.0.join("plugin.toml");
    std::fs::write(&cfg, config)?;
    let log = std::fs::File::create(dir.0.join("plugin.log"))?;
    let child = std::process::Command::new(paths::bin("netserv-sip-plugin"))
        .args(["run", "--config", cfg.to_str().unwrap_or_default()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let plugin = netserv_tests::Proc(Some(child));
    let up = Instant::now();
    while !get("/healthz").contains("ok") {
        anyhow::ensure!(up.elapsed() < Duration::from_secs(20), "the plugin did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let to: SocketAddr = HEP.parse()?;
    // Every phone once a period, in 10 ms slices.
    let slices = (period.as_millis() / 10).max(1) as u64;
    let per_slice = phones.div_ceil(slices);
    let mut sent = 0u64;
    let mut marks = Vec::new();
    for n in 0..periods {
        let start = Instant::now();
        marks.push((
            Instant::now(),
            cpu_secs(plugin.pid()),
            metric("netserv_plugin_registry_saves_total"),
            metric("netserv_plugin_registry_bytes_written_total"),
            metric("netserv_plugin_keepalives_at_server_total"),
            sent,
        ));
        let mut i = 0;
        for slice in 0..slices {
            for _ in 0..per_slice {
                if i < phones {
                    if sock.send_to(&keepalive(i, n + 1), to).is_ok() {
                        sent += 1;
                    }
                    i += 1;
                }
            }
            let due = start + Duration::from_millis(10 * (slice + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        progress(&format!("period {}/{periods}: {phones} phones kept alive once, {sent} keep-alives sent", n + 1));
    }
    // The last tick's save lands.
    std::thread::sleep(Duration::from_millis(1500));
    let (t0, cpu0, saves0, bytes0, seen0, sent0) =
        marks.get(1).copied().unwrap_or((Instant::now(), 0.0, 0.0, 0.0, 0.0, 0));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_secs(plugin.pid()) - cpu0) / secs;
    let saves = (metric("netserv_plugin_registry_saves_total") - saves0) / secs;
    let bytes = (metric("netserv_plugin_registry_bytes_written_total") - bytes0) / secs;
    let seen = metric("netserv_plugin_keepalives_at_server_total") - seen0;
    let known = metric("netserv_plugin_phones ");
    let file = std::fs::metadata(&registry).map(|m| m.len()).unwrap_or(0);
    let rate = (sent - sent0) as f64 / secs;
    let out = serde_json::json!({
        "phones": phones, "period_s": period.as_secs(), "measured_s": round1(secs),
        "keepalives_per_s": round1(rate), "keepalives_counted": seen, "keepalives_sent": sent - sent0,
        "phones_known": known, "plugin_cpu_cores": round3(cpu), "registry_saves_per_s": round3(saves),
        "registry_mib_written_per_s": round3(bytes / (1 << 20) as f64), "registry_file_mib": round3(file as f64 / (1 << 20) as f64),
        "plugin_rss_mib": round1(rss_kib(plugin.pid()) as f64 / 1024.0),
    });
    println!("{out}");
    eprintln!(
        "{phones} phones, {rate:.0} keep-alives/s for {secs:.0} s: plugin CPU {:.1} % of a core, {saves:.2} registry saves/s ({:.2} MiB/s; the file {:.1} MiB), {seen} of {} keep-alives counted, RSS {:.0} MiB",
        cpu * 100.0,
        bytes / (1 << 20) as f64,
        file as f64 / (1 << 20) as f64,
        sent - sent0,
        rss_kib(plugin.pid()) as f64 / 1024.0
    );
    drop(plugin);
    Ok(())
}
