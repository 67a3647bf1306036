//! `netserv-probe`: a small UDP tool the tests and benchmarks run inside their
//! network namespaces. Every loop is bounded in count and time.
//!
//! - `ask`: send a payload N times, one at a time, and report who answered.
//! - `sink`: count datagrams arriving on an address for a bounded time.
//! - `flood`: send as fast as possible from several ports for a bounded time
//!   and count answers (the throughput benchmark's load).
//! - `until-answered`: send every `--interval-us` until the first answer and
//!   report when it came (wall clock, µs since the Unix epoch).
//! - `rtt`: ping-pong N times and report round-trip percentiles, optionally
//!   alternating with a baseline target measured in the same run.
//! - `rtt-spin`: the same ping-pong, with the echo servers in the same
//!   process (their sockets opened in another namespace) and every socket
//!   polled by one spinning thread: a tester that never sleeps, so no
//!   wake-up of its own is in the figures (run it pinned to a CPU of its own).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn req(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| {
        eprintln!("missing {name}");
        std::process::exit(2)
    })
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

fn payload(args: &[String]) -> Vec<u8> {
    let p = req(args, "--payload");
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("ask") => ask(&args),
        Some("sink") => sink(&args),
        Some("flood") => flood(&args),
        Some("rtt") => rtt(&args),
        Some("rtt-spin") => rtt_spin(&args),
        Some("until-answered") => until_answered(&args),
        _ => {
            eprintln!("usage: netserv-probe ask|sink|flood|rtt|until-answered ...");
            std::process::exit(2)
        }
    }
}

fn ask(args: &[String]) {
    let to: SocketAddr = req(args, "--to").parse().expect("--to ip:port");
    let bind = arg(args, "--bind").unwrap_or_else(|| "0.0.0.0:0".into());
    let count = num(args, "--count", 1).min(100_000);
    let timeout = Duration::from_millis(num(args, "--timeout-ms", 1000));
    let data = payload(args);
    let sock = UdpSocket::bind(&bind).expect("bind");
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut answered = 0;
    let mut sources = std::collections::BTreeSet::new();
    let mut last = Vec::new();
    let mut buf = [0u8; 65536];
    for _ in 0..count {
        sock.send_to(&data, to).expect("send");
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            answered += 1;
            sources.insert(from.to_string());
            last = buf.get(..n).unwrap_or_default().to_vec();
        }
    }
    println!(
        "{}",
        serde_json::json!({ "sent": count, "answered": answered, "sources": sources, "last_answer": String::from_utf8_lossy(&last) })
    );
}

fn sink(args: &[String]) {
    let bind = req(args, "--bind");
    let duration = Duration::from_millis(num(args, "--duration-ms", 1000));
    let sock = UdpSocket::bind(&bind).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    // Tell the caller we are bound before counting.
    println!("{}", serde_json::json!({ "ready": bind }));
    // `--hold`: keep the port bound but read nothing, so that the kernel
    // delivers (and, its buffer full, drops and counts) without a reader
    // competing for the CPU; the caller counts at the kernel.
    if args.iter().any(|a| a == "--hold") {
        std::thread::sleep(duration);
        println!("{}", serde_json::json!({ "held": bind }));
        return;
    }
    let start = Instant::now();
    let mut received = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = start;
    let mut buf = [0u8; 65536];
    while start.elapsed() < duration {
        if sock.recv_from(&mut buf).is_ok() {
            received += 1;
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
        }
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("{}", serde_json::json!({ "received": received, "span_s": span }));
}

/// Sends from `ports` sockets round-robin for `duration`, counting answers on
/// a second thread. Reports sent, answered and the answer rate over the window.
fn flood(args: &[String]) {
    let to: SocketAddr = req(args, "--to").parse().expect("--to ip:port");
    // Several source addresses stand for several phones; sockets are spread over them.
    let bind_ips: Vec<String> = req(args, "--bind-ip").split(',').map(str::to_owned).collect();
    let ports = num(args, "--ports", 16).clamp(1, 256);
    let duration = Duration::from_millis(num(args, "--duration-ms", 2000).min(60_000));
    let max_packets = num(args, "--max-packets", 5_000_000);
    // 0: as fast as possible; otherwise paced to this many packets a second.
    let rate = num(args, "--rate-pps", 0).min(10_000_000);
    let data = payload(args);
    let socks: Vec<UdpSocket> = (0..ports)
        .map(|i| {
            let ip = bind_ips.get(i as usize % bind_ips.len()).expect("at least one --bind-ip");
            let s = UdpSocket::bind(format!("{ip}:0")).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
            s
        })
        .collect();
    let clones: Vec<UdpSocket> = socks.iter().map(|s| s.try_clone().expect("clone")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_rx = stop.clone();
    // `--no-receive`: nothing reads the answers (the caller counts them at
    // the kernel), so the sender has the CPU to itself.
    let receive = !args.iter().any(|a| a == "--no-receive");
    let receiver = std::thread::spawn(move || {
        if !receive {
            return 0;
        }
        // Non-blocking sweep over all sockets.
        for s in &clones {
            s.set_nonblocking(true).expect("nonblocking");
        }
        let mut answered = 0u64;
        let mut buf = [0u8; 2048];
        let mut idle_since: Option<Instant> = None;
        loop {
            let mut got = false;
            for s in &clones {
                while s.recv_from(&mut buf).is_ok() {
                    answered += 1;
                    got = true;
                }
            }
            if stop_rx.load(std::sync::atomic::Ordering::Relaxed) {
                // Drain stragglers for a short while after the sender stops.
                let t = *idle_since.get_or_insert_with(Instant::now);
                if got {
                    idle_since = Some(Instant::now());
                } else if t.elapsed() > Duration::from_millis(200) {
                    return answered;
                }
            }
            if !got {
                std::thread::yield_now();
            }
        }
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    'outer: while start.elapsed() < duration {
        for s in &socks {
            if rate > 0 {
                // Paced: wait for the next packet's due time (sleeping for
                // longer gaps, spinning for short ones).
                let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                let now = Instant::now();
                if due > now + Duration::from_micros(200) {
                    std::thread::sleep(due - now - Duration::from_micros(100));
                }
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                if start.elapsed() >= duration {
                    break 'outer;
                }
                match s.send_to(&data, to) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
                continue;
            }
            for _ in 0..8 {
                if s.send_to(&data, to).is_ok() {
                    sent += 1;
                } else {
                    errors += 1;
                }
            }
            if sent >= max_packets {
                break 'outer;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = receiver.join().expect("receiver");
    println!(
        "{}",
        serde_json::json!({ "sent": sent, "send_errors": errors, "answered": answered, "elapsed_s": elapsed,
            "sent_pps": sent as f64 / elapsed, "answered_pps": answered as f64 / elapsed })
    );
}

/// One request at a time; reports round-trip percentiles in microseconds.
fn rtt(args: &[String]) {
    let to: SocketAddr = req(args, "--to").parse().expect("--to ip:port");
    // With --baseline, requests alternate between `to` and `baseline`, so both
    // paths are measured under the same conditions at the same time.
    let baseline: Option<SocketAddr> = arg(args, "--baseline").map(|b| b.parse().expect("--baseline ip:port"));
    let count = num(args, "--count", 1000).min(100_000);
    let data = payload(args);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut samples = [Vec::with_capacity(count as usize), Vec::with_capacity(count as usize)];
    let mut lost = [0u64; 2];
    let mut buf = [0u8; 65536];
    let targets: Vec<SocketAddr> = std::iter::once(to).chain(baseline).collect();
    for _ in 0..count {
        for (k, target) in targets.iter().enumerate() {
            let t = Instant::now();
            sock.send_to(&data, target).expect("send");
            // Only an answer from the address asked counts (a late answer
            // from the other target is discarded).
            let got = loop {
                match sock.recv_from(&mut buf) {
                    Ok((_, from)) if from == *target => break true,
                    Ok(_) => {}
                    Err(_) => break false,
                }
            };
            match (got, samples.get_mut(k), lost.get_mut(k)) {
                (true, Some(s), _) => s.push(t.elapsed().as_secs_f64() * 1e6),
                (false, _, Some(l)) => *l += 1,
                _ => {}
            }
        }
    }
    let pct = |s: &mut Vec<f64>, p: f64| {
        s.sort_by(f64::total_cmp);
        s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    let [mut main, mut base] = samples;
    let mut out = serde_json::json!({
        "count": main.len(), "lost": lost[0], "p50_us": pct(&mut main, 0.5), "p99_us": pct(&mut main, 0.99)
    });
    if baseline.is_some() {
        out["baseline"] = serde_json::json!({
            "count": base.len(), "lost": lost[1], "p50_us": pct(&mut base, 0.5), "p99_us": pct(&mut base, 0.99)
        });
    }
    println!("{out}");
}

/// Moves this thread into network namespace `name` (from `ip netns add`).
fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap_or_else(|e| panic!("netns {name}: {e}"));
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("entering netns {name}: {e}"));
}

fn percentiles(mut s: Vec<f64>, lost: u64) -> serde_json::Value {
    s.sort_by(f64::total_cmp);
    let at =
        |p: f64| s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    serde_json::json!({ "count": s.len(), "lost": lost, "p50_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0) })
}

/// `rtt-spin --client-ns NS --server-ns NS --to IP:PORT [--baseline IP:PORT]
/// --payload FILE --count N`: requests alternate between `to` and
/// `baseline`; this process echoes them itself on sockets bound in the
/// server namespace, and one thread spins over all sockets (non-blocking),
/// so the tester never sleeps and never needs waking.
fn rtt_spin(args: &[String]) {
    let to: SocketAddr = req(args, "--to").parse().expect("--to ip:port");
    let baseline: Option<SocketAddr> = arg(args, "--baseline").map(|b| b.parse().expect("--baseline ip:port"));
    let count = num(args, "--count", 1000).min(100_000);
    let data = payload(args);
    enter_netns(&req(args, "--server-ns"));
    let servers: Vec<UdpSocket> = std::iter::once(to)
        .chain(baseline)
        .map(|a| {
            let s = UdpSocket::bind(a).expect("bind echo");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    enter_netns(&req(args, "--client-ns"));
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let targets: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().expect("addr")).collect();
    let mut samples = [Vec::with_capacity(count as usize), Vec::with_capacity(count as usize)];
    let mut lost = [0u64; 2];
    let mut buf = [0u8; 65536];
    let timeout = Duration::from_millis(500);
    for _ in 0..count {
        for (k, target) in targets.iter().enumerate() {
            let t = Instant::now();
            sock.send_to(&data, target).expect("send");
            let got = loop {
                for s in &servers {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(buf.get(..n).unwrap_or_default(), from);
                    }
                }
                match sock.recv_from(&mut buf) {
                    Ok((_, from)) if from == *target => break true,
                    _ if t.elapsed() > timeout => break false,
                    _ => std::hint::spin_loop(),
                }
            };
            match (got, samples.get_mut(k), lost.get_mut(k)) {
                (true, Some(s), _) => s.push(t.elapsed().as_secs_f64() * 1e6),
                (false, _, Some(l)) => *l += 1,
                _ => {}
            }
        }
    }
    let [main, base] = samples;
    let mut out = percentiles(main, lost[0]);
    if baseline.is_some() {
        out["baseline"] = percentiles(base, lost[1]);
    }
    println!("{out}");
}

fn until_answered(args: &[String]) {
    let to: SocketAddr = req(args, "--to").parse().expect("--to ip:port");
    let interval = Duration::from_micros(num(args, "--interval-us", 1000).max(50));
    let timeout = Duration::from_millis(num(args, "--timeout-ms", 10_000).min(60_000));
    let data = payload(args);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(interval)).expect("timeout");
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = [0u8; 65536];
    while start.elapsed() < timeout {
        sock.send_to(&data, to).expect("send");
        sent += 1;
        if let Ok((_, from)) = sock.recv_from(&mut buf)
            && from == to
        {
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
            println!("{}", serde_json::json!({ "answered": true, "answered_at_unix_us": at as u64, "sent": sent }));
            return;
        }
    }
    println!("{}", serde_json::json!({ "answered": false, "sent": sent }));
}
