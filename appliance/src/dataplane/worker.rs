//! One NFQUEUE consumer thread per queue (the `nfq` crate). Blocking receive
//! (optionally after a busy-poll window), the pure `decide`, then one verdict
//! per packet. With CPU steering the thread pins itself to its queue's CPUs;
//! `placement::Placer` moves it while those are contended.
//!
//! Fail-open is set on every queue: when the queue overflows, the kernel
//! accepts packets instead of dropping them; and the iptables rules carry
//! `--queue-bypass`, so if this process dies traffic flows unexamined.

use super::pipeline::{Decision, decide};
use super::placement;
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
    /// Times the worker left its home CPUs because they were contended.
    pub spills: AtomicU64,
    /// 1 while spilled, else 0.
    pub spilled: AtomicU64,
    /// The worker thread's id once it pinned itself home (0: unpinned), for
    /// the placement task that moves it (`placement::Placer`).
    pub pinned_tid: AtomicU64,
}

/// How one worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub queue: u16,
    pub max_len: u32,
    pub busy_poll: Duration,
    /// CPUs to pin the worker to (CPU steering); empty leaves it unpinned.
    pub home: Vec<usize>,
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
    spec: WorkerSpec,
    table: Arc<ArcSwap<Table>>,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let (queue, max_len) = (spec.queue, spec.max_len);
    let mut q = nfq::Queue::open().map_err(WorkerError::Open)?;
    q.bind(queue).map_err(|source| WorkerError::Bind { queue, source })?;
    q.set_fail_open(queue, true).map_err(|source| WorkerError::Bind { queue, source })?;
    q.set_queue_max_len(queue, max_len).map_err(|source| WorkerError::Bind { queue, source })?;
    let sender = RawSender::new().map_err(WorkerError::RawSocket)?;
    std::thread::Builder::new()
        .name(format!("nfq-{queue}"))
        .spawn(move || run(q, sender, spec, table, stats, stop))
        .map_err(WorkerError::Spawn)
}

fn run(
    mut q: nfq::Queue,
    sender: RawSender,
    spec: WorkerSpec,
    table: Arc<ArcSwap<Table>>,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) {
    let busy_poll = spec.busy_poll;
    tracing::info!(queue = stats.queue, busy_poll_us = busy_poll.as_micros(), "NFQUEUE worker started");
    if !spec.home.is_empty() {
        match placement::pin_thread(None, &spec.home) {
            Ok(()) => {
                let tid = rustix::thread::gettid().as_raw_pid();
                stats.pinned_tid.store(u64::try_from(tid).unwrap_or(0), Relaxed);
                tracing::info!(queue = stats.queue, cpus = ?spec.home, "NFQUEUE worker pinned to the CPUs that feed its queue");
            }
            Err(e) => {
                tracing::warn!(queue = stats.queue, error = %e, "cannot pin the NFQUEUE worker; it runs unpinned")
            }
        }
    }
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
