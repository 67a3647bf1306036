//! `netserv-bench-signaling`: on-path signaling figures on the multi-hop
//! testbed (core ⇄ edge1 ⇄ router ⇄ edge2 ⇄ ua), in one run:
//!
//! 1. SETUP-to-serving latency over two appliances: from the moment
//!    `netserv-signal setup` starts in core until a keep-alive sent from ua
//!    every 200 µs is first answered by the module on edge2 — once with a
//!    module neither appliance has seen (download + compile), then
//!    `BENCH_REPEAT` times with the module cached (REMOVE, SETUP again);
//! 2. concurrent signaling sessions one appliance holds: `BENCH_SESSIONS`
//!    GIST handshakes (Query / Response / Confirm) through edge1, each leaving
//!    routing state there; the appliance's resident memory before and after.
//!
//! Progress on stderr; the last line on stdout is a JSON object with the
//! figures. Needs root and python3 (the module origin). Every load is bounded.

use netserv_tests::appliance::TempDir;
use netserv_tests::path::{PathTestbed, SEED_A, UA_IP, appliance_config};
use netserv_tests::{Appliance, paths, rss_kib};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SERVER: &str = "198.18.10.20:5060";

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn json_line(out: &str) -> Value {
    out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
}

fn config(node_id: &str, state: &std::path::Path) -> String {
    appliance_config(node_id, state, "validity_secs = 600\nmax_sessions = 250000")
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(f64::NAN)
}

struct Bed {
    tb: PathTestbed,
    key: String,
    module: String,
    url: String,
    notify: String,
}

impl Bed {
    fn signal(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.tb.output(&self.tb.core, paths::bin("netserv-signal"), &[&["--json"], args].concat());
        // A refusal exits non-zero but still prints the JSON answer.
        match out {
            Ok(o) => Ok(json_line(&o)),
            Err(e) => anyhow::bail!("netserv-signal failed: {e}"),
        }
    }

    /// Time from starting SETUP to the first keep-alive answered at the edge.
    fn setup_to_serving(&self) -> anyhow::Result<(f64, f64)> {
        let watcher = std::process::Command::new("ip")
            .args(["netns", "exec", &self.tb.ua])
            .arg(paths::bin("netserv-probe"))
            .args([
                "until-answered",
                "--to",
                SERVER,
                "--payload",
                &self.notify,
                "--interval-us",
                "200",
                "--timeout-ms",
                "15000",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        // Let the watcher start sending first.
        std::thread::sleep(Duration::from_millis(100));
        let t0 = unix_us();
        let setup = self.signal(&[
            "setup",
            "--towards",
            UA_IP,
            "--key",
            &self.key,
            "--user",
            "itsp-a",
            "--module",
            "keepalive",
            "--url",
            &self.url,
            "--module-file",
            &self.module,
            "--filter-addr",
            "198.18.10.20/32",
            "--filter-port",
            "5060",
            "--ttl",
            "600",
        ])?;
        let out = watcher.wait_with_output()?;
        let w = json_line(&String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(setup["ok"] == true, "SETUP failed: {setup}");
        let at = w["answered_at_unix_us"].as_u64().ok_or_else(|| anyhow::anyhow!("never answered: {w}"))?;
        Ok(((at.saturating_sub(t0)) as f64 / 1000.0, setup["elapsed_ms"].as_f64().unwrap_or(f64::NAN)))
    }

    fn remove(&self) -> anyhow::Result<()> {
        let r = self.signal(&[
            "remove",
            "--towards",
            UA_IP,
            "--key",
            &self.key,
            "--user",
            "itsp-a",
            "--module",
            "keepalive",
        ])?;
        anyhow::ensure!(r["ok"] == true, "REMOVE failed: {r}");
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let repeat = env_u64("BENCH_REPEAT", 5).clamp(1, 50);
    let sessions = env_u64("BENCH_SESSIONS", 105_000).clamp(100, 500_000);
    let dir = TempDir::new("bench-sig")?;
    let www = dir.0.join("www");
    let module = www.join("keepalive.wasm");
    let key = dir.0.join("itsp-a.key");
    std::fs::write(&key, SEED_A)?;
    let notify = dir.0.join("notify.sip");
    std::fs::write(
        &notify,
        "NOTIFY sip:198.18.10.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.13.10:5099;branch=z9hG4bK-b;rport\r\n\
         From: <sip:phone@198.18.13.10>;tag=b1\r\nTo: <sip:198.18.10.20:5060>\r\nCall-ID: bench-1\r\nCSeq: 1 NOTIFY\r\n\
         Event: keep-alive\r\nContent-Length: 0\r\n\r\n",
    )?;
    let tb = PathTestbed::new("bsig")?;
    let (_origin, url) = tb.module_origin(&www)?;
    let edge1 = Appliance::start_in(&tb.edge1, &config("edge1", &dir.0.join("s1")))?;
    let _edge2 = Appliance::start_in(&tb.edge2, &config("edge2", &dir.0.join("s2")))?;
    let s = |p: &std::path::Path| p.to_str().unwrap_or_default().to_owned();
    let bed = Bed { tb, key: s(&key), module: s(&module), url, notify: s(&notify) };

    progress("SETUP to serving over two appliances, first download");
    let (first, first_cli) = bed.setup_to_serving()?;
    progress(&format!("  {first:.1} ms to the first answered keep-alive (SETUP answered in {first_cli:.1} ms)"));
    let mut cached = Vec::new();
    for i in 0..repeat {
        bed.remove()?;
        let (ms, cli) = bed.setup_to_serving()?;
        progress(&format!("  cached module, run {}: {ms:.1} ms (SETUP answered in {cli:.1} ms)", i + 1));
        cached.push(ms);
    }
    cached.sort_by(f64::total_cmp);
    let cached_median = cached.get(cached.len() / 2).copied().unwrap_or(f64::NAN);

    progress(&format!("concurrent sessions: {sessions} GIST handshakes through edge1"));
    let pid = edge1.proc.pid();
    let rss_before = rss_kib(pid);
    let load = json_line(&bed.tb.output(
        &bed.tb.core,
        paths::bin("netserv-gist-load"),
        &["--towards", UA_IP, "--count", &sessions.to_string(), "--window", "512", "--timeout-ms", "120000"],
    )?);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    let held = gauge(&edge1.metrics()?, "netserv_signaling_routing_states");
    let per_session_bytes = (rss_after.saturating_sub(rss_before) * 1024) as f64 / held.max(1.0);
    progress(&format!(
        "  {held} sessions held by edge1 ({} established in {:.1} s); RSS {} -> {} MiB, {per_session_bytes:.0} bytes per session",
        load["established"],
        load["elapsed_s"].as_f64().unwrap_or(0.0),
        rss_before / 1024,
        rss_after / 1024
    ));

    println!(
        "{}",
        json!({
            "setup_to_serving_first_download_ms": (first * 10.0).round() / 10.0,
            "setup_to_serving_cached_median_ms": (cached_median * 10.0).round() / 10.0,
            "setup_to_serving_cached_runs_ms": cached,
            "target_setup_to_serving_cached_ms": 50,
            "sessions_requested": sessions,
            "sessions_held": held,
            "session_load": load,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_total_mib": rss_after as f64 / 1024.0,
            "bytes_per_session": per_session_bytes.round(),
            "target_sessions": 100_000,
            "target_rss_mib": 200,
        })
    );
    Ok(())
}
