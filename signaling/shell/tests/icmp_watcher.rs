//! The ICMP watcher over many requests: one thread and one raw socket for the
//! process, however many requests it makes. Before, every request started a
//! thread and a raw socket that lived until an unreachable arrived after the
//! request had ended — the SIP server plugin leaked both with every PROBE.
//!
//! Needs root (a raw ICMP socket); skipped otherwise, unless
//! `NETSERV_E2E=require` (scripts/test.sh) makes a skip a failure.

use netserv_shell::client::{ClientOptions, Outcome, flow_toward, request};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn is_root() -> bool {
    let euid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok())
    });
    if euid == Some(0) {
        return true;
    }
    assert!(std::env::var("NETSERV_E2E").as_deref() != Ok("require"), "needs root for a raw ICMP socket");
    eprintln!("skipping: a raw ICMP socket needs root");
    false
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// 10,000 requests towards a loopback address where nothing listens on
/// UDP 270 (each ends on the ICMP port unreachable its Query draws), then
/// 200 that nothing answers at all: the process's threads and descriptors
/// are the same after them as after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_and_descriptors_stay_flat_over_ten_thousand_requests() {
    if !is_root() {
        return;
    }
    let target = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    // A retransmission timer far beyond the ICMP answer: a request that
    // ends at once ended on it.
    let opts = ClientOptions { query_attempts: 1, t1: Duration::from_secs(5), ..ClientOptions::default() };
    let flow = flow_toward(target, &opts).expect("a route to 127.0.0.2");
    let one = || request(&flow, 1, b"PROBE..!".to_vec(), &opts);
    assert!(matches!(one().await, Ok(Outcome::NoAppliance { icmp: true })), "the first request");
    let (threads, fds) = (count("/proc/self/task"), count("/proc/self/fd"));
    let start = std::time::Instant::now();
    let mut by_icmp = 0;
    for _ in 0..10_000 {
        if matches!(one().await, Ok(Outcome::NoAppliance { icmp: true })) {
            by_icmp += 1;
        }
    }
    let (threads_after, fds_after) = (count("/proc/self/task"), count("/proc/self/fd"));
    eprintln!(
        "10,000 requests in {:.1} s, {by_icmp} ended by ICMP; threads {threads} -> {threads_after}, fds {fds} -> {fds_after}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(by_icmp, 10_000);

    // Requests no ICMP ever ends (a socket takes their Queries and answers
    // nothing): each ends by its timer. Before, each of these left its
    // thread and raw socket behind for good.
    let sink = std::net::UdpSocket::bind((target, 270)).expect("bind 127.0.0.2:270");
    let quiet = ClientOptions { query_attempts: 1, t1: Duration::from_millis(10), ..ClientOptions::default() };
    for _ in 0..200 {
        let r = request(&flow, 1, b"PROBE..!".to_vec(), &quiet).await;
        assert!(matches!(r, Ok(Outcome::NoAppliance { icmp: false })), "{r:?}");
    }
    drop(sink);
    let (threads_after, fds_after) = (count("/proc/self/task"), count("/proc/self/fd"));
    eprintln!("and 200 ended by their timer; threads {threads} -> {threads_after}, fds {fds} -> {fds_after}");
    assert_eq!(threads_after, threads, "threads grew");
    assert_eq!(fds_after, fds, "descriptors grew");
    assert_eq!(netserv_shell::icmp::subscriptions(), 0, "every subscription ended with its request");
}
