//! The one queue loop: receive a batch, let the handler decide each packet,
//! send the batch's replies (one `sendmmsg` per family), then its verdicts
//! (one `send`, runs as `NFQNL_MSG_VERDICT_BATCH`), and poll or block for
//! the next batch as [`Poller`] says. Runs on a dedicated thread.
//!
//! Replies go out before the verdicts so that a reply the kernel refuses
//! turns its packet's verdict from drop into accept: the original then
//! reaches its destination, and nothing is lost.

use crate::poll::Poller;
use crate::raw::{RawSender, ReplyBatch, Way};
use crate::socket::{QueueSocket, RecvBatch};
use crate::verdicts::Verdicts;
use crate::wire::{self, Event, Packet, Verdict};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    Drop,
    /// Accept with the packet the handler wrote through [`Out::modified`].
    Modified,
    /// Drop; the handler queued a reply through [`Out::reply`] (if the reply
    /// cannot be sent, the packet is accepted instead).
    Reply,
}

/// Where a handler puts what a packet produces.
pub struct Out<'a> {
    modified: &'a mut Vec<u8>,
    replies: &'a mut ReplyBatch,
    tag: u32,
    replied: bool,
    /// Where the packet came from on its link: (interface, source address).
    link: Option<(u32, [u8; 6])>,
}

impl Out<'_> {
    /// The buffer to append a replacement IP packet to (return
    /// [`Disposition::Modified`] after writing it).
    pub fn modified(&mut self) -> &mut Vec<u8> {
        self.modified
    }

    /// Queues a reply to `to` written by `write` (see [`ReplyBatch::push`]):
    /// back the way the packet came when its link-layer source is known, else
    /// through routing. Return [`Disposition::Reply`] when this returns true.
    pub fn reply(&mut self, to: IpAddr, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let way = match self.link {
            Some((ifindex, mac)) => Way::Link { ifindex, mac, ip: to },
            None => Way::Ip(to),
        };
        let queued = self.replies.push_way(way, self.tag, write);
        self.replied |= queued;
        queued
    }
}

/// The per-packet decision, and a chance to do housekeeping per batch.
pub trait Handler {
    /// Before the packets of a batch (e.g. pick up a new filter table).
    fn begin_batch(&mut self, _now: Instant) {}
    fn packet(&mut self, packet: &Packet<'_>, out: &mut Out<'_>) -> Disposition;
    /// The receive waited a whole timeout with nothing.
    fn idle(&mut self, _now: Instant) {}
    /// A receive or send failed (the loop goes on).
    fn io_error(&mut self, _what: &'static str, _error: &io::Error) {}
}

#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Datagrams per receive.
    pub batch: usize,
    /// See [`Poller::new`].
    pub busy_poll: Duration,
}

/// Counters of one queue loop (relaxed atomics: read for metrics).
#[derive(Debug, Default)]
pub struct LoopStats {
    pub packets: AtomicU64,
    pub batches: AtomicU64,
    /// Batches that arrived while the loop was blocked (a wake-up), as
    /// opposed to found while polling.
    pub wakeups: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    pub modified: AtomicU64,
    pub replied: AtomicU64,
    /// Of the replies, those sent back out of their ingress interface.
    pub replied_by_link: AtomicU64,
    pub reply_errors: AtomicU64,
    /// Verdict sends that failed, and errors the kernel reported for verdicts.
    pub verdict_errors: AtomicU64,
    pub recv_errors: AtomicU64,
    /// Netlink messages that did not parse.
    pub malformed: AtomicU64,
    /// Verdict messages sent (fewer than packets when runs batch).
    pub verdict_messages: AtomicU64,
}

/// One packet's outcome within a batch: (id, disposition, modified range).
type Decided = (u32, Disposition, u32, u32);

/// Serves `sock` until `stop` is set. `sender` is needed only by handlers
/// that reply.
pub fn run<H: Handler>(
    sock: &QueueSocket,
    mut sender: Option<&mut RawSender>,
    handler: &mut H,
    cfg: LoopConfig,
    stats: &LoopStats,
    stop: &AtomicBool,
) {
    let mut batch = RecvBatch::new(cfg.batch);
    let mut verdicts = Verdicts::new(sock.queue());
    let mut replies = ReplyBatch::with_capacity(64 * 1024, cfg.batch * 2);
    let mut modified = Vec::with_capacity(64 * 1024);
    let mut decided: Vec<Decided> = Vec::with_capacity(cfg.batch * 2);
    let mut poller = Poller::new(cfg.busy_poll);
    while !stop.load(Relaxed) {
        let wait = poller.spin_until().is_none_or(|until| Instant::now() >= until);
        let n = match sock.recv_batch(&mut batch, wait) {
            Ok(n) => n,
            Err(e) => {
                stats.recv_errors.fetch_add(1, Relaxed);
                handler.io_error("receive", &e);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if n == 0 {
            if wait {
                handler.idle(Instant::now());
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        let now = Instant::now();
        poller.on_packets(now);
        stats.batches.fetch_add(1, Relaxed);
        if wait {
            stats.wakeups.fetch_add(1, Relaxed);
        }
        handler.begin_batch(now);
        decided.clear();
        modified.clear();
        for datagram in batch.datagrams() {
            for m in wire::messages(datagram) {
                let event = match m.map(|m| (wire::event(&m), m)) {
                    Ok((Ok(e), _)) => e,
                    Ok((Err(_), m)) => {
                        stats.malformed.fetch_add(1, Relaxed);
                        // A packet whose header parsed still gets a verdict.
                        if let Some(id) = wire::packet_id(&m) {
                            decided.push((id, Disposition::Accept, 0, 0));
                        }
                        continue;
                    }
                    Err(_) => {
                        stats.malformed.fetch_add(1, Relaxed);
                        continue;
                    }
                };
                match event {
                    Event::Packet(p) => {
                        let tag = u32::try_from(decided.len()).unwrap_or(u32::MAX);
                        let start = modified.len();
                        let link = match (p.indev, p.hw_source) {
                            (Some(i), Some(mac)) if !p.vlan => Some((i, mac)),
                            _ => None,
                        };
                        let mut out = Out { modified: &mut modified, replies: &mut replies, tag, replied: false, link };
                        let mut d = handler.packet(&p, &mut out);
                        let replied = out.replied;
                        if d == Disposition::Reply && !replied {
                            d = Disposition::Accept;
                        }
                        if d != Disposition::Modified {
                            modified.truncate(start);
                        }
                        let len = modified.len() - start;
                        decided.push((p.id, d, start as u32, len as u32));
                    }
                    Event::Ack { errno, .. } if errno != 0 => {
                        stats.verdict_errors.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
        }
        stats.packets.fetch_add(decided.len() as u64, Relaxed);
        if !replies.is_empty() {
            match sender.as_deref_mut() {
                Some(s) => {
                    let sent = s.flush(&mut replies, |tag| {
                        if let Some(d) = decided.get_mut(tag as usize) {
                            d.1 = Disposition::Accept;
                        }
                    });
                    stats.replied.fetch_add(sent.sent, Relaxed);
                    stats.replied_by_link.fetch_add(sent.by_link, Relaxed);
                    stats.reply_errors.fetch_add(sent.failed, Relaxed);
                }
                None => {
                    for d in decided.iter_mut().filter(|d| d.1 == Disposition::Reply) {
                        d.1 = Disposition::Accept;
                    }
                    stats.reply_errors.fetch_add(replies.len() as u64, Relaxed);
                    replies.clear();
                }
            }
        }
        for &(id, d, start, len) in &decided {
            match d {
                Disposition::Accept => {
                    stats.accepted.fetch_add(1, Relaxed);
                    verdicts.push(id, Verdict::Accept);
                }
                Disposition::Drop => {
                    stats.dropped.fetch_add(1, Relaxed);
                    verdicts.push(id, Verdict::Drop);
                }
                Disposition::Reply => verdicts.push(id, Verdict::Drop),
                Disposition::Modified => {
                    stats.modified.fetch_add(1, Relaxed);
                    let bytes = modified.get(start as usize..(start + len) as usize).unwrap_or_default();
                    verdicts.push_modified(id, bytes);
                    // Replacement packets can be large: keep one send well
                    // under the socket's send buffer.
                    if verdicts.len_bytes() > MAX_VERDICT_SEND {
                        send_verdicts(sock, &mut verdicts, handler, stats);
                    }
                }
            }
        }
        send_verdicts(sock, &mut verdicts, handler, stats);
    }
}

/// Largest verdict datagram sent at once (the default netlink send buffer is ~208 KiB).
const MAX_VERDICT_SEND: usize = 96 * 1024;

fn send_verdicts<H: Handler>(sock: &QueueSocket, verdicts: &mut Verdicts, handler: &mut H, stats: &LoopStats) {
    let bytes = verdicts.finish();
    // A verdict that is never sent leaves its packets held by the kernel
    // until this socket closes: try again before giving up.
    let mut result = sock.send(bytes);
    for _ in 0..3 {
        match &result {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                std::thread::yield_now();
                result = sock.send(bytes);
            }
            _ => break,
        }
    }
    if let Err(e) = result {
        stats.verdict_errors.fetch_add(u64::from(verdicts.messages), Relaxed);
        handler.io_error("verdict", &e);
    }
    stats.verdict_messages.fetch_add(u64::from(verdicts.messages), Relaxed);
    verdicts.clear();
}
