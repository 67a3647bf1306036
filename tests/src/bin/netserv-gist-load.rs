//! `netserv-gist-load`: opens many GIST signaling sessions through the path
//! towards `--towards`, each a full Query / Response / Confirm handshake that
//! leaves routing state (soft state) on every appliance on the path, and
//! reports how many completed. A bounded number of handshakes is in flight at
//! once, every loop is bounded in count and time.
//!
//! `netserv-gist-load --towards 198.18.1.10 --count 100000 --window 256 --timeout-ms 60000`

use netserv_gist::core::{Config, Event, Node, Toward};
use netserv_gist::wire::{Mri, SessionId};
use rand_core::{OsRng, RngCore};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target: IpAddr = arg(&args, "--towards").and_then(|v| v.parse().ok()).expect("--towards <ip>");
    let count: u64 = arg(&args, "--count").and_then(|v| v.parse().ok()).unwrap_or(1000).min(1_000_000);
    let window: usize = arg(&args, "--window").and_then(|v| v.parse().ok()).unwrap_or(256).clamp(1, 5000);
    let timeout = Duration::from_millis(arg(&args, "--timeout-ms").and_then(|v| v.parse().ok()).unwrap_or(60_000));
    let local = netserv_shell::net::local_toward(target).expect("route to the target");
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
    let start = Instant::now();
    let mut cfg = Config::new(netserv_nslp::NSLPID, &b"gist-load"[..]);
    cfg.max_pending_queries = window;
    cfg.max_routing_states = count as usize + 1;
    cfg.validity = Duration::from_secs(3600);
    let mut node = Node::new(cfg, start, &mut OsRng);
    let (mut started, mut done, mut failed) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let mut last_report = start;
    while done + failed < count && start.elapsed() < timeout {
        let now = Instant::now();
        while started < count && node.pending_queries() < window {
            let mut sid = [0u8; 16];
            OsRng.fill_bytes(&mut sid);
            // Empty NSLP data: the Confirm installs routing state and nothing else.
            if node
                .send(
                    now,
                    local,
                    Toward::Target,
                    SessionId(sid),
                    Mri::between(local, target),
                    Vec::new(),
                    None,
                    &mut OsRng,
                )
                .is_err()
            {
                break;
            }
            started += 1;
        }
        while let Some(t) = node.poll_transmit() {
            let _ = sock.send_to(&t.payload, t.destination);
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let before = node.routing().len();
            node.handle_datagram(Instant::now(), local, from, buf.get(..n).unwrap_or_default(), false);
            done += (node.routing().len() - before) as u64;
        }
        node.handle_timeout(Instant::now());
        while let Some(ev) = node.poll_event() {
            if matches!(ev, Event::NoPeer { .. }) {
                failed += 1;
            }
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "[gist-load] {done} sessions established, {failed} failed, {:.1} s",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    while let Some(t) = node.poll_transmit() {
        let _ = sock.send_to(&t.payload, t.destination);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "requested": count, "established": done, "failed": failed, "elapsed_s": secs,
            "sessions_per_s": done as f64 / secs })
    );
}
