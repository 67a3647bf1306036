//! `netserv-turn-load`: the relay benchmark's client, against any TURN
//! server with TURN REST credentials (the edge relay and coturn alike).
//!
//! - `flow`: N allocations each bound to a channel towards an echo peer;
//!   ChannelData at a paced total rate for a bounded time; each datagram
//!   carries its send time, so the echo's round trip through the relay
//!   gives latency percentiles. Prints one JSON line.
//! - `allocs`: N allocations made one after another (the allocation rate),
//!   refreshed every so often for a bounded time, then left to expire (or
//!   freed). Prints one JSON line.
//!
//! Every run is bounded in count and time.

use netserv_tests::turn_client::TurnClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let server: SocketAddr = arg(&args, "--server", "198.18.1.1:3478".parse()?);
    let local: String = arg(&args, "--local", "198.18.1.10".to_owned());
    let secret: String = arg(&args, "--secret", String::new());
    match args.get(1).map(String::as_str) {
        Some("flow") => flow(&args, server, &local, secret.as_bytes()),
        Some("allocs") => allocs(&args, server, &local, secret.as_bytes()),
        _ => anyhow::bail!("usage: netserv-turn-load flow|allocs --server IP:PORT --secret S ..."),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted.get(i).copied().unwrap_or(0))
}

fn flow(args: &[String], server: SocketAddr, local: &str, secret: &[u8]) -> anyhow::Result<()> {
    let peer: SocketAddr = arg(args, "--peer", "198.18.2.20:3480".parse()?);
    let clients: usize = arg(args, "--clients", 16usize).clamp(1, 256);
    let pps: f64 = arg(args, "--pps", 10_000f64).clamp(1.0, 2_000_000.0);
    let duration = Duration::from_millis(arg(args, "--duration-ms", 2000u64).clamp(100, 60_000));
    let size: usize = arg(args, "--size", 172usize).clamp(16, 1200);
    let mut cs = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut c = TurnClient::allocate(local, server, secret, &format!("load-{i}"), 600)?;
        c.bind_channel(0x4000, peer)?;
        cs.push(c);
    }
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // One receiver for all the clients' sockets: it sleeps in `poll` and
    // drains what waits, so under load a wake-up serves many datagrams (the
    // clients, the receiver and the echo share one CPU: the tester must not
    // be what gives out first).
    let socks: Vec<std::net::UdpSocket> =
        cs.iter().map(|c| c.socket.try_clone()).collect::<Result<_, _>>().map_err(anyhow::Error::from)?;
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let mut buf = [0u8; 2048];
            let mut rtts: Vec<u32> = Vec::new();
            let wait = Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
            while !stop.load(Relaxed) {
                let mut fds: Vec<PollFd<'_>> = socks.iter().map(|s| PollFd::new(s, PollFlags::IN)).collect();
                if poll(&mut fds, Some(&wait)).unwrap_or(0) == 0 {
                    continue;
                }
                let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
                for (sock, _) in socks.iter().zip(ready).filter(|(_, r)| *r) {
                    while let Ok((n, _)) = sock.recv_from(&mut buf) {
                        // ChannelData: 4-byte header, then our 16 bytes (seq, sent at).
                        if n < 20 || buf[0] & 0xC0 != 0x40 {
                            continue;
                        }
                        let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap_or([0; 8]));
                        let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        rtts.push(u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX));
                    }
                }
            }
            rtts
        })
    };
    let total = (pps * duration.as_secs_f64()) as u64;
    let interval_ns = 1e9 / pps;
    let mut frame = vec![0u8; 4 + size];
    frame[0] = 0x40;
    frame[1] = 0x00;
    frame[2..4].copy_from_slice(&u16::try_from(size).unwrap_or(0).to_be_bytes());
    let start = Instant::now();
    let mut sent = 0u64;
    for k in 0..total {
        // Paced by sleeping, not spinning: the receivers and the echo peer
        // share this CPU, and a spinning sender would delay them by whole
        // scheduler slices (that, not the relay, would be the latency).
        let due = Duration::from_nanos((k as f64 * interval_ns) as u64);
        let ahead = due.saturating_sub(start.elapsed());
        if ahead > Duration::from_micros(50) {
            std::thread::sleep(ahead);
        }
        let c = &cs[(k as usize) % clients];
        frame[4..12].copy_from_slice(&k.to_be_bytes());
        let ts = u64::try_from(base.elapsed().as_nanos()).unwrap_or(0);
        frame[12..20].copy_from_slice(&ts.to_be_bytes());
        if c.socket.send_to(&frame, server).is_ok() {
            sent += 1;
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let mut rtts: Vec<u32> = receiver.join().unwrap_or_default();
    rtts.sort_unstable();
    let received = rtts.len() as u64;
    for c in &mut cs {
        // Back to blocking reads (the receiver shared the socket) for the answer.
        let _ = c.socket.set_nonblocking(false);
        let _ = c.refresh(0);
    }
    println!(
        "{}",
        serde_json::json!({
            "clients": clients, "offered_pps": pps, "sent": sent, "received": received,
            "loss": 1.0 - received as f64 / sent.max(1) as f64,
            "send_secs": send_secs, "delivered_pps": received as f64 / send_secs.max(1e-9),
            "rtt_p50_us": percentile(&rtts, 0.5), "rtt_p99_us": percentile(&rtts, 0.99),
        })
    );
    Ok(())
}

fn allocs(args: &[String], server: SocketAddr, local: &str, secret: &[u8]) -> anyhow::Result<()> {
    let count: usize = arg(args, "--count", 1000usize).clamp(1, 20_000);
    let hold = Duration::from_millis(arg(args, "--hold-ms", 5000u64).clamp(0, 600_000));
    let refresh_every = Duration::from_millis(arg(args, "--refresh-every-ms", 2000u64).clamp(100, 600_000));
    let lifetime: u32 = arg(args, "--lifetime", 600u32);
    let free = args.iter().any(|a| a == "--free");
    let started = Instant::now();
    let mut cs = Vec::with_capacity(count);
    let mut failed = 0u64;
    for i in 0..count {
        match TurnClient::allocate(local, server, secret, &format!("alloc-{i}"), lifetime) {
            Ok(c) => cs.push(c),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("allocation {i} failed: {e:#}");
                }
            }
        }
    }
    let alloc_secs = started.elapsed().as_secs_f64();
    // Ready: the bench reads the server's memory now and during the hold.
    eprintln!("allocated {} in {alloc_secs:.2} s", cs.len());
    let hold_start = Instant::now();
    let mut refreshed = 0u64;
    let mut refresh_failed = 0u64;
    while hold_start.elapsed() < hold {
        std::thread::sleep(refresh_every.min(hold.saturating_sub(hold_start.elapsed())));
        for c in &mut cs {
            match c.refresh(lifetime) {
                Ok(()) => refreshed += 1,
                Err(_) => refresh_failed += 1,
            }
        }
    }
    if free {
        for c in &mut cs {
            let _ = c.refresh(0);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "allocated": cs.len(), "failed": failed, "alloc_secs": alloc_secs,
            "alloc_rate": cs.len() as f64 / alloc_secs.max(1e-9),
            "refreshed": refreshed, "refresh_failed": refresh_failed,
        })
    );
    Ok(())
}
