//! One NFQUEUE consumer thread per queue (the `nfq` crate). Blocking receive
//! (optionally after a busy-poll window), the pure `decide`, then one verdict
//! per packet.
//!
//! Fail-open is set on every queue: when the queue overflows, the kernel
//! accepts packets instead of dropping them; and the iptables rules carry
//! `--queue-bypass`, so if this process dies traffic flows unexamined.

use super::pipeline::{Decision, decide};
use super::reply::RawSender;
use super::table::Table;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters of the whole data path, per queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub queue: u16,
    pub packets: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    pub modified: AtomicU64,
    pub replied: AtomicU64,
    pub reply_errors: AtomicU64,
    pub verdict_errors: AtomicU64,
    pub recv_errors: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("opening the NFQUEUE netlink socket: {0}")]
    Open(std::io::Error),
    #[error("binding NFQUEUE {queue}: {source} (is another process bound to it?)")]
    Bind { queue: u16, source: std::io::Error },
    #[error("opening the raw reply socket: {0} (needs CAP_NET_RAW)")]
    RawSocket(std::io::Error),
    #[error("spawning the worker thread: {0}")]
    Spawn(std::io::Error),
}

/// Binds `queue` now (so errors surface at start-up) and serves it on a new thread.
pub fn spawn(
    queue: u16,
    max_len: u32,
    busy_poll: Duration,
    table: Arc<ArcSwap<Table>>,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let mut q = nfq::Queue::open().map_err(WorkerError::Open)?;
    q.bind(queue).map_err(|source| WorkerError::Bind { queue, source })?;
    q.set_fail_open(queue, true).map_err(|source| WorkerError::Bind { queue, source })?;
    q.set_queue_max_len(queue, max_len).map_err(|source| WorkerError::Bind { queue, source })?;
    let sender = RawSender::new().map_err(WorkerError::RawSocket)?;
    std::thread::Builder::new()
        .name(format!("nfq-{queue}"))
        .spawn(move || run(q, sender, busy_poll, table, stats, stop))
        .map_err(WorkerError::Spawn)
}

fn run(
    mut q: nfq::Queue,
    sender: RawSender,
    busy_poll: Duration,
    table: Arc<ArcSwap<Table>>,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) {
    tracing::info!(queue = stats.queue, busy_poll_us = busy_poll.as_micros(), "NFQUEUE worker started");
    let mut last_packet = Instant::now();
    let mut polling = false;
    while !stop.load(Relaxed) {
        // Poll without sleeping while inside the window after the last packet;
        // block otherwise. The mode only changes at the window's edges.
        let poll = !busy_poll.is_zero() && last_packet.elapsed() < busy_poll;
        if poll != polling {
            q.set_nonblocking(poll);
            polling = poll;
        }
        let mut msg = match q.recv() {
            Ok(m) => m,
            Err(e) if polling && e.kind() == std::io::ErrorKind::WouldBlock => {
                std::hint::spin_loop();
                continue;
            }
            Err(e) => {
                stats.recv_errors.fetch_add(1, Relaxed);
                tracing::warn!(queue = stats.queue, error = %e, "NFQUEUE receive failed");
                continue;
            }
        };
        stats.packets.fetch_add(1, Relaxed);
        if !busy_poll.is_zero() {
            last_packet = Instant::now();
        }
        let decision = decide(&table.load(), msg.get_payload());
        let verdict = match decision {
            Decision::Accept => {
                stats.accepted.fetch_add(1, Relaxed);
                nfq::Verdict::Accept
            }
            Decision::AcceptModified(bytes) => {
                stats.modified.fetch_add(1, Relaxed);
                msg.set_payload(bytes);
                nfq::Verdict::Accept
            }
            Decision::Drop => {
                stats.dropped.fetch_add(1, Relaxed);
                nfq::Verdict::Drop
            }
            Decision::Reply { packet, to } => match sender.send(&packet, to) {
                Ok(()) => {
                    stats.replied.fetch_add(1, Relaxed);
                    nfq::Verdict::Drop
                }
                Err(e) => {
                    // Could not answer: let the original reach the server
                    // rather than lose it.
                    stats.reply_errors.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "reply send failed; passing the original");
                    nfq::Verdict::Accept
                }
            },
        };
        msg.set_verdict(verdict);
        if let Err(e) = q.verdict(msg) {
            stats.verdict_errors.fetch_add(1, Relaxed);
            tracing::warn!(queue = stats.queue, error = %e, "NFQUEUE verdict failed");
        }
    }
}
