//! BENCH_TRACE=1: what the server, the plugin and the edge see, once a
//! second, while a point of the curve runs.

use netserv_tests::Testbed;
use netserv_tests::appliance::ADMIN_TOKEN;
use netserv_tests::bench::progress;
use serde_json::Value;
use std::path::Path;

/// BENCH_TRACE=1: once a second, what the server, the plugin and the edge
/// see, on stderr (`server` is Kamailio's requests taken in so far).
pub struct Tracer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tracer {
    pub fn start(tb: &Testbed, dir: &Path, plugin_on: bool) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, core, edge) = (stop.clone(), tb.core.clone(), tb.edge.clone());
        let kam = format!("unix:{}", dir.join("kamailio/kamailio_ctl").display());
        let group = format!("/sys/fs/cgroup/cpu/netserv-ocb-{}", std::process::id());
        let thread = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let server_cpu = || -> u64 {
                let procs = std::fs::read_to_string(format!("{group}/cgroup.procs")).unwrap_or_default();
                procs
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(|p| (netserv_tests::bench::cpu_secs(p) * 1e9) as u64)
                    .sum()
            };
            let mut cpu0 = server_cpu();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let cpu = server_cpu();
                let kam_cpu = (cpu.saturating_sub(cpu0)) as f64 / 1e7;
                cpu0 = cpu;
                let stat = |name: &str| -> String {
                    netserv_tests::netns::output(&core, "kamcmd", &["-s", &kam, "stats.get_statistics", name])
                        .ok()
                        .and_then(|o| o.lines().find_map(|l| l.split_once(" = ").map(|(_, v)| v.trim().to_owned())))
                        .unwrap_or_default()
                };
                let plugin = if plugin_on {
                    let v = curl_json(&core, "http://198.18.2.20:8280/status");
                    let o = &v["overload"];
                    let oc: Vec<String> = o["edges"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(_, e)| format!("oc={} offered={:.0}", e["oc"], e["offered"].as_f64().unwrap_or(0.0)))
                        .collect();
                    format!(
                        "plugin {} rate={:.0} queue={} shed={:.2} {}",
                        o["state"],
                        o["server_rate"].as_f64().unwrap_or(0.0),
                        o["queue_bytes"],
                        o["shed"].as_f64().unwrap_or(-1.0),
                        oc.join(" ")
                    )
                } else {
                    String::new()
                };
                let edge = curl_json(&edge, "http://127.0.0.1:8270/api/v1/modules/itsp-a/overload")["module_counters"]
                    .to_string();
                progress(&format!(
                    "  t={:>5.1}s cpu={kam_cpu:.0}% server={} (invite {} ack {} bye {} cancel {} replies {} drops {}) {plugin} edge {edge}",
                    t0.elapsed().as_secs_f64(),
                    stat("rcv_requests"),
                    stat("rcv_requests_invite"),
                    stat("rcv_requests_ack"),
                    stat("rcv_requests_bye"),
                    stat("rcv_requests_cancel"),
                    stat("rcv_replies"),
                    udp_drops(&core),
                ));
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

/// UDP datagrams dropped for a full receive buffer in `ns` so far.
fn udp_drops(ns: &str) -> String {
    let snmp = netserv_tests::netns::output(ns, "cat", &["/proc/net/snmp"]).unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(head), Some(vals)) = (udp.next(), udp.next()) else { return String::new() };
    head.split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .map_or(String::new(), |(_, v)| v.to_owned())
}

/// GET `url` from namespace `ns` as the admin: its JSON, or null.
fn curl_json(ns: &str, url: &str) -> Value {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    netserv_tests::netns::output(ns, "curl", &["-s", "-m", "1", "-H", &auth, url])
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
