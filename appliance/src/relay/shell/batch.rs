//! Relayed datagrams in batches: up to [`BATCH`] received with one
//! `recvmmsg`, and those bound for one socket sent with one `sendmmsg`.
//! This is what makes the relay cheaper per packet than one `recvfrom` and
//! one `sendto` each (coturn's way).
//!
//! Our own rather than `quinn-udp`: that crate batches sends by GSO (many
//! segments to *one* destination), while a relay's client socket sends to
//! many clients; `sendmmsg` batches across destinations. The buffers and
//! headers are allocated once, so steady state allocates nothing.
//!
//! The only `unsafe` of the relay: filling the C headers and the two calls.
#![allow(unsafe_code)]

use super::ctx::Listener;
use crate::relay::engine::RelayId;
use mio::net::UdpSocket;
use netserv_nfqueue::mmsg::point;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per receive and per send call.
pub const BATCH: usize = 32;
/// Receive errors one drain skips past before it gives up.
pub const MAX_RECV_ERRORS: u32 = 8;

/// The largest datagram relayed; a longer one is dropped (RTP and TURN
/// messages stay well below a path MTU).
pub const SLOT: usize = 4096;

/// One queued datagram: where it goes and where its bytes are in the arena.
#[derive(Debug, Clone, Copy)]
struct Queued {
    socket: u64,
    to: SocketAddr,
    at: usize,
    len: usize,
}

/// The receiving half: datagrams of the last `recvmmsg`.
pub struct Rx {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// After a receive: (source, length) of each datagram (None: unusable).
    got: Vec<Option<(SocketAddr, usize)>>,
    /// Datagrams received since the last [`Rx::take_received`].
    received: usize,
}

/// The sending half: datagrams queued by destination socket.
pub struct Tx {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    arena: Vec<u8>,
    to_peers: Vec<Queued>,
    to_clients: Vec<Queued>,
    send_names: Vec<socket2::SockAddr>,
}

/// The socket address the kernel wrote into `name`.
fn decode(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // which is smaller than it and has no stricter alignment.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain C data; all-zero is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: as above.
    unsafe { std::mem::zeroed() }
}

fn empty_iovs() -> Vec<libc::iovec> {
    vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH]
}

impl Rx {
    pub fn new() -> Self {
        Self {
            bufs: vec![0; BATCH * SLOT],
            names: vec![zeroed_storage(); BATCH],
            iovs: empty_iovs(),
            hdrs: vec![zeroed_hdr(); BATCH],
            got: vec![None; BATCH],
            received: 0,
        }
    }

    /// Receives what is waiting on `socket` (up to BATCH); 0: nothing.
    pub fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        for i in 0..BATCH {
            let (Some(iov), Some(hdr), Some(name)) =
                (self.iovs.get_mut(i), self.hdrs.get_mut(i), self.names.get_mut(i))
            else {
                break;
            };
            let Some(buf) = self.bufs.get_mut(i * SLOT..(i + 1) * SLOT) else { break };
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = SLOT;
            // A datagram without a source address must not inherit the last one's.
            name.ss_family = 0;
            let namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            point(hdr, (name as *mut libc::sockaddr_storage).cast(), namelen, iov);
        }
        // SAFETY: each of the BATCH headers points at its own iovec, its
        // own sockaddr_storage and its own SLOT bytes of `bufs`, all alive
        // in `self` for the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = match usize::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                let e = std::io::Error::last_os_error();
                return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
            }
        };
        for i in 0..n {
            let (Some(hdr), Some(name), Some(slot)) = (self.hdrs.get(i), self.names.get(i), self.got.get_mut(i)) else {
                break;
            };
            let len = hdr.msg_len as usize;
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > SLOT;
            let addr = decode(name);
            *slot = match addr {
                Some(a) if !truncated => Some((a, len)),
                _ => None,
            };
        }
        self.received += n;
        Ok(n)
    }

    /// Datagrams received since the last call.
    pub fn take_received(&mut self) -> usize {
        std::mem::take(&mut self.received)
    }

    /// [`Rx::recv`] for a drain: an error (an ICMP error queued on the
    /// socket) is one datagram's — what follows it is still to be drained,
    /// and edge-triggered readiness will not say so again — so up to
    /// `MAX_RECV_ERRORS` of them over a drain (`errors`) are skipped.
    /// 0: nothing more to drain.
    pub fn recv_draining(&mut self, socket: &UdpSocket, errors: &mut u32) -> usize {
        loop {
            match self.recv(socket) {
                Ok(n) => return n,
                Err(_) if *errors < MAX_RECV_ERRORS => *errors += 1,
                Err(_) => return 0,
            }
        }
    }

    /// Source and length of received datagram `k`.
    pub fn meta(&self, k: usize) -> Option<(SocketAddr, usize)> {
        self.got.get(k).copied().flatten()
    }

    pub fn data(&self, k: usize, len: usize) -> &[u8] {
        self.bufs.get(k * SLOT..k * SLOT + len.min(SLOT)).unwrap_or_default()
    }
}

impl Tx {
    pub fn new() -> Self {
        Self {
            iovs: empty_iovs(),
            hdrs: vec![zeroed_hdr(); BATCH],
            arena: Vec::with_capacity(BATCH * 1500),
            to_peers: Vec::with_capacity(BATCH),
            to_clients: Vec::with_capacity(BATCH),
            send_names: Vec::with_capacity(BATCH),
        }
    }

    fn queue(arena: &mut Vec<u8>, q: &mut Vec<Queued>, socket: u64, to: SocketAddr, bytes: &[u8]) {
        let at = arena.len();
        arena.extend_from_slice(bytes);
        q.push(Queued { socket, to, at, len: bytes.len() });
    }

    /// Queues `bytes` for `peer` from relay `relay`'s socket (at most one
    /// receive's worth is queued: the caller flushes after each).
    pub fn queue_to_peer(&mut self, relay: RelayId, peer: SocketAddr, bytes: &[u8]) {
        Self::queue(&mut self.arena, &mut self.to_peers, u64::from(relay), peer, bytes);
    }

    pub fn queue_to_client(&mut self, listener: u32, to: SocketAddr, bytes: &[u8]) {
        Self::queue(&mut self.arena, &mut self.to_clients, u64::from(listener), to, bytes);
    }

    /// Whether the queues hold a batch's worth (time to flush).
    pub fn peers_full(&self) -> bool {
        self.to_peers.len() >= 4 * BATCH
    }

    pub fn clients_full(&self) -> bool {
        self.to_clients.len() >= 4 * BATCH
    }

    /// Sends the datagrams queued for peers, one `sendmmsg` per run of one relay socket.
    pub fn flush_peers(&mut self, relays: &HashMap<RelayId, UdpSocket>) {
        let mut q = std::mem::take(&mut self.to_peers);
        self.send_runs(&mut q, |s| relays.get(&u32::try_from(s).unwrap_or(0)).map(AsRawFd::as_raw_fd));
        self.to_peers = q;
        self.to_peers.clear();
        if self.to_clients.is_empty() {
            self.arena.clear();
        }
    }

    /// Sends the datagrams queued for clients, one `sendmmsg` per listener run.
    pub fn flush_clients(&mut self, listeners: &[Listener]) {
        let mut q = std::mem::take(&mut self.to_clients);
        self.send_runs(&mut q, |s| {
            listeners.get(usize::try_from(s).unwrap_or(usize::MAX)).and_then(Listener::udp).map(AsRawFd::as_raw_fd)
        });
        self.to_clients = q;
        self.to_clients.clear();
        if self.to_peers.is_empty() {
            self.arena.clear();
        }
    }

    fn send_runs(&mut self, q: &mut [Queued], fd_of: impl Fn(u64) -> Option<std::os::fd::RawFd>) {
        // Grouped by socket (stable: each socket's datagrams keep their
        // order), so one sendmmsg carries all of a socket's.
        q.sort_by_key(|x| x.socket);
        let q: &[Queued] = q;
        let mut start = 0;
        while start < q.len() {
            let socket = q.get(start).map_or(0, |x| x.socket);
            let mut end = start;
            while end < q.len() && end - start < BATCH && q.get(end).is_some_and(|x| x.socket == socket) {
                end += 1;
            }
            if let Some(fd) = fd_of(socket) {
                self.send_run(fd, q.get(start..end).unwrap_or_default());
            }
            start = end.max(start + 1);
        }
    }

    fn send_run(&mut self, fd: std::os::fd::RawFd, run: &[Queued]) {
        self.send_names.clear();
        self.send_names.extend(run.iter().map(|x| socket2::SockAddr::from(x.to)));
        let n = run.len().min(BATCH);
        for i in 0..n {
            let (Some(x), Some(iov), Some(hdr), Some(name)) =
                (run.get(i), self.iovs.get_mut(i), self.hdrs.get_mut(i), self.send_names.get(i))
            else {
                break;
            };
            let bytes = self.arena.get(x.at..x.at + x.len).unwrap_or_default();
            iov.iov_base = bytes.as_ptr().cast_mut().cast();
            iov.iov_len = bytes.len();
            point(hdr, name.as_ptr().cast_mut().cast(), name.len(), iov);
        }
        let mut from = 0;
        // Bounded: every pass sends at least one datagram or skips one.
        while from < n {
            let Some(rest) = self.hdrs.get_mut(from..n) else { break };
            // SAFETY: every header points at its own iovec and socket
            // address (alive in `self`) and at bytes of `arena`, alive for
            // the call; `rest.len()` headers follow the pointer.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, libc::MSG_DONTWAIT) };
            match usize::try_from(sent) {
                Ok(k) if k > 0 => from += k,
                // Refused (a full buffer, an unreachable peer): that one is lost, as UDP is.
                _ => from += 1,
            }
        }
    }
}
