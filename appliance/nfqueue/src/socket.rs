//! The queue's netlink socket: bind and configure one NFQUEUE, receive
//! packets in batches (`recvmmsg`), send a batch of verdicts with one `send`.
//!
//! The thin I/O shell over [`crate::wire`]. Every `unsafe` block is a libc
//! call whose pointers come from live Rust buffers sized as the call says.

use crate::wire::{self, Builder, Event, Verdict, cfg_flags, cmd};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Bytes of each packet the kernel copies to us: all of it (an IP packet is
/// at most 65535 bytes).
pub const COPY_RANGE: u32 = 0xffff;
/// One receive slot holds a whole packet message: the copied packet plus the
/// headers and attributes around it.
pub const SLOT_BYTES: usize = COPY_RANGE as usize + 2048;

/// How a queue is set up.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Packets the kernel holds for this queue before failing open.
    pub max_len: u32,
    /// Socket receive buffer, bytes (SO_RCVBUFFORCE, which needs CAP_NET_ADMIN).
    pub rcvbuf: usize,
    /// How long a blocking receive waits before returning with nothing, so
    /// the caller can look at its stop flag.
    pub recv_timeout: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self { max_len: 8192, rcvbuf: 8 << 20, recv_timeout: Duration::from_millis(100) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("opening the NFQUEUE netlink socket: {0}")]
    Open(io::Error),
    #[error("binding NFQUEUE {queue}: {source} (is another process bound to it?)")]
    Bind { queue: u16, source: io::Error },
    #[error("configuring NFQUEUE {queue}: {source}")]
    Configure { queue: u16, source: io::Error },
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points at a live `T` of `len` bytes for the call.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) }).map(drop)
}

/// One bound NFQUEUE.
#[derive(Debug)]
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
}

impl QueueSocket {
    /// Opens a netlink socket, binds `queue` and sets it up: whole packets
    /// copied, `max_len`, fail-open (a full queue accepts instead of
    /// dropping) and GSO packets handed over unsegmented.
    pub fn open(queue: u16, opts: QueueOptions) -> Result<Self, QueueError> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = cvt(unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, wire::NETLINK_NETFILTER)
        })
        .map_err(QueueError::Open)?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let addr_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(0);
        // SAFETY: `addr` is a live sockaddr_nl of `addr_len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), addr_len) }).map_err(QueueError::Open)?;
        // A full socket buffer must not turn into ENOBUFS errors on receive:
        // the kernel fails those packets open (see `cfg_flags::FAIL_OPEN`).
        let one: libc::c_int = 1;
        let _ = setsockopt(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, &one);
        let rcvbuf = libc::c_int::try_from(opts.rcvbuf).unwrap_or(libc::c_int::MAX);
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
        }
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(opts.recv_timeout.as_secs()).unwrap_or(1),
            tv_usec: libc::suseconds_t::from(opts.recv_timeout.subsec_micros()),
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(QueueError::Open)?;

        let mut me = Self { fd, queue, seq: 0 };
        me.request(|b, seq| b.config_cmd(queue, seq, cmd::BIND))
            .map_err(|source| QueueError::Bind { queue, source })?;
        let mask = cfg_flags::FAIL_OPEN | cfg_flags::GSO;
        me.request(|b, seq| b.config_params(queue, seq, COPY_RANGE, opts.max_len, mask, mask))
            .map_err(|source| QueueError::Configure { queue, source })?;
        Ok(me)
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Sends one acknowledged configuration request and waits for its answer.
    /// Packets that arrive meanwhile (rules may already point here) are
    /// accepted, never lost.
    fn request(&mut self, build: impl FnOnce(&mut Builder, u32)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut b = Builder::with_capacity(128);
        build(&mut b, seq);
        self.send(&b.buf)?;
        let mut buf = vec![0u8; SLOT_BYTES];
        // Bounded: the kernel answers a config request synchronously; allow
        // for a burst of queued packets in front of the answer.
        for _ in 0..10_000 {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            let mut accept = Builder::default();
            let mut answer = None;
            for m in wire::messages(buf.get(..n).unwrap_or_default()).flatten() {
                match wire::event(&m) {
                    Ok(Event::Ack { errno, seq: s }) if s == seq => answer = Some(errno),
                    Ok(Event::Packet(p)) => {
                        accept.verdict(p.queue, p.id, Verdict::Accept, None);
                    }
                    _ => {}
                }
            }
            if !accept.is_empty() {
                self.send(&accept.buf)?;
            }
            match answer {
                Some(0) => return Ok(()),
                Some(errno) => return Err(io::Error::from_raw_os_error(errno)),
                None => {}
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to the NFQUEUE configuration request"))
    }

    /// Receives up to `batch.capacity()` netlink datagrams with one
    /// `recvmmsg`. `wait`: block (up to the receive timeout) for the first;
    /// otherwise return at once. Returns how many arrived (0: none).
    pub fn recv_batch(&self, batch: &mut RecvBatch, wait: bool) -> io::Result<usize> {
        let flags = if wait { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
        batch.prepare();
        let vlen = libc::c_uint::try_from(batch.hdrs.len()).unwrap_or(0);
        // SAFETY: `prepare` pointed every header at its own iovec and slot,
        // all owned by `batch` and alive for the call; `vlen` is their count.
        let n =
            unsafe { libc::recvmmsg(self.fd.as_raw_fd(), batch.hdrs.as_mut_ptr(), vlen, flags, std::ptr::null_mut()) };
        match usize::try_from(n) {
            Ok(n) => {
                batch.filled = n;
                Ok(n)
            }
            Err(_) => {
                batch.filled = 0;
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(e),
                }
            }
        }
    }

    /// Sends netlink messages (a batch of verdicts) in one datagram.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // SAFETY: sockaddr_nl is plain data; all-zero with the family set
        // addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let to_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(0);
        // SAFETY: `bytes` and `to` are live for the call with the lengths given.
        let n = unsafe {
            libc::sendto(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0, (&raw const to).cast(), to_len)
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for QueueSocket {
    fn drop(&mut self) {
        // Unbind so that the rules' --queue-bypass lets traffic flow at once;
        // closing the socket would do it too, a little later.
        let mut b = Builder::with_capacity(64);
        b.config_cmd(self.queue, 0, cmd::UNBIND);
        let _ = self.send(&b.buf);
    }
}

/// Receive buffers for one `recvmmsg`: `capacity` slots of [`SLOT_BYTES`],
/// allocated once and reused (pages the kernel never writes stay unbacked).
pub struct RecvBatch {
    slots: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into this struct's own
// heap buffers and are rewritten by `prepare` before every use, so moving the
// batch to another thread moves everything they point at with it.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("capacity", &self.hdrs.len()).field("filled", &self.filled).finish()
    }
}

impl RecvBatch {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // SAFETY: iovec and mmsghdr are plain data; zero is valid (pointers
        // are set by `prepare`).
        let (iov, hdr): (libc::iovec, libc::mmsghdr) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Self {
            slots: vec![0u8; capacity * SLOT_BYTES],
            iovs: vec![iov; capacity],
            hdrs: vec![hdr; capacity],
            filled: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    fn prepare(&mut self) {
        let base = self.slots.as_mut_ptr();
        for (i, (iov, hdr)) in self.iovs.iter_mut().zip(self.hdrs.iter_mut()).enumerate() {
            // SAFETY: slot i lies inside `slots` (capacity * SLOT_BYTES long).
            iov.iov_base = unsafe { base.add(i * SLOT_BYTES) }.cast();
            iov.iov_len = SLOT_BYTES;
            crate::mmsg::point(hdr, std::ptr::null_mut(), 0, iov);
        }
    }

    /// The datagrams of the last receive, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.hdrs.iter().take(self.filled).enumerate().map(|(i, h)| {
            let len = (h.msg_len as usize).min(SLOT_BYTES);
            self.slots.get(i * SLOT_BYTES..i * SLOT_BYTES + len).unwrap_or_default()
        })
    }
}
