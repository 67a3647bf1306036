//! Replies: whole IP packets written by the caller into one arena, sent in
//! batches with `sendmmsg`, with the intercepted destination's address as
//! their source.
//!
//! Two ways out:
//! - **link**: back out of the interface the intercepted packet came in on,
//!   to the link-layer address it came from, as an Ethernet frame on an
//!   `AF_PACKET` socket. The reply needs no route lookup, no neighbour
//!   resolution and no pass through this node's OUTPUT / POSTROUTING hooks —
//!   it is forwarded traffic going back the way it came, not traffic of this
//!   node (measured: about a third of a reply's cost in the kernel);
//! - **ip**: a raw IP socket (`IPPROTO_RAW`: the packet carries its own IP
//!   header) and the node's routing, when the packet came without a
//!   link-layer source (loopback, tunnels, the OUTPUT hook), with an 802.1Q
//!   tag, or when the link socket is unavailable.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// IPPROTO_RAW: the packet we write includes its IP header (IP_HDRINCL is
/// implied for IPv4; IPv6 raw sockets of this protocol take the header too).
const IPPROTO_RAW: libc::c_int = 255;

fn raw_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Through the node's routing, to this address.
    Ip(IpAddr),
    /// Out of interface `ifindex` to link-layer address `mac`; `ip` is the
    /// packet's destination, for the fallback.
    Link { ifindex: u32, mac: [u8; 6], ip: IpAddr },
}

impl Way {
    fn ip(&self) -> IpAddr {
        match *self {
            Way::Ip(ip) | Way::Link { ip, .. } => ip,
        }
    }
}

/// Bytes of an Ethernet header (destination, source, ethertype).
pub const ETH_HLEN: usize = 14;

/// Packets waiting to be sent, in one reused arena. A link-layer reply is
/// stored with its Ethernet header in front; the source address and
/// ethertype are filled in when it is sent.
#[derive(Debug, Default)]
pub struct ReplyBatch {
    arena: Vec<u8>,
    /// (offset, length, way, caller's tag) of each packet in `arena`; for a
    /// link reply, offset and length include the Ethernet header.
    packets: Vec<(usize, usize, Way, u32)>,
}

impl ReplyBatch {
    pub fn with_capacity(bytes: usize, packets: usize) -> Self {
        Self { arena: Vec::with_capacity(bytes), packets: Vec::with_capacity(packets) }
    }

    /// Appends one packet, written by `write` into the arena (it returns
    /// false to abandon the packet). Returns whether a packet was queued.
    pub fn push(&mut self, to: IpAddr, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.push_tagged(to, 0, write)
    }

    /// [`ReplyBatch::push`] with a tag that [`RawSender::flush`] hands back
    /// for a packet it could not send.
    pub fn push_tagged(&mut self, to: IpAddr, tag: u32, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.push_way(Way::Ip(to), tag, write)
    }

    /// Queues one packet to go `way`, written by `write` (the IP packet).
    pub fn push_way(&mut self, way: Way, tag: u32, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let start = self.arena.len();
        if let Way::Link { mac, .. } = way {
            self.arena.extend_from_slice(&mac);
            self.arena.extend_from_slice(&[0; ETH_HLEN - 6]);
        }
        let ip_start = self.arena.len();
        if write(&mut self.arena) && self.arena.len() > ip_start {
            self.packets.push((start, self.arena.len() - start, way, tag));
            true
        } else {
            self.arena.truncate(start);
            false
        }
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn clear(&mut self) {
        self.arena.clear();
        self.packets.clear();
    }

    /// The queued packets, for tests and the try-out command.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], IpAddr)> {
        self.packets.iter().map(|&(at, len, way, _)| {
            let skip = if matches!(way, Way::Link { .. }) { ETH_HLEN } else { 0 };
            (self.arena.get(at + skip..at + len).unwrap_or_default(), way.ip())
        })
    }
}

/// What one flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    pub failed: u64,
    /// Of those sent, how many went out the link way.
    pub by_link: u64,
}

/// Which socket a run of packets goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    V4,
    V6,
    Link,
}

/// Raw sockets for IPv4 and (when the node has it) IPv6, with the
/// `sendmmsg` scratch arrays kept between batches.
pub struct RawSender {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
    /// `AF_PACKET` socket for link-layer replies (send only: protocol 0
    /// receives nothing).
    link: Option<OwnedFd>,
    /// Interface index → its link-layer address and MTU (None: not
    /// Ethernet-like).
    macs: std::collections::HashMap<u32, Option<([u8; 6], usize)>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the pointer-holding scratch arrays are rebuilt from owned data
// before each send and never read across calls.
unsafe impl Send for RawSender {}

impl std::fmt::Debug for RawSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSender").field("ipv6", &self.v6.is_some()).finish()
    }
}

impl RawSender {
    /// Needs CAP_NET_RAW.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let link = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a fresh descriptor nobody else owns.
        let link = (link >= 0).then(|| unsafe { OwnedFd::from_raw_fd(link) });
        Ok(Self {
            v4: raw_socket(libc::AF_INET)?,
            v6: raw_socket(libc::AF_INET6).ok(),
            link,
            macs: std::collections::HashMap::new(),
            addrs: Vec::new(),
            iovs: Vec::new(),
            hdrs: Vec::new(),
        })
    }

    /// Sends every queued packet (one `sendmmsg` per run of one way and
    /// family) and clears the batch. A packet the kernel refuses is counted,
    /// skipped and its tag handed to `failed`.
    pub fn flush(&mut self, batch: &mut ReplyBatch, mut failed: impl FnMut(u32)) -> Sent {
        self.prepare_links(batch);
        let mut out = Sent::default();
        let mut i = 0;
        while i < batch.packets.len() {
            let Some(&(_, len, first, _)) = batch.packets.get(i) else { break };
            let kind = self.out_of(first, len);
            let end = batch
                .packets
                .iter()
                .skip(i)
                .position(|p| self.out_of(p.2, p.1) != kind)
                .map_or(batch.packets.len(), |n| i + n);
            let run = batch.packets.get(i..end).unwrap_or_default();
            let fd = match kind {
                Out::V4 => Some(self.v4.as_raw_fd()),
                Out::V6 => self.v6.as_ref().map(AsRawFd::as_raw_fd),
                Out::Link => self.link.as_ref().map(AsRawFd::as_raw_fd),
            };
            match fd {
                Some(fd) => {
                    let r = self.send_run(fd, kind, &batch.arena, run, &mut failed);
                    out.sent += r.sent;
                    out.failed += r.failed;
                    if kind == Out::Link {
                        out.by_link += r.sent;
                    }
                }
                None => {
                    out.failed += run.len() as u64;
                    run.iter().for_each(|p| failed(p.3));
                }
            }
            i = end;
        }
        batch.clear();
        out
    }

    /// How a packet of `len` stored bytes leaves: a link reply whose
    /// interface has no known link-layer address, that is larger than the
    /// interface's MTU (a frame is not fragmented; routing does), or with no
    /// link socket, falls back to routing.
    fn out_of(&self, way: Way, len: usize) -> Out {
        match way {
            Way::Link { ifindex, .. }
                if self.link.is_some()
                    && matches!(self.macs.get(&ifindex), Some(Some((_, mtu))) if len.saturating_sub(ETH_HLEN) <= *mtu) =>
            {
                Out::Link
            }
            w if w.ip().is_ipv6() => Out::V6,
            _ => Out::V4,
        }
    }

    /// Fills in the Ethernet source and type of every link reply (looking up
    /// interfaces seen for the first time).
    fn prepare_links(&mut self, batch: &mut ReplyBatch) {
        if self.link.is_none() {
            return;
        }
        for &(at, _, way, _) in &batch.packets {
            let Way::Link { ifindex, .. } = way else { continue };
            let v4 = self.v4.as_raw_fd();
            let link = *self.macs.entry(ifindex).or_insert_with(|| interface_link(v4, ifindex));
            let Some((mac, _)) = link else { continue };
            let ethertype: u16 = match batch.arena.get(at + ETH_HLEN).map(|b| b >> 4) {
                Some(6) => 0x86dd,
                _ => 0x0800,
            };
            if let Some(h) = batch.arena.get_mut(at + 6..at + ETH_HLEN) {
                let (src, ty) = h.split_at_mut(6);
                src.copy_from_slice(&mac);
                ty.copy_from_slice(&ethertype.to_be_bytes());
            }
        }
    }

    fn send_run(
        &mut self,
        fd: libc::c_int,
        kind: Out,
        arena: &[u8],
        run: &[(usize, usize, Way, u32)],
        failed: &mut impl FnMut(u32),
    ) -> Sent {
        let n = run.len();
        // SAFETY (all three): plain data, zero is valid; filled in below.
        self.addrs.resize(n, unsafe { std::mem::zeroed() });
        self.iovs.resize(n, unsafe { std::mem::zeroed() });
        self.hdrs.resize(n, unsafe { std::mem::zeroed() });
        for (k, &(at, len, way, _)) in run.iter().enumerate() {
            let (Some(addr), Some(iov), Some(hdr)) =
                (self.addrs.get_mut(k), self.iovs.get_mut(k), self.hdrs.get_mut(k))
            else {
                continue;
            };
            // A link reply routed instead skips its Ethernet header.
            let (namelen, skip) = match (kind, way) {
                (Out::Link, Way::Link { ifindex, mac, .. }) => (write_sockaddr_ll(addr, ifindex, mac, arena, at), 0),
                (_, Way::Link { ip, .. }) => (write_sockaddr(addr, ip), ETH_HLEN),
                (_, Way::Ip(ip)) => (write_sockaddr(addr, ip), 0),
            };
            let bytes = arena.get(at + skip..at + len).unwrap_or_default();
            iov.iov_base = bytes.as_ptr().cast_mut().cast();
            iov.iov_len = bytes.len();
            crate::mmsg::point(hdr, (addr as *mut libc::sockaddr_storage).cast(), namelen, iov);
        }
        let mut out = Sent::default();
        let mut from = 0;
        // Bounded: every pass sends at least one packet or skips one.
        while from < n {
            let Some(rest) = self.hdrs.get_mut(from..n) else { break };
            let vlen = libc::c_uint::try_from(rest.len()).unwrap_or(0);
            // SAFETY: every header points at its own sockaddr and iovec
            // (filled above, alive in `self`) and at bytes of `arena`, alive
            // for the call; `vlen` headers follow `rest.as_mut_ptr()`.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), vlen, 0) };
            match usize::try_from(sent) {
                Ok(0) | Err(_) => {
                    // The packet at `from` was refused: skip it.
                    out.failed += 1;
                    if let Some(p) = run.get(from) {
                        failed(p.3);
                    }
                    from += 1;
                }
                Ok(k) => {
                    out.sent += k as u64;
                    from += k;
                }
            }
        }
        out
    }
}

/// The link-layer address and MTU of interface `ifindex` (SIOCGIFNAME, then
/// SIOCGIFHWADDR and SIOCGIFMTU on any socket of this network namespace);
/// None when it has no 6-byte Ethernet-like address.
fn interface_link(fd: libc::c_int, ifindex: u32) -> Option<([u8; 6], usize)> {
    // SAFETY: ifreq is plain data; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_ifindex = libc::c_int::try_from(ifindex).ok()?;
    // SAFETY: `req` is a live ifreq the kernel reads the index from and
    // writes the name into.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFNAME, &mut req) } < 0 {
        return None;
    }
    // SAFETY: as above; the name set by SIOCGIFNAME selects the interface.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return None;
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return None;
    }
    let [a, b, c, d, e, f, ..] = hw.sa_data;
    let mac = [a as u8, b as u8, c as u8, d as u8, e as u8, f as u8];
    if mac == [0; 6] {
        return None;
    }
    // SAFETY: as above; the name still selects the interface.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) } < 0 {
        return None;
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Some((mac, usize::try_from(mtu).unwrap_or(0)))
}

fn write_sockaddr_ll(
    storage: &mut libc::sockaddr_storage,
    ifindex: u32,
    mac: [u8; 6],
    arena: &[u8],
    at: usize,
) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_ll.
    let sll = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_ll>() };
    let ethertype =
        arena.get(at + 12..at + 14).and_then(|t| <[u8; 2]>::try_from(t).ok()).map_or(0x0800, u16::from_be_bytes);
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = libc::c_int::try_from(ifindex).unwrap_or(0);
    sll.sll_hatype = 0;
    sll.sll_pkttype = 0;
    sll.sll_halen = 6;
    sll.sll_addr = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0];
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0)
}

fn write_sockaddr(storage: &mut libc::sockaddr_storage, to: IpAddr) -> libc::socklen_t {
    match to {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // sockaddr; we write a sockaddr_in at its start.
            let sin = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = 0;
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) };
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap_or(0)
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = 0;
            sin6.sin6_flowinfo = 0;
            sin6.sin6_scope_id = 0;
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.octets() };
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in6>()).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_packet_leaves_nothing_in_the_arena() {
        let mut b = ReplyBatch::with_capacity(1024, 4);
        let to: IpAddr = "198.18.1.10".parse().expect("ip");
        assert!(b.push(to, |buf| {
            buf.extend_from_slice(b"first");
            true
        }));
        assert!(!b.push(to, |buf| {
            buf.extend_from_slice(b"half-written");
            false
        }));
        assert!(!b.push(to, |_| true), "an empty packet is not queued");
        let got: Vec<_> = b.packets().collect();
        assert_eq!(got, vec![(&b"first"[..], to)]);
    }

    #[test]
    fn a_link_reply_is_stored_behind_its_ethernet_header() {
        let mut b = ReplyBatch::with_capacity(1024, 4);
        let to: IpAddr = "198.18.1.10".parse().expect("ip");
        let way = Way::Link { ifindex: 3, mac: [2, 0, 0, 0, 0, 9], ip: to };
        assert!(b.push_way(way, 7, |buf| {
            buf.extend_from_slice(&[0x45, 0, 0, 20]);
            true
        }));
        assert_eq!(b.arena.get(..6), Some(&[2, 0, 0, 0, 0, 9][..]), "destination first");
        assert_eq!(b.arena.len(), ETH_HLEN + 4);
        assert_eq!(b.packets().collect::<Vec<_>>(), vec![(&[0x45, 0, 0, 20][..], to)], "the IP packet, for callers");
        assert!(!b.push_way(way, 8, |_| false));
        assert_eq!(b.arena.len(), ETH_HLEN + 4, "an abandoned link reply leaves no header behind");
    }
}
