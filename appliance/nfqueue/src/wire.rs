//! The nfnetlink_queue wire format: netlink messages (`nlmsghdr`), the
//! nfnetlink header (`nfgenmsg`) and the `NFQA_*` attributes, as the kernel
//! defines them in `include/uapi/linux/netfilter/nfnetlink_queue.h` and
//! `include/uapi/linux/netlink.h`.
//!
//! Codecs only: no sockets, no clock, no allocation. Parsing borrows the
//! receive buffer; every length is checked and kernel bytes never panic.
//! Netlink headers and attribute headers are in host byte order; the
//! nfnetlink resource id and every `NFQA_*` value are big-endian.

/// `NETLINK_NETFILTER`, the netlink family of nfnetlink.
pub const NETLINK_NETFILTER: i32 = 12;

/// `NFNL_SUBSYS_QUEUE`: the high byte of every nfqueue message type.
pub const NFNL_SUBSYS_QUEUE: u16 = 3;

/// Message types of the queue subsystem (low byte).
pub mod msg {
    pub const PACKET: u16 = 0;
    pub const VERDICT: u16 = 1;
    pub const CONFIG: u16 = 2;
    pub const VERDICT_BATCH: u16 = 3;
}

/// Netlink control message types.
pub mod nlmsg {
    pub const NOOP: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const DONE: u16 = 3;
    pub const OVERRUN: u16 = 4;
}

/// `nlmsg_flags`.
pub mod flags {
    pub const REQUEST: u16 = 1;
    pub const ACK: u16 = 4;
}

/// Attribute types (`enum nfqnl_attr_type`, `enum nfqnl_attr_config`).
pub mod attr {
    pub const PACKET_HDR: u16 = 1;
    pub const VERDICT_HDR: u16 = 2;
    pub const MARK: u16 = 3;
    pub const IFINDEX_INDEV: u16 = 5;
    pub const HWADDR: u16 = 9;
    pub const PAYLOAD: u16 = 10;
    pub const CAP_LEN: u16 = 13;
    pub const SKB_INFO: u16 = 14;
    pub const VLAN: u16 = 19;

    pub const CFG_CMD: u16 = 1;
    pub const CFG_PARAMS: u16 = 2;
    pub const CFG_QUEUE_MAXLEN: u16 = 3;
    pub const CFG_MASK: u16 = 4;
    pub const CFG_FLAGS: u16 = 5;
}

/// `NFQA_CFG_F_*`: per-queue behaviour flags.
pub mod cfg_flags {
    /// Accept packets instead of dropping them when the queue is full.
    pub const FAIL_OPEN: u32 = 1;
    /// Hand GSO packets over unsegmented (no software segmentation on enqueue).
    pub const GSO: u32 = 4;
}

/// `NFQA_SKB_*` bits of the skb-info attribute.
pub mod skb_info {
    /// The checksum is not computed yet (offloaded); the payload is intact.
    pub const CSUM_NOT_READY: u32 = 1;
    /// A GSO super-packet: several segments behind one set of headers.
    pub const GSO: u32 = 2;
}

/// `NFQNL_CFG_CMD_*`.
pub mod cmd {
    pub const BIND: u8 = 1;
    pub const UNBIND: u8 = 2;
}

/// `NFQNL_COPY_PACKET`: copy the packet into the message (up to the range).
pub const COPY_PACKET: u8 = 2;

/// Bytes of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Bytes of `struct nfgenmsg`.
pub const NFGEN_HDRLEN: usize = 4;
/// Bytes of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// The largest attribute value (`nla_len` is 16 bits, header included).
pub const MAX_ATTR_VALUE: usize = u16::MAX as usize - NLA_HDRLEN;
/// Flag bits of `nla_type` that are not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

/// Netfilter verdicts (`NF_DROP`, `NF_ACCEPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// Netlink alignment: every message and attribute starts on 4 bytes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// What a received datagram is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("netlink message header truncated")]
    TruncatedHeader,
    #[error("netlink message length {0} is shorter than its header or runs past the datagram")]
    BadLength(u32),
    #[error("nfnetlink header truncated")]
    TruncatedNfgen,
    #[error("attribute length {0} is shorter than its header or runs past the message")]
    BadAttribute(u16),
    #[error("packet message without NFQA_PACKET_HDR")]
    MissingPacketHeader,
    #[error("NFQA_{0} attribute has the wrong size")]
    AttributeSize(&'static str),
}

/// A cursor over bytes: every read checks its length (no indexing on kernel bytes).
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// Skips up to `n` bytes (padding may be absent after the last item).
    fn skip_padding(&mut self, n: usize) {
        let n = n.min(self.rest.len());
        self.rest = self.rest.get(n..).unwrap_or_default();
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// The bytes after `nlmsghdr`.
    pub body: &'a [u8],
}

/// The netlink messages of one received datagram, in order. Stops at the
/// first malformed one (yielding its error once).
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    r: Reader<'a>,
    failed: bool,
}

pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { r: Reader::new(datagram), failed: false }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let mut fail = |e| {
            self.failed = true;
            Some(Err(e))
        };
        let mut peek = self.r;
        let Some(hdr) = peek.array::<NLMSG_HDRLEN>() else {
            return fail(WireError::TruncatedHeader);
        };
        let [l0, l1, l2, l3, t0, t1, f0, f1, s0, s1, s2, s3, p0, p1, p2, p3] = hdr;
        let len = u32::from_ne_bytes([l0, l1, l2, l3]);
        let total = len as usize;
        if total < NLMSG_HDRLEN {
            return fail(WireError::BadLength(len));
        }
        let Some(whole) = self.r.take(total) else {
            return fail(WireError::BadLength(len));
        };
        self.r.skip_padding(align4(total) - total);
        Some(Ok(NlMsg {
            kind: u16::from_ne_bytes([t0, t1]),
            flags: u16::from_ne_bytes([f0, f1]),
            seq: u32::from_ne_bytes([s0, s1, s2, s3]),
            pid: u32::from_ne_bytes([p0, p1, p2, p3]),
            body: whole.get(NLMSG_HDRLEN..).unwrap_or_default(),
        }))
    }
}

/// The attributes of a message body (after its fixed header), in order.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    r: Reader<'a>,
    failed: bool,
}

pub fn attrs(body: &[u8]) -> Attrs<'_> {
    Attrs { r: Reader::new(body), failed: false }
}

impl<'a> Iterator for Attrs<'a> {
    /// (type without the nested / byte-order flags, value)
    type Item = Result<(u16, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let Some([a, b, c, d]) = self.r.array::<NLA_HDRLEN>() else {
            self.failed = true;
            return Some(Err(WireError::BadAttribute(0)));
        };
        let len = u16::from_ne_bytes([a, b]);
        let kind = u16::from_ne_bytes([c, d]) & NLA_TYPE_MASK;
        let value_len = usize::from(len).checked_sub(NLA_HDRLEN);
        let Some(value) = value_len.and_then(|n| self.r.take(n)) else {
            self.failed = true;
            return Some(Err(WireError::BadAttribute(len)));
        };
        self.r.skip_padding(align4(usize::from(len)) - usize::from(len));
        Some(Ok((kind, value)))
    }
}

/// A queued packet as the kernel hands it over (`NFQNL_MSG_PACKET`),
/// borrowing the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The queue it came from (`nfgenmsg.res_id`).
    pub queue: u16,
    /// The id its verdict names.
    pub id: u32,
    /// Ethertype of the packet (0x0800 IPv4, 0x86dd IPv6).
    pub hw_protocol: u16,
    /// The netfilter hook it was queued from.
    pub hook: u8,
    /// The network-layer packet, possibly cut at the copy range.
    pub payload: &'a [u8],
    /// The packet's full length when `payload` was cut short.
    pub cap_len: Option<u32>,
    /// `NFQA_SKB_*` bits.
    pub skb_info: u32,
    pub mark: Option<u32>,
    /// The interface it arrived on.
    pub indev: Option<u32>,
    /// The link-layer source address it arrived from (an Ethernet MAC; the
    /// kernel gives it for packets that came in on such a link).
    pub hw_source: Option<[u8; 6]>,
    /// It carried an 802.1Q tag.
    pub vlan: bool,
}

impl Packet<'_> {
    /// The payload is the whole packet (not cut at the copy range).
    pub fn is_complete(&self) -> bool {
        self.cap_len.is_none_or(|l| l as usize == self.payload.len())
    }

    /// A GSO super-packet (only with [`cfg_flags::GSO`]).
    pub fn is_gso(&self) -> bool {
        self.skb_info & skb_info::GSO != 0
    }
}

/// What one netlink message from the queue socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Packet(Packet<'a>),
    /// An acknowledgement (`errno` 0) or an error (`-errno` from the kernel,
    /// reported here positive) for the request with `seq`.
    Ack {
        errno: i32,
        seq: u32,
    },
    /// Messages of no interest (NOOP, DONE, other subsystems' types).
    Other,
}

fn be32(v: &[u8], what: &'static str) -> Result<u32, WireError> {
    v.try_into().map(u32::from_be_bytes).map_err(|_| WireError::AttributeSize(what))
}

/// Classifies one netlink message.
pub fn event<'a>(m: &NlMsg<'a>) -> Result<Event<'a>, WireError> {
    if m.kind == nlmsg::ERROR {
        // struct nlmsgerr { int error; struct nlmsghdr msg; ... }
        let mut r = Reader::new(m.body);
        let e = r.array::<4>().ok_or(WireError::TruncatedNfgen)?;
        let hdr = r.array::<NLMSG_HDRLEN>().ok_or(WireError::TruncatedHeader)?;
        let [_, _, _, _, _, _, _, _, s0, s1, s2, s3, _, _, _, _] = hdr;
        let errno = i32::from_ne_bytes(e).saturating_neg();
        return Ok(Event::Ack { errno, seq: u32::from_ne_bytes([s0, s1, s2, s3]) });
    }
    if m.kind != (NFNL_SUBSYS_QUEUE << 8 | msg::PACKET) {
        return Ok(Event::Other);
    }
    let mut r = Reader::new(m.body);
    let [_family, _version, q0, q1] = r.array::<NFGEN_HDRLEN>().ok_or(WireError::TruncatedNfgen)?;
    let mut packet = Packet {
        queue: u16::from_be_bytes([q0, q1]),
        id: 0,
        hw_protocol: 0,
        hook: 0,
        payload: &[],
        cap_len: None,
        skb_info: 0,
        mark: None,
        indev: None,
        hw_source: None,
        vlan: false,
    };
    let mut have_header = false;
    for a in attrs(r.rest) {
        let (kind, value) = a?;
        match kind {
            attr::PACKET_HDR => {
                // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; } (+1 pad)
                let mut v = Reader::new(value);
                let (Some(id), Some(proto), Some([hook])) = (v.array::<4>(), v.array::<2>(), v.array::<1>()) else {
                    return Err(WireError::AttributeSize("PACKET_HDR"));
                };
                packet.id = u32::from_be_bytes(id);
                packet.hw_protocol = u16::from_be_bytes(proto);
                packet.hook = hook;
                have_header = true;
            }
            attr::PAYLOAD => packet.payload = value,
            attr::CAP_LEN => packet.cap_len = Some(be32(value, "CAP_LEN")?),
            attr::SKB_INFO => packet.skb_info = be32(value, "SKB_INFO")?,
            attr::MARK => packet.mark = Some(be32(value, "MARK")?),
            attr::IFINDEX_INDEV => packet.indev = Some(be32(value, "IFINDEX_INDEV")?),
            attr::HWADDR => {
                // struct nfqnl_msg_packet_hw { __be16 hw_addrlen; __u16 _pad; __u8 hw_addr[8]; }
                let mut v = Reader::new(value);
                let (Some(len), Some(_pad), Some(addr)) = (v.array::<2>(), v.array::<2>(), v.array::<8>()) else {
                    return Err(WireError::AttributeSize("HWADDR"));
                };
                if u16::from_be_bytes(len) == 6 {
                    let [a, b, c, d, e, f, _, _] = addr;
                    packet.hw_source = Some([a, b, c, d, e, f]);
                }
            }
            attr::VLAN => packet.vlan = true,
            _ => {}
        }
    }
    if !have_header {
        return Err(WireError::MissingPacketHeader);
    }
    Ok(Event::Packet(packet))
}

/// The packet id of a packet message whose other attributes may be broken,
/// so that it still gets a verdict.
pub fn packet_id(m: &NlMsg<'_>) -> Option<u32> {
    let body = m.body.get(NFGEN_HDRLEN..)?;
    attrs(body)
        .map_while(Result::ok)
        .find(|(k, _)| *k == attr::PACKET_HDR)
        .and_then(|(_, v)| v.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes))
}

/// Appends netlink requests to a caller-owned buffer (its capacity is kept
/// between batches, so steady state allocates nothing).
#[derive(Debug, Default)]
pub struct Builder {
    pub buf: Vec<u8>,
}

impl Builder {
    pub fn with_capacity(n: usize) -> Self {
        Self { buf: Vec::with_capacity(n) }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Starts a message; returns its offset for [`Builder::finish`].
    fn begin(&mut self, kind: u16, flags: u16, seq: u32, queue: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        self.buf.extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, queue number (big-endian).
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&queue.to_be_bytes());
        at
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = NLA_HDRLEN + value.len();
        // Callers keep values within MAX_ATTR_VALUE (`verdict` checks the
        // one that could be larger).
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + (align4(len) - len), 0);
    }

    fn finish(&mut self, at: usize) {
        let len = u32::try_from(self.buf.len() - at).unwrap_or(u32::MAX);
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn verdict_hdr(verdict: Verdict, id: u32) -> [u8; 8] {
        let mut v = [0u8; 8];
        let (a, b) = v.split_at_mut(4);
        a.copy_from_slice(&(verdict as u32).to_be_bytes());
        b.copy_from_slice(&id.to_be_bytes());
        v
    }

    /// `NFQNL_MSG_VERDICT` for one packet, optionally with a new payload.
    /// A payload longer than one attribute can hold is not sent: the packet
    /// then gets the plain verdict (returns false).
    pub fn verdict(&mut self, queue: u16, id: u32, verdict: Verdict, payload: Option<&[u8]>) -> bool {
        let at = self.begin(msg::VERDICT, flags::REQUEST, 0, queue);
        self.attr(attr::VERDICT_HDR, &Self::verdict_hdr(verdict, id));
        let fits = payload.is_none_or(|p| p.len() <= MAX_ATTR_VALUE);
        if let Some(p) = payload.filter(|_| fits) {
            self.attr(attr::PAYLOAD, p);
        }
        self.finish(at);
        fits
    }

    /// `NFQNL_MSG_VERDICT_BATCH`: `verdict` for every packet of the queue
    /// whose id is at most `last_id`.
    pub fn verdict_batch(&mut self, queue: u16, last_id: u32, verdict: Verdict) {
        let at = self.begin(msg::VERDICT_BATCH, flags::REQUEST, 0, queue);
        self.attr(attr::VERDICT_HDR, &Self::verdict_hdr(verdict, last_id));
        self.finish(at);
    }

    /// `NFQNL_MSG_CONFIG` with a command (bind / unbind), acknowledged.
    pub fn config_cmd(&mut self, queue: u16, seq: u32, command: u8) {
        let at = self.begin(msg::CONFIG, flags::REQUEST | flags::ACK, seq, queue);
        // struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
        self.attr(attr::CFG_CMD, &[command, 0, 0, 0]);
        self.finish(at);
    }

    /// `NFQNL_MSG_CONFIG` with the copy mode and range, the queue length and
    /// the flags (only those in `mask` change), acknowledged.
    pub fn config_params(&mut self, queue: u16, seq: u32, copy_range: u32, max_len: u32, mask: u32, set: u32) {
        let at = self.begin(msg::CONFIG, flags::REQUEST | flags::ACK, seq, queue);
        // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } (packed)
        let mut params = [0u8; 5];
        let (range, mode) = params.split_at_mut(4);
        range.copy_from_slice(&copy_range.to_be_bytes());
        mode.copy_from_slice(&[COPY_PACKET]);
        self.attr(attr::CFG_PARAMS, &params);
        self.attr(attr::CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
        self.attr(attr::CFG_MASK, &mask.to_be_bytes());
        self.attr(attr::CFG_FLAGS, &set.to_be_bytes());
        self.finish(at);
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
