//! Replies: whole IP packets written by the caller into one arena, sent in
//! batches with `sendmmsg` on raw sockets (`IPPROTO_RAW`: the packet carries
//! its own IP header, so it leaves with the intercepted destination's
//! address as its source).

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

/// Packets waiting to be sent, in one reused arena.
#[derive(Debug, Default)]
pub struct ReplyBatch {
    arena: Vec<u8>,
    /// (offset, length, destination, caller's tag) of each packet in `arena`.
    packets: Vec<(usize, usize, IpAddr, u32)>,
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
        let start = self.arena.len();
        if write(&mut self.arena) && self.arena.len() > start {
            self.packets.push((start, self.arena.len() - start, to, tag));
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
        self.packets.iter().map(|&(at, len, to, _)| (self.arena.get(at..at + len).unwrap_or_default(), to))
    }
}

/// What one flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    pub failed: u64,
}

/// Raw sockets for IPv4 and (when the node has it) IPv6, with the
/// `sendmmsg` scratch arrays kept between batches.
pub struct RawSender {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
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
        Ok(Self {
            v4: raw_socket(libc::AF_INET)?,
            v6: raw_socket(libc::AF_INET6).ok(),
            addrs: Vec::new(),
            iovs: Vec::new(),
            hdrs: Vec::new(),
        })
    }

    /// Sends every queued packet (one `sendmmsg` per run of one family) and
    /// clears the batch. A packet the kernel refuses is counted, skipped and
    /// its tag handed to `failed`.
    pub fn flush(&mut self, batch: &mut ReplyBatch, mut failed: impl FnMut(u32)) -> Sent {
        let mut out = Sent::default();
        let mut i = 0;
        while i < batch.packets.len() {
            let v6 = batch.packets.get(i).is_some_and(|p| p.2.is_ipv6());
            let end =
                batch.packets.iter().skip(i).position(|p| p.2.is_ipv6() != v6).map_or(batch.packets.len(), |n| i + n);
            let run = batch.packets.get(i..end).unwrap_or_default();
            let fd = if v6 { self.v6.as_ref().map(AsRawFd::as_raw_fd) } else { Some(self.v4.as_raw_fd()) };
            match fd {
                Some(fd) => {
                    let r = self.send_run(fd, &batch.arena, run, &mut failed);
                    out.sent += r.sent;
                    out.failed += r.failed;
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

    fn send_run(
        &mut self,
        fd: libc::c_int,
        arena: &[u8],
        run: &[(usize, usize, IpAddr, u32)],
        failed: &mut impl FnMut(u32),
    ) -> Sent {
        let n = run.len();
        // SAFETY (all three): plain data, zero is valid; filled in below.
        self.addrs.resize(n, unsafe { std::mem::zeroed() });
        self.iovs.resize(n, unsafe { std::mem::zeroed() });
        self.hdrs.resize(n, unsafe { std::mem::zeroed() });
        for (k, &(at, len, to, _)) in run.iter().enumerate() {
            let (Some(addr), Some(iov), Some(hdr)) =
                (self.addrs.get_mut(k), self.iovs.get_mut(k), self.hdrs.get_mut(k))
            else {
                continue;
            };
            let namelen = write_sockaddr(addr, to);
            let bytes = arena.get(at..at + len).unwrap_or_default();
            iov.iov_base = bytes.as_ptr().cast_mut().cast();
            iov.iov_len = bytes.len();
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = namelen;
            hdr.msg_hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
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
}
