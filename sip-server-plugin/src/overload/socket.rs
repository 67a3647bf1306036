//! The server's own receive queue, from the kernel's socket table
//! (`/proc/net/udp`, `/proc/net/udp6`): how many bytes wait in the SIP
//! server's UDP socket, and how many datagrams the kernel dropped because
//! it was full. The most direct sign of overload there is: a server that
//! keeps up leaves its queue near empty; one that does not fills it, and
//! every request that then waits past T1 (500 ms) comes back as a
//! retransmission (RFC 6357 §3).
//!
//! Codec only: the shell reads the files. The plugin must run in the
//! server's network namespace (it does already: it reads Kamailio's RPC
//! socket and takes its HEP on loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the kernel reports for the server's socket(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketSample {
    /// Bytes waiting in the receive queue (the kernel's accounting, with
    /// each datagram's buffer overhead: a few hundred bytes of SIP take
    /// about 1–2 KiB).
    pub rx_queue: u64,
    /// Datagrams dropped so far because the queue was full.
    pub drops: u64,
}

/// Sums the lines of a `/proc/net/udp` or `/proc/net/udp6` table whose local
/// address is `server` (or the wildcard address on its port). `None` when no
/// socket matches (the server is not listening, or not in this namespace).
/// Lines that do not parse are skipped: the table is the kernel's, but this
/// must not fail on a format it does not know.
pub fn parse_table(table: &str, server: SocketAddr) -> Option<SocketSample> {
    let mut found: Option<SocketSample> = None;
    for line in table.lines().skip(1) {
        let Some(s) = parse_line(line, server) else { continue };
        let f = found.get_or_insert_with(SocketSample::default);
        f.rx_queue = f.rx_queue.saturating_add(s.rx_queue);
        f.drops = f.drops.saturating_add(s.drops);
    }
    found
}

/// One line: `sl local rem st tx_queue:rx_queue tr tm->when retrnsmt uid
/// timeout inode ref pointer drops` (net/ipv4/udp.c `udp4_format_sock`).
fn parse_line(line: &str, server: SocketAddr) -> Option<SocketSample> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (addr, port) = fields.get(1)?.split_once(':')?;
    if u16::from_str_radix(port, 16).ok()? != server.port() {
        return None;
    }
    // `::ffff:a.b.c.d` in the IPv6 table is an IPv4 server on a dual-stack socket.
    let ip = parse_addr(addr)?.to_canonical();
    if ip != server.ip().to_canonical() && !ip.is_unspecified() {
        return None;
    }
    let (_, rx) = fields.get(4)?.split_once(':')?;
    let rx_queue = u64::from_str_radix(rx, 16).ok()?;
    let drops = fields.last()?.parse().ok()?;
    Some(SocketSample { rx_queue, drops })
}

/// The kernel prints each 32-bit word of the address as a number in the
/// machine's own byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let h = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(h, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As read in the testbed's `core` namespace on x86_64 with Kamailio on
    /// 198.18.2.20:5060 (queue 0x4800 bytes, 37 drops) and the plugin's HEP
    /// socket on 127.0.0.1:9060.
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  183: 140212C6:13C4 00000000:0000 07 00000000:00004800 00:00000000 00000000     0        0 421977 2 0000000000000000 37
  466: 0100007F:2364 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 421990 2 0000000000000000 0
";

    fn server(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn the_servers_socket_is_found_and_read() {
        assert_eq!(parse_table(UDP, server("198.18.2.20:5060")), Some(SocketSample { rx_queue: 0x4800, drops: 37 }));
        assert_eq!(parse_table(UDP, server("127.0.0.1:9060")), Some(SocketSample { rx_queue: 0, drops: 0 }));
    }

    #[test]
    fn another_address_or_port_is_not_the_server() {
        assert_eq!(parse_table(UDP, server("198.18.2.21:5060")), None);
        assert_eq!(parse_table(UDP, server("198.18.2.20:5061")), None);
    }

    #[test]
    fn a_wildcard_socket_on_the_port_counts_and_several_sum() {
        let t = format!(
            "{UDP}  200: 00000000:13C4 00000000:0000 07 00000000:00000100 00:00000000 00000000     0        0 1 2 0000000000000000 3\n"
        );
        assert_eq!(parse_table(&t, server("198.18.2.20:5060")), Some(SocketSample { rx_queue: 0x4900, drops: 40 }));
    }

    #[test]
    fn ipv6_addresses_are_read_word_by_word() {
        // [2001:db8::20]:5060 as x86_64 prints it.
        let t = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   10: B80D0120000000000000000020000000:13C4 00000000000000000000000000000000:0000 07 00000000:00000200 00:00000000 00000000     0        0 5 2 0000000000000000 9
";
        assert_eq!(parse_table(t, server("[2001:db8::20]:5060")), Some(SocketSample { rx_queue: 0x200, drops: 9 }));
    }

    #[test]
    fn an_ipv4_server_on_a_dual_stack_socket_is_found_in_the_ipv6_table() {
        // ::ffff:198.18.2.20 port 5060.
        let t = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    4: 0000000000000000FFFF0000140212C6:13C4 00000000000000000000000000000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 7 2 0000000000000000 2
";
        assert_eq!(parse_table(t, server("198.18.2.20:5060")), Some(SocketSample { rx_queue: 0x300, drops: 2 }));
    }

    #[test]
    fn lines_that_do_not_parse_are_skipped() {
        let t = "header\n garbage\n 1: ZZZZ:13C4 x\n 2: 140212C6:13C4 00000000:0000 07 nocolon 00 0 0 0 0 0 0 x\n";
        assert_eq!(parse_table(t, server("198.18.2.20:5060")), None);
        assert_eq!(parse_table("", server("198.18.2.20:5060")), None);
    }
}
