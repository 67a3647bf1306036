//! The node's own addresses, which the peer policy denies as peers (a
//! relay must not become a way into the node's own services). Read from
//! the kernel's tables in /proc (IPv4: the `/32 host LOCAL` entries of
//! `fib_trie`; IPv6: `if_inet6`) of the network namespace the node runs in.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 addresses in `fib_trie` text: a `|-- a.b.c.d` line followed by a
/// `/32 host LOCAL` line.
pub fn parse_fib_trie(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
        {
            out.insert(ip);
        }
    }
    out
}

/// IPv6 addresses in `if_inet6` text: 32 hex digits first on each line.
pub fn parse_if_inet6(text: &str) -> BTreeSet<Ipv6Addr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .collect()
}

/// The node's addresses now.
pub fn local_addresses() -> Vec<IpAddr> {
    let v4 = std::fs::read_to_string("/proc/net/fib_trie").map(|t| parse_fib_trie(&t)).unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6").map(|t| parse_if_inet6(&t)).unwrap_or_default();
    v4.into_iter().map(IpAddr::V4).chain(v6.into_iter().map(IpAddr::V6)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_tables() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 198.18.1.1\n        /32 host LOCAL\n     |-- 198.18.1.255\n        /32 link BROADCAST\nLocal:\n     |-- 198.18.1.1\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(trie).into_iter().collect::<Vec<_>>(),
            ["198.18.1.1".parse::<Ipv4Addr>().expect("ip")]
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
        let v6: Vec<Ipv6Addr> = parse_if_inet6(inet6).into_iter().collect();
        assert_eq!(v6, ["::1".parse::<Ipv6Addr>().expect("ip"), "fe80::fc:ff:fe00:1".parse().expect("ip")]);
        assert!(local_addresses().iter().any(|a| a.is_loopback()), "this machine has a loopback");
    }
}
